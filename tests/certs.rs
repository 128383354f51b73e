//! `sni-router certs`: one test per certificate mistake, with certificates
//! generated here.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use rcgen::ExtendedKeyUsagePurpose;
use sni_router::pki::{Ca, Leaf};

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn put(&self, name: &str, text: &str) -> PathBuf {
        write(self.dir.path(), name, text)
    }
    fn leaf(&self, stem: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        (
            self.put(&format!("{stem}.crt"), &leaf.cert_pem),
            self.put(&format!("{stem}.key"), &leaf.key_pem),
        )
    }
}

fn certs(ca: &Path, cert: &Path, key: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["certs", "--ca", ca.to_str().unwrap(), "--cert", cert.to_str().unwrap()];
    args.extend(["--key", key.to_str().unwrap(), "--pg-user", "app"]);
    args.extend(extra);
    let (code, stdout, stderr) = run_binary(&args, &[]);
    (code, format!("{stdout}{stderr}"))
}

fn has(out: &str, level: &str, rule: &str) -> bool {
    out.lines()
        .any(|l| l.starts_with(level) && l.split_whitespace().nth(2) == Some(rule))
}

#[test]
fn a_good_set_passes() {
    let f = Files::new();
    let ca = Ca::new().unwrap();
    let ca_file = f.put("ca.crt", ca.cert_pem());
    let (crt, key) = f.leaf("tls", &ca.client("app").unwrap());
    let (code, out) = certs(&ca_file, &crt, &key, &[]);
    assert_eq!(code, 0, "{out}");
    for rule in ["ca", "signed-by-ca", "cn-is-user", "key-matches"] {
        assert!(has(&out, "ok", rule), "{rule} missing:\n{out}");
    }
    assert!(
        !out.lines().any(|l| l.starts_with("error")) && out.contains("0 error(s), 0 warning(s)"),
        "{out}"
    );
}

#[test]
fn ca_file_holding_the_client_certificate() {
    let f = Files::new();
    let ca = Ca::new().unwrap();
    let (crt, key) = f.leaf("tls", &ca.client("app").unwrap());
    let (code, out) = certs(&crt, &crt, &key, &[]);
    assert_ne!(code, 0);
    assert!(has(&out, "error", "ca-is-leaf"), "{out}");
    assert!(
        out.contains("certificate verify failed") && out.contains("CN=app"),
        "{out}"
    );
}

#[test]
fn client_certificate_from_another_ca() {
    let f = Files::new();
    let ca = Ca::new().unwrap();
    let other = Ca::with_name("some-other-ca").unwrap();
    let ca_file = f.put("ca.crt", ca.cert_pem());
    let (crt, key) = f.leaf("tls", &other.client("app").unwrap());
    let (code, out) = certs(&ca_file, &crt, &key, &[]);
    assert_ne!(code, 0);
    assert!(has(&out, "error", "not-signed-by-ca"), "{out}");
    assert!(out.contains("unknown ca") && out.contains("some-other-ca"), "{out}");

    // Same name, different key: the signature check tells them apart.
    let twin = Ca::new().unwrap();
    let (crt, key) = f.leaf("twin", &twin.client("app").unwrap());
    let (_, out) = certs(&ca_file, &crt, &key, &[]);
    assert!(
        has(&out, "error", "not-signed-by-ca") && out.contains("signature does not verify"),
        "{out}"
    );
}

#[test]
fn common_name_is_not_the_postgres_user() {
    let f = Files::new();
    let ca = Ca::new().unwrap();
    let ca_file = f.put("ca.crt", ca.cert_pem());
    let (crt, key) = f.leaf("tls", &ca.client("nautobot").unwrap());
    let (code, out) = certs(&ca_file, &crt, &key, &[]);
    assert_ne!(code, 0);
    assert!(
        has(&out, "error", "cn-not-user") && out.contains("\"nautobot\""),
        "{out}"
    );
}

#[test]
fn certificate_without_client_auth_usage() {
    let f = Files::new();
    let ca = Ca::new().unwrap();
    let ca_file = f.put("ca.crt", ca.cert_pem());
    let server_only = ca
        .leaf(&[], "app", ExtendedKeyUsagePurpose::ServerAuth, -1, 90)
        .unwrap();
    let (crt, key) = f.leaf("tls", &server_only);
    let (code, out) = certs(&ca_file, &crt, &key, &[]);
    assert_ne!(code, 0);
    assert!(has(&out, "error", "no-client-auth"), "{out}");
}

#[test]
fn key_of_another_certificate() {
    let f = Files::new();
    let ca = Ca::new().unwrap();
    let ca_file = f.put("ca.crt", ca.cert_pem());
    let (crt, _) = f.leaf("tls", &ca.client("app").unwrap());
    let (_, other_key) = f.leaf("other", &ca.client("app").unwrap());
    let (code, out) = certs(&ca_file, &crt, &other_key, &[]);
    assert_ne!(code, 0);
    assert!(has(&out, "error", "key-mismatch"), "{out}");
}

#[test]
fn expired_and_expiring_certificates() {
    let f = Files::new();
    let ca = Ca::new().unwrap();
    let ca_file = f.put("ca.crt", ca.cert_pem());
    let expired = ca
        .leaf(&[], "app", ExtendedKeyUsagePurpose::ClientAuth, -90, -2)
        .unwrap();
    let (crt, key) = f.leaf("old", &expired);
    let (code, out) = certs(&ca_file, &crt, &key, &[]);
    assert_ne!(code, 0);
    assert!(has(&out, "error", "expired"), "{out}");

    let soon = ca
        .leaf(&[], "app", ExtendedKeyUsagePurpose::ClientAuth, -1, 10)
        .unwrap();
    let (crt, key) = f.leaf("soon", &soon);
    let (code, out) = certs(&ca_file, &crt, &key, &[]);
    assert_eq!(code, 0, "a warning alone does not fail: {out}");
    assert!(
        has(&out, "warning", "expiring") && out.contains("renewal window of 30 days"),
        "{out}"
    );
    let (code, out) = certs(&ca_file, &crt, &key, &["--renew-before", "168h"]);
    assert_eq!(code, 0);
    assert!(!has(&out, "warning", "expiring"), "7-day window: {out}");
}

#[test]
fn crlf_and_certificate_and_key_in_one_file() {
    let f = Files::new();
    let ca = Ca::new().unwrap();
    let ca_file = f.put("ca.crt", &ca.cert_pem().replace('\n', "\r\n"));
    let leaf = ca.client("app").unwrap();
    let bundle = f.put(
        "bundle.pem",
        &format!("{}{}", leaf.cert_pem, leaf.key_pem).replace('\n', "\r\n"),
    );
    let (code, out) = certs(&ca_file, &bundle, &bundle, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(has(&out, "warning", "crlf"), "{out}");
    assert!(
        has(&out, "warning", "several-blocks") && out.contains("1 certificate(s) and 1 private key(s)"),
        "{out}"
    );
    assert!(has(&out, "ok", "key-matches"), "{out}");
}
