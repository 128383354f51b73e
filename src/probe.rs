//! `sni-router probe`: test a live gateway (Envoy Gateway, or this router)
//! route by route, the way an operator would with `openssl s_client`, `psql`
//! and `redis-cli`, and say in plain words what failed.
//!
//! For every route: a real TLS handshake with the route's SNI (verified like
//! `sslmode=verify-ca` when `--ca` is given, presenting `--cert/--key`), then a
//! protocol check: on PostgreSQL ports both direct TLS (ALPN `postgresql`)
//! and the classic SSLRequest, followed by a StartupMessage; on Redis ports a
//! PING. Per gateway port, an unknown SNI and a hello without SNI must be
//! refused.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::certs::{self, CertSummary};
use crate::config::{Config, SniPattern};
use crate::sniff::postgres;

/// SNI used for the negative probe; `.invalid` never resolves (RFC 2606).
pub const UNKNOWN_SNI: &str = "sni-router-probe.invalid";

/// What to probe and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Host of the gateway (name or address).
    pub gateway: String,
    /// Gateway port → address to dial instead of `gateway:port`.
    pub listen: HashMap<u16, SocketAddr>,
    /// CA bundle to verify servers with (verify-ca); none: report without verifying.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Gateway ports that carry PostgreSQL.
    pub postgres_ports: BTreeSet<u16>,
    /// Gateway ports that carry Redis.
    pub redis_ports: BTreeSet<u16>,
    /// User for the PostgreSQL StartupMessage.
    pub pg_user: String,
    /// Timeout for each connect, handshake and answer.
    pub timeout: Duration,
    /// Warn when a server certificate expires within this.
    pub renew_before: Duration,
}

/// Which probe a line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TLS straight away (HTTPS, Redis, PostgreSQL direct).
    Tls,
    /// PostgreSQL `sslnegotiation=direct` (ALPN `postgresql`).
    PgDirect,
    /// PostgreSQL SSLRequest, then TLS.
    PgSslRequest,
    /// An unknown SNI: must be refused.
    UnknownSni,
    /// No SNI at all: must be refused.
    NoSni,
}

/// One probe's result.
#[derive(Debug, Clone)]
pub struct Check {
    /// Route name (or `(port)` for the negative probes).
    pub route: String,
    /// Gateway port.
    pub port: u16,
    /// Address dialled.
    pub addr: String,
    /// SNI sent.
    pub sni: Option<String>,
    /// Which probe.
    pub kind: Kind,
    /// Passed?
    pub passed: bool,
    /// One line: what happened.
    pub detail: String,
    /// Why it failed, in a closed set: `refused`, `reset`, `timeout`, `tls_alert`,
    /// `cert_verify`, `client_cert_rejected`, `protocol`, `not_refused`, ...
    pub failure: Option<&'static str>,
    /// The server certificate seen.
    pub cert: Option<CertSummary>,
    /// Connect + handshake time.
    pub handshake: Option<Duration>,
    /// Warnings (certificate expiring, name mismatch under verify-ca).
    pub warnings: Vec<String>,
}

/// The probe could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A certificate or key file is unusable.
    #[error("{0}")]
    Files(String),
    /// rustls refused the configuration.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// Probe every route of `config` on the gateway.
pub async fn run(config: &Config, options: &Options) -> Result<Vec<Check>, ProbeError> {
    let tls = Tls::new(options)?;
    let mut checks = Vec::new();
    let mut ports = BTreeSet::new();
    for route in &config.routes {
        ports.insert(route.gateway_port);
        let sni = match &route.sni {
            SniPattern::Exact(name) => name.clone(),
            SniPattern::Wildcard(suffix) => format!("probe.{suffix}"),
        };
        let kinds: &[Kind] = if options.postgres_ports.contains(&route.gateway_port) {
            &[Kind::PgDirect, Kind::PgSslRequest]
        } else {
            &[Kind::Tls]
        };
        for kind in kinds {
            checks.push(probe(&tls, options, &route.name, route.gateway_port, Some(&sni), *kind).await);
        }
    }
    for port in ports {
        let label = format!("(port {port})");
        checks.push(probe(&tls, options, &label, port, Some(UNKNOWN_SNI), Kind::UnknownSni).await);
        checks.push(probe(&tls, options, &label, port, None, Kind::NoSni).await);
    }
    Ok(checks)
}

async fn probe(tls: &Tls, options: &Options, route: &str, port: u16, sni: Option<&str>, kind: Kind) -> Check {
    let addr = match options.listen.get(&port) {
        Some(a) => a.to_string(),
        None if options.gateway.contains(':') && !options.gateway.starts_with('[') => {
            format!("[{}]:{port}", options.gateway)
        }
        None => format!("{}:{port}", options.gateway),
    };
    let mut check = Check {
        route: route.to_string(),
        port,
        addr: addr.clone(),
        sni: sni.map(str::to_string),
        kind,
        passed: false,
        detail: String::new(),
        failure: None,
        cert: None,
        handshake: None,
        warnings: Vec::new(),
    };
    let outcome = tokio::time::timeout(
        options.timeout * 3,
        attempt(tls, options, &addr, sni, kind, port, &mut check),
    )
    .await
    .unwrap_or_else(|_| Err(("timeout", format!("no answer within {:?}", options.timeout * 3))));
    let must_refuse = matches!(kind, Kind::UnknownSni | Kind::NoSni);
    match (outcome, must_refuse) {
        (Ok(detail), false) => {
            check.passed = true;
            check.detail = detail;
        }
        (Err((failure, detail)), false) => {
            check.failure = Some(failure);
            check.detail = detail;
        }
        (Ok(detail), true) => {
            check.failure = Some("not_refused");
            check.detail = format!("the gateway routed it instead of refusing: {detail}");
        }
        (Err((failure, detail)), true) => {
            // Refused is the right answer; a refused TCP connect is not (the port is down).
            check.passed = failure != "refused" && failure != "timeout";
            check.detail = format!("refused as it should be: {detail}");
            if !check.passed {
                check.failure = Some(failure);
                check.detail = detail;
            }
        }
    }
    if let Some(cert) = &check.cert {
        if cert.days_left >= 0 && Duration::from_secs(cert.days_left as u64 * 86_400) < options.renew_before {
            check.warnings.push(format!(
                "server certificate expires in {} days ({})",
                cert.days_left, cert.not_after
            ));
        }
    }
    check
}

type Attempt = Result<String, (&'static str, String)>;

async fn attempt(
    tls: &Tls,
    options: &Options,
    addr: &str,
    sni: Option<&str>,
    kind: Kind,
    port: u16,
    check: &mut Check,
) -> Attempt {
    let started = Instant::now();
    let mut stream = match tokio::time::timeout(options.timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(("timeout", format!("TCP connect to {addr} timed out"))),
        Ok(Err(e)) => return Err((io_kind(&e), format!("TCP connect to {addr}: {e}"))),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    if kind == Kind::PgSslRequest {
        stream
            .write_all(&postgres::SSL_REQUEST)
            .await
            .map_err(|e| (io_kind(&e), e.to_string()))?;
        let mut answer = [0u8; 1];
        match tokio::time::timeout(options.timeout, stream.read_exact(&mut answer)).await {
            Err(_) => return Err(("timeout", "no answer to the SSLRequest".into())),
            Ok(Err(e)) => {
                return Err((
                    io_kind(&e),
                    format!("SSLRequest: {e} (the gateway does not answer it: Envoy doesn't)"),
                ))
            }
            Ok(Ok(_)) if answer[0] == postgres::ACCEPT_TLS => {}
            Ok(Ok(_)) => {
                return Err((
                    "protocol",
                    format!("SSLRequest answered {:?}, not S", answer[0] as char),
                ))
            }
        }
    }
    let connector = TlsConnector::from(tls.config(kind));
    let name = match sni {
        Some(sni) => ServerName::try_from(sni.to_string()).map_err(|e| ("protocol", e.to_string()))?,
        // rustls sends no SNI to an IP address.
        None => ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
    };
    tls.seen.lock().map(|mut s| s.clear()).ok();
    let handshake = tokio::time::timeout(options.timeout, connector.connect(name, stream)).await;
    if let Some(der) = tls.seen.lock().ok().and_then(|s| s.cert.clone()) {
        check.cert = certs::summary(&der);
    }
    if let Some(warning) = tls.seen.lock().ok().and_then(|s| s.name_mismatch.clone()) {
        check.warnings.push(warning);
    }
    let mut stream = match handshake {
        Err(_) => return Err(("timeout", "TLS handshake timed out".into())),
        Ok(Err(e)) => return Err(tls_failure(&e)),
        Ok(Ok(s)) => s,
    };
    check.handshake = Some(started.elapsed());
    let (_, session) = stream.get_ref();
    let version = session.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
    let alpn = session.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
    let mut detail = format!("TLS {}", version.replace("TLSv1_", "1.").replace("TLSv", ""));
    if let Some(alpn) = alpn {
        let _ = write!(detail, ", ALPN {alpn}");
    }
    if let Some(cert) = &check.cert {
        let _ = write!(
            detail,
            ", server {} (issuer {}, {} days left)",
            cert.subject, cert.issuer, cert.days_left
        );
    }
    let app = if options.postgres_ports.contains(&port) && matches!(kind, Kind::PgDirect | Kind::PgSslRequest) {
        pg_startup(&mut stream, &options.pg_user, options.timeout).await
    } else if options.redis_ports.contains(&port) {
        redis_ping(&mut stream, options.timeout).await
    } else {
        // Give a server that rejects our client certificate (TLS 1.3: after the
        // handshake) a moment to say so.
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await {
            Ok(Err(e)) => Err(tls_failure(&e)),
            _ => Ok(String::new()),
        }
    };
    let app = app?;
    if !app.is_empty() {
        let _ = write!(detail, "; {app}");
    }
    Ok(detail)
}

/// Send a StartupMessage and report the server's first answer.
async fn pg_startup<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    user: &str,
    timeout: Duration,
) -> Attempt {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes());
    for (k, v) in [
        ("user", user),
        ("database", user),
        ("application_name", "sni-router-probe"),
    ] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    stream.write_all(&msg).await.map_err(|e| tls_failure(&e))?;
    let mut head = [0u8; 5];
    match tokio::time::timeout(timeout, stream.read_exact(&mut head)).await {
        Err(_) => return Err(("timeout", "no answer to the StartupMessage".into())),
        Ok(Err(e)) => return Err(tls_failure(&e)),
        Ok(Ok(_)) => {}
    }
    let len = (u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize)
        .saturating_sub(4)
        .min(8192);
    let mut rest = vec![0u8; len];
    let _ = tokio::time::timeout(timeout, stream.read_exact(&mut rest)).await;
    let _ = stream.write_all(&[b'X', 0, 0, 0, 4]).await;
    match head[0] {
        b'R' if rest.starts_with(&[0, 0, 0, 0]) => Ok(format!("PostgreSQL: authentication OK as {user}")),
        b'R' => Ok(format!(
            "PostgreSQL: asks for authentication (method {}) for {user}",
            rest.first()
                .map_or(0, |_| u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]))
        )),
        b'E' => Err(("server_error", format!("PostgreSQL refused: {}", error_text(&rest)))),
        other => Err(("protocol", format!("unexpected PostgreSQL message {:?}", other as char))),
    }
}

/// The `M` (and `S`) fields of an ErrorResponse body.
fn error_text(body: &[u8]) -> String {
    let mut severity = "";
    let mut message = "";
    for field in body.split(|b| *b == 0) {
        match field.split_first() {
            Some((b'S', v)) => severity = std::str::from_utf8(v).unwrap_or(""),
            Some((b'M', v)) => message = std::str::from_utf8(v).unwrap_or(""),
            _ => {}
        }
    }
    format!("{severity}: {message}")
}

async fn redis_ping<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Attempt {
    stream
        .write_all(b"*1\r\n$4\r\nPING\r\n")
        .await
        .map_err(|e| tls_failure(&e))?;
    let mut buf = vec![0u8; 512];
    let n = match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
        Err(_) => return Err(("timeout", "no answer to PING".into())),
        Ok(Err(e)) => return Err(tls_failure(&e)),
        Ok(Ok(n)) => n,
    };
    let reply = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    match reply.as_str() {
        "+PONG" => Ok("Redis: PONG".into()),
        r if r.starts_with("-NOAUTH") => Ok(format!("Redis: {r} (the path works; AUTH needed)")),
        "" => Err(("protocol", "Redis closed the connection after PING".into())),
        r => Err(("server_error", format!("Redis answered {r}"))),
    }
}

fn io_kind(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "refused",
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => "reset",
        std::io::ErrorKind::UnexpectedEof => "closed",
        std::io::ErrorKind::TimedOut => "timeout",
        _ => "io",
    }
}

/// Name a TLS failure the way an operator needs it.
fn tls_failure(e: &std::io::Error) -> (&'static str, String) {
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return (io_kind(e), e.to_string());
    };
    match inner {
        rustls::Error::AlertReceived(alert) => {
            let name = crate::sniff::alert::rfc_name(*alert);
            match alert {
                rustls::AlertDescription::CertificateRequired => (
                    "client_cert_rejected",
                    "the server requires a client certificate (TLS alert certificate_required)".into(),
                ),
                rustls::AlertDescription::UnknownCA
                | rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::CertificateUnknown
                | rustls::AlertDescription::CertificateExpired
                | rustls::AlertDescription::DecryptError => (
                    "client_cert_rejected",
                    format!("the server rejected the client certificate (TLS alert {name})"),
                ),
                _ => ("tls_alert", format!("TLS alert {name}")),
            }
        }
        rustls::Error::InvalidCertificate(reason) => ("cert_verify", cert_reason(reason)),
        other => ("tls", other.to_string()),
    }
}

fn cert_reason(reason: &CertificateError) -> String {
    match reason {
        CertificateError::UnknownIssuer => {
            "certificate verify failed: the server certificate is not signed by the given CA (unknown issuer)".into()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "certificate verify failed: the server certificate has expired".into()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "certificate verify failed: the server certificate is not valid yet (clock skew?)".into()
        }
        CertificateError::BadSignature => "certificate verify failed: bad signature".into(),
        other => format!("certificate verify failed: {other:?}"),
    }
}

// === TLS client configuration ===

/// What the verifier saw during the last handshake.
#[derive(Debug, Default)]
struct Seen {
    cert: Option<Vec<u8>>,
    name_mismatch: Option<String>,
}

impl Seen {
    fn clear(&mut self) {
        *self = Seen::default();
    }
}

/// Verifies like libpq's `sslmode=verify-ca` (chain, not host name) and
/// records the server certificate, so a failed check can still show it.
#[derive(Debug)]
struct Verifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    seen: Arc<Mutex<Seen>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.cert = Some(end_entity.to_vec());
        }
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                if let Ok(mut seen) = self.seen.lock() {
                    seen.name_mismatch = Some(format!(
                        "server certificate does not name {server_name:?} (fine for verify-ca, fails verify-full)"
                    ));
                }
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

struct Tls {
    plain: Arc<rustls::ClientConfig>,
    postgres: Arc<rustls::ClientConfig>,
    seen: Arc<Mutex<Seen>>,
}

impl Tls {
    fn new(options: &Options) -> Result<Self, ProbeError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = match &options.ca {
            Some(path) => {
                let roots = certs::load_roots(path).map_err(ProbeError::Files)?;
                Some(
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| ProbeError::Files(format!("{}: {e}", path.display())))?,
                )
            }
            None => None,
        };
        let identity = match &options.identity {
            Some((cert, key)) => Some(certs::load_identity(cert, key).map_err(ProbeError::Files)?),
            None => None,
        };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let verifier = Arc::new(Verifier {
            inner,
            seen: seen.clone(),
            provider: provider.clone(),
        });
        let build = |alpn: &[&[u8]], identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>| {
            let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone());
            let mut config = match identity {
                Some((certs, key)) => builder.with_client_auth_cert(certs, key)?,
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok::<_, rustls::Error>(Arc::new(config))
        };
        let clone_identity = || identity.as_ref().map(|(c, k)| (c.clone(), k.clone_key()));
        Ok(Self {
            plain: build(&[], clone_identity())?,
            postgres: build(&[b"postgresql"], clone_identity())?,
            seen,
        })
    }

    fn config(&self, kind: Kind) -> Arc<rustls::ClientConfig> {
        match kind {
            Kind::PgDirect => self.postgres.clone(),
            _ => self.plain.clone(),
        }
    }
}

// === output ===

impl Kind {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tls => "tls",
            Kind::PgDirect => "pg-direct",
            Kind::PgSslRequest => "pg-sslrequest",
            Kind::UnknownSni => "unknown-sni",
            Kind::NoSni => "no-sni",
        }
    }
}

/// `sni-router probe`: load, probe, print; exit 1 on any failed check, 2 on a bad values file.
pub async fn command(args: &crate::cli::ProbeArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let config = match crate::config::load_file(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("sni-router probe: {e}");
            return ExitCode::from(2);
        }
    };
    let options = Options {
        gateway: args.gateway.clone(),
        listen: args.listen.iter().copied().collect(),
        ca: args.ca.clone(),
        identity: args.cert.clone().zip(args.key.clone()),
        postgres_ports: args.postgres_port.iter().copied().collect(),
        redis_ports: args.redis_port.iter().copied().collect(),
        pg_user: args.pg_user.clone(),
        timeout: args.timeout,
        renew_before: args.renew_before,
    };
    let checks = match run(&config, &options).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sni-router probe: {e}");
            return ExitCode::from(2);
        }
    };
    match args.format {
        crate::cli::ProbeFormat::Table => print!("{}", table(&checks)),
        crate::cli::ProbeFormat::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&to_json(&checks)).unwrap_or_default()
            )
        }
        crate::cli::ProbeFormat::Junit => print!("{}", junit(&checks)),
    }
    if checks.iter().all(|c| c.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A human-readable table.
pub fn table(checks: &[Check]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<20} {:<6} {:<34} {:<14} {:<8} detail",
        "result", "route", "port", "SNI", "probe", "time"
    );
    for c in checks {
        let time = c
            .handshake
            .map(|d| format!("{:.1}ms", d.as_secs_f64() * 1000.0))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<6} {:<20} {:<6} {:<34} {:<14} {:<8} {}",
            if c.passed { "PASS" } else { "FAIL" },
            c.route,
            c.port,
            c.sni.as_deref().unwrap_or("(none)"),
            c.kind.name(),
            time,
            c.detail
        );
        for w in &c.warnings {
            let _ = writeln!(out, "{:<6} {:<20} {:<6} warning: {w}", "", "", "");
        }
    }
    let failed = checks.iter().filter(|c| !c.passed).count();
    let _ = writeln!(out, "\n{} passed, {} failed", checks.len() - failed, failed);
    out
}

/// JSON: one object per check.
pub fn to_json(checks: &[Check]) -> serde_json::Value {
    let items: Vec<_> = checks
        .iter()
        .map(|c| {
            json!({
                "route": c.route,
                "port": c.port,
                "address": c.addr,
                "sni": c.sni,
                "probe": c.kind.name(),
                "passed": c.passed,
                "failure": c.failure,
                "detail": c.detail,
                "handshake_ms": c.handshake.map(|d| d.as_secs_f64() * 1000.0),
                "certificate": c.cert.as_ref().map(|s| json!({
                    "subject": s.subject, "issuer": s.issuer, "days_left": s.days_left, "not_after": s.not_after,
                })),
                "warnings": c.warnings,
            })
        })
        .collect();
    let failed = checks.iter().filter(|c| !c.passed).count();
    json!({"checks": items, "passed": checks.len() - failed, "failed": failed})
}

/// JUnit XML, one test case per check, for CI pipelines.
pub fn junit(checks: &[Check]) -> String {
    let failed = checks.iter().filter(|c| !c.passed).count();
    let total: f64 = checks.iter().filter_map(|c| c.handshake).map(|d| d.as_secs_f64()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites><testsuite name=\"sni-router probe\" tests=\"{}\" failures=\"{failed}\" time=\"{total:.3}\">",
        checks.len()
    );
    for c in checks {
        let name = format!(
            "{} {} {}",
            c.route,
            c.kind.name(),
            c.sni.as_deref().unwrap_or("(no SNI)")
        );
        let time = c.handshake.map_or(0.0, |d| d.as_secs_f64());
        let _ = write!(
            out,
            "  <testcase classname=\"port {}\" name=\"{}\" time=\"{time:.3}\">",
            c.port,
            xml(&name)
        );
        if c.passed {
            let _ = write!(out, "<system-out>{}</system-out>", xml(&c.detail));
        } else {
            let _ = write!(
                out,
                "<failure type=\"{}\" message=\"{}\"/>",
                c.failure.unwrap_or("failed"),
                xml(&c.detail)
            );
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("</testsuite></testsuites>\n");
    out
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
