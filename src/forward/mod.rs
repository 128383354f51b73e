//! Two-way forwarding between client and backend once the route is chosen.
//!
//! Each direction runs on its own: EOF on one side shuts down writing on the
//! other (half-close), and the connection is done when both directions are.
//! Traffic either way pushes back one shared idle deadline. Byte counters are
//! updated as data moves so long-lived connections show progress.
//!
//! [`Forward`] is one hand-written future that polls both sockets: an idle
//! connection's memory is mostly this future, and with tokio's
//! `poll_*_ready` the wakers live in the sockets' registrations, not in
//! per-direction wait futures. A direction holds no buffer while idle: it
//! borrows one when its socket is readable and returns it to a per-thread
//! pool once written: a byte buffer for small messages, a pipe for
//! `splice(2)` on Linux once a read fills a whole buffer (bulk), until a
//! splice brings a small message again.

mod copy;
#[cfg(target_os = "linux")]
mod splice;

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::busypoll;

/// Default idle timeout (Envoy `tcp_proxy` `idle_timeout`: 1 h).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Bytes moved so far, readable while the connection runs; once a route is
/// known, also added to that route's Prometheus counters as they move.
#[derive(Debug, Default)]
pub struct Counters {
    upstream: AtomicU64,
    downstream: AtomicU64,
    live: OnceLock<(IntCounter, IntCounter)>,
}

/// A direction of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → backend.
    Upstream,
    /// Backend → client.
    Downstream,
}

/// Bytes moved in each direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Client → backend, including the replayed ClientHello.
    pub upstream: u64,
    /// Backend → client.
    pub downstream: u64,
}

/// How forwarding ended.
#[derive(Debug)]
pub enum End {
    /// Both sides finished sending.
    Closed,
    /// No byte moved either way for the idle timeout.
    IdleTimeout(Duration),
    /// Reading from or writing to the client failed (e.g. reset).
    ClientError(io::Error),
    /// Reading from or writing to the backend failed.
    BackendError(io::Error),
    /// Still open when the drain timeout ran out: the router ended it.
    DrainTimeout,
}

impl End {
    /// Every value `label` returns.
    pub const LABELS: [&'static str; 5] = [
        "closed",
        "idle_timeout",
        "client_error",
        "backend_error",
        "drain_timeout",
    ];

    /// The `end` value in the access log and `sni_router_connections_ended_total`.
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// Where `label` is in `LABELS`.
    pub fn index(&self) -> usize {
        match self {
            End::Closed => 0,
            End::IdleTimeout(_) => 1,
            End::ClientError(_) => 2,
            End::BackendError(_) => 3,
            End::DrainTimeout => 4,
        }
    }
}

/// Forward until both directions are done, an error, or the idle timeout.
/// `zero_copy` uses `splice(2)` where the OS has it.
pub fn forward<'a>(
    client: &'a TcpStream,
    backend: &'a TcpStream,
    idle: Duration,
    counters: &'a Counters,
    zero_copy: bool,
) -> Forward<'a> {
    let now = Instant::now();
    Forward {
        client,
        backend,
        counters,
        up: Flow::default(),
        down: Flow::default(),
        zero_copy,
        idle,
        last: now,
        timer: tokio::time::sleep_until(now + idle),
    }
}

pin_project_lite::pin_project! {
    /// The future [`forward`] returns.
    pub struct Forward<'a> {
        client: &'a TcpStream,
        backend: &'a TcpStream,
        counters: &'a Counters,
        up: Flow,
        down: Flow,
        zero_copy: bool,
        idle: Duration,
        // When a byte last moved either way. The timer is moved to
        // `last + idle` only when it fires: resetting it per chunk would cost
        // a timer-wheel update on the hot path.
        last: Instant,
        #[pin]
        timer: Sleep,
    }
}

impl Future for Forward<'_> {
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let mut this = self.project();
        let mut moved = false;
        let up = Ends {
            from: this.client,
            to: this.backend,
            from_side: Side::Client,
            to_side: Side::Backend,
            direction: Direction::Upstream,
        };
        let down = Ends {
            from: this.backend,
            to: this.client,
            from_side: Side::Backend,
            to_side: Side::Client,
            direction: Direction::Downstream,
        };
        // An error in either direction ends both: waiting on the other would
        // keep the backend session open (an idle database never speaks first)
        // until the idle timeout. A reset once the other direction has
        // finished cleanly is how many servers end (PostgreSQL exits with the
        // client's close_notify unread): that is a close, not a failure. The
        // other direction is judged as it stood before this poll: polled
        // after a reset, it would read the EOF the reset itself leaves. The
        // backend's side goes first, so its last words (a TLS alert, then
        // close) reach the client even when the client's next write to the
        // closed backend fails in the same wakeup.
        let up_done = this.up.is_done();
        let result = this
            .down
            .poll(cx, &down, up_done, this.counters, *this.zero_copy, &mut moved);
        let mut end = ended(result, this.up);
        if end.is_none() {
            let down_done = this.down.is_done();
            let result = this
                .up
                .poll(cx, &up, down_done, this.counters, *this.zero_copy, &mut moved);
            end = ended(result, this.down);
        }
        if moved {
            *this.last = Instant::now();
        }
        if let Some(end) = end {
            return Poll::Ready(end);
        }
        if this.up.is_done() && this.down.is_done() {
            return Poll::Ready(End::Closed);
        }
        while this.timer.as_mut().poll(cx).is_ready() {
            let deadline = *this.last + *this.idle;
            if deadline <= Instant::now() {
                return Poll::Ready(End::IdleTimeout(*this.idle));
            }
            this.timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

/// How a direction's error ends the connection, given the other direction.
fn ended(result: Poll<FlowResult>, other: &Flow) -> Option<End> {
    let Poll::Ready(Err((side, e))) = result else {
        return None;
    };
    if other.is_done() && is_reset(&e) {
        return Some(End::Closed);
    }
    Some(match side {
        Side::Client => End::ClientError(e),
        Side::Backend => End::BackendError(e),
    })
}

fn is_reset(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)
}

/// Which socket failed.
#[derive(Clone, Copy)]
enum Side {
    Client,
    Backend,
}

/// The sockets of one direction.
struct Ends<'a> {
    from: &'a TcpStream,
    to: &'a TcpStream,
    from_side: Side,
    to_side: Side,
    direction: Direction,
}

/// One direction: where it stands, and how it reads next.
#[derive(Default)]
struct Flow {
    state: State,
    /// Read with `splice(2)`: set once a read fills a whole buffer (a bulk
    /// transfer), cleared when a splice brings a small message. For a few
    /// bytes read/write costs less CPU than the two splices and the pipe
    /// bookkeeping (10 µs less per connection in the e2e connection-rate
    /// bench); for bulk, splice costs a third of the copies.
    splice: bool,
}

/// Where one direction stands.
#[derive(Default)]
enum State {
    /// Nothing held; waiting for the source to be readable.
    #[default]
    Waiting,
    /// Bytes read and not yet all written; `true`: they are the source's
    /// last, and the half-close follows them.
    Writing(Chunk, bool),
    /// EOF read and passed on.
    Done,
}

/// A splice smaller than this sends the direction back to read/write.
const SMALL: usize = 4 * 1024;

/// Bytes in flight in one direction.
/// Counts are `u32` (a chunk is at most a pipe's or a buffer's capacity):
/// this sits in every connection's task twice.
enum Chunk {
    /// In a pipe, `left` bytes still to splice out.
    #[cfg(target_os = "linux")]
    Pipe(splice::Pipe, u32),
    /// In a buffer, `buf[at..end]` still to write.
    Buf(copy::Buf, u32, u32),
}

type FlowResult = Result<(), (Side, io::Error)>;

impl Flow {
    fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The source's EOF has been reached and everything before it written:
    /// pass the half-close on.
    fn finish(&mut self, ends: &Ends<'_>, last: bool) -> FlowResult {
        self.state = State::Done;
        // The last direction to end needs no shutdown: both sockets close
        // next, and the close sends the FIN (nothing is left unread, so it
        // is not a reset). One syscall, and its loopback FIN round, fewer.
        if last {
            return Ok(());
        }
        shut_down_writes(ends)
    }

    /// Move bytes until the source would block (`Pending`), EOF (`Ready(Ok)`,
    /// once) or an error. Sets `moved` when any byte was written. `last`:
    /// the other direction is done already.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        ends: &Ends<'_>,
        last: bool,
        counters: &Counters,
        zero_copy: bool,
        moved: &mut bool,
    ) -> Poll<FlowResult> {
        loop {
            match &mut self.state {
                State::Done => return Poll::Ready(Ok(())),
                State::Waiting => {
                    ready!(ends.from.poll_read_ready(cx)).map_err(|e| (ends.from_side, e))?;
                    let splice = zero_copy && self.splice;
                    // Looked at before the read: a FIN seen after it may have
                    // come with bytes the read did not take.
                    let fin_before = !splice && fin_arrived(ends.from, cx);
                    match Chunk::read(ends.from, splice) {
                        Ok(Some(chunk)) => {
                            busypoll::worked();
                            let full = match &chunk {
                                #[cfg(target_os = "linux")]
                                Chunk::Pipe(_, n) => *n as usize >= SMALL,
                                Chunk::Buf(buf, _, n) => *n as usize == buf.len(),
                            };
                            if zero_copy {
                                self.splice = full;
                            }
                            // A short read into a buffer empties the socket, so
                            // if its FIN had arrived before it, EOF is next. (Not
                            // so for a splice, which can stop when the pipe runs
                            // out of slots.)
                            let eof = fin_before && !full && matches!(chunk, Chunk::Buf(..));
                            self.state = State::Writing(chunk, eof);
                        }
                        Ok(None) => return Poll::Ready(self.finish(ends, last)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Poll::Ready(Err((ends.from_side, e))),
                    }
                }
                State::Writing(chunk, eof) => {
                    ready!(ends.to.poll_write_ready(cx)).map_err(|e| (ends.to_side, e))?;
                    let eof = *eof;
                    match chunk.write(ends.to, eof) {
                        Ok(n) => {
                            counters.add(ends.direction, n as u64);
                            *moved = true;
                            if chunk.is_empty() {
                                // Written in full: the pipe or buffer goes back to the pool.
                                if let State::Writing(chunk, _) = std::mem::take(&mut self.state) {
                                    chunk.release();
                                }
                                if eof {
                                    // No read to find the EOF the readiness already showed.
                                    return Poll::Ready(self.finish(ends, last));
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // A chunk still holding data is dropped, not pooled.
                        Err(e) => return Poll::Ready(Err((ends.to_side, e))),
                    }
                }
            }
        }
    }
}

/// Whether the readiness `source` reported says its FIN has arrived (and
/// no error): known from the last epoll event, no syscall. Bytes read
/// after that are the last, so they can go out with the FIN behind them
/// (a reply, then close: one segment instead of two, one read fewer).
fn fin_arrived(source: &TcpStream, cx: &mut Context<'_>) -> bool {
    let ready = source.ready(Interest::READABLE | Interest::ERROR);
    let mut ready = std::pin::pin!(ready);
    // Readable already (poll_read_ready just said so), so this does not wait.
    matches!(ready.as_mut().poll(cx), Poll::Ready(Ok(r)) if r.is_read_closed() && !r.is_error())
}

/// The reading side ended: tell the other side, keep the rest flowing.
fn shut_down_writes(ends: &Ends<'_>) -> FlowResult {
    match socket2::SockRef::from(ends.to).shutdown(Shutdown::Write) {
        Ok(()) => Ok(()),
        // The peer is already gone; nothing left to tell it.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        Err(e) => Err((ends.to_side, e)),
    }
}

// === impl Chunk ===

impl Chunk {
    /// Read what `from` has, into a pipe with `splice`, else a buffer;
    /// `None` at EOF, `WouldBlock` when nothing is there.
    fn read(from: &TcpStream, splice: bool) -> io::Result<Option<Chunk>> {
        #[cfg(target_os = "linux")]
        if splice {
            // Out of descriptors for a pipe: this chunk goes through a buffer.
            if let Some(pipe) = splice::Pipe::take() {
                return match pipe.fill(from) {
                    // n ≤ the pipe's capacity, an i32 from F_GETPIPE_SZ/F_SETPIPE_SZ.
                    Ok(Some(n)) => Ok(Some(Chunk::Pipe(pipe, n as u32))),
                    // Still empty: back to the pool, not closed.
                    other => {
                        pipe.release();
                        other.map(|_| None)
                    }
                };
            }
        }
        let _ = splice;
        let mut buf = copy::Buf::take();
        match from.try_read(&mut buf) {
            Ok(0) => {
                buf.release();
                Ok(None)
            }
            // n ≤ the buffer's 64 KiB.
            Ok(n) => Ok(Some(Chunk::Buf(buf, 0, n as u32))),
            Err(e) => {
                buf.release();
                Err(e)
            }
        }
    }

    /// Write some of the held bytes to `to`; how many. `fin`: the
    /// half-close follows these bytes, so the kernel may hold them for it
    /// (`MSG_MORE`) and send both in one segment.
    fn write(&mut self, to: &TcpStream, fin: bool) -> io::Result<usize> {
        match self {
            #[cfg(target_os = "linux")]
            Chunk::Pipe(pipe, left) => {
                let n = pipe.drain(to, *left as usize)?;
                *left -= n as u32;
                Ok(n)
            }
            Chunk::Buf(buf, at, end) => {
                let bytes = &buf[*at as usize..*end as usize];
                #[cfg(target_os = "linux")]
                let n = if fin {
                    use nix::libc::{MSG_MORE, MSG_NOSIGNAL};
                    to.try_io(Interest::WRITABLE, || {
                        socket2::SockRef::from(to).send_with_flags(bytes, MSG_MORE | MSG_NOSIGNAL)
                    })?
                } else {
                    to.try_write(bytes)?
                };
                #[cfg(not(target_os = "linux"))]
                let n = {
                    let _ = fin;
                    to.try_write(bytes)?
                };
                *at += n as u32;
                Ok(n)
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            Chunk::Pipe(_, left) => *left == 0,
            Chunk::Buf(_, at, end) => at == end,
        }
    }

    /// Back to the pool; only when empty.
    fn release(self) {
        match self {
            #[cfg(target_os = "linux")]
            Chunk::Pipe(pipe, _) => pipe.release(),
            Chunk::Buf(buf, _, _) => buf.release(),
        }
    }
}

// === impl Counters ===

impl Counters {
    /// From now on, also count into these (upstream, downstream) counters.
    pub fn attach(&self, live: (IntCounter, IntCounter)) {
        let _ = self.live.set(live);
    }

    /// Count `n` bytes moved in `direction`.
    pub fn add(&self, direction: Direction, n: u64) {
        let (local, live) = match direction {
            Direction::Upstream => (&self.upstream, self.live.get().map(|l| &l.0)),
            Direction::Downstream => (&self.downstream, self.live.get().map(|l| &l.1)),
        };
        local.fetch_add(n, Ordering::Relaxed);
        if let Some(counter) = live {
            counter.inc_by(n);
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        Stats {
            upstream: self.upstream.load(Ordering::Relaxed),
            downstream: self.downstream.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Two connected loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (far, _) = listener.accept().await.unwrap();
        (near, far)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    /// Write `data` on `from` and read exactly as much on `to`, concurrently.
    async fn carry(from: &mut TcpStream, to: &mut TcpStream, data: &[u8]) {
        let mut got = vec![0u8; data.len()];
        let (w, r) = tokio::join!(from.write_all(data), to.read_exact(&mut got));
        w.unwrap();
        r.unwrap();
        assert!(got == data, "{} bytes changed on the way", data.len());
    }

    /// Small messages, then bulk, then small again, each way: what an
    /// interactive database session with a large result does. Read/write
    /// and splice take turns; every byte must arrive, in order, counted.
    async fn phases(zero_copy: bool) {
        let (mut client_app, client) = pair().await;
        let (backend, mut backend_app) = pair().await;
        let forwarding = tokio::spawn(async move {
            let counters = Counters::default();
            let end = forward(&client, &backend, Duration::from_secs(30), &counters, zero_copy).await;
            (end, counters.stats())
        });
        let mut sent = Stats::default();
        for (i, len) in [5, 300, 8 << 20, 17, 3 << 20, 1].into_iter().enumerate() {
            let up = pattern(len, i as u8);
            carry(&mut client_app, &mut backend_app, &up).await;
            let down = pattern(len / 2 + 1, 0x5a ^ i as u8);
            carry(&mut backend_app, &mut client_app, &down).await;
            sent.upstream += up.len() as u64;
            sent.downstream += down.len() as u64;
        }
        // Half-close each way: the client's EOF reaches the backend while the
        // backend can still answer.
        client_app.shutdown().await.unwrap();
        assert_eq!(backend_app.read(&mut [0u8; 1]).await.unwrap(), 0);
        carry(&mut backend_app, &mut client_app, b"last words").await;
        sent.downstream += 10;
        backend_app.shutdown().await.unwrap();
        assert_eq!(client_app.read(&mut [0u8; 1]).await.unwrap(), 0);
        let (end, stats) = forwarding.await.unwrap();
        assert!(matches!(end, End::Closed), "{end:?}");
        assert_eq!(stats, sent);
    }

    #[tokio::test]
    async fn small_and_bulk_phases_arrive_intact_with_splice() {
        phases(true).await;
    }

    #[tokio::test]
    async fn small_and_bulk_phases_arrive_intact_with_read_write() {
        phases(false).await;
    }

    /// Pipes go back to the pool, also when a splice finds nothing to read:
    /// a pipe per read would cost four syscalls per message.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn pipes_are_reused() {
        let before = splice::OPENED.get();
        phases(true).await;
        phases(true).await;
        let opened = splice::OPENED.get() - before;
        // One per direction at most, the second run from the pool.
        assert!((1..=2).contains(&opened), "{opened} pipes opened");
    }

    /// A backend that answers and closes at once (an HTTP/1.0 server, Redis
    /// after QUIT, PostgreSQL's FATAL): the reply and the EOF behind it both
    /// reach the client, whether the client is still sending (half-close
    /// passed on) or has finished already (both sockets close).
    #[tokio::test]
    async fn a_reply_with_the_close_right_behind_it_arrives_whole_then_eof() {
        for client_done_first in [false, true] {
            for zero_copy in [true, false] {
                let (mut client_app, client) = pair().await;
                let (backend, mut backend_app) = pair().await;
                if client_done_first {
                    client_app.shutdown().await.unwrap();
                }
                // Queued before forwarding starts: one read finds the bytes, the next the EOF.
                let reply = pattern(700, 9);
                backend_app.write_all(&reply).await.unwrap();
                backend_app.shutdown().await.unwrap();
                let forwarding = tokio::spawn(async move {
                    let counters = Counters::default();
                    let end = forward(&client, &backend, Duration::from_secs(30), &counters, zero_copy).await;
                    (end, counters.stats())
                    // Both sockets close here, as a session's do.
                });
                let mut got = Vec::new();
                let read = tokio::time::timeout(Duration::from_secs(5), client_app.read_to_end(&mut got));
                read.await.expect("no EOF after the reply").unwrap();
                assert!(got == reply, "{} bytes, {client_done_first} {zero_copy}", got.len());
                if !client_done_first {
                    // The backend still reads: the client's EOF reaches it.
                    client_app.shutdown().await.unwrap();
                    assert_eq!(backend_app.read(&mut [0u8; 1]).await.unwrap(), 0);
                }
                let (end, stats) = forwarding.await.unwrap();
                assert!(matches!(end, End::Closed), "{end:?}");
                assert_eq!(stats.downstream, reply.len() as u64);
            }
        }
    }

    /// Many short conversations on a two-worker runtime whose last bytes
    /// arrive right with the FIN, written from another thread while the
    /// bytes before them are being forwarded: every byte arrives, in order.
    /// (A FIN noticed after a read, not before it, could be taken for the
    /// end of bytes that came with it; the window is too short to hit here
    /// every time, but the whole suite found it once.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_racing_the_fin_are_all_forwarded() {
        let mut conversations = tokio::task::JoinSet::new();
        for i in 0..200usize {
            conversations.spawn(async move {
                let (mut client_app, client) = pair().await;
                let (backend, backend_app) = pair().await;
                let forwarding = tokio::spawn(async move {
                    let counters = Counters::default();
                    forward(&client, &backend, Duration::from_secs(30), &counters, i % 2 == 0).await;
                    counters.stats()
                });
                let first = pattern(100 + i, 1);
                let second = pattern(300 + i * 7, 2);
                let expected = [first.clone(), second.clone()].concat();
                let mut backend_app = backend_app.into_std().unwrap();
                backend_app.set_nonblocking(false).unwrap();
                let writer = std::thread::spawn(move || {
                    use std::io::Write;
                    backend_app.write_all(&first).unwrap();
                    std::thread::yield_now();
                    backend_app.write_all(&second).unwrap();
                    backend_app.shutdown(std::net::Shutdown::Write).unwrap();
                    backend_app
                });
                let mut got = Vec::new();
                client_app.read_to_end(&mut got).await.unwrap();
                assert_eq!(got.len(), expected.len(), "conversation {i}");
                assert!(got == expected, "conversation {i}: bytes changed");
                client_app.shutdown().await.unwrap();
                drop(writer.join().unwrap());
                assert_eq!(forwarding.await.unwrap().downstream, expected.len() as u64);
            });
            if conversations.len() >= 8 {
                conversations.join_next().await.unwrap().unwrap();
            }
        }
        while let Some(done) = conversations.join_next().await {
            done.unwrap();
        }
    }

    /// A reset right behind the data: the data still reaches the client,
    /// then the end is reported as the backend's error.
    #[tokio::test]
    async fn a_reset_right_behind_the_data_is_reported_after_the_data_is_written() {
        let (mut client_app, client) = pair().await;
        let (backend, backend_app) = pair().await;
        let forwarding = tokio::spawn(async move {
            let counters = Counters::default();
            let end = forward(&client, &backend, Duration::from_secs(30), &counters, false).await;
            (end, counters.stats())
        });
        // Unread bytes in the backend's own socket make its close a reset.
        client_app.write_all(b"unread by the backend").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut backend_app = backend_app.into_std().unwrap();
        std::io::Write::write_all(&mut backend_app, b"last words").unwrap();
        socket2::SockRef::from(&backend_app)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(backend_app);
        let mut got = [0u8; 10];
        client_app.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"last words");
        let (end, stats) = forwarding.await.unwrap();
        assert!(matches!(end, End::BackendError(_)), "{end:?}");
        assert_eq!(stats.downstream, 10);
    }

    // Real time, not tokio's paused clock: the dev-dependencies then ask no
    // extra tokio features, so `cargo bench` measures the shipped build.
    #[tokio::test]
    async fn idle_timeout_counts_from_the_last_byte() {
        let (mut client_app, client) = pair().await;
        let (backend, mut backend_app) = pair().await;
        let idle = Duration::from_secs(1);
        let forwarding = tokio::spawn(async move {
            let counters = Counters::default();
            forward(&client, &backend, idle, &counters, true).await
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        carry(&mut client_app, &mut backend_app, b"still here").await;
        // 1.2 s after the start: counted from the start it would have ended.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !forwarding.is_finished(),
            "ended 0.5 s after traffic, idle timeout is 1 s"
        );
        let end = forwarding.await.unwrap();
        assert!(matches!(end, End::IdleTimeout(d) if d == idle), "{end:?}");
    }
}
