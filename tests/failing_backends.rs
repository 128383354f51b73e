//! Failing backends (issue 8, part 3): a backend that refuses, one that
//! accepts then resets, one that accepts and never reads, one that dies in
//! the middle of a 100 MiB transfer (a real process, killed), and a service
//! name that does not resolve. For each: what the client sees, and how
//! promptly; the access-log line (`end`, `detail`, level); the metrics.
//!
//! Loopback only; every transfer is bounded in bytes and time.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::procfs::status_kib;
use common::*;
use sni_router::pki::Ca;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1024 * 1024;
/// How soon a client must see its connection end once the backend is gone.
const PROMPTLY: Duration = Duration::from_secs(2);

/// A router with one route per `(fqdn, endpoint)`, service named after the
/// fqdn's first label; `None`: no `--backend` override (cluster DNS).
fn start(routes: &[(&str, Option<String>)], extra: &[&str]) -> RouterProcess {
    let yaml = values(
        &routes
            .iter()
            .map(|(fqdn, _)| route(fqdn, 443, first_label(fqdn)))
            .collect::<String>(),
    );
    let mut flags: Vec<String> = Vec::new();
    for (fqdn, endpoint) in routes {
        if let Some(endpoint) = endpoint {
            flags.extend(backend_flag(first_label(fqdn), endpoint));
        }
    }
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    RouterProcess::start(&yaml, &[443], &flags)
}

fn first_label(fqdn: &str) -> &str {
    fqdn.split('.').next().unwrap_or(fqdn)
}

/// The route name `common::route` gives `fqdn` on port 443.
fn route_name(fqdn: &str) -> String {
    format!("{}-443", first_label(fqdn))
}

/// Poll a metric until it reaches `want` (10 s).
async fn expect_metric(router: &RouterProcess, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = router.metric(series).await;
        if got == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{series} = {got:?}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rejected(reason: &str) -> String {
    format!("sni_router_connections_rejected_total{{listener=\"443\",reason=\"{reason}\"}}")
}

fn connect_failures(fqdn: &str) -> String {
    format!(
        "sni_router_upstream_connect_failures_total{{listener=\"443\",route=\"{}\"}}",
        route_name(fqdn)
    )
}

fn routed(fqdn: &str) -> String {
    format!(
        "sni_router_connections_routed_total{{listener=\"443\",route=\"{}\"}}",
        route_name(fqdn)
    )
}

#[tokio::test]
async fn backend_refuses() {
    let ca = Ca::new().unwrap();
    let fqdn = "refuse.example.com";
    let router = start(&[(fqdn, Some(closed_port()))], &[]);
    let started = Instant::now();
    let err = tls_connect(router.addr(443), fqdn, &ca, None).await.unwrap_err();
    assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
    assert_eq!(alert_of(&err).as_deref(), Some("InternalError"), "{err}");
    let line = router.wait_log(&["\"end\":\"upstream_unreachable\""]).await;
    let event = json(&line);
    assert_eq!(event["level"], "WARN", "{line}");
    assert_eq!(event["route"], route_name(fqdn).as_str());
    assert!(event["detail"].as_str().unwrap().contains("refused"), "{line}");
    expect_metric(&router, &rejected("upstream_unreachable"), 1.0).await;
    expect_metric(&router, &connect_failures(fqdn), 1.0).await;
}

#[tokio::test]
async fn backend_name_does_not_resolve() {
    let ca = Ca::new().unwrap();
    let fqdn = "ghost.example.com";
    // No --backend override: the router resolves ghost.test.svc.invalid
    // (RFC 6761: `.invalid` never resolves).
    let router = start(
        &[(fqdn, None)],
        &["--cluster-domain", "invalid", "--connect-timeout", "3s"],
    );
    let started = Instant::now();
    let err = tls_connect(router.addr(443), fqdn, &ca, None).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(alert_of(&err).as_deref(), Some("InternalError"), "{err}");
    let line = router.wait_log(&["\"end\":\"upstream_unreachable\""]).await;
    let event = json(&line);
    assert_eq!(event["level"], "WARN", "{line}");
    let detail = event["detail"].as_str().unwrap();
    assert!(detail.contains("ghost.test.svc.invalid:443"), "{line}");
    expect_metric(&router, &rejected("upstream_unreachable"), 1.0).await;
    expect_metric(&router, &connect_failures(fqdn), 1.0).await;
    eprintln!("unresolvable name refused after {took:?}: {detail}");
}

/// A backend that accepts, reads the first bytes (the ClientHello), then
/// resets the connection.
async fn reset_after_hello() -> (SocketAddr, tokio::task::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap_or(0);
        s.set_zero_linger().unwrap();
        drop(s);
        n
    });
    (addr, task)
}

#[tokio::test]
async fn backend_accepts_then_resets() {
    let ca = Ca::new().unwrap();
    let fqdn = "reset.example.com";
    let (addr, backend) = reset_after_hello().await;
    let router = start(&[(fqdn, Some(addr.to_string()))], &[]);
    let started = Instant::now();
    let err = tls_connect(router.addr(443), fqdn, &ca, None).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < PROMPTLY, "took {took:?}");
    assert!(backend.await.unwrap() > 0, "the backend got the ClientHello first");
    eprintln!("client saw: {err} after {took:?}");
    let line = router.wait_log(&["\"end\":\"backend_error\""]).await;
    let event = json(&line);
    assert_eq!(event["level"], "WARN", "the backend's fault is a warning: {line}");
    assert!(
        event["detail"].as_str().unwrap().to_lowercase().contains("reset"),
        "{line}"
    );
    assert!(event["bytes.upstream"].as_u64().unwrap() > 0, "{line}");
    // Forwarding had started: counted as routed, not rejected.
    expect_metric(&router, &routed(fqdn), 1.0).await;
}

/// "Counted in metrics": a backend failing after the connection was routed
/// (reset, killed, stalled) is one more routed connection, and
/// `sni_router_connections_ended_total` says how it ended.
#[tokio::test]
async fn backend_failures_after_routing_are_counted_by_end() {
    let ca = Ca::new().unwrap();
    let fqdn = "reset.example.com";
    let (addr, _backend) = reset_after_hello().await;
    let router = start(&[(fqdn, Some(addr.to_string()))], &[]);
    let _ = tls_connect(router.addr(443), fqdn, &ca, None).await;
    router.wait_log(&["\"end\":\"backend_error\""]).await;
    expect_metric(
        &router,
        &format!(
            "sni_router_connections_ended_total{{end=\"backend_error\",listener=\"443\",route=\"{}\"}}",
            route_name(fqdn)
        ),
        1.0,
    )
    .await;
}

#[tokio::test]
async fn backend_never_reads_and_the_router_does_not_buffer() {
    let fqdn = "stall.example.com";
    // Accepts and holds every connection without reading a byte.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let idle = Duration::from_secs(3);
    let router = start(&[(fqdn, Some(addr.to_string()))], &["--idle-timeout", "3s"]);
    let pid = router.pid();
    let base = status_kib(pid, "VmRSS");

    // The router forwards raw bytes after the hello; no TLS needed to push them.
    let mut client = TcpStream::connect(router.addr(443)).await.unwrap();
    client.write_all(&synthetic_hello(fqdn, 0)).await.unwrap();
    let chunk = vec![0x5au8; MIB];
    let mut written = 0usize;
    let mut peak = base;
    let bound = 256 * MIB;
    while written < bound {
        match tokio::time::timeout(Duration::from_secs(2), client.write_all(&chunk)).await {
            Ok(Ok(())) => written += chunk.len(),
            Ok(Err(e)) => panic!("write failed after {written} bytes: {e}"),
            // Backpressure reached the client: the router stopped reading.
            Err(_) => break,
        }
        peak = peak.max(status_kib(pid, "VmRSS"));
    }
    let stalled_at = Instant::now();
    // Stay stalled a moment longer: memory must not creep either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    peak = peak.max(status_kib(pid, "VmRSS"));
    eprintln!(
        "stalled after {} MiB written; router VmRSS {base} KiB -> peak {peak} KiB",
        written / MIB
    );
    assert!(written < bound, "the router took {} MiB without a reader", bound / MIB);
    assert!(
        peak <= base + 8 * 1024,
        "router VmRSS grew from {base} to {peak} KiB while the backend did not read"
    );

    // Nothing moves: the idle timeout ends it, and says so.
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(idle + PROMPTLY, async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "still open {:?} after the stall", stalled_at.elapsed());
    let line = router.wait_log(&["\"end\":\"idle_timeout\"", fqdn]).await;
    let event = json(&line);
    assert!(
        event["bytes.upstream"].as_u64().unwrap() > 0,
        "bytes counted as they flowed: {line}"
    );
    holder.abort();
}

/// A backend in its own process (`python3`): accepts one connection, reads
/// the hello, then streams up to 100 MiB. Returns the child and its port.
fn streaming_backend_process() -> (std::process::Child, u16) {
    let script = r#"
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
s.settimeout(30)
c, _ = s.accept()
c.recv(65536)
chunk = b"d" * 65536
for _ in range(1600):
    c.sendall(chunk)
c.close()
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/install-test-deps.sh installs it)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("backend port");
    (child, port)
}

#[tokio::test]
async fn backend_killed_in_the_middle_of_a_100_mib_download() {
    let fqdn = "dies.example.com";
    let (mut backend, port) = streaming_backend_process();
    let router = start(&[(fqdn, Some(format!("127.0.0.1:{port}")))], &[]);
    let mut client = TcpStream::connect(router.addr(443)).await.unwrap();
    client.write_all(&synthetic_hello(fqdn, 0)).await.unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let mut killed_at = None;
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => got += n,
                Err(e) => return Err(e),
            }
            if killed_at.is_none() && got >= 30 * MIB {
                // SIGKILL: no goodbye from the backend's side.
                backend.kill().unwrap();
                killed_at = Some(Instant::now());
            }
        }
    })
    .await
    .expect("download did not end within 60 s");
    let _ = backend.wait();
    let killed_at = killed_at.expect("30 MiB arrived before the end");
    let noticed = killed_at.elapsed();
    eprintln!(
        "killed after {} MiB; client got {} MiB in all, saw {result:?} {noticed:?} after the kill",
        30,
        got / MIB
    );
    assert!(got < 100 * MIB, "the whole transfer arrived: the kill came too late");
    assert!(noticed < PROMPTLY, "client saw the end {noticed:?} after the kill");
    drop(client);
    let line = router.wait_log(&["\"connection\"", fqdn]).await;
    let event = json(&line);
    let down = event["bytes.downstream"].as_u64().unwrap();
    assert_eq!(
        down, got as u64,
        "every byte that reached the client was counted: {line}"
    );
    eprintln!("log: end={} detail={}", event["end"], event["detail"]);
    expect_metric(&router, &routed(fqdn), 1.0).await;
    let series = format!(
        "sni_router_bytes_total{{direction=\"downstream\",listener=\"443\",route=\"{}\"}}",
        route_name(fqdn)
    );
    expect_metric(&router, &series, got as f64).await;
}

#[tokio::test]
async fn backend_resets_in_the_middle_of_a_100_mib_upload() {
    let fqdn = "upload.example.com";
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reset_tx, reset_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        while got < 30 * MIB {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        // Dies with unread data: the kernel answers with a reset.
        s.set_zero_linger().unwrap();
        drop(s);
        let _ = reset_tx.send((Instant::now(), got));
    });
    let router = start(&[(fqdn, Some(addr.to_string()))], &[]);
    let mut client = TcpStream::connect(router.addr(443)).await.unwrap();
    client.write_all(&synthetic_hello(fqdn, 0)).await.unwrap();
    let chunk = vec![0x75u8; 64 * 1024];
    let mut sent = 0usize;
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        while sent < 100 * MIB {
            client.write_all(&chunk).await?;
            sent += chunk.len();
        }
        // All written: the end must show on the read side.
        let mut buf = [0u8; 16];
        client.read(&mut buf).await.map(|_| ())
    })
    .await
    .expect("upload did not end within 60 s");
    let failed_at = Instant::now();
    let (reset_at, backend_got) = reset_rx.await.unwrap();
    let noticed = failed_at.duration_since(reset_at);
    eprintln!(
        "backend reset after {} MiB; client had sent {} MiB, saw {outcome:?} {noticed:?} later",
        backend_got / MIB,
        sent / MIB
    );
    assert!(sent < 100 * MIB, "the whole upload went through a dead backend");
    assert!(noticed < PROMPTLY, "client saw the end {noticed:?} after the reset");
    let line = router.wait_log(&["\"end\":\"backend_error\"", fqdn]).await;
    let event = json(&line);
    assert_eq!(event["level"], "WARN", "{line}");
    let up = event["bytes.upstream"].as_u64().unwrap();
    assert!(
        up >= backend_got as u64,
        "counted {up}, the backend read {backend_got}: {line}"
    );
}
