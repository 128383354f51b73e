//! A panic in one connection's task cannot take the router down (issue 8,
//! part 6): the router runs in-process (`Router::start`, what `run` uses),
//! and a tracing layer is the fault injector, with no hook in `src/`. Every
//! connection's task runs inside its `conn` span, entered on each poll; the
//! layer panics on the second entry of the span of one chosen client (known
//! by its source port), i.e. in the middle of that client's session: after
//! the first poll counted it as open and active and started sniffing, when
//! its ClientHello arrives.
//!
//! What must hold: the victim's connection closes at once; a connection
//! already forwarding keeps working; new connections route; the open
//! connection count (what drain waits for) returns to zero. And what the
//! metrics say about the victim (`a_panicked_connection_leaves_honest_metrics`).

mod common;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use sni_router::config;
use sni_router::pki::Ca;
use sni_router::router::{Options, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Source ports of clients whose connection task must panic.
fn victims() -> &'static Mutex<HashSet<u16>> {
    static VICTIMS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    VICTIMS.get_or_init(Default::default)
}

/// Panics on the second entry of a victim's `conn` span.
#[derive(Default)]
struct PanicOnSecondPoll {
    /// Span id → times entered, for victims' spans.
    armed: Mutex<HashMap<Id, usize>>,
}

/// Finds the client port in a `conn` span's `client.addr` field.
struct ClientPort(Option<u16>);

impl Visit for ClientPort {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "client.addr" {
            self.0 = format!("{value:?}").parse::<SocketAddr>().ok().map(|a| a.port());
        }
    }
}

impl<S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>> Layer<S> for PanicOnSecondPoll {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        if attrs.metadata().name() != "conn" {
            return;
        }
        let mut port = ClientPort(None);
        attrs.record(&mut port);
        if port.0.is_some_and(|p| victims().lock().unwrap().contains(&p)) {
            self.armed.lock().unwrap().insert(id.clone(), 0);
        }
    }

    fn on_enter(&self, id: &Id, _: Context<'_, S>) {
        let entered = {
            let mut armed = self.armed.lock().unwrap();
            let Some(count) = armed.get_mut(id) else {
                return;
            };
            *count += 1;
            *count
        };
        if entered == 2 {
            panic!("injected panic in a connection task (tests/panic_isolation.rs)");
        }
    }
}

/// An access-log event with `end="panic"`: (client port, detail).
type PanicEvent = (Option<u16>, String);

/// Every `end="panic"` event so far.
fn panic_events() -> &'static Mutex<Vec<PanicEvent>> {
    static EVENTS: OnceLock<Mutex<Vec<PanicEvent>>> = OnceLock::new();
    EVENTS.get_or_init(Default::default)
}

/// Keeps the access-log events that report a panicked connection.
struct PanicEvents;

#[derive(Default)]
struct AccessFields {
    port: Option<u16>,
    end: String,
    detail: String,
}

impl Visit for AccessFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "end" {
            self.end = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "client.addr" => self.port = format!("{value:?}").parse::<SocketAddr>().ok().map(|a| a.port()),
            "detail" => self.detail = format!("{value:?}"),
            "end" => self.end = format!("{value:?}").trim_matches('"').to_string(),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for PanicEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "sni_router::access" {
            return;
        }
        let mut fields = AccessFields::default();
        event.record(&mut fields);
        if fields.end == "panic" {
            panic_events().lock().unwrap().push((fields.port, fields.detail));
        }
    }
}

/// Install the fault injector once for this test binary.
fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let subscriber = tracing_subscriber::registry()
            .with(PanicOnSecondPoll::default())
            .with(PanicEvents);
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber in this binary");
    });
}

struct Setup {
    ca: Ca,
    _backend: TlsBackend,
    router: Arc<Router>,
    addr: SocketAddr,
}

async fn setup() -> Setup {
    install();
    let ca = Ca::new().unwrap();
    let backend = TlsBackend::start(&ca, "ok", &["ok.example.com"], None).await;
    let yaml = values(&route("ok.example.com", 443, "ok"));
    let config = config::load(&yaml, Path::new("values.yaml")).unwrap();
    let mut options = Options::default();
    options.listen.insert(443, "127.0.0.1:0".parse().unwrap());
    options
        .backends
        .overrides
        .insert("ok.test".into(), vec![backend.endpoint.clone()]);
    let router = Router::start(&config, options).await.unwrap();
    let addr = router.local_addr(443).unwrap();
    Setup {
        ca,
        _backend: backend,
        router,
        addr,
    }
}

async fn echo(tls: &mut Client, text: &[u8]) {
    tls.write_all(text).await.unwrap();
    let mut back = vec![0u8; text.len()];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(back, text);
}

/// Connect from a port registered as a victim first, wait until its task
/// has been polled once (it is then counted open and active, sniffing), then
/// send a hello: the task panics when it wakes for it. Returns how long the
/// victim waited, from sending the hello, for its connection to end.
async fn victim(addr: SocketAddr) -> Duration {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    victims().lock().unwrap().insert(socket.local_addr().unwrap().port());
    let mut stream = socket.connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    // The panic may come first and reset the connection under the write.
    let _ = stream.write_all(&synthetic_hello("ok.example.com", 0)).await;
    let mut buf = [0u8; 64];
    let end = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the victim's connection stayed open");
    assert!(matches!(end, Ok(0) | Err(_)), "victim got bytes: {end:?}");
    started.elapsed()
}

async fn wait_open(router: &Router, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while router.open_connections() != want {
        assert!(
            Instant::now() < deadline,
            "{} connections open, want {want}",
            router.open_connections()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_connection_leaves_the_others_and_the_router_running() {
    let s = setup().await;
    // A connection already forwarding when the panic happens.
    let mut before = tls_connect(s.addr, "ok.example.com", &s.ca, None).await.unwrap();
    assert_eq!(greeting(&mut before).await, "backend=ok client=none");
    echo(&mut before, b"before\n").await;

    let waited = victim(s.addr).await;
    eprintln!("victim's connection ended {waited:?} after the panic trigger");

    // The forwarding connection is untouched; new ones route; twice over,
    // so the accept loop is shown to survive more than one panic.
    echo(&mut before, b"still here\n").await;
    for _ in 0..2 {
        let mut after = tls_connect(s.addr, "ok.example.com", &s.ca, None).await.unwrap();
        assert_eq!(greeting(&mut after).await, "backend=ok client=none");
        echo(&mut after, b"after\n").await;
        victim(s.addr).await;
    }
    drop(before);
    // The open count (what drain waits for) does not keep the panicked ones.
    wait_open(&s.router, 0).await;
    assert!(s.router.shutdown(Duration::from_secs(5)).await, "drain finished");
}

/// Regression: the panicked connection used to stay in
/// `sni_router_connections_active` for good (the gauge was decremented by
/// code after the session; it is a guard now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_connection_leaves_honest_metrics() {
    let s = setup().await;
    victim(s.addr).await;
    wait_open(&s.router, 0).await;
    let text = s.router.metrics().render();
    let active = text
        .lines()
        .find_map(|l| l.strip_prefix("sni_router_connections_active{listener=\"443\"} "))
        .map(str::to_string);
    assert_eq!(
        active.as_deref(),
        Some("0"),
        "no connection is open, yet the active gauge says {active:?}"
    );
    // Counted as a panic, once, and in nothing that says it was routed.
    assert!(
        text.contains("sni_router_connections_panicked_total{listener=\"443\"} 1\n"),
        "{text}"
    );
    assert!(!text.contains("sni_router_connections_ended_total{"), "{text}");
    // And logged as one access-log event naming the client and the panic.
    let events = panic_events().lock().unwrap().clone();
    let victims = victims().lock().unwrap().clone();
    assert!(!events.is_empty(), "no end=panic access-log event");
    for (port, detail) in &events {
        assert!(port.is_some_and(|p| victims.contains(&p)), "{events:?} vs {victims:?}");
        assert!(detail.contains("injected panic"), "{detail}");
    }
}
