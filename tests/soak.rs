//! Soak (issue 8, part 5): a bounded run of mixed traffic through the router
//! binary, every byte checked, then a final accounting.
//!
//! What it shows: under concurrent mixed load the router forwards every byte
//! exactly (echoes compared byte for byte, long transfers by SHA-256 on both
//! ends), refuses what README says it refuses in the way it says (the alert,
//! error line or silent close of its refusal table), and its metrics agree
//! with the clients' own counts: connections accepted = routed + rejected,
//! rejections per reason, bytes each way per route (the replayed ClientHello
//! included), and every forwarded connection ended `closed`. Once traffic
//! stops no connection is left open, and the router's sockets and other
//! descriptors (±1) and resident memory (within `RSS_SLACK_KIB`) are back at
//! the baseline taken after a warm-up of the same traffic. Pipes are the
//! exception: the splice pipe pools keep what they once held, up to 16 pipes
//! per worker thread, so they are held to that bound (`SPLICE_POOL_PER_THREAD`).
//!
//! The traffic, all on loopback, runs in concurrent lanes, each bounded in
//! time and in count:
//! - short connections (synthetic hello in 1 to 3 records, sometimes in
//!   pieces, a small payload, exact echo, close) on an exact route, a wildcard
//!   route with odd case and a trailing dot, the PostgreSQL SSLRequest path on
//!   a second port, and real TLS (rustls) to a TLS backend;
//! - long transfers, 4 to 8 MiB each way (4 to 16 MiB in the full soak),
//!   sometimes one way only (half-close), raw and over the SSLRequest path,
//!   plus real TLS echoes of 2 to 4 MiB; pseudo-random data, SHA-256 compared
//!   on both ends;
//! - idle connections held open (4 s; a tenth of the run, 5 to 60 s, in the
//!   full soak), then a ping that must still echo;
//! - refusals: unknown SNI (raw, real TLS, and a name routed only on the other
//!   port), no SNI, garbage, plaintext HTTP, a malformed and an oversized
//!   hello, plaintext PostgreSQL and Redis, a route whose backend refuses
//!   connections, clients that leave before a hello, and hellos that never
//!   complete within the router's hello timeout (`--hello-timeout 2s`).
//!
//! Run: `cargo test --test soak` is a 15 s smoke run. The full soak sets its
//! length in seconds (capped at 600) and shows the summary:
//!
//! ```sh
//! SNI_ROUTER_SOAK_SECS=600 cargo test --test soak -- --nocapture
//! ```
//!
//! The router's per-connection access log is filtered to warnings
//! (`RUST_LOG=info,sni_router::access=warn`): the harness keeps every log
//! line in memory, which for a long soak would be hundreds of megabytes.
//! Refusals for the unreachable backend still log (at `warn`), and the test
//! asserts that they are the only warnings.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::procfs::{usage, Usage};
use common::*;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::digest::{self, SHA256};
use rustls::pki_types::ServerName;
use sni_router::pki::{self, Ca};
use sni_router::sniff::postgres;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

/// Length of the mixed traffic when `SNI_ROUTER_SOAK_SECS` is not set.
const SMOKE: Duration = Duration::from_secs(15);
/// Longest soak.
const MAX_SOAK: Duration = Duration::from_secs(600);
/// The same mix before the baseline is taken, so the router's pools (pipes
/// for splice, allocator arenas) are already at their working size.
const WARM_UP: Duration = Duration::from_secs(3);
/// The router's `--hello-timeout`: short, so stalled hellos fit in the run.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// Concurrent lanes of short connections.
const SHORT_LANES: usize = 3;
/// Concurrent lanes of long transfers.
const TRANSFER_LANES: usize = 2;
/// Connections held idle at once.
const IDLE_GROUP: usize = 24;
/// Stalled hellos at once.
const STALLED_GROUP: usize = 3;
/// Bound on operations per lane, whatever the clock says.
const MAX_OPS_PER_LANE: u64 = 1_000_000;

/// Time limit of a short connection or a refusal (a busy 2-core machine
/// running debug builds can stall for seconds).
const SHORT_LIMIT: Duration = Duration::from_secs(30);
/// Time limit of a long transfer.
const TRANSFER_LIMIT: Duration = Duration::from_secs(180);
/// Time a backend connection may stay open at all.
const BACKEND_LIMIT: Duration = Duration::from_secs(900);

/// Descriptors other than pipes the router may hold above or below its
/// baseline at the end (a config-file check that happens to be open when
/// /proc is read).
const FD_SLACK: usize = 1;
/// Pipes each router worker thread keeps for `splice(2)` once they are free
/// (`POOL` in src/forward/splice.rs). The pools never shrink, and a pipe
/// taken on one worker is often given back to another's pool, so the count
/// creeps up with running time even at constant load toward this bound
/// (with a bound of 64: 18 pipe descriptors after warm-up, 90 after 120 s
/// here; the bound is 16 since). It says how long the soak ran, not whether
/// something leaked, so pipes are held to the bound, not to the baseline.
const SPLICE_POOL_PER_THREAD: usize = 16;
/// Resident memory the router may hold above its baseline at the end.
///
/// The baseline is taken after a warm-up of the same mix, so the router's
/// pools and glibc's malloc arenas have already grown to what this
/// concurrency needs; what the soak can add is where its peaks leave
/// fragmented arena memory, since glibc keeps freed heap for reuse rather
/// than returning it (tests/hostile_clients.rs measured about 8 KiB kept per
/// concurrent connection). This mix holds about 35 client connections at
/// once, 70 router sockets with their backends: under 1 MiB by that
/// measure, and splice(2) keeps the bulk data out of the heap altogether.
/// Measured on 2 cores: +0.3 to +0.5 MiB over an 18 MiB baseline, after the
/// smoke run and after 120 s alike. 8 MiB leaves room for machines with more
/// arenas; a leak shows above it from about 100 bytes per connection in a
/// 600 s soak (some 85 000 connections), 500 bytes in a 120 s one and 4 KiB
/// in the smoke run (about 2 000).
const RSS_SLACK_KIB: u64 = 8 * 1024;

/// Gateway ports: TLS routes, and the PostgreSQL port (SSLRequest path).
const TLS_PORT: u16 = 443;
const PG_PORT: u16 = 5432;

/// Route host names.
const ECHO_SNI: &str = "echo.example.com";
const WILD_FQDN: &str = "*.apps.example.com";
const TLS_SNI: &str = "tls.example.com";
const DOWN_SNI: &str = "down.example.com";
const DB_SNI: &str = "db.example.com";
/// Route names as `common::route` derives them: `<first label>-<port>`.
const ECHO_ROUTE: &str = "echo-443";
const WILD_ROUTE: &str = "wild-443";
const TLS_ROUTE: &str = "tls-443";
const DOWN_ROUTE: &str = "down-443";
const DB_ROUTE: &str = "db-5432";

const ALERT_UNRECOGNIZED_NAME: [u8; 7] = [0x15, 3, 3, 0, 2, 2, 112];
const ALERT_DECODE_ERROR: [u8; 7] = [0x15, 3, 3, 0, 2, 2, 50];
const ALERT_INTERNAL_ERROR: [u8; 7] = [0x15, 3, 3, 0, 2, 2, 80];
/// The start of the line a plaintext Redis client gets (README).
const RESP_REFUSAL: &[u8] = b"-ERR this gateway accepts only TLS";

/// What a raw client asks the soak backend for, after its ClientHello:
/// kind (`E` echo, `T` transfer), upload length, download length, seed.
const COMMAND_LEN: usize = 25;
/// Salts so the two directions of a transfer carry different data.
const UP_SALT: u64 = 0x7570_7570_7570_7570;
const DOWN_SALT: u64 = 0x646f_776e_646f_776e;
/// Write size of the pseudo-random streams: odd, so writes do not line up
/// with the router's 64 KiB chunks.
const CHUNK: usize = 60_013;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_soak() {
    let wall = Instant::now();
    let (length, full) = soak_length();
    let idle = if full {
        (length / 10).clamp(Duration::from_secs(5), Duration::from_secs(60))
    } else {
        Duration::from_secs(4)
    };

    // Backends: a raw echo/transfer server, a TLS echo server, and an
    // address that refuses connections (bound, never listening).
    let ca = Ca::new().unwrap();
    let raw = SoakBackend::start().await;
    let tls = TlsBackend::start(&ca, "tls", &[TLS_SNI], None).await;
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let down = refusing.local_addr().unwrap().to_string();
    let router = start_router(&raw.addr.to_string(), &tls.endpoint, &down);
    let pid = router.pid();
    // Before any traffic: the pipes here are stdio, not the splice pools.
    let fresh = usage(pid);

    let soak = Arc::new(Soak {
        tls: pki::client_config(&ca, None, &[]).unwrap(),
        addrs: router.addrs.clone(),
        tally: Mutex::default(),
        seq: AtomicU64::new(1),
        open: AtomicU64::new(0),
        peak_open: AtomicU64::new(0),
        full,
    });

    // Warm-up: the same mix, briefly; its traffic is not in the accounting.
    run_mix(&soak, WARM_UP, Duration::from_secs(1)).await;
    let warm = soak.take_tally();
    assert_eq!(
        warm.failures,
        0,
        "warm-up failures: {:#?}\nbackend errors: {:#?}",
        warm.first_failures,
        raw.errors()
    );
    wait_idle(&router).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = usage(pid);
    let before = Scrape::take(&router).await;
    soak.peak_open.store(0, Ordering::SeqCst);

    // The soak, with the router's descriptors and memory sampled throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = tokio::spawn(monitor(pid, length, stop.clone()));
    let started = Instant::now();
    tokio::time::timeout(length + TRANSFER_LIMIT + idle, run_mix(&soak, length, idle))
        .await
        .expect("every lane ends within its bounds");
    let ran = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (peak, trend) = monitor.await.unwrap();
    let tally = soak.take_tally();

    wait_idle(&router).await;
    let after = Scrape::take(&router).await;
    let end = settle(pid, base).await;
    let backend_errors = raw.errors();
    let summary = Summary {
        length,
        full,
        ran,
        wall: wall.elapsed(),
        peak_open: soak.peak_open.load(Ordering::SeqCst),
        base,
        peak,
        end,
        trend,
    };
    summary.print(&tally);

    assert_eq!(
        tally.failures, 0,
        "client operations failed; the first ones: {:#?}",
        tally.first_failures
    );
    assert!(backend_errors.is_empty(), "backend errors: {backend_errors:#?}");
    let mismatches = accounting(&tally, &before, &after);
    assert!(
        mismatches.is_empty(),
        "the router's metrics disagree with the clients:\n{}",
        mismatches.join("\n")
    );
    assert!(
        end.non_pipes().abs_diff(base.non_pipes()) <= FD_SLACK,
        "router holds {} descriptors other than pipes after the soak, {} after warm-up ({end:?} vs {base:?})",
        end.non_pipes(),
        base.non_pipes()
    );
    assert!(
        end.pipes <= fresh.pipes + pipe_pool_bound(),
        "router holds {} pipe descriptors after the soak, more than stdio ({}) and its splice pools ({}) account for",
        end.pipes,
        fresh.pipes,
        pipe_pool_bound()
    );
    assert!(
        end.rss_kib <= base.rss_kib + RSS_SLACK_KIB,
        "router VmRSS {} KiB after the soak, {} KiB after warm-up (slack {RSS_SLACK_KIB} KiB)",
        end.rss_kib,
        base.rss_kib
    );
    let unexpected = unexpected_logs(&router.logs());
    assert!(
        unexpected.is_empty(),
        "router logged {} unexpected lines, e.g.:\n{}",
        unexpected.len(),
        unexpected.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    // Still serving.
    soak.run(
        "short raw",
        SHORT_LIMIT,
        soak.echo(TLS_PORT, ECHO_SNI.into(), ECHO_ROUTE, 7, None),
    )
    .await;
    assert_eq!(
        soak.take_tally().failures,
        0,
        "the router stopped serving after the soak"
    );
}

/// (length of the mixed traffic, whether this is the full soak).
fn soak_length() -> (Duration, bool) {
    match std::env::var("SNI_ROUTER_SOAK_SECS") {
        Err(_) => (SMOKE, false),
        Ok(v) => {
            let secs: u64 = v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("SNI_ROUTER_SOAK_SECS={v:?}: want a number of seconds"));
            (Duration::from_secs(secs.max(1)).min(MAX_SOAK), true)
        }
    }
}

/// The router on two ports: 443 with an exact, a wildcard, a real-TLS and a
/// dead route; 5432 with one route reached by the SSLRequest path.
fn start_router(raw: &str, tls: &str, down: &str) -> RouterProcess {
    let yaml = values(
        &[
            route(ECHO_SNI, TLS_PORT, "soak"),
            route(WILD_FQDN, TLS_PORT, "soak"),
            route(TLS_SNI, TLS_PORT, "tls"),
            route(DOWN_SNI, TLS_PORT, "down"),
            route(DB_SNI, PG_PORT, "soak"),
        ]
        .concat(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "values.yaml", &yaml);
    let mut args: Vec<String> = vec!["run".into(), "--config".into(), config.display().to_string()];
    for port in [TLS_PORT, PG_PORT] {
        args.extend(["--listen".into(), format!("{port}=127.0.0.1:0")]);
    }
    args.extend(backend_flag("soak", raw));
    args.extend(backend_flag("tls", tls));
    args.extend(backend_flag("down", down));
    args.extend([
        "--hello-timeout".into(),
        format!("{}s", HELLO_TIMEOUT.as_secs()),
        "--connect-timeout".into(),
        "2s".into(),
    ]);
    RouterProcess::spawn(&args, dir, 2, &[("RUST_LOG", "info,sni_router::access=warn")])
}

// === the mix ===

/// Every lane at once until `length` has passed; each lane finishes the
/// operation it is in.
async fn run_mix(soak: &Arc<Soak>, length: Duration, idle: Duration) {
    let deadline = Instant::now() + length;
    let mut lanes = JoinSet::new();
    for lane in 0..SHORT_LANES {
        lanes.spawn(short_lane(soak.clone(), deadline, lane as u64));
    }
    for lane in 0..TRANSFER_LANES {
        lanes.spawn(transfer_lane(soak.clone(), deadline, lane as u64));
    }
    lanes.spawn(idle_lane(soak.clone(), deadline, idle));
    lanes.spawn(refusal_lane(soak.clone(), deadline));
    lanes.spawn(stalled_lane(soak.clone(), deadline));
    while let Some(lane) = lanes.join_next().await {
        lane.expect("a lane panicked");
    }
}

/// Short connections: four in ten on the exact route, one on the wildcard,
/// one with odd case and a trailing dot, two over SSLRequest, two real TLS.
async fn short_lane(soak: Arc<Soak>, deadline: Instant, lane: u64) {
    let mut i = lane;
    while Instant::now() < deadline && i < MAX_OPS_PER_LANE {
        let seed = soak.seed();
        let s = &soak;
        match i % 10 {
            0..=3 => {
                s.run(
                    "short raw",
                    SHORT_LIMIT,
                    s.echo(TLS_PORT, ECHO_SNI.into(), ECHO_ROUTE, seed, None),
                )
                .await
            }
            4 => {
                let sni = format!("s{}.APPS.example.com", seed % 1000);
                s.run(
                    "short wildcard",
                    SHORT_LIMIT,
                    s.echo(TLS_PORT, sni, WILD_ROUTE, seed, None),
                )
                .await
            }
            5 => {
                let sni = "Echo.Example.COM.".to_string();
                s.run(
                    "short case+dot",
                    SHORT_LIMIT,
                    s.echo(TLS_PORT, sni, ECHO_ROUTE, seed, None),
                )
                .await
            }
            6 | 7 => {
                s.run(
                    "short pg",
                    SHORT_LIMIT,
                    s.echo(PG_PORT, DB_SNI.into(), DB_ROUTE, seed, None),
                )
                .await
            }
            _ => s.run("short tls", SHORT_LIMIT, s.tls_echo(seed, None)).await,
        }
        i += SHORT_LANES as u64;
    }
}

/// Long transfers: raw on 443, raw over SSLRequest on 5432, real TLS; the
/// raw ones both ways, upload only or download only.
async fn transfer_lane(soak: Arc<Soak>, deadline: Instant, lane: u64) {
    let max_mib = if soak.full { 16 } else { 8 };
    let mut i = lane;
    while Instant::now() < deadline && i < MAX_OPS_PER_LANE {
        let seed = soak.seed();
        let mut rng = Prng::new(seed);
        let mut size = |lo: u64, hi: u64| (lo << 20) + rng.below((hi - lo) << 20);
        let (up, down) = match (i / 4) % 4 {
            2 => (size(4, max_mib), 0),
            3 => (0, size(4, max_mib)),
            _ => (size(4, max_mib), size(4, max_mib)),
        };
        let tls_len = size(2, 4);
        let s = &soak;
        match i % 4 {
            0 | 1 => {
                s.run("transfer raw", TRANSFER_LIMIT, s.transfer(TLS_PORT, up, down, seed))
                    .await
            }
            2 => {
                s.run("transfer pg", TRANSFER_LIMIT, s.transfer(PG_PORT, up, down, seed))
                    .await
            }
            _ => {
                s.run("transfer tls", TRANSFER_LIMIT, s.tls_transfer(tls_len, seed))
                    .await
            }
        }
        i += TRANSFER_LANES as u64;
    }
}

/// Groups of connections that ping, stay idle for `idle`, and ping again.
async fn idle_lane(soak: Arc<Soak>, deadline: Instant, idle: Duration) {
    let limit = idle + SHORT_LIMIT;
    let mut rounds = 0;
    while Instant::now() + idle <= deadline && rounds < MAX_OPS_PER_LANE {
        let mut group = JoinSet::new();
        for k in 0..IDLE_GROUP {
            let s = soak.clone();
            let seed = s.seed();
            group.spawn(async move {
                match k % 3 {
                    0 => {
                        let op = s.echo(TLS_PORT, ECHO_SNI.into(), ECHO_ROUTE, seed, Some(idle));
                        s.run("idle raw", limit, op).await
                    }
                    1 => {
                        let op = s.echo(PG_PORT, DB_SNI.into(), DB_ROUTE, seed, Some(idle));
                        s.run("idle pg", limit, op).await
                    }
                    _ => s.run("idle tls", limit, s.tls_echo(seed, Some(idle))).await,
                }
            });
        }
        group.join_all().await;
        rounds += 1;
    }
}

/// Every refusal in turn, a few milliseconds apart.
async fn refusal_lane(soak: Arc<Soak>, deadline: Instant) {
    let unrecognized_name = Answer::Exact(&ALERT_UNRECOGNIZED_NAME);
    let decode_error = Answer::Exact(&ALERT_DECODE_ERROR);
    let internal_error = Answer::Exact(&ALERT_INTERNAL_ERROR);
    let silence = Answer::Exact(&[]);
    let pg_refusal = postgres::plaintext_refusal();
    let s = &soak;
    // A raw client: (kind, port, SSLRequest first, bytes, reason, answer).
    let raw = move |kind, port, negotiate, bytes, reason, answer| {
        s.run(kind, SHORT_LIMIT, s.refused(port, negotiate, bytes, reason, answer))
    };
    // A real TLS client: (kind, SNI, rustls's alert name, reason).
    let tls = move |kind, sni, alert, reason| s.run(kind, SHORT_LIMIT, s.tls_refused(sni, alert, reason));
    let mut i = 0u64;
    while Instant::now() < deadline && i < MAX_OPS_PER_LANE {
        let seed = soak.seed();
        let mut rng = Prng::new(seed);
        match i % 15 {
            0 => {
                let hello = synthetic_hello("nope.example.com", rng.below(600) as usize);
                raw(
                    "refuse unknown SNI",
                    TLS_PORT,
                    false,
                    hello,
                    "unknown_sni",
                    unrecognized_name,
                )
                .await
            }
            1 => {
                tls(
                    "refuse unknown SNI (tls)",
                    "nope.example.com",
                    "UnrecognisedName",
                    "unknown_sni",
                )
                .await
            }
            2 => {
                // Routed on 443 only: per-port routing refuses it on 5432.
                let hello = synthetic_hello(ECHO_SNI, 0);
                raw(
                    "refuse other port's SNI (pg)",
                    PG_PORT,
                    true,
                    hello,
                    "unknown_sni",
                    unrecognized_name,
                )
                .await
            }
            // rustls sends no SNI to an IP address.
            3 => tls("refuse no SNI (tls)", "127.0.0.1", "UnrecognisedName", "no_sni").await,
            4 => {
                // '@'..'O' first: no protocol the router knows starts so.
                let mut bytes = rng.some_bytes(512);
                bytes[0] = 0x40 | (bytes[0] & 0x0f);
                raw("refuse garbage", TLS_PORT, false, bytes, "not_tls", silence).await
            }
            5 => {
                let request = format!("GET /{seed} HTTP/1.1\r\nHost: {ECHO_SNI}\r\n\r\n").into_bytes();
                raw("refuse plaintext HTTP", TLS_PORT, false, request, "not_tls", silence).await
            }
            6 => {
                let mut hello = synthetic_hello(ECHO_SNI, 0);
                hello[5] = 2; // ServerHello, not ClientHello
                raw(
                    "refuse malformed hello",
                    TLS_PORT,
                    false,
                    hello,
                    "malformed_hello",
                    decode_error,
                )
                .await
            }
            7 => {
                // A hello claiming a 70 000-byte body: refused from the header.
                let mut hello = synthetic_hello(ECHO_SNI, 0);
                hello[6..9].copy_from_slice(&70_000u32.to_be_bytes()[1..]);
                raw(
                    "refuse oversized hello",
                    TLS_PORT,
                    false,
                    hello,
                    "hello_too_large",
                    decode_error,
                )
                .await
            }
            8 => {
                let startup = startup_message();
                let refusal = Answer::Exact(&pg_refusal);
                raw("refuse plaintext pg", PG_PORT, false, startup, "pg_plaintext", refusal).await
            }
            9 => {
                let ping = b"*1\r\n$4\r\nPING\r\n".to_vec();
                let refusal = Answer::Line(RESP_REFUSAL);
                raw(
                    "refuse plaintext redis",
                    TLS_PORT,
                    false,
                    ping,
                    "redis_plaintext",
                    refusal,
                )
                .await
            }
            10 => {
                let hello = synthetic_hello(DOWN_SNI, 0);
                raw(
                    "refuse backend down",
                    TLS_PORT,
                    false,
                    hello,
                    "upstream_unreachable",
                    internal_error,
                )
                .await
            }
            11 => {
                tls(
                    "refuse backend down (tls)",
                    DOWN_SNI,
                    "InternalError",
                    "upstream_unreachable",
                )
                .await
            }
            12 => s.run("leave before hello", SHORT_LIMIT, s.leave(false)).await,
            13 => s.run("leave mid hello", SHORT_LIMIT, s.leave(true)).await,
            _ => {
                let hello = synthetic_hello("nope.example.com", 0);
                raw(
                    "refuse unknown SNI (pg)",
                    PG_PORT,
                    true,
                    hello,
                    "unknown_sni",
                    unrecognized_name,
                )
                .await
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        i += 1;
    }
}

/// Hellos that never complete: cut at the hello timeout, on both ports.
async fn stalled_lane(soak: Arc<Soak>, deadline: Instant) {
    let limit = HELLO_TIMEOUT + SHORT_LIMIT;
    let mut rounds = 0;
    while Instant::now() + HELLO_TIMEOUT < deadline && rounds < MAX_OPS_PER_LANE {
        let mut group = JoinSet::new();
        for k in 0..STALLED_GROUP {
            let s = soak.clone();
            let port = if k == 0 { PG_PORT } else { TLS_PORT };
            group.spawn(async move { s.run("stalled hello", limit, s.stalled(port)).await });
        }
        group.join_all().await;
        rounds += 1;
    }
}

/// A plaintext PostgreSQL StartupMessage (protocol 3.0).
fn startup_message() -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0app\0database\0nautobot\0\0");
    let mut message = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    message
}

// === the clients ===

/// The clients' shared state: where the router is, and their own counts.
struct Soak {
    tls: Arc<rustls::ClientConfig>,
    addrs: BTreeMap<u16, SocketAddr>,
    tally: Mutex<Tally>,
    seq: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
    full: bool,
}

/// What the clients counted.
#[derive(Debug, Default)]
struct Tally {
    /// Operations by kind (one connection each).
    kinds: BTreeMap<&'static str, KindStats>,
    /// Connections per gateway port.
    accepted: BTreeMap<u16, u64>,
    /// Routed connections per (port, route).
    routed: BTreeMap<(u16, &'static str), u64>,
    /// Refused connections per (port, reason).
    rejected: BTreeMap<(u16, &'static str), u64>,
    /// Bytes the clients sent on routed connections (hello included).
    up: BTreeMap<(u16, &'static str), u64>,
    /// Bytes the clients received on routed connections.
    down: BTreeMap<(u16, &'static str), u64>,
    /// Application bytes compared, byte for byte or by SHA-256.
    verified: u64,
    failures: u64,
    first_failures: Vec<String>,
}

/// Operations of one kind: how many, and how long they took.
#[derive(Debug, Default)]
struct KindStats {
    count: u64,
    total: Duration,
    max: Duration,
}

/// How one client connection ended, as the client saw it.
struct Done {
    port: u16,
    fate: Fate,
    verified: u64,
}

enum Fate {
    Routed { route: &'static str, up: u64, down: u64 },
    Rejected(&'static str),
}

/// What a refused raw client must read before the close.
#[derive(Clone, Copy)]
enum Answer<'a> {
    /// Exactly these bytes (none: a silent close).
    Exact(&'a [u8]),
    /// One line starting with these bytes.
    Line(&'a [u8]),
}

impl Soak {
    /// A fresh seed, so every connection carries different data.
    fn seed(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn take_tally(&self) -> Tally {
        std::mem::take(&mut *self.tally.lock().unwrap())
    }

    /// Run one client operation under `limit` and count its result.
    async fn run(&self, kind: &'static str, limit: Duration, op: impl Future<Output = Result<Done, String>>) {
        let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_open.fetch_max(open, Ordering::SeqCst);
        let started = Instant::now();
        let result = tokio::time::timeout(limit, op).await;
        let took = started.elapsed();
        self.open.fetch_sub(1, Ordering::SeqCst);
        let mut tally = self.tally.lock().unwrap();
        match result {
            Ok(Ok(done)) => tally.record(kind, took, done),
            Ok(Err(e)) => tally.fail(kind, e),
            Err(_) => tally.fail(kind, format!("no result within {limit:?}")),
        }
    }

    /// A TCP connection to gateway port `port`; with `negotiate`, after
    /// PostgreSQL's SSLRequest and the router's `S` (bytes the router answers
    /// itself and does not count as forwarded).
    async fn connect(&self, port: u16, negotiate: bool) -> Result<TcpStream, String> {
        let mut stream = TcpStream::connect(self.addrs[&port])
            .await
            .map_err(|e| format!("connect to port {port}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        if negotiate {
            stream
                .write_all(&postgres::SSL_REQUEST)
                .await
                .map_err(|e| format!("sending SSLRequest: {e}"))?;
            let mut answer = [0u8; 1];
            stream
                .read_exact(&mut answer)
                .await
                .map_err(|e| format!("reading the SSLRequest answer: {e}"))?;
            if answer[0] != postgres::ACCEPT_TLS {
                return Err(format!("SSLRequest answered {answer:?}, not S"));
            }
        }
        Ok(stream)
    }

    /// A real TLS handshake through the router, counting the bytes on the wire.
    async fn tls_client(
        &self,
        sni: &str,
        meter: &Arc<Meter>,
    ) -> io::Result<tokio_rustls::client::TlsStream<Metered<TcpStream>>> {
        let stream = TcpStream::connect(self.addrs[&TLS_PORT]).await?;
        stream.set_nodelay(true)?;
        let name = ServerName::try_from(sni.to_string()).map_err(|e| io::Error::other(e.to_string()))?;
        TlsConnector::from(self.tls.clone())
            .connect(name, Metered::new(stream, meter))
            .await
    }

    /// Hello, echo command and a payload; the backend echoes all of it back.
    /// With `idle`: hold the connection that long, then ping once more.
    async fn echo(
        &self,
        port: u16,
        sni: String,
        route: &'static str,
        seed: u64,
        idle: Option<Duration>,
    ) -> Result<Done, String> {
        let mut rng = Prng::new(seed);
        let stream = self.connect(port, port == PG_PORT).await?;
        let meter = Arc::new(Meter::default());
        let mut stream = Metered::new(stream, &meter);
        let records = 1 + rng.below(3) as usize;
        let hello = rerecord(&synthetic_hello(&sni, rng.below(1800) as usize), records);
        let mut rest = command(b'E', 0, 0, seed).to_vec();
        rest.extend(rng.some_bytes(4096));
        let io = |what: &'static str| move |e: io::Error| format!("{what}: {e}");
        if rng.below(4) == 0 {
            // The hello in three segments: the router reassembles it.
            for piece in hello.chunks(hello.len().div_ceil(3)) {
                stream.write_all(piece).await.map_err(io("writing the hello"))?;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        } else {
            stream.write_all(&hello).await.map_err(io("writing the hello"))?;
        }
        stream.write_all(&rest).await.map_err(io("writing the payload"))?;
        let sent = [hello, rest].concat();
        let mut verified = sent.len() as u64;
        match idle {
            None => {
                stream.shutdown().await.map_err(io("half-close"))?;
                let mut echoed = Vec::with_capacity(sent.len());
                stream.read_to_end(&mut echoed).await.map_err(io("reading the echo"))?;
                if echoed != sent {
                    return Err(format!(
                        "echo differs: sent {} bytes, got {} (first difference at {:?})",
                        sent.len(),
                        echoed.len(),
                        sent.iter().zip(&echoed).position(|(a, b)| a != b)
                    ));
                }
            }
            Some(idle) => {
                expect_exact(&mut stream, &sent).await?;
                tokio::time::sleep(idle).await;
                let ping = rng.bytes(64);
                stream.write_all(&ping).await.map_err(io("ping after idle"))?;
                expect_exact(&mut stream, &ping).await?;
                stream.shutdown().await.map_err(io("half-close"))?;
                expect_eof(&mut stream).await?;
                verified += ping.len() as u64;
            }
        }
        Ok(Done::routed(port, route, &meter, verified))
    }

    /// A long transfer both ways at once: the client uploads `up` bytes and
    /// the backend sends `down`; then the backend reports SHA-256 of the
    /// hello and command it received, of the upload it received and of what
    /// it sent, each compared with the client's own.
    async fn transfer(&self, port: u16, up: u64, down: u64, seed: u64) -> Result<Done, String> {
        let (sni, route) = if port == PG_PORT {
            (DB_SNI, DB_ROUTE)
        } else {
            (ECHO_SNI, ECHO_ROUTE)
        };
        let stream = self.connect(port, port == PG_PORT).await?;
        let meter = Arc::new(Meter::default());
        let (rd, wr) = stream.into_split();
        let (mut rd, mut wr) = (Metered::new(rd, &meter), Metered::new(wr, &meter));
        let mut prefix = synthetic_hello(sni, (seed % 1500) as usize);
        prefix.extend(command(b'T', up, down, seed));
        let prefix_sha = sha256(&prefix);
        let writer = async {
            wr.write_all(&prefix).await?;
            let sha = send_random(&mut wr, seed ^ UP_SALT, up).await?;
            wr.shutdown().await?;
            io::Result::Ok(sha)
        };
        let reader = async {
            let sha = recv_hashed(&mut rd, down).await?;
            let mut trailer = [0u8; 96];
            rd.read_exact(&mut trailer).await?;
            io::Result::Ok((sha, trailer))
        };
        let (up_sha, (down_sha, trailer)) = tokio::try_join!(writer, reader)
            .map_err(|e| format!("transfer of {up} up / {down} down on port {port}: {e}"))?;
        expect_eof(&mut rd).await?;
        for (what, ours, theirs) in [
            ("hello and command", &prefix_sha, &trailer[..32]),
            ("upload", &up_sha, &trailer[32..64]),
            ("download", &down_sha, &trailer[64..]),
        ] {
            if ours[..] != *theirs {
                return Err(format!(
                    "SHA-256 of the {what} differs between client and backend ({up} up / {down} down, port {port})"
                ));
            }
        }
        Ok(Done::routed(port, route, &meter, prefix.len() as u64 + up + down))
    }

    /// Real TLS: greeting, a payload echoed exactly; with `idle`, a ping after it.
    async fn tls_echo(&self, seed: u64, idle: Option<Duration>) -> Result<Done, String> {
        let mut rng = Prng::new(seed);
        let meter = Arc::new(Meter::default());
        let io = |what: &'static str| move |e: io::Error| format!("tls {what}: {e}");
        let mut tls = self.tls_client(TLS_SNI, &meter).await.map_err(io("handshake"))?;
        expect_greeting(&mut tls).await?;
        let payload = rng.some_bytes(16 * 1024);
        tls.write_all(&payload).await.map_err(io("write"))?;
        expect_exact(&mut tls, &payload).await?;
        let mut verified = payload.len() as u64;
        if let Some(idle) = idle {
            tokio::time::sleep(idle).await;
            let ping = rng.bytes(64);
            tls.write_all(&ping).await.map_err(io("ping after idle"))?;
            expect_exact(&mut tls, &ping).await?;
            verified += ping.len() as u64;
        }
        // close_notify and FIN; the backend answers with its own.
        tls.shutdown().await.map_err(io("shutdown"))?;
        expect_eof(&mut tls).await?;
        Ok(Done::routed(TLS_PORT, TLS_ROUTE, &meter, verified))
    }

    /// Real TLS: `len` pseudo-random bytes through the TLS echo backend while
    /// reading them back, SHA-256 compared.
    async fn tls_transfer(&self, len: u64, seed: u64) -> Result<Done, String> {
        let meter = Arc::new(Meter::default());
        let mut tls = self
            .tls_client(TLS_SNI, &meter)
            .await
            .map_err(|e| format!("tls handshake: {e}"))?;
        expect_greeting(&mut tls).await?;
        let (mut rd, mut wr) = tokio::io::split(tls);
        let writer = async {
            let sha = send_random(&mut wr, seed, len).await?;
            wr.shutdown().await?;
            io::Result::Ok(sha)
        };
        let reader = recv_hashed(&mut rd, len);
        let (sent, echoed) = tokio::try_join!(writer, reader).map_err(|e| format!("tls transfer of {len}: {e}"))?;
        expect_eof(&mut rd).await?;
        if sent != echoed {
            return Err(format!("tls transfer of {len}: SHA-256 of the echo differs"));
        }
        Ok(Done::routed(TLS_PORT, TLS_ROUTE, &meter, 2 * len))
    }

    /// Send `bytes` (after an SSLRequest with `negotiate`), read until the
    /// router closes, check the answer.
    async fn refused(
        &self,
        port: u16,
        negotiate: bool,
        bytes: Vec<u8>,
        reason: &'static str,
        answer: Answer<'_>,
    ) -> Result<Done, String> {
        let mut stream = self.connect(port, negotiate).await?;
        stream
            .write_all(&bytes)
            .await
            .map_err(|e| format!("{reason}: sending: {e}"))?;
        let mut got = Vec::new();
        stream
            .read_to_end(&mut got)
            .await
            .map_err(|e| format!("{reason}: reading the refusal: {e}"))?;
        let ok = match answer {
            Answer::Exact(want) => got == want,
            Answer::Line(start) => got.starts_with(start) && got.ends_with(b"\r\n") && got.len() < 256,
        };
        if !ok {
            return Err(format!(
                "{reason} on port {port}: answered {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
        Ok(Done::rejected(port, reason))
    }

    /// A real TLS client refused with alert `alert` (rustls's name).
    async fn tls_refused(&self, sni: &str, alert: &str, reason: &'static str) -> Result<Done, String> {
        match self.tls_client(sni, &Arc::default()).await {
            Ok(_) => Err(format!("{reason}: the TLS handshake for {sni:?} succeeded")),
            Err(e) if alert_of(&e).as_deref() == Some(alert) => Ok(Done::rejected(TLS_PORT, reason)),
            Err(e) => Err(format!("{reason}: {sni:?} failed with {e}, want alert {alert}")),
        }
    }

    /// Connect and leave: at once, or after half a hello and a half-close.
    async fn leave(&self, mid_hello: bool) -> Result<Done, String> {
        let mut stream = self.connect(TLS_PORT, false).await?;
        if mid_hello {
            let hello = synthetic_hello(ECHO_SNI, 0);
            let io = |e: io::Error| format!("leave mid hello: {e}");
            stream.write_all(&hello[..hello.len() / 2]).await.map_err(io)?;
            stream.shutdown().await.map_err(io)?;
            expect_eof(&mut stream).await?;
        }
        Ok(Done::rejected(TLS_PORT, "client_closed"))
    }

    /// Half a hello, then nothing: the router must close, silently, at its
    /// hello timeout (which runs from accept, negotiation included).
    async fn stalled(&self, port: u16) -> Result<Done, String> {
        let started = Instant::now();
        let mut stream = self.connect(port, port == PG_PORT).await?;
        let hello = synthetic_hello(if port == PG_PORT { DB_SNI } else { ECHO_SNI }, 0);
        stream
            .write_all(&hello[..hello.len() / 2])
            .await
            .map_err(|e| format!("stalled hello: {e}"))?;
        expect_eof(&mut stream).await?;
        let waited = started.elapsed();
        // The router's timer starts after our connect started: never earlier
        // than the timeout (less a timer tick), late only on a stalled machine.
        if waited + Duration::from_millis(50) < HELLO_TIMEOUT || waited > HELLO_TIMEOUT + Duration::from_secs(10) {
            return Err(format!("stalled hello on port {port} closed after {waited:?}"));
        }
        Ok(Done::rejected(port, "hello_timeout"))
    }
}

impl Tally {
    fn record(&mut self, kind: &'static str, took: Duration, done: Done) {
        let stats = self.kinds.entry(kind).or_default();
        stats.count += 1;
        stats.total += took;
        stats.max = stats.max.max(took);
        *self.accepted.entry(done.port).or_default() += 1;
        self.verified += done.verified;
        match done.fate {
            Fate::Routed { route, up, down } => {
                *self.routed.entry((done.port, route)).or_default() += 1;
                *self.up.entry((done.port, route)).or_default() += up;
                *self.down.entry((done.port, route)).or_default() += down;
            }
            Fate::Rejected(reason) => *self.rejected.entry((done.port, reason)).or_default() += 1,
        }
    }

    fn fail(&mut self, kind: &'static str, error: String) {
        self.failures += 1;
        if self.first_failures.len() < 20 {
            self.first_failures.push(format!("{kind}: {error}"));
        }
    }

    fn connections(&self) -> u64 {
        self.kinds.values().map(|k| k.count).sum()
    }
}

impl Done {
    fn routed(port: u16, route: &'static str, meter: &Meter, verified: u64) -> Self {
        Self {
            port,
            fate: Fate::Routed {
                route,
                up: meter.sent.load(Ordering::SeqCst),
                down: meter.received.load(Ordering::SeqCst),
            },
            verified,
        }
    }

    fn rejected(port: u16, reason: &'static str) -> Self {
        Self {
            port,
            fate: Fate::Rejected(reason),
            verified: 0,
        }
    }
}

/// The soak backend's command: kind, upload and download lengths, seed.
fn command(kind: u8, up: u64, down: u64, seed: u64) -> [u8; COMMAND_LEN] {
    let mut out = [0u8; COMMAND_LEN];
    out[0] = kind;
    out[1..9].copy_from_slice(&up.to_be_bytes());
    out[9..17].copy_from_slice(&down.to_be_bytes());
    out[17..25].copy_from_slice(&seed.to_be_bytes());
    out
}

/// Read exactly `want.len()` bytes and compare.
async fn expect_exact<S: AsyncRead + Unpin>(stream: &mut S, want: &[u8]) -> Result<(), String> {
    let mut got = vec![0u8; want.len()];
    stream
        .read_exact(&mut got)
        .await
        .map_err(|e| format!("reading {} echoed bytes: {e}", want.len()))?;
    if got != want {
        return Err(format!("echo of {} bytes differs", want.len()));
    }
    Ok(())
}

/// The next read must be the end of the stream.
async fn expect_eof<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(), String> {
    let mut extra = [0u8; 256];
    match stream.read(&mut extra).await {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!("{n} unexpected bytes where the stream should end")),
        Err(e) => Err(format!("{e} where the stream should end")),
    }
}

/// The TLS backend's greeting line.
async fn expect_greeting<S: AsyncRead + Unpin>(tls: &mut S) -> Result<(), String> {
    let want = b"backend=tls client=none\n";
    let mut got = [0u8; 24];
    tls.read_exact(&mut got)
        .await
        .map_err(|e| format!("tls greeting: {e}"))?;
    if &got != want {
        return Err(format!("tls greeting {:?}", String::from_utf8_lossy(&got)));
    }
    Ok(())
}

/// Write `len` pseudo-random bytes from `seed`; their SHA-256.
async fn send_random<W: AsyncWrite + Unpin>(w: &mut W, seed: u64, len: u64) -> io::Result<[u8; 32]> {
    let mut keystream = Keystream::new(seed);
    let mut sha = digest::Context::new(&SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        keystream.fill(&mut buf[..n]);
        sha.update(&buf[..n]);
        w.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    Ok(finish(sha))
}

/// Read exactly `len` bytes; their SHA-256.
async fn recv_hashed<R: AsyncRead + Unpin>(r: &mut R, len: u64) -> io::Result<[u8; 32]> {
    let mut sha = digest::Context::new(&SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = r.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream ended {left} bytes short of {len}"),
            ));
        }
        sha.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(finish(sha))
}

// SHA-256 and the bulk data come from ring (a dependency of the router):
// its assembly runs at hundreds of MB/s even in the debug build `cargo test`
// makes, where sha2 and a Rust PRNG manage about 15 and 50 MB/s. At those
// rates the transfers took both cores and starved the short clients between
// connect and hello long enough for the router's 2 s hello timeout to cut
// them, a failure of the test, not of the router.

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut sha = digest::Context::new(&SHA256);
    sha.update(bytes);
    finish(sha)
}

fn finish(sha: digest::Context) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(sha.finish().as_ref());
    out
}

/// Bulk pseudo-random bytes from a seed: the ChaCha20 keystream.
struct Keystream {
    key: LessSafeKey,
    block: u64,
}

impl Keystream {
    fn new(seed: u64) -> Self {
        let mut key = [0x5au8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        // A 32-byte key is always a valid ChaCha20-Poly1305 key.
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).expect("32-byte key"));
        Self { key, block: 0 }
    }

    /// Encrypting zeros yields the keystream; each call takes a fresh nonce.
    fn fill(&mut self, buf: &mut [u8]) {
        buf.fill(0);
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.block.to_be_bytes());
        self.block += 1;
        // Fails only for inputs over 256 GiB.
        let _tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), buf)
            .expect("chunk within ChaCha20's limit");
    }
}

/// Bytes a client wrote to and read from its socket, whatever rides on it.
#[derive(Debug, Default)]
struct Meter {
    sent: AtomicU64,
    received: AtomicU64,
}

/// A socket (or half of one) that counts into a `Meter`: under TLS, the
/// counts include handshake, records and alerts, as the router sees them.
struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S> Metered<S> {
    fn new(inner: S, meter: &Arc<Meter>) -> Self {
        Self {
            inner,
            meter: meter.clone(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let n = buf.filled().len() - before;
            this.meter.received.fetch_add(n as u64, Ordering::SeqCst);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = poll {
            this.meter.sent.fetch_add(n as u64, Ordering::SeqCst);
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A deterministic byte source (splitmix64-seeded xorshift64*), so a
/// failing connection can be replayed from its seed.
struct Prng(u64);

impl Prng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough below `n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        self.fill(&mut out);
        out
    }

    /// 1 to `max` bytes.
    fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = 1 + self.below(max as u64) as usize;
        self.bytes(n)
    }
}

// === the backend ===

/// The raw backend behind the echo, wildcard and PostgreSQL routes. It
/// answers the router's SSLRequest with `S` (as a PostgreSQL server with TLS
/// does), reads the replayed ClientHello record by record, then a command:
/// `E` echoes everything from the hello on until EOF; `T` reads the upload
/// while sending the download, then a trailer of three SHA-256 digests (hello
/// and command, upload received, download sent).
struct SoakBackend {
    addr: SocketAddr,
    errors: Arc<Mutex<Vec<String>>>,
}

impl SoakBackend {
    async fn start() -> Self {
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        let addr = serve_each(move |stream| {
            let sink = sink.clone();
            async move {
                let error = match tokio::time::timeout(BACKEND_LIMIT, serve_backend(stream)).await {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e,
                    Err(_) => format!("connection still open after {BACKEND_LIMIT:?}"),
                };
                sink.lock().unwrap().push(error);
            }
        })
        .await;
        Self { addr, errors }
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

async fn serve_backend(mut stream: TcpStream) -> Result<(), String> {
    let io = |what: &'static str| move |e: io::Error| format!("backend {what}: {e}");
    stream.set_nodelay(true).map_err(io("nodelay"))?;
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).await.map_err(io("first bytes"))?;
    if head[0] == 0 {
        let mut rest = [0u8; 3];
        stream.read_exact(&mut rest).await.map_err(io("SSLRequest"))?;
        if [&head[..], &rest[..]].concat() != postgres::SSL_REQUEST {
            return Err(format!("backend: expected SSLRequest, got {head:?}{rest:?}"));
        }
        stream.write_all(b"S").await.map_err(io("answering S"))?;
        stream.read_exact(&mut head).await.map_err(io("hello record"))?;
    }
    // The hello, record by record, until the handshake message is complete.
    let mut prefix = Vec::new();
    let mut handshake = Vec::new();
    loop {
        if head[0] != 0x16 || prefix.len() > 70_000 {
            return Err(format!(
                "backend: not a ClientHello record: {head:?} after {} bytes",
                prefix.len()
            ));
        }
        let len = u16::from_be_bytes([head[3], head[4]]) as usize;
        let start = prefix.len() + 5;
        prefix.extend_from_slice(&head);
        prefix.resize(start + len, 0);
        stream
            .read_exact(&mut prefix[start..])
            .await
            .map_err(io("hello body"))?;
        handshake.extend_from_slice(&prefix[start..]);
        if handshake.len() >= 4 {
            let body = u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]) as usize;
            if handshake.len() >= 4 + body {
                break;
            }
        }
        stream.read_exact(&mut head).await.map_err(io("next hello record"))?;
    }
    let mut cmd = [0u8; COMMAND_LEN];
    stream.read_exact(&mut cmd).await.map_err(io("command"))?;
    prefix.extend_from_slice(&cmd);
    let number = |at: usize| u64::from_be_bytes(cmd[at..at + 8].try_into().unwrap_or_default());
    let (up, down, seed) = (number(1), number(9), number(17));
    match cmd[0] {
        b'E' => {
            stream.write_all(&prefix).await.map_err(io("echoing the hello"))?;
            let (mut r, mut w) = stream.split();
            tokio::io::copy(&mut r, &mut w).await.map_err(io("echo"))?;
            w.shutdown().await.map_err(io("echo shutdown"))?;
            Ok(())
        }
        b'T' => {
            let prefix_sha = sha256(&prefix);
            let (mut r, mut w) = stream.into_split();
            let sender = tokio::spawn(async move {
                let sha = send_random(&mut w, seed ^ DOWN_SALT, down).await;
                (w, sha)
            });
            let mut sha = digest::Context::new(&SHA256);
            let mut got = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = r.read(&mut buf).await.map_err(io("upload"))?;
                if n == 0 {
                    break;
                }
                sha.update(&buf[..n]);
                got += n as u64;
            }
            let up_sha = finish(sha);
            let (mut w, down_sha) = sender.await.map_err(|e| format!("backend sender: {e}"))?;
            let down_sha = down_sha.map_err(io("download"))?;
            let trailer = [prefix_sha, up_sha, down_sha].concat();
            w.write_all(&trailer).await.map_err(io("trailer"))?;
            w.shutdown().await.map_err(io("transfer shutdown"))?;
            if got != up {
                return Err(format!("backend: upload of {up} bytes arrived as {got}"));
            }
            Ok(())
        }
        other => Err(format!("backend: unknown command {other}")),
    }
}

// === the router, from outside ===

/// A `/metrics` scrape: (name, labels, value) per series.
struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    async fn take(router: &RouterProcess) -> Self {
        let (status, body) = router.admin("GET", "/metrics").await;
        assert_eq!(status, 200, "{body}");
        let mut series = Vec::new();
        for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = key.split_once('{').unwrap_or((key, "}"));
            let labels = labels
                .trim_end_matches('}')
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect();
            series.push((name.to_string(), labels, value));
        }
        Self(series)
    }

    /// The sum of `name` over the series carrying every label in `want`.
    fn sum(&self, name: &str, want: &[(&str, &str)]) -> u64 {
        self.0
            .iter()
            .filter(|(n, labels, _)| {
                n == name && want.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v as u64)
            .sum()
    }
}

/// Compare the router's metric deltas with the clients' counts; one line per
/// disagreement.
fn accounting(tally: &Tally, before: &Scrape, after: &Scrape) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |what: String, router: u64, clients: u64| {
        if router != clients {
            out.push(format!("{what}: router {router}, clients {clients}"));
        }
    };
    let delta = |name: &str, want: &[(&str, &str)]| after.sum(name, want) - before.sum(name, want);
    for port in [TLS_PORT, PG_PORT] {
        let listener = port.to_string();
        let l = [("listener", listener.as_str())];
        let accepted = delta("sni_router_connections_accepted_total", &l);
        let routed = delta("sni_router_connections_routed_total", &l);
        let rejected = delta("sni_router_connections_rejected_total", &l);
        let cancels = delta("sni_router_pg_cancel_forwarded_total", &l);
        let clients = tally.accepted.get(&port).copied().unwrap_or(0);
        check(format!("{port}: connections accepted"), accepted, clients);
        check(
            format!("{port}: accepted = routed + rejected + cancels forwarded ({routed} + {rejected} + {cancels})"),
            accepted,
            routed + rejected + cancels,
        );
        // The same over the router's whole life, warm-up included.
        let total = |name: &str| after.sum(name, &l);
        check(
            format!("{port}: accepted = routed + rejected + cancels, since start"),
            total("sni_router_connections_accepted_total"),
            total("sni_router_connections_routed_total")
                + total("sni_router_connections_rejected_total")
                + total("sni_router_pg_cancel_forwarded_total"),
        );
        check(format!("{port}: cancels forwarded"), cancels, 0);
        check(
            format!("{port}: connection tasks panicked, since start"),
            total("sni_router_connections_panicked_total"),
            0,
        );
        check(
            format!("{port}: connections active at the end"),
            total("sni_router_connections_active"),
            0,
        );
    }
    // Per route: connections and bytes each way, for every route either side knows.
    let mut routes: BTreeSet<(String, String)> = tally
        .routed
        .keys()
        .map(|(port, route)| (port.to_string(), route.to_string()))
        .collect();
    for name in ["sni_router_connections_routed_total", "sni_router_bytes_total"] {
        for (_, labels, _) in after.0.iter().filter(|(n, _, _)| n == name) {
            if let (Some(l), Some(r)) = (labels.get("listener"), labels.get("route")) {
                routes.insert((l.clone(), r.clone()));
            }
        }
    }
    for (listener, route) in &routes {
        let key = (listener.parse::<u16>().unwrap_or(0), route.as_str());
        let client = |map: &BTreeMap<(u16, &'static str), u64>| {
            map.iter()
                .find(|((p, r), _)| *p == key.0 && *r == key.1)
                .map_or(0, |(_, v)| *v)
        };
        let l = [("listener", listener.as_str()), ("route", route.as_str())];
        check(
            format!("{listener}/{route}: routed"),
            delta("sni_router_connections_routed_total", &l),
            client(&tally.routed),
        );
        // Every forwarded connection ended cleanly: both sides closed.
        check(
            format!("{listener}/{route}: ended closed"),
            delta("sni_router_connections_ended_total", &[l[0], l[1], ("end", "closed")]),
            client(&tally.routed),
        );
        check(
            format!("{listener}/{route}: ended, any way"),
            delta("sni_router_connections_ended_total", &l),
            client(&tally.routed),
        );
        for (direction, map) in [("upstream", &tally.up), ("downstream", &tally.down)] {
            let l = [l[0], l[1], ("direction", direction)];
            check(
                format!("{listener}/{route}: bytes {direction}"),
                delta("sni_router_bytes_total", &l),
                client(map),
            );
        }
    }
    // Per refusal reason.
    let mut reasons: BTreeSet<(String, String)> = tally
        .rejected
        .keys()
        .map(|(port, reason)| (port.to_string(), reason.to_string()))
        .collect();
    for (_, labels, _) in after
        .0
        .iter()
        .filter(|(n, _, _)| n == "sni_router_connections_rejected_total")
    {
        if let (Some(l), Some(r)) = (labels.get("listener"), labels.get("reason")) {
            reasons.insert((l.clone(), r.clone()));
        }
    }
    for (listener, reason) in &reasons {
        let clients = tally
            .rejected
            .iter()
            .find(|((p, r), _)| p.to_string() == *listener && r == reason)
            .map_or(0, |(_, v)| *v);
        let l = [("listener", listener.as_str()), ("reason", reason.as_str())];
        check(
            format!("{listener}: rejected {reason}"),
            delta("sni_router_connections_rejected_total", &l),
            clients,
        );
    }
    // A dead backend is also a connect failure of its route.
    let down = [("listener", "443"), ("route", DOWN_ROUTE)];
    check(
        format!("443/{DOWN_ROUTE}: upstream connect failures"),
        delta("sni_router_upstream_connect_failures_total", &down),
        tally
            .rejected
            .get(&(TLS_PORT, "upstream_unreachable"))
            .copied()
            .unwrap_or(0),
    );
    out
}

/// Wait until the router has no connection open on any port.
async fn wait_idle(router: &RouterProcess) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let active = Scrape::take(router).await.sum("sni_router_connections_active", &[]);
        if active == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{active} connections still active after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Log lines that should not be there: anything not JSON (a panic), any
/// error, any warning but the unreachable backend's refusals.
fn unexpected_logs(logs: &[String]) -> Vec<String> {
    logs.iter()
        .filter(|line| {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                return true;
            };
            match event["level"].as_str() {
                Some("ERROR") => true,
                Some("WARN") => event["end"] != "upstream_unreachable",
                _ => false,
            }
        })
        .cloned()
        .collect()
}

/// Most pipe descriptors the router's splice pools hold once idle: two per
/// pipe, `SPLICE_POOL_PER_THREAD` pipes per runtime worker (one per CPU).
fn pipe_pool_bound() -> usize {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    2 * SPLICE_POOL_PER_THREAD * workers
}

/// Descriptors other than pipes back within the slack of `base` (waiting up
/// to 15 s for closes to land), or the last reading.
async fn settle(pid: u32, base: Usage) -> Usage {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = usage(pid);
        if now.non_pipes().abs_diff(base.non_pipes()) <= FD_SLACK || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sample the router every 250 ms until `stop`: the peaks, and about ten
/// readings spread over the run.
async fn monitor(pid: u32, length: Duration, stop: Arc<AtomicBool>) -> (Usage, Vec<(Duration, Usage)>) {
    let started = Instant::now();
    let every = (length / 10).max(Duration::from_secs(1));
    let mut peak = Usage::default();
    let mut trend = Vec::new();
    let mut next = every;
    // Bounded by the run's own bound, whatever `stop` does.
    let bound = length + TRANSFER_LIMIT * 2;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < bound {
        let now = usage(pid);
        peak.fds = peak.fds.max(now.fds);
        peak.sockets = peak.sockets.max(now.sockets);
        peak.pipes = peak.pipes.max(now.pipes);
        peak.rss_kib = peak.rss_kib.max(now.rss_kib);
        peak.hwm_kib = now.hwm_kib;
        if started.elapsed() >= next {
            trend.push((started.elapsed(), now));
            next += every;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (peak, trend)
}

/// What the run printed.
struct Summary {
    length: Duration,
    full: bool,
    ran: Duration,
    wall: Duration,
    peak_open: u64,
    base: Usage,
    peak: Usage,
    end: Usage,
    trend: Vec<(Duration, Usage)>,
}

impl Summary {
    fn print(&self, tally: &Tally) {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let up: u64 = tally.up.values().sum();
        let down: u64 = tally.down.values().sum();
        let routed: u64 = tally.routed.values().sum();
        let rejected: u64 = tally.rejected.values().sum();
        let secs = self.ran.as_secs_f64();
        let mut text = format!(
            "soak summary ({} run, {} s of mixed traffic; SNI_ROUTER_SOAK_SECS={})\n",
            if self.full { "full" } else { "smoke" },
            self.length.as_secs(),
            std::env::var("SNI_ROUTER_SOAK_SECS").unwrap_or_else(|_| "unset".into()),
        );
        text += &format!(
            "  traffic ran {:.1} s (wall time of the test {:.1} s, warm-up {} s included)\n",
            secs,
            self.wall.as_secs_f64(),
            WARM_UP.as_secs()
        );
        text += &format!(
            "  connections: {} ({:.0}/s), {routed} routed, {rejected} refused, at most {} open at once; failures {}\n",
            tally.connections(),
            tally.connections() as f64 / secs,
            self.peak_open,
            tally.failures
        );
        text += &format!("    {:<30} {:>8} {:>10} {:>10}\n", "kind", "count", "mean ms", "max ms");
        for (kind, k) in &tally.kinds {
            let mean = k.total.as_secs_f64() * 1000.0 / k.count.max(1) as f64;
            let max = k.max.as_secs_f64() * 1000.0;
            text += &format!("    {kind:<30} {:>8} {mean:>10.1} {max:>10.1}\n", k.count);
        }
        text += &format!(
            "  bytes through the router (client count = router metric): upstream {up} ({:.1} MiB), downstream {down} ({:.1} MiB), {:.1} MiB/s together\n",
            mib(up),
            mib(down),
            mib(up + down) / secs
        );
        text += &format!(
            "  payload checked byte for byte or by SHA-256: {:.1} MiB\n",
            mib(tally.verified)
        );
        text += "  refusals by reason:\n";
        for ((port, reason), n) in &tally.rejected {
            text += &format!("    {port:>5} {reason:<24} {n:>8}\n");
        }
        text += &format!(
            "  router fds: {} after warm-up ({} sockets, {} pipes), peak {} ({} sockets, {} pipes), {} at the end ({} sockets, {} pipes)\n",
            self.base.fds,
            self.base.sockets,
            self.base.pipes,
            self.peak.fds,
            self.peak.sockets,
            self.peak.pipes,
            self.end.fds,
            self.end.sockets,
            self.end.pipes
        );
        text += &format!(
            "  router VmRSS: {} KiB after warm-up, peak {} KiB sampled (VmHWM {} KiB), {} KiB at the end ({:+} KiB; slack {} KiB)\n",
            self.base.rss_kib,
            self.peak.rss_kib,
            self.end.hwm_kib,
            self.end.rss_kib,
            self.end.rss_kib as i64 - self.base.rss_kib as i64,
            RSS_SLACK_KIB
        );
        if !self.trend.is_empty() {
            text += "  during the run (t: fds, VmRSS KiB):";
            for (t, u) in &self.trend {
                text += &format!(" {:.0}s: {}, {};", t.as_secs_f64(), u.fds, u.rss_kib);
            }
            text += "\n";
        }
        eprintln!("{text}");
    }
}
