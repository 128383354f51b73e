//! The real-server fixtures on their own, without a router: each server
//! accepts the deployment's clients (mutual TLS, `CN=app`) and refuses a
//! client without a certificate, so router tests can trust both answers.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::services::{blocking, Certs, PgKind, PgOptions, Postgres, Redis, RedisOptions, SslNegotiation};

const DB: &str = "db.lab.example.com";
const CACHE: &str = "redis.lab.example.com";

#[test]
fn pg15_accepts_psql_with_the_app_certificate() {
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V15, &PgOptions::new(&certs));
    assert!(pg.version().starts_with("15."), "version {}", pg.version());

    let client = pg.client(&certs, DB);
    assert_eq!(client.psql("select 1").expect_ok("psql select 1"), "1");
    // The certificate's CN is the user, and the session really is TLS.
    let sql = "select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()";
    assert_eq!(client.psql(sql).expect_ok("psql whoami"), "app|t");
}

#[test]
fn pg15_refuses_clients_without_a_trusted_certificate() {
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V15, &PgOptions::new(&certs));
    let client = pg.client(&certs, DB);

    let err = client
        .clone()
        .without_cert()
        .psql("select 1")
        .expect_err("psql without cert");
    assert!(err.contains("certificate"), "unexpected error: {err}");

    let other = Certs::new(&[DB]);
    let foreign = client.clone().with_cert(&other.client_cert, &other.client_key);
    foreign
        .psql("select 1")
        .expect_err("psql with a certificate from another CA");

    // PostgreSQL 15 predates direct TLS: what the router must bridge.
    client
        .psycopg(SslNegotiation::Direct, "select 1")
        .expect_err("direct TLS to PG 15");
    let out = client
        .psycopg(SslNegotiation::Postgres, "select 1")
        .expect_ok("psycopg classic");
    assert_eq!(out, "1");
}

#[test]
fn pg18_accepts_psycopg_with_direct_and_classic_negotiation() {
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V18, &PgOptions::new(&certs));
    assert!(pg.version().starts_with("18."), "version {}", pg.version());

    let client = pg.client(&certs, DB);
    let sql = "select current_setting('server_version'), current_user, ssl \
               from pg_stat_ssl where pid = pg_backend_pid()";
    for negotiation in [SslNegotiation::Direct, SslNegotiation::Postgres] {
        let out = client.psycopg(negotiation, sql).expect_ok(negotiation.as_str());
        let row: Vec<&str> = out.split('|').collect();
        assert!(row[0].starts_with("18"), "{negotiation:?}: {out}");
        assert_eq!(row[1..], ["app", "True"], "{negotiation:?}: {out}");
    }
    // libpq 15 against PostgreSQL 18 still works (classic negotiation).
    assert_eq!(client.psql("select 1").expect_ok("psql to PG 18"), "1");
}

#[test]
fn pg18_refuses_clients_without_a_certificate() {
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V18, &PgOptions::new(&certs));
    let client = pg.client(&certs, DB).without_cert();
    for negotiation in [SslNegotiation::Direct, SslNegotiation::Postgres] {
        let err = client.psycopg(negotiation, "select 1").expect_err(negotiation.as_str());
        assert!(err.contains("certificate"), "{negotiation:?}: {err}");
    }
}

#[test]
fn postgres_stops_on_drop() {
    let certs = Certs::new(&[DB]);
    let pg = Postgres::start(PgKind::V18, &PgOptions::new(&certs).set("max_connections", "20"));
    assert_eq!(pg.admin("show max_connections").expect_ok("admin"), "20");
    let (addr, data_dir) = (pg.addr(), pg.data_dir().to_path_buf());
    drop(pg);
    assert!(TcpStream::connect(addr).is_err(), "{addr} still accepts after drop");
    assert!(!data_dir.exists(), "{} left behind", data_dir.display());
}

#[test]
fn redis_answers_ping_over_mutual_tls() {
    let certs = Certs::new(&[CACHE]);
    let redis = Redis::start(&RedisOptions::new(&certs));
    let client = redis.client(&certs, CACHE);
    assert_eq!(client.redis_cli(&["PING"]).expect_ok("redis-cli PING"), "PONG");
    assert_eq!(client.redis_py(&["PING"]).expect_ok("redis-py PING"), "PONG");
    client.redis_cli(&["SET", "k", "v"]).expect_ok("redis-cli SET");
    assert_eq!(client.redis_py(&["GET", "k"]).expect_ok("redis-py GET"), "v");
}

#[test]
fn redis_refuses_clients_without_a_trusted_certificate() {
    let certs = Certs::new(&[CACHE]);
    let redis = Redis::start(&RedisOptions::new(&certs));
    let client = redis.client(&certs, CACHE);

    let bare = client.clone().without_cert();
    bare.redis_cli(&["PING"]).expect_err("redis-cli without cert");
    bare.redis_py(&["PING"]).expect_err("redis-py without cert");

    let other = Certs::new(&[CACHE]);
    let foreign = client.with_cert(&other.client_cert, &other.client_key);
    foreign
        .redis_cli(&["PING"])
        .expect_err("redis-cli with a certificate from another CA");
    foreign
        .redis_py(&["PING"])
        .expect_err("redis-py with a certificate from another CA");

    let addr = redis.addr();
    drop(redis);
    assert!(TcpStream::connect(addr).is_err(), "{addr} still accepts after drop");
}

/// Router tests are async: a client run through `blocking` leaves a
/// `current_thread` runtime free to serve the connection it makes.
#[tokio::test]
async fn blocking_clients_leave_the_runtime_serving() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        // Accept and hang up: psql sees the close at once instead of waiting
        // out its connect_timeout on a stalled runtime.
        let (stream, _) = listener.accept().await.unwrap();
        drop(stream);
    });
    let certs = Certs::new(&[DB]);
    let client = certs.client(DB, port);
    let started = Instant::now();
    let out = blocking(move || client.psql("select 1")).await;
    out.expect_err("psql to a server that hangs up");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}\n{out}",
        started.elapsed()
    );
    server.await.unwrap();
}
