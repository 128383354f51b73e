//! Fixtures shared by the integration tests: the router binary started on
//! free ports with its logs captured, TLS backends with certificates from a
//! throwaway CA, and raw-byte helpers. Raw echo backends and the clients that
//! talk to them through the router are in `echo`, what `/proc` says about a
//! process in `procfs`, the real PostgreSQL and Redis servers in `services`.
#![allow(dead_code)]

pub mod echo;
pub mod procfs;
pub mod services;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use sni_router::pki::{self, Ca, Leaf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Path of the built `sni-router` binary.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_sni-router")
}

/// A `sni-router run` process on loopback ports, logging JSON to a buffer.
pub struct RouterProcess {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    pub addrs: BTreeMap<u16, SocketAddr>,
    /// The admin endpoint's address.
    pub admin: Option<SocketAddr>,
    /// The values file (kept alive with the process).
    pub dir: tempfile::TempDir,
}

impl RouterProcess {
    /// Start `run` on `values`, every gateway port on 127.0.0.1:0, plus `extra` flags.
    pub fn start(values: &str, ports: &[u16], extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("values.yaml");
        std::fs::write(&path, values).unwrap();
        let mut args: Vec<String> = vec!["run".into(), "--config".into(), path.display().to_string()];
        for port in ports {
            args.push("--listen".into());
            args.push(format!("{port}=127.0.0.1:0"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(&args, dir, ports.len(), &[])
    }

    /// Spawn the binary with `args` and environment `env`; wait for `listeners` "listening" events.
    pub fn spawn(args: &[String], dir: tempfile::TempDir, listeners: usize, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(binary());
        // Port 0 for the admin endpoint too, so tests can run side by side.
        cmd.args(["--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("SNI_ROUTER_ADMIN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start sni-router");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut router = Self {
            child,
            logs,
            addrs: BTreeMap::new(),
            admin: None,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while router.addrs.len() < listeners || router.admin.is_none() {
            assert!(
                Instant::now() < deadline,
                "router did not start; logs:\n{}",
                router.logs().join("\n")
            );
            if let Ok(Some(status)) = router.child.try_wait() {
                panic!("router exited with {status}; logs:\n{}", router.logs().join("\n"));
            }
            for line in router.logs() {
                if let Some((port, addr)) = listening(&line) {
                    router.addrs.insert(port, addr);
                }
                if let Some(addr) = admin_listening(&line) {
                    router.admin = Some(addr);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        router
    }

    /// The local address of gateway port `port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        self.addrs[&port]
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Wait until a log line contains all of `needles`; return it.
    pub async fn wait_log(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.logs().into_iter().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?}; logs:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An HTTP request to the admin endpoint: (status, body).
    pub async fn admin(&self, method: &str, path: &str) -> (u16, String) {
        http(self.admin.expect("admin endpoint"), method, path).await
    }

    /// The value of one metric series, e.g. `sni_router_connections_accepted_total{listener="443"}`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.admin("GET", "/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Send a signal (e.g. "HUP", "TERM") to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn admin_listening(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()? != "admin listening" {
        return None;
    }
    v.get("address")?.as_str()?.parse().ok()
}

fn listening(line: &str) -> Option<(u16, SocketAddr)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()? != "listening" {
        return None;
    }
    let port = v.get("listener")?.as_u64()? as u16;
    let addr = v.get("address")?.as_str()?.parse().ok()?;
    Some((port, addr))
}

/// A parsed JSON log line.
pub fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Run the binary to completion with `args`; (exit code, stdout, stderr).
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(binary());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Listen on 127.0.0.1:0 and run `serve` on every accepted connection, each
/// in a task of its own, for as long as the runtime lives; the address.
pub async fn serve_each<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// A loopback address with nothing listening on it (bound, then released).
pub fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

/// A router on gateway port 443 with one good route (`ok.example.com`, to a
/// [`TlsBackend`] named `ok`) and one whose backend is down (`down.example.com`).
pub struct OkAndDown {
    /// The CA the backend's certificate comes from.
    pub ca: Ca,
    /// The router, started with the caller's extra flags.
    pub router: RouterProcess,
    /// The backend behind `ok.example.com`.
    pub ok: TlsBackend,
}

impl OkAndDown {
    /// Start the backend and the router, with `extra` flags for `run`.
    pub async fn start(extra: &[&str]) -> Self {
        let ca = Ca::new().unwrap();
        let ok = TlsBackend::start(&ca, "ok", &["ok.example.com"], None).await;
        let yaml = values(
            &[
                route("ok.example.com", 443, "ok"),
                route("down.example.com", 443, "down"),
            ]
            .concat(),
        );
        let mut flags: Vec<String> = backend_flag("ok", &ok.endpoint).into();
        flags.extend(backend_flag("down", &closed_port()));
        flags.extend(extra.iter().map(|s| s.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let router = RouterProcess::start(&yaml, &[443], &flags);
        Self { ca, router, ok }
    }
}

/// A router whose gateway port `port` has one route per (fqdn, backend
/// address), each to its own service `<prefix><index>`; the routes are named
/// `<first label>-<port>`.
pub fn router_on(port: u16, prefix: &str, routes: &[(&str, SocketAddr)]) -> RouterProcess {
    let mut items = String::new();
    let mut extra = Vec::new();
    for (i, (fqdn, endpoint)) in routes.iter().enumerate() {
        let service = format!("{prefix}{i}");
        items.push_str(&route(fqdn, port, &service));
        extra.extend(backend_flag(&service, &endpoint.to_string()));
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    RouterProcess::start(&values(&items), &[port], &extra)
}

/// A TLS server that presents its own certificate, greets with its name,
/// reports the client certificate's subject (if any) and then echoes.
pub struct TlsBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate.
    pub leaf: Leaf,
    /// `host:port` for `--backend`.
    pub endpoint: String,
}

impl TlsBackend {
    /// Start on 127.0.0.1:0 with a certificate for `names`; with `client_ca`, mutual TLS.
    pub async fn start(ca: &Ca, name: &str, names: &[&str], client_ca: Option<&Ca>) -> Self {
        let leaf = ca.server(names).unwrap();
        let config = pki::server_config(&leaf, client_ca, &[]).unwrap();
        let acceptor = TlsAcceptor::from(config);
        let name = name.to_string();
        let addr = serve_each(move |stream| {
            let acceptor = acceptor.clone();
            let name = name.clone();
            async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let client = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| subject(c.as_ref()))
                    .unwrap_or_else(|| "none".into());
                let greeting = format!("backend={name} client={client}\n");
                if tls.write_all(greeting.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = tls.shutdown().await;
            }
        })
        .await;
        Self {
            addr,
            leaf,
            endpoint: addr.to_string(),
        }
    }
}

/// A certificate's subject, e.g. `CN=app`.
pub fn subject(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_default()
}

/// A TLS client connection through the router.
pub type Client = tokio_rustls::client::TlsStream<TcpStream>;

/// Connect to `addr` with SNI `sni` (an IP address sends no SNI), trusting `ca`.
pub async fn tls_connect(addr: SocketAddr, sni: &str, ca: &Ca, client: Option<&Leaf>) -> std::io::Result<Client> {
    let config = pki::client_config(ca, client, &[]).unwrap();
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    TlsConnector::from(config).connect(name, stream).await
}

/// `tls_connect` from a chosen local address (e.g. 127.0.0.2, another loopback source).
pub async fn tls_connect_from(
    source: std::net::IpAddr,
    addr: SocketAddr,
    sni: &str,
    ca: &Ca,
) -> std::io::Result<Client> {
    let config = pki::client_config(ca, None, &[]).unwrap();
    let stream = connect_from(source, addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    TlsConnector::from(config).connect(name, stream).await
}

/// A TCP connection to `addr` from `source` (any port).
pub async fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match source {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Read the backend's greeting line.
pub async fn greeting(tls: &mut Client) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while tls.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

/// The leaf certificate the client was shown.
pub fn peer_cert(tls: &Client) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The TLS alert a failed handshake received, by its rustls name (e.g. "UnrecognisedName").
pub fn alert_of(e: &std::io::Error) -> Option<String> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(a) => Some(format!("{a:?}")),
        _ => None,
    }
}

/// A raw TCP backend that records everything it receives and, after the
/// client's EOF, sends `reply` and closes.
pub struct RawBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Everything received per connection, in accept order.
    pub received: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
}

impl RawBackend {
    /// Start a raw backend answering `reply` after EOF.
    pub async fn start(reply: &'static [u8]) -> Self {
        let (tx, received) = tokio::sync::mpsc::unbounded_channel();
        let addr = serve_each(move |mut s| {
            let tx = tx.clone();
            async move {
                let mut all = Vec::new();
                let _ = s.read_to_end(&mut all).await;
                let _ = s.write_all(reply).await;
                let _ = s.shutdown().await;
                let _ = tx.send(all);
            }
        })
        .await;
        Self { addr, received }
    }
}

/// A values file with `routes` (YAML list items, already indented by 4).
pub fn values(routes: &str) -> String {
    format!("gateways:\n  external: {{name: gw, namespace: envoy-gateway, className: eg}}\nroutes:\n  http: []\n  tls:\n{routes}")
}

/// One route item: fqdn, gateway port, service name in namespace `test`.
pub fn route(fqdn: &str, port: u16, service: &str) -> String {
    let name = fqdn.split('.').next().unwrap().replace('*', "wild");
    format!("    - fqdn: '{fqdn}'\n      name: {name}-{port}\n      namespace: test\n      gatewayPort: {port}\n      service: {{name: {service}, port: 443}}\n")
}

/// `--backend SERVICE.test=ENDPOINT`.
pub fn backend_flag(service: &str, endpoint: &str) -> [String; 2] {
    ["--backend".into(), format!("{service}.test={endpoint}")]
}

/// A temporary directory path helper.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Replace a file atomically (write aside, rename over), so a watcher never
/// reads a half-written file.
pub fn replace(path: &Path, text: &str) {
    let aside = path.with_extension("yaml.tmp");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// A ClientHello record with SNI and `padding` extra bytes (a padding extension).
pub fn synthetic_hello(sni: &str, padding: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    let mut list = vec![0u8];
    list.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    list.extend_from_slice(sni.as_bytes());
    ext.extend_from_slice(&[0, 0]);
    ext.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
    ext.extend_from_slice(&list);
    if padding > 0 {
        ext.extend_from_slice(&[0, 21]);
        ext.extend_from_slice(&(padding as u16).to_be_bytes());
        ext.extend(std::iter::repeat_n(0u8, padding));
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[9u8; 32]);
    body.extend_from_slice(&[32]);
    body.extend_from_slice(&[5u8; 32]);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    rerecord(&[&[0x16, 3, 1][..], &(hs.len() as u16).to_be_bytes(), &hs].concat(), 1)
}

/// Re-split a single-record hello into `n` records.
pub fn rerecord(record: &[u8], n: usize) -> Vec<u8> {
    let hs = &record[5..];
    let size = hs.len().div_ceil(n);
    let mut out = Vec::new();
    for part in hs.chunks(size) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// A minimal HTTP/1.1 request over a fresh connection: (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).to_string();
    let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    // hyper answers these small bodies with Content-Length; a chunked one would need decoding.
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
        "{head}"
    );
    (status, body.to_string())
}

/// Poll `series` until it equals `want` (metrics are recorded when a connection ends).
pub async fn expect_metric(router: &RouterProcess, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = router.metric(series).await;
        if got == Some(want) {
            return;
        }
        if Instant::now() > deadline {
            let (_, body) = router.admin("GET", "/metrics").await;
            panic!("{series} is {got:?}, want {want}\n{body}");
        }
        // Often: a reload or a connection's end takes milliseconds.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until `/ready` answers `status` (up to 5 s); return the body.
pub async fn wait_ready(router: &RouterProcess, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (now, body) = router.admin("GET", "/ready").await;
        if now == status {
            return body;
        }
        assert!(Instant::now() < deadline, "/ready is {now} {body:?}, expected {status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The process's exit status if it exits within `limit`. The wait blocks a
/// thread, so the runtime (multi-threaded) moves this worker's tasks, the
/// backends among them, elsewhere.
pub fn exit_within(router: &mut RouterProcess, limit: Duration) -> Option<ExitStatus> {
    tokio::task::block_in_place(|| router.wait_exit(limit))
}

/// Wait until `done()` holds, up to `limit`; `what` names it in the failure.
pub async fn poll_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every access-log line so far (`"message": "connection"`).
pub fn connections(router: &RouterProcess) -> Vec<serde_json::Value> {
    router
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "connection")
        .collect()
}

/// Wait (up to 10 s) until there are at least `n` access-log lines; all of them.
pub async fn wait_connections(router: &RouterProcess, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = connections(router);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything the peer sends until it closes (a reset counts as the end),
/// within 10 s.
pub async fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the router kept the connection open");
    all
}

/// `len` pseudo-random bytes from `seed` (xorshift64*), every byte value likely present.
pub fn xorshift_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// === golden files ===

/// The crate root (where `Cargo.toml` is).
pub fn crate_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Run the binary to completion from the crate root, so that paths in its
/// output are stable, with `RUST_LOG` unset and `env` added.
pub fn run_in_root(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.current_dir(crate_root()).args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the sni-router binary runs")
}

/// Compare `actual` with `tests/golden/<name>`, or rewrite it under UPDATE_GOLDEN=1.
#[track_caller]
pub fn golden(name: &str, actual: &str) {
    let path: PathBuf = crate_root().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the output at line {} (UPDATE_GOLDEN=1 to accept):\n--- expected\n{}\n--- actual\n{}",
            path.display(),
            line + 1,
            expected.lines().nth(line).unwrap_or("<end>"),
            actual.lines().nth(line).unwrap_or("<end>")
        );
    }
}
