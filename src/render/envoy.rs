//! `render --to envoy`: an Envoy v3 static bootstrap that does what
//! `sni-router run` does with the same file and flags, as far as Envoy can:
//! one listener per gateway port with the TLS inspector, one filter chain per
//! route matching `server_names`, `tcp_proxy` to one cluster per backend, the
//! same timeouts, and an admin listener. What Envoy cannot do is said in
//! comments in the output and returned as notes for stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::emit::{yaml_document, Map, Node};
use crate::config::{Config, SniPattern, TcpKeepalive};
use crate::routes::{Backends, RouteTable, Target};

/// Envoy Gateway's per-connection buffer limit (Envoy's own default is 1 MiB).
pub const BUFFER_LIMIT_BYTES: u32 = 32 * 1024;

/// Linux socket option numbers for downstream TCP keepalive, as Envoy Gateway
/// sets them from a ClientTrafficPolicy's `tcpKeepalive`.
const SOL_SOCKET: i64 = 1;
const SO_KEEPALIVE: i64 = 9;
const IPPROTO_TCP: i64 = 6;
const TCP_KEEPIDLE: i64 = 4;
const TCP_KEEPINTVL: i64 = 5;
const TCP_KEEPCNT: i64 = 6;

/// What `run` would be started with, as far as it changes the bootstrap.
#[derive(Debug, Clone)]
pub struct Options {
    /// Cluster domain and `--backend` overrides.
    pub backends: Backends,
    /// Address for gateway ports without a `--listen` entry.
    pub bind: IpAddr,
    /// `--listen PORT=ADDR:PORT`.
    pub listen: BTreeMap<u16, SocketAddr>,
    /// `listener_filters_timeout`.
    pub hello_timeout: Duration,
    /// TLS inspector `max_client_hello_size`.
    pub max_hello: usize,
    /// Cluster `connect_timeout`.
    pub connect_timeout: Duration,
    /// `tcp_proxy` `idle_timeout`.
    pub idle_timeout: Duration,
    /// Admin listener, if any.
    pub admin: Option<SocketAddr>,
    /// The values file name, for the header comment.
    pub source: String,
}

/// The bootstrap and what Envoy does differently from `run`.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The bootstrap as one YAML document with comments.
    pub yaml: String,
    /// The bootstrap without comments.
    pub tree: Node,
    /// Differences from `run`, one sentence each, for stderr.
    pub notes: Vec<String>,
}

/// The TLS inspector cannot go past 64 KiB (Envoy's limit for `max_client_hello_size`).
const ENVOY_MAX_CLIENT_HELLO: usize = 64 * 1024;

/// Render the bootstrap for `config`.
pub fn render(config: &Config, options: &Options) -> Rendered {
    let table = RouteTable::new(config, &options.backends);
    let mut notes = vec![
        "unknown or missing SNI: Envoy finds no filter chain and closes the connection without a TLS \
         alert; `run` sends a fatal unrecognized_name (or decode_error) alert so the client can say why"
            .to_string(),
        "a backend that cannot be reached: Envoy closes the client connection; `run` sends a TLS \
         internal_error alert"
            .to_string(),
        "plaintext first bytes (a PostgreSQL StartupMessage without TLS, a Redis command, a PostgreSQL \
         CancelRequest): Envoy closes the connection; `run` answers with the protocol's own error, and \
         forwards a CancelRequest when one route serves the port"
            .to_string(),
        "several endpoints (resolved addresses or --backend entries): Envoy balances connections round \
         robin and tries one per connection; `run` tries them in order until one connects"
            .to_string(),
    ];
    let mut listeners = Vec::new();
    let mut clusters: BTreeMap<String, Node> = BTreeMap::new();
    let mut postgres_ports = Vec::new();
    for port in table.ports() {
        let routes = table.routes(port);
        let looks_postgres = port == 5432 || routes.iter().any(|t| t.route.service.port == 5432);
        if looks_postgres {
            postgres_ports.push(port.to_string());
        }
        let (keepalive, keepalive_note) = port_keepalive(port, routes);
        if let Some(note) = keepalive_note {
            notes.push(note);
        }
        let mut chains = Vec::new();
        for target in routes {
            let cluster = cluster_name(target);
            clusters
                .entry(cluster.clone())
                .or_insert_with(|| cluster_node(&cluster, target, options));
            chains.push(filter_chain(port, target, &cluster, options));
        }
        listeners.push(listener(port, chains, keepalive, looks_postgres, options));
    }
    if !postgres_ports.is_empty() {
        notes.insert(
            0,
            format!(
                "PostgreSQL's classic SSLRequest negotiation (libpq before 17, or sslnegotiation=postgres) is \
                 not TLS, so the TLS inspector sees no SNI and Envoy closes the connection (port {}); clients \
                 must use sslnegotiation=direct (libpq 17+); `run` answers the SSLRequest itself, reads the \
                 SNI and replays the negotiation to the backend",
                postgres_ports.join(", ")
            ),
        );
    }
    if options.max_hello > ENVOY_MAX_CLIENT_HELLO {
        notes.push(format!(
            "--max-hello-size {} exceeds what the TLS inspector allows; the bootstrap uses {ENVOY_MAX_CLIENT_HELLO}",
            options.max_hello
        ));
    }

    let mut root = Map::new();
    if let Some(admin) = options.admin {
        root.push("admin", Map::new().with("address", address(admin)));
    }
    root.push(
        "static_resources",
        Map::new()
            .with("listeners", listeners)
            .with("clusters", clusters.into_values().collect::<Vec<_>>()),
    );
    let tree = Node::Map(root);
    let mut header = vec![
        format!(
            "Envoy v3 static bootstrap rendered by sni-router from {}: the routes.tls routes",
            options.source
        ),
        "as `sni-router run` serves them (envoy -c this-file). What Envoy does differently:".to_string(),
    ];
    for note in &notes {
        header.push(String::new());
        header.extend(wrap(&format!("- {note}."), 88));
    }
    let mut yaml = String::new();
    yaml_document(&mut yaml, &header, &tree);
    Rendered {
        yaml,
        tree: strip_comments(&tree),
        notes,
    }
}

fn listener(port: u16, chains: Vec<Node>, keepalive: Option<TcpKeepalive>, postgres: bool, options: &Options) -> Node {
    let addr = options
        .listen
        .get(&port)
        .copied()
        .unwrap_or(SocketAddr::new(options.bind, port));
    let mut comment = vec![format!("gateway port {port}")];
    if postgres {
        comment
            .push("PostgreSQL clients must start TLS directly (sslnegotiation=direct): no SSLRequest here".to_string());
    }
    let inspector = Map::new()
        .with(
            "@type",
            "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        )
        .with(
            "max_client_hello_size",
            options.max_hello.min(ENVOY_MAX_CLIENT_HELLO) as u32,
        );
    let mut map = Map::new()
        .with_comment(&comment, "name", format!("tls_passthrough_{port}"))
        .with("address", address(addr))
        .with_comment(
            &["run: --hello-timeout; on expiry the connection is closed".to_string()],
            "listener_filters_timeout",
            duration(options.hello_timeout),
        )
        .with("continue_on_listener_filters_timeout", false)
        .with(
            "listener_filters",
            vec![Node::Map(
                Map::new()
                    .with("name", "envoy.filters.listener.tls_inspector")
                    .with("typed_config", inspector),
            )],
        )
        .with("per_connection_buffer_limit_bytes", BUFFER_LIMIT_BYTES);
    if let Some(keepalive) = keepalive {
        map = map.with_comment(
            &["clientTrafficPolicy.tcpKeepalive, set on the listening socket as Envoy Gateway does".to_string()],
            "socket_options",
            keepalive_options(&keepalive),
        );
    }
    Node::Map(map.with("filter_chains", chains))
}

fn filter_chain(port: u16, target: &Target, cluster: &str, options: &Options) -> Node {
    let route = &target.route;
    let server_name = match &route.sni {
        SniPattern::Exact(name) => name.clone(),
        // Envoy matches `*.suffix` on any name under suffix, exact names first,
        // then the longest suffix: the same order as `run`.
        SniPattern::Wildcard(suffix) => format!("*.{suffix}"),
    };
    let proxy = Map::new()
        .with(
            "@type",
            "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        )
        .with("stat_prefix", format!("tls_passthrough_{port}_{}", route.name))
        .with("cluster", cluster)
        .with("idle_timeout", duration(options.idle_timeout));
    Node::Map(
        Map::new()
            .with_comment(
                &[format!(
                    "routes.tls[{}] (line {}): {}/{}",
                    route.index, route.at.line, route.namespace, route.name
                )],
                "name",
                format!("{}/{}", route.namespace, route.name),
            )
            .with(
                "filter_chain_match",
                Map::new().with("server_names", vec![Node::Str(server_name)]),
            )
            .with(
                "filters",
                vec![Node::Map(
                    Map::new()
                        .with("name", "envoy.filters.network.tcp_proxy")
                        .with("typed_config", proxy),
                )],
            ),
    )
}

/// One cluster per backend service (or per `--backend` override set).
fn cluster_name(target: &Target) -> String {
    let s = &target.route.service;
    format!("{}/{}:{}", s.namespace, s.name, s.port)
}

fn cluster_node(name: &str, target: &Target, options: &Options) -> Node {
    let endpoints: Vec<(String, u16)> = target.endpoints.iter().filter_map(|e| split_host_port(e)).collect();
    let all_ips = endpoints.iter().all(|(h, _)| h.parse::<IpAddr>().is_ok());
    let lb_endpoints: Vec<Node> = endpoints
        .iter()
        .map(|(host, port)| {
            Node::Map(Map::new().with(
                "endpoint",
                Map::new().with(
                    "address",
                    Map::new().with(
                        "socket_address",
                        Map::new().with("address", host.as_str()).with("port_value", *port),
                    ),
                ),
            ))
        })
        .collect();
    let comment = if target.overridden {
        format!(
            "--backend {}.{}",
            target.route.service.name, target.route.service.namespace
        )
    } else {
        "resolved through DNS like `run` does, every address (A and AAAA) a host".to_string()
    };
    let mut map = Map::new()
        .with_comment(&[comment], "name", name)
        .with("type", if all_ips { "STATIC" } else { "STRICT_DNS" })
        .with("connect_timeout", duration(options.connect_timeout));
    if !all_ips {
        map.push("dns_lookup_family", "ALL");
    }
    Node::Map(map.with("per_connection_buffer_limit_bytes", BUFFER_LIMIT_BYTES).with(
        "load_assignment",
        Map::new().with("cluster_name", name).with(
            "endpoints",
            vec![Node::Map(Map::new().with("lb_endpoints", lb_endpoints))],
        ),
    ))
}

/// The keepalive of a port: one Envoy listener per port carries one socket
/// setting, so the first route of the port that sets one wins.
fn port_keepalive(port: u16, routes: &[std::sync::Arc<Target>]) -> (Option<TcpKeepalive>, Option<String>) {
    let set: Vec<&Target> = routes
        .iter()
        .filter(|t| t.route.keepalive.is_some())
        .map(|t| &**t)
        .collect();
    let Some(first) = set.first() else {
        return (None, None);
    };
    let distinct: BTreeSet<String> = routes.iter().map(|t| format!("{:?}", t.route.keepalive)).collect();
    let note = (distinct.len() > 1).then(|| {
        format!(
            "gateway port {port}: routes differ in clientTrafficPolicy.tcpKeepalive, but keepalive is a \
             property of the port's listening socket; the bootstrap uses that of {} for the whole port",
            first.route.name
        )
    });
    (first.route.keepalive, note)
}

fn keepalive_options(k: &TcpKeepalive) -> Vec<Node> {
    let option = |description: &str, level: i64, name: i64, value: i64| {
        Node::Map(
            Map::new()
                .with("description", description)
                .with("level", Node::Int(level))
                .with("name", Node::Int(name))
                .with("int_value", Node::Int(value))
                .with("state", "STATE_LISTENING"),
        )
    };
    let mut out = vec![option("SO_KEEPALIVE", SOL_SOCKET, SO_KEEPALIVE, 1)];
    if let Some(idle) = k.idle_time {
        out.push(option("TCP_KEEPIDLE", IPPROTO_TCP, TCP_KEEPIDLE, whole_seconds(idle)));
    }
    if let Some(interval) = k.interval {
        out.push(option(
            "TCP_KEEPINTVL",
            IPPROTO_TCP,
            TCP_KEEPINTVL,
            whole_seconds(interval),
        ));
    }
    if let Some(probes) = k.probes {
        out.push(option("TCP_KEEPCNT", IPPROTO_TCP, TCP_KEEPCNT, probes.into()));
    }
    out
}

/// Socket options take whole seconds; the kernel refuses 0.
fn whole_seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX)
}

fn address(addr: SocketAddr) -> Map {
    Map::new().with(
        "socket_address",
        Map::new()
            .with("address", addr.ip().to_string())
            .with("port_value", addr.port()),
    )
}

/// A `Duration` in canonical proto3 JSON: `15s`, or 3, 6 or 9 fractional digits (`2.500s`).
fn duration(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    match nanos {
        0 => format!("{}s", d.as_secs()),
        n if n % 1_000_000 == 0 => format!("{}.{:03}s", d.as_secs(), n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}.{:06}s", d.as_secs(), n / 1_000),
        n => format!("{}.{n:09}s", d.as_secs()),
    }
}

/// `host:port` or `[v6]:port`.
fn split_host_port(endpoint: &str) -> Option<(String, u16)> {
    let (host, port) = endpoint.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?))
}

fn strip_comments(node: &Node) -> Node {
    match node {
        Node::Map(map) => Node::Map(Map(map
            .0
            .iter()
            .map(|e| super::emit::Entry {
                comment: Vec::new(),
                key: e.key.clone(),
                value: strip_comments(&e.value),
            })
            .collect())),
        Node::Seq(items) => Node::Seq(items.iter().map(strip_comments).collect()),
        other => other.clone(),
    }
}

/// Wrap a sentence to comment lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
            line.push_str("  ");
        }
        if !line.is_empty() && !line.ends_with("  ") {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;

    fn options() -> Options {
        Options {
            backends: Backends::default(),
            bind: "0.0.0.0".parse().unwrap(),
            listen: BTreeMap::new(),
            hello_timeout: Duration::from_secs(15),
            max_hello: 64 * 1024,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
            admin: Some("127.0.0.1:9901".parse().unwrap()),
            source: "v.yaml".into(),
        }
    }

    fn config(text: &str) -> Config {
        crate::config::load(text, Path::new("v.yaml")).expect("loads")
    }

    const FILE: &str = "routes:\n  tls:\n\
        \x20   - {fqdn: db.example.com, gatewayPort: 5432, service: {name: pg, port: 5432},\n\
        \x20      clientTrafficPolicy: {tcpKeepalive: {idleTime: 2m, interval: 30s, probes: 3}}}\n\
        \x20   - {fqdn: '*.example.com', name: wild, gatewayPort: 5432, service: {name: pg, port: 5432}}\n\
        \x20   - {fqdn: r.example.com, namespace: ns, gatewayPort: 6379, service: {name: r, port: 6379}}\n";

    #[test]
    fn one_listener_per_port_one_chain_per_route_one_cluster_per_backend() {
        let r = render(&config(FILE), &options());
        let Node::Map(root) = &r.tree else { panic!() };
        let Some(Node::Map(resources)) = root.get("static_resources") else {
            panic!()
        };
        let Some(Node::Seq(listeners)) = resources.get("listeners") else {
            panic!()
        };
        let Some(Node::Seq(clusters)) = resources.get("clusters") else {
            panic!()
        };
        assert_eq!(listeners.len(), 2);
        assert_eq!(clusters.len(), 2, "the two 5432 routes share one backend");
        assert!(
            r.yaml.contains("server_names:\n              - \"*.example.com\"\n"),
            "{}",
            r.yaml
        );
        assert!(
            r.yaml.contains("address: pg.envoy-gateway.svc.cluster.local\n"),
            "{}",
            r.yaml
        );
        assert!(r.yaml.contains("idle_timeout: 3600s\n"));
        assert!(r.yaml.contains("connect_timeout: 10s\n"));
        assert!(r.yaml.contains("listener_filters_timeout: 15s\n"));
        assert!(r.yaml.contains("description: TCP_KEEPIDLE\n"));
        assert!(
            r.yaml.contains("int_value: 120\n"),
            "2m idle time in seconds: {}",
            r.yaml
        );
        assert!(r.notes.iter().any(|n| n.contains("SSLRequest")));
        assert!(
            r.notes.iter().any(|n| n.contains("port 5432: routes differ")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn overrides_become_static_endpoints_and_listen_moves_a_port() {
        let mut o = options();
        let mut overrides = HashMap::new();
        overrides.insert(
            "r.ns".to_string(),
            vec!["127.0.0.1:16379".to_string(), "[::1]:16380".to_string()],
        );
        o.backends.overrides = overrides;
        o.listen.insert(6379, "127.0.0.1:7000".parse().unwrap());
        o.admin = None;
        let r = render(&config(FILE), &o);
        assert!(r.yaml.contains("type: STATIC\n"), "{}", r.yaml);
        assert!(
            r.yaml.contains("address: \"::1\"\n") || r.yaml.contains("address: ::1\n"),
            "{}",
            r.yaml
        );
        assert!(r.yaml.contains("port_value: 7000\n"));
        assert!(!r.yaml.contains("admin:"));
    }

    #[test]
    fn durations_in_protobuf_json_form() {
        assert_eq!(duration(Duration::from_secs(15)), "15s");
        assert_eq!(duration(Duration::from_millis(1500)), "1.500s");
        assert_eq!(duration(Duration::from_millis(250)), "0.250s");
        assert_eq!(duration(Duration::from_micros(1)), "0.000001s");
        assert_eq!(duration(Duration::from_nanos(5)), "0.000000005s");
    }
}
