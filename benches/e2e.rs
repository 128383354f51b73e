//! End-to-end benchmark over loopback: sni-router side by side with a direct
//! connection (the physical limit) and with HAProxy, nginx (`stream` +
//! `ssl_preread`) and sniproxy, in the same run, interleaved.
//!
//! `cargo bench --bench e2e` (install the peers first with
//! `scripts/install-bench-peers.sh`; a peer that is missing or does not start
//! is named and skipped). Traffic is a real 512-byte rustls ClientHello with
//! the SNI `db.bench.example.com`, then opaque bytes, so the figures measure
//! forwarding, not cryptography. sni-router runs three times: `sni-router` at
//! its default log level (info: one access-log event per connection, written
//! to a file), `sni-router-quiet` with `RUST_LOG=warn`, comparable with the
//! peers, whose configs here log nothing per connection, and
//! `sni-router-busy`, the quiet one with `--busy-poll 100us`; HAProxy runs
//! twice, the second time with `busy-polling` (`haproxy-busy`, stopped with
//! SIGSTOP while the others are measured, since it never sleeps).
//!
//! Scenarios, each run once per target per round, targets in rotated order:
//!
//! * `connrate_c1`, `connrate_c64`: connect, hello, 64-byte reply, close
//!   (the backend closes first, as HTTP/1.0 does); conns/s and p50/p99 time.
//! * `throughput_{up,down}_{1,16}`: `BENCH_BYTES` over 1 and 16 connections
//!   each direction, every byte checked against a pattern.
//! * `latency_split`, `latency_1cpu`: 64-byte ping-pong on an open connection,
//!   p50/p99/p99.9 round trip; first with the proxy on its own CPU, then with
//!   client, proxy and backend all on the load CPU (a cross-CPU wakeup costs
//!   tens of µs in these VMs and a proxied round trip has four of them).
//! * `idle`: `BENCH_IDLE_CONNS` connections that carried data both ways and
//!   then sit idle; RSS of a freshly started proxy (VmRSS of its processes)
//!   before and after, per connection.
//! * `route_scale`: the 1-client connection rate with `BENCH_ROUTES` routes
//!   loaded vs 2, back to back in each round.
//!
//! Pinning: the bench (clients and backend, one thread each) runs on CPU
//! `BENCH_LOAD_CPU` (0); each proxy on `BENCH_PROXY_CPU` (1) with one worker.
//!
//! Environment: `BENCH_SCALE` (1: durations, iteration counts and the default
//! byte count scale with it), `BENCH_ROUNDS` (3), `BENCH_BYTES` (512M × scale; 4G for
//! the figure), `BENCH_IDLE_CONNS` (2000; 10000 for the issue's),
//! `BENCH_ROUTES` (10000), `BENCH_TARGETS` (comma list, default all),
//! `BENCH_SCENARIOS` (comma list of ids or prefixes, default all),
//! `BENCH_JSON` (target/bench-e2e.json; the text goes beside it as .txt),
//! `BENCH_ROUTER_LOG` (RUST_LOG for sni-router; default: its own, info),
//! `BENCH_ROUTER_B` (path of a second sni-router binary, e.g. an older
//! commit's, measured as `sni-router-b` in the same run),
//! `BENCH_COMMIT` (commit to record when not run from a git checkout),
//! `BENCH_PEER_SOCKBUF` (bytes: fixed socket buffers for HAProxy, both sides,
//! and nginx, client side; default: their defaults, the kernel's autotuning).
//!
//! `floor` is not a peer but a yardstick: the bench's own proxy
//! (`e2e/floor.rs`) that makes only the system calls a passthrough proxy
//! cannot avoid (no parsing, routing, timeouts or logging), so the table
//! shows how much of each proxy's cost is the kernel's. It has no routes and
//! sits out `route_scale`.

#[path = "e2e/floor.rs"]
mod floor;
#[path = "e2e/load.rs"]
mod load;
#[path = "e2e/report.rs"]
mod report;
#[path = "e2e/targets.rs"]
mod targets;

#[path = "common/hello.rs"]
mod hello;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use load::Way;
use report::{percentile, Better, Report};
use serde_json::json;
use targets::{Kind, Target};

/// Options from the environment.
struct Opts {
    scale: f64,
    rounds: usize,
    bytes: u64,
    idle_conns: usize,
    routes: usize,
    kinds: Vec<Kind>,
    scenarios: Vec<String>,
    json: std::path::PathBuf,
    load_cpu: usize,
    proxy_cpu: usize,
}

const SCENARIOS: [&str; 10] = [
    "connrate_c1",
    "connrate_c64",
    "throughput_up_1",
    "throughput_down_1",
    "throughput_up_16",
    "throughput_down_16",
    "latency_split",
    "latency_1cpu",
    "idle",
    "route_scale",
];

fn main() {
    // The `floor` target is this binary run again as a child process.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--floor-proxy") {
        let addr = |i: usize| args.get(i).and_then(|a| a.parse::<std::net::SocketAddr>().ok());
        let (Some(listen), Some(backend)) = (addr(2), addr(3)) else {
            eprintln!("e2e --floor-proxy LISTEN BACKEND: two socket addresses");
            std::process::exit(2);
        };
        if let Err(e) = floor::serve(listen, backend) {
            eprintln!("e2e --floor-proxy: {e}");
            std::process::exit(1);
        }
        return;
    }
    // `cargo test --benches` runs bench targets without `--bench`: nothing to test here.
    if !std::env::args().any(|a| a == "--bench") {
        println!("e2e: a benchmark; run it with `cargo bench --bench e2e`");
        return;
    }
    let opts = match Opts::from_env() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("e2e: {e}");
            std::process::exit(2);
        }
    };
    let machine = machine();
    // Pin before any thread exists, so the runtime's and the backend's threads inherit it.
    pin_self(opts.load_cpu);
    raise_nofile();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let started = Instant::now();
    let outcome = runtime.block_on(run(&opts, machine));
    eprintln!("e2e: done in {:.0} s", started.elapsed().as_secs_f64());
    if let Err(e) = outcome {
        eprintln!("e2e: {e}");
        std::process::exit(1);
    }
}

async fn run(opts: &Opts, mut meta: serde_json::Value) -> Result<(), String> {
    meta["scale"] = json!(opts.scale);
    meta["rounds"] = json!(opts.rounds);
    meta["bytes"] = json!(opts.bytes);
    // Both ends of each idle connection live here, and the proxy holds two descriptors per connection.
    let nofile = targets::nofile_limit();
    let idle_conns = opts.idle_conns.min((nofile.saturating_sub(512) / 2) as usize);
    if idle_conns < opts.idle_conns {
        eprintln!(
            "e2e: the open-file limit is {nofile} (hard): idle scenario capped at {idle_conns} connections, not {}",
            opts.idle_conns
        );
    }
    meta["nofile"] = json!(nofile);
    meta["idle_conns"] = json!(idle_conns);
    meta["routes"] = json!(opts.routes);
    meta["load_cpu"] = json!(opts.load_cpu);
    meta["proxy_cpu"] = json!(opts.proxy_cpu);
    meta["peer_sockbuf"] = json!(std::env::var("BENCH_PEER_SOCKBUF").ok());
    let hello = Arc::new(hello::padded(targets::SNI, 512));
    let backend = load::Backend::start(hello.clone()).map_err(|e| format!("backend: {e}"))?;
    eprintln!("e2e: backend on {}", backend.addr);

    let mut peers = serde_json::Map::new();
    let mut running: Vec<Target> = Vec::new();
    for &kind in &opts.kinds {
        let version = kind.version();
        let started = match &version {
            Ok(_) => Target::start(kind, 2, backend.addr, opts.proxy_cpu, &hello).await,
            Err(e) => Err(e.clone()),
        };
        match started {
            Ok(t) => {
                eprintln!(
                    "e2e: {:<10} on {}  ({}; {} threads)",
                    kind.name(),
                    t.addr,
                    version.as_deref().unwrap_or(""),
                    t.threads()
                );
                peers.insert(
                    kind.name().into(),
                    json!({"status": "ok", "version": version.ok(), "threads": t.threads()}),
                );
                running.push(t);
            }
            Err(e) => {
                eprintln!("e2e: {} could not be started, skipped: {e}", kind.name());
                peers.insert(kind.name().into(), json!({"status": "not started", "why": e}));
            }
        }
    }
    meta["targets"] = serde_json::Value::Object(peers);
    if running.is_empty() {
        return Err("no target could be started".into());
    }
    let labels: Vec<String> = running.iter().map(|t| t.label()).collect();
    let mut report = Report::new(opts.rounds, labels);

    // Route-scale twins: the same proxy with many routes.
    let mut many: BTreeMap<Kind, Target> = BTreeMap::new();
    if opts.wants("route_scale") {
        for t in running
            .iter()
            .filter(|t| t.kind != Kind::Direct && t.kind != Kind::Floor)
        {
            match Target::start(t.kind, opts.routes, backend.addr, opts.proxy_cpu, &hello).await {
                Ok(m) => {
                    many.insert(t.kind, m);
                }
                Err(e) => eprintln!(
                    "e2e: {} with {} routes could not be started: {e}",
                    t.kind.name(),
                    opts.routes
                ),
            }
        }
    }

    // Warm up every target (page cache, allocator, accept path).
    for t in running.iter().chain(many.values()) {
        let _awake = t.awake();
        let _ = load::conn_rate(t.addr, hello.clone(), 4, Duration::from_millis(200), 5_000).await;
    }

    let s = opts.scale;
    let conn_time = Duration::from_secs_f64(1.0 * s);
    let conn_max = (300_000.0 * s) as u64;
    let lat_iters = (5_000.0 * s) as usize;
    let lat_cap = Duration::from_secs_f64(10.0 * s);
    let tput_cap = Duration::from_secs_f64(20.0 * s);

    for round in 0..opts.rounds {
        eprintln!("e2e: round {}/{}", round + 1, opts.rounds);
        // Rotate the order each round so no target always goes first.
        let mut order: Vec<usize> = (0..running.len()).collect();
        order.rotate_left(round % running.len());

        for clients in [1usize, 64] {
            let id = format!("connrate_c{clients}");
            if !opts.wants(&id) {
                continue;
            }
            let title = format!("conn rate, {clients} client{}", if clients > 1 { "s" } else { "" });
            for &i in &order {
                let t = &running[i];
                let _awake = t.awake();
                let cpu_before = t.cpu_ns();
                let r = load::conn_rate(t.addr, hello.clone(), clients, conn_time, conn_max).await;
                record_connrate(&mut report, &id, &title, &t.label(), round, &r);
                if let (Some(before), Some(after)) = (cpu_before, t.cpu_ns()) {
                    let conns = (r.times.len() as u64 + r.errors).max(1);
                    let us = (after - before) as f64 / conns as f64 / 1e3;
                    eprintln!("e2e:   {id:<20} {:<12} proxy CPU {us:.1} µs per connection", t.label());
                    let title = format!("{title}: proxy CPU per conn");
                    report.record(&id, "cpu_per_conn", &title, "µs", Better::Lower, &t.label(), round, us);
                }
            }
        }

        for (way, conns) in [(Way::Up, 1usize), (Way::Down, 1), (Way::Up, 16), (Way::Down, 16)] {
            let dir = if way == Way::Up { "up" } else { "down" };
            let id = format!("throughput_{dir}_{conns}");
            if !opts.wants(&id) {
                continue;
            }
            let title = format!("throughput {dir}, {conns} conn{}", if conns > 1 { "s" } else { "" });
            for &i in &order {
                let t = &running[i];
                let _awake = t.awake();
                let free_list = free_page_list(opts.proxy_cpu);
                let cpu_before = t.cpu_ns();
                let r = load::throughput(t.addr, hello.clone(), conns, opts.bytes, way, tput_cap).await;
                let cpu = cpu_before.zip(t.cpu_ns()).map(|(before, after)| after - before);
                let secs = r.elapsed.as_secs_f64();
                if let Some(e) = &r.error {
                    eprintln!("e2e:   {id} {}: error: {e}", t.label());
                    continue;
                }
                if r.verified < r.requested {
                    eprintln!(
                        "e2e:   {id} {}: stopped at the {:.0} s cap after {} of {} bytes",
                        t.label(),
                        tput_cap.as_secs_f64(),
                        r.verified,
                        r.requested
                    );
                }
                let mbps = r.verified as f64 / secs / 1e6;
                eprintln!(
                    "e2e:   {id:<20} {:<12} {mbps:>8.0} MB/s ({} bytes verified; proxy CPU's free-page list before: {})",
                    t.label(),
                    r.verified,
                    free_list.map_or("?".into(), |n| format!("{n} pages"))
                );
                report.record(&id, "MB_per_s", &title, "MB/s", Better::Higher, &t.label(), round, mbps);
                if let Some(ns) = cpu {
                    // CPU seconds per GiB moved: what the proxy's own work costs.
                    let per_gib = ns as f64 / 1e9 / (r.verified as f64 / (1u64 << 30) as f64);
                    let title = format!("{title}: proxy CPU s per GiB");
                    report.record(
                        &id,
                        "cpu_per_gib",
                        &title,
                        "s",
                        Better::Lower,
                        &t.label(),
                        round,
                        per_gib,
                    );
                }
            }
        }

        for layout in ["split", "1cpu"] {
            let id = format!("latency_{layout}");
            if !opts.wants(&id) {
                continue;
            }
            let title = if layout == "split" {
                "RTT, proxy on its own CPU"
            } else {
                "RTT, all on one CPU"
            };
            for &i in &order {
                let t = &running[i];
                let _awake = t.awake();
                if layout == "1cpu" {
                    t.pin(opts.load_cpu);
                }
                let r = load::latency(t.addr, &hello, lat_iters / 20, lat_iters, lat_cap).await;
                if layout == "1cpu" {
                    t.pin(opts.proxy_cpu);
                }
                match r {
                    Ok(rtts) if !rtts.is_empty() => {
                        let mut us: Vec<f64> = rtts.iter().map(|d| d.as_secs_f64() * 1e6).collect();
                        us.sort_by(|a, b| a.total_cmp(b));
                        let (p50, p99, p999) = (percentile(&us, 50.0), percentile(&us, 99.0), percentile(&us, 99.9));
                        eprintln!(
                            "e2e:   {id:<20} {:<12} p50 {p50:.1} µs  p99 {p99:.1} µs  p99.9 {p999:.1} µs ({} round trips)",
                            t.label(),
                            us.len()
                        );
                        let l = t.label();
                        report.record(&id, "p50", &format!("{title} p50"), "µs", Better::Lower, &l, round, p50);
                        report.record(&id, "p99", &format!("{title} p99"), "µs", Better::Lower, &l, round, p99);
                        report.record(
                            &id,
                            "p99.9",
                            &format!("{title} p99.9"),
                            "µs",
                            Better::Lower,
                            &l,
                            round,
                            p999,
                        );
                    }
                    Ok(_) => eprintln!("e2e:   {id} {}: no round trip within the cap", t.label()),
                    Err(e) => eprintln!("e2e:   {id} {}: error: {e}", t.label()),
                }
            }
        }

        if opts.wants("idle") {
            for &i in &order {
                let kind = running[i].kind;
                // Direct holds no proxy and floor is a yardstick, not a product; the quiet and busy routers' memory is
                // the router's, busy HAProxy's is HAProxy's.
                if matches!(
                    kind,
                    Kind::Direct | Kind::SniRouterQuiet | Kind::SniRouterBusy | Kind::HaproxyBusy | Kind::Floor
                ) {
                    continue;
                }
                // A fresh process: memory freed by earlier scenarios would hide the cost.
                match idle_memory(kind, backend.addr, idle_conns, opts.proxy_cpu, &hello).await {
                    Ok((before, after, n)) => {
                        let per = (after as f64 - before as f64) / n as f64;
                        eprintln!(
                            "e2e:   idle                 {:<12} RSS {:.1} MiB → {:.1} MiB with {n} idle connections: {:.2} KiB each",
                            kind.name(),
                            before as f64 / 1048576.0,
                            after as f64 / 1048576.0,
                            per / 1024.0
                        );
                        let l = kind.name();
                        let title = format!("idle RSS per conn ({n} conns)");
                        report.record(
                            "idle",
                            "rss_per_conn",
                            &title,
                            "KiB",
                            Better::Lower,
                            l,
                            round,
                            per / 1024.0,
                        );
                        let before_mib = before as f64 / 1048576.0;
                        report.record(
                            "idle",
                            "rss_before",
                            "idle RSS at start",
                            "MiB",
                            Better::Lower,
                            l,
                            round,
                            before_mib,
                        );
                    }
                    Err(e) => eprintln!("e2e:   idle {}: {e}", kind.name()),
                }
            }
        }

        if opts.wants("route_scale") {
            for &i in &order {
                let t = &running[i];
                let Some(m) = many.get(&t.kind) else { continue };
                // Alternate which goes first, round by round.
                let pair = if round % 2 == 0 { [t, m] } else { [m, t] };
                let mut rates = [0.0f64; 2];
                for (k, target) in pair.iter().enumerate() {
                    // One at a time: the twins share the proxy CPU.
                    let _awake = target.awake();
                    let r = load::conn_rate(target.addr, hello.clone(), 1, conn_time, conn_max).await;
                    rates[k] = r.times.len() as f64 / r.elapsed.as_secs_f64();
                    if r.errors > 0 {
                        eprintln!(
                            "e2e:   route_scale {}: {} errors ({})",
                            target.label(),
                            r.errors,
                            r.first_error.as_deref().unwrap_or("")
                        );
                    }
                }
                let (two, lots) = if round % 2 == 0 {
                    (rates[0], rates[1])
                } else {
                    (rates[1], rates[0])
                };
                let cost = (1.0 - lots / two) * 100.0;
                eprintln!(
                    "e2e:   route_scale          {:<12} {two:.0} conn/s with 2 routes, {lots:.0} with {}: cost {cost:+.1} %",
                    t.label(),
                    opts.routes
                );
                let l = t.label();
                let n = opts.routes;
                let title2 = "conn rate, 1 client, 2 routes";
                let title_n = format!("conn rate, 1 client, {n} routes");
                let title_c = format!("cost of {n} routes");
                report.record(
                    "route_scale",
                    "conns_per_s_2",
                    title2,
                    "conn/s",
                    Better::Higher,
                    &l,
                    round,
                    two,
                );
                report.record(
                    "route_scale",
                    "conns_per_s_n",
                    &title_n,
                    "conn/s",
                    Better::Higher,
                    &l,
                    round,
                    lots,
                );
                report.record("route_scale", "cost", &title_c, "%", Better::Lower, &l, round, cost);
            }
        }
    }

    let bad = backend.bad_hellos.load(std::sync::atomic::Ordering::Relaxed);
    if bad > 0 {
        eprintln!("e2e: WARNING: {bad} connections reached the backend with a changed ClientHello");
    }
    meta["bad_hellos"] = json!(bad);
    meta["loadavg_end"] = json!(std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    for mut t in running.into_iter().chain(many.into_values()) {
        t.stop();
    }

    let text = format!("{}\n{}", describe(&meta), report.to_text());
    println!("\n{text}");
    let doc = json!({"meta": meta, "rows": report.to_json()});
    if let Some(parent) = opts.json.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let body = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&opts.json, body).map_err(|e| format!("{}: {e}", opts.json.display()))?;
    let txt = opts.json.with_extension("txt");
    std::fs::write(&txt, &text).map_err(|e| format!("{}: {e}", txt.display()))?;
    eprintln!("e2e: wrote {} and {}", opts.json.display(), txt.display());
    Ok(())
}

fn record_connrate(report: &mut Report, id: &str, title: &str, label: &str, round: usize, r: &load::ConnRate) {
    if r.times.is_empty() {
        eprintln!(
            "e2e:   {id} {label}: no connection succeeded ({} errors: {})",
            r.errors,
            r.first_error.as_deref().unwrap_or("")
        );
        return;
    }
    let rate = r.times.len() as f64 / r.elapsed.as_secs_f64();
    let mut us: Vec<f64> = r.times.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(|a, b| a.total_cmp(b));
    let (p50, p99) = (percentile(&us, 50.0), percentile(&us, 99.0));
    let errors = if r.errors > 0 {
        format!(
            "  {} errors, first: {}",
            r.errors,
            r.first_error.as_deref().unwrap_or("")
        )
    } else {
        String::new()
    };
    eprintln!("e2e:   {id:<20} {label:<12} {rate:>8.0} conn/s  p50 {p50:.1} µs  p99 {p99:.1} µs{errors}",);
    report.record(id, "conns_per_s", title, "conn/s", Better::Higher, label, round, rate);
    let t50 = format!("{title} p50 time");
    let t99 = format!("{title} p99 time");
    report.record(id, "p50", &t50, "µs", Better::Lower, label, round, p50);
    report.record(id, "p99", &t99, "µs", Better::Lower, label, round, p99);
}

/// Start a fresh `kind`, warm it up, hold `conns` idle connections
/// through it; (RSS before, RSS after, connections held).
async fn idle_memory(
    kind: Kind,
    backend: std::net::SocketAddr,
    conns: usize,
    cpu: usize,
    hello: &Arc<Vec<u8>>,
) -> Result<(u64, u64, usize), String> {
    let mut target = Target::start(kind, 2, backend, cpu, hello).await?;
    // Warm-up: let lazy one-time allocations happen before the baseline.
    let warm = load::idle(target.addr, hello.clone(), 32, 32)
        .await
        .map_err(|e| e.to_string())?;
    drop(warm);
    let _ = load::conn_rate(target.addr, hello.clone(), 4, Duration::from_millis(100), 2_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = target.rss().ok_or("no RSS")?;
    let held = load::idle(target.addr, hello.clone(), conns, 64)
        .await
        .map_err(|e| format!("opening idle connections: {e}"))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = target.rss().ok_or("no RSS")?;
    let n = held.len();
    drop(held);
    target.stop();
    Ok((before, after, n))
}

// === options and machine ===

impl Opts {
    fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let num = |k: &str, d: f64| -> Result<f64, String> {
            var(k).map_or(Ok(d), |v| v.parse().map_err(|_| format!("{k}={v}: not a number")))
        };
        let scale = num("BENCH_SCALE", 1.0)?;
        if !(scale > 0.0 && scale <= 100.0) {
            return Err(format!("BENCH_SCALE={scale}: must be in (0, 100]"));
        }
        let bytes = match var("BENCH_BYTES") {
            Some(v) => parse_size(&v).ok_or(format!("BENCH_BYTES={v}: not a size like 4G or 512M"))?,
            None => ((512u64 << 20) as f64 * scale.min(8.0)) as u64,
        };
        let kinds = match var("BENCH_TARGETS") {
            None => Kind::ALL
                .into_iter()
                .filter(|k| *k != Kind::SniRouterB || var("BENCH_ROUTER_B").is_some())
                .collect(),
            Some(v) => {
                let mut kinds = vec![Kind::Direct];
                for name in v.split(',').map(str::trim) {
                    let kind = Kind::ALL
                        .into_iter()
                        .find(|k| k.name() == name)
                        .ok_or(format!("BENCH_TARGETS: unknown target {name}"))?;
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
                kinds
            }
        };
        let scenarios: Vec<String> =
            var("BENCH_SCENARIOS").map_or(Vec::new(), |v| v.split(',').map(|s| s.trim().to_string()).collect());
        for s in &scenarios {
            if !SCENARIOS.iter().any(|id| id.starts_with(s.as_str())) {
                return Err(format!(
                    "BENCH_SCENARIOS: unknown scenario {s} (known: {})",
                    SCENARIOS.join(", ")
                ));
            }
        }
        let target_dir =
            var("CARGO_TARGET_DIR").unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into());
        let cpus = online_cpus();
        let load_cpu = num("BENCH_LOAD_CPU", 0.0)? as usize;
        let proxy_cpu = num("BENCH_PROXY_CPU", if cpus > 1 { 1.0 } else { 0.0 })? as usize;
        Ok(Self {
            scale,
            rounds: (num("BENCH_ROUNDS", 3.0)? as usize).clamp(1, 50),
            bytes: bytes.max(1 << 20),
            idle_conns: (num("BENCH_IDLE_CONNS", 2000.0)? as usize).clamp(1, 100_000),
            routes: (num("BENCH_ROUTES", 10_000.0)? as usize).clamp(3, 1_000_000),
            kinds,
            scenarios,
            json: var("BENCH_JSON").map_or_else(|| format!("{target_dir}/bench-e2e.json").into(), Into::into),
            load_cpu,
            proxy_cpu,
        })
    }

    fn wants(&self, id: &str) -> bool {
        self.scenarios.is_empty() || self.scenarios.iter().any(|s| id.starts_with(s.as_str()))
    }
}

/// `4G`, `512M`, `1048576`.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.strip_suffix("IB").or_else(|| t.strip_suffix('B')).unwrap_or(&t);
    let (num, mul) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], 1u64 << 10),
        'M' => (&t[..t.len() - 1], 1 << 20),
        'G' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    Some((num.trim().parse::<f64>().ok()? * mul as f64) as u64)
}

fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What the run was measured on, read before the bench pins itself.
/// Pages on `cpu`'s free-page list (the per-CPU "pcp" cache of the Normal
/// zone, `count:` in /proc/zoneinfo). Pages a proxy forwards with `splice`
/// are allocated on the load CPU and freed on the proxy's; they wait in this
/// list before the load CPU can reuse them, so the longer it is, the colder
/// they come back (docs/benchmarks.md, "What the two throughput states
/// are"). The kernel sizes it by itself, and it changes from run to run.
fn free_page_list(cpu: usize) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/zoneinfo").ok()?;
    let zone = text.split("\nNode ").find(|z| z.contains(", zone   Normal"))?;
    let mut lines = zone.lines().skip_while(|l| l.trim() != format!("cpu: {cpu}"));
    lines.next()?;
    let count = lines.next()?.trim().strip_prefix("count:")?;
    count.trim().parse().ok()
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let commit = std::env::var("BENCH_COMMIT").ok().unwrap_or_else(|| {
        let git = |args: &[&str]| {
            Command::new("git")
                .args(["-C", env!("CARGO_MANIFEST_DIR")])
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        match git(&["rev-parse", "--short", "HEAD"]) {
            Some(head) => {
                let dirty = git(&["status", "--porcelain", "--", "src", "Cargo.toml"]).is_some_and(|s| !s.is_empty());
                if dirty {
                    format!("{head}+uncommitted changes in src/")
                } else {
                    head
                }
            }
            None => "unknown".into(),
        }
    });
    json!({
        "nproc": online_cpus(),
        "cpu_model": model,
        "kernel": kernel.trim(),
        "commit": commit,
        "loadavg_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "date_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    })
}

fn describe(meta: &serde_json::Value) -> String {
    let mut out = format!(
        "machine: {} CPUs, {}, kernel {}; commit {}\nload average at start: {}; at end: {}\n",
        meta["nproc"],
        meta["cpu_model"].as_str().unwrap_or(""),
        meta["kernel"].as_str().unwrap_or(""),
        meta["commit"].as_str().unwrap_or(""),
        meta["loadavg_start"].as_str().unwrap_or(""),
        meta["loadavg_end"].as_str().unwrap_or(""),
    );
    out.push_str(&format!(
        "settings: scale {}, {} rounds, {} bytes per throughput case, {} idle conns, {} routes; load CPU {}, proxy CPU {}\n",
        meta["scale"], meta["rounds"], meta["bytes"], meta["idle_conns"], meta["routes"], meta["load_cpu"], meta["proxy_cpu"]
    ));
    if let Some(size) = meta["peer_sockbuf"].as_str() {
        out.push_str(&format!(
            "peers' socket buffers fixed at {size} bytes (BENCH_PEER_SOCKBUF)\n"
        ));
    }
    if let Some(targets) = meta["targets"].as_object() {
        for (name, t) in targets {
            match t["status"].as_str() {
                Some("ok") => out.push_str(&format!(
                    "  {name}: {} ({} threads)\n",
                    t["version"].as_str().unwrap_or(""),
                    t["threads"]
                )),
                _ => out.push_str(&format!("  {name}: NOT STARTED: {}\n", t["why"].as_str().unwrap_or(""))),
            }
        }
    }
    out
}

/// Move this process (only its main thread exists yet) to `cpu`.
fn pin_self(cpu: usize) {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("e2e: WARNING: could not pin the load generator to CPU {cpu} (is taskset installed?)");
    }
}

/// Raise the soft open-file limit to the hard one (children inherit it):
/// idle connections need two descriptors each here and two in the proxy.
fn raise_nofile() {
    let pid = std::process::id().to_string();
    let hard = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(4).map(str::to_string)
    });
    if let Some(hard) = hard {
        let _ = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
            .status();
    }
}
