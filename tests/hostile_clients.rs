//! Hostile clients (issue 8, part 2): connections that dribble a byte a
//! second, send garbage, claim 16 MB hellos, open and never send, or connect
//! and close at once. During each, a well-behaved TLS client still routes
//! (greeting and echo, promptly); afterwards every hostile connection is
//! accounted for in the metrics and the router's open file descriptors
//! (`/proc/PID/fd`) and resident memory (`VmRSS`) are back near the baseline
//! taken before.
//!
//! Scale: `SNI_ROUTER_HOSTILE_SCALE` connections per scenario (default
//! 2 000, the figure; the connect-then-close flood is 5x that; about
//! 45 s on 2 cores, 200 runs in ~24 s). Flags passed to the
//! router, and why: `--hello-timeout 4s` (the default 15 s would only make the
//! test wait longer) and `--max-pending-hellos` above the scenario's count
//! (the default 1024 would refuse the excess, and the good client with it,
//! while they are pending: see docs/reliability.md). Loopback only; every
//! loop is bounded in count and time.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::procfs::{self, usage, Usage};
use common::*;
use sni_router::pki::Ca;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// The router's hello timeout in these tests.
const HELLO_TIMEOUT: Duration = Duration::from_secs(4);
/// Descriptors the router may hold above its baseline once settled (the
/// runtime may keep an extra eventfd or timer around).
const FD_SLACK: usize = 4;
/// Resident memory the router may keep, per hostile connection, after the
/// first round of an attack: glibc's malloc keeps freed heap for reuse
/// rather than returning it, so the first round leaves the process at its
/// peak (about 8 KiB per concurrent connection measured, see
/// docs/reliability.md). Bounded, and reused: see `RSS_SLACK_KIB`.
const RETAINED_PER_CONNECTION_KIB: u64 = 16;
/// Resident memory the router may gain in later, identical rounds over what
/// the first left. At 2 000 connections a round, glibc's arenas settle
/// 1.7 to 6.5 MiB above the first round's level and stay there (measured
/// over 2, 5 and 10 rounds: +1.7, +6.5, +6.4 MiB), so 8 MiB; a leak of
/// 4 KiB per connection shows within two rounds, and one of a few hundred
/// bytes with `SNI_ROUTER_HOSTILE_ROUNDS=10`.
const RSS_SLACK_KIB: u64 = 8 * 1024;
/// The good client's bound on a routed round trip while under attack.
const GOOD_CLIENT_BOUND: Duration = Duration::from_secs(5);

/// Hostile connections per scenario.
fn scale() -> usize {
    std::env::var("SNI_ROUTER_HOSTILE_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// The router and what it looked like before the attack.
struct Harness {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    ca: Ca,
    _backend: TlsBackend,
    router: RouterProcess,
    /// Right after start and a few good clients.
    fresh: Usage,
    /// After the first round of the attack, settled.
    base: Usage,
    n: usize,
}

/// One scenario at a time: each measures its own router's descriptors and
/// memory, and the good client's latency, without the others' load.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Harness {
    async fn start() -> Self {
        let serial = SERIAL.lock().await;
        let n = scale();
        // This process holds the client ends (the router raises its own limit).
        procfs::ensure_nofile(n as u64 + 256);
        let ca = Ca::new().unwrap();
        let backend = TlsBackend::start(&ca, "ok", &["ok.example.com"], None).await;
        let yaml = values(&route("ok.example.com", 443, "ok"));
        let pending = (n + 64).to_string();
        let timeout = format!("{}s", HELLO_TIMEOUT.as_secs());
        let mut flags: Vec<String> = backend_flag("ok", &backend.endpoint).into();
        flags.extend([
            "--hello-timeout".into(),
            timeout,
            "--max-pending-hellos".into(),
            pending,
        ]);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let router = RouterProcess::start(&yaml, &[443], &flags);
        let mut h = Self {
            _serial: serial,
            ca,
            _backend: backend,
            router,
            fresh: Usage::default(),
            base: Usage::default(),
            n,
        };
        // Warm up: the first connections allocate what every later one reuses.
        for _ in 0..3 {
            h.good_client().await;
        }
        h.wait_idle().await;
        h.fresh = usage(h.router.pid());
        h.base = h.fresh;
        h
    }

    fn addr(&self) -> SocketAddr {
        self.router.addr(443)
    }

    /// A well-behaved client: handshake through the router, greeting, echo.
    async fn good_client(&self) -> Duration {
        let started = Instant::now();
        let round_trip = async {
            let mut tls = tls_connect(self.addr(), "ok.example.com", &self.ca, None).await?;
            let hello = greeting(&mut tls).await;
            assert_eq!(hello, "backend=ok client=none");
            tls.write_all(b"ping\n").await?;
            let mut echo = [0u8; 5];
            tls.read_exact(&mut echo).await?;
            assert_eq!(&echo, b"ping\n");
            std::io::Result::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(10), round_trip)
            .await
            .expect("good client timed out")
            .expect("good client failed");
        started.elapsed()
    }

    /// Good clients one after another, each to completion, until `hostile`
    /// (spawned) finishes; at least one. Returns the hostile result, the
    /// slowest round trip and how many good clients ran.
    async fn good_clients_during<T: Send + 'static>(
        &self,
        hostile: impl std::future::Future<Output = T> + Send + 'static,
    ) -> (T, Duration, usize) {
        let hostile = tokio::spawn(hostile);
        // Let the attack get going first.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut slowest = Duration::ZERO;
        let mut count = 0;
        while count == 0 || !hostile.is_finished() {
            slowest = slowest.max(self.good_client().await);
            count += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (hostile.await.expect("hostile clients"), slowest, count)
    }

    async fn metric(&self, series: &str) -> f64 {
        self.router.metric(series).await.unwrap_or(0.0)
    }

    async fn rejected(&self, reason: &str) -> f64 {
        self.metric(&rejected_series(reason)).await
    }

    /// Wait until no connection is open in the router.
    async fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let active = self.metric("sni_router_connections_active{listener=\"443\"}").await;
            if active == 0.0 {
                return;
            }
            assert!(Instant::now() < deadline, "{active} connections still active");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Once the connections are gone: descriptors at the fresh baseline.
    async fn settled(&self, scenario: &str) -> Usage {
        self.wait_idle().await;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut now = usage(self.router.pid());
        while now.fds > self.fresh.fds + FD_SLACK && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            now = usage(self.router.pid());
        }
        assert!(
            now.fds <= self.fresh.fds + FD_SLACK,
            "{scenario}: router holds {} descriptors, baseline {}",
            now.fds,
            self.fresh.fds
        );
        now
    }

    /// After the first round: descriptors back, memory within the allocator's
    /// bounded retention; what is left becomes the baseline for the second.
    async fn rebase(&mut self, scenario: &str) {
        let now = self.settled(scenario).await;
        let budget = self.n as u64 * RETAINED_PER_CONNECTION_KIB + 8 * 1024;
        eprintln!(
            "{scenario} round 1: n={} fds {} -> {}, VmRSS {} KiB -> {} KiB (peak {} KiB)",
            self.n, self.fresh.fds, now.fds, self.fresh.rss_kib, now.rss_kib, now.hwm_kib
        );
        assert!(
            now.rss_kib <= self.fresh.rss_kib + budget,
            "{scenario}: router VmRSS {} KiB after round 1, fresh {} KiB, budget {budget} KiB",
            now.rss_kib,
            self.fresh.rss_kib
        );
        self.base = now;
    }

    /// After the last round: descriptors back, memory where round 1 left it.
    async fn assert_back_to_baseline(&self, scenario: &str) {
        let now = self.settled(scenario).await;
        eprintln!(
            "{scenario} after round {}: fds {} -> {}, VmRSS {} KiB -> {} KiB (peak {} KiB)",
            rounds(),
            self.base.fds,
            now.fds,
            self.base.rss_kib,
            now.rss_kib,
            now.hwm_kib
        );
        assert!(
            now.rss_kib <= self.base.rss_kib + RSS_SLACK_KIB,
            "{scenario}: router VmRSS {} KiB after the last round, {} KiB after round 1: it grows per attack",
            now.rss_kib,
            self.base.rss_kib
        );
        // And it still serves.
        self.good_client().await;
    }
}

fn rejected_series(reason: &str) -> String {
    format!("sni_router_connections_rejected_total{{listener=\"443\",reason=\"{reason}\"}}")
}

/// The value of `name` in a Prometheus text body (0 when absent).
fn series(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// `n` TCP connections to `addr`, opened one after another (loopback
/// connects take microseconds; the listen backlog is 1024), each with the
/// time it was opened: the router's hello timeout runs from its accept.
async fn connect_many(addr: SocketAddr, n: usize) -> Vec<(TcpStream, Instant)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push((TcpStream::connect(addr).await.expect("connect"), Instant::now()));
    }
    out
}

/// Read until EOF or an error, within `limit`; what was read, and whether it ended.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (got, ended)
}

/// A deterministic byte source (xorshift64), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const ALERT_DECODE_ERROR: [u8; 7] = [0x15, 3, 3, 0, 2, 2, 50];

/// Run `attack` twice on one router: the first round brings the process to
/// its peak and back (descriptors to baseline, memory within the allocator's
/// retention), the second must leave it where the first did.
macro_rules! two_rounds {
    ($name:literal, $attack:ident) => {{
        let mut h = Harness::start().await;
        $attack(&h).await;
        h.rebase($name).await;
        for _ in 1..rounds() {
            $attack(&h).await;
        }
        h.assert_back_to_baseline($name).await;
    }};
}

/// Rounds per scenario: 2, or `SNI_ROUTER_HOSTILE_ROUNDS` (more rounds make
/// a slow leak show as growth past the second round's slack).
fn rounds() -> usize {
    std::env::var("SNI_ROUTER_HOSTILE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dribbling_a_byte_a_second() {
    two_rounds!("dribble", dribble);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage() {
    two_rounds!("garbage", send_garbage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hellos_claiming_16_mb() {
    two_rounds!("16 MB claims", claim_16_mb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_and_never_send() {
    two_rounds!("never send", never_send);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_then_close_flood() {
    two_rounds!("flood", flood);
}

/// Connections sending a valid hello one byte a second: each is cut at the
/// hello timeout, counted `hello_timeout`.
async fn dribble(h: &Harness) {
    let before = h.rejected("hello_timeout").await;
    let hello = synthetic_hello("ok.example.com", 0);
    let streams = connect_many(h.addr(), h.n).await;
    let mut tasks = JoinSet::new();
    for (mut s, opened) in streams {
        let hello = hello.clone();
        tasks.spawn(async move {
            let mut buf = [0u8; 64];
            // Never complete before the timeout.
            for byte in hello.iter().take(30) {
                if s.write_all(&[*byte]).await.is_err() {
                    return opened.elapsed();
                }
                tokio::select! {
                    r = s.read(&mut buf) => {
                        assert!(matches!(r, Ok(0) | Err(_)), "dribbler got an answer: {r:?}");
                        return opened.elapsed();
                    }
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            panic!("a dribbler was still open after 30 s");
        });
    }
    let (lifetimes, slowest, good) = h.good_clients_during(tasks.join_all()).await;
    let longest = lifetimes.iter().max().copied().unwrap_or_default();
    let shortest = lifetimes.iter().min().copied().unwrap_or_default();
    eprintln!(
        "dribble: {} connections cut after {shortest:?}..{longest:?}; {good} good clients, slowest {slowest:?}",
        h.n
    );
    assert!(
        shortest >= HELLO_TIMEOUT - Duration::from_millis(500),
        "cut early: {shortest:?}"
    );
    assert!(
        longest <= HELLO_TIMEOUT + Duration::from_secs(5),
        "cut late: {longest:?}"
    );
    assert!(slowest < GOOD_CLIENT_BOUND, "good client took {slowest:?}");
    h.wait_idle().await;
    assert_eq!(h.rejected("hello_timeout").await - before, h.n as f64);
}

/// Random bytes that are neither TLS, PostgreSQL nor RESP; TLS record
/// headers followed by a non-ClientHello; records longer than TLS allows.
/// Each closed at once, counted `not_tls` or `malformed_hello`.
async fn send_garbage(h: &Harness) {
    let before = h.rejected("not_tls").await + h.rejected("malformed_hello").await;
    let mut rng = Rng(0x5eed_0001);
    let mut payloads = Vec::new();
    for i in 0..h.n {
        let mut bytes = rng.bytes(512);
        match i % 3 {
            // '@'..'O': no protocol the sniffer knows starts so.
            0 => bytes[0] = 0x40 | (bytes[0] & 0x0f),
            // A TLS record header, then a handshake type that is not ClientHello.
            1 => {
                bytes[..5].copy_from_slice(&[0x16, 3, 1, 0x01, 0xfb]);
                bytes[5] = 2 + bytes[5] % 200;
            }
            // A TLS record header with a length no record may have.
            _ => bytes[..5].copy_from_slice(&[0x16, 3, 1, 0xff, 0xff]),
        }
        payloads.push(bytes);
    }
    let streams = connect_many(h.addr(), h.n).await;
    let mut tasks = JoinSet::new();
    for ((mut s, _), bytes) in streams.into_iter().zip(payloads) {
        tasks.spawn(async move {
            let _ = s.write_all(&bytes).await;
            let (answer, ended) = read_until_closed(&mut s, Duration::from_secs(5)).await;
            assert!(ended, "garbage connection not closed within 5 s");
            assert!(answer.is_empty() || answer == ALERT_DECODE_ERROR, "{answer:?}");
        });
    }
    let (_, slowest, good) = h.good_clients_during(tasks.join_all()).await;
    eprintln!("garbage: {} connections; {good} good clients, slowest {slowest:?}", h.n);
    assert!(slowest < GOOD_CLIENT_BOUND, "good client took {slowest:?}");
    h.wait_idle().await;
    let refused = h.rejected("not_tls").await + h.rejected("malformed_hello").await;
    assert_eq!(refused - before, h.n as f64);
}

/// Hellos whose handshake header claims a 16 MiB body: direct, after
/// PostgreSQL's SSLRequest, and followed by a stream of "body" bytes. Each
/// refused from the header, counted `hello_too_large`.
async fn claim_16_mb(h: &Harness) {
    let before = h.rejected("hello_too_large").await;
    // A full-size record whose handshake header claims 16 MiB - 1 bytes.
    let tls_claim = [0x16, 3, 1, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff].to_vec();
    let streams = connect_many(h.addr(), h.n).await;
    let mut tasks = JoinSet::new();
    for (i, (mut s, _)) in streams.into_iter().enumerate() {
        let tls_claim = tls_claim.clone();
        tasks.spawn(async move {
            match i % 3 {
                // Claim, then wait for the verdict.
                0 => {
                    s.write_all(&tls_claim).await.unwrap();
                    let (answer, ended) = read_until_closed(&mut s, Duration::from_secs(5)).await;
                    assert!(ended);
                    assert_eq!(answer, ALERT_DECODE_ERROR);
                }
                // The same after the SSLRequest and the router's `S`.
                1 => {
                    s.write_all(&SSL_REQUEST).await.unwrap();
                    let mut answer = [0u8; 1];
                    s.read_exact(&mut answer).await.unwrap();
                    assert_eq!(&answer, b"S");
                    s.write_all(&tls_claim).await.unwrap();
                    let (answer, ended) = read_until_closed(&mut s, Duration::from_secs(5)).await;
                    assert!(ended);
                    assert_eq!(answer, ALERT_DECODE_ERROR);
                }
                // Claim and keep sending the "body" as fast as possible (up to
                // 1 MiB): the router refuses from the header and stops reading.
                _ => {
                    let started = Instant::now();
                    let _ = s.write_all(&tls_claim).await;
                    let filler = vec![0xabu8; 16 * 1024];
                    let mut sent = 0;
                    while sent < 1 << 20 && started.elapsed() < Duration::from_secs(5) {
                        match tokio::time::timeout(Duration::from_secs(1), s.write_all(&filler)).await {
                            Ok(Ok(())) => sent += filler.len(),
                            _ => break,
                        }
                    }
                    let (_, ended) = read_until_closed(&mut s, Duration::from_secs(5)).await;
                    assert!(ended, "a 16 MB hello kept open");
                }
            }
        });
    }
    let (_, slowest, good) = h.good_clients_during(tasks.join_all()).await;
    eprintln!(
        "16 MB claims: {} connections; {good} good clients, slowest {slowest:?}",
        h.n
    );
    assert!(slowest < GOOD_CLIENT_BOUND, "good client took {slowest:?}");
    h.wait_idle().await;
    assert_eq!(h.rejected("hello_too_large").await - before, h.n as f64);
}

const SSL_REQUEST: [u8; 8] = sni_router::sniff::postgres::SSL_REQUEST;

/// Connections that open and never send: closed quietly at the hello
/// timeout, counted `hello_timeout`.
async fn never_send(h: &Harness) {
    let before = h.rejected("hello_timeout").await;
    let streams = connect_many(h.addr(), h.n).await;
    let mut tasks = JoinSet::new();
    for (mut s, opened) in streams {
        tasks.spawn(async move {
            let (answer, ended) = read_until_closed(&mut s, HELLO_TIMEOUT + Duration::from_secs(10)).await;
            assert!(ended && answer.is_empty(), "silent connection not closed quietly");
            opened.elapsed()
        });
    }
    let (lifetimes, slowest, good) = h.good_clients_during(tasks.join_all()).await;
    let last = lifetimes.iter().max().copied().unwrap_or_default();
    let first = lifetimes.iter().min().copied().unwrap_or_default();
    eprintln!(
        "never send: {} connections closed at {first:?}..{last:?}; {good} good clients, slowest {slowest:?}",
        h.n
    );
    assert!(
        first >= HELLO_TIMEOUT - Duration::from_millis(500),
        "closed early: {first:?}"
    );
    assert!(last <= HELLO_TIMEOUT + Duration::from_secs(5), "closed late: {last:?}");
    assert!(slowest < GOOD_CLIENT_BOUND, "good client took {slowest:?}");
    h.wait_idle().await;
    assert_eq!(h.rejected("hello_timeout").await - before, h.n as f64);
}

/// 5 x n connections opened and closed at once, every other one with a
/// reset: every accepted connection is accounted for, as routed (the good
/// clients) or rejected: `client_closed`, or `hello_limit` when the router,
/// slowed by other load, holds more than `--max-pending-hellos` at once.
async fn flood(h: &Harness) {
    let flood = 5 * h.n;
    let before = Accounting::scrape(h).await;
    let addr = h.addr();
    let hostile = async move {
        for i in 0..flood {
            let s = TcpStream::connect(addr).await.expect("connect");
            if i % 2 == 1 {
                s.set_zero_linger().unwrap();
            }
            drop(s);
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
    };
    let started = Instant::now();
    let (_, slowest, good) = h.good_clients_during(hostile).await;
    let took = started.elapsed();
    // The router may still be working through its accept backlog: wait
    // until every accepted connection is accounted for, from one scrape.
    let deadline = Instant::now() + Duration::from_secs(30);
    let delta = loop {
        h.wait_idle().await;
        let delta = Accounting::scrape(h).await.minus(&before);
        if delta.accepted == delta.rejected + delta.routed || Instant::now() > deadline {
            break delta;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "flood: {flood} connect-then-close in {took:?} ({:.0}/s); {delta:?}; {good} good clients, slowest {slowest:?}",
        flood as f64 / took.as_secs_f64()
    );
    assert!(slowest < GOOD_CLIENT_BOUND, "good client took {slowest:?}");
    assert_eq!(
        delta.accepted,
        delta.rejected + delta.routed,
        "every accepted connection is accounted for: {delta:?}"
    );
    assert_eq!(delta.routed, good as f64, "the good clients were routed");
    assert_eq!(
        delta.rejected,
        delta.client_closed + delta.hello_limit,
        "the flood ended only as client_closed or hello_limit: {delta:?}"
    );
    assert!(
        delta.client_closed >= flood as f64 / 2.0,
        "only {delta:?} of {flood} were seen"
    );
}

/// Connection counts of listener 443 from one scrape.
#[derive(Debug, Clone, Copy)]
struct Accounting {
    accepted: f64,
    routed: f64,
    rejected: f64,
    client_closed: f64,
    hello_limit: f64,
}

impl Accounting {
    async fn scrape(h: &Harness) -> Self {
        let body = h.router.admin("GET", "/metrics").await.1;
        let sum = |prefix: &str| -> f64 {
            body.lines()
                .filter_map(|l| l.strip_prefix(prefix))
                .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Self {
            accepted: series(&body, "sni_router_connections_accepted_total{listener=\"443\"}"),
            routed: sum("sni_router_connections_routed_total{listener=\"443\","),
            rejected: sum("sni_router_connections_rejected_total{listener=\"443\","),
            client_closed: series(&body, &rejected_series("client_closed")),
            hello_limit: series(&body, &rejected_series("hello_limit")),
        }
    }

    fn minus(&self, before: &Self) -> Self {
        Self {
            accepted: self.accepted - before.accepted,
            routed: self.routed - before.routed,
            rejected: self.rejected - before.rejected,
            client_closed: self.client_closed - before.client_closed,
            hello_limit: self.hello_limit - before.hello_limit,
        }
    }
}
