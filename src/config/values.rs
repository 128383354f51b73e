//! The envoy-configs values file, read field by field the way the chart's
//! `values.schema.json` allows, collecting every problem with its position.
//!
//! The structs say what the file says (nothing defaulted yet); `mod.rs` turns
//! them into the router's `Config`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::yaml::{Key, Node, Pos, Value};
use super::{Problem, Severity};

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Its position in the file.
    pub at: Pos,
}

/// The parts of the values file the router reads.
#[derive(Debug, Clone, Default)]
pub struct Values {
    /// `gateways.external`.
    pub external: Option<Gateway>,
    /// `gateways.internal`.
    pub internal: Option<Gateway>,
    /// `routes.tls[]`: what the router serves.
    pub tls: Vec<TlsItem>,
    /// `routes.http[]`: read for conflict checks only.
    pub http: Vec<HttpItem>,
}

/// `gateways.external` or `gateways.internal`.
#[derive(Debug, Clone, Default)]
pub struct Gateway {
    /// `name`.
    pub name: Option<String>,
    /// `namespace`.
    pub namespace: Option<String>,
    /// `className`.
    pub class_name: Option<String>,
    /// `port` (read by the templates, rejected by the chart's schema).
    pub port: Option<Located<u16>>,
    /// `issuer` of `gateways.external` (template-only): the Gateway's
    /// `cert-manager.io/cluster-issuer` annotation.
    pub issuer: Option<Located<String>>,
    /// `serviceAnnotations`: when set, the chart points the Gateway at an EnvoyProxy.
    pub service_annotations: Option<BTreeMap<String, String>>,
    /// Where the mapping starts.
    pub at: Pos,
}

/// One item of `routes.tls`.
#[derive(Debug, Clone, Default)]
pub struct TlsItem {
    /// Index in `routes.tls`.
    pub index: usize,
    /// Where the item starts.
    pub at: Pos,
    /// `fqdn` (required).
    pub fqdn: Option<Located<String>>,
    /// `name`.
    pub name: Option<Located<String>>,
    /// `namespace`.
    pub namespace: Option<Located<String>>,
    /// `gatewayPort`.
    pub gateway_port: Option<Located<u16>>,
    /// `service.name`.
    pub service_name: Option<Located<String>>,
    /// `service.port`.
    pub service_port: Option<Located<u16>>,
    /// `from`: `Same`, `All` or `Selector`.
    pub from: Option<Located<String>>,
    /// `selector`: a map of strings.
    pub selector: Option<BTreeMap<String, String>>,
    /// `clientTrafficPolicy`.
    pub client_traffic_policy: Option<TrafficPolicy>,
}

/// `routes.tls[].clientTrafficPolicy`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrafficPolicy {
    /// `name`.
    pub name: Option<String>,
    /// `namespace`.
    pub namespace: Option<String>,
    /// `tcpKeepalive`, when present.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// `tcpKeepalive.idleTime` as written (the chart copies the text).
    pub idle_time_text: Option<String>,
    /// `tcpKeepalive.interval` as written.
    pub interval_text: Option<String>,
    /// Where the mapping starts.
    pub at: Pos,
}

/// `clientTrafficPolicy.tcpKeepalive`, as Envoy Gateway reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpKeepalive {
    /// `idleTime`: idle time before the first probe.
    pub idle_time: Option<Duration>,
    /// `interval`: time between probes.
    pub interval: Option<Duration>,
    /// `probes`: unanswered probes before the connection is dropped.
    pub probes: Option<u32>,
}

/// One item of `routes.http` (not routed; used for conflict checks).
#[derive(Debug, Clone, Default)]
pub struct HttpItem {
    /// Index in `routes.http`.
    pub index: usize,
    /// Where the item starts.
    pub at: Pos,
    /// `fqdn`.
    pub fqdn: Option<Located<String>>,
    /// `name`.
    pub name: Option<Located<String>>,
    /// `namespace`.
    pub namespace: Option<Located<String>>,
    /// `from`: `Same`, `All` or `Selector`.
    pub from: Option<Located<String>>,
    /// `selector`: a map of strings.
    pub selector: Option<BTreeMap<String, String>>,
}

/// Keys the chart's templates read but its `values.schema.json` rejects: the
/// router accepts them, `check` warns that Helm will refuse the file.
const GATEWAY_TEMPLATE_ONLY: &[&str] = &["port", "issuer", "externalTrafficPolicy"];
const HTTP_TEMPLATE_ONLY: &[&str] = &["path", "pathType"];

/// Read the document root into `Values`, pushing every problem found.
pub fn read(root: &Node<'_>, problems: &mut Vec<Problem>) -> Values {
    let mut r = Reader { problems };
    let mut values = Values::default();
    let Some(mut top) = r.fields(root, Path::Root) else {
        return values;
    };
    if let Some(gateways) = top.take("gateways") {
        if let Some(mut g) = r.fields(gateways, Path::Text("gateways")) {
            values.external = g.take("external").and_then(|n| r.gateway(n, "gateways.external", true));
            values.internal = g
                .take("internal")
                .and_then(|n| r.gateway(n, "gateways.internal", false));
            r.finish(g, &["external", "internal"], &[]);
        }
    }
    if let Some(routes) = top.take("routes") {
        if let Some(mut rs) = r.fields(routes, Path::Text("routes")) {
            if let Some(tls) = rs.take("tls") {
                values.tls = r.list(tls, "routes.tls", Reader::tls_item);
            }
            if let Some(http) = rs.take("http") {
                values.http = r.list(http, "routes.http", Reader::http_item);
            }
            r.finish(rs, &["http", "tls"], &[]);
        }
    }
    r.finish(top, &["gateways", "routes"], &[]);
    values
}

/// Parse a Gateway API `Duration` (`^([0-9]{1,5}(h|m|s|ms)){1,4}$`), e.g. `120s`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 120s, 5m, 1h30m or 500ms");
    let mut rest = text;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += unit * n as u32;
        parts += 1;
        if parts > 4 {
            return Err(bad());
        }
    }
    if parts == 0 {
        return Err(bad());
    }
    Ok(total)
}

// === impl Reader ===

/// Walks the tree, recording problems instead of stopping at the first.
struct Reader<'p> {
    problems: &'p mut Vec<Problem>,
}

/// The entries of one mapping, taken one key at a time; what is left over is
/// reported as unknown by `Reader::finish`. Taken entries are marked, not
/// removed, so a mapping costs no allocation.
struct Fields<'n, 'p> {
    path: Path<'p>,
    at: Pos,
    entries: &'n [(Key<'n>, Node<'n>)],
    /// Taken entries among the first 64 (bit i: entry i).
    taken: u64,
    /// Taken entries past the first 64 (serde-saphyr's maps have no key limit).
    taken_more: Vec<usize>,
}

/// A field's dotted path (`routes.tls[3].service.port`), written out only
/// when a problem needs it: spelt out for every mapping, it cost an
/// allocation and a format per route and field.
#[derive(Clone, Copy)]
enum Path<'a> {
    /// The document itself: an empty path.
    Root,
    /// A path given as text, e.g. `gateways.external`.
    Text(&'a str),
    /// `parent.key`.
    Key(&'a Path<'a>, &'a str),
    /// `list[index]`.
    Index(&'a str, usize),
}

impl Path<'_> {
    fn is_empty(&self) -> bool {
        matches!(self, Path::Root | Path::Text(""))
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Text(text) => f.write_str(text),
            Path::Key(parent, key) if parent.is_empty() => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(list, index) => write!(f, "{list}[{index}]"),
        }
    }
}

impl<'n> Fields<'n, '_> {
    fn is_taken(&self, i: usize) -> bool {
        if i < 64 {
            self.taken & (1 << i) != 0
        } else {
            self.taken_more.contains(&i)
        }
    }

    fn take(&mut self, key: &str) -> Option<&'n Node<'n>> {
        let entries = self.entries;
        let i = (0..entries.len()).find(|&i| !self.is_taken(i) && entries[i].0.name == key)?;
        if i < 64 {
            self.taken |= 1 << i;
        } else {
            self.taken_more.push(i);
        }
        Some(&entries[i].1)
    }

    /// The entries nobody took, in file order.
    fn left(&self) -> impl Iterator<Item = &'n Key<'n>> + '_ {
        let entries = self.entries;
        (0..entries.len())
            .filter(|&i| !self.is_taken(i))
            .map(move |i| &entries[i].0)
    }

    fn child<'k>(&'k self, key: &'k str) -> Path<'k> {
        Path::Key(&self.path, key)
    }
}

impl Reader<'_> {
    fn error(&mut self, at: Pos, field: impl fmt::Display, message: impl Into<String>) {
        self.problems
            .push(Problem::new(Severity::Error, at, field.to_string(), "schema", message));
    }

    /// A mapping's entries; `null` (an empty section such as `gateways:`) reads as empty.
    fn fields<'n, 'p>(&mut self, node: &'n Node<'n>, path: Path<'p>) -> Option<Fields<'n, 'p>> {
        let entries: &[_] = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => &[],
            other => {
                let what: &dyn fmt::Display = if path.is_empty() { &"the document" } else { &path };
                self.error(
                    node.at,
                    path,
                    format!("{what} must be a mapping, found {}", other.kind()),
                );
                return None;
            }
        };
        Some(Fields {
            path,
            at: node.at,
            entries,
            taken: 0,
            taken_more: Vec::new(),
        })
    }

    /// Report keys nobody took: template-only ones as warnings, the rest as errors.
    fn finish(&mut self, fields: Fields<'_, '_>, allowed: &[&str], template_only: &[&str]) {
        for key in fields.left() {
            let field = fields.child(&key.name);
            if template_only.contains(&&*key.name) {
                // Only reachable when the caller did not take it: it is read elsewhere.
                continue;
            }
            let mut message = format!("unknown field `{}`", key.name);
            if let Some(near) = closest(&key.name, allowed) {
                message.push_str(&format!(" (did you mean `{near}`?)"));
            }
            message.push_str(&format!("; allowed here: {}", allowed.join(", ")));
            self.error(key.at, field, message);
        }
    }

    fn list<T>(
        &mut self,
        node: &Node<'_>,
        path: &str,
        item: fn(&mut Self, &Node<'_>, Path<'_>, usize) -> Option<T>,
    ) -> Vec<T> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, n)| item(self, n, Path::Index(path, i), i))
                .collect(),
            Value::Null => Vec::new(),
            other => {
                self.error(node.at, path, format!("{path} must be a list, found {}", other.kind()));
                Vec::new()
            }
        }
    }

    fn string(&mut self, node: &Node<'_>, path: &dyn fmt::Display) -> Option<Located<String>> {
        match &node.value {
            Value::Str(s) => Some(Located {
                value: String::from(&**s),
                at: node.at,
            }),
            other => {
                self.error(
                    node.at,
                    path,
                    format!("{path} must be a string, found {}", other.kind()),
                );
                None
            }
        }
    }

    fn port(&mut self, node: &Node<'_>, path: &dyn fmt::Display) -> Option<Located<u16>> {
        match &node.value {
            Value::Int(n) if (1..=65535).contains(n) => Some(Located {
                value: *n as u16,
                at: node.at,
            }),
            Value::Int(n) => {
                self.error(
                    node.at,
                    path,
                    format!("{path} is {n}; a port must be between 1 and 65535"),
                );
                None
            }
            Value::Str(s) => {
                // The chart's schema says integer: Helm rejects "5432" too.
                self.error(
                    node.at,
                    path,
                    format!("{path} must be an integer, found the string {s:?} (write it without quotes)"),
                );
                None
            }
            other => {
                self.error(
                    node.at,
                    path,
                    format!("{path} must be an integer port, found {}", other.kind()),
                );
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node<'_>, path: &dyn fmt::Display) {
        if !matches!(node.value, Value::Bool(_)) {
            self.error(
                node.at,
                path,
                format!("{path} must be true or false, found {}", node.value.kind()),
            );
        }
    }

    fn string_map(&mut self, node: &Node<'_>, path: &dyn fmt::Display) -> Option<BTreeMap<String, String>> {
        let Value::Map(entries) = &node.value else {
            if node.value != Value::Null {
                self.error(
                    node.at,
                    path,
                    format!("{path} must be a mapping, found {}", node.value.kind()),
                );
            }
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, v) in entries {
            let field = format!("{path}.{}", k.name);
            if let Some(s) = self.string(v, &field) {
                out.insert(k.name.to_string(), s.value);
            }
        }
        Some(out)
    }

    fn object(&mut self, node: &Node<'_>, path: &dyn fmt::Display) {
        if !matches!(node.value, Value::Map(_) | Value::Null) {
            self.error(
                node.at,
                path,
                format!("{path} must be a mapping, found {}", node.value.kind()),
            );
        }
    }

    fn missing(&mut self, fields: &Fields<'_, '_>, key: &str) {
        let path = fields.child(key);
        self.error(
            fields.at,
            path,
            format!("missing required field `{key}` in {}", fields.path),
        );
    }

    fn gateway(&mut self, node: &Node<'_>, path: &str, external: bool) -> Option<Gateway> {
        let mut f = self.fields(node, Path::Text(path))?;
        let mut gateway = Gateway {
            at: node.at,
            ..Gateway::default()
        };
        for (key, slot) in [
            ("name", &mut gateway.name),
            ("namespace", &mut gateway.namespace),
            ("className", &mut gateway.class_name),
        ] {
            match f.take(key) {
                Some(n) => *slot = self.string(n, &f.child(key)).map(|l| l.value),
                None => self.missing(&f, key),
            }
        }
        if let Some(n) = f.take("serviceAnnotations") {
            gateway.service_annotations = self.string_map(n, &f.child("serviceAnnotations"));
        }
        if let Some(n) = f.take("port") {
            gateway.port = self.port(n, &f.child("port"));
            self.template_only(n.at, f.child("port"));
        }
        if let Some(n) = f.take("externalTrafficPolicy") {
            self.string(n, &f.child("externalTrafficPolicy"));
            self.template_only(n.at, f.child("externalTrafficPolicy"));
        }
        if external {
            if let Some(n) = f.take("issuer") {
                gateway.issuer = self.string(n, &f.child("issuer"));
                self.template_only(n.at, f.child("issuer"));
            }
        }
        let allowed: &[&str] = &["name", "namespace", "className", "serviceAnnotations"];
        self.finish(f, allowed, GATEWAY_TEMPLATE_ONLY);
        Some(gateway)
    }

    fn template_only(&mut self, at: Pos, field: impl fmt::Display) {
        self.problems.push(Problem::new(
            Severity::Warning,
            at,
            field.to_string(),
            "chart-schema",
            format!(
                "{field} is read by the chart's templates but rejected by its values.schema.json: \
                 helm install/upgrade refuses this file unless schema validation is skipped"
            ),
        ));
    }

    fn tls_item(&mut self, node: &Node<'_>, path: Path<'_>, index: usize) -> Option<TlsItem> {
        let mut f = self.fields(node, path)?;
        let mut item = TlsItem {
            index,
            at: node.at,
            ..TlsItem::default()
        };
        match f.take("fqdn") {
            Some(n) => item.fqdn = self.string(n, &f.child("fqdn")),
            None => self.missing(&f, "fqdn"),
        }
        item.name = f.take("name").and_then(|n| self.string(n, &f.child("name")));
        item.namespace = f.take("namespace").and_then(|n| self.string(n, &f.child("namespace")));
        item.gateway_port = f
            .take("gatewayPort")
            .and_then(|n| self.port(n, &f.child("gatewayPort")));
        match f.take("service") {
            Some(n) => {
                if let Some(mut s) = self.fields(n, f.child("service")) {
                    match s.take("name") {
                        Some(v) => item.service_name = self.string(v, &s.child("name")),
                        None => self.missing(&s, "name"),
                    }
                    match s.take("port") {
                        Some(v) => item.service_port = self.port(v, &s.child("port")),
                        None => self.missing(&s, "port"),
                    }
                    self.finish(s, &["name", "port"], &[]);
                }
            }
            None => self.missing(&f, "service"),
        }
        item.from = f.take("from").and_then(|n| self.from(n, &f.child("from")));
        item.selector = f
            .take("selector")
            .and_then(|n| self.string_map(n, &f.child("selector")));
        if let Some(n) = f.take("clientTrafficPolicy") {
            item.client_traffic_policy = self.traffic_policy(n, f.child("clientTrafficPolicy"));
        }
        let allowed: &[&str] = &[
            "fqdn",
            "name",
            "namespace",
            "gatewayPort",
            "service",
            "selector",
            "from",
            "clientTrafficPolicy",
        ];
        self.finish(f, allowed, &[]);
        Some(item)
    }

    fn from(&mut self, node: &Node<'_>, path: &dyn fmt::Display) -> Option<Located<String>> {
        let s = self.string(node, path)?;
        if !["Same", "All", "Selector"].contains(&s.value.as_str()) {
            self.error(
                node.at,
                path,
                format!("{path} is {:?}; it must be one of Same, All, Selector", s.value),
            );
            return None;
        }
        Some(s)
    }

    fn traffic_policy(&mut self, node: &Node<'_>, path: Path<'_>) -> Option<TrafficPolicy> {
        let mut f = self.fields(node, path)?;
        let mut policy = TrafficPolicy {
            at: node.at,
            ..TrafficPolicy::default()
        };
        policy.name = f
            .take("name")
            .and_then(|n| self.string(n, &f.child("name")))
            .map(|l| l.value);
        policy.namespace = f
            .take("namespace")
            .and_then(|n| self.string(n, &f.child("namespace")))
            .map(|l| l.value);
        if let Some(n) = f.take("tcpKeepalive") {
            if let Some(mut k) = self.fields(n, f.child("tcpKeepalive")) {
                let idle_node = k.take("idleTime");
                let interval_node = k.take("interval");
                let idle_time = idle_node.and_then(|n| self.duration(n, &k.child("idleTime")));
                let interval = interval_node.and_then(|n| self.duration(n, &k.child("interval")));
                let text = |n: Option<&Node<'_>>| match n.map(|n| &n.value) {
                    Some(Value::Str(s)) => Some(String::from(&**s)),
                    _ => None,
                };
                policy.idle_time_text = text(idle_node);
                policy.interval_text = text(interval_node);
                let mut keepalive = TcpKeepalive {
                    idle_time,
                    interval,
                    probes: None,
                };
                if let Some(n) = k.take("probes") {
                    let field = k.child("probes");
                    match &n.value {
                        Value::Int(p) if (1..=i128::from(u32::MAX)).contains(p) => keepalive.probes = Some(*p as u32),
                        other => self.error(
                            n.at,
                            field,
                            format!("{field} must be an integer of at least 1, found {}", describe(other)),
                        ),
                    }
                }
                self.finish(k, &["idleTime", "interval", "probes"], &[]);
                policy.tcp_keepalive = Some(keepalive);
            }
        }
        self.finish(f, &["name", "namespace", "tcpKeepalive"], &[]);
        Some(policy)
    }

    fn duration(&mut self, node: &Node<'_>, path: &dyn fmt::Display) -> Option<Duration> {
        let s = self.string(node, path)?;
        match parse_duration(&s.value) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(node.at, path, format!("{path}: {e}"));
                None
            }
        }
    }

    fn http_item(&mut self, node: &Node<'_>, path: Path<'_>, index: usize) -> Option<HttpItem> {
        let mut f = self.fields(node, path)?;
        let mut item = HttpItem {
            index,
            at: node.at,
            ..HttpItem::default()
        };
        match f.take("fqdn") {
            Some(n) => item.fqdn = self.string(n, &f.child("fqdn")),
            None => self.missing(&f, "fqdn"),
        }
        item.name = f.take("name").and_then(|n| self.string(n, &f.child("name")));
        item.namespace = f.take("namespace").and_then(|n| self.string(n, &f.child("namespace")));
        if let Some(n) = f.take("service") {
            if let Some(mut s) = self.fields(n, f.child("service")) {
                match s.take("name") {
                    Some(v) => drop(self.string(v, &s.child("name"))),
                    None => self.missing(&s, "name"),
                }
                match s.take("port") {
                    Some(v) => drop(self.port(v, &s.child("port"))),
                    None => self.missing(&s, "port"),
                }
                if let Some(v) = s.take("backendType") {
                    let field = s.child("backendType");
                    if let Some(t) = self.string(v, &field) {
                        if t.value != "tls" && t.value != "http" {
                            self.error(v.at, field, format!("{field} is {:?}; it must be tls or http", t.value));
                        }
                    }
                }
                self.finish(s, &["name", "port", "backendType"], &[]);
            }
        }
        item.selector = f
            .take("selector")
            .and_then(|n| self.string_map(n, &f.child("selector")));
        item.from = f.take("from").and_then(|n| self.from(n, &f.child("from")));
        if let Some(n) = f.take("filters") {
            self.object(n, &f.child("filters"));
        }
        if let Some(n) = f.take("timeouts") {
            if let Some(mut t) = self.fields(n, f.child("timeouts")) {
                for key in ["request", "backendRequest"] {
                    if let Some(v) = t.take(key) {
                        self.duration(v, &t.child(key));
                    }
                }
                self.finish(t, &["request", "backendRequest"], &[]);
            }
        }
        if let Some(n) = f.take("alsoInternal") {
            self.boolean(n, &f.child("alsoInternal"));
        }
        for key in HTTP_TEMPLATE_ONLY {
            if let Some(n) = f.take(key) {
                self.template_only(n.at, f.child(key));
            }
        }
        let allowed: &[&str] = &[
            "fqdn",
            "name",
            "namespace",
            "service",
            "selector",
            "from",
            "filters",
            "timeouts",
            "alsoInternal",
        ];
        self.finish(f, allowed, &[]);
        Some(item)
    }
}

fn describe(value: &Value<'_>) -> String {
    match value {
        Value::Int(n) => n.to_string(),
        other => other.kind().to_string(),
    }
}

/// The allowed key closest to a misspelt one, if any is close.
fn closest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    allowed
        .iter()
        .map(|a| (edit_distance(&lower, &a.to_ascii_lowercase()), *a))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_api_durations() {
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "10", "1d", "s", "-1s", "1.5s", "123456s", "1h1m1s1ms1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn suggests_the_closest_key() {
        assert_eq!(closest("gatewayport", &["fqdn", "gatewayPort"]), Some("gatewayPort"));
        assert_eq!(closest("fdqn", &["fqdn", "name"]), Some("fqdn"));
        assert_eq!(closest("weight", &["fqdn", "name"]), None);
    }
}
