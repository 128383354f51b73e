//! Inputs the fuzz targets (`fuzz/`) found, replayed on every `cargo test`.
//! Each file in `fuzz/found/` is a target's raw input: for `sniff`, one mode
//! byte (chunking and bound) then the client's bytes; for `config`, the text.

use std::path::Path;

use sni_router::config;
use sni_router::sniff::{self, postgres, SniffError, Sniffed};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

/// GSSENCRequest, GSSENCRequest, SSLRequest: the router answered the third
/// request `S` and only then refused the connection for too many requests,
/// telling the client TLS was on just before closing. Fixed in
/// `src/sniff/mod.rs` (the bound is checked before answering).
const SNIFF_THIRD_REQUEST: &[u8] = include_bytes!("../fuzz/found/sniff-third-negotiation-request.bin");

/// `route` and 49 bare CRs before `s:`: YAML counts a lone CR as a line
/// break, so the error is on line 50 of what a `\n`-splitting reader sees as
/// one line. Not a router bug (the fuzz harness counted lines wrongly); kept
/// to pin that errors carry the line YAML and editors show.
const CONFIG_CR_LINE_BREAKS: &[u8] = include_bytes!("../fuzz/found/config-cr-line-breaks.bin");

/// The client sends each 8-byte request and waits for its one-byte answer,
/// as libpq does; what the router answered and how sniffing ended.
async fn negotiate(requests: &[u8]) -> (Result<Sniffed, SniffError>, Vec<u8>) {
    let (mut client, mut server) = duplex(1 << 16);
    let requests = requests.to_vec();
    let client_side = tokio::spawn(async move {
        let mut answers = Vec::new();
        for request in requests.chunks(8) {
            if client.write_all(request).await.is_err() {
                break;
            }
            let mut answer = [0u8; 1];
            match client.read(&mut answer).await {
                Ok(1) => answers.push(answer[0]),
                _ => break,
            }
        }
        answers
    });
    let result = sniff::sniff(&mut server, sniff::DEFAULT_MAX_HELLO).await;
    drop(server);
    (result, client_side.await.unwrap())
}

#[tokio::test]
async fn a_third_negotiation_request_gets_no_answer() {
    let (mode, requests) = SNIFF_THIRD_REQUEST.split_first().unwrap();
    assert_eq!(*mode, 0, "the fuzzer's mode byte: 1-byte reads, 64 KiB bound");
    assert_eq!(&requests[16..], &postgres::SSL_REQUEST);
    let (result, answers) = negotiate(requests).await;
    assert!(matches!(result, Err(SniffError::TooManyRequests)), "{result:?}");
    assert_eq!(answers, b"NN", "the SSLRequest past the bound must not get an S");

    // All three in one segment: refused as bytes sent ahead of an answer.
    let (mut client, mut server) = duplex(1 << 16);
    client.write_all(requests).await.unwrap();
    client.shutdown().await.unwrap();
    let result = sniff::sniff(&mut server, sniff::DEFAULT_MAX_HELLO).await;
    drop(server);
    let mut answers = Vec::new();
    client.read_to_end(&mut answers).await.unwrap();
    assert!(matches!(result, Err(SniffError::Injection(..))), "{result:?}");
    assert!(answers.is_empty(), "{answers:?}");
}

#[test]
fn errors_after_bare_cr_line_breaks_name_the_yaml_line() {
    let text = std::str::from_utf8(CONFIG_CR_LINE_BREAKS).unwrap();
    let err = config::load(text, Path::new("found.yaml")).unwrap_err();
    let yaml_lines = text.replace("\r\n", "\n").split(['\n', '\r']).count() as u32;
    assert_eq!(yaml_lines, 50);
    for p in &err.problems {
        assert!((1..=yaml_lines).contains(&p.at.line), "{err}");
    }
    assert!(err.to_string().contains("found.yaml:50:"), "{err}");
}
