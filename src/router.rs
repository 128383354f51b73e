//! The assembled router: a route table, one listener per gateway port, the
//! open-connection count and the lifecycle phase. `run`, `demo`, the admin
//! endpoint and the tests all drive one of these.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{watch, Mutex};

use crate::access::Access;
use crate::config::Config;
use crate::listener::{self, BindError, OpenConnections, Shared};
use crate::metrics::Metrics;
use crate::pending::PendingHellos;
use crate::routes::{Backends, RouteTable};
use crate::session::{Context, Limits, Policy};

/// How to start a router, beyond the values file.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--listen PORT=ADDR:PORT`: local address per gateway port.
    pub listen: HashMap<u16, SocketAddr>,
    /// `--bind`: address for gateway ports without a `--listen` entry.
    pub bind: IpAddr,
    /// Cluster domain and `--backend` overrides.
    pub backends: Backends,
    /// Timeouts and size bounds.
    pub limits: Limits,
    /// Most connections open at once (0: no limit).
    pub max_connections: usize,
    /// Most connections in the ClientHello phase at once (0: no limit).
    pub max_pending_hellos: usize,
    /// Most connections in the ClientHello phase at once from one address (0: no limit).
    pub max_pending_hellos_per_source: usize,
    /// Allowed client networks.
    pub allow: Access,
    /// Expect a PROXY protocol header before the client's bytes.
    pub accept_proxy_protocol: bool,
    /// Send a PROXY protocol v2 header to backends.
    pub send_proxy_protocol: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: HashMap::new(),
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            backends: Backends::default(),
            limits: Limits::default(),
            max_connections: 0,
            max_pending_hellos: 1024,
            max_pending_hellos_per_source: 0,
            allow: Access::default(),
            accept_proxy_protocol: false,
            send_proxy_protocol: false,
        }
    }
}

/// Where the router is in its life; `/ready` is 200 only when `Serving`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Binding listeners.
    Starting,
    /// Every listener bound and accepting.
    Serving,
    /// Listeners closed; open connections finishing.
    Draining,
}

/// A running router.
pub struct Router {
    options: Options,
    shared: Arc<Shared>,
    /// Never held across an await; `reloading` serialises reloads instead.
    listeners: std::sync::Mutex<BTreeMap<u16, ListenerHandle>>,
    reloading: Mutex<()>,
    phase: watch::Sender<Phase>,
    loaded: std::sync::Mutex<Loaded>,
}

struct ListenerHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

/// The config in use and when it was loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The values file.
    pub source: std::path::PathBuf,
    /// When it was loaded.
    pub at: SystemTime,
}

impl Router {
    /// Bind every gateway port of `config` (all or nothing) and start serving.
    pub async fn start(config: &Config, options: Options) -> Result<Arc<Self>, BindError> {
        let table = RouteTable::new(config, &options.backends);
        let mut bound = Vec::new();
        for port in table.ports() {
            bound.push(bind(&options, port).await?);
        }
        let metrics = Metrics::new();
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(table),
            ctx: Context {
                limits: options.limits.clone(),
                policy: Policy {
                    access: options.allow.clone(),
                    accept_proxy_protocol: options.accept_proxy_protocol,
                    send_proxy_protocol: options.send_proxy_protocol,
                },
                metrics,
            },
            max_connections: options.max_connections,
            hellos: PendingHellos::new(options.max_pending_hellos, options.max_pending_hellos_per_source),
            open: OpenConnections::default(),
        });
        let (phase, _) = watch::channel(Phase::Starting);
        let router = Arc::new(Self {
            options,
            shared,
            listeners: std::sync::Mutex::new(BTreeMap::new()),
            reloading: Mutex::new(()),
            phase,
            loaded: std::sync::Mutex::new(Loaded {
                source: config.source.clone(),
                at: SystemTime::now(),
            }),
        });
        for (port, socket) in bound {
            let handle = router.spawn_listener(port, socket);
            router.listeners().insert(port, handle);
        }
        router.count_routes();
        router.shared.ctx.metrics.config_loaded.set(unix_now());
        router.phase.send_replace(Phase::Serving);
        Ok(router)
    }

    /// Swap in a new config: bind listeners for new ports first (all or
    /// nothing), then replace the route table, then stop accepting on ports
    /// no route uses any more. Open connections are untouched.
    pub async fn reload(&self, config: &Config) -> Result<(), BindError> {
        let _one_at_a_time = self.reloading.lock().await;
        let table = RouteTable::new(config, &self.options.backends);
        let current: Vec<u16> = self.listeners().keys().copied().collect();
        let mut fresh = Vec::new();
        if self.phase() != Phase::Draining {
            for port in table.ports().filter(|p| !current.contains(p)) {
                fresh.push(bind(&self.options, port).await?);
            }
        }
        let removed: Vec<u16> = current.into_iter().filter(|p| table.routes(*p).is_empty()).collect();
        let table = Arc::new(table);
        let old = self.shared.table.swap(table.clone());
        let kept = route_keys(&table);
        for (port, name) in route_keys(&old).difference(&kept) {
            self.shared.ctx.metrics.forget_route(&port.to_string(), name);
        }
        let mut listeners = self.listeners();
        for port in removed {
            if let Some(handle) = listeners.remove(&port) {
                handle.stop.send_replace(true);
                tracing::info!(listener = port, address = %handle.addr, "stopped listening: no routes left on this port");
            }
        }
        for (port, socket) in fresh {
            listeners.insert(port, self.spawn_listener(port, socket));
        }
        drop(listeners);
        self.count_routes();
        self.shared.ctx.metrics.config_loaded.set(unix_now());
        if let Ok(mut loaded) = self.loaded.lock() {
            *loaded = Loaded {
                source: config.source.clone(),
                at: SystemTime::now(),
            };
        }
        Ok(())
    }

    /// Stop accepting on every port (`/drain_listeners`, SIGTERM); open
    /// connections keep flowing. `/ready` turns 503.
    pub async fn stop_accepting(&self) {
        self.phase.send_replace(Phase::Draining);
        for (port, handle) in self.listeners().iter() {
            if !handle.stop.send_replace(true) {
                tracing::info!(listener = port, address = %handle.addr, "stopped accepting");
            }
        }
    }

    /// Stop accepting, then wait up to `drain` for open connections to end.
    /// True when every connection ended in time.
    pub async fn shutdown(&self, drain: Duration) -> bool {
        self.stop_accepting().await;
        tokio::time::timeout(drain, self.shared.open.wait_idle()).await.is_ok()
    }

    /// End every connection still open (the drain ran out of time), each
    /// through its own session so it is logged and counted
    /// (`end="drain_timeout"`), and wait up to `grace` for them to finish.
    /// True when all did.
    pub async fn cut(&self, grace: Duration) -> bool {
        self.shared.open.cut();
        tokio::time::timeout(grace, self.shared.open.wait_idle()).await.is_ok()
    }

    /// The local address serving gateway port `port`.
    pub fn local_addr(&self, port: u16) -> Option<SocketAddr> {
        self.addrs().get(&port).copied()
    }

    /// Gateway port → local address, for every listener.
    pub fn addrs(&self) -> BTreeMap<u16, SocketAddr> {
        self.listeners().iter().map(|(p, h)| (*p, h.addr)).collect()
    }

    /// Gateway port → (local address, still accepting).
    pub fn listener_states(&self) -> BTreeMap<u16, (SocketAddr, bool)> {
        self.listeners()
            .iter()
            .map(|(p, h)| (*p, (h.addr, !*h.stop.borrow())))
            .collect()
    }

    fn listeners(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, ListenerHandle>> {
        // A panic while holding this lock leaves the map itself intact.
        self.listeners.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The route table in use.
    pub fn table(&self) -> Arc<RouteTable> {
        self.shared.table.load_full()
    }

    /// The router's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.ctx.metrics
    }

    /// The options it was started with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The config file in use and when it was loaded.
    pub fn loaded(&self) -> Loaded {
        match self.loaded.lock() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.count()
    }

    /// The lifecycle phase.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// A receiver that sees every phase change.
    pub fn watch_phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    fn spawn_listener(&self, port: u16, (addr, socket): (SocketAddr, tokio::net::TcpListener)) -> ListenerHandle {
        let (stop, stop_rx) = watch::channel(false);
        tracing::info!(listener = port, address = %addr, "listening");
        tokio::spawn(listener::serve(socket, port, self.shared.clone(), stop_rx));
        ListenerHandle { addr, stop }
    }

    fn count_routes(&self) {
        let table = self.shared.table.load();
        let gauge = &self.shared.ctx.metrics.routes;
        gauge.reset();
        for port in table.ports() {
            gauge
                .with_label_values(&[&port.to_string()])
                .set(table.routes(port).len() as i64);
        }
    }
}

/// (gateway port, route name) of every route in `table`.
fn route_keys(table: &RouteTable) -> HashSet<(u16, &str)> {
    table
        .ports()
        .flat_map(|port| table.routes(port).iter().map(move |t| (port, t.route.name.as_str())))
        .collect()
}

async fn bind(options: &Options, port: u16) -> Result<(u16, (SocketAddr, tokio::net::TcpListener)), BindError> {
    let addr = options
        .listen
        .get(&port)
        .copied()
        .unwrap_or(SocketAddr::new(options.bind, port));
    let socket = listener::bind(port, addr, options.limits.socket_buffers).await?;
    let local = socket.local_addr().map_err(|source| BindError { port, addr, source })?;
    Ok((port, (local, socket)))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
