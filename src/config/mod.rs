//! Configuration: the values file loaded into routes the router can serve.
//!
//! `load` is a pure function of the file's text and path, so tests feed inline
//! YAML; it runs before any port is bound. Every problem is collected with its
//! line and field before failing, so one run lists them all.

pub mod values;
pub mod yaml;

use std::collections::hash_map::{Entry, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

pub use values::{TcpKeepalive, Values};
pub use yaml::Pos;

/// Namespace the chart gives a route that names none.
pub const DEFAULT_NAMESPACE: &str = "envoy-gateway";
/// Gateway port when neither `gatewayPort` nor `gateways.external.port` is set.
pub const DEFAULT_GATEWAY_PORT: u16 = 443;

/// The routes the router serves, as the chart would render them.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from.
    pub source: PathBuf,
    /// `routes.tls`, defaults applied, in file order.
    pub routes: Vec<Route>,
    /// Problems that do not stop the router (e.g. keys Helm's schema rejects).
    pub warnings: Vec<Problem>,
    /// The file as read, for `check` and `render`.
    pub values: Values,
}

/// One `routes.tls` item with the chart's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Listener/route name: `name`, else the first DNS label of `fqdn`.
    pub name: String,
    /// Route namespace, also the backend service's: `namespace`, else `envoy-gateway`.
    pub namespace: String,
    /// The SNI the route matches.
    pub sni: SniPattern,
    /// Port the gateway listens on for this route.
    pub gateway_port: u16,
    /// The backend service.
    pub service: Service,
    /// Downstream TCP keepalive from `clientTrafficPolicy.tcpKeepalive`.
    pub keepalive: Option<TcpKeepalive>,
    /// Index in `routes.tls`.
    pub index: usize,
    /// Where the item starts in the file.
    pub at: Pos,
}

/// A backend Kubernetes service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    /// `service.name`.
    pub name: String,
    /// The route's namespace.
    pub namespace: String,
    /// `service.port`.
    pub port: u16,
}

/// A host name pattern from `fqdn`: exact, or `*.suffix` matching any name under it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SniPattern {
    /// `db.example.com`, lowercase.
    Exact(String),
    /// `*.example.com`, stored as `example.com`.
    Wildcard(String),
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing; the router still runs.
    Warning,
    /// The file cannot be served.
    Error,
}

/// One finding about the values file, with where and which rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Position in the file.
    pub at: Pos,
    /// Dotted path of the field, e.g. `routes.tls[1].gatewayPort`.
    pub field: String,
    /// Short rule id, e.g. `schema`, `hostname`, `duplicate-sni`.
    pub rule: &'static str,
    /// What is wrong and how to fix it, in plain words.
    pub message: String,
}

/// The values file cannot be loaded: every problem found, with the file name.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The file.
    pub source: PathBuf,
    /// Everything wrong with it (errors first, then warnings), in file order.
    pub problems: Vec<Problem>,
}

/// Load a values file from disk.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let (config, problems) = check_file(path);
    finish(config, problems, path)
}

/// Load a values file from its text; `path` is used in messages only.
pub fn load(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let (config, problems) = check(text, path);
    finish(config, problems, path)
}

/// Read a values file from disk like [`check`]; an unreadable file is one `io` problem.
pub fn check_file(path: &Path) -> (Option<Config>, Vec<Problem>) {
    match std::fs::read_to_string(path) {
        Ok(text) => check(&text, path),
        Err(e) => (
            None,
            vec![Problem::new(
                Severity::Error,
                Pos::default(),
                "",
                "io",
                format!("cannot read file: {e}"),
            )],
        ),
    }
}

/// Every problem of a values file, errors and warnings alike, without failing
/// on the first: what `sni-router check` starts from.
///
/// The `Config` is there whenever the text parsed as YAML, even with errors;
/// its `routes` then hold only the items that were complete and valid, and
/// its `warnings` only the warnings. Problems come errors first, then by
/// position (as [`load`] reports them).
pub fn check(text: &str, path: &Path) -> (Option<Config>, Vec<Problem>) {
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let at = e.at.unwrap_or_default();
            return (None, vec![Problem::new(Severity::Error, at, "", "yaml", e.message)]);
        }
    };
    let mut problems = Vec::new();
    let values = values::read(&root, &mut problems);
    let routes = build_routes(&values, &mut problems);
    problems.sort_by_key(|p| (std::cmp::Reverse(p.severity), p.at));
    let config = Config {
        source: path.to_path_buf(),
        routes,
        warnings: problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
            .cloned()
            .collect(),
        values,
    };
    (Some(config), problems)
}

/// `load`'s verdict on what `check` found: any error fails the whole file.
fn finish(config: Option<Config>, problems: Vec<Problem>, path: &Path) -> Result<Config, ConfigError> {
    match config {
        Some(config) if !problems.iter().any(|p| p.severity == Severity::Error) => Ok(config),
        _ => Err(ConfigError {
            source: path.to_path_buf(),
            problems,
        }),
    }
}

/// Apply the chart's defaults and check what crosses items: host names and
/// SNI uniqueness per gateway port.
fn build_routes(values: &Values, problems: &mut Vec<Problem>) -> Vec<Route> {
    let default_port = values
        .external
        .as_ref()
        .and_then(|g| g.port.as_ref())
        .map_or(DEFAULT_GATEWAY_PORT, |p| p.value);
    let mut routes = Vec::with_capacity(values.tls.len());
    let mut seen: HashMap<(u16, SniPattern), (usize, Pos)> = HashMap::with_capacity(values.tls.len());
    for item in &values.tls {
        let field = |key: &str| format!("routes.tls[{}].{key}", item.index);
        let Some(fqdn) = &item.fqdn else { continue };
        let sni = match SniPattern::parse(&fqdn.value) {
            Ok(sni) => sni,
            Err(why) => {
                problems.push(Problem::new(Severity::Error, fqdn.at, field("fqdn"), "hostname", why));
                continue;
            }
        };
        let (Some(service_name), Some(service_port)) = (&item.service_name, &item.service_port) else {
            continue;
        };
        let gateway_port = item.gateway_port.as_ref().map_or(default_port, |p| p.value);
        // One lookup and one copy of the pattern per route.
        match seen.entry((gateway_port, sni.clone())) {
            Entry::Vacant(slot) => {
                slot.insert((item.index, fqdn.at));
            }
            Entry::Occupied(slot) => {
                let (first, at) = *slot.get();
                problems.push(Problem::new(
                    Severity::Error,
                    fqdn.at,
                    field("fqdn"),
                    "duplicate-sni",
                    format!(
                        "{} is already routed on gateway port {gateway_port} by routes.tls[{first}] (line {}); \
                         one SNI can reach only one backend per port: remove one item or give it another gatewayPort",
                        fqdn.value, at.line
                    ),
                ));
                continue;
            }
        }
        let namespace = item
            .namespace
            .as_ref()
            .map_or(DEFAULT_NAMESPACE.to_string(), |n| n.value.clone());
        routes.push(Route {
            name: item
                .name
                .as_ref()
                .map_or_else(|| first_label(&fqdn.value).to_string(), |n| n.value.clone()),
            service: Service {
                name: service_name.value.clone(),
                namespace: namespace.clone(),
                port: service_port.value,
            },
            namespace,
            sni,
            gateway_port,
            keepalive: item.client_traffic_policy.as_ref().and_then(|p| p.tcp_keepalive),
            index: item.index,
            at: item.at,
        });
    }
    if !values.tls.is_empty() && values.external.is_none() {
        problems.push(Problem::new(
            Severity::Warning,
            Pos::default(),
            "gateways.external",
            "no-gateway",
            "routes.tls is not empty but gateways.external is missing: the chart's TLSRoute template reads \
             gateways.external.name, so helm fails with \"nil pointer evaluating interface {}.name\" (and no \
             Gateway or ClientTrafficPolicy would be rendered); add gateways.external with name, namespace and className",
        ));
    }
    routes
}

/// The first DNS label of a host name: the chart's default listener name.
pub fn first_label(fqdn: &str) -> &str {
    fqdn.split('.').next().unwrap_or(fqdn)
}

// === impl SniPattern ===

impl SniPattern {
    /// Parse an `fqdn` by the Gateway API host name rules: lowercase RFC 1123
    /// labels, an optional leading `*.`, no IP address, at most 253 characters.
    pub fn parse(fqdn: &str) -> Result<Self, String> {
        let (wildcard, name) = match fqdn.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, fqdn),
        };
        check_hostname(fqdn, name)?;
        Ok(if wildcard {
            SniPattern::Wildcard(name.to_string())
        } else {
            SniPattern::Exact(name.to_string())
        })
    }

    /// Does this pattern match `name` (already lowercase, no trailing dot)?
    pub fn matches(&self, name: &str) -> bool {
        match self {
            SniPattern::Exact(exact) => exact == name,
            SniPattern::Wildcard(suffix) => {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix.as_str())
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
        }
    }
}

impl fmt::Display for SniPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SniPattern::Exact(name) => f.write_str(name),
            SniPattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

fn check_hostname(fqdn: &str, name: &str) -> Result<(), String> {
    let advice = "a host name such as db.lab.example.com or *.lab.example.com";
    if fqdn.is_empty() {
        return Err(format!("fqdn is empty; it must be {advice}"));
    }
    if fqdn.len() > 253 {
        return Err(format!(
            "fqdn {fqdn:?} is {} characters long; host names have at most 253",
            fqdn.len()
        ));
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "fqdn {fqdn:?} is an IP address; SNI carries host names only, so it must be {advice}"
        ));
    }
    if name.contains('*') {
        return Err(format!(
            "fqdn {fqdn:?}: a wildcard is allowed only as the whole first label (`*.example.com`)"
        ));
    }
    if fqdn.ends_with('.') {
        return Err(format!(
            "fqdn {fqdn:?} ends with a dot; write it without the trailing dot"
        ));
    }
    if fqdn.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "fqdn {fqdn:?} has upper-case letters; Gateway API host names are lowercase: write {:?}",
            fqdn.to_ascii_lowercase()
        ));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "fqdn {fqdn:?} has the invalid label {label:?}; labels are 1-63 characters of a-z, 0-9 and '-', \
                 not starting or ending with '-'"
            ));
        }
    }
    Ok(())
}

// === impl Problem ===

impl Problem {
    /// A new finding.
    pub fn new(
        severity: Severity,
        at: Pos,
        field: impl Into<String>,
        rule: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity,
            at,
            field: field.into(),
            rule,
            message: message.into(),
        }
    }

    /// `file:line:column: error: message` (line omitted when unknown).
    pub fn display<'a>(&'a self, file: &'a Path) -> impl fmt::Display + 'a {
        struct D<'a>(&'a Problem, &'a Path);
        impl fmt::Display for D<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let p = self.0;
                write!(f, "{}", self.1.display())?;
                if p.at.line > 0 {
                    write!(f, ":{}:{}", p.at.line, p.at.column)?;
                }
                let level = match p.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                write!(f, ": {level}")?;
                if !p.field.is_empty() {
                    write!(f, ": {}", p.field)?;
                }
                write!(f, ": {}", p.message)
            }
        }
        D(self, file)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.problems.iter().filter(|p| p.severity == Severity::Error).count();
        writeln!(f, "{}: {errors} error(s) in values file", self.source.display())?;
        for p in &self.problems {
            writeln!(f, "  {}", p.display(&self.source))?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests;
