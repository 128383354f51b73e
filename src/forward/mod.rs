//! Two-way forwarding between client and backend once the route is chosen.
//!
//! Each direction runs on its own: EOF on one side shuts down writing on the
//! other (half-close), and the connection is done when both directions are.
//! Traffic either way resets one shared idle deadline. Byte counters are
//! updated as data moves so long-lived connections show progress.
//!
//! An idle connection holds no buffer: a direction borrows one (a pipe for
//! `splice(2)` on Linux, else a byte buffer) only once its socket is
//! readable, and returns it to a per-thread pool when the chunk is written.

mod copy;
#[cfg(target_os = "linux")]
mod splice;

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::net::TcpStream;
use tokio::time::Instant;

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

/// Which socket failed.
#[derive(Clone, Copy)]
enum Side {
    Client,
    Backend,
}

/// Forward until both directions are done, an error, or the idle timeout.
/// `zero_copy` uses `splice(2)` where the OS has it.
pub async fn forward(
    client: &TcpStream,
    backend: &TcpStream,
    idle: Duration,
    counters: &Counters,
    zero_copy: bool,
) -> End {
    let start = Instant::now();
    // Milliseconds since `start` of the last byte moved, shared by both directions.
    let last = AtomicU64::new(0);
    // Pinned here, not moved into the blocks below: a future moved into an
    // async block or `select!` is stored twice (the capture and the local),
    // and an idle connection's memory is mostly this future.
    let mut up = std::pin::pin!(pipe(
        Half {
            from: client,
            to: backend,
            from_side: Side::Client,
            to_side: Side::Backend,
            direction: Direction::Upstream,
            counters,
            last: &last,
            start,
        },
        zero_copy,
    ));
    let mut down = std::pin::pin!(pipe(
        Half {
            from: backend,
            to: client,
            from_side: Side::Backend,
            to_side: Side::Client,
            direction: Direction::Downstream,
            counters,
            last: &last,
            start,
        },
        zero_copy,
    ));
    // An error in either direction ends both: waiting on the other would keep
    // the backend session open (an idle database never speaks first) until the
    // idle timeout. A reset once the other direction has finished cleanly is
    // how many servers end (PostgreSQL exits with the client's close_notify
    // unread): that is a close, not a failure.
    let both = async {
        let (mut up_done, mut down_done) = (false, false);
        while !(up_done && down_done) {
            let (result, other_done) = tokio::select! {
                r = up.as_mut(), if !up_done => (r.map(|()| up_done = true), down_done),
                r = down.as_mut(), if !down_done => (r.map(|()| down_done = true), up_done),
            };
            match result {
                Ok(()) => {}
                Err((_, e)) if other_done && is_reset(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    let idle_watch = async {
        loop {
            let deadline = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            tokio::time::sleep_until(deadline).await;
            let since = start
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if since >= idle {
                return;
            }
        }
    };
    let (both, idle_watch) = (std::pin::pin!(both), std::pin::pin!(idle_watch));
    tokio::select! {
        result = both => match result {
            Ok(()) => End::Closed,
            Err((Side::Client, e)) => End::ClientError(e),
            Err((Side::Backend, e)) => End::BackendError(e),
        },
        () = idle_watch => End::IdleTimeout(idle),
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)
}

/// One direction's sockets and bookkeeping.
struct Half<'a> {
    from: &'a TcpStream,
    to: &'a TcpStream,
    from_side: Side,
    to_side: Side,
    direction: Direction,
    counters: &'a Counters,
    last: &'a AtomicU64,
    start: Instant,
}

/// Move `from` → `to` until EOF, then shut down writing on `to`. Takes the
/// `Half` by value: an idle connection's memory is mostly this future, twice.
async fn pipe(half: Half<'_>, zero_copy: bool) -> Result<(), (Side, io::Error)> {
    #[cfg(target_os = "linux")]
    if zero_copy {
        return splice::run(&half).await;
    }
    let _ = zero_copy;
    copy::run(&half).await
}

impl Half<'_> {
    /// Count a chunk that was written in full.
    fn moved(&self, n: usize) {
        self.counters.add(self.direction, n as u64);
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The reading side ended: tell the other side, keep the rest flowing.
    fn eof(&self) -> Result<(), (Side, io::Error)> {
        match socket2::SockRef::from(self.to).shutdown(Shutdown::Write) {
            Ok(()) => Ok(()),
            // The peer is already gone; nothing left to tell it.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            Err(e) => Err((self.to_side, e)),
        }
    }
}

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
