//! `sni-router check` as a user runs it: findings and the route table, as
//! text and as JSON, compared with golden files in `tests/golden/`, and the
//! exit codes (0 clean, 1 warnings with --strict, 2 errors).
//!
//! `UPDATE_GOLDEN=1 cargo test --test check` rewrites the golden files.

mod common;

use std::process::Output;

use common::{golden, run_in_root};

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

#[test]
fn example_file_is_clean() {
    let out = run_in_root(&["check", "--config", "config/values.example.yaml", "--strict"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    golden("check-example.txt", &stdout(&out));
    let out = run_in_root(
        &["check", "--config", "config/values.example.yaml", "--format", "json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    golden("check-example.json", &stdout(&out));
}

#[test]
fn broken_file_lists_every_finding_and_exits_2() {
    let out = run_in_root(&["check", "--config", "tests/golden/broken.values.yaml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    golden("check-broken.txt", &text);
    for rule in [
        "chart-schema",
        "schema",
        "hostname",
        "listener-conflict",
        "duplicate-listener",
        "listener-name",
        "wildcard-overlap",
        "cross-port-attachment",
        "unreachable",
        "keepalive-per-port",
        "selector",
        "duplicate-object",
    ] {
        assert!(text.contains(&format!("[{rule}]")), "no {rule} finding:\n{text}");
    }
    // Every finding starts with file:line:column.
    for line in text.lines().filter(|l| l.contains("error[") || l.contains("warning[")) {
        assert!(line.starts_with("tests/golden/broken.values.yaml:"), "{line}");
    }

    let out = run_in_root(
        &[
            "check",
            "--config",
            "tests/golden/broken.values.yaml",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let json = stdout(&out);
    golden("check-broken.json", &json);
    let doc: serde_json::Value = serde_json::from_str(&json).expect("check --format json prints JSON");
    assert_eq!(doc["summary"]["errors"], 10);
    assert_eq!(doc["summary"]["warnings"], 5);
    let findings = doc["findings"].as_array().unwrap();
    for f in findings {
        for key in [
            "severity", "file", "line", "column", "field", "route", "rule", "message",
        ] {
            assert!(f.get(key).is_some(), "finding without {key}: {f}");
        }
    }
    let conflict = findings.iter().find(|f| f["rule"] == "listener-conflict").unwrap();
    assert_eq!(conflict["line"], 16);
    assert_eq!(conflict["route"], "envoy-gateway/db-tls");
    assert_eq!(doc["routes"].as_array().unwrap().len(), 6);
    assert_eq!(doc["routes"][0]["backend"]["port"], 5432);
    assert_eq!(
        doc["tlsroute"]["chart_api_version"],
        "gateway.networking.k8s.io/v1alpha2"
    );
}

#[test]
fn warnings_fail_only_under_strict() {
    let out = run_in_root(&["check", "--config", "tests/golden/wide.values.yaml"], &[]);
    assert_eq!(out.status.code(), Some(0));
    golden("check-wide.txt", &stdout(&out));
    let out = run_in_root(&["check", "--config", "tests/golden/wide.values.yaml", "--strict"], &[]);
    assert_eq!(out.status.code(), Some(1));
    // The flags read their environment variables too.
    let out = run_in_root(
        &["check"],
        &[
            ("SNI_ROUTER_CONFIG", "tests/golden/wide.values.yaml"),
            ("SNI_ROUTER_STRICT", "true"),
            ("SNI_ROUTER_FORMAT", "json"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with('{'));
}

#[test]
fn unreadable_and_unparsable_files_are_errors() {
    let out = run_in_root(&["check", "--config", "tests/golden/no-such-file.yaml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("error[io]"), "{}", stdout(&out));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.yaml");
    std::fs::write(&path, "routes:\n  tls: [\n").unwrap();
    let out = run_in_root(&["check", "--config", path.to_str().unwrap(), "--format", "json"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["findings"][0]["rule"], "yaml");
    assert!(doc["findings"][0]["line"].as_u64().unwrap() > 0);
}
