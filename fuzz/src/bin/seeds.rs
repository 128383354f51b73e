//! Write the seed corpora under `seeds/<target>/` (run from `fuzz/`:
//! `cargo run --release --bin seeds`; `run.sh` does).
//!
//! Hellos: rustls 0.23 clients built in memory (TLS 1.3+1.2, TLS 1.2 only,
//! ALPN `postgresql` / `h2`, no SNI), the real clients captured by
//! `capture-hellos.sh` (OpenSSL 3.0 `s_client`, curl, Python, psql 15 after
//! its SSLRequest, libpq 18 `sslnegotiation=direct` with an X25519MLKEM768
//! key share: a real post-quantum hello), a rustls hello grown to
//! post-quantum size by an X25519MLKEM768 key share, each re-split into
//! 1-, 100- and 512-byte records, an SSLv2-compatible hello, and PostgreSQL's
//! negotiation messages in front of them. PROXY headers: v1 and v2 of every
//! family. Values files: the example and variants, valid and not.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

fn main() {
    let hellos = hellos();
    let mut sniff = Vec::new();
    let mut hello_seeds = Vec::new();
    for (name, bytes) in &hellos {
        for (split, resplit) in [
            ("", bytes.clone()),
            ("-r1", rerecord(bytes, 1)),
            ("-r100", rerecord(bytes, 100)),
            ("-r512", rerecord(bytes, 512)),
        ] {
            let name = format!("{name}{split}");
            // Chunk modes: whole, reads of up to 300, of up to 17 bytes; 4 KiB bound.
            for mode in [5u8, 3, 2, 0x85] {
                sniff.push((format!("{name}-m{mode}"), [&[mode][..], &resplit].concat()));
            }
            for mode in [0x80u8, 0x40 | 7, 0xc0 | 63] {
                hello_seeds.push((format!("{name}-m{mode}"), [&[mode][..], &resplit].concat()));
            }
        }
        sniff.push((format!("{name}-sslrequest"), [&[5][..], &SSL_REQUEST, bytes].concat()));
        sniff.push((
            format!("{name}-gssenc-sslrequest"),
            [&[3][..], &GSSENC_REQUEST, &SSL_REQUEST, bytes].concat(),
        ));
        sniff.push((
            format!("{name}-gssenc-direct"),
            [&[2][..], &GSSENC_REQUEST, bytes].concat(),
        ));
    }
    for (name, bytes) in plaintext() {
        sniff.push((name.clone(), [&[5][..], &bytes].concat()));
        sniff.push((format!("{name}-m0"), [&[0][..], &bytes].concat()));
    }
    write("sniff", &sniff);
    write("hello", &hello_seeds);

    let mut pg: Vec<(String, Vec<u8>)> = plaintext();
    pg.push(("all".into(), plaintext().into_iter().flat_map(|(_, b)| b).collect()));
    write("postgres", &pg);

    let tail = hellos[0].1.clone();
    let proxy: Vec<(String, Vec<u8>)> = proxy_headers()
        .into_iter()
        .flat_map(|(name, header)| {
            let with_tail = [&header[..], &tail].concat();
            [
                (format!("{name}-m5"), [&[5][..], &with_tail].concat()),
                (format!("{name}-m1"), [&[1][..], &with_tail].concat()),
                (format!("{name}-m131"), [&[0x83][..], &header].concat()),
            ]
        })
        .collect();
    write("proxy_protocol", &proxy);

    write("config", &values_files());
}

fn write(target: &str, seeds: &[(String, Vec<u8>)]) {
    let dir = Path::new("seeds").join(target);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create seed dir");
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).expect("write seed");
    }
    println!("{target}: {} seeds", seeds.len());
}

// === hellos ===

fn hellos() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let v12_only = &[&rustls::version::TLS12];
    let v13 = &[&rustls::version::TLS13, &rustls::version::TLS12];
    out.push(("rustls".into(), rustls_hello(v13, &[], Some("db.example.com"))));
    out.push((
        "rustls-alpn-pg".into(),
        rustls_hello(v13, &[b"postgresql"], Some("nautobot-db.lab.example.com")),
    ));
    out.push((
        "rustls-alpn-h2".into(),
        rustls_hello(v13, &[b"h2", b"http/1.1"], Some("WWW.Example.COM")),
    ));
    out.push((
        "rustls-tls12".into(),
        rustls_hello(v12_only, &[], Some("redis.example.com")),
    ));
    out.push(("rustls-nosni".into(), rustls_hello(v13, &[], None)));
    let pq = post_quantum(&out[1].1);
    out.push(("rustls-pq".into(), pq));
    let captured = Path::new("seeds/captured");
    if let Ok(entries) = fs::read_dir(captured) {
        let mut names: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        names.sort();
        for path in names {
            let bytes = fs::read(&path).expect("read captured hello");
            if !bytes.is_empty() {
                let name = path.file_stem().expect("file name").to_string_lossy().into_owned();
                out.push((name, bytes));
            }
        }
    }
    out
}

/// The first flight of an in-memory rustls client: one ClientHello record.
fn rustls_hello(versions: &[&'static rustls::SupportedProtocolVersion], alpn: &[&[u8]], sni: Option<&str>) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = sni.is_some();
    let name = ServerName::try_from(sni.unwrap_or("192.0.2.1").to_string()).expect("server name");
    let mut conn = ClientConnection::new(Arc::new(config), name).expect("client connection");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write to a Vec");
    }
    out
}

/// Add an X25519MLKEM768 (0x11ec) key share of 1216 bytes and the group to
/// `supported_groups`, as Chrome, Firefox and OpenSSL 3.5 send: ~1.8 KB.
fn post_quantum(record: &[u8]) -> Vec<u8> {
    let hs = &record[5..];
    let body = &hs[4..];
    let mut at = 2 + 32;
    at += 1 + usize::from(body[at]);
    at += 2 + usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
    at += 1 + usize::from(body[at]);
    let head = &body[..at];
    let mut exts = &body[at + 2..];
    let mut out_exts = Vec::new();
    while exts.len() >= 4 {
        let kind = u16::from_be_bytes([exts[0], exts[1]]);
        let len = usize::from(u16::from_be_bytes([exts[2], exts[3]]));
        let mut data = exts[4..4 + len].to_vec();
        exts = &exts[4 + len..];
        match kind {
            10 => {
                // supported_groups: u16 list length, then groups.
                let mut groups = vec![0x11, 0xec];
                groups.extend_from_slice(&data[2..]);
                data = [&(groups.len() as u16).to_be_bytes()[..], &groups].concat();
            }
            51 => {
                // key_share: u16 list length, then (group, u16 len, key) entries.
                let mut shares = vec![0x11, 0xec];
                shares.extend_from_slice(&1216u16.to_be_bytes());
                shares.extend((0..1216u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
                shares.extend_from_slice(&data[2..]);
                data = [&(shares.len() as u16).to_be_bytes()[..], &shares].concat();
            }
            _ => {}
        }
        out_exts.extend_from_slice(&kind.to_be_bytes());
        out_exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out_exts.extend_from_slice(&data);
    }
    let mut body = head.to_vec();
    body.extend_from_slice(&(out_exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&out_exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    rerecord(
        &[&[0x16, 3, 1][..], &(hs.len() as u16).to_be_bytes(), &hs].concat(),
        usize::MAX,
    )
}

/// The handshake bytes of `records` re-split into records of at most `size` bytes.
fn rerecord(records: &[u8], size: usize) -> Vec<u8> {
    let mut hs = Vec::new();
    let mut rest = records;
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        hs.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
    let mut out = Vec::new();
    for part in hs.chunks(size.min(16_384)) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

// === plaintext first bytes ===

/// PostgreSQL negotiation and plaintext messages, Redis and HTTP plaintext, SSLv2.
fn plaintext() -> Vec<(String, Vec<u8>)> {
    let startup = |minor: u8| {
        let params = b"user\0app\0database\0app\0application_name\0psql\0\0";
        let len = (8 + params.len()) as u32;
        [&len.to_be_bytes()[..], &[0, 3, 0, minor], params].concat()
    };
    let mut cancel30 = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    cancel30.extend_from_slice(&[0, 0, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef]);
    // Protocol 3.2: the secret key may be up to 256 bytes; libpq 18 sends 32.
    let mut cancel32 = vec![0, 0, 0, 44, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0x30, 0x39];
    cancel32.extend(0..32u8);
    // SSLv2-compatible CLIENT-HELLO (RFC 6101 appendix E.2 / RFC 5246 E.2):
    // 2-byte header with the high bit set, msg type 1, version 3.1.
    let mut v2 = vec![0x01, 0x03, 0x01, 0, 9, 0, 0, 0, 16];
    v2.extend_from_slice(&[0x00, 0x00, 0x2f, 0x00, 0x00, 0x35, 0x00, 0x00, 0xff]);
    v2.extend(0x10..0x20u8);
    let v2 = [&[0x80 | (v2.len() >> 8) as u8, v2.len() as u8][..], &v2].concat();
    vec![
        ("pg-sslrequest".into(), SSL_REQUEST.to_vec()),
        ("pg-gssenc".into(), GSSENC_REQUEST.to_vec()),
        ("pg-startup30".into(), startup(0)),
        ("pg-startup32".into(), startup(2)),
        ("pg-cancel30".into(), cancel30),
        ("pg-cancel32".into(), cancel32),
        ("pg-gssenc-startup".into(), [&GSSENC_REQUEST[..], &startup(0)].concat()),
        (
            "pg-three-requests".into(),
            [GSSENC_REQUEST, GSSENC_REQUEST, SSL_REQUEST].concat(),
        ),
        ("pg-sslrequest-then-plain".into(), [&SSL_REQUEST[..], b"hello"].concat()),
        ("redis-ping".into(), b"*1\r\n$4\r\nPING\r\n".to_vec()),
        ("http-get".into(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("sslv2-hello".into(), v2),
        (
            "hello-16mb-claim".into(),
            vec![0x16, 3, 1, 0x40, 0, 1, 0xff, 0xff, 0xff],
        ),
    ]
}

// === PROXY protocol ===

fn proxy_headers() -> Vec<(String, Vec<u8>)> {
    const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    let v2 =
        |cmd: u8, fam: u8, payload: &[u8]| [SIG, &[cmd, fam], &(payload.len() as u16).to_be_bytes(), payload].concat();
    let inet = [192, 0, 2, 1, 198, 51, 100, 7, 0xd4, 0x31, 0x01, 0xbb];
    let mut inet6 = Vec::new();
    inet6.extend_from_slice(&"2001:db8::1".parse::<std::net::Ipv6Addr>().expect("v6").octets());
    inet6.extend_from_slice(&"2001:db8::2".parse::<std::net::Ipv6Addr>().expect("v6").octets());
    inet6.extend_from_slice(&[0xd4, 0x31, 0x15, 0x38]);
    // AWS NLB's VPC endpoint id TLV (type 0xEA), as it sends it.
    let tlv = [&[0xea, 0, 23, 0x01][..], b"vpce-08d2bf15fac5001c9"].concat();
    vec![
        (
            "v1-tcp4".into(),
            b"PROXY TCP4 192.0.2.1 198.51.100.7 54321 443\r\n".to_vec(),
        ),
        (
            "v1-tcp6".into(),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 54321 5432\r\n".to_vec(),
        ),
        ("v1-unknown".into(), b"PROXY UNKNOWN\r\n".to_vec()),
        (
            "v1-unknown-long".into(),
            b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n".to_vec(),
        ),
        ("v2-tcp4".into(), v2(0x21, 0x11, &inet)),
        ("v2-tcp4-tlv".into(), v2(0x21, 0x11, &[&inet[..], &tlv].concat())),
        ("v2-tcp6".into(), v2(0x21, 0x21, &inet6)),
        ("v2-local".into(), v2(0x20, 0x00, &[])),
        ("v2-unspec".into(), v2(0x21, 0x00, &[])),
        ("v2-unix".into(), v2(0x21, 0x31, &[0u8; 216])),
        ("v2-udp".into(), v2(0x21, 0x12, &inet)),
    ]
}

// === values files ===

fn values_files() -> Vec<(String, Vec<u8>)> {
    let example = fs::read("../config/values.example.yaml").unwrap_or_default();
    let files: Vec<(&str, &str)> = vec![
        ("minimal", "routes:\n  tls:\n    - {fqdn: db.example.com, service: {name: db, port: 5432}}\n"),
        (
            "full",
            "gateways:\n  external:\n    name: gw\n    namespace: envoy-gateway\n    className: eg\n    port: 8443\n    serviceAnnotations: {a: b}\n  internal: {name: gi, namespace: envoy-gateway, className: eg}\nroutes:\n  http:\n    - fqdn: web.example.com\n      service: {name: web, port: 80, backendType: http}\n      timeouts: {request: 10s}\n      alsoInternal: true\n  tls:\n    - fqdn: '*.lab.example.com'\n      name: lab\n      namespace: apps\n      gatewayPort: 5432\n      from: Selector\n      selector: {team: db}\n      service: {name: pg, port: 5432}\n      clientTrafficPolicy:\n        name: ctp\n        tcpKeepalive: {idleTime: 120s, interval: 30s, probes: 3}\n    - fqdn: db.lab.example.com\n      gatewayPort: 5432\n      service: {name: pg-rw, port: 5432}\n",
        ),
        ("unknown-key", "routes:\n  tls:\n    - fqdn: db.example.com\n      servce: {name: db, port: 5432}\n"),
        ("quoted-port", "routes:\n  tls:\n    - {fqdn: db.example.com, service: {name: db, port: \"5432\"}}\n"),
        ("duplicate-sni", "routes:\n  tls:\n    - {fqdn: a.example.com, service: {name: a, port: 1}}\n    - {fqdn: a.example.com, service: {name: b, port: 1}}\n"),
        ("bad-fqdn", "routes:\n  tls:\n    - {fqdn: 'DB..Example.com.', service: {name: a, port: 1}}\n    - {fqdn: '10.0.0.1', service: {name: b, port: 70000}}\n"),
        ("anchors", "base: &b {name: db, port: 5432}\nroutes:\n  tls:\n    - {fqdn: db.example.com, service: *b}\n"),
        ("empty", ""),
        ("tabs-and-junk", "routes:\n\ttls: [\n"),
    ];
    let mut out: Vec<(String, Vec<u8>)> = files
        .into_iter()
        .map(|(n, t)| (n.to_string(), t.as_bytes().to_vec()))
        .collect();
    if !example.is_empty() {
        out.push(("example".into(), example));
    }
    out
}
