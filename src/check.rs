//! `sni-router check`: every problem of a values file by the rules the chart,
//! the Kubernetes API server and Envoy Gateway apply to what the chart
//! renders, then the effective route table.
//!
//! The loader's problems (types, unknown keys, ports, host names, duplicate
//! SNI per port, template-only keys) come first-hand from `config::check`;
//! the rules here work on the chart's view of the file (`render::chart`):
//! listener names, listener conflicts, object name clashes, TLSRoutes that
//! attach across ports because they carry no `sectionName`, overlaps and
//! unreachable routes. Each finding names the file, line, field, route and
//! rule, says what goes wrong in plain words, and how to fix it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::cli::{CheckArgs, CheckFormat};
use crate::config::values::{TcpKeepalive, Values};
use crate::config::{self, Config, Pos, Problem, Severity, SniPattern};
use crate::render::chart::{self, Chart, ItemKind, Listener, Protocol, TlsRoute};
use crate::render::emit::{json, Map, Node};

/// Most listeners a Gateway may have (Gateway API `spec.listeners` MaxItems).
pub const MAX_LISTENERS: usize = 64;

/// What `check` found in one values file.
#[derive(Debug, Clone)]
pub struct Report {
    /// The file.
    pub file: PathBuf,
    /// Every finding, in file order.
    pub findings: Vec<Finding>,
    /// The routes `run` would serve, by gateway port then file order.
    pub routes: Vec<Row>,
    /// True when the file has `routes.tls` items (the TLSRoute note applies).
    pub has_tls_routes: bool,
}

/// One problem, with the route it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Severity, position, field, rule and message.
    pub problem: Problem,
    /// `namespace/name` of the TLSRoute (or the HTTPS listener's name) the
    /// finding is about, when it is about one item.
    pub route: Option<String>,
}

/// One line of the effective route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Gateway port.
    pub gateway_port: u16,
    /// Listener (and TLSRoute) name.
    pub listener: String,
    /// The SNI matched: `db.example.com` or `*.example.com`.
    pub sni: String,
    /// Route namespace (also the backend service's).
    pub namespace: String,
    /// Backend service name.
    pub service: String,
    /// Backend service port.
    pub service_port: u16,
}

/// Run `sni-router check` on the command line's file; print the report and
/// return the exit code: 0 clean, 1 warnings only with `--strict`, 2 errors.
pub fn run(args: &CheckArgs) -> u8 {
    let report = check_file(&args.config);
    match args.format {
        CheckFormat::Table => print!("{}", report.table()),
        CheckFormat::Json => print!("{}", report.json()),
    }
    report.exit_code(args.strict)
}

/// Check a values file on disk.
pub fn check_file(path: &Path) -> Report {
    let (config, problems) = config::check_file(path);
    report(path, config, problems)
}

/// Check a values file's text; `path` is used in messages only.
pub fn check(text: &str, path: &Path) -> Report {
    let (config, problems) = config::check(text, path);
    report(path, config, problems)
}

fn report(path: &Path, config: Option<Config>, mut problems: Vec<Problem>) -> Report {
    let mut routes = Vec::new();
    let mut labels = HashMap::new();
    let mut has_tls_routes = false;
    if let Some(config) = &config {
        let chart = chart::chart(&config.values);
        rules(&config.values, &chart, &mut problems);
        for route in &chart.tls_routes {
            labels.insert(
                (ItemKind::Tls, route.item.index),
                format!("{}/{}", route.namespace, route.name),
            );
        }
        for listener in chart.listeners.iter().filter(|l| l.protocol == Protocol::Https) {
            labels.insert((ItemKind::Http, listener.item.index), listener.name.clone());
        }
        has_tls_routes = !config.values.tls.is_empty();
        routes = config
            .routes
            .iter()
            .map(|r| Row {
                gateway_port: r.gateway_port,
                listener: r.name.clone(),
                sni: r.sni.to_string(),
                namespace: r.namespace.clone(),
                service: r.service.name.clone(),
                service_port: r.service.port,
            })
            .collect();
        routes.sort_by_key(|r| r.gateway_port);
    }
    for p in &mut problems {
        explain_loader_problem(p);
    }
    problems.sort_by(|a, b| {
        (a.at, std::cmp::Reverse(a.severity), a.rule, &a.field).cmp(&(
            b.at,
            std::cmp::Reverse(b.severity),
            b.rule,
            &b.field,
        ))
    });
    let findings = problems
        .into_iter()
        .map(|problem| {
            let route = item_of(&problem.field).and_then(|key| labels.get(&key).cloned());
            Finding { problem, route }
        })
        .collect();
    Report {
        file: path.to_path_buf(),
        findings,
        routes,
        has_tls_routes,
    }
}

/// Add what the Gateway API makes of a loader rule the router also applies.
fn explain_loader_problem(p: &mut Problem) {
    if p.rule == "duplicate-sni" {
        p.message.push_str(
            ". The Kubernetes API server also rejects the chart's Gateway: the combination of port, \
             protocol and hostname must be unique for each listener",
        );
    }
}

/// `routes.tls[3].name` → `(Tls, 3)`.
fn item_of(field: &str) -> Option<(ItemKind, usize)> {
    let (kind, rest) = if let Some(rest) = field.strip_prefix("routes.tls[") {
        (ItemKind::Tls, rest)
    } else if let Some(rest) = field.strip_prefix("routes.http[") {
        (ItemKind::Http, rest)
    } else {
        return None;
    };
    let index = rest.split(']').next()?.parse().ok()?;
    Some((kind, index))
}

// === the rules ===

/// Apply every rule that needs the chart's view of the file.
fn rules(values: &Values, chart: &Chart, out: &mut Vec<Problem>) {
    gateway_rules(values, chart, out);
    http_hostnames(values, out);
    names(values, out);
    listener_names(chart, out);
    duplicate_listeners(chart, out);
    listener_conflicts(chart, out);
    duplicate_objects(chart, out);
    let index = PatternIndex::new(chart);
    cross_port_attachment(chart, &index, out);
    wildcard_overlap(chart, &index, out);
    namespace_admission(chart, out);
    keepalive_per_port(values, chart, out);
}

fn gateway_rules(values: &Values, chart: &Chart, out: &mut Vec<Problem>) {
    match &values.external {
        None if values.tls.is_empty() && !values.http.is_empty() => out.push(Problem::new(
            Severity::Warning,
            Pos::default(),
            "gateways.external",
            "no-gateway",
            "routes.http is not empty but gateways.external is missing: the chart's HTTPRoute template reads \
             gateways.external.name, so helm fails with \"nil pointer evaluating interface {}.name\"; add \
             gateways.external with name, namespace and className",
        )),
        Some(gateway) if chart.listeners.is_empty() => out.push(Problem::new(
            Severity::Error,
            gateway.at,
            "gateways.external",
            "no-listeners",
            format!(
                "the chart renders Gateway {} with no listeners (routes.http and routes.tls are empty), and the \
                 Kubernetes API server requires at least one: add a route, or remove gateways.external",
                gateway.name.as_deref().unwrap_or("")
            ),
        )),
        _ => {}
    }
    if chart.listeners.len() > MAX_LISTENERS {
        out.push(Problem::new(
            Severity::Error,
            Pos::default(),
            "routes",
            "too-many-listeners",
            format!(
                "the chart puts {} listeners (one per routes.http and routes.tls item) on one Gateway; Gateway API \
                 allows at most {MAX_LISTENERS}: split the routes over two values files (two Gateways)",
                chart.listeners.len()
            ),
        ));
    }
}

/// The loader checks `routes.tls[].fqdn`; HTTPS listener host names follow the same rule.
fn http_hostnames(values: &Values, out: &mut Vec<Problem>) {
    for item in &values.http {
        let Some(fqdn) = &item.fqdn else { continue };
        if let Err(why) = SniPattern::parse(&fqdn.value) {
            out.push(Problem::new(
                Severity::Error,
                fqdn.at,
                format!("routes.http[{}].fqdn", item.index),
                "hostname",
                format!("{why}; the Kubernetes API server rejects the Gateway whose HTTPS listener carries it"),
            ));
        }
    }
}

/// Kubernetes object names and namespaces the chart writes from the file.
fn names(values: &Values, out: &mut Vec<Problem>) {
    for (path, gateway) in [
        ("gateways.external", &values.external),
        ("gateways.internal", &values.internal),
    ] {
        let Some(gateway) = gateway else { continue };
        if let Some(name) = &gateway.name {
            if !dns_subdomain(name) {
                out.push(Problem::new(
                    Severity::Error,
                    gateway.at,
                    format!("{path}.name"),
                    "object-name",
                    format!(
                        "Gateway name {name:?} is not a Kubernetes object name (lowercase letters, digits, '-' and \
                         '.', starting and ending with a letter or digit, at most 253 characters): write e.g. {:?}",
                        suggest(name)
                    ),
                ));
            }
        }
        if let Some(ns) = &gateway.namespace {
            if !dns_label(ns) {
                out.push(namespace_problem(gateway.at, format!("{path}.namespace"), ns));
            }
        }
    }
    for item in &values.tls {
        if let Some(ns) = item.namespace.as_ref().filter(|n| !n.value.is_empty()) {
            if !dns_label(&ns.value) {
                out.push(namespace_problem(
                    ns.at,
                    format!("routes.tls[{}].namespace", item.index),
                    &ns.value,
                ));
            }
        }
        if let Some(service) = &item.service_name {
            if !dns1035_label(&service.value) {
                out.push(Problem::new(
                    Severity::Warning,
                    service.at,
                    format!("routes.tls[{}].service.name", item.index),
                    "service-name",
                    format!(
                        "{:?} cannot be a Kubernetes Service name (lowercase letters, digits and '-', starting with \
                         a letter, at most 63 characters), so the TLSRoute's backend never resolves; only a \
                         --backend override makes `sni-router run` reach it: use the Service's real name",
                        service.value
                    ),
                ));
            }
        }
        if let Some(policy) = &item.client_traffic_policy {
            let field = |key: &str| format!("routes.tls[{}].clientTrafficPolicy.{key}", item.index);
            if let Some(name) = policy.name.as_ref().filter(|n| !n.is_empty()) {
                if !dns_subdomain(name) {
                    out.push(Problem::new(
                        Severity::Error,
                        policy.at,
                        field("name"),
                        "object-name",
                        format!(
                            "ClientTrafficPolicy name {name:?} is not a Kubernetes object name (lowercase letters, \
                             digits, '-' and '.', at most 253 characters): write e.g. {:?}",
                            suggest(name)
                        ),
                    ));
                }
            }
            if let Some(ns) = policy.namespace.as_ref().filter(|n| !n.is_empty()) {
                if !dns_label(ns) {
                    out.push(namespace_problem(policy.at, field("namespace"), ns));
                }
            }
        }
    }
}

fn namespace_problem(at: Pos, field: String, ns: &str) -> Problem {
    Problem::new(
        Severity::Error,
        at,
        field,
        "namespace",
        format!(
            "{ns:?} is not a Kubernetes namespace name (lowercase letters, digits and '-', starting and ending \
             with a letter or digit, at most 63 characters): write e.g. {:?}",
            suggest(ns).replace('.', "-")
        ),
    )
}

/// Listener names are Gateway API `SectionName`s; the same text names the TLSRoute.
fn listener_names(chart: &Chart, out: &mut Vec<Problem>) {
    for l in &chart.listeners {
        // A name defaulted from an invalid fqdn is fixed with the fqdn (rule `hostname`),
        // except for a wildcard, whose first label is never a name.
        let bad_fqdn = SniPattern::parse(&l.hostname.value).is_err() && !l.hostname.value.starts_with("*.");
        if dns_subdomain(&l.name) || (l.name_defaulted && bad_fqdn) {
            continue;
        }
        let rule = "a listener name (Gateway API SectionName, also the TLSRoute's and the certificate Secret's \
                    name) is lowercase letters, digits, '-' and '.', starts and ends with a letter or digit, at \
                    most 253 characters";
        let message = if l.name_defaulted {
            format!(
                "the listener name defaults to the first label of fqdn {:?}, which gives {:?}; {rule}: set `name`, \
                 e.g. name: {}",
                l.hostname.value,
                l.name,
                suggest(&l.hostname.value.replace("*.", "wildcard-"))
            )
        } else {
            format!(
                "name {:?} is not a valid listener name; {rule}: write e.g. {:?}",
                l.name,
                suggest(&l.name)
            )
        };
        out.push(Problem::new(
            Severity::Error,
            l.name_at,
            l.item.field(if l.name_defaulted { "fqdn" } else { "name" }),
            "listener-name",
            message,
        ));
    }
}

/// One Gateway holds a listener per `routes.http` and per `routes.tls` item.
fn duplicate_listeners(chart: &Chart, out: &mut Vec<Problem>) {
    let mut first: HashMap<&str, &Listener> = HashMap::new();
    for l in &chart.listeners {
        let Some(earlier) = first.get(l.name.as_str()) else {
            first.insert(&l.name, l);
            continue;
        };
        let mut message = format!(
            "listener name {:?} is already used by {} (line {}); listener names must be unique across the \
             Gateway, which holds one listener per routes.http and routes.tls item, so the Kubernetes API server \
             rejects it (\"Listener name must be unique within the Gateway\")",
            l.name,
            earlier.item.path(),
            earlier.name_at.line
        );
        if l.name_defaulted || earlier.name_defaulted {
            message.push_str(&format!(
                "; names default to the first label of fqdn, so {:?} and {:?} both become {:?}",
                earlier.hostname.value, l.hostname.value, l.name
            ));
        }
        message.push_str(": give one of them its own `name`");
        out.push(Problem::new(
            Severity::Error,
            l.name_at,
            l.item.field(if l.name_defaulted { "fqdn" } else { "name" }),
            "duplicate-listener",
            message,
        ));
    }
}

/// Same port and host name on two listeners, where an HTTPS listener is involved
/// (two TLS listeners are the loader's `duplicate-sni`).
fn listener_conflicts(chart: &Chart, out: &mut Vec<Problem>) {
    // Listeners by port and host name, in file order: only those can clash.
    let keys: Vec<(u16, String)> = chart
        .listeners
        .iter()
        .map(|l| (l.port, l.hostname.value.to_ascii_lowercase()))
        .collect();
    let mut same: HashMap<&(u16, String), Vec<usize>> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        same.entry(key).or_default().push(i);
    }
    for (i, l) in chart.listeners.iter().enumerate() {
        let earlier_ones = same.get(&keys[i]).into_iter().flatten().take_while(|&&e| e < i);
        for earlier in earlier_ones.map(|&e| &chart.listeners[e]) {
            if earlier.protocol == Protocol::Tls && l.protocol == Protocol::Tls {
                continue;
            }
            let why = if earlier.protocol == l.protocol {
                "the Kubernetes API server rejects the Gateway (\"Combination of port, protocol and hostname must be \
                 unique for each listener\")"
                    .to_string()
            } else {
                format!(
                    "Envoy cannot tell the two apart: both match SNI {} on port {}, one terminating TLS and one \
                     passing it through, so one of them never gets traffic (Envoy Gateway reports the listeners \
                     conflicted, or Envoy refuses the port's filter chains as duplicates)",
                    l.hostname.value, l.port
                )
            };
            out.push(Problem::new(
                Severity::Error,
                l.hostname.at,
                l.item.field("fqdn"),
                "listener-conflict",
                format!(
                    "{} listener {:?} has the same port {} and host name {} as {} listener {:?} of {} (line {}): \
                     {why}; use another host name or another port for one of them",
                    l.protocol.as_str(),
                    l.name,
                    l.port,
                    l.hostname.value,
                    earlier.protocol.as_str(),
                    earlier.name,
                    earlier.item.path(),
                    earlier.hostname.at.line
                ),
            ));
        }
    }
}

/// Two objects of one kind with the same namespace and name are one object.
fn duplicate_objects(chart: &Chart, out: &mut Vec<Problem>) {
    let mut routes: HashMap<(&str, &str), &TlsRoute> = HashMap::new();
    for r in &chart.tls_routes {
        match routes.get(&(r.namespace.as_str(), r.name.as_str())) {
            None => {
                routes.insert((&r.namespace, &r.name), r);
            }
            Some(earlier) => {
                let l = &chart.listeners[r.listener];
                out.push(Problem::new(
                    Severity::Error,
                    l.name_at,
                    r.item.field(if l.name_defaulted { "fqdn" } else { "name" }),
                    "duplicate-object",
                    format!(
                        "the chart renders TLSRoute {}/{} for this item and for {} (line {}): Kubernetes keeps one \
                         object per kind, namespace and name, so the later silently replaces the earlier and one \
                         route is lost (or helm refuses the release): give one item another `name` or `namespace`",
                        r.namespace,
                        r.name,
                        earlier.item.path(),
                        earlier.item.at.line
                    ),
                ));
            }
        }
    }
    let mut policies: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, p) in chart.policies.iter().enumerate() {
        match policies.get(&(p.namespace.as_str(), p.name.as_str())) {
            None => {
                policies.insert((&p.namespace, &p.name), i);
            }
            Some(&earlier) => {
                let earlier = &chart.policies[earlier];
                out.push(Problem::new(
                    Severity::Error,
                    p.policy.at,
                    p.item.field("clientTrafficPolicy"),
                    "duplicate-object",
                    format!(
                        "the chart renders ClientTrafficPolicy {}/{} for this item and for {} (line {}): \
                         Kubernetes keeps one object per kind, namespace and name, so the later silently replaces \
                         the earlier and listener {:?} loses its policy: set clientTrafficPolicy.name to a unique \
                         name",
                        p.namespace,
                        p.name,
                        earlier.item.path(),
                        earlier.policy.at.line,
                        earlier.section
                    ),
                ));
            }
        }
    }
}

/// A TLSRoute without `sectionName` attaches to every TLS listener whose
/// host name intersects its own, on any port.
fn cross_port_attachment(chart: &Chart, index: &PatternIndex, out: &mut Vec<Problem>) {
    let gateway_ns = chart.gateway.as_ref().and_then(|g| g.namespace.as_deref());
    // Pairs (j > i) whose names may intersect, sorted as a nested loop over
    // j then i would visit them, without visiting every pair.
    let mut pairs: Vec<(usize, usize)> = (0..chart.tls_routes.len())
        .flat_map(|j| index.may_intersect(j).map(move |i| (j.max(i), j.min(i))))
        .filter(|(j, i)| j != i)
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    for (j, i) in pairs {
        let (s, r) = (&chart.tls_routes[j], &chart.tls_routes[i]);
        let (Some(pr), Some(ps)) = (&index.patterns[i], &index.patterns[j]) else {
            continue;
        };
        let (lr, ls) = (&chart.listeners[r.listener], &chart.listeners[s.listener]);
        if lr.port == ls.port {
            continue;
        }
        let Some(common) = intersection(pr, ps) else { continue };
        // Which route attaches where: r to s's listener, s to r's listener.
        let mut directions = Vec::new();
        for (route, own, other) in [(r, lr, ls), (s, ls, lr)] {
            match admits(other, &route.namespace, gateway_ns) {
                Admits::No => {}
                how => directions.push((route, own, other, how)),
            }
        }
        if directions.is_empty() {
            continue;
        }
        let same_backend =
            r.namespace == s.namespace && r.service_name == s.service_name && r.service_port == s.service_port;
        let mut message = if pr == ps {
            format!(
                "fqdn {} is also routed on port {} by {} (line {}, TLSRoute {}/{}). ",
                s.hostname,
                lr.port,
                r.item.path(),
                lr.hostname.at.line,
                r.namespace,
                r.name
            )
        } else {
            format!(
                "{} (port {}) and {} (port {}, {} line {}) both match {common}. ",
                s.hostname,
                ls.port,
                r.hostname,
                lr.port,
                r.item.path(),
                lr.hostname.at.line
            )
        };
        message.push_str(
            "TLSRoutes carry no sectionName, so a TLSRoute attaches to every TLS listener whose host name \
             intersects its own: ",
        );
        let parts: Vec<String> = directions
            .iter()
            .map(|(route, own, other, how)| {
                format!(
                    "TLSRoute {}/{} (port {}) also attaches to listener {:?} on port {}{}",
                    route.namespace,
                    route.name,
                    own.port,
                    other.name,
                    other.port,
                    if *how == Admits::IfSelected {
                        " if its namespace matches the listener's selector"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        message.push_str(&parts.join(", and "));
        if same_backend {
            message.push_str(&format!(
                ". Both send {common} to {}:{} in {}, so traffic still arrives, but Envoy Gateway reports two \
                 routes for one name; sni-router run routes per port. Give each port its own host name to keep \
                 the routes apart",
                r.service_name.as_deref().unwrap_or(""),
                r.service_port.unwrap_or(0),
                r.namespace
            ));
        } else {
            message.push_str(&format!(
                ". Envoy Gateway then has two routes for {common} on one port and may send that port's \
                 connections to the other route's backend ({}:{} in {} or {}:{} in {}); sni-router run routes \
                 per port. Use a host name per port that no other route's fqdn covers",
                r.service_name.as_deref().unwrap_or(""),
                r.service_port.unwrap_or(0),
                r.namespace,
                s.service_name.as_deref().unwrap_or(""),
                s.service_port.unwrap_or(0),
                s.namespace
            ));
        }
        out.push(Problem::new(
            if same_backend {
                Severity::Warning
            } else {
                Severity::Error
            },
            ls.hostname.at,
            s.item.field("fqdn"),
            "cross-port-attachment",
            message,
        ));
    }
}

/// Wildcards that cover other routes on the same port.
fn wildcard_overlap(chart: &Chart, index: &PatternIndex, out: &mut Vec<Problem>) {
    // covered_by[i]: the routes wildcard i covers, in file order. A route is
    // covered by the wildcards whose suffix is a proper ancestor of its name
    // (an exact name, or a narrower wildcard's suffix: longest suffix wins).
    let mut covered_by: Vec<Vec<usize>> = vec![Vec::new(); chart.tls_routes.len()];
    for (j, other) in chart.tls_routes.iter().enumerate() {
        let name = match &index.patterns[j] {
            Some(SniPattern::Exact(name) | SniPattern::Wildcard(name)) => name,
            None => continue,
        };
        let port = chart.listeners[other.listener].port;
        for ancestor in proper_ancestors(name) {
            for &i in index.wild.get(ancestor).into_iter().flatten() {
                if i != j && chart.listeners[chart.tls_routes[i].listener].port == port {
                    covered_by[i].push(j);
                }
            }
        }
    }
    for (i, w) in chart.tls_routes.iter().enumerate() {
        let Some(SniPattern::Wildcard(_)) = &index.patterns[i] else {
            continue;
        };
        let port = chart.listeners[w.listener].port;
        let covered: Vec<String> = covered_by[i]
            .iter()
            .map(|&j| {
                let other = &chart.tls_routes[j];
                format!(
                    "{} ({}, line {})",
                    other.hostname,
                    other.item.path(),
                    other.item.at.line
                )
            })
            .collect();
        if covered.is_empty() {
            continue;
        }
        out.push(Problem::new(
            Severity::Warning,
            chart.listeners[w.listener].hostname.at,
            w.item.field("fqdn"),
            "wildcard-overlap",
            format!(
                "{} on port {port} also covers {}: those names go to their own routes (exact names first, then the \
                 longest wildcard suffix, in Envoy and in sni-router run alike), never to {}/{}. Nothing to do if \
                 that is intended; otherwise narrow the wildcard or move one route to another port",
                w.hostname,
                covered.join(", "),
                w.namespace,
                w.name
            ),
        ));
    }
}

/// The TLS routes' host names parsed once and indexed by name, so that the
/// pairs whose names intersect are found by lookups instead of comparing
/// every pair (100 000 routes: 5·10⁹ pairs, minutes of `check`).
struct PatternIndex<'a> {
    /// Each route's pattern (`None`: not a valid host name; rule `hostname`).
    patterns: Vec<Option<SniPattern>>,
    /// Routes by exact name.
    exact: HashMap<&'a str, Vec<usize>>,
    /// Routes by wildcard suffix (`*.x.com` under `x.com`).
    wild: HashMap<&'a str, Vec<usize>>,
}

impl<'a> PatternIndex<'a> {
    fn new(chart: &'a Chart) -> Self {
        let patterns: Vec<Option<SniPattern>> = chart
            .tls_routes
            .iter()
            .map(|r| SniPattern::parse(&r.hostname).ok())
            .collect();
        let (mut exact, mut wild) = (HashMap::<&str, Vec<usize>>::new(), HashMap::<&str, Vec<usize>>::new());
        for (i, route) in chart.tls_routes.iter().enumerate() {
            // The key borrows the route's own text: the pattern is the host
            // name, or the host name after `*.`.
            match &patterns[i] {
                Some(SniPattern::Exact(_)) => exact.entry(route.hostname.as_str()).or_default().push(i),
                Some(SniPattern::Wildcard(_)) => {
                    let suffix = route.hostname.strip_prefix("*.").unwrap_or(&route.hostname);
                    wild.entry(suffix).or_default().push(i);
                }
                None => {}
            }
        }
        Self { patterns, exact, wild }
    }

    /// Routes whose pattern may intersect route `j`'s from its side: the
    /// same name, and the wildcards over it. Every intersecting pair is
    /// found from one of its two routes (the narrower one).
    fn may_intersect(&self, j: usize) -> impl Iterator<Item = usize> + '_ {
        let (same, name) = match &self.patterns[j] {
            Some(SniPattern::Exact(name)) => (self.exact.get(name.as_str()), name.as_str()),
            Some(SniPattern::Wildcard(suffix)) => (self.wild.get(suffix.as_str()), suffix.as_str()),
            None => (None, ""),
        };
        let over = proper_ancestors(name).flat_map(|a| self.wild.get(a).into_iter().flatten());
        same.into_iter().flatten().chain(over).copied()
    }
}

/// `b.x.com`, `x.com`, `com` for `a.b.x.com`: the suffixes a wildcard over it may have.
fn proper_ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('.').map(move |(at, _)| &name[at + 1..])
}

/// A route its own listener does not admit never attaches: it is unreachable through Envoy.
fn namespace_admission(chart: &Chart, out: &mut Vec<Problem>) {
    let gateway_ns = chart.gateway.as_ref().and_then(|g| g.namespace.as_deref());
    for l in &chart.listeners {
        if let Some(selector) = &l.selector {
            out.push(Problem::new(
                Severity::Warning,
                l.item.at,
                l.item.field("selector"),
                "selector",
                format!(
                    "the chart copies selector {} into allowedRoutes.namespaces.selector, which is a Kubernetes label \
                     selector (matchLabels, matchExpressions), not a plain label map, and the chart's schema allows \
                     only string values here, so no selector written here is valid: Kubernetes drops the unknown \
                     keys (or rejects them under strict field validation), and an empty selector admits routes \
                     from every namespace. Use `from: Same` or `from: All` instead",
                    selector
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ));
            if let Some(from) = l.from_written.as_ref().filter(|f| f.value != "Selector") {
                out.push(Problem::new(
                    Severity::Warning,
                    from.at,
                    l.item.field("from"),
                    "from-ignored",
                    format!(
                        "from: {} is ignored because selector is set (the chart then writes from: Selector): remove \
                         one of the two",
                        from.value
                    ),
                ));
            }
        } else if l.from == "Selector" {
            out.push(Problem::new(
                Severity::Warning,
                l.from_written.as_ref().map_or(l.item.at, |f| f.at),
                l.item.field("from"),
                "unreachable",
                format!(
                    "from: Selector without a selector: Gateway API requires a selector then, so listener {:?} admits \
                     no route and {} is unreachable through Envoy (sni-router run serves it): use `from: Same` or \
                     `from: All`",
                    l.name, l.hostname.value
                ),
            ));
        }
    }
    for r in &chart.tls_routes {
        let l = &chart.listeners[r.listener];
        if l.from == "Same" && Some(r.namespace.as_str()) != gateway_ns {
            out.push(Problem::new(
                Severity::Warning,
                l.from_written.as_ref().map_or(l.item.at, |f| f.at),
                r.item.field("from"),
                "unreachable",
                format!(
                    "listener {:?} admits routes only from the Gateway's namespace {} (from: Same), but TLSRoute \
                     {}/{} is in namespace {}: Envoy Gateway never attaches it, so {} is unreachable through Envoy \
                     (sni-router run serves it). Use `from: All`, or set namespace: {}",
                    l.name,
                    gateway_ns.unwrap_or("(none)"),
                    r.namespace,
                    r.name,
                    r.namespace,
                    r.hostname,
                    gateway_ns.unwrap_or("(the Gateway's)")
                ),
            ));
        }
    }
}

/// Keepalive is a property of a port's listening socket in Envoy.
fn keepalive_per_port(values: &Values, chart: &Chart, out: &mut Vec<Problem>) {
    // By item index, once: a scan per route was quadratic in the route count.
    let policies: HashMap<usize, Option<TcpKeepalive>> = values
        .tls
        .iter()
        .map(|i| (i.index, i.client_traffic_policy.as_ref().and_then(|p| p.tcp_keepalive)))
        .collect();
    let keepalive = |index: usize| -> Option<TcpKeepalive> { policies.get(&index).copied().flatten() };
    let mut by_port: BTreeMap<u16, Vec<&TlsRoute>> = BTreeMap::new();
    for r in &chart.tls_routes {
        by_port.entry(chart.listeners[r.listener].port).or_default().push(r);
    }
    for (port, routes) in by_port {
        let Some(first_set) = routes.iter().find(|r| keepalive(r.item.index).is_some()) else {
            continue;
        };
        let reference = keepalive(first_set.item.index);
        for r in &routes {
            if keepalive(r.item.index) == reference {
                continue;
            }
            out.push(Problem::new(
                Severity::Warning,
                r.item.at,
                r.item.field("clientTrafficPolicy"),
                "keepalive-per-port",
                format!(
                    "routes on gateway port {port} differ in clientTrafficPolicy.tcpKeepalive ({} sets {}, this item \
                     {}): Envoy Gateway merges the Gateway's listeners on one port into one Envoy listener, and TCP \
                     keepalive is set on its listening socket, so only one setting takes effect for the whole port. \
                     Give every route on port {port} the same tcpKeepalive",
                    first_set.item.path(),
                    describe_keepalive(reference),
                    describe_keepalive(keepalive(r.item.index))
                ),
            ));
        }
    }
}

fn describe_keepalive(k: Option<TcpKeepalive>) -> String {
    let Some(k) = k else { return "none".to_string() };
    let mut parts = Vec::new();
    if let Some(d) = k.idle_time {
        parts.push(format!("idleTime {}s", d.as_secs()));
    }
    if let Some(d) = k.interval {
        parts.push(format!("interval {}s", d.as_secs()));
    }
    if let Some(p) = k.probes {
        parts.push(format!("probes {p}"));
    }
    if parts.is_empty() {
        "an empty one".to_string()
    } else {
        parts.join(", ")
    }
}

// === helpers ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admits {
    Yes,
    IfSelected,
    No,
}

/// Does `listener`'s `allowedRoutes.namespaces` admit a route in `namespace`?
fn admits(listener: &Listener, namespace: &str, gateway_ns: Option<&str>) -> Admits {
    match listener.from.as_str() {
        "Same" if Some(namespace) == gateway_ns => Admits::Yes,
        "Same" => Admits::No,
        "Selector" if listener.selector.is_some() => Admits::IfSelected,
        "Selector" => Admits::No,
        _ => Admits::Yes,
    }
}

/// The names two host name patterns share, written as a pattern.
fn intersection(a: &SniPattern, b: &SniPattern) -> Option<String> {
    match (a, b) {
        (SniPattern::Exact(x), SniPattern::Exact(y)) => (x == y).then(|| x.clone()),
        (SniPattern::Wildcard(_), SniPattern::Exact(x)) => a.matches(x).then(|| x.clone()),
        (SniPattern::Exact(x), SniPattern::Wildcard(_)) => b.matches(x).then(|| x.clone()),
        (SniPattern::Wildcard(s), SniPattern::Wildcard(t)) => {
            if s == t || a.matches(t) {
                Some(format!("*.{t}"))
            } else if b.matches(s) {
                Some(format!("*.{s}"))
            } else {
                None
            }
        }
    }
}

/// RFC 1123 subdomain as Kubernetes object names and Gateway API SectionNames use it.
fn dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(label_chars)
}

/// RFC 1123 label (namespaces).
fn dns_label(s: &str) -> bool {
    s.len() <= 63 && label_chars(s)
}

/// RFC 1035 label (Service names): also starts with a letter.
fn dns1035_label(s: &str) -> bool {
    dns_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

fn label_chars(label: &str) -> bool {
    !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// A valid name close to `s`: lowercase, other characters as '-', trimmed.
fn suggest(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.') => c,
            _ => '-',
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let out = out.trim_matches(|c| c == '-' || c == '.').to_string();
    if out.is_empty() {
        "route".to_string()
    } else {
        out.chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches(['-', '.'])
            .to_string()
    }
}

// === impl Report ===

impl Report {
    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.problem.severity == Severity::Error)
            .count()
    }

    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.problem.severity == Severity::Warning)
            .count()
    }

    /// 2 with errors, 1 with warnings under `strict`, else 0.
    pub fn exit_code(&self, strict: bool) -> u8 {
        if self.errors() > 0 {
            2
        } else if strict && self.warnings() > 0 {
            1
        } else {
            0
        }
    }

    /// The findings rule ids, in order (for tests).
    pub fn rules(&self) -> Vec<&'static str> {
        self.findings.iter().map(|f| f.problem.rule).collect()
    }

    /// The text report: findings, the route table, the TLSRoute note, a summary.
    pub fn table(&self) -> String {
        let file = self.file.display().to_string();
        let mut out = String::new();
        for f in &self.findings {
            let p = &f.problem;
            let _ = write!(out, "{file}");
            if p.at.line > 0 {
                let _ = write!(out, ":{}:{}", p.at.line, p.at.column);
            }
            let _ = write!(out, ": {}[{}]", severity(p.severity), p.rule);
            if !p.field.is_empty() {
                let _ = write!(out, ": {}", p.field);
            }
            if let Some(route) = &f.route {
                let _ = write!(out, " (route {route})");
            }
            let _ = writeln!(out, "\n    {}\n", p.message);
        }
        if self.routes.is_empty() {
            out.push_str("No routes to serve.\n");
        } else {
            out.push_str(&self.route_table());
        }
        if self.has_tls_routes {
            out.push('\n');
            for line in TLSROUTE_NOTE {
                out.push_str(line);
                out.push('\n');
            }
        }
        let _ = writeln!(
            out,
            "\n{file}: {} error{}, {} warning{}",
            self.errors(),
            plural(self.errors()),
            self.warnings(),
            plural(self.warnings())
        );
        out
    }

    fn route_table(&self) -> String {
        let header = ["GATEWAY PORT", "LISTENER", "SNI", "ROUTE", "BACKEND"];
        let rows: Vec<[String; 5]> = self
            .routes
            .iter()
            .map(|r| {
                [
                    r.gateway_port.to_string(),
                    r.listener.clone(),
                    r.sni.clone(),
                    format!("{}/{}", r.namespace, r.listener),
                    format!("{}:{}", r.service, r.service_port),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[&str]| {
            let text: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
            let _ = writeln!(out, "{}", text.join("  ").trim_end());
        };
        line(&mut out, &header);
        for row in &rows {
            line(&mut out, &row.each_ref().map(String::as_str));
        }
        out
    }

    /// The same content as one JSON object with stable field names.
    pub fn json(&self) -> String {
        let file = self.file.display().to_string();
        let findings: Vec<Node> = self
            .findings
            .iter()
            .map(|f| {
                let p = &f.problem;
                Node::Map(
                    Map::new()
                        .with("severity", severity(p.severity))
                        .with("file", file.as_str())
                        .with("line", p.at.line)
                        .with("column", p.at.column)
                        .with("field", p.field.as_str())
                        .with("route", f.route.clone().map_or(Node::Str(String::new()), Node::Str))
                        .with("rule", p.rule)
                        .with("message", p.message.as_str()),
                )
            })
            .collect();
        let routes: Vec<Node> = self
            .routes
            .iter()
            .map(|r| {
                Node::Map(
                    Map::new()
                        .with("gateway_port", r.gateway_port)
                        .with("listener", r.listener.as_str())
                        .with("sni", r.sni.as_str())
                        .with("namespace", r.namespace.as_str())
                        .with("name", r.listener.as_str())
                        .with(
                            "backend",
                            Map::new()
                                .with("service", r.service.as_str())
                                .with("namespace", r.namespace.as_str())
                                .with("port", r.service_port),
                        ),
                )
            })
            .collect();
        let tlsroute = Map::new()
            .with("chart_api_version", "gateway.networking.k8s.io/v1alpha2")
            .with(
                "accepted_by",
                vec![
                    Node::Map(
                        Map::new()
                            .with("api_version", "gateway.networking.k8s.io/v1alpha2")
                            .with("channel", "experimental")
                            .with("gateway_api", "v0.4.0 to v1.6 (deprecated since v1.5.0)"),
                    ),
                    Node::Map(
                        Map::new()
                            .with("api_version", "gateway.networking.k8s.io/v1")
                            .with("channel", "standard and experimental")
                            .with("gateway_api", "v1.5.0 and later"),
                    ),
                ],
            )
            .with("note", TLSROUTE_NOTE.join(" "));
        let mut root = Map::new()
            .with("file", file.as_str())
            .with(
                "summary",
                Map::new()
                    .with("errors", self.errors())
                    .with("warnings", self.warnings()),
            )
            .with("findings", findings)
            .with("routes", routes);
        if self.has_tls_routes {
            root.push("tlsroute", tlsroute);
        }
        json(&Node::Map(root))
    }
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Which Gateway API releases serve the TLSRoute the chart writes, from the
/// CRDs of kubernetes-sigs/gateway-api v0.4.0 to v1.6.1.
const TLSROUTE_NOTE: &[&str] = &[
    "TLSRoute: the chart writes gateway.networking.k8s.io/v1alpha2, which only the experimental-channel CRDs",
    "serve (Gateway API v0.4.0 to v1.6; deprecated since v1.5.0, removal announced). The standard channel",
    "serves TLSRoute only as v1, since v1.5.0: with standard-channel CRDs v1.5+ the chart's TLSRoutes are",
    "refused (no matches for kind TLSRoute in version v1alpha2). `sni-router render --to gateway-api",
    "--tlsroute-version v1` writes v1 (Gateway API v1.5+, both channels; Kubernetes 1.31+ for its CEL rules).",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_of(text: &str) -> Vec<&'static str> {
        check(text, Path::new("v.yaml")).rules()
    }

    fn finding(text: &str, rule: &str) -> Finding {
        let report = check(text, Path::new("v.yaml"));
        report
            .findings
            .iter()
            .find(|f| f.problem.rule == rule)
            .cloned()
            .unwrap_or_else(|| panic!("no {rule} in {:#?}", report.findings))
    }

    const GW: &str = "gateways:\n  external: {name: gw, namespace: envoy-gateway, className: eg}\n";

    fn file(http: &str, tls: &str) -> String {
        format!("{GW}routes:\n  http:\n{http}  tls:\n{tls}")
    }

    #[test]
    fn a_clean_file_has_no_findings_and_a_table() {
        let text = file(
            "",
            "    - {fqdn: db.example.com, gatewayPort: 5432, service: {name: pg, port: 5432}}\n\
             \x20   - {fqdn: redis.example.com, gatewayPort: 6379, service: {name: redis, port: 6379}}\n",
        );
        let report = check(&text, Path::new("v.yaml"));
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
        assert_eq!(report.exit_code(true), 0);
        assert_eq!(report.routes.len(), 2);
        assert!(
            report.table().contains("5432          db        db.example.com"),
            "{}",
            report.table()
        );
    }

    #[test]
    fn every_loader_problem_is_reported_not_just_the_first() {
        let rules = rules_of(&file(
            "",
            "    - {fqdn: a.example.com, gatewayPort: '5432', service: {name: a, port: 1}}\n\
             \x20   - {fqdn: b.example.com, colour: red, service: {name: b, port: 70000}}\n",
        ));
        assert_eq!(rules.iter().filter(|r| **r == "schema").count(), 3, "{rules:?}");
    }

    #[test]
    fn default_listener_names_collide() {
        let f = finding(
            &file(
                "",
                "    - {fqdn: db.a.example.com, service: {name: a, port: 1}}\n\
                 \x20   - {fqdn: db.b.example.com, gatewayPort: 5432, service: {name: b, port: 1}}\n",
            ),
            "duplicate-listener",
        );
        assert_eq!(f.problem.severity, Severity::Error);
        assert_eq!(f.problem.field, "routes.tls[1].fqdn");
        assert!(
            f.problem.message.contains("both become \"db\""),
            "{}",
            f.problem.message
        );
        // The TLSRoutes have the same name in the same namespace too.
        assert!(rules_of(&file(
            "",
            "    - {fqdn: db.a.example.com, service: {name: a, port: 1}}\n\
             \x20   - {fqdn: db.b.example.com, gatewayPort: 5432, service: {name: b, port: 1}}\n",
        ))
        .contains(&"duplicate-object"));
    }

    #[test]
    fn listener_names_across_http_and_tls() {
        let rules = rules_of(&file(
            "    - {fqdn: web.example.com, service: {name: w, port: 80}}\n",
            "    - {fqdn: web.other.org, gatewayPort: 8443, service: {name: x, port: 1}}\n",
        ));
        assert!(rules.contains(&"duplicate-listener"), "{rules:?}");
    }

    #[test]
    fn wildcard_without_a_name_gives_an_invalid_listener_name() {
        let f = finding(
            &file("", "    - {fqdn: '*.example.com', service: {name: w, port: 1}}\n"),
            "listener-name",
        );
        assert!(f.problem.message.contains("gives \"*\""), "{}", f.problem.message);
        assert!(
            f.problem.message.contains("name: wildcard-example.com"),
            "{}",
            f.problem.message
        );
        assert!(rules_of(&file(
            "",
            "    - {fqdn: a.example.com, name: Db_1, service: {name: w, port: 1}}\n"
        ))
        .contains(&"listener-name"));
        // Dots are allowed in a SectionName.
        assert!(!rules_of(&file(
            "",
            "    - {fqdn: a.example.com, name: db.v2, service: {name: w, port: 1}}\n"
        ))
        .contains(&"listener-name"));
    }

    #[test]
    fn https_and_tls_on_one_port_and_host_conflict() {
        let f = finding(
            &file(
                "    - {fqdn: db.example.com, name: web, service: {name: w, port: 80}}\n",
                "    - {fqdn: db.example.com, name: db, service: {name: pg, port: 5432}}\n",
            ),
            "listener-conflict",
        );
        assert_eq!(f.problem.severity, Severity::Error);
        // Different ports: no conflict.
        assert!(!rules_of(&file(
            "    - {fqdn: db.example.com, name: web, service: {name: w, port: 80}}\n",
            "    - {fqdn: db.example.com, name: db, gatewayPort: 5432, service: {name: pg, port: 5432}}\n",
        ))
        .contains(&"listener-conflict"));
    }

    #[test]
    fn duplicate_client_traffic_policies() {
        let f = finding(
            &file(
                "",
                "    - {fqdn: a.example.com, service: {name: a, port: 1}, clientTrafficPolicy: {name: ka}}\n\
                 \x20   - {fqdn: b.example.com, service: {name: b, port: 1}, clientTrafficPolicy: {name: ka}}\n",
            ),
            "duplicate-object",
        );
        assert!(
            f.problem.message.contains("ClientTrafficPolicy envoy-gateway/ka"),
            "{}",
            f.problem.message
        );
    }

    #[test]
    fn same_fqdn_on_two_ports_attaches_both_ways() {
        let f = finding(
            &file(
                "",
                "    - {fqdn: db.example.com, name: pg, gatewayPort: 5432, service: {name: pg, port: 5432}}\n\
                 \x20   - {fqdn: db.example.com, name: redis, gatewayPort: 6379, service: {name: redis, port: 6379}}\n",
            ),
            "cross-port-attachment",
        );
        assert_eq!(f.problem.severity, Severity::Error);
        assert_eq!(f.route.as_deref(), Some("envoy-gateway/redis"));
        assert!(f
            .problem
            .message
            .contains("TLSRoute envoy-gateway/pg (port 5432) also attaches to listener \"redis\""));
        assert!(f
            .problem
            .message
            .contains("TLSRoute envoy-gateway/redis (port 6379) also attaches to listener \"pg\""));
        // The same backend on both ports is only a warning.
        let f = finding(
            &file(
                "",
                "    - {fqdn: db.example.com, name: a, gatewayPort: 5432, service: {name: pg, port: 5432}}\n\
                 \x20   - {fqdn: db.example.com, name: b, gatewayPort: 15432, service: {name: pg, port: 5432}}\n",
            ),
            "cross-port-attachment",
        );
        assert_eq!(f.problem.severity, Severity::Warning);
    }

    #[test]
    fn wildcard_covering_a_name_on_another_port() {
        let f = finding(
            &file(
                "",
                "    - {fqdn: '*.example.com', name: wild, service: {name: web, port: 443}}\n\
                 \x20   - {fqdn: db.example.com, name: db, gatewayPort: 5432, service: {name: pg, port: 5432}}\n",
            ),
            "cross-port-attachment",
        );
        assert!(
            f.problem.message.contains("both match db.example.com"),
            "{}",
            f.problem.message
        );
        // from: Same keeps a route in another namespace off the other listener.
        let text = file(
            "",
            "    - {fqdn: '*.example.com', name: wild, namespace: web, service: {name: web, port: 443}}\n\
             \x20   - {fqdn: db.example.com, name: db, from: Same, gatewayPort: 5432, service: {name: pg, port: 5432}}\n",
        );
        let report = check(&text, Path::new("v.yaml"));
        let f = report
            .findings
            .iter()
            .find(|f| f.problem.rule == "cross-port-attachment")
            .unwrap();
        assert!(
            !f.problem.message.contains("web/wild (port 443) also attaches"),
            "{}",
            f.problem.message
        );
    }

    #[test]
    fn wildcard_overlapping_exact_routes_on_one_port() {
        let f = finding(
            &file(
                "",
                "    - {fqdn: '*.example.com', name: wild, service: {name: web, port: 443}}\n\
                 \x20   - {fqdn: db.example.com, name: db, service: {name: pg, port: 5432}}\n\
                 \x20   - {fqdn: '*.lab.example.com', name: lab, service: {name: lab, port: 1}}\n",
            ),
            "wildcard-overlap",
        );
        assert_eq!(f.problem.severity, Severity::Warning);
        assert!(
            f.problem.message.contains("db.example.com (routes.tls[1]"),
            "{}",
            f.problem.message
        );
        assert!(
            f.problem.message.contains("*.lab.example.com (routes.tls[2]"),
            "{}",
            f.problem.message
        );
    }

    #[test]
    fn from_same_in_another_namespace_is_unreachable() {
        let f = finding(
            &file(
                "",
                "    - {fqdn: db.example.com, namespace: nautobot, from: Same, service: {name: pg, port: 1}}\n",
            ),
            "unreachable",
        );
        assert_eq!(f.problem.severity, Severity::Warning);
        assert!(f.problem.message.contains("namespace nautobot"));
        assert!(!rules_of(&file(
            "",
            "    - {fqdn: db.example.com, from: Same, service: {name: pg, port: 1}}\n"
        ))
        .contains(&"unreachable"));
    }

    #[test]
    fn selectors_and_keepalive_per_port() {
        let rules = rules_of(&file(
            "",
            "    - {fqdn: a.example.com, from: All, selector: {team: db}, service: {name: a, port: 1},\n\
             \x20      clientTrafficPolicy: {tcpKeepalive: {idleTime: 60s}}}\n\
             \x20   - {fqdn: b.example.com, service: {name: b, port: 1}}\n",
        ));
        assert!(rules.contains(&"selector"), "{rules:?}");
        assert!(rules.contains(&"from-ignored"), "{rules:?}");
        assert!(rules.contains(&"keepalive-per-port"), "{rules:?}");
    }

    #[test]
    fn names_namespaces_and_services() {
        let rules = rules_of(&file(
            "",
            "    - {fqdn: a.example.com, namespace: My_NS, service: {name: 1pg, port: 1},\n\
             \x20      clientTrafficPolicy: {name: Bad_Name}}\n",
        ));
        assert!(rules.contains(&"namespace"), "{rules:?}");
        assert!(rules.contains(&"service-name"), "{rules:?}");
        assert!(rules.contains(&"object-name"), "{rules:?}");
    }

    #[test]
    fn gateway_without_routes_and_routes_without_gateway() {
        assert_eq!(rules_of(GW), ["no-listeners"]);
        assert_eq!(
            rules_of("routes:\n  http:\n    - {fqdn: a.example.com, service: {name: a, port: 1}}\n"),
            ["no-gateway"]
        );
    }

    #[test]
    fn exit_codes() {
        let warn = check(
            &file(
                "",
                "    - {fqdn: a.example.com, from: Selector, service: {name: a, port: 1}}\n",
            ),
            Path::new("v"),
        );
        assert_eq!((warn.errors(), warn.exit_code(false), warn.exit_code(true)), (0, 0, 1));
        let err = check("routes: 5\n", Path::new("v"));
        assert_eq!(err.exit_code(false), 2);
        let yaml = check("a: [\n", Path::new("v"));
        assert_eq!(yaml.rules(), ["yaml"]);
    }

    #[test]
    fn duplicate_sni_says_what_the_api_server_does() {
        let f = finding(
            &file(
                "",
                "    - {fqdn: db.example.com, name: a, service: {name: a, port: 1}}\n\
                 \x20   - {fqdn: db.example.com, name: b, service: {name: b, port: 1}}\n",
            ),
            "duplicate-sni",
        );
        assert!(
            f.problem.message.contains("port, protocol and hostname must be unique"),
            "{}",
            f.problem.message
        );
        assert_eq!(f.route.as_deref(), Some("envoy-gateway/b"));
    }

    #[test]
    fn name_rules() {
        assert!(dns_subdomain("db.v2") && dns_subdomain("a-b") && !dns_subdomain("*") && !dns_subdomain("A"));
        assert!(!dns_subdomain(&"a".repeat(254)) && dns_subdomain(&"a".repeat(253)));
        assert!(dns_label(&"a".repeat(63)) && !dns_label(&"a".repeat(64)) && !dns_label("a.b"));
        assert!(dns1035_label("pg") && !dns1035_label("1pg"));
        assert_eq!(suggest("Db_Main"), "db-main");
        assert_eq!(suggest("*"), "route");
    }

    #[test]
    fn intersections() {
        let p = |s: &str| SniPattern::parse(s).unwrap();
        assert_eq!(intersection(&p("a.x.com"), &p("a.x.com")).as_deref(), Some("a.x.com"));
        assert_eq!(
            intersection(&p("*.x.com"), &p("a.b.x.com")).as_deref(),
            Some("a.b.x.com")
        );
        assert_eq!(intersection(&p("*.x.com"), &p("x.com")), None);
        assert_eq!(
            intersection(&p("*.x.com"), &p("*.b.x.com")).as_deref(),
            Some("*.b.x.com")
        );
        assert_eq!(
            intersection(&p("*.b.x.com"), &p("*.x.com")).as_deref(),
            Some("*.b.x.com")
        );
        assert_eq!(intersection(&p("*.y.com"), &p("*.x.com")), None);
    }
}
