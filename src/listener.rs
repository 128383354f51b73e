//! Listeners: bind one socket per gateway port, accept, and run a session per
//! connection in its own task and tracing span; log each connection once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::forward::{Counters, End};
use crate::routes::RouteTable;
use crate::session::{self, Ending, Fault, Limits, Outcome};

/// State every session of every listener reads.
#[derive(Debug)]
pub struct Shared {
    /// The current route table; replaced whole on reload.
    pub table: ArcSwap<RouteTable>,
    /// Timeouts and size bounds.
    pub limits: Limits,
}

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

/// Bind the listening socket for gateway port `port` at `addr`.
pub async fn bind(port: u16, addr: SocketAddr) -> Result<TcpListener, BindError> {
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
    socket.bind(addr).map_err(fail)?;
    socket.listen(1024).map_err(fail)
}

/// Accept on `listener` until `stop` turns true. Each session holds a clone of
/// `open`, so the owner can wait for the last one to finish.
pub async fn serve(
    listener: TcpListener,
    port: u16,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    open: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                pause_on_accept_error(port, &e).await;
                continue;
            }
        };
        let shared = shared.clone();
        let open = open.clone();
        let span = tracing::info_span!("conn", listener = port, client.addr = %peer);
        tokio::spawn(
            async move {
                connection(stream, peer, port, &shared).await;
                drop(open);
            }
            .instrument(span),
        );
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, port: u16, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let started = tokio::time::Instant::now();
    let counters = Counters::default();
    let table = shared.table.load_full();
    let outcome = session::run(stream, port, table, &shared.limits, &counters).await;
    access_log(&outcome, peer, port, &counters, started.elapsed());
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

/// One event per connection with everything an operator asks about it.
fn access_log(outcome: &Outcome, peer: SocketAddr, port: u16, counters: &Counters, elapsed: Duration) {
    let stats = counters.stats();
    let route = outcome.target.as_ref().map(|t| t.route.name.as_str()).unwrap_or("-");
    let backend = outcome.backend.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    let sni = outcome.sni.as_deref().unwrap_or("-");
    let alpn = outcome.alpn.join(",");
    let negotiation = match outcome.negotiation {
        Some(crate::sniff::Negotiation::Direct) => "tls",
        Some(crate::sniff::Negotiation::PgSslRequest) => "pg-sslrequest",
        None => "-",
    };
    let (end, detail, warn) = match &outcome.ending {
        Ending::Forwarded(End::Closed) => ("closed", String::new(), false),
        Ending::Forwarded(End::IdleTimeout(d)) => ("idle_timeout", format!("idle for {d:?}"), false),
        Ending::Forwarded(End::ClientError(e)) => ("client_error", e.to_string(), false),
        Ending::Forwarded(End::BackendError(e)) => ("backend_error", e.to_string(), true),
        Ending::CancelForwarded => ("pg_cancel_forwarded", String::new(), false),
        Ending::Rejected(r) => (r.reason(), r.to_string(), r.fault() == Fault::Backend),
    };
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(
                target: "sni_router::access",
                $level,
                client.addr = %peer,
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
