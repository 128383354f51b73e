//! Hot reload of the values file: on a content change (polled every
//! `--watch-interval`, including a ConfigMap-style `..data` symlink swap) and
//! on SIGHUP. Open connections keep flowing, new ones follow the new table,
//! new ports get listeners, removed ports stop accepting, and a bad file keeps
//! the old table and counts a failed reload.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::echo::{hang_up, open, ping, refused, tagged_echo};
use common::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const SUCCESS: &str = "sni_router_config_reloads_total{result=\"success\"}";
const FAILURE: &str = "sni_router_config_reloads_total{result=\"failure\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_during_a_16_mib_transfer_changes_route_adds_and_removes_ports() {
    let old = tagged_echo("old").await;
    let new = tagged_echo("new").await;
    let before = values(
        &[
            route("bulk.example.com", 443, "old"),
            route("db.example.com", 5432, "old"),
        ]
        .concat(),
    );
    let after = values(
        &[
            route("bulk.example.com", 443, "new"),
            route("cache.example.com", 6379, "new"),
        ]
        .concat(),
    );
    // 6379 has no route yet, so only two listeners start; its --listen entry is there for the reload.
    let router = spawn(&before, &[443, 5432, 6379], &old, &new, "100ms", 2);
    let (port443, port5432) = (router.addr(443), router.addr(5432));
    watcher_started(&router).await;

    // A connection on the port that will be removed, kept open across the reload.
    let (mut kept, tag) = open(port5432, "db.example.com").await;
    assert_eq!(tag, "old");
    ping(&mut kept, b"before reload").await;

    // 16 MiB through 443 in 64 KiB chunks with small sleeps; the writer waits at
    // three quarters until the reload is done, so the transfer spans it.
    let (bulk, tag) = open(port443, "bulk.example.com").await;
    assert_eq!(tag, "old");
    const SIZE: usize = 16 << 20;
    const CHUNK: usize = 64 << 10;
    const CHUNKS: usize = SIZE / CHUNK;
    let payload: Vec<u8> = (0..SIZE).map(|i| (i * 7 + i / 4099) as u8).collect();
    let sent_digest = Sha256::digest(&payload);
    let (mut r, mut w) = bulk.into_split();
    let progress = Arc::new(AtomicUsize::new(0));
    let (gate, mut gate_rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn({
        let progress = progress.clone();
        async move {
            for (i, chunk) in payload.chunks(CHUNK).enumerate() {
                if i == CHUNKS * 3 / 4 {
                    gate_rx.wait_for(|open| *open).await.unwrap();
                }
                w.write_all(chunk).await.unwrap();
                progress.store(i + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            w.shutdown().await.unwrap();
        }
    });
    let reader = tokio::spawn(async move {
        let mut received = Vec::with_capacity(SIZE);
        r.read_to_end(&mut received).await.map(|_| received)
    });
    poll_until("a quarter of the transfer", Duration::from_secs(20), || {
        progress.load(Ordering::SeqCst) >= CHUNKS / 4
    })
    .await;

    replace(&router.dir.path().join("values.yaml"), &after);
    router.wait_log(&["config reloaded"]).await;
    let in_flight = progress.load(Ordering::SeqCst);
    assert!(in_flight < CHUNKS, "the transfer must still be running at the reload");

    // The added port listens and routes to the new backend.
    let line = router
        .wait_log(&["\"message\":\"listening\"", "\"listener\":6379"])
        .await;
    let port6379: SocketAddr = json(&line)["address"].as_str().unwrap().parse().unwrap();
    let (mut added, tag) = open(port6379, "cache.example.com").await;
    assert_eq!(tag, "new");
    ping(&mut added, b"on the new port").await;

    // New connections on 443 follow the new table.
    let (mut fresh, tag) = open(port443, "bulk.example.com").await;
    assert_eq!(tag, "new", "a new connection after the reload reaches the new backend");
    ping(&mut fresh, b"fresh").await;

    // The removed port stops accepting; its open connection still works.
    router.wait_log(&["stopped listening", "\"listener\":5432"]).await;
    refused(port5432).await;
    ping(&mut kept, b"after reload, port removed").await;
    assert!(hang_up(kept).await.is_empty());

    // Let the writer finish; the open transfer completes byte-exact on the old backend.
    gate.send_replace(true);
    timeout(Duration::from_secs(60), writer).await.unwrap().unwrap();
    let received = timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(received.len(), SIZE);
    assert_eq!(
        Sha256::digest(&received),
        sent_digest,
        "the transfer across the reload is byte-exact"
    );

    assert_eq!(router.metric(SUCCESS).await, Some(1.0));
    assert_eq!(router.metric(FAILURE).await.unwrap_or(0.0), 0.0);
    assert_eq!(router.metric("sni_router_routes{listener=\"443\"}").await, Some(1.0));
    assert_eq!(router.metric("sni_router_routes{listener=\"6379\"}").await, Some(1.0));
    assert_eq!(router.metric("sni_router_routes{listener=\"5432\"}").await, None);
    let (_, dump) = router.admin("GET", "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let ports: Vec<u64> = dump["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["gateway_port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [443, 6379], "{dump}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_port_that_cannot_be_bound_fails_the_whole_reload() {
    let old = tagged_echo("old").await;
    let new = tagged_echo("new").await;
    // 6379 is mapped to an address another socket is listening on.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "values.yaml",
        &values(&route("bulk.example.com", 443, "old")),
    );
    let mut args: Vec<String> = vec!["run".into(), "--config".into(), path.display().to_string()];
    args.extend(["--listen".into(), "443=127.0.0.1:0".into()]);
    args.extend(["--listen".into(), format!("6379={}", taken.local_addr().unwrap())]);
    args.extend(backend_flag("old", &old.to_string()));
    args.extend(backend_flag("new", &new.to_string()));
    args.extend(["--watch-interval".into(), "100ms".into()]);
    let router = RouterProcess::spawn(&args, dir, 1, &[]);
    let addr = router.addr(443);
    watcher_started(&router).await;

    let after = values(
        &[
            route("bulk.example.com", 443, "new"),
            route("cache.example.com", 6379, "new"),
        ]
        .concat(),
    );
    replace(&path, &after);
    let line = router.wait_log(&["reload failed", "gateway port 6379"]).await;
    assert_eq!(json(&line)["level"], "ERROR", "{line}");
    expect_metric(&router, FAILURE, 1.0).await;
    assert_eq!(router.metric(SUCCESS).await.unwrap_or(0.0), 0.0);
    let (_, tag) = open(addr, "bulk.example.com").await;
    assert_eq!(tag, "old", "all or nothing: the route change is not applied either");

    // Once the address is free, SIGHUP applies the same file.
    drop(taken);
    router.signal("HUP");
    router.wait_log(&["config reloaded"]).await;
    expect_metric(&router, SUCCESS, 1.0).await;
    let (_, tag) = open(addr, "bulk.example.com").await;
    assert_eq!(tag, "new");
    router
        .wait_log(&["\"message\":\"listening\"", "\"listener\":6379"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_old_table_logs_line_and_field_and_counts_a_failure() {
    let old = tagged_echo("old").await;
    let new = tagged_echo("new").await;
    let good = values(&route("bulk.example.com", 443, "old"));
    let router = spawn(&good, &[443], &old, &new, "100ms", 1);
    let path = router.dir.path().join("values.yaml");
    let addr = router.addr(443);
    watcher_started(&router).await;

    // Line 9 is the route's gatewayPort (values(): 5 header lines, then fqdn, name, namespace, gatewayPort).
    let bad_port = good.replace("gatewayPort: 443", "gatewayPort: 70000");
    assert_eq!(bad_port.lines().nth(8), Some("      gatewayPort: 70000"));
    replace(&path, &bad_port);
    let line = router
        .wait_log(&["values.yaml:9:", "routes.tls[0].gatewayPort", "70000"])
        .await;
    assert_eq!(json(&line)["level"], "ERROR", "{line}");
    router.wait_log(&["reload failed: keeping the previous config"]).await;
    expect_metric(&router, FAILURE, 1.0).await;
    assert_eq!(router.metric(SUCCESS).await.unwrap_or(0.0), 0.0);
    let (mut conn, tag) = open(addr, "bulk.example.com").await;
    assert_eq!(tag, "old", "the old table still serves");
    ping(&mut conn, b"still served").await;

    // An unknown key (a typo of `service`) on line 10.
    let typo = good.replace("      service:", "      servce:");
    assert!(typo.lines().nth(9).unwrap().starts_with("      servce:"));
    replace(&path, &typo);
    router.wait_log(&["values.yaml:10:", "routes.tls[0].servce"]).await;
    expect_metric(&router, FAILURE, 2.0).await;
    let (_, tag) = open(addr, "bulk.example.com").await;
    assert_eq!(tag, "old");

    // A good file again is picked up.
    replace(&path, &values(&route("bulk.example.com", 443, "new")));
    router.wait_log(&["config reloaded"]).await;
    expect_metric(&router, SUCCESS, 1.0).await;
    assert_eq!(router.metric(FAILURE).await, Some(2.0));
    let (_, tag) = open(addr, "bulk.example.com").await;
    assert_eq!(tag, "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_watching_off_only_sighup_reloads() {
    let old = tagged_echo("old").await;
    let new = tagged_echo("new").await;
    let router = spawn(
        &values(&route("bulk.example.com", 443, "old")),
        &[443],
        &old,
        &new,
        "0s",
        1,
    );
    let addr = router.addr(443);
    replace(
        &router.dir.path().join("values.yaml"),
        &values(&route("bulk.example.com", 443, "new")),
    );
    // A negative can only be shown by waiting: several times the default poll would have seen it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, tag) = open(addr, "bulk.example.com").await;
    assert_eq!(tag, "old", "no reload without SIGHUP");
    assert!(!router.logs().iter().any(|l| l.contains("config reloaded")));
    assert_eq!(router.metric(SUCCESS).await.unwrap_or(0.0), 0.0);

    router.signal("HUP");
    router.wait_log(&["SIGHUP: reloading"]).await;
    router.wait_log(&["config reloaded"]).await;
    expect_metric(&router, SUCCESS, 1.0).await;
    let (mut conn, tag) = open(addr, "bulk.example.com").await;
    assert_eq!(tag, "new");
    ping(&mut conn, b"after SIGHUP").await;
}

/// A route a reload removes takes its series out of `/metrics` with it: a
/// router whose routes churn must not export every route it ever had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_route_leaves_metrics_and_a_kept_one_keeps_its_counts() {
    let old = tagged_echo("old").await;
    let new = tagged_echo("new").await;
    let both = [
        route("gone.example.com", 443, "old"),
        route("kept.example.com", 443, "new"),
    ]
    .concat();
    let router = spawn(&values(&both), &[443], &old, &new, "0s", 1);
    let addr = router.addr(443);
    for sni in ["gone.example.com", "kept.example.com"] {
        let (mut conn, _) = open(addr, sni).await;
        ping(&mut conn, b"counted").await;
    }
    let routed = |name: &str| format!("sni_router_connections_routed_total{{listener=\"443\",route=\"{name}\"}}");
    expect_metric(&router, &routed("gone-443"), 1.0).await;
    expect_metric(&router, &routed("kept-443"), 1.0).await;

    replace(
        &router.dir.path().join("values.yaml"),
        &values(&route("kept.example.com", 443, "new")),
    );
    router.signal("HUP");
    expect_metric(&router, SUCCESS, 1.0).await;
    let (_, body) = router.admin("GET", "/metrics").await;
    let stale: Vec<&str> = body.lines().filter(|l| l.contains("route=\"gone-443\"")).collect();
    assert!(stale.is_empty(), "series of the removed route: {stale:#?}");
    // The kept route's counters carry on, not reset.
    assert_eq!(router.metric(&routed("kept-443")).await, Some(1.0));
    assert!(body.contains("sni_router_bytes_total{direction=\"upstream\",listener=\"443\",route=\"kept-443\"}"));
    let (mut conn, tag) = open(addr, "kept.example.com").await;
    assert_eq!(tag, "new");
    ping(&mut conn, b"again").await;
    drop(conn);
    expect_metric(&router, &routed("kept-443"), 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_symlink_swap_is_noticed() {
    let old = tagged_echo("old").await;
    let new = tagged_echo("new").await;
    // What the kubelet does: values.yaml -> ..data/values.yaml, ..data -> ..<timestamp>/.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("..2026_01")).unwrap();
    write(
        &root.join("..2026_01"),
        "values.yaml",
        &values(&route("bulk.example.com", 443, "old")),
    );
    std::os::unix::fs::symlink("..2026_01", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/values.yaml", root.join("values.yaml")).unwrap();
    let config = root.join("values.yaml");
    let args: Vec<String> = [
        "run",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "443=127.0.0.1:0",
        "--watch-interval",
        "200ms",
        "--backend",
        &format!("old.test={old}"),
        "--backend",
        &format!("new.test={new}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let router = RouterProcess::spawn(&args, dir, 1, &[]);
    let addr = router.addr(443);
    let (_, tag) = open(addr, "bulk.example.com").await;
    assert_eq!(tag, "old");
    watcher_started(&router).await;

    // The update: a new timestamped directory, then an atomic swap of the ..data symlink.
    let root = router.dir.path();
    std::fs::create_dir(root.join("..2026_02")).unwrap();
    write(
        &root.join("..2026_02"),
        "values.yaml",
        &values(&route("bulk.example.com", 443, "new")),
    );
    std::os::unix::fs::symlink("..2026_02", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_01")).unwrap();

    router.wait_log(&["config file changed: reloading"]).await;
    router.wait_log(&["config reloaded"]).await;
    expect_metric(&router, SUCCESS, 1.0).await;
    assert_eq!(router.metric(FAILURE).await.unwrap_or(0.0), 0.0);
    let (mut conn, tag) = open(addr, "bulk.example.com").await;
    assert_eq!(tag, "new");
    ping(&mut conn, b"after the swap").await;
}

/// The watcher must compare the file with what `run` loaded at startup. Here
/// the file changes after the startup load but before the watcher's first
/// look: the router is held there by its own logging (600 schema warnings,
/// ~190 KB, into a stderr pipe the test stops reading after the first one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_between_the_startup_load_and_the_first_watch_is_applied() {
    let old = tagged_echo("old").await;
    let new = tagged_echo("new").await;
    let http: String = (0..600)
        .map(|i| format!("    - {{fqdn: h{i}.example.com, path: /, service: {{name: web, port: 80}}}}\n"))
        .collect();
    let with_http = |service: &str| {
        values(&route("bulk.example.com", 443, service)).replace("  http: []\n", &format!("  http:\n{http}"))
    };
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "values.yaml", &with_http("old"));
    let mut child = std::process::Command::new(binary())
        .args(["--log-format", "json", "run", "--config", path.to_str().unwrap()])
        .args(["--listen", "443=127.0.0.1:0", "--watch-interval", "100ms"])
        .args(backend_flag("old", &old.to_string()))
        .args(backend_flag("new", &new.to_string()))
        .env("RUST_LOG", "info")
        .env("SNI_ROUTER_ADMIN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _kill = KillOnDrop(child.id());
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    // The first warning means the startup load is done; the rest cannot be
    // written (and the watcher not started) until the test reads on.
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("routes.http[0].path"), "{first}");
    replace(&path, &with_http("new"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut logs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr: SocketAddr = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("router did not start; logs:\n{}", logs.join("\n")));
        logs.push(line.clone());
        let event = json(&line);
        if event["message"] == "listening" {
            break event["address"].as_str().unwrap().parse().unwrap();
        }
    };
    let (_, tag) = open(addr, "bulk.example.com").await;
    assert_eq!(tag, "old", "the startup load read the first version");

    // Many watch intervals later the file's content must be in use.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, tag) = open(addr, "bulk.example.com").await;
        if tag == "new" {
            break;
        }
        logs.extend(rx.try_iter());
        assert!(
            Instant::now() < deadline,
            "values.yaml routes bulk.example.com to `new` since startup, but the router still serves `old` \
             and never reloaded; logs after the warnings:\n{}",
            logs.iter()
                .filter(|l| !l.contains("\"WARN\"") && !l.contains("\"message\":\"connection\""))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

// === helpers ===

/// `run` on `yaml` with `--listen PORT=127.0.0.1:0` for each of `ports`, the
/// services `old` and `new` pointed at those backends, and the watch interval;
/// waits for `listeners` ports to listen.
fn spawn(
    yaml: &str,
    ports: &[u16],
    old: &SocketAddr,
    new: &SocketAddr,
    watch: &str,
    listeners: usize,
) -> RouterProcess {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "values.yaml", yaml);
    let mut args: Vec<String> = vec!["run".into(), "--config".into(), path.display().to_string()];
    for port in ports {
        args.extend(["--listen".into(), format!("{port}=127.0.0.1:0")]);
    }
    args.extend(backend_flag("old", &old.to_string()));
    args.extend(backend_flag("new", &new.to_string()));
    args.extend(["--watch-interval".into(), watch.into()]);
    RouterProcess::spawn(&args, dir, listeners, &[])
}

/// Give the watcher time to take its first look at the file. There is no
/// event to wait for, and a change before that look is lost (see
/// `a_change_between_the_startup_load_and_the_first_watch_is_applied`).
async fn watcher_started(router: &RouterProcess) {
    router.wait_log(&["\"message\":\"serving\""]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Kills a process we started (by its id) when the test ends, pass or fail.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-s", "KILL", &self.0.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
