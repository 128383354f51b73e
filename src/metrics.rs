//! Prometheus metrics, `sni_router_` prefixed, labelled by `listener` (the
//! gateway port) and `route` (the route name): closed sets, never the raw SNI.
//!
//! `Metrics` owns its registry, so one test process can run many routers.
//! Per connection, the byte counters are resolved once after routing; the
//! forwarding loop then only does atomic adds.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Label names, in one place.
pub mod label {
    /// Gateway port.
    pub const LISTENER: &str = "listener";
    /// Route name.
    pub const ROUTE: &str = "route";
    /// Refusal reason (`Reject::reason`).
    pub const REASON: &str = "reason";
    /// `upstream` (client → backend) or `downstream`.
    pub const DIRECTION: &str = "direction";
    /// The values of `direction`: (upstream, downstream).
    pub const DIRECTIONS: [&str; 2] = ["upstream", "downstream"];
    /// `success` or `failure`.
    pub const RESULT: &str = "result";
    /// How a forwarded connection ended (`End::label`).
    pub const END: &str = "end";
}

/// Every metric the router exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Connections accepted.
    pub accepted: IntCounterVec,
    /// Connections open now.
    pub active: IntGaugeVec,
    /// Connections refused, by reason.
    pub rejected: IntCounterVec,
    /// Connections routed to a backend.
    pub routed: IntCounterVec,
    /// Time from accept to a complete ClientHello.
    pub hello_seconds: HistogramVec,
    /// Time to connect to the backend.
    pub connect_seconds: HistogramVec,
    /// Backend connect failures (every endpoint failed).
    pub connect_failures: IntCounterVec,
    /// Bytes forwarded, counted as they move.
    pub bytes: IntCounterVec,
    /// Forwarded connections that ended, by how.
    pub ended: IntCounterVec,
    /// Connection tasks that panicked (a bug; the router keeps serving).
    pub panicked: IntCounterVec,
    /// Lifetime of routed connections.
    pub duration_seconds: HistogramVec,
    /// Plaintext PostgreSQL CancelRequests passed to a backend.
    pub pg_cancels_forwarded: IntCounterVec,
    /// Config reloads by result.
    pub reloads: IntCounterVec,
    /// Unix time of the last successful config load.
    pub config_loaded: IntGauge,
    /// Routes per listener in the current table.
    pub routes: IntGaugeVec,
}

const HELLO_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
];
const CONNECT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 10.0,
];
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0,
];

impl Metrics {
    /// A fresh registry with every metric registered, plus build info and
    /// process metrics (CPU, RSS, open file descriptors) where the OS has them.
    pub fn new() -> Self {
        // No registry-wide prefix: process metrics keep their standard `process_*` names.
        let registry = Registry::new();
        let m = Metrics {
            accepted: counter(
                &registry,
                "connections_accepted_total",
                "Connections accepted.",
                &[label::LISTENER],
            ),
            active: gauge(
                &registry,
                "connections_active",
                "Connections open now.",
                &[label::LISTENER],
            ),
            rejected: counter(
                &registry,
                "connections_rejected_total",
                "Connections refused before forwarding, by reason.",
                &[label::LISTENER, label::REASON],
            ),
            routed: counter(
                &registry,
                "connections_routed_total",
                "Connections forwarded to a route's backend.",
                &[label::LISTENER, label::ROUTE],
            ),
            hello_seconds: histogram(
                &registry,
                "client_hello_duration_seconds",
                "Time from accept to a complete ClientHello.",
                &[label::LISTENER],
                HELLO_BUCKETS,
            ),
            connect_seconds: histogram(
                &registry,
                "upstream_connect_duration_seconds",
                "Time to connect to the backend.",
                &[label::LISTENER, label::ROUTE],
                CONNECT_BUCKETS,
            ),
            connect_failures: counter(
                &registry,
                "upstream_connect_failures_total",
                "Connections whose backend could not be reached on any endpoint.",
                &[label::LISTENER, label::ROUTE],
            ),
            bytes: counter(
                &registry,
                "bytes_total",
                "Bytes forwarded; direction upstream is client to backend.",
                &[label::LISTENER, label::ROUTE, label::DIRECTION],
            ),
            ended: counter(
                &registry,
                "connections_ended_total",
                "Forwarded connections that ended, by how: closed, idle_timeout, client_error, backend_error, drain_timeout.",
                &[label::LISTENER, label::ROUTE, label::END],
            ),
            panicked: counter(
                &registry,
                "connections_panicked_total",
                "Connection tasks that panicked; each is logged with end=panic and the router keeps serving.",
                &[label::LISTENER],
            ),
            duration_seconds: histogram(
                &registry,
                "connection_duration_seconds",
                "Lifetime of forwarded connections.",
                &[label::LISTENER, label::ROUTE],
                DURATION_BUCKETS,
            ),
            pg_cancels_forwarded: counter(
                &registry,
                "pg_cancel_forwarded_total",
                "Plaintext PostgreSQL CancelRequests passed to the port's only backend.",
                &[label::LISTENER],
            ),
            reloads: counter(
                &registry,
                "config_reloads_total",
                "Config reloads by result.",
                &[label::RESULT],
            ),
            config_loaded: {
                let g = IntGauge::new(
                    format!("{PREFIX}config_last_load_timestamp_seconds"),
                    "Unix time of the last good config load.",
                )
                .expect("valid metric");
                registry.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            routes: gauge(
                &registry,
                "routes",
                "Routes per listener in the current table.",
                &[label::LISTENER],
            ),
            registry,
        };
        let info = gauge(&m.registry, "build_info", "Build information; always 1.", &["version"]);
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        {
            let _ = m
                .registry
                .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        }
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The handles a routed connection counts into, for one route on one
    /// listener. Resolved once per route and route table (see
    /// `Target::stats`): a label lookup hashes and locks, six per
    /// connection were measurable in the connection-rate bench.
    pub fn route_stats(&self, listener: &str, route: &str) -> RouteStats {
        let [up, down] = label::DIRECTIONS;
        RouteStats {
            routed: self.routed.with_label_values(&[listener, route]),
            connect_seconds: self.connect_seconds.with_label_values(&[listener, route]),
            duration_seconds: self.duration_seconds.with_label_values(&[listener, route]),
            bytes: (
                self.bytes.with_label_values(&[listener, route, up]),
                self.bytes.with_label_values(&[listener, route, down]),
            ),
            ended_vec: self.ended.clone(),
            ended: Default::default(),
            labels: [listener.into(), route.into()],
        }
    }

    /// Drop every series of a route a reload removed, so a router whose
    /// routes churn does not export every route it ever had. Connections
    /// still open on the route count on into the handles their `RouteStats`
    /// already holds, which are no longer exported; an `ended` series such a
    /// connection needs first comes back until the next reload drops it.
    pub fn forget_route(&self, listener: &str, route: &str) {
        let _ = self.routed.remove_label_values(&[listener, route]);
        let _ = self.connect_failures.remove_label_values(&[listener, route]);
        let _ = self.connect_seconds.remove_label_values(&[listener, route]);
        let _ = self.duration_seconds.remove_label_values(&[listener, route]);
        for direction in label::DIRECTIONS {
            let _ = self.bytes.remove_label_values(&[listener, route, direction]);
        }
        for end in crate::forward::End::LABELS {
            let _ = self.ended.remove_label_values(&[listener, route, end]);
        }
    }

    /// The ClientHello histogram of one listener.
    pub fn hello(&self, listener: &str) -> Histogram {
        self.hello_seconds.with_label_values(&[listener])
    }
}

/// One route's series on one listener, as a routed connection uses them.
#[derive(Clone)]
pub struct RouteStats {
    /// `connections_routed_total`.
    pub routed: IntCounter,
    /// `backend_connect_seconds`.
    pub connect_seconds: Histogram,
    /// `connection_duration_seconds`.
    pub duration_seconds: Histogram,
    /// `bytes_total`, (upstream, downstream).
    pub bytes: (IntCounter, IntCounter),
    // `connections_ended_total` by `End::LABELS`, each resolved when first
    // needed: a series appears only once a connection ended that way.
    ended_vec: IntCounterVec,
    ended: [std::sync::OnceLock<IntCounter>; crate::forward::End::LABELS.len()],
    labels: [String; 2],
}

impl RouteStats {
    /// `connections_ended_total` for `end` (one of `End::LABELS`).
    pub fn ended(&self, end: &crate::forward::End) -> &IntCounter {
        self.ended[end.index()].get_or_init(|| {
            let [listener, route] = &self.labels;
            self.ended_vec.with_label_values(&[listener, route, end.label()])
        })
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Every router metric's name starts with this.
const PREFIX: &str = "sni_router_";

// Registration fails only for duplicate or malformed names, which are constants here.
fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(format!("{PREFIX}{name}"), help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(format!("{PREFIX}{name}"), help), labels).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(format!("{PREFIX}{name}"), help).buckets(buckets.to_vec());
    let h = HistogramVec::new(opts, labels).expect("valid metric");
    registry.register(Box::new(h.clone())).expect("unique metric");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_prefixed_names_and_labels() {
        let m = Metrics::new();
        m.accepted.with_label_values(&["5432"]).inc();
        m.rejected.with_label_values(&["5432", "unknown_sni"]).inc_by(2);
        let (up, _) = m.route_stats("5432", "db").bytes;
        up.inc_by(42);
        let text = m.render();
        assert!(
            text.contains("sni_router_connections_accepted_total{listener=\"5432\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("sni_router_connections_rejected_total{listener=\"5432\",reason=\"unknown_sni\"} 2\n"));
        assert!(text.contains("sni_router_bytes_total{direction=\"upstream\",listener=\"5432\",route=\"db\"} 42\n"));
        assert!(text.contains("sni_router_build_info{version=\""), "{text}");
        #[cfg(target_os = "linux")]
        assert!(
            text.contains("\nprocess_resident_memory_bytes "),
            "standard process metrics: {text}"
        );
        // Two routers in one process keep separate figures.
        assert!(!Metrics::new().render().contains("connections_accepted_total{"));
    }
}
