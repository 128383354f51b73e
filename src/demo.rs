//! `sni-router demo`: the router on the example values file in front of
//! built-in TLS backends, with a self-check that shows passthrough at work.
//!
//! Each backend service gets a certificate (SANs: its routes' host names)
//! from a throwaway CA, answers PostgreSQL's SSLRequest like a server with
//! `ssl=on`, completes the TLS handshake itself, greets the client by name and
//! echoes. The self-check connects through the router with each route's SNI
//! and compares the certificate it sees with the backend's own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::cli::DemoArgs;
use crate::config::{self, Config, Service, SniPattern};
use crate::pki::{self, Ca, Leaf};
use crate::router::Router;
use crate::sniff::postgres;

/// The example values file, built in so `demo` runs from any directory.
pub const EXAMPLE_VALUES: &str = include_str!("../config/values.example.yaml");
const EXAMPLE_PATH: &str = "config/values.example.yaml";
/// The gateway port whose routes also get the PostgreSQL SSLRequest check.
const POSTGRES_PORT: u16 = 5432;

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The values file does not load.
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// Certificates could not be made.
    #[error("{0}")]
    Pki(#[from] pki::PkiError),
    /// TLS setup failed.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// A socket or file operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The router could not bind.
    #[error("{0}")]
    Bind(#[from] crate::listener::BindError),
}

/// One built-in backend.
struct Backend {
    service: Service,
    addr: SocketAddr,
    leaf: Leaf,
}

/// One self-check line.
struct Check {
    route: String,
    port: u16,
    sni: String,
    mode: &'static str,
    result: Result<Reached, String>,
    expect_ok: bool,
}

struct Reached {
    greeting: String,
    subject: String,
    passthrough: bool,
}

/// Run the demo. Returns whether every self-check passed.
pub async fn run(args: &DemoArgs) -> Result<bool, DemoError> {
    let config = match &args.config {
        Some(path) => config::load_file(path)?,
        None => config::load(EXAMPLE_VALUES, Path::new(EXAMPLE_PATH))?,
    };
    let ca = Ca::new()?;
    let backends = start_backends(&config, &ca).await?;

    let mut options = args.serve.options(IpAddr::V4(Ipv4Addr::LOCALHOST));
    for route in &config.routes {
        // Free loopback ports unless told otherwise: 5432 and 6379 are often taken.
        options
            .listen
            .entry(route.gateway_port)
            .or_insert(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
    }
    for b in &backends {
        options.backends.overrides.insert(
            format!("{}.{}", b.service.name, b.service.namespace),
            vec![b.addr.to_string()],
        );
    }
    crate::lifecycle::raise_open_file_limit();
    let router = Router::start(&config, options).await?;

    let checks = self_check(&config, &router, &ca, &backends).await;
    let passed = checks
        .iter()
        .all(|c| c.result.is_ok() == c.expect_ok && c.result.as_ref().map_or(true, |r| r.passthrough));
    println!("{}", table(&config, &router, &backends, &checks));
    println!("self-check: {}", if passed { "PASSED" } else { "FAILED" });
    if args.check_only {
        return Ok(passed);
    }

    let dir = std::env::temp_dir().join(format!("sni-router-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca.cert_pem())?;
    println!("{}", try_it(&config, &router, &ca_file));
    println!("Serving until Ctrl-C.");
    let _ = tokio::signal::ctrl_c().await;
    let _ = std::fs::remove_dir_all(&dir);
    router.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(passed)
}

/// One backend per distinct service, with a certificate for all its host names.
async fn start_backends(config: &Config, ca: &Ca) -> Result<Vec<Backend>, DemoError> {
    let mut names: BTreeMap<(String, String), (Service, Vec<String>)> = BTreeMap::new();
    for route in &config.routes {
        let key = (route.service.namespace.clone(), route.service.name.clone());
        names
            .entry(key)
            .or_insert_with(|| (route.service.clone(), Vec::new()))
            .1
            .push(route.sni.to_string());
    }
    let mut backends = Vec::new();
    for (_, (service, hosts)) in names {
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let leaf = ca.server(&hosts)?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(pki::server_config(&leaf, None, &[])?);
        let who = format!("{}.{}", service.name, service.namespace);
        tokio::spawn(serve_backend(listener, acceptor, who));
        backends.push(Backend { service, addr, leaf });
    }
    Ok(backends)
}

async fn serve_backend(listener: TcpListener, acceptor: TlsAcceptor, who: String) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let who = who.clone();
        tokio::spawn(async move {
            let _ = backend_session(stream, acceptor, &who).await;
        });
    }
}

/// Like a server with ssl=on: SSLRequest → `S`; then TLS; then greet and echo.
async fn backend_session(mut stream: TcpStream, acceptor: TlsAcceptor, who: &str) -> std::io::Result<()> {
    let mut head = [0u8; 8];
    let n = stream.peek(&mut head).await?;
    if n == 8 && head == postgres::SSL_REQUEST {
        stream.read_exact(&mut head).await?;
        stream.write_all(&[postgres::ACCEPT_TLS]).await?;
    }
    let mut tls = acceptor.accept(stream).await?;
    tls.write_all(format!("hello from {who} (demo backend; TLS ends here, not at the router)\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return tls.shutdown().await;
        }
        tls.write_all(&buf[..n]).await?;
    }
}

async fn self_check(config: &Config, router: &Router, ca: &Ca, backends: &[Backend]) -> Vec<Check> {
    let mut checks = Vec::new();
    let Ok(client_config) = pki::client_config(ca, None, &[]) else {
        return checks;
    };
    for route in &config.routes {
        let sni = match &route.sni {
            SniPattern::Exact(name) => name.clone(),
            SniPattern::Wildcard(suffix) => format!("demo.{suffix}"),
        };
        let Some(addr) = router.local_addr(route.gateway_port) else {
            continue;
        };
        let own = backends.iter().find(|b| b.service == route.service).map(|b| &b.leaf);
        let mut modes = vec![("TLS", false)];
        if route.gateway_port == POSTGRES_PORT {
            modes.push(("PG SSLRequest", true));
        }
        for (mode, ssl_request) in modes {
            let result = connect(addr, &sni, client_config.clone(), ssl_request, own).await;
            checks.push(Check {
                route: route.name.clone(),
                port: route.gateway_port,
                sni: sni.clone(),
                mode,
                result,
                expect_ok: true,
            });
        }
    }
    if let Some(port) = router.addrs().keys().next().copied() {
        let addr = router.addrs()[&port];
        let sni = "unknown.invalid".to_string();
        let result = connect(addr, &sni, client_config, false, None).await;
        checks.push(Check {
            route: "(none)".into(),
            port,
            sni,
            mode: "TLS",
            result,
            expect_ok: false,
        });
    }
    checks
}

/// Connect through the router as a client would; report what was reached.
async fn connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    ssl_request: bool,
    own: Option<&Leaf>,
) -> Result<Reached, String> {
    let work = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        if ssl_request {
            stream
                .write_all(&postgres::SSL_REQUEST)
                .await
                .map_err(|e| e.to_string())?;
            let mut answer = [0u8; 1];
            stream
                .read_exact(&mut answer)
                .await
                .map_err(|e| format!("SSLRequest: {e}"))?;
            if answer[0] != postgres::ACCEPT_TLS {
                return Err(format!("SSLRequest answered {:?}", answer[0] as char));
            }
        }
        let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
        let tls = TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(describe_tls_error)?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let mut reader = BufReader::new(tls);
        let mut greeting = String::new();
        reader
            .read_line(&mut greeting)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(Reached {
            greeting: greeting.trim().to_string(),
            subject: subject(&peer),
            passthrough: own.is_some_and(|leaf| leaf.cert_der.as_ref() == peer.as_slice()),
        })
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), work)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// rustls says `received fatal alert: UnrecognizedName`; print the RFC name.
fn describe_tls_error(e: std::io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(alert)) => {
            format!("refused: TLS alert {}", crate::sniff::alert::rfc_name(*alert))
        }
        Some(other) => format!("TLS: {other}"),
        None => format!("TLS: {e}"),
    }
}

fn subject(der: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => cert.subject().to_string(),
        Err(_) => "(no certificate)".into(),
    }
}

fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn table(config: &Config, router: &Router, backends: &[Backend], checks: &[Check]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sni-router demo: {} route(s) from {}",
        config.routes.len(),
        config.source.display()
    );
    for (port, addr) in router.addrs() {
        let _ = writeln!(out, "  gateway port {port:<5} -> listening on {addr}");
    }
    for b in backends {
        let _ = writeln!(
            out,
            "  backend {}.{} on {} (certificate sha256 {}...)",
            b.service.name,
            b.service.namespace,
            b.addr,
            fingerprint(&b.leaf.cert_der)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<16} {:<6} {:<34} {:<14} {:<6} result",
        "route", "port", "SNI sent", "negotiation", "check"
    );
    for c in checks {
        let ok = c.result.is_ok() == c.expect_ok && c.result.as_ref().map_or(true, |r| r.passthrough);
        let verdict = if ok { "ok" } else { "FAIL" };
        let detail = match &c.result {
            Ok(r) => format!(
                "{} | server certificate {} ({})",
                r.greeting,
                r.subject,
                if r.passthrough {
                    "the backend's own: TLS passed through"
                } else {
                    "NOT the backend's"
                }
            ),
            Err(e) => e.clone(),
        };
        let _ = writeln!(
            out,
            "{:<16} {:<6} {:<34} {:<14} {:<6} {detail}",
            c.route, c.port, c.sni, c.mode, verdict
        );
    }
    out
}

fn try_it(config: &Config, router: &Router, ca_file: &Path) -> String {
    let mut out = String::from("\nTry it by hand (the CA is a throwaway one):\n");
    for route in &config.routes {
        let Some(addr) = router.local_addr(route.gateway_port) else {
            continue;
        };
        let sni = match &route.sni {
            SniPattern::Exact(name) => name.clone(),
            SniPattern::Wildcard(suffix) => format!("demo.{suffix}"),
        };
        let starttls = if route.gateway_port == POSTGRES_PORT {
            "-starttls postgres "
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  openssl s_client {starttls}-connect {addr} -servername {sni} -CAfile {} -verify_return_error",
            PathBuf::from(ca_file).display()
        );
    }
    if let Some(addr) = router.addrs().values().next() {
        let _ = writeln!(
            out,
            "  openssl s_client -connect {addr} -servername unknown.invalid   # refused: unrecognized name"
        );
    }
    out
}
