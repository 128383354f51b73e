//! What the `envoy-configs` chart's templates make of a values file: the
//! external Gateway's listeners, one TLSRoute per `routes.tls` item and the
//! ClientTrafficPolicies, with the templates' defaults applied.
//!
//! `check` applies the Gateway API and Kubernetes rules to this model and
//! `render --to gateway-api` prints it. The template logic mirrored here
//! (`templates/gw-external.yaml.tpl`, `tlsroute.yaml.tpl`,
//! `clienttrafficpolicy.yaml.tpl` of the chart) is quoted next to each default.

use std::collections::BTreeMap;

use crate::config::values::{Gateway, Located, TrafficPolicy, Values};
use crate::config::{first_label, Pos, DEFAULT_GATEWAY_PORT, DEFAULT_NAMESPACE};

/// `name` in the chart's `Chart.yaml` (also `app.kubernetes.io/name`).
pub const CHART_NAME: &str = "envoy-configs";
/// `version` in the chart's `Chart.yaml`, as in the `helm.sh/chart` label.
pub const CHART_VERSION: &str = "1.0.0";
/// `appVersion` in the chart's `Chart.yaml`, as in `app.kubernetes.io/version`.
pub const CHART_APP_VERSION: &str = "1.6.0";
/// `gateways.external.issuer | default "understack-cluster-issuer"`.
pub const DEFAULT_ISSUER: &str = "understack-cluster-issuer";
/// `from | default "All"` for a listener's `allowedRoutes.namespaces`.
pub const DEFAULT_FROM: &str = "All";

/// Everything the chart renders that `check` and `render` look at.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// `gateways.external`, when set (the Gateway and the policies need it).
    pub gateway: Option<Gateway>,
    /// The Gateway's listeners: `routes.http` items first, then `routes.tls`.
    pub listeners: Vec<Listener>,
    /// One TLSRoute per `routes.tls` item, in file order.
    pub tls_routes: Vec<TlsRoute>,
    /// One ClientTrafficPolicy per `routes.tls` item with a non-empty
    /// `clientTrafficPolicy`, rendered only when `gateways.external` is set.
    pub policies: Vec<Policy>,
}

/// Which list of the values file an item is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// `routes.http`.
    Http,
    /// `routes.tls`.
    Tls,
}

/// One item of `routes.http` or `routes.tls`: where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemRef {
    /// Its list.
    pub kind: ItemKind,
    /// Index in that list.
    pub index: usize,
    /// Where the item starts.
    pub at: Pos,
}

/// A listener protocol as the chart sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `routes.http` items: TLS terminated by the gateway.
    Https,
    /// `routes.tls` items: TLS passthrough.
    Tls,
}

/// One listener of the external Gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// `name`, else the first DNS label of `fqdn`.
    pub name: String,
    /// True when `name` was not given (or empty) and came from `fqdn`.
    pub name_defaulted: bool,
    /// Where the name is written (the `fqdn` when defaulted).
    pub name_at: Pos,
    /// Port on the Gateway.
    pub port: u16,
    /// HTTPS (routes.http) or TLS (routes.tls).
    pub protocol: Protocol,
    /// `fqdn`, as written.
    pub hostname: Located<String>,
    /// `allowedRoutes.namespaces.from`: `Selector` when a selector is given,
    /// else `from`, else `All`.
    pub from: String,
    /// `from` as written, if it was.
    pub from_written: Option<Located<String>>,
    /// `selector`, when given and not empty.
    pub selector: Option<BTreeMap<String, String>>,
    /// The item it comes from.
    pub item: ItemRef,
}

/// One TLSRoute.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsRoute {
    /// `metadata.name`: the listener's name.
    pub name: String,
    /// `metadata.namespace`: `namespace`, else `envoy-gateway`.
    pub namespace: String,
    /// Where `namespace` is written, when it is.
    pub namespace_at: Option<Pos>,
    /// `hostnames[0]`: the `fqdn`.
    pub hostname: String,
    /// `backendRefs[0].name`.
    pub service_name: Option<String>,
    /// `backendRefs[0].port`.
    pub service_port: Option<u16>,
    /// Index of its own listener in [`Chart::listeners`].
    pub listener: usize,
    /// The item it comes from.
    pub item: ItemRef,
}

/// One ClientTrafficPolicy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `clientTrafficPolicy.name`, else `<listener>-client-traffic`.
    pub name: String,
    /// `clientTrafficPolicy.namespace`, else the Gateway's namespace.
    pub namespace: String,
    /// The listener it targets (`sectionName`).
    pub section: String,
    /// The policy as written.
    pub policy: TrafficPolicy,
    /// The item it comes from.
    pub item: ItemRef,
}

/// Build the chart's view of `values`. Items without an `fqdn` are left out
/// (the templates cannot render them; the loader reports them).
pub fn chart(values: &Values) -> Chart {
    let external_port = values.external.as_ref().and_then(|g| g.port.as_ref()).map(|p| p.value);
    let mut chart = Chart {
        gateway: values.external.clone(),
        ..Chart::default()
    };
    // gw-external.yaml.tpl: `range .Values.routes.http` first, then `routes.tls`.
    for item in &values.http {
        let Some(fqdn) = &item.fqdn else { continue };
        let (name, name_defaulted, name_at) = listener_name(item.name.as_ref(), fqdn);
        chart.listeners.push(Listener {
            name,
            name_defaulted,
            name_at,
            // `$.Values.gateways.external.port | default 443`
            port: external_port.unwrap_or(DEFAULT_GATEWAY_PORT),
            protocol: Protocol::Https,
            hostname: fqdn.clone(),
            from: from(item.from.as_ref(), item.selector.as_ref()),
            from_written: item.from.clone(),
            selector: item.selector.clone().filter(|s| !s.is_empty()),
            item: ItemRef {
                kind: ItemKind::Http,
                index: item.index,
                at: item.at,
            },
        });
    }
    for item in &values.tls {
        let Some(fqdn) = &item.fqdn else { continue };
        let item_ref = ItemRef {
            kind: ItemKind::Tls,
            index: item.index,
            at: item.at,
        };
        let (name, name_defaulted, name_at) = listener_name(item.name.as_ref(), fqdn);
        let listener = chart.listeners.len();
        chart.listeners.push(Listener {
            name: name.clone(),
            name_defaulted,
            name_at,
            // `.gatewayPort | default ($.Values.gateways.external.port | default 443)`
            port: item
                .gateway_port
                .as_ref()
                .map(|p| p.value)
                .or(external_port)
                .unwrap_or(DEFAULT_GATEWAY_PORT),
            protocol: Protocol::Tls,
            hostname: fqdn.clone(),
            from: from(item.from.as_ref(), item.selector.as_ref()),
            from_written: item.from.clone(),
            selector: item.selector.clone().filter(|s| !s.is_empty()),
            item: item_ref,
        });
        // tlsroute.yaml.tpl: `namespace: {{ .namespace | default "envoy-gateway" }}`
        let namespace = item.namespace.as_ref().filter(|n| !n.value.is_empty());
        chart.tls_routes.push(TlsRoute {
            name: name.clone(),
            namespace: namespace.map_or(DEFAULT_NAMESPACE.to_string(), |n| n.value.clone()),
            namespace_at: namespace.map(|n| n.at),
            hostname: fqdn.value.clone(),
            service_name: item.service_name.as_ref().map(|s| s.value.clone()),
            service_port: item.service_port.as_ref().map(|p| p.value),
            listener,
            item: item_ref,
        });
        // clienttrafficpolicy.yaml.tpl: `if .Values.gateways.external` and
        // `if .clientTrafficPolicy` (an empty mapping is false in a template).
        if let (Some(gateway), Some(policy)) = (&values.external, &item.client_traffic_policy) {
            if policy.name.is_none() && policy.namespace.is_none() && policy.tcp_keepalive.is_none() {
                continue;
            }
            chart.policies.push(Policy {
                name: policy
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| format!("{name}-client-traffic")),
                namespace: policy
                    .namespace
                    .clone()
                    .filter(|n| !n.is_empty())
                    .or_else(|| gateway.namespace.clone())
                    .unwrap_or_default(),
                section: name,
                policy: policy.clone(),
                item: item_ref,
            });
        }
    }
    chart
}

/// `.name | default (index (splitList "." .fqdn) 0)`: an empty name is no name.
fn listener_name(name: Option<&Located<String>>, fqdn: &Located<String>) -> (String, bool, Pos) {
    match name.filter(|n| !n.value.is_empty()) {
        Some(n) => (n.value.clone(), false, n.at),
        None => (first_label(&fqdn.value).to_string(), true, fqdn.at),
    }
}

/// `if .selector` → `Selector`, else `.from | default "All"`.
fn from(from: Option<&Located<String>>, selector: Option<&BTreeMap<String, String>>) -> String {
    if selector.is_some_and(|s| !s.is_empty()) {
        return "Selector".to_string();
    }
    from.map_or(DEFAULT_FROM.to_string(), |f| f.value.clone())
}

// === impl ItemRef ===

impl ItemRef {
    /// `routes.tls[2]`.
    pub fn path(&self) -> String {
        match self.kind {
            ItemKind::Http => format!("routes.http[{}]", self.index),
            ItemKind::Tls => format!("routes.tls[{}]", self.index),
        }
    }

    /// `routes.tls[2].name`.
    pub fn field(&self, key: &str) -> String {
        format!("{}.{key}", self.path())
    }
}

// === impl Protocol ===

impl Protocol {
    /// `HTTPS` / `TLS`, as in the Gateway.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Https => "HTTPS",
            Protocol::Tls => "TLS",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn build(text: &str) -> Chart {
        let (config, _) = crate::config::check(text, Path::new("v.yaml"));
        chart(&config.expect("parses").values)
    }

    #[test]
    fn applies_the_template_defaults() {
        let c = build(
            "gateways:\n  external: {name: gw, namespace: eg, className: eg, port: 8443}\n\
             routes:\n  http:\n    - {fqdn: web.example.com, service: {name: web, port: 80}, from: Same}\n\
             \x20 tls:\n    - {fqdn: db.example.com, service: {name: pg, port: 5432}, selector: {a: b}, from: Same,\n\
             \x20      clientTrafficPolicy: {tcpKeepalive: {probes: 3}}}\n\
             \x20   - {fqdn: r.example.com, name: '', namespace: ns, gatewayPort: 6379, service: {name: r, port: 6379},\n\
             \x20      clientTrafficPolicy: {}}\n",
        );
        let names: Vec<_> = c
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.port, l.protocol))
            .collect();
        assert_eq!(
            names,
            vec![
                ("web", 8443, Protocol::Https),
                ("db", 8443, Protocol::Tls),
                ("r", 6379, Protocol::Tls)
            ]
        );
        assert_eq!(c.listeners[0].from, "Same");
        assert_eq!(c.listeners[1].from, "Selector", "a selector wins over from");
        assert!(c.listeners[2].name_defaulted, "an empty name is defaulted");
        assert_eq!(c.tls_routes[0].namespace, "envoy-gateway");
        assert_eq!(c.tls_routes[1].namespace, "ns");
        assert_eq!(c.tls_routes[1].listener, 2);
        // `clientTrafficPolicy: {}` renders nothing.
        assert_eq!(c.policies.len(), 1);
        assert_eq!(c.policies[0].name, "db-client-traffic");
        assert_eq!(c.policies[0].namespace, "eg");
        assert_eq!(c.policies[0].section, "db");
    }

    #[test]
    fn no_policies_without_the_external_gateway() {
        let c = build(
            "routes:\n  tls:\n    - {fqdn: db.example.com, service: {name: pg, port: 5432},\n\
             \x20      clientTrafficPolicy: {name: p}}\n",
        );
        assert!(c.gateway.is_none());
        assert!(c.policies.is_empty());
        assert_eq!(c.tls_routes.len(), 1);
    }
}
