//! ClientHellos for the benches: the first flight of a real rustls client,
//! resized with a padding extension (RFC 7685) or grown to post-quantum size
//! with an X25519MLKEM768 key share, the way browsers send them.
//!
//! rustls' ring provider does not offer X25519MLKEM768, so that share is
//! synthetic: 1216 bytes of filler under group 0x11ec. The router only walks
//! past it, so its content does not matter.
#![allow(dead_code)]

use std::sync::Arc;

use rustls::pki_types::ServerName;

/// IANA TLS supported group X25519MLKEM768.
pub const X25519_MLKEM768: u16 = 0x11ec;
/// Its client key share: ML-KEM-768 encapsulation key (1184) + X25519 (32).
pub const MLKEM_SHARE_LEN: usize = 1184 + 32;

/// A rustls ClientHello for `sni` padded to exactly `total` bytes on the wire.
pub fn padded(sni: &str, total: usize) -> Vec<u8> {
    pad_to(&rustls_hello(sni), total)
}

/// A rustls ClientHello for `sni` with an X25519MLKEM768 share, padded to `total` bytes.
pub fn post_quantum(sni: &str, total: usize) -> Vec<u8> {
    pad_to(&add_pq_share(&rustls_hello(sni)), total)
}

/// The first flight of an in-memory rustls client (ring provider, TLS 1.3 and
/// 1.2, ALPN h2/http1.1): one TLS record holding the ClientHello.
pub fn rustls_hello(sni: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = ServerName::try_from(sni.to_string()).expect("a valid DNS name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client connection");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write to a Vec");
    }
    out
}

/// Wrap a handshake message in TLS records of at most `chunk` bytes.
pub fn records(handshake: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in handshake.chunks(chunk) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// The same one-record hello in records of at most `chunk` payload bytes.
pub fn rerecord(record: &[u8], chunk: usize) -> Vec<u8> {
    records(&record[5..], chunk)
}

/// Add an X25519MLKEM768 share in front of the existing key shares, and the
/// group in front of `supported_groups`, as PQ-enabled browsers do.
pub fn add_pq_share(record: &[u8]) -> Vec<u8> {
    let (head, mut exts) = split_hello(record);
    for (kind, data) in &mut exts {
        match *kind {
            // supported_groups: u16 list length, then groups.
            10 => {
                let mut list = X25519_MLKEM768.to_be_bytes().to_vec();
                list.extend_from_slice(&data[2..]);
                *data = [&(list.len() as u16).to_be_bytes()[..], &list].concat();
            }
            // key_share: u16 list length, then (group, u16 len, share) entries.
            51 => {
                let mut list = X25519_MLKEM768.to_be_bytes().to_vec();
                list.extend_from_slice(&(MLKEM_SHARE_LEN as u16).to_be_bytes());
                list.extend((0..MLKEM_SHARE_LEN).map(|i| (i * 31 % 251) as u8));
                list.extend_from_slice(&data[2..]);
                *data = [&(list.len() as u16).to_be_bytes()[..], &list].concat();
            }
            _ => {}
        }
    }
    records(&join_hello(&head, &exts), usize::MAX >> 1)
}

/// Add a padding extension so the record is exactly `total` bytes.
pub fn pad_to(record: &[u8], total: usize) -> Vec<u8> {
    let (head, mut exts) = split_hello(record);
    // Padding goes last but before pre_shared_key (RFC 8446 §4.2.11); rustls
    // sends none without a session to resume.
    let pad = total
        .checked_sub(record.len() + 4)
        .unwrap_or_else(|| panic!("hello is {} bytes already, more than {total}", record.len()));
    exts.push((21, vec![0; pad]));
    records(&join_hello(&head, &exts), usize::MAX >> 1)
}

/// The parts of a one-record ClientHello: (handshake body before the
/// extensions, extensions as (type, data)).
fn split_hello(record: &[u8]) -> (Vec<u8>, Vec<(u16, Vec<u8>)>) {
    assert_eq!(record[0], 0x16, "a handshake record");
    let hs = &record[5..];
    assert_eq!(hs[0], 1, "a ClientHello");
    let body = &hs[4..];
    let mut at = 2 + 32; // version, random
    at += 1 + body[at] as usize; // session id
    at += 2 + u16::from_be_bytes([body[at], body[at + 1]]) as usize; // cipher suites
    at += 1 + body[at] as usize; // compression methods
    let head = body[..at].to_vec();
    let ext_len = u16::from_be_bytes([body[at], body[at + 1]]) as usize;
    let mut exts = Vec::new();
    let mut p = at + 2;
    while p < at + 2 + ext_len {
        let kind = u16::from_be_bytes([body[p], body[p + 1]]);
        let len = u16::from_be_bytes([body[p + 2], body[p + 3]]) as usize;
        exts.push((kind, body[p + 4..p + 4 + len].to_vec()));
        p += 4 + len;
    }
    (head, exts)
}

/// The handshake message (type + length + body) from its parts.
fn join_hello(head: &[u8], exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut ext = Vec::new();
    for (kind, data) in exts {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    }
    let mut body = head.to_vec();
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    hs
}
