//! `render --to gateway-api`: the objects the `envoy-configs` chart renders for
//! the external Gateway and `routes.tls`, field for field, as `helm template`
//! prints them (sorted by kind, file order within a kind, `# Source:` lines).

use std::fmt;

use super::chart::{self, Chart, Listener, Policy, Protocol, TlsRoute};
use super::emit::{yaml_document, Map, Node};
use crate::config::values::Values;

/// Which TLSRoute API version to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TlsRouteVersion {
    /// `gateway.networking.k8s.io/v1alpha2`, as the chart writes it
    /// (experimental channel only; deprecated since Gateway API v1.5).
    #[default]
    V1alpha2,
    /// `gateway.networking.k8s.io/v1` (Gateway API v1.5 and later, both channels).
    V1,
}

/// How to render.
#[derive(Debug, Clone)]
pub struct Options {
    /// TLSRoute `apiVersion`.
    pub tlsroute_version: TlsRouteVersion,
    /// Helm release name, for the `app.kubernetes.io/instance` label.
    pub release: String,
    /// The values file name, for the header comment.
    pub source: String,
}

/// The chart cannot render this file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// Routes without `gateways.external`: the templates dereference it.
    #[error(
        "routes are set but gateways.external is missing: the chart's route templates read \
         gateways.external.name, so helm fails with \"nil pointer evaluating interface {{}}.name\"; \
         add gateways.external with name, namespace and className"
    )]
    NoGateway,
}

/// Render the chart's Gateway, TLSRoutes and ClientTrafficPolicies.
pub fn render(values: &Values, options: &Options) -> Result<String, RenderError> {
    let chart = chart::chart(values);
    if chart.gateway.is_none() && !(values.tls.is_empty() && values.http.is_empty()) {
        return Err(RenderError::NoGateway);
    }
    let mut docs: Vec<(&'static str, Node)> = Vec::new();
    // `helm template` sorts kinds it does not know alphabetically, keeping
    // file order within a kind: ClientTrafficPolicy, Gateway, TLSRoute.
    for policy in &chart.policies {
        docs.push(("clienttrafficpolicy.yaml.tpl", client_traffic_policy(&chart, policy)));
    }
    if let Some(gateway) = gateway(&chart, options) {
        docs.push(("gw-external.yaml.tpl", gateway));
    }
    for route in &chart.tls_routes {
        docs.push(("tlsroute.yaml.tpl", tls_route(&chart, route, options.tlsroute_version)));
    }
    let mut out = String::new();
    let header = header(options, &chart);
    if docs.is_empty() {
        for line in header {
            out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
        }
        return Ok(out);
    }
    for (i, (template, doc)) in docs.iter().enumerate() {
        let mut lines = if i == 0 { header.clone() } else { Vec::new() };
        lines.push(format!("Source: {}/templates/{template}", chart::CHART_NAME));
        yaml_document(&mut out, &lines, doc);
    }
    Ok(out)
}

fn header(options: &Options, chart: &Chart) -> Vec<String> {
    let mut lines = vec![
        format!(
            "Rendered by sni-router from {}: what the {} chart {}",
            options.source,
            chart::CHART_NAME,
            chart::CHART_VERSION
        ),
        format!(
            "renders for the external Gateway and routes.tls (helm template {}):",
            options.release
        ),
        format!(
            "ClientTrafficPolicies, the Gateway, TLSRoutes ({}), in helm's order.",
            options.tlsroute_version.api_version()
        ),
        "Not rendered: HTTPRoutes, Backends, EnvoyProxy, the internal Gateway.".to_string(),
    ];
    if options.tlsroute_version != TlsRouteVersion::default() {
        lines.push(format!(
            "The chart itself writes TLSRoute {}; this output uses {} (--tlsroute-version).",
            TlsRouteVersion::default().api_version(),
            options.tlsroute_version.api_version()
        ));
    }
    if chart.gateway.is_none() {
        lines.push("gateways.external is not set and there are no routes: the chart renders nothing.".to_string());
    }
    lines
}

fn gateway(chart: &Chart, options: &Options) -> Option<Node> {
    let gateway = chart.gateway.as_ref()?;
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    let labels = Map::new()
        .with(
            "helm.sh/chart",
            format!("{}-{}", chart::CHART_NAME, chart::CHART_VERSION),
        )
        .with("app.kubernetes.io/name", chart::CHART_NAME)
        .with("app.kubernetes.io/instance", options.release.as_str())
        .with("app.kubernetes.io/version", chart::CHART_APP_VERSION)
        .with("app.kubernetes.io/managed-by", "Helm");
    let issuer = gateway
        .issuer
        .as_ref()
        .map(|i| i.value.clone())
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| chart::DEFAULT_ISSUER.to_string());
    let metadata = Map::new()
        .with("name", text(&gateway.name))
        .with("namespace", text(&gateway.namespace))
        .with("annotations", Map::new().with("cert-manager.io/cluster-issuer", issuer))
        .with("labels", labels);
    let mut spec = Map::new()
        .with("gatewayClassName", text(&gateway.class_name))
        .with("listeners", chart.listeners.iter().map(listener).collect::<Vec<_>>());
    if gateway.service_annotations.as_ref().is_some_and(|a| !a.is_empty()) {
        spec.push(
            "infrastructure",
            Map::new().with(
                "parametersRef",
                Map::new()
                    .with("group", "gateway.envoyproxy.io")
                    .with("kind", "EnvoyProxy")
                    .with("name", format!("{}-proxy", text(&gateway.name))),
            ),
        );
    }
    Some(Node::Map(
        Map::new()
            .with("apiVersion", "gateway.networking.k8s.io/v1")
            .with("kind", "Gateway")
            .with("metadata", metadata)
            .with("spec", spec),
    ))
}

fn listener(listener: &Listener) -> Node {
    let tls = match listener.protocol {
        Protocol::Https => Map::new().with("mode", "Terminate").with(
            "certificateRefs",
            vec![Node::Map(Map::new().with("name", format!("{}-tls", listener.name)))],
        ),
        Protocol::Tls => Map::new().with("mode", "Passthrough"),
    };
    let mut namespaces = Map::new().with("from", listener.from.as_str());
    if let Some(selector) = &listener.selector {
        // The chart copies the map as it is (`.selector | toYaml`).
        let mut map = Map::new();
        for (k, v) in selector {
            map.push(k, v.as_str());
        }
        namespaces.push("selector", map);
    }
    Node::Map(
        Map::new()
            .with("name", listener.name.as_str())
            .with("port", listener.port)
            .with("protocol", listener.protocol.as_str())
            .with("hostname", listener.hostname.value.as_str())
            .with("tls", tls)
            .with("allowedRoutes", Map::new().with("namespaces", namespaces)),
    )
}

fn tls_route(chart: &Chart, route: &TlsRoute, version: TlsRouteVersion) -> Node {
    let gateway = chart.gateway.as_ref();
    let parent = Map::new()
        .with("name", gateway.and_then(|g| g.name.clone()).unwrap_or_default())
        .with(
            "namespace",
            gateway.and_then(|g| g.namespace.clone()).unwrap_or_default(),
        );
    // `{{- with .namespace }} namespace: {{ . }}`: only when the item sets one.
    let backend = Map::new()
        .with("name", route.service_name.clone().unwrap_or_default())
        .with_opt("namespace", route.namespace_at.map(|_| route.namespace.as_str()))
        .with_opt("port", route.service_port);
    Node::Map(
        Map::new()
            .with("apiVersion", version.api_version())
            .with("kind", "TLSRoute")
            .with(
                "metadata",
                Map::new()
                    .with("name", route.name.as_str())
                    .with("namespace", route.namespace.as_str()),
            )
            .with(
                "spec",
                Map::new()
                    .with("parentRefs", vec![Node::Map(parent)])
                    .with("hostnames", vec![Node::from(route.hostname.as_str())])
                    .with(
                        "rules",
                        vec![Node::Map(Map::new().with("backendRefs", vec![Node::Map(backend)]))],
                    ),
            ),
    )
}

fn client_traffic_policy(chart: &Chart, policy: &Policy) -> Node {
    let gateway_name = chart.gateway.as_ref().and_then(|g| g.name.clone()).unwrap_or_default();
    let target = Map::new()
        .with("group", "gateway.networking.k8s.io")
        .with("kind", "Gateway")
        .with("name", gateway_name)
        .with("sectionName", policy.section.as_str());
    let mut spec = Map::new().with("targetRefs", vec![Node::Map(target)]);
    if let Some(keepalive) = &policy.policy.tcp_keepalive {
        // `{{- with .tcpKeepalive }}` and `{{- if .idleTime }}` ...: only what is set.
        let map = Map::new()
            .with_opt("idleTime", policy.policy.idle_time_text.clone())
            .with_opt("interval", policy.policy.interval_text.clone())
            .with_opt("probes", keepalive.probes);
        if !map.0.is_empty() {
            spec.push("tcpKeepalive", map);
        }
    }
    Node::Map(
        Map::new()
            .with("apiVersion", "gateway.envoyproxy.io/v1alpha1")
            .with("kind", "ClientTrafficPolicy")
            .with(
                "metadata",
                Map::new()
                    .with("name", policy.name.as_str())
                    .with("namespace", policy.namespace.as_str()),
            )
            .with("spec", spec),
    )
}

// === impl TlsRouteVersion ===

impl TlsRouteVersion {
    /// The `apiVersion` value.
    pub fn api_version(&self) -> &'static str {
        match self {
            TlsRouteVersion::V1alpha2 => "gateway.networking.k8s.io/v1alpha2",
            TlsRouteVersion::V1 => "gateway.networking.k8s.io/v1",
        }
    }
}

impl fmt::Display for TlsRouteVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsRouteVersion::V1alpha2 => "v1alpha2",
            TlsRouteVersion::V1 => "v1",
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::yaml;

    fn options(version: TlsRouteVersion) -> Options {
        Options {
            tlsroute_version: version,
            release: "envoy-configs".into(),
            source: "v.yaml".into(),
        }
    }

    fn values(text: &str) -> Values {
        crate::config::load(text, Path::new("v.yaml")).expect("loads").values
    }

    const FILE: &str = "gateways:\n  external: {name: gw, namespace: eg, className: eg}\nroutes:\n  tls:\n\
        \x20   - {fqdn: '*.db.example.com', name: db, namespace: ns, gatewayPort: 5432, service: {name: pg, port: 5432},\n\
        \x20      clientTrafficPolicy: {tcpKeepalive: {idleTime: 2m, probes: 3}}}\n";

    #[test]
    fn every_document_is_yaml_and_kinds_come_in_helm_order() {
        let out = render(&values(FILE), &options(TlsRouteVersion::V1alpha2)).unwrap();
        let docs: Vec<&str> = out.split("---\n").filter(|d| !d.trim().is_empty()).collect();
        assert_eq!(docs.len(), 3, "{out}");
        let kinds: Vec<String> = docs
            .iter()
            .map(|d| {
                let node = yaml::parse(d).unwrap_or_else(|e| panic!("{e}: {d}"));
                let yaml::Value::Map(m) = node.value else { panic!("{d}") };
                let (_, kind) = m.iter().find(|(k, _)| k.name == "kind").unwrap();
                match &kind.value {
                    yaml::Value::Str(s) => s.to_string(),
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(kinds, ["ClientTrafficPolicy", "Gateway", "TLSRoute"]);
        assert!(out.contains("hostname: \"*.db.example.com\""), "{out}");
        assert!(out.contains("idleTime: 2m\n"), "the duration text is copied: {out}");
        assert!(out.contains("apiVersion: gateway.networking.k8s.io/v1alpha2\n"));
    }

    #[test]
    fn tlsroute_version_v1() {
        let out = render(&values(FILE), &options(TlsRouteVersion::V1)).unwrap();
        assert!(
            out.contains("apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute"),
            "{out}"
        );
    }

    #[test]
    fn routes_without_the_external_gateway_do_not_render() {
        let v = values("routes:\n  tls:\n    - {fqdn: a.example.com, service: {name: a, port: 1}}\n");
        assert_eq!(
            render(&v, &options(TlsRouteVersion::V1alpha2)),
            Err(RenderError::NoGateway)
        );
        let out = render(&values(""), &options(TlsRouteVersion::V1alpha2)).unwrap();
        assert!(out.lines().all(|l| l.starts_with('#')), "{out}");
    }
}
