//! The portable path: read into a pooled buffer, write it all out.

use std::cell::RefCell;
use std::io;

use super::{Half, Side};

/// Chunk size: big enough for full-speed loopback, small enough to pool.
const BUF_SIZE: usize = 64 * 1024;
/// Buffers kept per thread for reuse.
const POOL: usize = 32;

thread_local! {
    static BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

pub(super) async fn run(half: &Half<'_>) -> Result<(), (Side, io::Error)> {
    loop {
        half.from.readable().await.map_err(|e| (half.from_side, e))?;
        let mut buf = take();
        let n = match half.from.try_read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                give(buf);
                continue;
            }
            Err(e) => return Err((half.from_side, e)),
        };
        if n == 0 {
            give(buf);
            return half.eof();
        }
        let mut written = 0;
        while written < n {
            half.to.writable().await.map_err(|e| (half.to_side, e))?;
            match half.to.try_write(&buf[written..n]) {
                Ok(m) => written += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err((half.to_side, e)),
            }
        }
        give(buf);
        half.moved(n);
    }
}

fn take() -> Box<[u8]> {
    BUFFERS
        .with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

fn give(buf: Box<[u8]>) {
    BUFFERS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL {
            pool.push(buf);
        }
    });
}
