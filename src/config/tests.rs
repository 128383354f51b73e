use super::*;

fn ok(text: &str) -> Config {
    match load(text, Path::new("values.yaml")) {
        Ok(c) => c,
        Err(e) => panic!("expected to load:\n{e}"),
    }
}

/// The error text for a file that must not load.
fn err(text: &str) -> String {
    match load(text, Path::new("values.yaml")) {
        Ok(c) => panic!("expected an error, loaded {:?}", c.routes),
        Err(e) => e.to_string(),
    }
}

const NAUTOBOT: &str = "\
gateways:
  external:
    name: gateway-external
    namespace: envoy-gateway
    className: eg
routes:
  http: []
  tls:
    - fqdn: nautobot-db.lab.example.com
      gatewayPort: 5432
      namespace: nautobot
      service:
        name: nautobot-cluster-rw
        port: 5432
    - fqdn: nautobot-redis.lab.example.com
      name: redis
      gatewayPort: 6379
      namespace: nautobot
      service:
        name: nautobot-redis-master
        port: 6379
";

#[test]
fn loads_the_nautobot_routes_with_chart_defaults() {
    let config = ok(NAUTOBOT);
    assert_eq!(config.routes.len(), 2);
    let db = &config.routes[0];
    assert_eq!(db.name, "nautobot-db");
    assert_eq!(db.namespace, "nautobot");
    assert_eq!(db.gateway_port, 5432);
    assert_eq!(db.sni, SniPattern::Exact("nautobot-db.lab.example.com".into()));
    assert_eq!(
        db.service,
        Service {
            name: "nautobot-cluster-rw".into(),
            namespace: "nautobot".into(),
            port: 5432
        }
    );
    assert_eq!(config.routes[1].name, "redis");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn defaults_namespace_and_port_like_the_chart() {
    let config = ok("routes:\n  tls:\n    - fqdn: a.example.com\n      service: {name: a, port: 8443}\n");
    let route = &config.routes[0];
    assert_eq!(route.namespace, "envoy-gateway");
    assert_eq!(route.gateway_port, 443);
    assert_eq!(route.name, "a");
    // gateways.external is missing: the chart renders a parentRef without a name.
    assert_eq!(config.warnings[0].rule, "no-gateway");

    let config = ok("gateways:\n  external: {name: g, namespace: n, className: eg, port: 8443}\nroutes:\n  tls:\n    - fqdn: a.example.com\n      service: {name: a, port: 1}\n");
    assert_eq!(config.routes[0].gateway_port, 8443);
    assert_eq!(config.warnings[0].rule, "chart-schema", "port is template-only");
}

#[test]
fn empty_and_partial_files_load() {
    assert!(ok("").routes.is_empty());
    assert!(ok("gateways: {}\n").routes.is_empty());
    assert!(ok("routes:\n  tls: []\n  http: []\n").routes.is_empty());
}

#[test]
fn every_schema_key_loads() {
    let config = ok("\
gateways:
  external:
    name: ext
    namespace: envoy-gateway
    className: eg
    serviceAnnotations: {a: b}
  internal:
    name: int
    namespace: envoy-gateway
    className: eg
routes:
  http:
    - fqdn: web.example.com
      name: web
      namespace: web
      service: {name: web, port: 80, backendType: http}
      selector: {team: a}
      from: Selector
      filters: {}
      timeouts: {request: 30s, backendRequest: 10s}
      alsoInternal: true
  tls:
    - fqdn: db.example.com
      name: db
      namespace: data
      gatewayPort: 5432
      service: {name: pg, port: 5432}
      from: All
      selector: {x: y}
      clientTrafficPolicy:
        name: db-ctp
        namespace: data
        tcpKeepalive: {idleTime: 120s, interval: 30s, probes: 3}
");
    let ka = config.routes[0].keepalive.unwrap();
    assert_eq!(ka.idle_time, Some(std::time::Duration::from_secs(120)));
    assert_eq!(ka.probes, Some(3));
}

#[test]
fn unknown_field_names_line_and_field_and_suggests() {
    let e =
        err("routes:\n  tls:\n    - fqdn: a.example.com\n      gatewayport: 5432\n      service: {name: a, port: 1}\n");
    assert!(e.contains("values.yaml:4:7: error: routes.tls[0].gatewayport: unknown field `gatewayport` (did you mean `gatewayPort`?)"), "{e}");
}

#[test]
fn duplicate_key_names_line() {
    let e = err("routes:\n  tls:\n    - fqdn: a.example.com\n      fqdn: b.example.com\n");
    assert!(e.contains("values.yaml:4:") && e.contains("duplicate"), "{e}");
}

#[test]
fn wrong_types_name_the_field() {
    let e = err(
        "routes:\n  tls:\n    - fqdn: a.example.com\n      gatewayPort: \"5432\"\n      service: {name: a, port: 1}\n",
    );
    assert!(e.contains(":4:20: error: routes.tls[0].gatewayPort: routes.tls[0].gatewayPort must be an integer, found the string \"5432\""), "{e}");
    let e = err("routes:\n  tls: {fqdn: a}\n");
    assert!(
        e.contains(":2:8: error: routes.tls: routes.tls must be a list, found a mapping"),
        "{e}"
    );
    let e = err("routes:\n  tls:\n    - fqdn: [a]\n      service: {name: a, port: 1}\n");
    assert!(
        e.contains(":3:13: error: routes.tls[0].fqdn: routes.tls[0].fqdn must be a string, found a list"),
        "{e}"
    );
}

#[test]
fn missing_required_fields() {
    let e = err("routes:\n  tls:\n    - name: x\n");
    assert!(
        e.contains(":3:7: error: routes.tls[0].fqdn: missing required field `fqdn`"),
        "{e}"
    );
    assert!(
        e.contains(":3:7: error: routes.tls[0].service: missing required field `service`"),
        "{e}"
    );
    let e = err("routes:\n  tls:\n    - fqdn: a.example.com\n      service:\n        name: a\n");
    assert!(
        e.contains(":5:9: error: routes.tls[0].service.port: missing required field `port`"),
        "{e}"
    );
}

#[test]
fn ports_out_of_range() {
    for port in ["0", "65536", "-1"] {
        let e = err(&format!("routes:\n  tls:\n    - fqdn: a.example.com\n      gatewayPort: {port}\n      service: {{name: a, port: 1}}\n"));
        assert!(e.contains(&format!(":4:20: error: routes.tls[0].gatewayPort: routes.tls[0].gatewayPort is {port}; a port must be between 1 and 65535")), "{e}");
    }
    let e = err("routes:\n  tls:\n    - fqdn: a.example.com\n      service: {name: a, port: 70000}\n");
    assert!(e.contains("routes.tls[0].service.port is 70000"), "{e}");
}

#[test]
fn invalid_host_names() {
    for (fqdn, why) in [
        ("Db.example.com", "upper-case"),
        ("db..example.com", "invalid label \"\""),
        ("db.example.com.", "trailing dot"),
        ("a.*.example.com", "wildcard is allowed only"),
        ("10.0.0.1", "IP address"),
        ("-db.example.com", "invalid label"),
        ("db_1.example.com", "invalid label"),
    ] {
        let e = err(&format!(
            "routes:\n  tls:\n    - fqdn: \"{fqdn}\"\n      service: {{name: a, port: 1}}\n"
        ));
        assert!(
            e.contains(":3:13: error: routes.tls[0].fqdn:") && e.contains(why),
            "{fqdn}: {e}"
        );
    }
    let long = format!("{}.example.com", vec!["a".repeat(60); 5].join("."));
    let e = err(&format!(
        "routes:\n  tls:\n    - fqdn: {long}\n      service: {{name: a, port: 1}}\n"
    ));
    assert!(e.contains("at most 253"), "{e}");
}

#[test]
fn same_sni_twice_on_one_port() {
    let e = err("routes:\n  tls:\n    - fqdn: a.example.com\n      service: {name: a, port: 1}\n    - fqdn: a.example.com\n      name: other\n      service: {name: b, port: 1}\n");
    assert!(e.contains(":5:13: error: routes.tls[1].fqdn: a.example.com is already routed on gateway port 443 by routes.tls[0] (line 3)"), "{e}");
    // The same name on two ports is the evident intent of a per-port router.
    let config = ok("routes:\n  tls:\n    - fqdn: a.example.com\n      service: {name: a, port: 1}\n    - fqdn: a.example.com\n      name: a2\n      gatewayPort: 8443\n      service: {name: b, port: 1}\n");
    assert_eq!(config.routes.len(), 2);
}

#[test]
fn reports_every_problem_at_once() {
    let e = err("\
gateways:
  external: {name: g, namespace: n}
routes:
  tls:
    - fqdn: Bad.example.com
      service: {name: a, port: 0}
    - fqdn: ok.example.com
      gatewayPort: x
      service: {name: a, port: 1}
      weight: 3
  extra: 1
");
    for needle in [
        ":2:13: error: gateways.external.className: missing required field `className`",
        ":5:13: error: routes.tls[0].fqdn:",
        ":6:32: error: routes.tls[0].service.port",
        ":8:20: error: routes.tls[1].gatewayPort",
        ":10:7: error: routes.tls[1].weight: unknown field `weight`",
        ":11:3: error: routes.extra: unknown field `extra`",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in\n{e}");
    }
    assert!(e.contains("6 error(s)"), "{e}");
}

#[test]
fn bad_enum_and_durations() {
    let e = err("routes:\n  tls:\n    - fqdn: a.example.com\n      from: Everyone\n      service: {name: a, port: 1}\n      clientTrafficPolicy:\n        tcpKeepalive: {idleTime: 2 minutes, probes: 0}\n");
    assert!(
        e.contains("routes.tls[0].from is \"Everyone\"; it must be one of Same, All, Selector"),
        "{e}"
    );
    assert!(
        e.contains("routes.tls[0].clientTrafficPolicy.tcpKeepalive.idleTime"),
        "{e}"
    );
    assert!(
        e.contains("routes.tls[0].clientTrafficPolicy.tcpKeepalive.probes must be an integer of at least 1, found 0"),
        "{e}"
    );
}

#[test]
fn yaml_syntax_error_names_the_line() {
    let e = err("routes:\n  tls: [\n");
    assert!(e.contains("values.yaml:2:"), "{e}");
}

#[test]
fn sni_pattern_matching() {
    let w = SniPattern::parse("*.example.com").unwrap();
    assert!(w.matches("a.example.com"));
    assert!(w.matches("a.b.example.com"));
    assert!(!w.matches("example.com"));
    assert!(!w.matches("aexample.com"));
    assert!(!w.matches(".example.com"));
}

#[test]
fn thirty_thousand_routes_load() {
    // serde-saphyr's default node budget refused files past ~16 000 routes.
    let mut text = String::from("routes:\n  tls:\n");
    for i in 0..30_000 {
        text.push_str(&format!(
            "    - {{fqdn: r{i}.load.example.com, service: {{name: s, port: 443}}}}\n"
        ));
    }
    let config = ok(&text);
    assert_eq!(config.routes.len(), 30_000);
}
