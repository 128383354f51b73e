//! One connection, start to end:
//!
//! ```text
//! sniff ─▶ Sniffed ─▶ lookup(port, SNI) ─▶ Target ─▶ upstream::connect
//!       ─▶ [SSLRequest path: send SSLRequest, require exactly 'S']
//!       ─▶ write the buffered hello ─▶ forward ─▶ Outcome
//! ```
//!
//! Only this module decides what a refused client hears: every refusal is a
//! `Reject`, which maps to a metric/log reason and to a reply on the wire.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::access::Access;
use crate::forward::{self, Counters, Direction, End};
use crate::metrics::Metrics;
use crate::pending::HelloPermit;
use crate::proxy_protocol;
use crate::routes::{RouteTable, Target};
use crate::sniff::{self, postgres, Alert, HelloError, Negotiation, SniffError, Sniffed};
use crate::sockbuf::SocketBuffers;
use crate::upstream::{self, ConnectError};

/// Default ClientHello timeout (Envoy `listener_filters_timeout`: 15 s).
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a refused client gets to read the reply before the socket closes.
const LINGER: Duration = Duration::from_secs(2);

/// Per-connection limits and timeouts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time to receive the complete ClientHello (and PostgreSQL negotiation).
    pub hello_timeout: Duration,
    /// Largest ClientHello accepted, record headers included.
    pub max_hello: usize,
    /// Backend connect timeout, per address tried.
    pub connect_timeout: Duration,
    /// Idle timeout once forwarding.
    pub idle_timeout: Duration,
    /// Forward with `splice(2)` where the OS has it.
    pub zero_copy: bool,
    /// Kernel buffer sizes for client and backend sockets.
    pub socket_buffers: SocketBuffers,
    /// How long a worker keeps polling after its last work (zero: off); the
    /// runtime applies it (`busypoll`), this copy is for `config_dump`.
    pub busy_poll: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
            max_hello: sniff::DEFAULT_MAX_HELLO,
            connect_timeout: upstream::DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: forward::DEFAULT_IDLE_TIMEOUT,
            zero_copy: true,
            socket_buffers: SocketBuffers::Auto,
            busy_poll: Duration::ZERO,
        }
    }
}

/// What every session reads: limits, policy and metrics.
pub struct Context {
    /// Timeouts and size bounds.
    pub limits: Limits,
    /// Who may connect, and PROXY protocol on either side.
    pub policy: Policy,
    /// Where connections are counted.
    pub metrics: Metrics,
}

/// Access and PROXY protocol settings.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Allowed client networks.
    pub access: Access,
    /// Expect a PROXY protocol header before the client's bytes.
    pub accept_proxy_protocol: bool,
    /// Send a PROXY protocol v2 header to backends.
    pub send_proxy_protocol: bool,
}

/// The accepted socket's addresses and gateway port.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// Gateway port.
    pub port: u16,
    /// TCP peer (the load balancer when PROXY protocol is on).
    pub peer: SocketAddr,
}

/// Whose fault a refusal is: decides the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something the router cannot route.
    Client,
    /// The backend is unreachable or misbehaved.
    Backend,
}

/// What a refused client is sent before the connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Close without a word (the client is not speaking TLS, or is gone).
    Close,
    /// A fatal TLS alert.
    Alert(Alert),
    /// A PostgreSQL ErrorResponse.
    PgError(Vec<u8>),
    /// A Redis error line.
    RespError(&'static str),
}

/// Why a connection was refused before (or instead of) forwarding.
#[derive(Debug, thiserror::Error)]
pub enum Reject {
    /// The first bytes are neither TLS nor a known plaintext protocol.
    #[error("first bytes are not TLS")]
    NotTls,
    /// The client closed or failed before a complete ClientHello.
    #[error("{0}")]
    ClientGone(SniffError),
    /// No complete ClientHello within the timeout.
    #[error("no complete ClientHello within {0:?}")]
    HelloTimeout(Duration),
    /// The ClientHello exceeds the size bound.
    #[error("ClientHello exceeds {limit} bytes")]
    HelloTooLarge {
        /// The bound.
        limit: usize,
    },
    /// The ClientHello does not parse.
    #[error("{0}")]
    MalformedHello(HelloError),
    /// The ClientHello has no server_name.
    #[error("ClientHello carries no SNI")]
    NoSni,
    /// No route for the SNI on this gateway port.
    #[error("no route for SNI {0:?} on this port")]
    UnknownSni(String),
    /// Bytes sent ahead of a negotiation answer (CVE-2021-23214).
    #[error("{0}")]
    PgInjection(SniffError),
    /// A plaintext PostgreSQL StartupMessage.
    #[error("plaintext PostgreSQL StartupMessage (protocol 3.{0}); TLS is required")]
    PgPlaintext(u16),
    /// A plaintext CancelRequest on a port with more than one route.
    #[error("plaintext CancelRequest dropped: {0} routes on this port, cannot tell which backend")]
    PgCancelDropped(usize),
    /// A plaintext Redis command.
    #[error("plaintext Redis command; TLS is required")]
    RespPlaintext,
    /// No backend endpoint could be reached.
    #[error(transparent)]
    Upstream(#[from] ConnectError),
    /// The PostgreSQL backend did not accept the SSLRequest with a single `S`.
    #[error("backend did not accept TLS: {0}")]
    BackendNoTls(String),
    /// The client address is not in the allowed networks.
    #[error("client address {0} is not allowed on this port")]
    SourceDenied(std::net::IpAddr),
    /// `--max-connections` reached.
    #[error("connection limit of {0} reached")]
    ConnectionLimit(usize),
    /// `--max-pending-hellos` reached.
    #[error("{0} connections are already waiting for their ClientHello")]
    HelloLimit(usize),
    /// `--max-pending-hellos-per-source` reached for this source.
    #[error("{0} already has {1} connections waiting for their ClientHello")]
    SourceHelloLimit(std::net::IpAddr, usize),
    /// The PROXY protocol header is missing or malformed.
    #[error("PROXY protocol: {0}")]
    ProxyProtocol(String),
}

/// How a connection ended.
#[derive(Debug)]
pub enum Ending {
    /// Forwarded; how forwarding stopped.
    Forwarded(End),
    /// A plaintext CancelRequest was passed to the port's only backend.
    CancelForwarded,
    /// Refused.
    Rejected(Reject),
}

/// Everything known about one connection when it ends, besides how it
/// ended (the [`Ending`]): the access-log record.
#[derive(Debug)]
pub struct Outcome {
    /// The client: the TCP peer, or the source a PROXY header named.
    pub client: SocketAddr,
    /// SNI sent by the client, if a hello was read.
    pub sni: Option<Box<str>>,
    /// ALPN protocols offered, comma-separated as logged (empty: none).
    pub alpn: Box<str>,
    /// Direct TLS or PostgreSQL SSLRequest.
    pub negotiation: Option<Negotiation>,
    /// The route chosen.
    pub target: Option<Arc<Target>>,
    /// The backend address connected to.
    pub backend: Option<SocketAddr>,
    /// Time to read the ClientHello.
    pub hello_time: Option<Duration>,
    /// Time to connect to the backend.
    pub connect_time: Option<Duration>,
}

impl Outcome {
    /// Nothing known yet but the client's address.
    pub fn new(client: SocketAddr) -> Self {
        Self {
            client,
            sni: None,
            alpn: Box::default(),
            negotiation: None,
            target: None,
            backend: None,
            hello_time: None,
            connect_time: None,
        }
    }
}

/// Serve one accepted connection. `hello_permit` is released once the
/// client's ClientHello is in; it and the route table snapshot are dropped
/// when routing ends (a reload's old table is not kept alive by long
/// connections). The rest is borrowed, so the caller's task keeps one copy
/// of each, not two; and an `async` block rather than an `async fn`, which
/// would copy each argument into a local of its own.
#[allow(clippy::manual_async_fn)] // not an `async fn`: see above
pub fn run<'a>(
    client: &'a mut TcpStream,
    conn: &'a Conn,
    table: Arc<RouteTable>,
    ctx: &'a Context,
    hello_permit: HelloPermit,
    counters: &'a Counters,
) -> impl Future<Output = (Outcome, Ending)> + 'a {
    async move {
        let mut outcome = Outcome::new(conn.peer);
        // The routing state (sniff, hello, connect, timers) is boxed and freed
        // before forwarding starts: inline, the task would keep room for it for
        // the connection's whole life, and idle connections are mostly this task.
        // Its span too: nothing logs while forwarding (the access-log event
        // carries every field), so an idle connection keeps no span. A debug
        // span, so the default (info) level creates none per connection.
        let span = tracing::debug_span!("conn", listener = conn.port, client.addr = %conn.peer);
        let routing = Box::pin(
            route_and_connect(client, *conn, table, ctx, hello_permit, counters, &mut outcome).instrument(span),
        );
        let result = match routing.await {
            Ok(Routed::Backend(backend)) => Ok(Ending::Forwarded(
                forward::forward(
                    client,
                    &backend,
                    ctx.limits.idle_timeout,
                    counters,
                    ctx.limits.zero_copy,
                )
                .await,
            )),
            Ok(Routed::Done(ending)) => Ok(ending),
            Err(reject) => Err(reject),
        };
        // Apart from the record: as a field it would hold a placeholder, and
        // take room in every connection's task, for the whole forwarding.
        let ending = match result {
            Ok(ending) => ending,
            Err(reject) => {
                // Boxed: refusing is the rare path, and inline its linger timer
                // and buffers would size every connection's task.
                Box::pin(refuse(client, reject.reply())).await;
                Ending::Rejected(reject)
            }
        };
        (outcome, ending)
    }
}

/// How routing ended: a backend ready for forwarding, or nothing to forward.
enum Routed {
    /// Connected, negotiation and hello replayed.
    Backend(TcpStream),
    /// Done without forwarding (a plaintext cancel request).
    Done(Ending),
}

async fn route_and_connect(
    client: &mut TcpStream,
    conn: Conn,
    table: Arc<RouteTable>,
    ctx: &Context,
    hello_permit: HelloPermit,
    counters: &Counters,
    outcome: &mut Outcome,
) -> Result<Routed, Reject> {
    let limits = &ctx.limits;
    let port = conn.port;
    let started = tokio::time::Instant::now();
    let deadline = started + limits.hello_timeout;
    // The original destination, for a PROXY header to the backend: from the
    // client's PROXY header, else the socket (asked only when needed).
    let mut original_dst = None;
    if ctx.policy.accept_proxy_protocol {
        let header = proxy_protocol::read_header(client, limits.hello_timeout)
            .await
            .map_err(|e| Reject::ProxyProtocol(e.to_string()))?;
        if let Some((src, dst)) = header.addresses {
            outcome.client = src;
            original_dst = Some(dst);
        }
    }
    if !ctx.policy.access.allows(port, outcome.client.ip()) {
        return Err(Reject::SourceDenied(outcome.client.ip()));
    }
    let sniffed = match tokio::time::timeout_at(deadline, sniff::sniff(client, limits.max_hello)).await {
        Err(_) => return Err(Reject::HelloTimeout(limits.hello_timeout)),
        Ok(result) => result.map_err(Reject::from)?,
    };
    drop(hello_permit);
    outcome.hello_time = Some(started.elapsed());
    let hello = match sniffed {
        Sniffed::Tls(hello) => hello,
        Sniffed::PgStartup { minor } => return Err(Reject::PgPlaintext(minor)),
        Sniffed::PgCancel(bytes) => {
            return forward_cancel(port, &table, limits, &bytes, outcome)
                .await
                .map(Routed::Done)
        }
        Sniffed::RespPlaintext => return Err(Reject::RespPlaintext),
        Sniffed::NotTls => return Err(Reject::NotTls),
    };
    // Moved, not copied: the record keeps them for the connection's life.
    let sniff::Hello {
        hello: names,
        bytes,
        negotiation,
    } = hello;
    outcome.sni = names.sni.map(String::into_boxed_str);
    let mut alpn = names.alpn;
    outcome.alpn = match alpn.len() {
        0 => Box::default(),
        1 => alpn.swap_remove(0).into_boxed_str(),
        _ => alpn.join(",").into(),
    };
    outcome.negotiation = Some(negotiation);
    let sni = outcome.sni.as_deref().ok_or(Reject::NoSni)?;
    let target = table
        .lookup(port, sni)
        .ok_or_else(|| Reject::UnknownSni(sni.to_string()))?
        .clone();
    outcome.target = Some(target.clone());
    counters.attach(target.stats(&ctx.metrics).bytes.clone());

    // What the backend gets, in order: the PROXY header, PostgreSQL's
    // SSLRequest, the hello. The first of them rides on the connect.
    let header = ctx.policy.send_proxy_protocol.then(|| {
        let dst = match original_dst {
            Some(dst) => dst,
            None => client.local_addr().unwrap_or(conn.peer),
        };
        proxy_protocol::encode_v2(outcome.client, dst)
    });
    let pg = negotiation == Negotiation::PgSslRequest;
    let first: &[u8] = match &header {
        Some(header) => header,
        None if pg => &postgres::SSL_REQUEST,
        None => &bytes,
    };
    let connecting = tokio::time::Instant::now();
    let (mut backend, addr, mut sent) =
        upstream::connect(&target.endpoints, limits.connect_timeout, limits.socket_buffers, first).await?;
    outcome.connect_time = Some(connecting.elapsed());
    outcome.backend = Some(addr);
    // Each piece takes what went with the connect; the ones after it start at 0.
    if let Some(header) = &header {
        backend
            .write_all(&header[std::mem::take(&mut sent)..])
            .await
            .map_err(|e| Reject::BackendNoTls(format!("writing the PROXY header: {e}")))?;
    }
    if pg {
        pg_ssl_request(&mut backend, std::mem::take(&mut sent), limits.connect_timeout).await?;
    }
    // Replay the hello exactly as received; the client's TLS session is the backend's.
    backend
        .write_all(&bytes[sent..])
        .await
        .map_err(|e| Reject::BackendNoTls(format!("writing the ClientHello: {e}")))?;
    counters.add(Direction::Upstream, bytes.len() as u64);
    Ok(Routed::Backend(backend))
}

/// Replay PostgreSQL's negotiation to the backend (`sent` bytes of the
/// SSLRequest went with the connect): exactly one `S` must come back.
async fn pg_ssl_request(backend: &mut TcpStream, sent: usize, timeout: Duration) -> Result<(), Reject> {
    let fail = |why: String| Reject::BackendNoTls(why);
    backend
        .write_all(&postgres::SSL_REQUEST[sent..])
        .await
        .map_err(|e| fail(format!("sending SSLRequest: {e}")))?;
    let mut answer = [0u8; 64];
    let n = match tokio::time::timeout(timeout, backend.read(&mut answer)).await {
        Err(_) => return Err(fail(format!("no answer to SSLRequest within {timeout:?}"))),
        Ok(Err(e)) => return Err(fail(format!("reading the SSLRequest answer: {e}"))),
        Ok(Ok(n)) => n,
    };
    match &answer[..n] {
        [postgres::ACCEPT_TLS] => Ok(()),
        [] => Err(fail(
            "the backend closed the connection instead of answering the SSLRequest".into(),
        )),
        [postgres::DECLINE] => Err(fail("the backend answered N: it has ssl=off".into())),
        // CVE-2021-23222: anything after the S would reach the client unencrypted-but-trusted.
        [postgres::ACCEPT_TLS, rest @ ..] => Err(fail(format!(
            "{} bytes followed the backend's S before TLS started (CVE-2021-23222 pattern)",
            rest.len()
        ))),
        [b'E', ..] => Err(fail(
            "the backend answered with an ErrorResponse (too old for SSLRequest?)".into(),
        )),
        other => Err(fail(format!(
            "the backend answered {:?} instead of S",
            String::from_utf8_lossy(&other[..other.len().min(16)])
        ))),
    }
}

/// A plaintext CancelRequest carries no SNI: it can only go where the port's
/// single route goes. libpq 17+ sends cancels over TLS, which route normally.
async fn forward_cancel(
    port: u16,
    table: &RouteTable,
    limits: &Limits,
    bytes: &[u8],
    outcome: &mut Outcome,
) -> Result<Ending, Reject> {
    let routes = table.routes(port);
    let [target] = routes else {
        return Err(Reject::PgCancelDropped(routes.len()));
    };
    outcome.target = Some(target.clone());
    let (mut backend, addr, sent) =
        upstream::connect(&target.endpoints, limits.connect_timeout, limits.socket_buffers, bytes).await?;
    outcome.backend = Some(addr);
    // The server closes after a cancel; a failed write just means the cancel is lost, as it would be direct.
    let _ = backend.write_all(&bytes[sent..]).await;
    let _ = backend.shutdown().await;
    Ok(Ending::CancelForwarded)
}

/// Send the reply, then close gently: shut down writing and drain briefly, so
/// unread client bytes do not turn the close into a reset that discards the reply.
async fn refuse(client: &mut TcpStream, reply: Reply) {
    let bytes: Vec<u8> = match reply {
        Reply::Close => Vec::new(),
        Reply::Alert(alert) => alert.record().to_vec(),
        Reply::PgError(bytes) => bytes,
        Reply::RespError(line) => line.as_bytes().to_vec(),
    };
    if !bytes.is_empty() && client.write_all(&bytes).await.is_err() {
        return;
    }
    let _ = client.shutdown().await;
    // On the heap: on the stack it would sit in every connection's future
    // (this one is part of the task's state machine) for the whole session.
    let mut sink = vec![0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        let mut total = 0usize;
        while let Ok(n) = client.read(&mut sink).await {
            total += n;
            if n == 0 || total > 256 * 1024 {
                break;
            }
        }
    })
    .await;
}

// === impl Reject ===

/// The `-ERR` line a plaintext Redis client gets.
const RESP_TLS_REQUIRED: &str =
    "-ERR this gateway accepts only TLS: connect with redis-cli --tls --sni <host> (sni-router)\r\n";

impl Reject {
    /// Metric label and log field: a closed set.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::NotTls => "not_tls",
            Reject::ClientGone(_) => "client_closed",
            Reject::HelloTimeout(_) => "hello_timeout",
            Reject::HelloTooLarge { .. } => "hello_too_large",
            Reject::MalformedHello(_) => "malformed_hello",
            Reject::NoSni => "no_sni",
            Reject::UnknownSni(_) => "unknown_sni",
            Reject::PgInjection(_) => "pg_injection",
            Reject::PgPlaintext(_) => "pg_plaintext",
            Reject::PgCancelDropped(_) => "pg_cancel_dropped",
            Reject::RespPlaintext => "redis_plaintext",
            Reject::Upstream(_) => "upstream_unreachable",
            Reject::BackendNoTls(_) => "backend_no_tls",
            Reject::SourceDenied(_) => "source_denied",
            Reject::ConnectionLimit(_) => "connection_limit",
            Reject::HelloLimit(_) => "hello_limit",
            Reject::SourceHelloLimit(..) => "source_hello_limit",
            Reject::ProxyProtocol(_) => "proxy_protocol",
        }
    }

    /// What the client is sent.
    pub fn reply(&self) -> Reply {
        match self {
            Reject::NoSni | Reject::UnknownSni(_) => Reply::Alert(Alert::UnrecognizedName),
            Reject::HelloTooLarge { .. } | Reject::MalformedHello(_) => Reply::Alert(Alert::DecodeError),
            Reject::Upstream(_) | Reject::BackendNoTls(_) => Reply::Alert(Alert::InternalError),
            Reject::PgPlaintext(_) => Reply::PgError(postgres::plaintext_refusal()),
            Reject::RespPlaintext => Reply::RespError(RESP_TLS_REQUIRED),
            Reject::NotTls
            | Reject::SourceDenied(_)
            | Reject::ConnectionLimit(_)
            | Reject::HelloLimit(_)
            | Reject::SourceHelloLimit(..)
            | Reject::ProxyProtocol(_)
            | Reject::ClientGone(_)
            | Reject::HelloTimeout(_)
            | Reject::PgInjection(_)
            | Reject::PgCancelDropped(_) => Reply::Close,
        }
    }

    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            Reject::Upstream(_) | Reject::BackendNoTls(_) => Fault::Backend,
            _ => Fault::Client,
        }
    }
}

impl From<SniffError> for Reject {
    fn from(e: SniffError) -> Self {
        match e {
            SniffError::Hello(HelloError::TooLarge { limit }) => Reject::HelloTooLarge { limit },
            SniffError::Hello(e) => Reject::MalformedHello(e),
            e @ (SniffError::Injection(..) | SniffError::TooManyRequests) => Reject::PgInjection(e),
            e @ (SniffError::Closed | SniffError::Io(_)) => Reject::ClientGone(e),
        }
    }
}
