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
//! borrows one (a pipe for `splice(2)` on Linux, else a byte buffer) when its
//! socket is readable, and returns it to a per-thread pool once written.

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
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

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
}

impl End {
    /// Every value `label` returns.
    pub const LABELS: [&'static str; 4] = ["closed", "idle_timeout", "client_error", "backend_error"];

    /// The `end` value in the access log and `sni_router_connections_ended_total`.
    pub fn label(&self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::IdleTimeout(_) => "idle_timeout",
            End::ClientError(_) => "client_error",
            End::BackendError(_) => "backend_error",
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
        up: Flow::Waiting,
        down: Flow::Waiting,
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
        let result = this.down.poll(cx, &down, this.counters, *this.zero_copy, &mut moved);
        let mut end = ended(result, this.up);
        if end.is_none() {
            let result = this.up.poll(cx, &up, this.counters, *this.zero_copy, &mut moved);
            end = ended(result, this.down);
        }
        if moved {
            *this.last = Instant::now();
        }
        if let Some(end) = end {
            return Poll::Ready(end);
        }
        if matches!((&*this.up, &*this.down), (Flow::Done, Flow::Done)) {
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
    if matches!(other, Flow::Done) && is_reset(&e) {
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

/// Where one direction stands.
enum Flow {
    /// Nothing held; waiting for the source to be readable.
    Waiting,
    /// Bytes read and not yet all written.
    Writing(Chunk),
    /// EOF read and passed on as a shutdown of the other side's writes.
    Done,
}

/// Bytes in flight in one direction.
enum Chunk {
    /// In a pipe, `left` bytes still to splice out.
    #[cfg(target_os = "linux")]
    Pipe(splice::Pipe, usize),
    /// In a buffer, `buf[at..end]` still to write.
    Buf(copy::Buf, usize, usize),
}

type FlowResult = Result<(), (Side, io::Error)>;

impl Flow {
    /// Move bytes until the source would block (`Pending`), EOF (`Ready(Ok)`,
    /// once) or an error. Sets `moved` when any byte was written.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        ends: &Ends<'_>,
        counters: &Counters,
        zero_copy: bool,
        moved: &mut bool,
    ) -> Poll<FlowResult> {
        loop {
            match self {
                Flow::Done => return Poll::Ready(Ok(())),
                Flow::Waiting => {
                    ready!(ends.from.poll_read_ready(cx)).map_err(|e| (ends.from_side, e))?;
                    match Chunk::read(ends.from, zero_copy) {
                        Ok(Some(chunk)) => *self = Flow::Writing(chunk),
                        Ok(None) => {
                            *self = Flow::Done;
                            return Poll::Ready(shut_down_writes(ends));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Poll::Ready(Err((ends.from_side, e))),
                    }
                }
                Flow::Writing(chunk) => {
                    ready!(ends.to.poll_write_ready(cx)).map_err(|e| (ends.to_side, e))?;
                    match chunk.write(ends.to) {
                        Ok(n) => {
                            counters.add(ends.direction, n as u64);
                            *moved = true;
                            if chunk.is_empty() {
                                // Written in full: the pipe or buffer goes back to the pool.
                                if let Flow::Writing(chunk) = std::mem::replace(self, Flow::Waiting) {
                                    chunk.release();
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
    /// Read what `from` has; `None` at EOF, `WouldBlock` when nothing is there.
    fn read(from: &TcpStream, zero_copy: bool) -> io::Result<Option<Chunk>> {
        #[cfg(target_os = "linux")]
        if zero_copy {
            // Out of descriptors for a pipe: this chunk goes through a buffer.
            if let Some(pipe) = splice::Pipe::take() {
                return pipe.fill(from).map(|n| n.map(|n| Chunk::Pipe(pipe, n)));
            }
        }
        let _ = zero_copy;
        let mut buf = copy::Buf::take();
        match from.try_read(&mut buf) {
            Ok(0) => {
                buf.release();
                Ok(None)
            }
            Ok(n) => Ok(Some(Chunk::Buf(buf, 0, n))),
            Err(e) => {
                buf.release();
                Err(e)
            }
        }
    }

    /// Write some of the held bytes to `to`; how many.
    fn write(&mut self, to: &TcpStream) -> io::Result<usize> {
        match self {
            #[cfg(target_os = "linux")]
            Chunk::Pipe(pipe, left) => {
                let n = pipe.drain(to, *left)?;
                *left -= n;
                Ok(n)
            }
            Chunk::Buf(buf, at, end) => {
                let n = to.try_write(&buf[*at..*end])?;
                *at += n;
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
