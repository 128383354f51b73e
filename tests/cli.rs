//! The binary's contract: exit codes, error messages naming file, line and
//! field, environment variables for every flag, bind errors, and `demo`.

mod common;

use common::*;
use sni_router::pki::Ca;

fn config_error(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bad-values.yaml", yaml);
    let (code, _, stderr) = run_binary(&["run", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "bad config must exit 2; stderr:\n{stderr}");
    stderr.replace(path.to_str().unwrap(), "bad-values.yaml")
}

#[test]
fn each_config_error_class_names_file_line_and_field() {
    let cases = [
        (
            "unknown field",
            "routes:\n  tls:\n    - fqdn: a.example.com\n      sevice: {name: a, port: 1}\n",
            "bad-values.yaml:4:7: error: routes.tls[0].sevice: unknown field `sevice` (did you mean `service`?)",
        ),
        ("duplicate key", "routes:\n  tls: []\n  tls: []\n", "bad-values.yaml:3:3: error: duplicate mapping key: tls"),
        (
            "wrong type",
            "routes:\n  tls:\n    - fqdn: a.example.com\n      gatewayPort: \"5432\"\n      service: {name: a, port: 1}\n",
            "bad-values.yaml:4:20: error: routes.tls[0].gatewayPort: routes.tls[0].gatewayPort must be an integer, found the string \"5432\"",
        ),
        (
            "missing required field",
            "routes:\n  tls:\n    - fqdn: a.example.com\n",
            "bad-values.yaml:3:7: error: routes.tls[0].service: missing required field `service`",
        ),
        (
            "port out of range",
            "routes:\n  tls:\n    - fqdn: a.example.com\n      service: {name: a, port: 99999}\n",
            "bad-values.yaml:4:32: error: routes.tls[0].service.port: routes.tls[0].service.port is 99999",
        ),
        (
            "invalid host name",
            "routes:\n  tls:\n    - fqdn: db_1.example.com\n      service: {name: a, port: 1}\n",
            "bad-values.yaml:3:13: error: routes.tls[0].fqdn: fqdn \"db_1.example.com\" has the invalid label \"db_1\"",
        ),
        (
            "same SNI twice on one port",
            "routes:\n  tls:\n    - fqdn: a.example.com\n      service: {name: a, port: 1}\n    - fqdn: a.example.com\n      name: b\n      service: {name: b, port: 1}\n",
            "bad-values.yaml:5:13: error: routes.tls[1].fqdn: a.example.com is already routed on gateway port 443 by routes.tls[0] (line 3)",
        ),
    ];
    for (class, yaml, expected) in cases {
        let stderr = config_error(yaml);
        assert!(stderr.contains(expected), "{class}: expected {expected:?} in\n{stderr}");
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let stderr = config_error(
        "routes:\n  tls:\n    - fqdn: A.example.com\n      service: {name: a, port: 0}\n    - fqdn: b.example.com\n      gatewayPort: x\n      service: {name: b, port: 1}\n",
    );
    assert!(stderr.contains("3 error(s)"), "{stderr}");
    for line in [":3:13:", ":4:32:", ":6:20:"] {
        assert!(stderr.contains(line), "{line} missing:\n{stderr}");
    }
}

#[test]
fn missing_file_is_a_clear_error() {
    let (code, _, stderr) = run_binary(&["run", "--config", "/nonexistent/values.yaml"], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("/nonexistent/values.yaml") && stderr.contains("cannot read file"),
        "{stderr}"
    );
}

#[test]
fn a_port_that_cannot_be_bound_names_the_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "values.yaml", &values(&route("a.example.com", 5432, "a")));
    let listen = format!("5432={addr}");
    let (code, _, stderr) = run_binary(&["run", "--config", path.to_str().unwrap(), "--listen", &listen], &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("gateway port 5432: cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("address already in use"), "{stderr}");
}

#[tokio::test]
async fn flags_come_from_environment_variables() {
    let ca = Ca::new().unwrap();
    let a = TlsBackend::start(&ca, "a", &["a.example.com"], None).await;
    let b = TlsBackend::start(&ca, "b", &["b.example.com"], None).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = values(&[route("a.example.com", 5432, "a"), route("b.example.com", 6379, "b")].concat());
    let path = write(dir.path(), "values.yaml", &yaml);
    let backends = format!("a.test={},b.test={}", a.endpoint, b.endpoint);
    let router = RouterProcess::spawn(
        &["run".to_string()],
        dir,
        2,
        &[
            ("SNI_ROUTER_CONFIG", path.to_str().unwrap()),
            ("SNI_ROUTER_LISTEN", "5432=127.0.0.1:0,6379=127.0.0.1:0"),
            ("SNI_ROUTER_BACKEND", &backends),
        ],
    );
    let mut tls = tls_connect(router.addr(5432), "a.example.com", &ca, None)
        .await
        .unwrap();
    assert_eq!(greeting(&mut tls).await, "backend=a client=none");
    let mut tls = tls_connect(router.addr(6379), "b.example.com", &ca, None)
        .await
        .unwrap();
    assert_eq!(greeting(&mut tls).await, "backend=b client=none");
}

#[test]
fn demo_self_check_passes() {
    let (code, stdout, stderr) = run_binary(&["demo", "--check-only"], &[]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("self-check: PASSED"), "{stdout}");
    for needle in [
        "nautobot-db.lab.example.com",
        "nautobot-redis.lab.example.com",
        "PG SSLRequest",
        "the backend's own: TLS passed through",
        "refused: TLS alert unrecognized_name",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing from\n{stdout}");
    }
}

#[test]
fn demo_on_a_broken_config_fails_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "v.yaml", "routes:\n  tls:\n    - fqdn: x\n");
    let (code, _, stderr) = run_binary(&["demo", "--check-only", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("missing required field `service`"), "{stderr}");
}

/// On/off settings from the environment take what people write in a
/// Deployment or a shell (`1`, `yes`, `true`, `0`, `off`), and a typo is an
/// error naming the variable's flag, not a silent "off".
#[test]
fn boolean_environment_variables_take_1_yes_true_and_refuse_typos() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "v.yaml", "routes:\n  tls:\n    - fqdn: x\n");
    let config = path.to_str().unwrap();
    for on in ["1", "yes", "true", "on", "0", "off"] {
        // The flags parse, so the run gets as far as the broken config.
        let env = [("SNI_ROUTER_NO_SPLICE", on), ("SNI_ROUTER_SEND_PROXY_PROTOCOL", on)];
        let (code, _, stderr) = run_binary(&["run", "--config", config], &env);
        assert_eq!(code, 2, "{on}: {stderr}");
        assert!(stderr.contains("missing required field `service`"), "{on}: {stderr}");
    }
    // The demo's flag too (a refused value would be a usage error, not the config's).
    let (code, _, stderr) = run_binary(&["demo", "--config", config], &[("SNI_ROUTER_CHECK_ONLY", "1")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("missing required field `service`"), "{stderr}");

    let (code, _, stderr) = run_binary(&["run", "--config", config], &[("SNI_ROUTER_NO_SPLICE", "maybe")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("invalid value 'maybe'") && stderr.contains("--no-splice"),
        "{stderr}"
    );
}
