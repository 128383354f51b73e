//! The first-bytes state machine (`sniff::sniff`) over a client that sends the
//! input in fuzzer-chosen chunks.
//!
//! Input: one mode byte (chunking, and a 4 KiB or 64 KiB hello bound), then
//! the client's bytes. Checks, beyond "no panic, no unbounded allocation":
//! the router writes only `S`/`N` answers, each after one 8-byte request; a
//! TLS result carries exactly the bytes read after the negotiation, within
//! the bound, and they parse to the same hello in one shot; a CancelRequest
//! is its bytes; reads never run past the largest message allowed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sni_router::sniff::{self, HelloReader, Sniffed};
use sni_router_fuzz::{block_on, split_mode, Chunked};

/// Largest plaintext StartupMessage the sniffer reads (PostgreSQL's own bound).
const MAX_STARTUP: usize = 10_000;

fuzz_target!(|data: &[u8]| {
    let Some((mode, input)) = split_mode(data) else {
        return;
    };
    let max = if mode & 0x80 != 0 {
        4096
    } else {
        sniff::DEFAULT_MAX_HELLO
    };
    let mut client = Chunked::new(input, mode);
    let result = block_on(sniff::sniff(&mut client, max));

    assert!(
        client.written.iter().all(|b| matches!(b, b'S' | b'N')),
        "only negotiation answers are written: {:?}",
        client.written
    );
    assert!(client.written.len() <= 2, "at most two negotiation rounds answered");
    // Each answer consumed exactly one 8-byte request; the buffer restarts after it.
    let offset = 8 * client.written.len();
    assert!(
        client.pos <= offset + max.max(MAX_STARTUP),
        "read {} bytes, past every bound",
        client.pos
    );
    match result {
        Ok(Sniffed::Tls(hello)) => {
            assert!(
                hello.bytes.len() <= max,
                "hello of {} bytes over the {max} bound",
                hello.bytes.len()
            );
            assert_eq!(
                client.pos,
                offset + hello.bytes.len(),
                "every byte read is kept for the backend"
            );
            assert_eq!(
                &input[offset..client.pos],
                &hello.bytes[..],
                "replayed bytes are the bytes received"
            );
            let again = HelloReader::new(max).advance(&hello.bytes);
            let Ok(Some((parsed, used))) = again else {
                panic!("sniffed hello does not parse in one shot: {again:?}");
            };
            assert_eq!(parsed, hello.hello);
            assert!(used <= hello.bytes.len());
            if client.written.last() == Some(&b'S') {
                assert_eq!(hello.negotiation, sniff::Negotiation::PgSslRequest);
            }
        }
        Ok(Sniffed::PgCancel(bytes)) => {
            assert!(
                (16..=12 + 256).contains(&bytes.len()),
                "cancel of {} bytes",
                bytes.len()
            );
            assert_eq!(&input[offset..offset + bytes.len()], &bytes[..]);
        }
        Ok(Sniffed::PgStartup { .. } | Sniffed::RespPlaintext | Sniffed::NotTls) | Err(_) => {}
    }
});
