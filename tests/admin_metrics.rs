//! The admin endpoint and the metrics it serves, scraped after a known
//! sequence of connections.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn exact_counters_after_a_known_sequence() {
    let s = OkAndDown::start(&[]).await;
    for _ in 0..2 {
        let mut tls = tls_connect(s.router.addr(443), "ok.example.com", &s.ca, None)
            .await
            .unwrap();
        assert_eq!(greeting(&mut tls).await, "backend=ok client=none");
        tls.write_all(b"0123456789").await.unwrap();
        let mut echo = [0u8; 10];
        tls.read_exact(&mut echo).await.unwrap();
        tls.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = tls.read_to_end(&mut rest).await;
    }
    assert!(tls_connect(s.router.addr(443), "unknown.example.com", &s.ca, None)
        .await
        .is_err());
    assert!(tls_connect(s.router.addr(443), "127.0.0.1", &s.ca, None).await.is_err());
    assert!(tls_connect(s.router.addr(443), "down.example.com", &s.ca, None)
        .await
        .is_err());

    let r = &s.router;
    expect_metric(r, "sni_router_connections_accepted_total{listener=\"443\"}", 5.0).await;
    expect_metric(
        r,
        "sni_router_connections_routed_total{listener=\"443\",route=\"ok-443\"}",
        2.0,
    )
    .await;
    expect_metric(
        r,
        "sni_router_connections_ended_total{end=\"closed\",listener=\"443\",route=\"ok-443\"}",
        2.0,
    )
    .await;
    expect_metric(
        r,
        "sni_router_connections_rejected_total{listener=\"443\",reason=\"unknown_sni\"}",
        1.0,
    )
    .await;
    expect_metric(
        r,
        "sni_router_connections_rejected_total{listener=\"443\",reason=\"no_sni\"}",
        1.0,
    )
    .await;
    expect_metric(
        r,
        "sni_router_connections_rejected_total{listener=\"443\",reason=\"upstream_unreachable\"}",
        1.0,
    )
    .await;
    expect_metric(
        r,
        "sni_router_upstream_connect_failures_total{listener=\"443\",route=\"down-443\"}",
        1.0,
    )
    .await;
    expect_metric(r, "sni_router_connections_active{listener=\"443\"}", 0.0).await;
    expect_metric(r, "sni_router_routes{listener=\"443\"}", 2.0).await;
    expect_metric(
        r,
        "sni_router_client_hello_duration_seconds_count{listener=\"443\"}",
        5.0,
    )
    .await;
    expect_metric(
        r,
        "sni_router_upstream_connect_duration_seconds_count{listener=\"443\",route=\"ok-443\"}",
        2.0,
    )
    .await;
    expect_metric(
        r,
        "sni_router_connection_duration_seconds_count{listener=\"443\",route=\"ok-443\"}",
        2.0,
    )
    .await;
    let version = format!("sni_router_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    expect_metric(r, &version, 1.0).await;

    // Bytes match what the access log says, per direction.
    let (_, body) = r.admin("GET", "/metrics").await;
    let logged: u64 = r
        .logs()
        .iter()
        .filter(|l| l.contains("\"route\":\"ok-443\"") && l.contains("\"end\":\"closed\""))
        .map(|l| json(l)["bytes.downstream"].as_u64().unwrap())
        .sum();
    let series = "sni_router_bytes_total{direction=\"downstream\",listener=\"443\",route=\"ok-443\"}";
    assert_eq!(r.metric(series).await, Some(logged as f64), "{body}");
    assert!(
        body.contains("\nprocess_resident_memory_bytes "),
        "process metrics keep their standard names"
    );
}

#[tokio::test]
async fn bytes_are_counted_while_a_connection_is_open() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = echo.accept().await.unwrap();
        let (mut r, mut w) = s.into_split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let yaml = values(&route("long.example.com", 443, "long"));
    let flags = backend_flag("long", &echo_addr.to_string());
    let router = RouterProcess::start(&yaml, &[443], &[&flags[0], &flags[1]]);
    let mut stream = TcpStream::connect(router.addr(443)).await.unwrap();
    let hello = synthetic_hello("long.example.com", 0);
    stream.write_all(&hello).await.unwrap();
    let chunk = vec![7u8; 1 << 20];
    stream.write_all(&chunk).await.unwrap();
    let mut back = vec![0u8; hello.len() + chunk.len()];
    stream.read_exact(&mut back).await.unwrap();
    // Still open: the counter already shows the megabyte each way.
    let want = (hello.len() + chunk.len()) as f64;
    expect_metric(
        &router,
        "sni_router_bytes_total{direction=\"upstream\",listener=\"443\",route=\"long-443\"}",
        want,
    )
    .await;
    expect_metric(
        &router,
        "sni_router_bytes_total{direction=\"downstream\",listener=\"443\",route=\"long-443\"}",
        want,
    )
    .await;
    expect_metric(&router, "sni_router_connections_active{listener=\"443\"}", 1.0).await;
}

#[tokio::test]
async fn admin_endpoints_and_status_codes() {
    let s = OkAndDown::start(&[]).await;
    let r = &s.router;
    assert_eq!(r.admin("GET", "/ready").await, (200, "LIVE\n".into()));
    assert_eq!(r.admin("GET", "/healthz").await, (200, "OK\n".into()));
    let (status, metrics) = r.admin("GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("# TYPE sni_router_connections_accepted_total counter"),
        "{metrics}"
    );
    let (status, prom) = r.admin("GET", "/stats/prometheus").await;
    assert_eq!(status, 200);
    assert!(prom.contains("# TYPE sni_router_routes gauge"));
    assert_eq!(r.admin("POST", "/ready").await.0, 405);
    assert_eq!(r.admin("GET", "/drain_listeners").await.0, 405);
    assert_eq!(r.admin("DELETE", "/config_dump").await.0, 405);
    assert_eq!(r.admin("GET", "/nope").await.0, 404);

    let (status, dump) = r.admin("GET", "/config_dump").await;
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["listeners"][0]["gateway_port"], 443);
    assert_eq!(dump["listeners"][0]["address"], r.addr(443).to_string());
    assert_eq!(dump["listeners"][0]["accepting"], true);
    let ok = dump["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "ok-443")
        .unwrap();
    assert_eq!(ok["fqdn"], "ok.example.com");
    assert_eq!(ok["service"]["namespace"], "test");
    assert_eq!(ok["endpoints_from"], "--backend");
    assert_eq!(ok["endpoints"][0]["resolved"][0], s.ok.endpoint.as_str());
    assert_eq!(dump["settings"]["hello_timeout_seconds"], 15.0);
    assert_eq!(dump["settings"]["idle_timeout_seconds"], 3600.0);
    assert_eq!(dump["settings"]["socket_buffers"], "auto");
    assert_eq!(dump["settings"]["zero_copy"], true);
    assert!(dump["config"]["file"].as_str().unwrap().ends_with("values.yaml"));
    assert!(
        dump["config"]["loaded_at"].as_str().unwrap().starts_with("20"),
        "{dump}"
    );
}

#[tokio::test]
async fn drain_listeners_stops_accepting_and_keeps_open_connections() {
    let s = OkAndDown::start(&[]).await;
    let r = &s.router;
    let mut open = tls_connect(r.addr(443), "ok.example.com", &s.ca, None).await.unwrap();
    assert_eq!(greeting(&mut open).await, "backend=ok client=none");
    assert_eq!(r.admin("POST", "/drain_listeners").await, (200, "OK\n".into()));
    assert_eq!(r.admin("GET", "/ready").await, (503, "DRAINING\n".into()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(r.addr(443)).await.is_ok() {
        assert!(Instant::now() < deadline, "listener still accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    open.write_all(b"still here").await.unwrap();
    let mut echo = [0u8; 10];
    open.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"still here");
    let (_, dump) = r.admin("GET", "/config_dump").await;
    assert!(dump.contains("\"accepting\": false"), "{dump}");
}
