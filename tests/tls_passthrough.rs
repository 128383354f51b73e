//! TLS passthrough end to end: real rustls clients and servers through the
//! router binary. The client must see each backend's own certificate.

mod common;

use common::echo::echo_backend;
use common::*;
use sha2::{Digest, Sha256};
use sni_router::pki::Ca;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn routes_by_sni_per_port_and_the_client_sees_the_backends_own_certificate() {
    let ca = Ca::new().unwrap();
    let a = TlsBackend::start(&ca, "a", &["a.example.com"], None).await;
    let b = TlsBackend::start(&ca, "b", &["b.example.com"], None).await;
    let w = TlsBackend::start(&ca, "wild", &["*.apps.example.com"], None).await;
    let c = TlsBackend::start(&ca, "c", &["a.example.com"], None).await;
    let yaml = values(
        &[
            route("a.example.com", 443, "svc-a"),
            route("b.example.com", 443, "svc-b"),
            route("*.apps.example.com", 443, "svc-w"),
            route("a.example.com", 8443, "svc-c"),
        ]
        .concat(),
    );
    let mut flags = Vec::new();
    for (svc, backend) in [("svc-a", &a), ("svc-b", &b), ("svc-w", &w), ("svc-c", &c)] {
        flags.extend(backend_flag(svc, &backend.endpoint));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let router = RouterProcess::start(&yaml, &[443, 8443], &flags);

    for (port, sni, backend) in [
        (443, "a.example.com", &a),
        (443, "b.example.com", &b),
        (443, "web.apps.example.com", &w),
        (443, "A.EXAMPLE.com", &a),
        (8443, "a.example.com", &c),
    ] {
        let mut tls = tls_connect(router.addr(port), sni, &ca, None).await.unwrap();
        let name = greeting(&mut tls).await;
        let expected = backend.leaf.cert_der.as_ref();
        assert!(name.starts_with("backend="), "{name}");
        assert_eq!(peer_cert(&tls), expected, "{sni} on {port} reached {name}");
        tls.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        tls.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping");
    }
    let line = router
        .wait_log(&["\"sni\":\"web.apps.example.com\"", "\"end\":\"closed\""])
        .await;
    let event = json(&line);
    assert_eq!(event["route"], "wild-443");
    assert_eq!(event["backend"], w.endpoint.as_str());
    assert_eq!(event["listener"], 443);
    assert!(event["bytes.upstream"].as_u64().unwrap() > 200, "{line}");
    assert!(event["bytes.downstream"].as_u64().unwrap() > 200, "{line}");
}

#[tokio::test]
async fn mutual_tls_works_end_to_end() {
    let ca = Ca::new().unwrap();
    let backend = TlsBackend::start(&ca, "db", &["db.example.com"], Some(&ca)).await;
    let yaml = values(&route("db.example.com", 5432, "pg"));
    let flags = backend_flag("pg", &backend.endpoint);
    let router = RouterProcess::start(&yaml, &[5432], &[&flags[0], &flags[1]]);

    let client_cert = ca.client("app").unwrap();
    let mut tls = tls_connect(router.addr(5432), "db.example.com", &ca, Some(&client_cert))
        .await
        .unwrap();
    assert_eq!(
        greeting(&mut tls).await,
        "backend=db client=CN=app",
        "the backend saw the client's certificate"
    );

    // Without a certificate the backend, not the router, refuses.
    let refused = async {
        let mut tls = tls_connect(router.addr(5432), "db.example.com", &ca, None).await?;
        let mut buf = [0u8; 1];
        tls.read_exact(&mut buf).await.map(|_| ())
    }
    .await;
    let err = refused.unwrap_err();
    assert_eq!(alert_of(&err).as_deref(), Some("CertificateRequired"), "{err}");
}

#[tokio::test]
async fn sixteen_mib_each_way_at_once_with_equal_checksums() {
    sixteen_mib_each_way(&[], "auto").await;
}

/// Tiny fixed socket buffers make every splice and write partial: the bytes
/// must still arrive whole and in order, on both forwarding paths.
#[tokio::test]
async fn sixteen_mib_each_way_through_tiny_or_kernel_sized_socket_buffers() {
    sixteen_mib_each_way(&["--socket-buffer", "4K"], "4096").await;
    sixteen_mib_each_way(&["--socket-buffer", "8K", "--no-splice"], "8192").await;
    sixteen_mib_each_way(&["--socket-buffer", "kernel"], "kernel").await;
}

/// A size past the host's limit is cut down by the kernel without an error:
/// the router says so at startup, naming the port and both sizes.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_socket_buffer_past_the_hosts_limit_is_reported_at_startup() {
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let asked = 1usize << 30;
    assert!(
        rmem_max < asked,
        "rmem_max {rmem_max} is past the largest size the flag takes"
    );
    let yaml = values(&route("big.example.com", 443, "big"));
    let router = RouterProcess::start(&yaml, &[443], &["--socket-buffer", "1G"]);
    let line = router.wait_log(&["socket buffers capped", "\"listener\":443"]).await;
    let event = json(&line);
    assert_eq!(event["asked"].as_u64(), Some(asked as u64), "{line}");
    assert!(event["granted"].as_u64().unwrap() < asked as u64, "{line}");
    assert_eq!(event["level"], "WARN", "{line}");
}

/// `extra` flags; `buffers` the socket-buffer setting they must have made.
async fn sixteen_mib_each_way(extra: &[&str], buffers: &str) {
    let echo = echo_backend().await;
    let yaml = values(&route("bulk.example.com", 443, "bulk"));
    let flags = backend_flag("bulk", &echo.to_string());
    let args: Vec<&str> = [flags[0].as_str(), flags[1].as_str()]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let router = RouterProcess::start(&yaml, &[443], &args);

    let hello = synthetic_hello("bulk.example.com", 0);
    let stream = TcpStream::connect(router.addr(443)).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    const SIZE: usize = 16 << 20;
    let payload: Vec<u8> = (0..SIZE).map(|i| (i * 7 + i / 4099) as u8).collect();
    let sent_digest = Sha256::new().chain_update(&hello).chain_update(&payload).finalize();
    let writer = tokio::spawn(async move {
        w.write_all(&hello).await.unwrap();
        for chunk in payload.chunks(100_003) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    // Reading while writing: both directions carry 16 MiB at the same time.
    let mut received = Vec::with_capacity(SIZE + 1024);
    r.read_to_end(&mut received).await.unwrap();
    writer.await.unwrap();
    assert_eq!(received.len(), SIZE + synthetic_hello("bulk.example.com", 0).len());
    assert_eq!(Sha256::digest(&received), sent_digest);
    let line = router.wait_log(&["bulk.example.com", "\"end\":\"closed\""]).await;
    let event = json(&line);
    assert_eq!(event["bytes.upstream"].as_u64(), Some(received.len() as u64));
    assert_eq!(event["bytes.downstream"].as_u64(), Some(received.len() as u64));
    let (_, dump) = router.admin("GET", "/config_dump").await;
    let dump = json(&dump);
    assert_eq!(dump["settings"]["socket_buffers"], buffers, "{dump}");
}

/// `--busy-poll`: bytes flow as usual; after traffic the worker keeps
/// polling (spends CPU) for the window, then sleeps (spends none). A long
/// window makes both phases measurable with `/proc`'s 10 ms CPU ticks.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn busy_poll_spends_cpu_for_its_window_after_traffic_and_none_when_idle() {
    use common::procfs::cpu_time;
    use std::time::Duration;

    let echo = common::echo::tagged_echo("spin").await;
    let yaml = values(&route("spin.example.com", 443, "spin"));
    let flags = backend_flag("spin", &echo.to_string());
    let router = RouterProcess::start(
        &yaml,
        &[443],
        &[&flags[0], &flags[1], "--busy-poll", "400ms", "--watch-interval", "0"],
    );
    let (_, dump) = router.admin("GET", "/config_dump").await;
    assert_eq!(json(&dump)["settings"]["busy_poll_us"], 400_000, "{dump}");

    let (mut stream, tag) = common::echo::open(router.addr(443), "spin.example.com").await;
    assert_eq!(tag, "spin");
    // Idle long enough for every window so far to end, then measure.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = cpu_time(router.pid());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = cpu_time(router.pid()) - before;

    let before = cpu_time(router.pid());
    common::echo::ping(&mut stream, b"wake up").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_traffic = cpu_time(router.pid()) - before;
    common::echo::ping(&mut stream, b"still forwarding").await;

    assert!(
        idle <= Duration::from_millis(30),
        "idle router spent {idle:?} in 300 ms"
    );
    // Up to 300 ms if it had the CPU to itself; other tests share the machine.
    assert!(
        after_traffic >= Duration::from_millis(60),
        "spent {after_traffic:?} in the 300 ms after a message: not polling"
    );
}

#[tokio::test]
async fn half_close_client_stops_writing_and_still_gets_the_reply() {
    let mut backend = RawBackend::start(b"reply after your EOF").await;
    let yaml = values(&route("half.example.com", 443, "half"));
    let flags = backend_flag("half", &backend.addr.to_string());
    let router = RouterProcess::start(&yaml, &[443], &[&flags[0], &flags[1]]);

    let hello = synthetic_hello("half.example.com", 0);
    let mut stream = TcpStream::connect(router.addr(443)).await.unwrap();
    stream.write_all(&hello).await.unwrap();
    stream.write_all(b"request").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"reply after your EOF");
    let got = backend.received.recv().await.unwrap();
    assert_eq!(got, [hello.as_slice(), b"request"].concat());
}

#[tokio::test]
async fn hello_one_byte_per_write_three_records_and_post_quantum_size_are_forwarded_exactly() {
    let mut backend = RawBackend::start(b"ok").await;
    let yaml = values(&route("pq.example.com", 443, "pq"));
    let flags = backend_flag("pq", &backend.addr.to_string());
    let router = RouterProcess::start(&yaml, &[443], &[&flags[0], &flags[1]]);

    let big = synthetic_hello("pq.example.com", 1700); // ~1.8 KB like X25519MLKEM768
    assert!((1700..2100).contains(&big.len()), "{}", big.len());
    let three_records = rerecord(&synthetic_hello("pq.example.com", 0), 3);
    for (bytes, per_write) in [
        (big.clone(), 1),
        (three_records.clone(), 1),
        (three_records, 7),
        (big, 4096),
    ] {
        let mut stream = TcpStream::connect(router.addr(443)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        for chunk in bytes.chunks(per_write) {
            stream.write_all(chunk).await.unwrap();
        }
        stream.shutdown().await.unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"ok");
        assert_eq!(backend.received.recv().await.unwrap(), bytes, "forwarded byte for byte");
    }
}

#[tokio::test]
async fn backend_with_two_endpoints_of_which_the_first_refuses() {
    let ca = Ca::new().unwrap();
    let good = TlsBackend::start(&ca, "second", &["two.example.com"], None).await;
    let refused = closed_port();
    let yaml = values(&route("two.example.com", 443, "two"));
    let f1 = backend_flag("two", &refused);
    let f2 = backend_flag("two", &good.endpoint);
    let router = RouterProcess::start(&yaml, &[443], &[&f1[0], &f1[1], &f2[0], &f2[1]]);
    let mut tls = tls_connect(router.addr(443), "two.example.com", &ca, None)
        .await
        .unwrap();
    assert_eq!(greeting(&mut tls).await, "backend=second client=none");
}

#[tokio::test]
async fn ipv6_listener_and_backend() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        panic!("IPv6 loopback is not available on this machine");
    };
    drop(probe);
    let ca = Ca::new().unwrap();
    let backend = TlsBackend::start(&ca, "v6", &["v6.example.com"], None).await;
    let yaml = values(&route("v6.example.com", 443, "v6"));
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "values.yaml", &yaml);
    let args: Vec<String> = [
        "run",
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "443=[::1]:0",
        "--backend",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("v6.test={}", backend.endpoint)])
    .collect();
    let router = RouterProcess::spawn(&args, dir, 1, &[]);
    assert!(router.addr(443).is_ipv6());
    let mut tls = tls_connect(router.addr(443), "v6.example.com", &ca, None)
        .await
        .unwrap();
    assert_eq!(greeting(&mut tls).await, "backend=v6 client=none");
}
