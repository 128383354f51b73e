//! `render --to kubernetes`: the manifests that run `sni-router` in a cluster
//! for one values file: the ConfigMap holding the file as written, a
//! Deployment of interchangeable replicas (the router keeps no shared state),
//! a Service of type LoadBalancer with one port per `gatewayPort` of the file,
//! a PodDisruptionBudget and a Prometheus Operator PodMonitor.
//!
//! The ports come from the loaded config, so the Service cannot drift from
//! the routes; `config/kubernetes/sni-router.yaml` is this output for
//! `config/kubernetes/values.yaml`, checked by `tests/packaging.rs`.
//!
//! The admin endpoint (probes, `/metrics`) is not behind any Service: the
//! kubelet probes each pod and Prometheus scrapes each pod through the
//! PodMonitor, so nothing outside the pod network reaches `/drain_listeners`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::emit::{yaml_document, yaml_str, Map, Node};
use crate::cli::{AdminAddr, RenderArgs};
use crate::config::Config;
use crate::forward::DEFAULT_IDLE_TIMEOUT;
use crate::routes::DEFAULT_CLUSTER_DOMAIN;
use crate::session::DEFAULT_HELLO_TIMEOUT;
use crate::sniff::DEFAULT_MAX_HELLO;
use crate::upstream::DEFAULT_CONNECT_TIMEOUT;

/// Name of every object (the ConfigMap adds `-config`).
pub const NAME: &str = "sni-router";
/// Where the ConfigMap is mounted: a directory, never a `subPath`, so the
/// kubelet's `..data` symlink swap reaches the router's file watch.
pub const CONFIG_DIR: &str = "/etc/sni-router";
/// The ConfigMap key, and the file name under [`CONFIG_DIR`].
pub const CONFIG_KEY: &str = "values.yaml";
/// The admin port when `--admin` does not name one.
pub const ADMIN_PORT: u16 = 9901;
/// Replicas: two, so one node or one rollout never takes the gateway down.
pub const REPLICAS: u32 = 2;
/// `run --drain-timeout` as rendered (its default).
pub const DRAIN_TIMEOUT_SECS: u64 = 30;
/// preStop sleep: time for the EndpointSlice update to reach every node's
/// kube-proxy and the load balancer before SIGTERM stops the listeners.
pub const PRESTOP_SLEEP_SECS: u64 = 5;
/// Grace after the drain timeout before the kubelet sends SIGKILL.
const GRACE_MARGIN_SECS: u64 = 10;
/// uid and gid of distroless `nonroot`, as in the Dockerfile's `USER`.
const NONROOT_ID: u32 = 65532;

/// What to render.
#[derive(Debug, Clone)]
pub struct Options {
    /// The container image.
    pub image: String,
    /// The admin port in the pod (bound on all addresses there).
    pub admin_port: u16,
    /// Gateway port -> the port the container listens on, when not the same
    /// (`--listen PORT=0.0.0.0:OTHER`).
    pub listen: BTreeMap<u16, SocketAddr>,
    /// Flags for `run` beyond the ones every pod gets (cluster domain,
    /// backends, timeouts that differ from the defaults).
    pub extra_args: Vec<String>,
    /// The values file name, for the header comment.
    pub source: String,
    /// Notes about the flags, printed with the render's own.
    pub notes: Vec<String>,
}

/// The manifests, and notes for stderr.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Multi-document YAML.
    pub yaml: String,
    /// What was adjusted or left out, and why.
    pub notes: Vec<String>,
}

/// Options from the flags `render` shares with `run`.
pub fn options(args: &RenderArgs, source: String) -> Options {
    let mut notes = Vec::new();
    let admin_port = match args.admin {
        AdminAddr::At(addr) => addr.port(),
        AdminAddr::Off => {
            notes.push(format!(
                "--admin off: the probes and the PodMonitor need the admin endpoint; it listens on 0.0.0.0:{ADMIN_PORT}"
            ));
            ADMIN_PORT
        }
    };
    let mut extra = Vec::new();
    let mut flag = |name: &str, value: String| {
        extra.push(format!("--{name}"));
        extra.push(value);
    };
    if args.bind != IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
        flag("bind", args.bind.to_string());
    }
    for (port, addr) in &args.listen {
        flag("listen", format!("{port}={addr}"));
    }
    for (service, endpoint) in &args.backend {
        flag("backend", format!("{service}={endpoint}"));
    }
    if args.cluster_domain != DEFAULT_CLUSTER_DOMAIN {
        flag("cluster-domain", args.cluster_domain.clone());
    }
    if args.hello_timeout != DEFAULT_HELLO_TIMEOUT {
        flag("hello-timeout", duration(args.hello_timeout));
    }
    if args.max_hello_size != DEFAULT_MAX_HELLO {
        flag("max-hello-size", args.max_hello_size.to_string());
    }
    if args.connect_timeout != DEFAULT_CONNECT_TIMEOUT {
        flag("connect-timeout", duration(args.connect_timeout));
    }
    if args.idle_timeout != DEFAULT_IDLE_TIMEOUT {
        flag("idle-timeout", duration(args.idle_timeout));
    }
    Options {
        image: format!("{NAME}:{}", env!("CARGO_PKG_VERSION")),
        admin_port,
        listen: args.listen.iter().copied().collect(),
        extra_args: extra,
        source,
        notes,
    }
}

/// Render the manifests for `config`, whose file text is `values_text`.
pub fn render(config: &Config, values_text: &str, options: &Options) -> Rendered {
    let mut notes = options.notes.clone();
    let gateway_ports: BTreeSet<u16> = config.routes.iter().map(|r| r.gateway_port).collect();
    let ports: Vec<Port> = gateway_ports
        .iter()
        .map(|&gateway| {
            let listen = options.listen.get(&gateway);
            if let Some(addr) = listen.filter(|a| !a.ip().is_unspecified()) {
                notes.push(format!(
                    "--listen {gateway}={addr}: in a pod only 0.0.0.0 or [::] reach the Service; \
                     the container port is {}",
                    addr.port()
                ));
            }
            Port {
                gateway,
                container: listen.map_or(gateway, |a| a.port()),
            }
        })
        .collect();
    if ports.iter().any(|p| p.container == options.admin_port) {
        notes.push(format!(
            "the admin port {} is also a gateway port: pass --admin 0.0.0.0:PORT with another port",
            options.admin_port
        ));
    }

    let mut docs: Vec<(Vec<String>, Node)> = Vec::new();
    if ports.is_empty() {
        notes.push("routes.tls is empty: no gateway ports, so no Service is rendered".to_string());
    } else {
        docs.push((Vec::new(), service(config, &ports)));
    }
    docs.push((Vec::new(), deployment(&ports, options)));
    docs.push((Vec::new(), pod_disruption_budget()));
    docs.push((
        vec![
            "Needs the Prometheus Operator's CRDs (monitoring.coreos.com/v1); without them".to_string(),
            "leave this object out (docs/kubernetes.md).".to_string(),
        ],
        pod_monitor(),
    ));

    let mut out = String::new();
    config_map(&mut out, &header(options, &ports), values_text);
    for (comment, doc) in &docs {
        yaml_document(&mut out, comment, doc);
    }
    Rendered { yaml: out, notes }
}

/// One gateway port and the port the container binds for it.
#[derive(Debug, Clone, Copy)]
struct Port {
    gateway: u16,
    container: u16,
}

impl Port {
    /// Container and Service port name (IANA_SVC_NAME: at most 15 characters).
    fn name(&self) -> String {
        format!("gw-{}", self.gateway)
    }
}

fn header(options: &Options, ports: &[Port]) -> Vec<String> {
    let list: Vec<String> = ports.iter().map(|p| p.gateway.to_string()).collect();
    vec![
        format!(
            "Rendered by sni-router {} from {}:",
            env!("CARGO_PKG_VERSION"),
            options.source
        ),
        format!("  sni-router render --to kubernetes --config {}", options.source),
        format!(
            "ConfigMap, LoadBalancer Service (gateway ports {}), Deployment, PDB, PodMonitor.",
            if list.is_empty() {
                "none".to_string()
            } else {
                list.join(", ")
            }
        ),
        "Render again when a gatewayPort changes; other edits of the values file only".to_string(),
        "need the ConfigMap updated: the router reloads it in place.".to_string(),
    ]
}

fn labels() -> Map {
    selector_labels()
        .with("app.kubernetes.io/component", "gateway")
        .with("app.kubernetes.io/version", env!("CARGO_PKG_VERSION"))
}

/// The labels selectors use: fixed, since a Deployment's selector is immutable.
fn selector_labels() -> Map {
    Map::new()
        .with("app.kubernetes.io/name", NAME)
        .with("app.kubernetes.io/instance", NAME)
}

fn metadata(name: &str) -> Map {
    Map::new().with("name", name).with("labels", labels())
}

fn config_map_name() -> String {
    format!("{NAME}-config")
}

/// The ConfigMap, written by hand so the values file stays a readable block
/// scalar, byte for byte as given.
fn config_map(out: &mut String, header: &[String], values_text: &str) {
    let head = Map::new()
        .with("apiVersion", "v1")
        .with("kind", "ConfigMap")
        .with("metadata", metadata(&config_map_name()));
    yaml_document(out, header, &Node::Map(head));
    out.push_str("data:\n");
    out.push_str(&format!("  {}: ", yaml_str(CONFIG_KEY)));
    out.push_str(&block_scalar(values_text, 4));
}

/// `text` as a YAML literal block scalar indented by `indent` (with the
/// indicator and chomping it needs to read back exactly), or as a
/// double-quoted string when a block cannot carry it (control characters,
/// carriage returns, trailing spaces on the last line).
fn block_scalar(text: &str, indent: usize) -> String {
    let printable = text.chars().all(|c| c == '\n' || c == '\t' || !c.is_control()) && !text.contains('\u{feff}');
    if text.is_empty() || !printable {
        return format!("{}\n", super::emit::json_string(text));
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    // Chomping: `|-` no final newline, `|` exactly one, `|+` keep them all.
    let chomp = if !text.ends_with('\n') {
        "-"
    } else if body.ends_with('\n') || body.is_empty() {
        "+"
    } else {
        ""
    };
    // A first line that starts with a space would set the indentation itself.
    let first = body.lines().find(|l| !l.is_empty()).unwrap_or("");
    let indicator = if first.starts_with(' ') {
        indent.to_string()
    } else {
        String::new()
    };
    let mut out = format!("|{indicator}{chomp}\n");
    let lines: Vec<&str> = if chomp == "+" {
        text.strip_suffix('\n').unwrap_or(text).split('\n').collect()
    } else {
        body.split('\n').collect()
    };
    for line in lines {
        if !line.is_empty() {
            out.extend(std::iter::repeat_n(' ', indent));
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn service(config: &Config, ports: &[Port]) -> Node {
    let mut meta = metadata(NAME);
    // The chart gives gateways.external.serviceAnnotations to Envoy's
    // LoadBalancer Service (address pools, internal LBs): same job here.
    if let Some(annotations) = config
        .values
        .external
        .as_ref()
        .and_then(|g| g.service_annotations.as_ref())
        .filter(|a| !a.is_empty())
    {
        let mut map = Map::new();
        for (k, v) in annotations {
            map.push(k, v.as_str());
        }
        meta.push("annotations", map);
    }
    let service_ports: Vec<Node> = ports
        .iter()
        .map(|p| {
            Node::Map(
                Map::new()
                    .with("name", p.name())
                    .with("port", p.gateway)
                    .with("targetPort", p.name())
                    .with("protocol", "TCP"),
            )
        })
        .collect();
    Node::Map(
        Map::new()
            .with("apiVersion", "v1")
            .with("kind", "Service")
            .with("metadata", meta)
            .with(
                "spec",
                Map::new()
                    .with("type", "LoadBalancer")
                    .with("selector", selector_labels())
                    .with_comment(
                        &["One port per gatewayPort of the values file; the admin port is not exposed.".to_string()],
                        "ports",
                        service_ports,
                    ),
            ),
    )
}

fn deployment(ports: &[Port], options: &Options) -> Node {
    let config_file = format!("{CONFIG_DIR}/{CONFIG_KEY}");
    let mut args: Vec<Node> = [
        "run",
        "--config",
        &config_file,
        "--admin",
        &format!("0.0.0.0:{}", options.admin_port),
        "--drain-timeout",
        &format!("{DRAIN_TIMEOUT_SECS}s"),
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| Node::from(*s))
    .collect();
    args.extend(options.extra_args.iter().map(Node::from));

    let mut container_ports: Vec<Node> = ports
        .iter()
        .map(|p| {
            Node::Map(
                Map::new()
                    .with("name", p.name())
                    .with("containerPort", p.container)
                    .with("protocol", "TCP"),
            )
        })
        .collect();
    container_ports.push(Node::Map(
        Map::new()
            .with("name", "admin")
            .with("containerPort", options.admin_port)
            .with("protocol", "TCP"),
    ));

    let probe = |path: &str, period: u32, failures: u32| {
        Map::new()
            .with("httpGet", Map::new().with("path", path).with("port", "admin"))
            .with("periodSeconds", period)
            .with("failureThreshold", failures)
    };
    let container = Map::new()
        .with("name", NAME)
        .with("image", options.image.as_str())
        .with("imagePullPolicy", "IfNotPresent")
        .with("args", args)
        .with("ports", container_ports)
        .with_comment(
            &["503 from the start until every listener is bound, and again once SIGTERM drains.".to_string()],
            "readinessProbe",
            probe("/ready", 5, 2),
        )
        .with("livenessProbe", probe("/healthz", 10, 3))
        .with(
            "lifecycle",
            Map::new().with_comment(
                &[
                    format!(
                        "Serve on for {PRESTOP_SLEEP_SECS}s while the pod leaves the EndpointSlices, then SIGTERM:"
                    ),
                    format!(
                        "stop accepting, give open connections --drain-timeout ({DRAIN_TIMEOUT_SECS}s). The sleep action"
                    ),
                    "needs no shell in the image (Kubernetes 1.30+).".to_string(),
                ],
                "preStop",
                Map::new().with("sleep", Map::new().with("seconds", PRESTOP_SLEEP_SECS)),
            ),
        )
        .with(
            "resources",
            Map::new()
                .with("requests", Map::new().with("cpu", "100m").with("memory", "64Mi"))
                .with("limits", Map::new().with("memory", "256Mi")),
        )
        .with(
            "securityContext",
            Map::new()
                .with("allowPrivilegeEscalation", false)
                .with("readOnlyRootFilesystem", true)
                .with("runAsNonRoot", true)
                .with("capabilities", Map::new().with("drop", vec![Node::from("ALL")])),
        )
        .with(
            "volumeMounts",
            vec![Node::Map(
                Map::new()
                    .with("name", "config")
                    .with("mountPath", CONFIG_DIR)
                    .with("readOnly", true),
            )],
        );

    let affinity = Map::new().with(
        "podAntiAffinity",
        Map::new().with(
            "preferredDuringSchedulingIgnoredDuringExecution",
            vec![Node::Map(
                Map::new().with("weight", 100u32).with(
                    "podAffinityTerm",
                    Map::new()
                        .with("topologyKey", "kubernetes.io/hostname")
                        .with("labelSelector", Map::new().with("matchLabels", selector_labels())),
                ),
            )],
        ),
    );
    let pod_security = Map::new()
        .with("runAsNonRoot", true)
        .with("runAsUser", NONROOT_ID)
        .with("runAsGroup", NONROOT_ID)
        .with("seccompProfile", Map::new().with("type", "RuntimeDefault"))
        .with_comment(
            &[
                "Ports below 1024 (443) without root or capabilities: a namespaced sysctl that".to_string(),
                "Kubernetes allows by default (1.22+); Docker and containerd 2 set it already.".to_string(),
            ],
            "sysctls",
            vec![Node::Map(
                Map::new()
                    .with("name", "net.ipv4.ip_unprivileged_port_start")
                    .with("value", "0"),
            )],
        );
    let pod_spec = Map::new()
        .with("automountServiceAccountToken", false)
        .with("enableServiceLinks", false)
        .with_comment(
            &[format!(
                "preStop {PRESTOP_SLEEP_SECS}s + --drain-timeout {DRAIN_TIMEOUT_SECS}s + {GRACE_MARGIN_SECS}s margin."
            )],
            "terminationGracePeriodSeconds",
            PRESTOP_SLEEP_SECS + DRAIN_TIMEOUT_SECS + GRACE_MARGIN_SECS,
        )
        .with("securityContext", pod_security)
        .with("affinity", affinity)
        .with("containers", vec![Node::Map(container)])
        .with(
            "volumes",
            vec![Node::Map(
                Map::new()
                    .with("name", "config")
                    .with("configMap", Map::new().with("name", config_map_name())),
            )],
        );

    Node::Map(
        Map::new()
            .with("apiVersion", "apps/v1")
            .with("kind", "Deployment")
            .with("metadata", metadata(NAME))
            .with(
                "spec",
                Map::new()
                    .with_comment(
                        &["Stateless: scale out with more replicas behind the one Service.".to_string()],
                        "replicas",
                        REPLICAS,
                    )
                    .with("selector", Map::new().with("matchLabels", selector_labels()))
                    .with(
                        "strategy",
                        Map::new().with("type", "RollingUpdate").with(
                            "rollingUpdate",
                            Map::new().with("maxUnavailable", 0u32).with("maxSurge", 1u32),
                        ),
                    )
                    .with(
                        "template",
                        Map::new()
                            .with("metadata", Map::new().with("labels", labels()))
                            .with("spec", pod_spec),
                    ),
            ),
    )
}

fn pod_disruption_budget() -> Node {
    Node::Map(
        Map::new()
            .with("apiVersion", "policy/v1")
            .with("kind", "PodDisruptionBudget")
            .with("metadata", metadata(NAME))
            .with(
                "spec",
                Map::new()
                    .with("minAvailable", 1u32)
                    .with("selector", Map::new().with("matchLabels", selector_labels())),
            ),
    )
}

fn pod_monitor() -> Node {
    Node::Map(
        Map::new()
            .with("apiVersion", "monitoring.coreos.com/v1")
            .with("kind", "PodMonitor")
            .with("metadata", metadata(NAME))
            .with(
                "spec",
                Map::new()
                    .with("selector", Map::new().with("matchLabels", selector_labels()))
                    .with(
                        "podMetricsEndpoints",
                        vec![Node::Map(
                            Map::new()
                                .with("port", "admin")
                                .with("path", "/metrics")
                                .with("interval", "15s"),
                        )],
                    ),
            ),
    )
}

/// A duration as `run` parses it back: whole seconds as `15s`, else milliseconds.
fn duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::{self, Value};
    use std::path::Path;

    fn options() -> Options {
        Options {
            image: "sni-router:test".into(),
            admin_port: ADMIN_PORT,
            listen: BTreeMap::new(),
            extra_args: Vec::new(),
            source: "values.yaml".into(),
            notes: Vec::new(),
        }
    }

    const VALUES: &str = "\
gateways:
  external: {name: gw, namespace: envoy-gateway, className: eg, serviceAnnotations: {lb/pool: lab}}
routes:
  tls:
    - {fqdn: db.example.com, gatewayPort: 5432, service: {name: db, port: 5432}}
    - {fqdn: a.example.com, service: {name: a, port: 8443}}
    - {fqdn: b.example.com, gatewayPort: 443, service: {name: b, port: 8443}}
";

    fn rendered(text: &str, options: &Options) -> Rendered {
        let config = crate::config::load(text, Path::new("values.yaml")).unwrap();
        render(&config, text, options)
    }

    #[test]
    fn one_service_port_per_gateway_port() {
        let out = rendered(VALUES, &options()).yaml;
        for port in [443, 5432] {
            assert!(
                out.contains(&format!(
                    "    - name: gw-{port}\n      port: {port}\n      targetPort: gw-{port}\n"
                )),
                "{out}"
            );
            assert!(out.contains(&format!("- name: gw-{port}\n              containerPort: {port}\n")));
        }
        assert_eq!(out.matches("targetPort:").count(), 2, "443 once: {out}");
        assert!(out.contains("    lb/pool: lab\n"), "{out}");
        assert!(!out.contains("targetPort: admin"), "admin not exposed: {out}");
    }

    #[test]
    fn every_document_reads_back_and_the_config_map_holds_the_file() {
        let out = rendered(VALUES, &options()).yaml;
        let docs: Vec<&str> = out.split("---\n").filter(|d| !d.trim().is_empty()).collect();
        assert_eq!(docs.len(), 5, "{out}");
        for doc in &docs {
            yaml::parse(doc).unwrap_or_else(|e| panic!("{e:?}\n{doc}"));
        }
        let Value::Map(top) = yaml::parse(docs[0]).unwrap().value else {
            panic!()
        };
        let data = &top.iter().find(|(k, _)| k.name == "data").unwrap().1.value;
        let Value::Map(data) = data else { panic!() };
        assert_eq!(data[0].1.value, Value::Str(VALUES.into()));
    }

    #[test]
    fn listen_remaps_the_container_port_and_passes_the_flag() {
        let mut args = options();
        args.listen.insert(443, "0.0.0.0:8443".parse().unwrap());
        args.extra_args = vec!["--listen".into(), "443=0.0.0.0:8443".into()];
        let out = rendered(VALUES, &args);
        assert!(out.notes.is_empty(), "{:?}", out.notes);
        assert!(out.yaml.contains("- name: gw-443\n              containerPort: 8443\n"));
        assert!(out.yaml.contains("      port: 443\n      targetPort: gw-443\n"));
        assert!(
            out.yaml
                .contains("- \"--listen\"\n            - \"443=0.0.0.0:8443\"\n"),
            "{}",
            out.yaml
        );
        args.listen.insert(443, "127.0.0.1:8443".parse().unwrap());
        assert!(rendered(VALUES, &args).notes[0].contains("0.0.0.0"));
    }

    #[test]
    fn no_routes_no_service() {
        let out = rendered("routes: {tls: []}\n", &options());
        assert!(!out.yaml.contains("kind: Service"), "{}", out.yaml);
        assert_eq!(out.notes.len(), 1);
    }

    #[test]
    fn block_scalars_read_back_exactly() {
        for text in [
            "a: 1\n",
            "a: 1",
            "a: 1\n\n\n",
            "  indented: first\nb: 2\n",
            "\n\nafter blank lines\n",
            "tab\there\n",
            "",
            "bad \u{7} bell\n",
            "crlf\r\n",
        ] {
            let doc = format!("k: {}", block_scalar(text, 2));
            let parsed = yaml::parse(&doc).unwrap_or_else(|e| panic!("{text:?}: {e:?}\n{doc}"));
            let Value::Map(top) = parsed.value else { panic!("{doc}") };
            assert_eq!(top[0].1.value, Value::Str(text.into()), "{text:?} as\n{doc}");
        }
    }

    #[test]
    fn durations_parse_back() {
        for d in [Duration::from_secs(15), Duration::from_millis(1500)] {
            assert_eq!(crate::config::values::parse_duration(&duration(d)).unwrap(), d);
        }
    }
}
