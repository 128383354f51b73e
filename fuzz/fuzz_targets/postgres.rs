//! PostgreSQL's pre-TLS messages: `postgres::classify` on every 8-byte window
//! of the input against a reference written from the protocol docs, and
//! `error_response` framing.
//!
//! Checks: SSLRequest/GSSENCRequest only with length 8 and their codes; a
//! CancelRequest only with length 16..=268; a StartupMessage only for protocol
//! 3.x and length 8..=10000; anything recognised starts with two zero bytes,
//! so never with a TLS record's 0x16; the ErrorResponse length field is exact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sni_router::sniff::postgres::{self, PgMessage};

fuzz_target!(|data: &[u8]| {
    for window in data.windows(8) {
        let head: [u8; 8] = window.try_into().expect("windows(8) yields 8 bytes");
        let got = postgres::classify(&head);
        assert_eq!(got, reference(&head), "{head:02x?}");
        if got.is_some() {
            assert_eq!(&head[..2], &[0, 0], "a recognised message has a small length");
        }
    }
    // Fields as the router builds them never contain NUL; split the input on
    // NULs to get three of them.
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\0');
    let (code, message, hint) = (
        fields.next().unwrap_or(""),
        fields.next().unwrap_or(""),
        fields.next().unwrap_or(""),
    );
    let e = postgres::error_response(code, message, hint);
    assert_eq!(e[0], b'E');
    let len = u32::from_be_bytes([e[1], e[2], e[3], e[4]]) as usize;
    assert_eq!(len + 1, e.len(), "length field counts itself and the body");
    assert_eq!(e.last(), Some(&0), "fields end with a terminator");
});

/// The protocol's rules (PostgreSQL docs, "Message Formats"), written apart
/// from the code under test.
fn reference(head: &[u8; 8]) -> Option<PgMessage> {
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let (hi, lo) = (
        u16::from_be_bytes([head[4], head[5]]),
        u16::from_be_bytes([head[6], head[7]]),
    );
    match (hi, lo) {
        (1234, 5679) if len == 8 => Some(PgMessage::SslRequest),
        (1234, 5680) if len == 8 => Some(PgMessage::GssEncRequest),
        (1234, 5678) if (16..=268).contains(&len) => Some(PgMessage::CancelRequest { len }),
        (3, minor) if (8..=10_000).contains(&len) => Some(PgMessage::Startup { major: 3, minor, len }),
        _ => None,
    }
}
