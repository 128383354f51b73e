//! Every refusal: what the client gets, the access-log line, and that the
//! router keeps serving the next client.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One good route (`ok.example.com`) and one whose backend is down
/// (`down.example.com`), with short hello and connect timeouts.
async fn setup() -> OkAndDown {
    OkAndDown::start(&["--hello-timeout", "1s", "--connect-timeout", "2s"]).await
}

/// A normal client right after a refusal still gets through.
async fn still_serving(s: &OkAndDown) {
    let mut tls = tls_connect(s.router.addr(443), "ok.example.com", &s.ca, None)
        .await
        .unwrap();
    assert_eq!(greeting(&mut tls).await, "backend=ok client=none");
}

/// Send `bytes`, half-close, and read everything the router answers.
async fn raw_exchange(s: &OkAndDown, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(s.router.addr(443)).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    answer
}

const ALERT_UNRECOGNIZED_NAME: [u8; 7] = [0x15, 3, 3, 0, 2, 2, 112];
const ALERT_DECODE_ERROR: [u8; 7] = [0x15, 3, 3, 0, 2, 2, 50];

#[tokio::test]
async fn refusal_matrix() {
    let s = setup().await;
    // (case, what to send, what the router must answer, end reason in the log)
    let oversized = {
        let mut h = synthetic_hello("ok.example.com", 0);
        // Claim a 70 000-byte ClientHello body: refused from the header alone.
        h[6..9].copy_from_slice(&70_000u32.to_be_bytes()[1..]);
        h
    };
    let mut not_hello = synthetic_hello("ok.example.com", 0);
    not_hello[5] = 2;
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        (
            "unknown SNI",
            synthetic_hello("nope.example.com", 0),
            ALERT_UNRECOGNIZED_NAME.to_vec(),
            "unknown_sni",
        ),
        (
            "garbage",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            vec![],
            "not_tls",
        ),
        (
            "oversized hello",
            oversized,
            ALERT_DECODE_ERROR.to_vec(),
            "hello_too_large",
        ),
        (
            "not a ClientHello",
            not_hello,
            ALERT_DECODE_ERROR.to_vec(),
            "malformed_hello",
        ),
    ];
    for (case, send, expect, reason) in cases {
        let answer = raw_exchange(&s, &send).await;
        assert_eq!(answer, expect, "{case}");
        s.router.wait_log(&[&format!("\"end\":\"{reason}\"")]).await;
        still_serving(&s).await;
    }
}

#[tokio::test]
async fn unknown_sni_gets_unrecognized_name_alert_in_a_real_client() {
    let s = setup().await;
    let err = tls_connect(s.router.addr(443), "unknown.example.com", &s.ca, None)
        .await
        .unwrap_err();
    assert_eq!(alert_of(&err).as_deref(), Some("UnrecognisedName"), "{err}");
    let line = s.router.wait_log(&["\"end\":\"unknown_sni\""]).await;
    let event = json(&line);
    assert_eq!(event["sni"], "unknown.example.com");
    assert_eq!(event["route"], "-");
    assert_eq!(event["level"], "INFO", "a client mistake is not a router warning");
    still_serving(&s).await;
}

#[tokio::test]
async fn no_sni_gets_an_alert_too() {
    let s = setup().await;
    // rustls sends no SNI when connecting to an IP address.
    let err = tls_connect(s.router.addr(443), "127.0.0.1", &s.ca, None)
        .await
        .unwrap_err();
    assert_eq!(alert_of(&err).as_deref(), Some("UnrecognisedName"), "{err}");
    s.router.wait_log(&["\"end\":\"no_sni\""]).await;
    still_serving(&s).await;
}

#[tokio::test]
async fn hello_that_never_completes_is_closed_after_the_timeout() {
    let s = setup().await;
    let hello = synthetic_hello("ok.example.com", 0);
    let mut stream = TcpStream::connect(s.router.addr(443)).await.unwrap();
    stream.write_all(&hello[..hello.len() / 2]).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let waited = started.elapsed();
    assert!(answer.is_empty());
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    let line = s.router.wait_log(&["\"end\":\"hello_timeout\""]).await;
    assert!(line.contains("no complete ClientHello within 1s"), "{line}");
    still_serving(&s).await;
}

#[tokio::test]
async fn backend_down_gets_internal_error_and_a_warning() {
    let s = setup().await;
    let err = tls_connect(s.router.addr(443), "down.example.com", &s.ca, None)
        .await
        .unwrap_err();
    assert_eq!(alert_of(&err).as_deref(), Some("InternalError"), "{err}");
    let line = s.router.wait_log(&["\"end\":\"upstream_unreachable\""]).await;
    let event = json(&line);
    assert_eq!(event["level"], "WARN");
    assert!(event["detail"].as_str().unwrap().contains("refused"), "{line}");
    still_serving(&s).await;
}

#[tokio::test]
async fn client_that_connects_and_leaves_is_logged_and_harmless() {
    let s = setup().await;
    drop(TcpStream::connect(s.router.addr(443)).await.unwrap());
    s.router.wait_log(&["\"end\":\"client_closed\""]).await;
    still_serving(&s).await;
}
