//! The portable path: read into a pooled buffer, write it all out.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Chunk size: big enough for full-speed loopback, small enough to pool.
const BUF_SIZE: usize = 64 * 1024;
/// Buffers kept per thread for reuse.
const POOL: usize = 32;

thread_local! {
    static BUFFERS: RefCell<Vec<Box<[u8; BUF_SIZE]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer borrowed from this thread's pool. A thin pointer (the size is in
/// the type): a chunk in flight sits in every connection's task.
pub(super) struct Buf(Box<[u8; BUF_SIZE]>);

impl Buf {
    /// A pooled buffer, or a new one.
    pub(super) fn take() -> Buf {
        Buf(BUFFERS.with(|pool| pool.borrow_mut().pop()).unwrap_or_else(|| {
            // Through a Vec: `Box::new([0; BUF_SIZE])` may build the array on the stack first.
            let zeroed = vec![0u8; BUF_SIZE].into_boxed_slice();
            zeroed
                .try_into()
                .unwrap_or_else(|_| unreachable!("a slice of BUF_SIZE bytes"))
        }))
    }

    /// Back to this thread's pool.
    pub(super) fn release(self) {
        BUFFERS.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOL {
                pool.push(self.0);
            }
        });
    }
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0[..]
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0[..]
    }
}
