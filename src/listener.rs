//! Listeners: bind one socket per gateway port, accept, apply the
//! connection limits, and run a session per connection in its own task and
//! tracing span. Each connection is logged and counted once, when it ends.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use crate::busypoll;
use crate::config::TcpKeepalive;
use crate::forward::{Counters, End};
use crate::pending::{HelloPermit, PendingHellos};
use crate::routes::RouteTable;
use crate::session::{self, Conn, Context, Ending, Fault, Outcome, Reject};
use crate::sockbuf::SocketBuffers;

/// State every listener and session reads.
pub struct Shared {
    /// The current route table; replaced whole on reload.
    pub table: ArcSwap<RouteTable>,
    /// Limits, policy and metrics for sessions.
    pub ctx: Context,
    /// Most connections open at once (0: no limit).
    pub max_connections: usize,
    /// Caps on connections still sending their ClientHello.
    pub hellos: PendingHellos,
    /// Connections open now, all listeners together.
    pub open: OpenConnections,
}

/// Counts open connections; drain waits for it to reach zero. Lists their
/// client sockets, so a drain that runs out of time can end each one
/// through its own session, which then logs and counts it.
#[derive(Debug, Default)]
pub struct OpenConnections {
    count: AtomicUsize,
    idle: Notify,
    #[cfg(unix)]
    sockets: std::sync::Mutex<std::collections::HashSet<std::os::fd::RawFd>>,
    cut: AtomicBool,
}

/// One open connection; dropping it updates the count.
pub struct OpenGuard(Arc<Shared>);

/// A gateway port could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("gateway port {port}: cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The gateway port.
    pub port: u16,
    /// The local address tried.
    pub addr: SocketAddr,
    /// Why.
    pub source: io::Error,
}

/// Bind the listening socket for gateway port `port` at `addr`; accepted
/// sockets inherit its buffer sizes when `buffers` fixes them for `addr`.
pub async fn bind(port: u16, addr: SocketAddr, buffers: SocketBuffers) -> Result<TcpListener, BindError> {
    let fail = |source| BindError { port, addr, source };
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(fail)?;
    socket.set_reuseaddr(true).map_err(fail)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // `[::]` serves IPv4 too, whatever the host's bindv6only default.
        socket2::SockRef::from(&socket).set_only_v6(false).map_err(fail)?;
    }
    // Accepted sockets inherit it on Linux: one setsockopt per listener, not per connection.
    socket.set_nodelay(true).map_err(fail)?;
    // A loopback listener only ever has peers on this host.
    buffers.apply(&socket, addr.ip()).map_err(fail)?;
    if let SocketBuffers::Fixed(asked) = buffers {
        warn_if_capped(port, &socket, asked);
    }
    socket.bind(addr).map_err(fail)?;
    socket.listen(1024).map_err(fail)
}

/// An explicit `--socket-buffer` above the host's limits is cut down without
/// an error from the kernel: say so once per listener, not per connection.
fn warn_if_capped(port: u16, socket: &tokio::net::TcpSocket, asked: usize) {
    match crate::sockbuf::granted(socket2::SockRef::from(socket)) {
        Ok(granted) if granted < asked => tracing::warn!(
            listener = port,
            asked,
            granted,
            "socket buffers capped by the kernel (raise net.core.rmem_max and net.core.wmem_max for more)"
        ),
        _ => {}
    }
}

/// Whether sockets accepted on a listener bound to `local` need their
/// buffers sized one by one: a listener whose buffers `bind` sized passes
/// them on to what it accepts; behind any other (a wildcard address, say)
/// each peer is looked at in turn.
fn sized_one_by_one(buffers: SocketBuffers, local: Option<IpAddr>) -> bool {
    let inherited = local.is_some_and(|ip| buffers.size_for(ip).is_some());
    !inherited && buffers != SocketBuffers::Kernel
}

/// Accept on `listener` until `stop` turns true; the socket closes on return.
pub async fn serve(listener: TcpListener, number: u16, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let local = listener.local_addr().ok().map(|addr| addr.ip());
    let size_accepted = sized_one_by_one(shared.ctx.limits.socket_buffers, local);
    let port = Arc::new(Port::new(number, size_accepted, &shared.ctx.metrics));
    let accepted_total = shared.ctx.metrics.accepted.with_label_values(&[&port.label]);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                pause_on_accept_error(number, &e).await;
                continue;
            }
        };
        accepted_total.inc();
        busypoll::worked();
        let Some(open) = OpenGuard::enter(&shared) else {
            let reject = Reject::ConnectionLimit(shared.max_connections);
            finish(&shared, &port, Outcome::new(peer), Ending::Rejected(reject), None);
            continue;
        };
        let permit = match shared.hellos.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(reject) => {
                finish(&shared, &port, Outcome::new(peer), Ending::Rejected(reject), None);
                continue;
            }
        };
        tokio::spawn(Contained {
            task: connection(stream, Conn { port: number, peer }, port.clone(), open, permit),
            port: port.clone(),
            peer,
        });
    }
}

#[allow(clippy::manual_async_fn)] // not an `async fn`: see the body
fn connection(
    mut stream: TcpStream,
    conn: Conn,
    port: Arc<Port>,
    open: OpenGuard,
    permit: HelloPermit,
) -> impl Future<Output = ()> {
    // An `async` block, not an `async fn`: an `async fn` moves each argument
    // into a local of its own, and both copies take room in the task for the
    // connection's whole life.
    async move {
        // Linux copies TCP_NODELAY from the listening socket (see `bind`).
        #[cfg(not(target_os = "linux"))]
        let _ = stream.set_nodelay(true);
        if port.size_accepted {
            let _ = open.0.ctx.limits.socket_buffers.apply(&stream, conn.peer.ip());
        }
        let table = open.0.table.load_full();
        if let Some(keepalive) = table.keepalive(port.number) {
            set_keepalive(&stream, keepalive);
        }
        // A guard, so a panicking session still leaves the gauge honest.
        let _active = ActiveGuard::new(port.active.clone());
        let started = tokio::time::Instant::now();
        let counters = Counters::default();
        open.0.open.list(&stream);
        let (outcome, ending) = session::run(&mut stream, &conn, table, &open.0.ctx, permit, &counters).await;
        open.0.open.unlist(&stream);
        // Closed before the bookkeeping: for the last direction to end, the
        // close is what sends the FIN.
        drop(stream);
        finish(&open.0, &port, outcome, ending, Some((&counters, started.elapsed())));
    }
}

pin_project_lite::pin_project! {
    /// One connection's task; a panic in it (a bug) ends that connection
    /// only, and is logged and counted like any other end. The runtime would
    /// contain the panic too, but silently: no access-log event, no metric.
    /// A struct, not an `async fn` wrapper: that would store the task twice
    /// (argument and pinned local), doubling every connection's memory.
    struct Contained<F> {
        #[pin]
        task: F,
        port: Arc<Port>,
        peer: SocketAddr,
    }
}

impl<F: Future<Output = ()>> Future for Contained<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = self.project();
        let task = this.task;
        match std::panic::catch_unwind(AssertUnwindSafe(|| task.poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                // The runtime drops the task (its sockets, guards and permit) right after.
                report_panic(this.port, *this.peer, payload.as_ref());
                Poll::Ready(())
            }
        }
    }
}

fn report_panic(port: &Port, peer: SocketAddr, payload: &(dyn std::any::Any + Send)) {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into());
    port.panicked.inc();
    tracing::event!(
        target: crate::logging::ACCESS_TARGET,
        tracing::Level::ERROR,
        client.addr = %peer,
        listener = port.number,
        end = "panic",
        detail = %message,
        "connection"
    );
}

/// Envoy Gateway's `tcpKeepalive`: SO_KEEPALIVE on, and each field that is
/// set overrides the kernel default.
fn set_keepalive(stream: &TcpStream, keepalive: TcpKeepalive) {
    let mut params = socket2::TcpKeepalive::new();
    if let Some(idle) = keepalive.idle_time {
        params = params.with_time(idle);
    }
    if let Some(interval) = keepalive.interval {
        params = params.with_interval(interval);
    }
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    if let Some(probes) = keepalive.probes {
        params = params.with_retries(probes);
    }
    let socket = socket2::SockRef::from(stream);
    let result = if keepalive.idle_time.is_none() && keepalive.interval.is_none() && keepalive.probes.is_none() {
        socket.set_keepalive(true)
    } else {
        socket.set_tcp_keepalive(&params)
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "cannot set TCP keepalive");
    }
}

/// Accept errors never end the loop: resets are the client's business; out of
/// file descriptors is ours, and retrying at once would spin.
async fn pause_on_accept_error(port: u16, e: &io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted => {
            tracing::debug!(listener = port, error = %e, "accept: client went away");
        }
        _ => {
            tracing::warn!(listener = port, error = %e, "accept failed; pausing 100 ms");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Count and log a finished connection, once.
fn finish(shared: &Shared, port: &Port, outcome: Outcome, ending: Ending, traffic: Option<(&Counters, Duration)>) {
    // However the forwarding saw it end (the client's EOF, a write to a
    // socket shut down), a cut connection ended because the drain ran out.
    let ending = match ending {
        Ending::Forwarded(_) if shared.open.is_cut() => Ending::Forwarded(End::DrainTimeout),
        other => other,
    };
    let metrics = &shared.ctx.metrics;
    let listener = &port.label;
    let route = outcome.target.as_ref().map(|t| t.route.name.as_str()).unwrap_or("-");
    if let Some(t) = outcome.hello_time {
        port.hello.observe(t.as_secs_f64());
    }
    let stats = outcome.target.as_ref().map(|t| t.stats(metrics));
    if let (Some(t), Some(stats)) = (outcome.connect_time, stats) {
        stats.connect_seconds.observe(t.as_secs_f64());
    }
    match &ending {
        Ending::Forwarded(end) => {
            if let Some(stats) = stats {
                stats.routed.inc();
                stats.ended(end).inc();
                if let Some((_, elapsed)) = traffic {
                    stats.duration_seconds.observe(elapsed.as_secs_f64());
                }
            }
        }
        Ending::CancelForwarded => metrics.pg_cancels_forwarded.with_label_values(&[listener]).inc(),
        Ending::Rejected(reject) => {
            metrics.rejected.with_label_values(&[listener, reject.reason()]).inc();
            if matches!(reject, Reject::Upstream(_)) {
                metrics.connect_failures.with_label_values(&[listener, route]).inc();
            }
        }
    }
    let (stats, elapsed) = traffic.map_or((Default::default(), Duration::ZERO), |(c, d)| (c.stats(), d));
    access_log(&outcome, &ending, port.number, stats, elapsed);
}

/// One event per connection with everything an operator asks about it.
fn access_log(outcome: &Outcome, ending: &Ending, port: u16, stats: crate::forward::Stats, elapsed: Duration) {
    let (end, warn) = match ending {
        Ending::Forwarded(end) => (end.label(), matches!(end, End::BackendError(_))),
        Ending::CancelForwarded => ("pg_cancel_forwarded", false),
        Ending::Rejected(r) => (r.reason(), r.fault() == Fault::Backend),
    };
    // Nothing below is built for a level that is off (a load test's `warn`).
    let enabled = if warn {
        tracing::enabled!(target: crate::logging::ACCESS_TARGET, tracing::Level::WARN)
    } else {
        tracing::enabled!(target: crate::logging::ACCESS_TARGET, tracing::Level::INFO)
    };
    if !enabled {
        return;
    }
    let route = outcome.target.as_ref().map(|t| t.route.name.as_str()).unwrap_or("-");
    let backend = outcome.backend.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    let sni = outcome.sni.as_deref().unwrap_or("-");
    let alpn = &*outcome.alpn;
    let negotiation = match outcome.negotiation {
        Some(crate::sniff::Negotiation::Direct) => "tls",
        Some(crate::sniff::Negotiation::PgSslRequest) => "pg-sslrequest",
        None => "-",
    };
    let detail = match ending {
        Ending::Forwarded(End::Closed) | Ending::CancelForwarded => String::new(),
        Ending::Forwarded(End::IdleTimeout(d)) => format!("idle for {d:?}"),
        Ending::Forwarded(End::DrainTimeout) => "cut when the drain timeout ran out".into(),
        Ending::Forwarded(End::ClientError(e) | End::BackendError(e)) => e.to_string(),
        Ending::Rejected(r) => r.to_string(),
    };
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(
                target: crate::logging::ACCESS_TARGET,
                $level,
                client.addr = %outcome.client,
                listener = port,
                sni,
                alpn,
                negotiation,
                route,
                backend,
                bytes.upstream = stats.upstream,
                bytes.downstream = stats.downstream,
                duration_ms = elapsed.as_millis() as u64,
                end,
                detail,
                "connection"
            )
        };
    }
    if warn {
        event!(tracing::Level::WARN);
    } else {
        event!(tracing::Level::INFO);
    }
}

/// A gateway port and its per-port metric handles, resolved once per
/// listener instead of once per connection.
struct Port {
    number: u16,
    /// Size accepted sockets' buffers one by one (they did not inherit them).
    size_accepted: bool,
    label: String,
    active: prometheus::IntGauge,
    hello: prometheus::Histogram,
    panicked: prometheus::IntCounter,
}

impl Port {
    fn new(number: u16, size_accepted: bool, metrics: &crate::metrics::Metrics) -> Self {
        let label = number.to_string();
        Self {
            number,
            size_accepted,
            active: metrics.active.with_label_values(&[&label]),
            hello: metrics.hello(&label),
            // Created now, so it is exported as 0 and an alert on any increase works.
            panicked: metrics.panicked.with_label_values(&[&label]),
            label,
        }
    }
}

/// Counts a connection in `sni_router_connections_active` while it lives.
struct ActiveGuard(prometheus::IntGauge);

impl ActiveGuard {
    fn new(gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

// === impl OpenConnections ===

impl OpenConnections {
    /// Connections open now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Wait until no connection is open.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// End every open connection (the drain ran out of time): shut its
    /// client socket down both ways. Each session then sees the client's
    /// end, passes it on to the backend, finishes, and is logged and counted
    /// with `end="drain_timeout"`. (Where there is no `shutdown(2)` on a raw
    /// descriptor, the connections end when the process does.)
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        #[cfg(unix)]
        for fd in self.lock_sockets().iter() {
            // Still open: a session unlists its socket (under this lock)
            // before closing it; `unlist` says what a panic leaves.
            let _ = nix::sys::socket::shutdown(*fd, nix::sys::socket::Shutdown::Both);
        }
    }

    /// Whether [`OpenConnections::cut`] has been called.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    /// List a connection's client socket for [`OpenConnections::cut`].
    fn list(&self, stream: &TcpStream) {
        #[cfg(unix)]
        self.lock_sockets().insert(std::os::fd::AsRawFd::as_raw_fd(stream));
        #[cfg(not(unix))]
        let _ = stream;
    }

    /// Take it off the list; before it closes, so that a cut never meets
    /// its descriptor number reused by a socket opened since. (A session
    /// that panics closes its socket without this: the number stays listed,
    /// and a cut, which ends every connection anyway, may shut down
    /// whatever socket reuses it, or fail on something that is not one.)
    fn unlist(&self, stream: &TcpStream) {
        #[cfg(unix)]
        self.lock_sockets().remove(&std::os::fd::AsRawFd::as_raw_fd(stream));
        #[cfg(not(unix))]
        let _ = stream;
    }

    #[cfg(unix)]
    fn lock_sockets(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<std::os::fd::RawFd>> {
        // A panic while holding the lock leaves the set itself intact.
        self.sockets.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl OpenGuard {
    /// Count a new connection, unless the limit is reached.
    fn enter(shared: &Arc<Shared>) -> Option<Self> {
        let before = shared.open.count.fetch_add(1, Ordering::AcqRel);
        let guard = OpenGuard(shared.clone());
        if shared.max_connections != 0 && before >= shared.max_connections {
            return None; // the guard's drop undoes the increment
        }
        Some(guard)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.0.open.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.open.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection's memory is mostly its task: the connection
    /// future, which while forwarding holds the session's state and the
    /// forward future. Sizes are printed (`--nocapture`) and bounded so a
    /// change that bloats every held connection shows here first.
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(RouteTable::default()),
            ctx: Context {
                limits: Default::default(),
                policy: Default::default(),
                metrics: crate::metrics::Metrics::new(),
            },
            max_connections: 0,
            hellos: PendingHellos::new(0, 0),
            open: OpenConnections::default(),
        });
        let listener = bind(443, "127.0.0.1:0".parse().unwrap(), SocketBuffers::Auto)
            .await
            .unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let port = Arc::new(Port::new(443, false, &shared.ctx.metrics));
        let permit = shared.hellos.admit(peer.ip()).unwrap();
        let open = OpenGuard::enter(&shared).unwrap();
        let task = Contained {
            task: connection(stream, Conn { port: 443, peer }, port.clone(), open, permit),
            port,
            peer,
        };
        let size = std::mem::size_of_val(&task);
        eprintln!("connection task: {size} B");
        // tokio allocates a task as one 128-byte-aligned cell: 32 B of header,
        // 16 of scheduler and id, an 8-byte stage tag, the future, 48 B of
        // trailer. Up to 792 B of future the cell is 896 B; 8 more and it is
        // 1024 (6 % of an idle connection's memory). Debug builds lay the
        // future out 16 B larger.
        let bound = if cfg!(debug_assertions) { 808 } else { 792 };
        assert!(size <= bound, "connection task {size} B, more than {bound}");
    }

    #[test]
    fn accepted_sockets_are_sized_one_by_one_only_behind_unsized_listeners() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let auto = SocketBuffers::Auto;
        assert!(!sized_one_by_one(auto, ip("127.0.0.1")), "inherited from the listener");
        assert!(!sized_one_by_one(auto, ip("::1")), "inherited from the listener");
        assert!(sized_one_by_one(auto, ip("0.0.0.0")), "a loopback peer may come in");
        assert!(sized_one_by_one(auto, ip("::")));
        assert!(sized_one_by_one(auto, None));
        assert!(
            !sized_one_by_one(SocketBuffers::Fixed(8192), ip("0.0.0.0")),
            "inherited"
        );
        assert!(!sized_one_by_one(SocketBuffers::Kernel, ip("0.0.0.0")));
        assert!(!sized_one_by_one(SocketBuffers::Kernel, ip("127.0.0.1")));
    }

    /// A loopback listener sizes its sockets once; what it accepts inherits
    /// that (Linux reports twice the size set).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_loopback_listener_passes_fixed_buffers_to_accepted_sockets() {
        let local = 2 * crate::sockbuf::LOCAL_SIZE;
        for (buffers, fixed) in [(SocketBuffers::Auto, true), (SocketBuffers::Kernel, false)] {
            let listener = bind(443, "127.0.0.1:0".parse().unwrap(), buffers).await.unwrap();
            let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            let socket = socket2::SockRef::from(&accepted);
            let sizes = (socket.recv_buffer_size().unwrap(), socket.send_buffer_size().unwrap());
            assert_eq!(sizes == (local, local), fixed, "{buffers}: {sizes:?}");
        }
    }

    /// The router leaves TCP_NODELAY to the listening socket on Linux; a
    /// Nagle delay on a forwarded handshake would cost up to 40 ms per flight.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let listener = bind(443, "127.0.0.1:0".parse().unwrap(), SocketBuffers::Auto)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
