//! Access-log output: one line per connection, written in batches at most
//! `--log-flush-interval` late, in event order with every other line, and
//! never lost at exit.

mod common;

use std::time::Duration;

use common::echo::{hang_up, open, ping, tagged_echo};
use common::*;

/// A router on gateway port 443 routing `bulk.example.com` to an echo backend.
async fn start(extra: &[&str]) -> RouterProcess {
    let echo = tagged_echo("echo").await;
    let flags = backend_flag("bulk", &echo.to_string());
    let mut args = vec![flags[0].as_str(), flags[1].as_str()];
    args.extend_from_slice(extra);
    RouterProcess::start(&values(&route("bulk.example.com", 443, "bulk")), &[443], &args)
}

/// One connection through the router, from hello to both ends closed.
async fn one_connection(router: &RouterProcess, message: &str) {
    let (mut conn, _) = open(router.addr(443), "bulk.example.com").await;
    ping(&mut conn, message.as_bytes()).await;
    hang_up(conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_arrive_within_the_default_interval() {
    let router = start(&[]).await;
    for n in 0..3 {
        one_connection(&router, &format!("conn {n}")).await;
    }
    let lines = wait_connections(&router, 3).await;
    assert_eq!(lines.len(), 3, "logs:\n{}", router.logs().join("\n"));
    assert!(
        lines.iter().all(|l| l["end"] == "closed" && l["route"] == "bulk-443"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_access_line_goes_out_before_the_next_other_line() {
    let router = start(&["--log-flush-interval", "1h"]).await;
    one_connection(&router, "one connection").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(connections(&router).is_empty(), "written before its batch was due");

    // Any other event (here a reload) writes the gathered lines first.
    router.signal("HUP");
    let reloaded = router.wait_log(&["config reloaded"]).await;
    let logs = router.logs();
    let access = logs
        .iter()
        .position(|l| l.contains("\"connection\""))
        .expect("the access line");
    let reload = logs.iter().position(|l| *l == reloaded).unwrap();
    assert!(access < reload, "out of order:\n{}", logs.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_ends_during_the_drain_is_logged_before_the_exit() {
    let mut router = start(&["--log-flush-interval", "1h"]).await;
    let (mut conn, _) = open(router.addr(443), "bulk.example.com").await;
    ping(&mut conn, b"open across SIGTERM").await;
    router.signal("TERM");
    router.wait_log(&["draining: no new connections"]).await;
    ping(&mut conn, b"still flowing").await;
    hang_up(conn).await;
    let status = exit_within(&mut router, Duration::from_secs(10)).expect("no exit after the last connection closed");
    assert_eq!(status.code(), Some(0), "{status}");
    router.wait_log(&["drained: every connection finished"]).await;
    let logs = router.logs();
    let access = logs.iter().position(|l| l.contains("\"connection\""));
    let drained = logs
        .iter()
        .position(|l| l.contains("drained: every connection finished"));
    assert!(access.is_some() && access < drained, "logs:\n{}", logs.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_zero_writes_each_line_at_once() {
    let router = start(&["--log-flush-interval", "0"]).await;
    one_connection(&router, "one connection").await;
    assert_eq!(wait_connections(&router, 1).await.len(), 1);
}
