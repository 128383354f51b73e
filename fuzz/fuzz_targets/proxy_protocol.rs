//! PROXY protocol v1/v2 header reading (`proxy_protocol::read_header`) over a
//! stream that hands out the input in fuzzer-chosen chunks.
//!
//! Input: one mode byte (chunking; bit 7 also round-trips `encode_v2` on
//! addresses taken from the input), then the bytes. Checks: a header read
//! consumes exactly its own bytes (a v1 line up to its CRLF, at most 107
//! bytes; a v2 header 16 + its length, at most 16 + 1536), so the client's
//! first byte is the next one; a v2 PROXY header with nothing but addresses
//! re-encodes to the same bytes; any encoded header reads back as itself.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sni_router::proxy_protocol::{self, ProxyVersion};
use sni_router_fuzz::{block_on, split_mode, Chunked};

fuzz_target!(|data: &[u8]| {
    let Some((mode, input)) = split_mode(data) else {
        return;
    };
    let mut stream = Chunked::new(input, mode);
    let result = block_on(proxy_protocol::read_header(&mut stream, Duration::from_secs(5)));
    if let Ok(header) = result {
        let read = &input[..stream.pos];
        match header.version {
            ProxyVersion::V1 => {
                assert!(read.starts_with(b"PROXY ") && read.ends_with(b"\r\n"), "{read:?}");
                assert!(read.len() <= 107);
                assert_eq!(read.iter().filter(|&&b| b == b'\n').count(), 1, "one line, no more");
            }
            ProxyVersion::V2 => {
                let len = usize::from(u16::from_be_bytes([read[14], read[15]]));
                assert_eq!(read.len(), 16 + len, "exactly the announced header");
                assert!(len <= 1536);
                let address_len = match read[13] {
                    0x11 => 12,
                    0x21 => 36,
                    _ => usize::MAX,
                };
                if let (0x21, Some((src, dst)), true) = (read[12], header.addresses, len == address_len) {
                    assert_eq!(
                        proxy_protocol::encode_v2(src, dst),
                        read,
                        "re-encoding gives the same header"
                    );
                }
            }
        }
    }
    if mode & 0x80 != 0 && input.len() >= 36 {
        let (src, dst) = addresses(input);
        let encoded = proxy_protocol::encode_v2(src, dst);
        let mut stream = Chunked::new(&encoded, mode);
        let back = block_on(proxy_protocol::read_header(&mut stream, Duration::from_secs(5)))
            .expect("an encoded header reads back");
        assert_eq!(stream.pos, encoded.len());
        let (bsrc, bdst) = back.addresses.expect("PROXY command carries addresses");
        let same = |a: SocketAddr, b: SocketAddr| a.port() == b.port() && canonical(a.ip()) == canonical(b.ip());
        assert!(
            same(src, bsrc) && same(dst, bdst),
            "{src} {dst} read back as {bsrc} {bdst}"
        );
    }
});

/// Two socket addresses from the first 36 bytes: IPv4 or IPv6 per address,
/// as the first byte says.
fn addresses(bytes: &[u8]) -> (SocketAddr, SocketAddr) {
    let ip = |at: usize, v6: bool| -> IpAddr {
        if v6 {
            let octets: [u8; 16] = bytes[at..at + 16].try_into().expect("16 bytes");
            IpAddr::V6(Ipv6Addr::from(octets))
        } else {
            IpAddr::V4(Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]))
        }
    };
    let port = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    (
        SocketAddr::new(ip(0, bytes[0] & 1 == 1), port(32)),
        SocketAddr::new(ip(16, bytes[0] & 2 == 2), port(34)),
    )
}

/// An IPv4-mapped IPv6 address as IPv4: mixing families maps IPv4 to IPv6 on the wire.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}
