//! The assembled router: a route table and one listener per gateway port.
//! `run`, `demo` and the tests all start one of these.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};

use crate::access::Access;
use crate::config::Config;
use crate::listener::{self, BindError, Shared};
use crate::routes::{Backends, RouteTable};
use crate::session::Limits;

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
            allow: Access::default(),
            accept_proxy_protocol: false,
            send_proxy_protocol: false,
        }
    }
}

/// A running router.
pub struct Router {
    addrs: BTreeMap<u16, SocketAddr>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    open: mpsc::Sender<()>,
    all_closed: mpsc::Receiver<()>,
}

impl Router {
    /// Bind every gateway port of `config` (all or nothing) and start serving.
    pub async fn start(config: &Config, options: Options) -> Result<Self, BindError> {
        let table = RouteTable::new(config, &options.backends);
        let mut listeners = Vec::new();
        for port in table.ports() {
            let addr = options
                .listen
                .get(&port)
                .copied()
                .unwrap_or(SocketAddr::new(options.bind, port));
            let socket = listener::bind(port, addr).await?;
            let local = socket.local_addr().map_err(|source| BindError { port, addr, source })?;
            listeners.push((port, local, socket));
        }
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(table),
            limits: options.limits,
        });
        let (stop, stop_rx) = watch::channel(false);
        let (open, all_closed) = mpsc::channel(1);
        let mut addrs = BTreeMap::new();
        for (port, local, socket) in listeners {
            tracing::info!(listener = port, address = %local, "listening");
            addrs.insert(port, local);
            tokio::spawn(listener::serve(
                socket,
                port,
                shared.clone(),
                stop_rx.clone(),
                open.clone(),
            ));
        }
        Ok(Self {
            addrs,
            shared,
            stop,
            open,
            all_closed,
        })
    }

    /// The local address serving gateway port `port`.
    pub fn local_addr(&self, port: u16) -> Option<SocketAddr> {
        self.addrs.get(&port).copied()
    }

    /// Gateway port → local address, for every listener.
    pub fn addrs(&self) -> &BTreeMap<u16, SocketAddr> {
        &self.addrs
    }

    /// The route table in use.
    pub fn table(&self) -> Arc<RouteTable> {
        self.shared.table.load_full()
    }

    /// Stop accepting, then wait up to `drain` for open connections to end.
    /// True when every connection ended in time.
    pub async fn shutdown(self, drain: Duration) -> bool {
        let Router {
            stop,
            open,
            mut all_closed,
            ..
        } = self;
        let _ = stop.send(true);
        drop(open);
        // Listener tasks hold a sender too; they drop it once they see `stop`.
        tokio::time::timeout(drain, all_closed.recv()).await.is_ok()
    }
}
