//! Limits, source CIDRs, TCP keepalive and PROXY protocol, each with the
//! count it leaves in the metrics.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use sni_router::pki::Ca;
use sni_router::proxy_protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn ok_backend(ca: &Ca) -> TlsBackend {
    TlsBackend::start(ca, "ok", &["ok.example.com"], None).await
}

fn start(backend: &TlsBackend, yaml: &str, ports: &[u16], extra: &[&str]) -> RouterProcess {
    let mut flags: Vec<String> = backend_flag("ok", &backend.endpoint).into();
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    RouterProcess::start(yaml, ports, &flags)
}

/// A TLS client for `ok.example.com` through `addr`, past the backend's greeting.
async fn ok_client(addr: SocketAddr, ca: &Ca) -> Client {
    let mut tls = tls_connect(addr, "ok.example.com", ca, None).await.unwrap();
    assert_eq!(greeting(&mut tls).await, "backend=ok client=none");
    tls
}

/// The router closes this connection without a byte (EOF or reset) within a second.
async fn closed_at_once(mut stream: TcpStream) {
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .expect("not closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "got bytes: {read:?}");
}

#[tokio::test]
async fn max_connections_closes_the_excess_and_counts_it() {
    let ca = Ca::new().unwrap();
    let backend = ok_backend(&ca).await;
    let router = start(
        &backend,
        &values(&route("ok.example.com", 443, "ok")),
        &[443],
        &["--max-connections", "2"],
    );
    let a = ok_client(router.addr(443), &ca).await;
    let _b = ok_client(router.addr(443), &ca).await;
    closed_at_once(TcpStream::connect(router.addr(443)).await.unwrap()).await;
    expect_metric(
        &router,
        "sni_router_connections_rejected_total{listener=\"443\",reason=\"connection_limit\"}",
        1.0,
    )
    .await;
    drop(a);
    expect_metric(&router, "sni_router_connections_active{listener=\"443\"}", 1.0).await;
    ok_client(router.addr(443), &ca).await;
}

#[tokio::test]
async fn slow_hello_flood_is_capped_and_clears_after_the_hello_timeout() {
    let ca = Ca::new().unwrap();
    let backend = ok_backend(&ca).await;
    let router = start(
        &backend,
        &values(&route("ok.example.com", 443, "ok")),
        &[443],
        &["--max-pending-hellos", "3", "--hello-timeout", "1s"],
    );
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(router.addr(443)).await.unwrap();
        s.write_all(&[0x16, 3]).await.unwrap(); // a hello that never finishes
        slow.push(s);
    }
    expect_metric(&router, "sni_router_connections_active{listener=\"443\"}", 3.0).await;
    closed_at_once(TcpStream::connect(router.addr(443)).await.unwrap()).await;
    expect_metric(
        &router,
        "sni_router_connections_rejected_total{listener=\"443\",reason=\"hello_limit\"}",
        1.0,
    )
    .await;
    // The slow ones time out; real clients get through again.
    expect_metric(
        &router,
        "sni_router_connections_rejected_total{listener=\"443\",reason=\"hello_timeout\"}",
        3.0,
    )
    .await;
    let _tls = ok_client(router.addr(443), &ca).await;
    // A forwarded connection no longer holds a hello permit.
    let mut more = Vec::new();
    for _ in 0..4 {
        more.push(ok_client(router.addr(443), &ca).await);
    }
}

/// One host holding its share of pending hellos cannot lock out another
/// host, even when it would fill the shared cap.
#[tokio::test]
async fn per_source_hello_cap_keeps_one_slow_host_from_locking_out_the_rest() {
    let ca = Ca::new().unwrap();
    let backend = ok_backend(&ca).await;
    let router = start(
        &backend,
        &values(&route("ok.example.com", 443, "ok")),
        &[443],
        &["--max-pending-hellos", "4", "--max-pending-hellos-per-source", "2"],
    );
    let slow_host: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from(slow_host, router.addr(443)).await.unwrap();
        s.write_all(&[0x16, 3]).await.unwrap(); // a hello that never finishes
        slow.push(s);
    }
    expect_metric(&router, "sni_router_connections_active{listener=\"443\"}", 2.0).await;
    // The slow host's next connections are closed at once, and say why.
    for _ in 0..3 {
        closed_at_once(connect_from(slow_host, router.addr(443)).await.unwrap()).await;
    }
    expect_metric(
        &router,
        "sni_router_connections_rejected_total{listener=\"443\",reason=\"source_hello_limit\"}",
        3.0,
    )
    .await;
    router
        .wait_log(&[
            "\"end\":\"source_hello_limit\"",
            "127.0.0.2 already has 2 connections waiting for their ClientHello",
        ])
        .await;
    // Another host is served, while the slow host's hellos are still pending.
    for _ in 0..3 {
        ok_client(router.addr(443), &ca).await;
    }
    // Once the slow host's pending hellos end, it is served again.
    drop(slow);
    expect_metric(&router, "sni_router_connections_active{listener=\"443\"}", 0.0).await;
    let mut tls = tls_connect_from(slow_host, router.addr(443), "ok.example.com", &ca)
        .await
        .unwrap();
    assert_eq!(greeting(&mut tls).await, "backend=ok client=none");
    // The shared cap was never the one that refused.
    let shared_cap = "sni_router_connections_rejected_total{listener=\"443\",reason=\"hello_limit\"}";
    assert_eq!(router.metric(shared_cap).await, None);
}

#[tokio::test]
async fn source_cidrs_globally_and_per_port() {
    let ca = Ca::new().unwrap();
    let backend = ok_backend(&ca).await;
    let yaml = values(&[route("ok.example.com", 443, "ok"), route("ok.example.com", 8443, "ok")].concat());
    // Loopback may use 8443 only; 443 allows a network we are not in.
    let router = start(
        &backend,
        &yaml,
        &[443, 8443],
        &["--allow-cidr", "10.0.0.0/8", "--allow-cidr", "8443=127.0.0.0/8"],
    );
    closed_at_once(TcpStream::connect(router.addr(443)).await.unwrap()).await;
    expect_metric(
        &router,
        "sni_router_connections_rejected_total{listener=\"443\",reason=\"source_denied\"}",
        1.0,
    )
    .await;
    let line = router.wait_log(&["\"end\":\"source_denied\""]).await;
    assert!(
        line.contains("client address 127.0.0.1 is not allowed on this port"),
        "{line}"
    );
    ok_client(router.addr(8443), &ca).await;
}

#[tokio::test]
async fn keepalive_from_client_traffic_policy_is_set_on_accepted_sockets() {
    let ca = Ca::new().unwrap();
    let backend = ok_backend(&ca).await;
    let yaml = values(
        "    - fqdn: ok.example.com\n      namespace: test\n      gatewayPort: 443\n      service: {name: ok, port: 1}\n      clientTrafficPolicy:\n        tcpKeepalive: {idleTime: 77s, interval: 13s, probes: 4}\n",
    );
    let router = start(&backend, &yaml, &[443], &[]);
    let tls = ok_client(router.addr(443), &ca).await;
    let local = tls.get_ref().0.local_addr().unwrap();
    // `ss -o` shows the router's side of our connection with its keepalive timer.
    let out = Command::new("ss")
        .args([
            "-tno",
            "state",
            "established",
            &format!("( sport = :{} )", router.addr(443).port()),
        ])
        .output()
        .expect("ss (iproute2) is needed for this test");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&local.to_string()))
        .unwrap_or_else(|| panic!("{text}"));
    let timer = line
        .split("timer:(")
        .nth(1)
        .unwrap_or_else(|| panic!("no timer: {line}"));
    assert!(timer.starts_with("keepalive,"), "{line}");
    // `keepalive,76sec,0`: counting down from idleTime 77s (the kernel default would show `119min`).
    let remaining = timer.split(',').nth(1).unwrap();
    let secs = ss_seconds(remaining).unwrap_or_else(|| panic!("{line}"));
    assert!((60.0..=77.0).contains(&secs), "idle time 77s expected: {line}");
}

#[tokio::test]
async fn proxy_protocol_in_sets_the_client_address_and_out_tells_the_backend() {
    let mut raw = RawBackend::start(b"ok").await;
    let yaml = values(&route("pp.example.com", 443, "pp"));
    let flags = backend_flag("pp", &raw.addr.to_string());
    let router = RouterProcess::start(
        &yaml,
        &[443],
        &[
            &flags[0],
            &flags[1],
            "--accept-proxy-protocol",
            "--send-proxy-protocol",
            "--allow-cidr",
            "203.0.113.0/24",
        ],
    );
    let hello = synthetic_hello("pp.example.com", 0);
    for header in [
        b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 443\r\n".to_vec(),
        proxy_protocol::encode_v2("203.0.113.7:5555".parse().unwrap(), "192.0.2.1:443".parse().unwrap()),
    ] {
        let mut s = TcpStream::connect(router.addr(443)).await.unwrap();
        s.write_all(&header).await.unwrap();
        s.write_all(&hello).await.unwrap();
        s.shutdown().await.unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"ok");
        let got = raw.received.recv().await.unwrap();
        let expected_header =
            proxy_protocol::encode_v2("203.0.113.7:5555".parse().unwrap(), "192.0.2.1:443".parse().unwrap());
        assert_eq!(
            &got[..expected_header.len()],
            expected_header.as_slice(),
            "v2 header to the backend"
        );
        assert_eq!(&got[expected_header.len()..], hello.as_slice());
    }
    let line = router
        .wait_log(&["\"sni\":\"pp.example.com\"", "\"end\":\"closed\""])
        .await;
    assert_eq!(json(&line)["client.addr"], "203.0.113.7:5555");

    // Not allowed by the CIDR, as said by the header; and a malformed header.
    let mut s = TcpStream::connect(router.addr(443)).await.unwrap();
    s.write_all(b"PROXY TCP4 198.51.100.1 192.0.2.1 5555 443\r\n")
        .await
        .unwrap();
    closed_at_once(s).await;
    let mut s = TcpStream::connect(router.addr(443)).await.unwrap();
    s.write_all(&hello).await.unwrap();
    closed_at_once(s).await;
    expect_metric(
        &router,
        "sni_router_connections_rejected_total{listener=\"443\",reason=\"source_denied\"}",
        1.0,
    )
    .await;
    expect_metric(
        &router,
        "sni_router_connections_rejected_total{listener=\"443\",reason=\"proxy_protocol\"}",
        1.0,
    )
    .await;
}

/// `ss` prints timers as `76sec`, `1min16sec` or `119min`.
fn ss_seconds(text: &str) -> Option<f64> {
    let (min, rest) = match text.split_once("min") {
        Some((m, rest)) => (m.parse::<f64>().ok()?, rest),
        None => (0.0, text),
    };
    let sec = match rest.strip_suffix("sec") {
        Some(s) => s.parse::<f64>().ok()?,
        None if rest.is_empty() => 0.0,
        None => return None,
    };
    Some(min * 60.0 + sec)
}

/// Started under a soft open-file limit of 512 (the usual 1024 would cap a
/// gateway at ~500 connections), the router raises its own to the hard limit.
#[tokio::test]
async fn the_router_raises_its_open_file_limit_to_the_hard_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let ca = Ca::new().unwrap();
    let backend = ok_backend(&ca).await;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = hard.min(1 << 20);
    assert!(want > 512, "the hard limit here ({hard}) leaves nothing to show");
    // The router inherits this process's limits; put them back right after the spawn.
    setrlimit(Resource::RLIMIT_NOFILE, 512, hard).unwrap();
    let router =
        std::panic::catch_unwind(|| start(&backend, &values(&route("ok.example.com", 443, "ok")), &[443], &[]));
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    let router = router.unwrap();
    assert_eq!(procfs::nofile_of(router.pid()).0, want, "the router's soft limit");
    ok_client(router.addr(443), &ca).await;
}
