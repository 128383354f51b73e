//! PostgreSQL through the router, with real servers and real clients: `psql`
//! (libpq 15, classic `SSLRequest` negotiation) and psycopg (libpq 18, classic
//! and `sslnegotiation=direct`) against PostgreSQL 15 and 18 with mutual TLS,
//! plus raw-socket clients and fake backends for the protocol edges (plaintext
//! refusal, CancelRequest policy, CVE-2021-23214/23222 injection, a backend
//! that declines TLS). Every test starts its own servers and router.

mod common;

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::services::{self, blocking, Captured, Certs, Client, PgKind, PgOptions, Postgres, SslNegotiation, PSQL};
use common::{connections, hex, read_all, router_on, serve_each, wait_connections, RawBackend, RouterProcess};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The gateway port PostgreSQL routes use (the router listens on 127.0.0.1:0 for it).
const PG_PORT: u16 = 5432;
const DB: &str = "db.lab.example.com";
const DB15: &str = "pg15.lab.example.com";
const DB18: &str = "pg18.lab.example.com";
const UNKNOWN: &str = "nope.lab.example.com";

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

// === classic negotiation with psql (libpq 15) ===

#[tokio::test]
async fn psql_classic_negotiation_reaches_pg15_with_mutual_tls() {
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V15, &PgOptions::new(&certs));
    let router = router(&[(DB, pg.addr())]);
    let client = through(&router, &certs, DB);
    assert!(client.pg_conninfo().contains("sslmode=verify-ca"));
    assert!(client.pg_conninfo().contains("hostaddr=127.0.0.1"));

    let c = client.clone();
    let out = blocking(move || c.psql("select 1")).await;
    assert_eq!(out.expect_ok("psql select 1"), "1");
    let line = connection(&router, &[("sni", DB)]).await;
    assert_forwarded(&line);
    assert_eq!(line["negotiation"], "pg-sslrequest", "{line}");
    assert_eq!(line["route"], "db-5432", "{line}");
    assert_eq!(line["backend"], pg.addr().to_string(), "{line}");

    // The certificate's CN is the user, and the backend itself holds the TLS session.
    let sql = "select current_user, ssl, version from pg_stat_ssl where pid = pg_backend_pid()";
    let c = client.clone();
    let out = blocking(move || c.psql(sql)).await.expect_ok("psql whoami");
    let row: Vec<&str> = out.split('|').collect();
    assert_eq!(row[..2], ["app", "t"], "{out}");
    assert!(row[2].starts_with("TLSv1."), "{out}");
    assert!(
        pg.log().contains("SSL enabled"),
        "the backend did not log a TLS session:\n{}",
        pg.log()
    );
}

#[tokio::test]
async fn copy_of_50_mb_in_and_out_through_one_psql_connection() {
    const MIN_BYTES: u64 = 50 * 1024 * 1024;
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V15, &PgOptions::new(&certs));
    let router = router(&[(DB, pg.addr())]);
    let client = through(&router, &certs, DB);

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.tsv");
    let output = dir.path().join("out.tsv");
    let rows = write_rows(&input, 55 * 1024 * 1024);
    let size = fs::metadata(&input).unwrap().len();
    assert!(size >= MIN_BYTES, "only {size} bytes generated");

    let script = dir.path().join("copy.sql");
    fs::write(
        &script,
        format!(
            "create temporary table t (id bigint not null, payload text not null);\n\
             \\copy t from '{}'\n\
             select count(*) from t;\n\
             \\copy (select id, payload from t order by id) to '{}'\n",
            input.display(),
            output.display()
        ),
    )
    .unwrap();
    let conninfo = client.pg_conninfo();
    let script_arg = script.clone();
    let started = Instant::now();
    let out = blocking(move || {
        let mut cmd = Command::new(services::require(PSQL));
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(&conninfo)
            .arg("-f")
            .arg(&script_arg);
        run_with_timeout(cmd, Duration::from_secs(180))
    })
    .await;
    let elapsed = started.elapsed();
    assert_eq!(out.expect_ok("psql COPY in and out"), rows.to_string());

    // `sha256sum`: the debug-build hasher would take seconds over 110 MB.
    let (sent, received) = (sha256sum(&input), sha256sum(&output));
    assert_eq!(
        received,
        sent,
        "COPY out differs from COPY in ({} vs {size} bytes)",
        fs::metadata(&output).map(|m| m.len()).unwrap_or(0)
    );

    // One connection carried all of it, both ways.
    let line = connection(&router, &[("sni", DB)]).await;
    assert_forwarded(&line);
    let up = line["bytes.upstream"].as_u64().unwrap_or(0);
    let down = line["bytes.downstream"].as_u64().unwrap_or(0);
    assert!(up >= size && down >= size, "{line}");
    assert_eq!(connections(&router).len(), 1, "{:#?}", router.logs());
    eprintln!("COPY of {size} bytes in and out through the router took {elapsed:?}");
}

// === libpq 18 (psycopg): direct TLS and classic negotiation ===

#[tokio::test]
async fn psycopg_direct_and_classic_negotiation_reach_pg18() {
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V18, &PgOptions::new(&certs));
    let router = router(&[(DB, pg.addr())]);
    let client = through(&router, &certs, DB);
    let sql = "select 1, current_setting('server_version'), current_user, ssl \
               from pg_stat_ssl where pid = pg_backend_pid()";

    for (negotiation, logged) in [
        (SslNegotiation::Direct, "tls"),
        (SslNegotiation::Postgres, "pg-sslrequest"),
    ] {
        let before = connections(&router).len();
        let c = client.clone();
        let out = blocking(move || c.psycopg(negotiation, sql))
            .await
            .expect_ok(negotiation.as_str());
        let row: Vec<&str> = out.split('|').collect();
        assert_eq!(row[0], "1", "{negotiation:?}: {out}");
        assert!(row[1].starts_with("18"), "{negotiation:?}: {out}");
        assert_eq!(row[2..], ["app", "True"], "{negotiation:?}: {out}");

        let lines = wait_connections(&router, before + 1).await;
        assert_eq!(lines.len(), before + 1, "{lines:#?}");
        let line = &lines[before];
        assert_forwarded(line);
        assert_eq!(line["negotiation"], logged, "{line}");
        assert_eq!(line["sni"], DB, "{line}");
        assert_eq!(line["route"], "db-5432", "{line}");
        let alpn = line["alpn"].as_str().unwrap_or_default();
        if negotiation == SslNegotiation::Direct {
            assert!(alpn.split(',').any(|p| p == "postgresql"), "{line}");
        }
    }
}

#[tokio::test]
async fn two_postgres_routes_on_one_port_each_reach_their_own_server() {
    let certs = Certs::new(&[DB15, DB18]);
    let pg15 = Postgres::start(PgKind::V15, &PgOptions::new(&certs));
    let pg18 = Postgres::start(PgKind::V18, &PgOptions::new(&certs));
    let router = router(&[(DB15, pg15.addr()), (DB18, pg18.addr())]);
    let to15 = through(&router, &certs, DB15);
    let to18 = through(&router, &certs, DB18);
    let sql = "show server_version";

    // libpq 15: classic negotiation only.
    for (client, major) in [(&to15, "15."), (&to18, "18.")] {
        let c = client.clone();
        let version = blocking(move || c.psql(sql)).await.expect_ok("psql");
        assert!(version.starts_with(major), "{}: {version}", client.fqdn);
    }
    // libpq 18: classic to both, direct to the server that speaks it.
    for (client, major, negotiation) in [
        (&to15, "15.", SslNegotiation::Postgres),
        (&to18, "18.", SslNegotiation::Postgres),
        (&to18, "18.", SslNegotiation::Direct),
    ] {
        let c = client.clone();
        let version = blocking(move || c.psycopg(negotiation, sql))
            .await
            .expect_ok(negotiation.as_str());
        assert!(version.starts_with(major), "{} {negotiation:?}: {version}", client.fqdn);
    }
    // PostgreSQL 15 predates direct TLS: the router forwards the hello and the
    // server, not the router, refuses it.
    let c = to15.clone();
    blocking(move || c.psycopg(SslNegotiation::Direct, sql))
        .await
        .expect_err("direct TLS to PostgreSQL 15");

    let lines = wait_connections(&router, 6).await;
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let count = |route: &str, negotiation: &str| {
        lines
            .iter()
            .filter(|l| l["route"] == route && l["negotiation"] == negotiation)
            .count()
    };
    assert_eq!(count("pg15-5432", "pg-sslrequest"), 2, "{lines:#?}");
    assert_eq!(count("pg18-5432", "pg-sslrequest"), 2, "{lines:#?}");
    assert_eq!(count("pg18-5432", "tls"), 1, "{lines:#?}");
    assert_eq!(count("pg15-5432", "tls"), 1, "{lines:#?}");
    for line in &lines {
        let expected = if line["route"] == "pg15-5432" {
            pg15.addr()
        } else {
            pg18.addr()
        };
        assert_eq!(line["backend"], expected.to_string(), "{line}");
    }
}

// === refusals, with the real clients ===

#[tokio::test]
async fn plaintext_psql_prints_the_routers_message() {
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V15, &PgOptions::new(&certs));
    let router = router(&[(DB, pg.addr())]);
    let conninfo = through(&router, &certs, DB)
        .pg_conninfo()
        .replace("sslmode=verify-ca", "sslmode=disable");
    assert!(conninfo.contains("sslmode=disable"), "{conninfo}");

    let err = blocking(move || services::psql(&conninfo, "select 1"))
        .await
        .expect_err("plaintext psql");
    assert!(
        err.contains("this gateway accepts only TLS connections") && err.contains("sslmode=require"),
        "psql did not print the router's message: {err}"
    );
    let line = connection(&router, &[("end", "pg_plaintext")]).await;
    assert_eq!(line["backend"], "-", "{line}");
    assert!(
        !pg.log().contains("connection received: host=127.0.0.1"),
        "the backend saw a connection:\n{}",
        pg.log()
    );
}

#[tokio::test]
async fn client_without_a_certificate_is_refused_by_postgres_itself() {
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V18, &PgOptions::new(&certs));
    let router = router(&[(DB, pg.addr())]);
    let bare = through(&router, &certs, DB).without_cert();

    let c = bare.clone();
    let err = blocking(move || c.psql("select 1"))
        .await
        .expect_err("psql without a client certificate");
    assert!(
        err.contains("connection requires a valid client certificate"),
        "psql: {err}"
    );
    for negotiation in [SslNegotiation::Direct, SslNegotiation::Postgres] {
        let c = bare.clone();
        let err = blocking(move || c.psycopg(negotiation, "select 1"))
            .await
            .expect_err(negotiation.as_str());
        assert!(
            err.contains("connection requires a valid client certificate"),
            "{negotiation:?}: {err}"
        );
    }
    // The refusal is PostgreSQL's own, after a TLS session with the backend.
    let log = pg.log();
    assert!(
        log.matches("connection requires a valid client certificate").count() >= 3,
        "server log:\n{log}"
    );
    let lines = wait_connections(&router, 3).await;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["route"], "db-5432", "{line}");
        assert_eq!(line["backend"], pg.addr().to_string(), "{line}");
        assert!(line["bytes.downstream"].as_u64().unwrap_or(0) > 0, "{line}");
    }
}

#[tokio::test]
async fn a_ca_file_holding_the_client_certificate_fails_verification() {
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V18, &PgOptions::new(&certs));
    let router = router(&[(DB, pg.addr())]);
    let wrong_ca = certs.dir().join("not-the-ca.crt");
    fs::write(&wrong_ca, &certs.client.cert_pem).unwrap();
    let mut client = through(&router, &certs, DB);
    client.ca_file = wrong_ca;

    let c = client.clone();
    let err = blocking(move || c.psql("select 1"))
        .await
        .expect_err("psql with the wrong CA");
    assert!(err.contains("certificate verify failed"), "psql: {err}");
    for negotiation in [SslNegotiation::Direct, SslNegotiation::Postgres] {
        let c = client.clone();
        let err = blocking(move || c.psycopg(negotiation, "select 1"))
            .await
            .expect_err(negotiation.as_str());
        assert!(err.contains("certificate verify failed"), "{negotiation:?}: {err}");
    }
    // The router routed all three: the server's certificate came from the backend.
    let lines = wait_connections(&router, 3).await;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines.iter().all(|l| l["route"] == "db-5432"), "{lines:#?}");
}

#[tokio::test]
async fn unknown_sni_gets_the_unrecognized_name_alert() {
    let certs = Certs::new(&[DB, UNKNOWN]);
    let pg = Postgres::start(PgKind::V18, &PgOptions::new(&certs));
    let router = router(&[(DB, pg.addr())]);
    let stranger = through(&router, &certs, UNKNOWN);

    let c = stranger.clone();
    let err = blocking(move || c.psql("select 1"))
        .await
        .expect_err("psql with an unknown SNI");
    assert!(err.contains("unrecognized name"), "psql: {err}");
    for negotiation in [SslNegotiation::Direct, SslNegotiation::Postgres] {
        let c = stranger.clone();
        let err = blocking(move || c.psycopg(negotiation, "select 1"))
            .await
            .expect_err(negotiation.as_str());
        assert!(err.contains("unrecognized name"), "{negotiation:?}: {err}");
    }
    let lines = wait_connections(&router, 3).await;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["end"], "unknown_sni", "{line}");
        assert_eq!(line["sni"], UNKNOWN, "{line}");
        assert_eq!(line["backend"], "-", "{line}");
    }
    assert_eq!(
        lines.iter().filter(|l| l["negotiation"] == "pg-sslrequest").count(),
        2,
        "{lines:#?}"
    );
}

// === the certificate is the backend's ===

#[tokio::test]
async fn the_leaf_certificate_seen_through_the_router_is_the_backends() {
    // Two CAs, two servers: each route must show its own backend's certificate.
    let certs15 = Certs::new(&[DB15]);
    let certs18 = Certs::new(&[DB18]);
    let pg15 = Postgres::start(PgKind::V15, &PgOptions::new(&certs15));
    let pg18 = Postgres::start(PgKind::V18, &PgOptions::new(&certs18));
    let router = router(&[(DB15, pg15.addr()), (DB18, pg18.addr())]);
    let port = router.addr(PG_PORT).port();
    let fp15 = hex(&Sha256::digest(&certs15.server.cert_der));
    let fp18 = hex(&Sha256::digest(&certs18.server.cert_der));
    assert_ne!(fp15, fp18);

    // (certs, fqdn, port, classic negotiation, fingerprint, ALPN the server picks)
    let cases: [(&Certs, &str, u16, bool, &str, &str); 5] = [
        // Direct to the servers: the reference. PostgreSQL 15 knows no ALPN.
        (&certs15, DB15, pg15.port(), true, &fp15, "-"),
        (&certs18, DB18, pg18.port(), false, &fp18, "postgresql"),
        // Through the router: classic negotiation and direct TLS.
        (&certs15, DB15, port, true, &fp15, "-"),
        (&certs18, DB18, port, true, &fp18, "postgresql"),
        (&certs18, DB18, port, false, &fp18, "postgresql"),
    ];
    for (certs, fqdn, port, classic, expected, alpn) in cases {
        let mut args = certs.peer_cert_args(fqdn, port);
        if classic {
            args.push("--pg-sslrequest".into());
        }
        // PostgreSQL 18 insists on ALPN `postgresql` for direct TLS.
        args.extend(["--alpn".into(), "postgresql".into()]);
        let out = services::tls_peer_cert(args).await.expect_ok("tls_peer_cert.py");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], expected, "{fqdn} on {port}, classic={classic}");
        assert_eq!(
            lines[1], alpn,
            "{fqdn} on {port}, classic={classic}: the backend's ALPN answer"
        );
    }
    // The script half-closes and reads to the end: a clean close both ways.
    let lines = wait_connections(&router, 3).await;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines.iter().all(|l| l["end"] == "closed"), "{lines:#?}");
}

#[tokio::test]
async fn a_gssenc_request_is_declined_and_classic_negotiation_goes_on() {
    // libpq holding Kerberos credentials asks for GSS encryption first; the
    // router answers N itself and then serves the SSLRequest as usual.
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V18, &PgOptions::new(&certs));
    let router = router(&[(DB, pg.addr())]);
    let mut args = certs.peer_cert_args(DB, router.addr(PG_PORT).port());
    args.extend(["--pg-gssenc-first", "--pg-sslrequest", "--alpn", "postgresql"].map(String::from));
    let out = services::tls_peer_cert(args)
        .await
        .expect_ok("GSSENCRequest, SSLRequest, TLS");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [hex(&Sha256::digest(&certs.server.cert_der)).as_str(), "postgresql"]
    );
    let line = connection(&router, &[("sni", DB)]).await;
    assert_eq!(line["negotiation"], "pg-sslrequest", "{line}");
    assert_eq!(line["backend"], pg.addr().to_string(), "{line}");
}

// === CancelRequest ===

#[tokio::test]
async fn plaintext_cancel_request_is_forwarded_to_the_only_route() {
    let mut raw = RawBackend::start(b"").await;
    let router = router(&[(DB, raw.addr)]);
    let addr = router.addr(PG_PORT);

    // Protocol 3.0 (4-byte key) and 3.2 (longer key).
    let v30 = cancel_request(4242, &[0xde, 0xad, 0xbe, 0xef]);
    let v32 = cancel_request(4243, &[7u8; 32]);
    for cancel in [v30, v32] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&cancel).await.unwrap();
        let reply = read_all(&mut stream).await;
        assert!(reply.is_empty(), "the router answered a cancel: {reply:?}");
        let got = tokio::time::timeout(Duration::from_secs(10), raw.received.recv())
            .await
            .expect("the backend got no cancel within 10 s")
            .unwrap();
        assert_eq!(got, cancel, "the backend got other bytes");
    }
    let lines = wait_connections(&router, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["end"], "pg_cancel_forwarded", "{line}");
        assert_eq!(line["route"], "db-5432", "{line}");
        assert_eq!(line["backend"], raw.addr.to_string(), "{line}");
    }
}

#[tokio::test]
async fn plaintext_cancel_request_is_dropped_when_two_routes_share_the_port() {
    let mut raw15 = RawBackend::start(b"").await;
    let mut raw18 = RawBackend::start(b"").await;
    let router = router(&[(DB15, raw15.addr), (DB18, raw18.addr)]);
    let cancel = cancel_request(4242, &[1, 2, 3, 4]);

    let mut stream = TcpStream::connect(router.addr(PG_PORT)).await.unwrap();
    stream.write_all(&cancel).await.unwrap();
    let reply = read_all(&mut stream).await;
    assert!(reply.is_empty(), "the router answered a cancel: {reply:?}");
    let line = connection(&router, &[("end", "pg_cancel_dropped")]).await;
    assert!(
        line["detail"].as_str().unwrap_or_default().contains("2 routes"),
        "{line}"
    );
    assert_eq!(line["backend"], "-", "{line}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(raw15.received.try_recv().is_err(), "a backend got the cancel");
    assert!(raw18.received.try_recv().is_err(), "a backend got the cancel");
}

#[tokio::test]
async fn libpq_plaintext_cancel_reaches_the_only_route() {
    // conn.cancel() is libpq's PQcancel: a plaintext CancelRequest to the
    // address the session used, carrying no SNI.
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V18, &PgOptions::new(&certs));
    let router = router(&[(DB, pg.addr())]);
    let conninfo = format!("{} sslnegotiation=postgres", through(&router, &certs, DB).pg_conninfo());
    let out = blocking(move || services::python("pg_cancel.py", &[&conninfo, "legacy"]))
        .await
        .expect_ok("legacy cancel");
    assert!(out.starts_with("canceled "), "{out}");
    let line = connection(&router, &[("end", "pg_cancel_forwarded")]).await;
    assert_eq!(line["backend"], pg.addr().to_string(), "{line}");
    assert_eq!(line["route"], "db-5432", "{line}");
}

#[tokio::test]
async fn libpq_tls_cancel_routes_by_sni_with_two_routes_on_the_port() {
    // conn.cancel_safe() is libpq 17+'s PQcancelCreate: a new connection
    // encrypted like the session, so it carries the SNI and routes normally.
    let certs = Certs::new(&[DB15, DB18]);
    let pg15 = Postgres::start(PgKind::V15, &PgOptions::new(&certs));
    let pg18 = Postgres::start(PgKind::V18, &PgOptions::new(&certs));
    let router = router(&[(DB15, pg15.addr()), (DB18, pg18.addr())]);

    let cases = [
        (DB18, SslNegotiation::Direct, "pg18-5432"),
        (DB18, SslNegotiation::Postgres, "pg18-5432"),
        (DB15, SslNegotiation::Postgres, "pg15-5432"),
    ];
    for (fqdn, negotiation, route) in cases {
        let before = connections(&router).iter().filter(|l| l["route"] == route).count();
        let conninfo = format!(
            "{} sslnegotiation={}",
            through(&router, &certs, fqdn).pg_conninfo(),
            negotiation.as_str()
        );
        let out = blocking(move || services::python("pg_cancel.py", &[&conninfo, "safe"]))
            .await
            .expect_ok(negotiation.as_str());
        assert!(out.starts_with("canceled "), "{fqdn} {negotiation:?}: {out}");
        // The session and its cancel: two routed connections.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let after = connections(&router).iter().filter(|l| l["route"] == route).count();
            if after == before + 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{fqdn} {negotiation:?}: {after} connections, expected {}\n{:#?}",
                before + 2,
                router.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for line in connections(&router) {
        assert_forwarded(&line);
    }
}

// === injection (CVE-2021-23214, CVE-2021-23222) and backends that decline TLS ===

#[tokio::test]
async fn bytes_sent_after_an_ssl_request_close_the_connection_unanswered() {
    let mut raw = RawBackend::start(b"").await;
    let router = router(&[(DB, raw.addr)]);
    // A would-be ClientHello record head pipelined behind the request.
    let injected = [0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00];
    for request in [SSL_REQUEST, GSSENC_REQUEST] {
        let mut stream = TcpStream::connect(router.addr(PG_PORT)).await.unwrap();
        let mut write = request.to_vec();
        write.extend_from_slice(&injected);
        stream.write_all(&write).await.unwrap();
        let reply = read_all(&mut stream).await;
        assert!(
            reply.is_empty(),
            "the router answered {reply:?} to a request with bytes behind it"
        );
    }
    let lines = wait_connections(&router, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["end"], "pg_injection", "{line}");
        assert!(
            line["detail"].as_str().unwrap_or_default().contains("CVE-2021-23214"),
            "{line}"
        );
    }
    assert!(raw.received.try_recv().is_err(), "the backend was contacted");
}

#[tokio::test]
async fn a_backend_sending_bytes_after_its_s_is_refused() {
    let certs = Certs::new(&[DB]);
    let fake = fake_pg_backend(b"S\x16\x03\x03\x00\x02\x02\x28").await;
    let router = router(&[(DB, fake)]);
    let client = through(&router, &certs, DB);

    let c = client.clone();
    let err = blocking(move || c.psql("select 1"))
        .await
        .expect_err("psql to a backend injecting after its S");
    assert!(err.contains("internal error"), "psql: {err}");
    let line = connection(&router, &[("end", "backend_no_tls")]).await;
    assert_eq!(line["level"], "WARN", "{line}");
    let detail = line["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("followed the backend's S") && detail.contains("CVE-2021-23222"),
        "{line}"
    );
}

#[tokio::test]
async fn a_backend_answering_n_is_refused_with_internal_error() {
    // A real PostgreSQL with ssl=off answers the router's SSLRequest with N.
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V15, &PgOptions::new(&certs).set("ssl", "off"));
    let router = router(&[(DB, pg.addr())]);
    let client = through(&router, &certs, DB);

    let c = client.clone();
    let err = blocking(move || c.psql("select 1"))
        .await
        .expect_err("psql to a backend with ssl=off");
    assert!(err.contains("internal error"), "psql: {err}");
    let args = certs
        .peer_cert_args(DB, client.port)
        .into_iter()
        .chain(["--pg-sslrequest".to_string()])
        .collect::<Vec<_>>();
    let err = services::tls_peer_cert(args)
        .await
        .expect_err("python TLS client to a backend with ssl=off");
    assert!(
        err.contains("INTERNAL_ERROR") || err.contains("internal error"),
        "python: {err}"
    );

    let lines = wait_connections(&router, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["end"], "backend_no_tls", "{line}");
        assert_eq!(line["negotiation"], "pg-sslrequest", "{line}");
        assert!(
            line["detail"].as_str().unwrap_or_default().contains("answered N"),
            "{line}"
        );
    }
}

// === a client that vanishes ===

#[tokio::test]
async fn a_client_reset_ends_the_backend_session_too() {
    // A worker killed mid-session resets its connection. The router must pass
    // that on (close the backend side), or the PostgreSQL session stays open,
    // holding a connection slot, until the router's idle timeout (1 h).
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V18, &PgOptions::new(&certs));
    let router = router(&[(DB, pg.addr())]);
    let conninfo = format!("{} sslnegotiation=direct", through(&router, &certs, DB).pg_conninfo());
    let pid = blocking(move || services::python("pg_reset.py", &[&conninfo]))
        .await
        .expect_ok("pg_reset.py");
    assert!(pid.parse::<u32>().is_ok(), "{pid}");

    let sql = format!("select count(*) from pg_stat_activity where pid = {pid}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The router is another process: a blocking call here stalls nothing.
        let left = pg.admin(&sql).expect_ok("count the session");
        if left == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backend session {pid} is still open 10 s after its client reset the connection: \
             the router did not close the backend side\nrouter log:\n{}",
            router.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = connection(&router, &[("sni", DB)]).await;
    assert_eq!(line["end"], "client_error", "{line}");
}

// === load ===

#[tokio::test]
async fn fifty_concurrent_psql_sessions_all_succeed() {
    const SESSIONS: usize = 50;
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V15, &PgOptions::new(&certs).set("max_connections", "120"));
    let router = router(&[(DB, pg.addr())]);
    let client = through(&router, &certs, DB);
    // Each session counts the TLS sessions of `app` open after its own 3 s
    // sleep: the first to start sees every one that started within 3 s.
    let sql = "select current_user, (select count(*) from pg_stat_ssl s \
               join pg_stat_activity a using (pid) where s.ssl and a.usename = 'app') \
               from pg_sleep(3)";

    let started = Instant::now();
    let outs: Vec<Captured> = blocking(move || {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..SESSIONS).map(|_| scope.spawn(|| client.psql(sql))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    })
    .await;
    let elapsed = started.elapsed();
    let mut peak = 0;
    for (i, out) in outs.iter().enumerate() {
        let row = out.expect_ok(&format!("session {i}"));
        let (user, open) = row.split_once('|').unwrap_or_else(|| panic!("{row}"));
        assert_eq!(user, "app", "session {i}: {row}");
        peak = peak.max(open.parse::<usize>().unwrap());
    }
    assert!(
        peak >= SESSIONS / 2,
        "at most {peak} sessions were open at once (took {elapsed:?})"
    );
    let lines = wait_connections(&router, SESSIONS).await;
    assert_eq!(lines.len(), SESSIONS, "{lines:#?}");
    let mut ends = std::collections::BTreeMap::<String, usize>::new();
    for line in &lines {
        assert_forwarded(line);
        *ends.entry(line["end"].to_string()).or_default() += 1;
    }
    eprintln!("{SESSIONS} psql sessions took {elapsed:?}; peak {peak} open at once; ends {ends:?}");
}

// === helpers ===

/// A router whose gateway port 5432 (`PG_PORT`) has one route per (fqdn, backend address);
/// the routes are named `<first label>-5432`.
fn router(routes: &[(&str, SocketAddr)]) -> RouterProcess {
    router_on(PG_PORT, "pg", routes)
}

/// The deployment's client (CN=app, verify-ca) asking for `fqdn` at the router.
fn through(router: &RouterProcess, certs: &Certs, fqdn: &str) -> Client {
    certs.client(fqdn, router.addr(PG_PORT).port())
}

/// A session that was forwarded to its end. A libpq session does not end
/// with two clean FINs even without the router: the backend exits with
/// libpq's close_notify (sent after Terminate) unread, so its kernel resets
/// the connection, and libpq has closed its socket by the time the backend's
/// own close_notify arrives, so that side resets too. Which reset the router
/// sees first decides whether it logs `closed`, `backend_error` or
/// `client_error`; anything else is a failure.
#[track_caller]
fn assert_forwarded(line: &Value) {
    let detail = line["detail"].as_str().unwrap_or_default();
    let reset = (line["end"] == "backend_error" || line["end"] == "client_error")
        && (detail.contains("Connection reset by peer") || detail.contains("Broken pipe"));
    assert!(line["end"] == "closed" || reset, "{line}");
    assert_ne!(line["backend"], "-", "{line}");
    assert!(line["bytes.downstream"].as_u64().unwrap_or(0) > 0, "{line}");
}

/// Wait (up to 10 s) for an access-log line whose string fields equal `fields`.
async fn connection(router: &RouterProcess, fields: &[(&str, &str)]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = connections(router)
            .into_iter()
            .find(|l| fields.iter().all(|(k, v)| l[*k] == *v))
        {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no connection line with {fields:?}; logs:\n{}",
            router.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A CancelRequest for backend `pid` with `key` (4 bytes in 3.0, up to 256 in 3.2).
fn cancel_request(pid: u32, key: &[u8]) -> Vec<u8> {
    let mut out = ((12 + key.len()) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&[0x04, 0xd2, 0x16, 0x2e]);
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// A fake PostgreSQL that answers each connection's first 8 bytes (the
/// router's SSLRequest) with `answer` in one write, then waits for EOF.
async fn fake_pg_backend(answer: &'static [u8]) -> SocketAddr {
    serve_each(move |mut s| async move {
        let mut request = [0u8; 8];
        if s.read_exact(&mut request).await.is_err() || request != SSL_REQUEST {
            return;
        }
        let _ = s.write_all(answer).await;
        let mut sink = [0u8; 4096];
        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await
}

/// Write `id<TAB>payload` rows until the file holds at least `bytes`; returns
/// the row count. Payloads are 100 hex digits cut from a pseudo-random pool at
/// a different offset each row (cheap even in a debug build).
fn write_rows(path: &Path, bytes: u64) -> u64 {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const PAYLOAD: usize = 100;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let pool: Vec<u8> = (0..1 << 20)
        .map(|_| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            HEX[(state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 60) as usize]
        })
        .collect();
    let mut out = BufWriter::new(File::create(path).unwrap());
    let (mut written, mut rows) = (0u64, 0u64);
    while written < bytes {
        rows += 1;
        let at = (rows as usize * 7919) % (pool.len() - PAYLOAD);
        let id = rows.to_string();
        for part in [id.as_bytes(), b"\t", &pool[at..at + PAYLOAD], b"\n"] {
            out.write_all(part).unwrap();
            written += part.len() as u64;
        }
    }
    out.flush().unwrap();
    rows
}

/// The hex SHA-256 of a file, by coreutils' `sha256sum`.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}: {out:?}", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let digest = text.split_whitespace().next().unwrap_or_default().to_string();
    assert_eq!(digest.len(), 64, "sha256sum printed {text:?}");
    digest
}

/// Run `cmd` with stdin closed and output captured, killing it after `timeout`.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Captured {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let command = format!("{cmd:?}");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            cmd.env_remove(name);
        }
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command}: {e}"));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            timed_out = true;
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Captured {
        command,
        status,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
        timed_out,
    }
}
