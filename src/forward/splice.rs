//! The Linux path: `splice(2)` socket → pipe → socket, so the bytes never
//! enter user space. A pipe is taken from a per-thread pool when data is
//! ready and returned empty once written, so idle connections hold none.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::OwnedFd;

use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity asked for. Larger than the default 64 KiB so a bulk
/// transfer takes fewer splice calls per byte; no larger than the socket
/// buffers on loopback (`sockbuf::LOCAL_SIZE`): with 1 MiB a one-connection
/// transfer between processes on one host ran at 0.89–0.91× direct instead
/// of 0.95–0.97× (128 KiB: 0.88×). The kernel allocates pages only for bytes
/// in flight, so an empty pooled pipe costs just its slot array. Refused
/// above `/proc/sys/fs/pipe-max-size` or the per-user pipe quota: the pipe
/// then keeps its default size.
const PIPE_SIZE: i32 = 256 << 10;
/// Free pipes kept per thread for reuse. Small: a pipe is often returned on
/// another worker thread than the one that took it, so every thread's pool
/// fills over time, and each pooled pipe holds two descriptors.
const POOL: usize = 16;
const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

/// A pipe (read end, write end) and its capacity; empty whenever it is in the pool.
pub(super) struct Pipe(OwnedFd, OwnedFd, u32);

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
    /// Set once growing a pipe was refused, so later pipes skip the attempt.
    static SMALL_PIPES: Cell<bool> = const { Cell::new(false) };
    /// Pipes this thread has opened: the pool's tests read it.
    #[cfg(test)]
    pub(super) static OPENED: Cell<usize> = const { Cell::new(0) };
}

impl Pipe {
    /// A pooled pipe, or a new one; `None` when no descriptors are left.
    pub(super) fn take() -> Option<Pipe> {
        if let Some(pipe) = PIPES.with(|pool| pool.borrow_mut().pop()) {
            return Some(pipe);
        }
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).ok()?;
        #[cfg(test)]
        OPENED.set(OPENED.get() + 1);
        let mut capacity: u32 = 64 * 1024;
        if !SMALL_PIPES.get() {
            match fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
                Ok(size) => capacity = size as u32,
                Err(_) => SMALL_PIPES.set(true),
            }
        }
        Some(Pipe(read, write, capacity))
    }

    /// Splice what `from` has into the (empty) pipe: `None` at EOF. The pipe
    /// is empty, so `WouldBlock` can only mean the socket has no data.
    pub(super) fn fill(&self, from: &TcpStream) -> io::Result<Option<usize>> {
        let n = from.try_io(Interest::READABLE, || {
            Ok(splice(from, None, &self.1, None, self.2 as usize, FLAGS)?)
        })?;
        Ok((n > 0).then_some(n))
    }

    /// Splice up to `left` held bytes out to `to`.
    pub(super) fn drain(&self, to: &TcpStream, left: usize) -> io::Result<usize> {
        to.try_io(Interest::WRITABLE, || Ok(splice(&self.0, None, to, None, left, FLAGS)?))
    }

    /// Back to this thread's pool; only an empty pipe may be released.
    pub(super) fn release(self) {
        PIPES.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOL {
                pool.push(self);
            }
        });
    }
}
