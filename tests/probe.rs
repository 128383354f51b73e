//! `sni-router probe` against a running `sni-router run`, with TLS backends
//! built here and with the real PostgreSQL and Redis servers.

mod common;

use common::services::{Certs, PgKind, PgOptions, Postgres, Redis, RedisOptions};
use common::*;
use rcgen::ExtendedKeyUsagePurpose;
use sni_router::pki::{self, Ca};

/// Run `probe` on `values` against `router`, with `extra` flags: (exit code, stdout).
/// Runs off the test's runtime, which serves the TLS backends meanwhile.
async fn probe(router: &RouterProcess, values: &str, extra: &[&str]) -> (i32, String) {
    let path = write(router.dir.path(), "probe-values.yaml", values);
    let mut args: Vec<String> = vec!["probe".into(), "--config".into(), path.display().to_string()];
    args.extend(["--gateway".into(), "127.0.0.1".into()]);
    for (port, addr) in &router.addrs {
        args.push("--listen".into());
        args.push(format!("{port}={addr}"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let (code, stdout, stderr) = common::services::blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_binary(&args, &[])
    })
    .await;
    (code, format!("{stdout}{stderr}"))
}

fn line<'a>(out: &'a str, route: &str, kind: &str) -> &'a str {
    out.lines()
        .find(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 4 && f[1] == route && f[4] == kind
        })
        .unwrap_or_else(|| panic!("no {route} {kind} line in\n{out}"))
}

struct Lab {
    ca: Ca,
    dir: tempfile::TempDir,
    router: RouterProcess,
    values: String,
    _backends: Vec<TlsBackend>,
}

/// `web` (plain TLS), `mtls` (requires a client certificate), `soon` (certificate expiring in 5 days).
async fn lab() -> Lab {
    let ca = Ca::new().unwrap();
    let web = TlsBackend::start(&ca, "web", &["web.example.com"], None).await;
    let mtls = TlsBackend::start(&ca, "mtls", &["mtls.example.com"], Some(&ca)).await;
    let soon = {
        let leaf = ca
            .leaf(
                &["soon.example.com"],
                "soon.example.com",
                ExtendedKeyUsagePurpose::ServerAuth,
                -1,
                5,
            )
            .unwrap();
        start_with_leaf(leaf).await
    };
    let values = values(
        &[
            route("web.example.com", 443, "web"),
            route("mtls.example.com", 443, "mtls"),
            route("soon.example.com", 443, "soon"),
        ]
        .concat(),
    );
    let mut flags: Vec<String> = backend_flag("web", &web.endpoint).into();
    flags.extend(backend_flag("mtls", &mtls.endpoint));
    flags.extend(backend_flag("soon", &soon.1.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let router = RouterProcess::start(&values, &[443], &flags);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.crt", ca.cert_pem());
    let client = ca.client("app").unwrap();
    client.write(dir.path(), "app").unwrap();
    Lab {
        ca,
        dir,
        router,
        values,
        _backends: vec![web, mtls, soon.0],
    }
}

async fn start_with_leaf(leaf: pki::Leaf) -> (TlsBackend, std::net::SocketAddr) {
    let config = pki::server_config(&leaf, None, &[]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let addr = serve_each(move |s| {
        let acceptor = acceptor.clone();
        async move {
            use tokio::io::AsyncWriteExt;
            if let Ok(mut tls) = acceptor.accept(s).await {
                let _ = tls.write_all(b"hi\n").await;
                let _ = tls.shutdown().await;
            }
        }
    })
    .await;
    (
        TlsBackend {
            addr,
            leaf,
            endpoint: addr.to_string(),
        },
        addr,
    )
}

impl Lab {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    fn tls_flags(&self) -> Vec<String> {
        [
            "--ca",
            &self.path("ca.crt"),
            "--cert",
            &self.path("app.crt"),
            "--key",
            &self.path("app.key"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

#[tokio::test]
async fn every_route_passes_with_ca_and_client_certificate() {
    let lab = lab().await;
    let flags = lab.tls_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (code, out) = probe(&lab.router, &lab.values, &flags).await;
    assert_eq!(code, 0, "{out}");
    for route in ["web-443", "mtls-443", "soon-443"] {
        let l = line(&out, route, "tls");
        assert!(l.starts_with("PASS"), "{l}");
    }
    assert!(line(&out, "web-443", "tls").contains("server CN=web.example.com (issuer CN=understack-mtls-ca"));
    assert!(
        out.contains("refused as it should be: TLS alert unrecognized_name"),
        "{out}"
    );
    assert!(
        out.contains("warning: server certificate expires in 4 days") || out.contains("expires in 5 days"),
        "{out}"
    );
    assert!(out.contains("0 failed"), "{out}");
    let _ = &lab.ca;
}

#[tokio::test]
async fn failures_are_named() {
    let lab = lab().await;
    // A route the gateway does not know.
    let extra_route = values(
        &[
            route("web.example.com", 443, "web"),
            route("ghost.example.com", 443, "ghost"),
        ]
        .concat(),
    );
    let (code, out) = probe(&lab.router, &extra_route, &[]).await;
    assert_eq!(code, 1, "{out}");
    let ghost = line(&out, "ghost-443", "tls");
    assert!(
        ghost.starts_with("FAIL") && ghost.contains("TLS alert unrecognized_name"),
        "{ghost}"
    );

    // A CA that did not sign the servers' certificates.
    let other = Ca::with_name("other-ca").unwrap();
    let other_ca = write(lab.dir.path(), "other-ca.crt", other.cert_pem());
    let (code, out) = probe(&lab.router, &lab.values, &["--ca", other_ca.to_str().unwrap()]).await;
    assert_eq!(code, 1);
    let web = line(&out, "web-443", "tls");
    assert!(
        web.contains("certificate verify failed: the server certificate is not signed by the given CA"),
        "{web}"
    );

    // No client certificate where the backend requires one.
    let (code, out) = probe(&lab.router, &lab.values, &["--ca", &lab.path("ca.crt")]).await;
    assert_eq!(code, 1);
    let mtls = line(&out, "mtls-443", "tls");
    assert!(
        mtls.starts_with("FAIL") && mtls.contains("requires a client certificate"),
        "{mtls}"
    );
    assert!(line(&out, "web-443", "tls").starts_with("PASS"));
}

#[tokio::test]
async fn json_and_junit_outputs() {
    let lab = lab().await;
    let flags = lab.tls_flags();
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend(["--format", "json"]);
    let (code, out) = probe(&lab.router, &lab.values, &args).await;
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["failed"], 0);
    let web = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["route"] == "web-443")
        .unwrap();
    assert_eq!(web["certificate"]["subject"], "CN=web.example.com");
    assert!(web["handshake_ms"].as_f64().unwrap() > 0.0);

    let (_, xml) = probe(&lab.router, &lab.values, &["--format", "junit"]).await;
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(xml.contains("<testsuite name=\"sni-router probe\""), "{xml}");
    assert!(xml.contains("<failure type=\"client_cert_rejected\""), "{xml}");
}

#[tokio::test]
async fn real_postgres_both_negotiations_and_redis() {
    const DB: &str = "db.lab.example.com";
    const CACHE: &str = "cache.lab.example.com";
    let (pg, redis, certs) = common::services::blocking(move || {
        let certs = Certs::new(&[DB, CACHE]);
        let pg = Postgres::start(PgKind::V18, &PgOptions::new(&certs));
        let redis = Redis::start(&RedisOptions::new(&certs));
        (pg, redis, certs)
    })
    .await;
    let values = values(&[route(DB, 5432, "pg"), route(CACHE, 6379, "redis")].concat());
    let pgf = backend_flag("pg", &pg.addr().to_string());
    let rf = backend_flag("redis", &redis.addr().to_string());
    let router = RouterProcess::start(&values, &[5432, 6379], &[&pgf[0], &pgf[1], &rf[0], &rf[1]]);
    let c = &certs;
    let (code, out) = probe(
        &router,
        &values,
        &[
            "--ca",
            c.ca_file.to_str().unwrap(),
            "--cert",
            c.client_cert.to_str().unwrap(),
            "--key",
            c.client_key.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(line(&out, "db-5432", "pg-direct").contains("ALPN postgresql"), "{out}");
    assert!(
        line(&out, "db-5432", "pg-direct").contains("authentication OK as app"),
        "{out}"
    );
    assert!(
        line(&out, "db-5432", "pg-sslrequest").contains("authentication OK as app"),
        "{out}"
    );
    assert!(line(&out, "cache-6379", "tls").contains("Redis: PONG"), "{out}");

    // Without a client certificate the servers, through the router, refuse.
    let (code, out) = probe(
        &router,
        &values,
        &["--ca", c.ca_file.to_str().unwrap(), "--pg-user", "app"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(line(&out, "db-5432", "pg-sslrequest").starts_with("FAIL"), "{out}");
}
