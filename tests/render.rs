//! `sni-router render`: the chart's Gateway API objects and the Envoy
//! bootstrap, compared with golden files in `tests/golden/`; every Envoy
//! render is also loaded into Envoy's typed API (`envoy-data-plane`'s
//! `Bootstrap`, unknown fields refused) by `tests/py/validate_envoy.py`.
//!
//! `UPDATE_GOLDEN=1 cargo test --test render` rewrites the golden files.

mod common;

use common::services::python;
use common::{golden, run_in_root};

/// Run `render` and return stdout; it must succeed.
#[track_caller]
fn render(args: &[&str]) -> (String, String) {
    let mut all = vec!["render"];
    all.extend_from_slice(args);
    let out = run_in_root(&all, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "render {args:?} failed: {stderr}");
    (String::from_utf8(out.stdout).expect("UTF-8"), stderr)
}

/// Load Envoy bootstraps into envoy-data-plane's `Bootstrap`, all in one
/// validator run: one verdict line per document, `ok: ...` or `error: ...`.
fn validate_envoy(docs: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<String> = docs
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            let path = dir.path().join(format!("envoy-{i}.yaml"));
            std::fs::write(&path, doc).unwrap();
            path.display().to_string()
        })
        .collect();
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let out = python("validate_envoy.py", &args);
    let verdicts: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    assert_eq!(
        verdicts.len(),
        docs.len(),
        "validator output: {}{}",
        out.stdout,
        out.stderr
    );
    let all_ok = verdicts.iter().all(|v| v.starts_with("ok: "));
    assert_eq!(out.success(), all_ok, "exit status disagrees with {verdicts:?}");
    verdicts
}

// === gateway-api ===

#[test]
fn gateway_api_of_the_example_as_the_chart_renders_it() {
    let (out, _) = render(&["--config", "config/values.example.yaml", "--to", "gateway-api"]);
    golden("gateway-api-example.yaml", &out);
    assert!(out.contains("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\n"));
    let (v1, _) = render(&[
        "--config",
        "config/values.example.yaml",
        "--to",
        "gateway-api",
        "--tlsroute-version",
        "v1",
    ]);
    golden("gateway-api-example-v1.yaml", &v1);
    assert!(!v1.contains("v1alpha2\nkind: TLSRoute"));
}

#[test]
fn gateway_api_with_every_template_branch() {
    let (out, stderr) = render(&[
        "--config",
        "tests/golden/wide.values.yaml",
        "--to",
        "gateway-api",
        "--release",
        "lab",
    ]);
    golden("gateway-api-wide.yaml", &out);
    // Template-only keys still warn on stderr.
    assert!(stderr.contains("gateways.external.issuer"), "{stderr}");
    for expected in [
        "cert-manager.io/cluster-issuer: lab-issuer\n",
        "app.kubernetes.io/instance: lab\n",
        "protocol: HTTPS\n",
        "          - name: nautobot-tls\n",
        "      name: gw-ext-proxy\n",
        "          from: Selector\n          selector:\n            kubernetes.io/metadata.name: openstack\n",
        "  name: ironic-client-traffic\n",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    // `clientTrafficPolicy: {tcpKeepalive: {}}` renders a policy without tcpKeepalive.
    let ironic = out
        .split("---\n")
        .find(|d| d.contains("name: ironic-client-traffic"))
        .unwrap();
    assert!(!ironic.contains("tcpKeepalive"), "{ironic}");
}

#[test]
fn gateway_api_refuses_what_helm_cannot_render() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.yaml");
    std::fs::write(
        &path,
        "routes:\n  tls:\n    - {fqdn: a.example.com, service: {name: a, port: 1}}\n",
    )
    .unwrap();
    let out = run_in_root(
        &["render", "--config", path.to_str().unwrap(), "--to", "gateway-api"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nil pointer evaluating interface {}.name"));
    // A file `run` refuses is refused here too.
    let out = run_in_root(
        &["render", "--config", "tests/golden/broken.values.yaml", "--to", "envoy"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.values.yaml:46:20"));
}

// === envoy ===

#[test]
fn envoy_bootstrap_of_the_example_loads_into_envoys_api() {
    let (out, stderr) = render(&["--config", "config/values.example.yaml", "--to", "envoy"]);
    golden("envoy-example.yaml", &out);
    // What Envoy cannot do is said in the output and on stderr.
    for text in [&out, &stderr] {
        assert!(text.contains("SSLRequest"), "{text}");
        assert!(text.contains("unrecognized_name"), "{text}");
    }
    let verdict = &validate_envoy(&[&out])[0];
    assert!(
        verdict.starts_with("ok: ") && verdict.ends_with(": 2 listeners, 2 clusters"),
        "{verdict}\n{out}"
    );
}

#[test]
fn envoy_bootstrap_with_run_flags_loads_into_envoys_api() {
    let (out, _) = render(&[
        "--config",
        "tests/golden/wide.values.yaml",
        "--to",
        "envoy",
        "--listen",
        "5432=127.0.0.1:15432",
        "--backend",
        "ironic.envoy-gateway=127.0.0.1:16385",
        "--backend",
        "ironic.envoy-gateway=[::1]:16385",
        "--cluster-domain",
        "cluster.example",
        "--hello-timeout",
        "2500ms",
        "--idle-timeout",
        "90m",
        "--admin",
        "off",
    ]);
    golden("envoy-wide.yaml", &out);
    assert!(out.contains("listener_filters_timeout: 2.500s\n"));
    assert!(out.contains("idle_timeout: 5400s\n"));
    assert!(out.contains("address: pg-router.databases.svc.cluster.example\n"));
    let verdict = &validate_envoy(&[&out])[0];
    assert!(
        verdict.starts_with("ok: ") && verdict.ends_with(": 2 listeners, 3 clusters"),
        "{verdict}\n{out}"
    );
}

/// The validator is only worth something if it refuses what Envoy refuses.
#[test]
fn the_validator_refuses_unknown_fields_bad_enums_and_unknown_types() {
    let (good, _) = render(&["--config", "config/values.example.yaml", "--to", "envoy"]);
    let cases = [
        // An unknown field inside a typed_config (google.protobuf.Any).
        (
            good.replacen(
                "idle_timeout: 3600s\n",
                "idle_timeout: 3600s\n                idle_timout: 1s\n",
                1,
            ),
            "idle_timout",
        ),
        // An unknown field at the top.
        (
            good.replacen("static_resources:\n", "static_resource:\n  {}\nstatic_resources:\n", 1),
            "static_resource",
        ),
        // An enum value Envoy does not have.
        (good.replacen("type: STRICT_DNS", "type: STRICT_DNZ", 1), "STRICT_DNZ"),
        // A typed_config whose @type does not exist.
        (good.replacen("v3.TcpProxy\n", "v3.TcpProxi\n", 1), "TcpProxi"),
        // A malformed duration.
        (
            good.replacen("connect_timeout: 10s", "connect_timeout: 10 seconds", 1),
            "duration",
        ),
    ];
    for (bad, needle) in &cases {
        assert_ne!(bad, &good, "the mutation for {needle} did not apply");
    }
    let mut docs: Vec<&str> = vec![&good];
    docs.extend(cases.iter().map(|(bad, _)| bad.as_str()));
    let verdicts = validate_envoy(&docs);
    assert!(
        verdicts[0].starts_with("ok: "),
        "the unmutated bootstrap: {}",
        verdicts[0]
    );
    for ((_, needle), verdict) in cases.iter().zip(&verdicts[1..]) {
        assert!(verdict.starts_with("error: "), "{needle} was accepted: {verdict}");
        assert!(
            verdict.to_lowercase().contains(&needle.to_lowercase()),
            "{needle}: {verdict}"
        );
    }
}
