//! Helpers shared by the fuzz targets: an in-memory client stream that hands
//! out its bytes in fuzzer-chosen chunk sizes, and a runtime to drive the
//! async parsers on it.
//!
//! The stream never returns `Pending` (its bytes are all there; after them
//! comes EOF), so every future driven by [`block_on`] finishes without timers
//! firing, and a run is a pure function of the input.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest read the stream serves for each chunk mode (mode % 6); 0: no cap.
const CHUNK_CAPS: [usize; 6] = [1, 3, 17, 300, 5000, 0];

/// A client as the router sees it: `input` read in chunks, writes recorded.
pub struct Chunked<'a> {
    input: &'a [u8],
    /// How many bytes of `input` have been read.
    pub pos: usize,
    /// Everything the code under test wrote back.
    pub written: Vec<u8>,
    cap: usize,
    rng: u32,
}

impl<'a> Chunked<'a> {
    /// Serve `input` in chunks decided by `mode`: a cap per read from
    /// [`CHUNK_CAPS`], each read a pseudo-random size up to it.
    pub fn new(input: &'a [u8], mode: u8) -> Self {
        Self {
            input,
            pos: 0,
            written: Vec::new(),
            cap: CHUNK_CAPS[usize::from(mode) % CHUNK_CAPS.len()],
            rng: u32::from(mode).wrapping_mul(0x9e37_79b9) | 1,
        }
    }

    /// The size of the next read, at most `room`.
    fn next_chunk(&mut self, room: usize) -> usize {
        if self.cap == 0 {
            return room;
        }
        // xorshift32: deterministic, so a crash replays.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        let size = 1 + self.rng as usize % self.cap;
        size.min(room)
    }
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let left = self.input.len() - self.pos;
        let n = self.next_chunk(left.min(buf.remaining()));
        let start = self.pos;
        buf.put_slice(&self.input[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Chunked<'_> {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Run `future` to completion on a per-thread current-thread runtime (time
/// enabled, for `proxy_protocol::read_header`'s deadline).
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|cell| {
        let mut slot = cell.borrow_mut();
        let runtime = slot.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime")
        });
        runtime.block_on(future)
    })
}

/// Split the fuzzer's bytes into a mode byte and the rest.
pub fn split_mode(data: &[u8]) -> Option<(u8, &[u8])> {
    let (&mode, rest) = data.split_first()?;
    Some((mode, rest))
}
