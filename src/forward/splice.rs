//! The Linux path: `splice(2)` socket → pipe → socket, so the bytes never
//! enter user space. A pipe is taken from a per-thread pool when data is
//! ready and returned empty once written, so idle connections hold none.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use tokio::io::Interest;

use super::{copy, Half, Side};

/// Bytes moved per splice; the default pipe capacity (16 pages).
const CHUNK: usize = 64 * 1024;
/// Free pipes kept per thread for reuse. Small: a pipe is often returned on
/// another worker thread than the one that took it, so every thread's pool
/// fills over time, and each pooled pipe holds two descriptors.
const POOL: usize = 16;

/// A pipe (read end, write end); empty whenever it is in the pool.
struct Pipe(OwnedFd, OwnedFd);

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

pub(super) async fn run(half: &Half<'_>) -> Result<(), (Side, io::Error)> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        half.from.readable().await.map_err(|e| (half.from_side, e))?;
        let Some(pipe) = take() else {
            // Out of file descriptors for pipes: carry on without zero-copy.
            // Boxed: rare, and its state would otherwise sit in every connection.
            return Box::pin(copy::run(half)).await;
        };
        // The pipe is empty, so EAGAIN here can only mean the socket has no data.
        let n = match half.from.try_io(Interest::READABLE, || {
            Ok(splice(half.from, None, &pipe.1, None, CHUNK, flags)?)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                give(pipe);
                continue;
            }
            Err(e) => return Err((half.from_side, e)),
        };
        if n == 0 {
            give(pipe);
            return half.eof();
        }
        let mut left = n;
        while left > 0 {
            half.to.writable().await.map_err(|e| (half.to_side, e))?;
            match half.to.try_io(Interest::WRITABLE, || {
                Ok(splice(&pipe.0, None, half.to, None, left, flags)?)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // The pipe still holds data: it is dropped, not pooled.
                Err(e) => return Err((half.to_side, e)),
            }
        }
        give(pipe);
        half.moved(n);
    }
}

fn take() -> Option<Pipe> {
    if let Some(pipe) = PIPES.with(|pool| pool.borrow_mut().pop()) {
        return Some(pipe);
    }
    let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).ok()?;
    Some(Pipe(read, write))
}

fn give(pipe: Pipe) {
    PIPES.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL {
            pool.push(pipe);
        }
    });
}
