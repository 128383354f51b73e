//! Graceful drain: SIGTERM/SIGINT and `POST /drain_listeners` turn `/ready`
//! to 503 and stop accepting while open connections keep flowing; the
//! process exits 0 when the last one ends or the drain timeout cuts it, and
//! at once on a second signal.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::echo::{hang_up, open, ping, refused, tagged_echo};
use common::*;
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_open_connections_and_exits_0_as_soon_as_they_close() {
    let (mut router, addr) = start("30s").await;
    let (mut conn, tag) = open(addr, "bulk.example.com").await;
    assert_eq!(tag, "echo");
    ping(&mut conn, b"before SIGTERM").await;

    router.signal("TERM");
    let draining = wait_ready(&router, 503).await;
    assert_eq!(draining, "DRAINING\n");
    refused(addr).await;
    // Mid-conversation, the open connection still carries data both ways.
    ping(&mut conn, b"during the drain").await;
    ping(&mut conn, &[7u8; 100_000]).await;
    assert!(
        exit_within(&mut router, Duration::from_millis(300)).is_none(),
        "exited with a connection open"
    );

    assert!(hang_up(conn).await.is_empty());
    let closed = Instant::now();
    let status = exit_within(&mut router, Duration::from_secs(10)).expect("no exit after the last connection closed");
    let after = closed.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        after < Duration::from_secs(3),
        "exit took {after:?} after the close (drain timeout 30 s)"
    );
    router.wait_log(&["drained: every connection finished"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_cuts_a_connection_that_never_ends() {
    let (mut router, addr) = start("1s").await;
    let (mut conn, _) = open(addr, "bulk.example.com").await;
    ping(&mut conn, b"then idle forever").await;

    router.signal("TERM");
    let signalled = Instant::now();
    let status = exit_within(&mut router, Duration::from_secs(10)).expect("the drain timeout did not end the process");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&took),
        "exit {took:?} after SIGTERM with --drain-timeout 1s"
    );
    router
        .wait_log(&["drain timeout reached; closing the remaining connections"])
        .await;
    // The cut connection is logged like any other end, with its bytes.
    let cut = wait_connections(&router, 1).await;
    assert_eq!(cut.len(), 1, "logs:\n{}", router.logs().join("\n"));
    assert_eq!(cut[0]["end"], "drain_timeout", "{}", cut[0]);
    assert_eq!(cut[0]["route"], "bulk-443");
    assert!(
        cut[0]["bytes.upstream"].as_u64().unwrap() > "then idle forever".len() as u64,
        "{}",
        cut[0]
    );
    // The client sees the connection end: EOF or a reset, not silence.
    let mut buf = [0u8; 16];
    match timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("unexpected {n} bytes after the drain"),
        Err(_) => panic!("the client's connection is still open after the process exited"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_during_the_drain_exits_at_once() {
    second_signal_exits_at_once("TERM", "TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_sigterm_drain_exits_at_once() {
    second_signal_exits_at_once("TERM", "INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_starts_a_drain_too() {
    let (mut router, addr) = start("30s").await;
    let (mut conn, _) = open(addr, "bulk.example.com").await;
    router.signal("INT");
    assert_eq!(wait_ready(&router, 503).await, "DRAINING\n");
    refused(addr).await;
    ping(&mut conn, b"still open").await;
    drop(conn);
    let status = exit_within(&mut router, Duration::from_secs(5)).expect("no exit after the close");
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_listeners_stops_accepting_keeps_open_connections_and_the_process() {
    let (mut router, addr) = start("30s").await;
    assert_eq!(router.admin("GET", "/ready").await, (200, "LIVE\n".to_string()));
    let (mut conn, _) = open(addr, "bulk.example.com").await;
    ping(&mut conn, b"before").await;

    assert_eq!(router.admin("POST", "/drain_listeners").await.0, 200);
    assert_eq!(router.admin("GET", "/ready").await, (503, "DRAINING\n".to_string()));
    refused(addr).await;
    ping(&mut conn, b"after drain_listeners").await;

    // Closing the last connection does not end the process: only a signal does.
    hang_up(conn).await;
    assert!(
        exit_within(&mut router, Duration::from_millis(700)).is_none(),
        "the process exited"
    );
    assert_eq!(router.admin("GET", "/healthz").await.0, 200);
    assert_eq!(router.admin("GET", "/ready").await.0, 503);
    refused(addr).await;

    // A later SIGTERM finds nothing open and exits 0 promptly.
    router.signal("TERM");
    let status = exit_within(&mut router, Duration::from_secs(5)).expect("no exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status}");
}

// === helpers ===

async fn second_signal_exits_at_once(first: &str, second: &str) {
    let (mut router, addr) = start("30s").await;
    let (mut conn, _) = open(addr, "bulk.example.com").await;
    ping(&mut conn, b"never closed").await;
    router.signal(first);
    // Once /ready says draining, the first signal has been taken; the second is a new one.
    wait_ready(&router, 503).await;
    router.signal(second);
    let signalled = Instant::now();
    let status = exit_within(&mut router, Duration::from_secs(10)).expect("no exit on the second signal");
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "SIG{second} during the drain took {took:?}"
    );
    assert_eq!(status.code(), Some(0), "{status}");
    router.wait_log(&["second signal: exiting now"]).await;
    drop(conn);
}

/// A router on gateway port 443 routing `bulk.example.com` to an echo backend.
async fn start(drain_timeout: &str) -> (RouterProcess, SocketAddr) {
    let echo = tagged_echo("echo").await;
    let flags = backend_flag("bulk", &echo.to_string());
    let router = RouterProcess::start(
        &values(&route("bulk.example.com", 443, "bulk")),
        &[443],
        &[&flags[0], &flags[1], "--drain-timeout", drain_timeout],
    );
    let addr = router.addr(443);
    (router, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_closes_does_not_hold_the_exit_past_the_cut_grace() {
    // Takes the connection and holds it: never reads, answers or closes.
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = serve_each(move |stream| {
        let held = held_tx.clone();
        async move {
            let _ = held.send(stream);
        }
    })
    .await;
    let flags = backend_flag("mute", &backend.to_string());
    let mut router = RouterProcess::start(
        &values(&route("mute.example.com", 443, "mute")),
        &[443],
        &[&flags[0], &flags[1], "--drain-timeout", "300ms"],
    );
    let mut client = tokio::net::TcpStream::connect(router.addr(443)).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut client, &synthetic_hello("mute.example.com", 0))
        .await
        .unwrap();
    let _held = timeout(Duration::from_secs(10), held_rx.recv())
        .await
        .expect("backend reached");

    router.signal("TERM");
    let signalled = Instant::now();
    let status = exit_within(&mut router, Duration::from_secs(10)).expect("no exit");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        took < Duration::from_secs(4),
        "exit {took:?} after SIGTERM (drain 300 ms, cut grace 1 s)"
    );
    router.wait_log(&["connections still open"]).await;
}
