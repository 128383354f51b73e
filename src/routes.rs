//! The route table: per gateway port, which backend serves which SNI.
//!
//! Built whole from a `Config` and swapped whole on reload; lookups never scan
//! the route list: one hash probe for the exact name, then one per label for
//! wildcards, longest suffix first. No I/O here.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use crate::config::{Config, Route, Service, SniPattern, TcpKeepalive};
use crate::metrics::{Metrics, RouteStats};

/// Default Kubernetes cluster domain for `<svc>.<ns>.svc.<domain>`.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// How backend services become addresses: the cluster domain and any
/// `--backend SERVICE.NAMESPACE=HOST:PORT` overrides.
#[derive(Debug, Clone, Default)]
pub struct Backends {
    /// Cluster domain (`cluster.local` when empty).
    pub cluster_domain: String,
    /// `service.namespace` → one or more `host:port`.
    pub overrides: HashMap<String, Vec<String>>,
}

/// A route ready to serve: the config route plus where its backend is.
#[derive(Clone)]
pub struct Target {
    /// The route as configured.
    pub route: Route,
    /// `host:port` candidates, tried in order (each may resolve to several addresses).
    pub endpoints: Vec<String>,
    /// True when `endpoints` came from a `--backend` override.
    pub overridden: bool,
    /// The route's metric handles, resolved on its first connection.
    stats: OnceLock<RouteStats>,
}

impl Target {
    /// A target with no metric handles resolved yet.
    pub fn new(route: Route, endpoints: Vec<String>, overridden: bool) -> Self {
        Self {
            route,
            endpoints,
            overridden,
            stats: OnceLock::new(),
        }
    }

    /// This route's series in `metrics`, looked up once per route table
    /// rather than per connection. A table serves one router, so one
    /// `Metrics`: the first one asked is the one kept.
    pub fn stats(&self, metrics: &Metrics) -> &RouteStats {
        self.stats.get_or_init(|| {
            let listener = self.route.gateway_port.to_string();
            metrics.route_stats(&listener, &self.route.name)
        })
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("route", &self.route)
            .field("endpoints", &self.endpoints)
            .field("overridden", &self.overridden)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        (&self.route, &self.endpoints, self.overridden) == (&other.route, &other.endpoints, other.overridden)
    }
}

/// Routes of one gateway port.
#[derive(Debug, Default)]
pub struct PortRoutes {
    keepalive: Option<TcpKeepalive>,
    exact: HashMap<String, Arc<Target>>,
    wildcard: HashMap<String, Arc<Target>>,
    all: Vec<Arc<Target>>,
}

/// Every gateway port's routes.
#[derive(Debug, Default)]
pub struct RouteTable {
    ports: BTreeMap<u16, PortRoutes>,
}

// === impl Backends ===

impl Backends {
    /// The `host:port` candidates for a service.
    pub fn endpoints(&self, service: &Service) -> (Vec<String>, bool) {
        let key = format!("{}.{}", service.name, service.namespace);
        if let Some(list) = self.overrides.get(&key) {
            return (list.clone(), true);
        }
        let domain = if self.cluster_domain.is_empty() {
            DEFAULT_CLUSTER_DOMAIN
        } else {
            &self.cluster_domain
        };
        (
            vec![format!(
                "{}.{}.svc.{}:{}",
                service.name, service.namespace, domain, service.port
            )],
            false,
        )
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// Build the table; `Config` already guarantees one route per (port, SNI).
    pub fn new(config: &Config, backends: &Backends) -> Self {
        let mut ports: BTreeMap<u16, PortRoutes> = BTreeMap::new();
        for route in &config.routes {
            let (endpoints, overridden) = backends.endpoints(&route.service);
            let target = Arc::new(Target::new(route.clone(), endpoints, overridden));
            let port = ports.entry(route.gateway_port).or_default();
            match &route.sni {
                SniPattern::Exact(name) => port.exact.insert(name.clone(), target.clone()),
                SniPattern::Wildcard(suffix) => port.wildcard.insert(suffix.clone(), target.clone()),
            };
            // Envoy Gateway sets keepalive per listener; routes sharing a port
            // share one socket option, so the first route that sets one wins
            // (`check` reports disagreeing ones).
            if port.keepalive.is_none() {
                port.keepalive = route.keepalive;
            }
            port.all.push(target);
        }
        Self { ports }
    }

    /// The route serving `sni` on gateway port `port`: case-insensitive, one
    /// trailing dot ignored, exact name first, then the longest wildcard suffix.
    pub fn lookup(&self, port: u16, sni: &str) -> Option<&Arc<Target>> {
        self.ports.get(&port)?.lookup(sni)
    }

    /// Gateway ports with at least one route, ascending.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.keys().copied()
    }

    /// The routes of one port, in file order.
    pub fn routes(&self, port: u16) -> &[Arc<Target>] {
        self.ports.get(&port).map_or(&[], |p| &p.all)
    }

    /// The downstream TCP keepalive of a gateway port, from its routes' `clientTrafficPolicy`.
    pub fn keepalive(&self, port: u16) -> Option<TcpKeepalive> {
        self.ports.get(&port)?.keepalive
    }

    /// Every route, by port then file order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Target>> + '_ {
        self.ports.values().flat_map(|p| p.all.iter())
    }
}

impl PortRoutes {
    fn lookup(&self, sni: &str) -> Option<&Arc<Target>> {
        let sni = sni.strip_suffix('.').unwrap_or(sni);
        if sni.is_empty() {
            return None;
        }
        // Clients send lowercase names almost always: avoid the allocation then.
        let lowered;
        let name = if sni.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = sni.to_ascii_lowercase();
            lowered.as_str()
        } else {
            sni
        };
        if let Some(t) = self.exact.get(name) {
            return Some(t);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        // `*.example.com` covers any name with at least one more character in
        // front (Envoy searches for the dot from index 1); try the suffix after
        // each dot, longest first.
        let mut from = 1;
        while let Some(dot) = name.get(from..).and_then(|rest| rest.find('.')) {
            let at = from + dot;
            if let Some(t) = self.wildcard.get(&name[at + 1..]) {
                return Some(t);
            }
            from = at + 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn table(yaml: &str) -> RouteTable {
        let config = crate::config::load(yaml, Path::new("t.yaml")).unwrap();
        let mut overrides = HashMap::new();
        overrides.insert(
            "b.ns".to_string(),
            vec!["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()],
        );
        RouteTable::new(
            &config,
            &Backends {
                cluster_domain: String::new(),
                overrides,
            },
        )
    }

    const ROUTES: &str = "\
routes:
  tls:
    - {fqdn: db.example.com, service: {name: exact, port: 1}}
    - {fqdn: '*.example.com', name: wide, service: {name: wide, port: 1}}
    - {fqdn: '*.lab.example.com', name: narrow, service: {name: narrow, port: 1}}
    - {fqdn: db.example.com, name: db2, gatewayPort: 5432, service: {name: other, port: 1}}
    - {fqdn: x.example.com, name: b, namespace: ns, service: {name: b, port: 1}}
";

    fn hit(t: &RouteTable, port: u16, sni: &str) -> Option<String> {
        t.lookup(port, sni).map(|t| t.route.service.name.clone())
    }

    #[test]
    fn exact_beats_wildcard_and_longer_suffix_beats_shorter() {
        let t = table(ROUTES);
        assert_eq!(hit(&t, 443, "db.example.com").as_deref(), Some("exact"));
        assert_eq!(hit(&t, 443, "web.example.com").as_deref(), Some("wide"));
        assert_eq!(hit(&t, 443, "a.b.example.com").as_deref(), Some("wide"));
        assert_eq!(hit(&t, 443, "pg.lab.example.com").as_deref(), Some("narrow"));
        assert_eq!(hit(&t, 443, "a.pg.lab.example.com").as_deref(), Some("narrow"));
        assert_eq!(hit(&t, 443, "lab.example.com").as_deref(), Some("wide"));
        assert_eq!(hit(&t, 443, "example.com"), None);
        assert_eq!(hit(&t, 443, "other.org"), None);
    }

    #[test]
    fn case_insensitive_and_one_trailing_dot() {
        let t = table(ROUTES);
        assert_eq!(hit(&t, 443, "DB.Example.COM").as_deref(), Some("exact"));
        assert_eq!(hit(&t, 443, "db.example.com.").as_deref(), Some("exact"));
        assert_eq!(hit(&t, 443, "db.example.com.."), None);
        assert_eq!(hit(&t, 443, "."), None);
        assert_eq!(hit(&t, 443, ""), None);
    }

    #[test]
    fn per_port() {
        let t = table(ROUTES);
        assert_eq!(hit(&t, 5432, "db.example.com").as_deref(), Some("other"));
        assert_eq!(hit(&t, 5432, "web.example.com"), None);
        assert_eq!(hit(&t, 6379, "db.example.com"), None);
        assert_eq!(t.ports().collect::<Vec<_>>(), vec![443, 5432]);
        assert_eq!(t.routes(443).len(), 4);
    }

    #[test]
    fn backends_from_cluster_dns_or_overrides() {
        let t = table(ROUTES);
        let exact = t.lookup(443, "db.example.com").unwrap();
        assert_eq!(exact.endpoints, vec!["exact.envoy-gateway.svc.cluster.local:1"]);
        assert!(!exact.overridden);
        let b = t.lookup(443, "x.example.com").unwrap();
        assert_eq!(b.endpoints, vec!["127.0.0.1:1", "127.0.0.1:2"]);
        assert!(b.overridden);
    }
}
