//! Redis through the router, with real servers and real clients: `redis-cli`
//! and redis-py over mutual TLS to `redis-server --tls-auth-clients yes`,
//! the plaintext RESP refusal, refusals that must come from Redis itself (no
//! client certificate) or from the router (unknown SNI), the certificate the
//! client sees, and 50 clients at once. Every test starts its own servers and
//! router.

mod common;

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::services::{self, blocking, Certs, Client, Redis, RedisOptions, REDIS_CLI};
use common::{hex, read_all, router_on, wait_connections, xorshift_bytes, RouterProcess};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The gateway port Redis routes use (the router listens on 127.0.0.1:0 for it).
const REDIS_PORT: u16 = 6379;
const CACHE: &str = "cache.lab.example.com";
const OTHER: &str = "other.lab.example.com";
const UNKNOWN: &str = "nope.lab.example.com";
const VALUE_BYTES: usize = 1024 * 1024;

#[tokio::test]
async fn redis_cli_ping_and_a_1_mib_random_value_byte_exact() {
    let certs = Certs::new(&[CACHE]);
    let redis = Redis::start(&RedisOptions::new(&certs));
    let router = router(&[(CACHE, redis.addr())]);
    let client = through(&router, &certs, CACHE);

    let c = client.clone();
    let pong = blocking(move || c.redis_cli(&["PING"])).await;
    assert_eq!(pong.expect_ok("redis-cli PING"), "PONG");

    let dir = tempfile::tempdir().unwrap();
    let value_file = dir.path().join("value.bin");
    let value = xorshift_bytes(0x2545_f491_4f6c_dd1d ^ VALUE_BYTES as u64, VALUE_BYTES);
    assert!(value.contains(&0) && value.contains(&b'\n') && value.contains(&0xff));
    fs::write(&value_file, &value).unwrap();

    // `-x`: the last argument is read from stdin, byte for byte.
    let (c, file) = (client.clone(), value_file.clone());
    let (status, out, err) = blocking(move || redis_cli_bytes(&c, &["-x", "SET", "big"], Some(&file))).await;
    assert!(status.success(), "SET: {err}");
    assert_eq!(String::from_utf8_lossy(&out).trim(), "OK", "{err}");

    let c = client.clone();
    let (status, out, err) = blocking(move || redis_cli_bytes(&c, &["STRLEN", "big"], None)).await;
    assert!(status.success(), "STRLEN: {err}");
    assert_eq!(String::from_utf8_lossy(&out).trim(), VALUE_BYTES.to_string());

    // Not a tty: redis-cli prints the reply raw, then one newline.
    let c = client.clone();
    let (status, out, err) = blocking(move || redis_cli_bytes(&c, &["GET", "big"], None)).await;
    assert!(status.success(), "GET: {err}");
    assert_eq!(out.last(), Some(&b'\n'));
    let got = &out[..out.len() - 1];
    assert_eq!(got.len(), VALUE_BYTES);
    assert!(got == value.as_slice(), "GET returned other bytes");

    let lines = wait_connections(&router, 4).await;
    assert_eq!(lines.len(), 4, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["end"], "closed", "{line}");
        assert_eq!(line["negotiation"], "tls", "{line}");
        assert_eq!(line["sni"], CACHE, "{line}");
        assert_eq!(line["route"], "cache-6379", "{line}");
        assert_eq!(line["backend"], redis.addr().to_string(), "{line}");
    }
    // The SET carried the value up, the GET carried it down.
    let moved = |field: &str| {
        lines
            .iter()
            .filter(|l| l[field].as_u64().unwrap_or(0) > VALUE_BYTES as u64)
            .count()
    };
    assert_eq!(moved("bytes.upstream"), 1, "{lines:#?}");
    assert_eq!(moved("bytes.downstream"), 1, "{lines:#?}");
}

#[tokio::test]
async fn redis_py_pipeline_of_1000_incrs_through_the_router() {
    let certs = Certs::new(&[CACHE]);
    let redis = Redis::start(&RedisOptions::new(&certs));
    let router = router(&[(CACHE, redis.addr())]);
    let client = through(&router, &certs, CACHE);

    let args = bulk_args(&client, "pipeline", 1000);
    let out = blocking(move || python(&args)).await.expect_ok("redis-py pipeline");
    assert_eq!(out, "1000\n1000");
    let lines = wait_connections(&router, 1).await;
    assert_eq!(lines.len(), 1, "one connection carries the pipeline: {lines:#?}");
    assert_eq!(lines[0]["end"], "closed", "{}", lines[0]);
    assert_eq!(lines[0]["route"], "cache-6379", "{}", lines[0]);
    // The key is really on the backend.
    let direct = redis.client(&certs, CACHE);
    let value = blocking(move || direct.redis_cli(&["GET", "pipelined"])).await;
    assert_eq!(value.expect_ok("GET directly"), "1000");
}

#[tokio::test]
async fn a_plaintext_command_gets_an_err_line_before_close() {
    let certs = Certs::new(&[CACHE]);
    let redis = Redis::start(&RedisOptions::new(&certs));
    let router = router(&[(CACHE, redis.addr())]);
    let addr = router.addr(REDIS_PORT);

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let reply = read_all(&mut stream).await;
    let reply = String::from_utf8(reply).expect("a text reply");
    assert!(reply.starts_with("-ERR "), "{reply:?}");
    assert!(reply.ends_with("\r\n"), "{reply:?}");
    assert_eq!(reply.matches("\r\n").count(), 1, "one line: {reply:?}");
    assert!(reply.contains("TLS") && reply.contains("--tls"), "{reply:?}");

    // The real client without --tls prints that line.
    let port = addr.port().to_string();
    let out = blocking(move || {
        let mut cmd = Command::new(services::require(REDIS_CLI));
        cmd.args(["-h", "127.0.0.1", "-p", &port, "PING"]);
        run_with_timeout(cmd, None, Duration::from_secs(30))
    })
    .await;
    let printed = format!("{}{}", String::from_utf8_lossy(&out.1), String::from_utf8_lossy(&out.2));
    assert!(
        printed.contains("ERR this gateway accepts only TLS"),
        "redis-cli printed: {printed}"
    );

    let lines = wait_connections(&router, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["end"], "redis_plaintext", "{line}");
        assert_eq!(line["backend"], "-", "{line}");
    }
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_by_redis_itself() {
    let certs = Certs::new(&[CACHE]);
    let redis = Redis::start(&RedisOptions::new(&certs));
    let router = router(&[(CACHE, redis.addr())]);
    let bare = through(&router, &certs, CACHE).without_cert();

    let c = bare.clone();
    let cli = blocking(move || c.redis_cli(&["PING"]))
        .await
        .expect_err("redis-cli without a certificate");
    assert!(!cli.contains("PONG"), "{cli}");
    let c = bare.clone();
    let py = blocking(move || c.redis_py(&["PING"]))
        .await
        .expect_err("redis-py without a certificate");
    // TLS 1.3 encrypts this alert: only the backend, holding the session
    // keys, can have sent it.
    assert!(py.contains("CERTIFICATE_REQUIRED"), "redis-py: {py}");

    // Both were routed to Redis, and Redis, which alone holds the key, refused
    // them after its side of the handshake: the router does not terminate TLS.
    let lines = wait_connections(&router, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["route"], "cache-6379", "{line}");
        assert_eq!(line["backend"], redis.addr().to_string(), "{line}");
        assert!(
            line["bytes.downstream"].as_u64().unwrap_or(0) > 0,
            "no server handshake came back: {line}"
        );
    }
    // The same client with its certificate gets through.
    let c = through(&router, &certs, CACHE);
    let pong = blocking(move || c.redis_cli(&["PING"])).await;
    assert_eq!(pong.expect_ok("redis-cli with the certificate"), "PONG");
    eprintln!("redis-cli without a certificate: {cli}\nredis-py: {py}");
}

#[tokio::test]
async fn a_ca_file_holding_the_client_certificate_fails_verification() {
    let certs = Certs::new(&[CACHE]);
    let redis = Redis::start(&RedisOptions::new(&certs));
    let router = router(&[(CACHE, redis.addr())]);
    let wrong_ca = certs.dir().join("not-the-ca.crt");
    fs::write(&wrong_ca, &certs.client.cert_pem).unwrap();
    let mut client = through(&router, &certs, CACHE);
    client.ca_file = wrong_ca;

    let c = client.clone();
    let cli = blocking(move || c.redis_cli(&["PING"]))
        .await
        .expect_err("redis-cli with the wrong CA");
    assert!(cli.contains("certificate verify failed"), "redis-cli: {cli}");
    let c = client.clone();
    let py = blocking(move || c.redis_py(&["PING"]))
        .await
        .expect_err("redis-py with the wrong CA");
    assert!(py.contains("CERTIFICATE_VERIFY_FAILED"), "redis-py: {py}");
    // redis-py may try a failed connect twice: at least one line per client.
    let lines = wait_connections(&router, 2).await;
    assert!(lines.len() >= 2, "{lines:#?}");
    assert!(lines.iter().all(|l| l["route"] == "cache-6379"), "{lines:#?}");
}

#[tokio::test]
async fn an_unknown_sni_gets_the_unrecognized_name_alert() {
    let certs = Certs::new(&[CACHE, UNKNOWN]);
    let redis = Redis::start(&RedisOptions::new(&certs));
    let router = router(&[(CACHE, redis.addr())]);
    let stranger = through(&router, &certs, UNKNOWN);

    let c = stranger.clone();
    let cli = blocking(move || c.redis_cli(&["PING"]))
        .await
        .expect_err("redis-cli with an unknown SNI");
    assert!(cli.contains("unrecognized name"), "redis-cli: {cli}");
    let c = stranger.clone();
    let py = blocking(move || c.redis_py(&["PING"]))
        .await
        .expect_err("redis-py with an unknown SNI");
    assert!(
        py.contains("UNRECOGNIZED_NAME") || py.contains("unrecognized name"),
        "redis-py: {py}"
    );
    // redis-py may try a failed connect twice: at least one line per client.
    let lines = wait_connections(&router, 2).await;
    assert!(lines.len() >= 2, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["end"], "unknown_sni", "{line}");
        assert_eq!(line["sni"], UNKNOWN, "{line}");
        assert_eq!(line["backend"], "-", "{line}");
    }
}

#[tokio::test]
async fn the_leaf_certificate_seen_through_the_router_is_the_backends() {
    // Two CAs, two servers, one gateway port: each route shows its own backend's certificate.
    let certs = Certs::new(&[CACHE]);
    let other_certs = Certs::new(&[OTHER]);
    let redis = Redis::start(&RedisOptions::new(&certs));
    let other = Redis::start(&RedisOptions::new(&other_certs));
    let router = router(&[(CACHE, redis.addr()), (OTHER, other.addr())]);
    let port = router.addr(REDIS_PORT).port();
    let fp = hex(&Sha256::digest(&certs.server.cert_der));
    let other_fp = hex(&Sha256::digest(&other_certs.server.cert_der));
    assert_ne!(fp, other_fp);

    for (certs, fqdn, port, expected) in [
        (&certs, CACHE, redis.port(), &fp),
        (&other_certs, OTHER, other.port(), &other_fp),
        (&certs, CACHE, port, &fp),
        (&other_certs, OTHER, port, &other_fp),
    ] {
        let out = services::tls_peer_cert(certs.peer_cert_args(fqdn, port))
            .await
            .expect_ok("tls_peer_cert.py");
        assert_eq!(out.lines().next(), Some(expected.as_str()), "{fqdn} on {port}");
    }
    // The script half-closes and reads to the end: a clean close both ways.
    let lines = wait_connections(&router, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines.iter().all(|l| l["end"] == "closed"), "{lines:#?}");
    assert_eq!(lines[0]["backend"], redis.addr().to_string(), "{}", lines[0]);
    assert_eq!(lines[1]["backend"], other.addr().to_string(), "{}", lines[1]);
}

#[tokio::test]
async fn a_client_reset_closes_the_backend_connection_too() {
    // A client that vanishes with a RST (killed with unread data, or SO_LINGER
    // 0) must not leave its Redis connection behind until the router's idle
    // timeout (1 h): the router has to close the backend side too.
    let certs = Certs::new(&[CACHE]);
    let redis = Redis::start(&RedisOptions::new(&certs));
    let router = router(&[(CACHE, redis.addr())]);
    let direct = redis.client(&certs, CACHE);
    // CLIENT LIST over a connection of its own: one line per connected client.
    let connected = move || {
        let out = direct.redis_cli(&["CLIENT", "LIST"]).expect_ok("CLIENT LIST");
        out.lines().count() - 1
    };

    let mut tls = common::tls_connect(router.addr(REDIS_PORT), CACHE, &certs.ca, Some(&certs.client))
        .await
        .expect("TLS through the router");
    tls.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let mut pong = [0u8; 7];
    tls.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    let c = connected.clone();
    assert_eq!(blocking(c).await, 1, "our connection is not on Redis");

    // Abort: SO_LINGER 0 turns the close into a RST.
    socket2::SockRef::from(tls.get_ref().0)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(tls);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = connected.clone();
        let left = blocking(c).await;
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis still holds {left} connection(s) 10 s after the client reset: \
             the router did not close the backend side\nrouter log:\n{}",
            router.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = wait_connections(&router, 1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["end"], "client_error", "{}", lines[0]);
}

#[tokio::test]
async fn fifty_concurrent_redis_clients_all_succeed() {
    const CLIENTS: usize = 50;
    let certs = Certs::new(&[CACHE]);
    let redis = Redis::start(&RedisOptions::new(&certs));
    let router = router(&[(CACHE, redis.addr())]);
    let client = through(&router, &certs, CACHE);

    let args = bulk_args(&client, "concurrent", CLIENTS);
    let started = Instant::now();
    let out = blocking(move || python(&args)).await.expect_ok("50 redis-py clients");
    let elapsed = started.elapsed();
    let (total, connected) = out.split_once('\n').unwrap_or_else(|| panic!("{out}"));
    assert_eq!(total, CLIENTS.to_string(), "{out}");
    // All 50 held a connection to Redis at the same moment.
    let connected: usize = connected.trim().parse().unwrap();
    assert!(connected >= CLIENTS, "Redis saw {connected} clients at once");

    // 50 clients and the one that read the total.
    let lines = wait_connections(&router, CLIENTS + 1).await;
    assert_eq!(lines.len(), CLIENTS + 1, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["end"], "closed", "{line}");
        assert_eq!(line["route"], "cache-6379", "{line}");
    }
    eprintln!("{CLIENTS} concurrent redis-py clients took {elapsed:?}");
}

// === helpers ===

/// A router whose gateway port 6379 (`REDIS_PORT`) has one route per (fqdn, backend address);
/// the routes are named `<first label>-6379`.
fn router(routes: &[(&str, SocketAddr)]) -> RouterProcess {
    router_on(REDIS_PORT, "redis", routes)
}

/// The deployment's client (CN=app) asking for `fqdn` at the router.
fn through(router: &RouterProcess, certs: &Certs, fqdn: &str) -> Client {
    certs.client(fqdn, router.addr(REDIS_PORT).port())
}

/// `redis_bulk.py` arguments for `client` (which must have a certificate).
fn bulk_args(client: &Client, mode: &str, count: usize) -> Vec<String> {
    let (cert, key) = client.identity.clone().expect("a client certificate");
    vec![
        "--sni".into(),
        client.fqdn.clone(),
        "--port".into(),
        client.port.to_string(),
        "--cacert".into(),
        client.ca_file.display().to_string(),
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
        mode.into(),
        count.to_string(),
    ]
}

fn python(args: &[String]) -> services::Captured {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    services::python("redis_bulk.py", &args)
}

/// `redis-cli --tls ...` like [`Client::redis_cli`], with stdin from `input`
/// and stdout kept as bytes: (status, stdout, stderr).
fn redis_cli_bytes(client: &Client, args: &[&str], input: Option<&Path>) -> (ExitStatus, Vec<u8>, String) {
    let mut cmd = Command::new(services::require(REDIS_CLI));
    cmd.args(["--tls", "--sni", &client.fqdn, "--cacert"])
        .arg(&client.ca_file);
    if let Some((cert, key)) = &client.identity {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    cmd.args(["-h", "127.0.0.1", "-p", &client.port.to_string(), "-e"])
        .args(args);
    let (status, out, err) = run_with_timeout(cmd, input, Duration::from_secs(60));
    (status, out, String::from_utf8_lossy(&err).into_owned())
}

/// Run `cmd` with stdin from `input` (else closed), killing it after
/// `timeout`: (status, stdout, stderr).
fn run_with_timeout(mut cmd: Command, input: Option<&Path>, timeout: Duration) -> (ExitStatus, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let stdin = match input {
        Some(path) => Stdio::from(File::open(path).unwrap()),
        None => Stdio::null(),
    };
    cmd.env_remove("REDISCLI_AUTH");
    let mut child = cmd
        .stdin(stdin)
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran longer than {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        fs::read(&out_path).unwrap_or_default(),
        fs::read(&err_path).unwrap_or_default(),
    )
}
