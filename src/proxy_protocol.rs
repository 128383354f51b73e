//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, v1 text and v2 binary):
//! reading the header a load balancer puts in front of a client's bytes, and
//! writing a v2 header in front of ours to a backend.
//!
//! Reading consumes exactly the header and nothing after it, so the caller
//! sniffs the ClientHello from the same stream afterwards with no replay
//! buffer. That costs a v1 line one read per byte past its first 15 (at most
//! 92, once per connection); a v2 header takes three exact reads. The parser
//! is hand-written rather than built on the `ppp` crate: with exact reads the
//! framing is ours anyway and what remains is a few fixed-offset fields, while
//! `ppp` would add `thiserror` 1 beside our 2, accepts datagram v2 headers and
//! any length up to 64 KiB, and its encoder turns mixed address families into
//! AF_UNSPEC.
//!
//! This module owns the wire format only; whether a listener expects a header,
//! and what to do with the addresses, is the caller's.

use std::borrow::Cow;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// What a PROXY header said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Which version of the protocol carried it.
    pub version: ProxyVersion,
    /// `(source, destination)` of the client's original connection; `None`
    /// when the sender had none to give (v1 `UNKNOWN`, v2 `LOCAL`, AF_UNSPEC,
    /// AF_UNIX), in which case the spec says to use the real peer addresses.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

/// The two versions of the PROXY protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text form: `PROXY TCP4 1.2.3.4 5.6.7.8 1234 443\r\n`.
    V1,
    /// The binary form, starting with the 12-byte signature.
    V2,
}

/// Why no PROXY header could be read.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The connection failed or closed before the header was complete
    /// (`UnexpectedEof`: the peer closed, as TCP health checks do).
    #[error("reading PROXY header: {0}")]
    Io(#[from] io::Error),
    /// The header was not complete within the allowed time.
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    /// The first bytes match neither the v1 nor the v2 signature: the peer
    /// does not speak the PROXY protocol (or the listener should not expect it).
    #[error("connection does not start with a PROXY protocol header")]
    NotProxy,
    /// The header starts with a signature but breaks the spec or our limits.
    #[error("malformed PROXY header: {0}")]
    Malformed(Cow<'static, str>),
}

impl ProxyError {
    /// A short fixed label for metrics and log fields.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::Io(_) => "proxy_io",
            ProxyError::Timeout(_) => "proxy_timeout",
            ProxyError::NotProxy => "not_proxy",
            ProxyError::Malformed(_) => "proxy_malformed",
        }
    }
}

/// Read a PROXY v1 or v2 header from the start of `stream`, within `max_wait`.
///
/// Exactly the header's bytes are consumed: the next read on `stream` returns
/// the client's first byte. On any error the bytes read so far are lost, which
/// is fine because the spec forbids guessing: a listener that expects a header
/// must close a connection that does not carry a valid one.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S, max_wait: Duration) -> Result<ProxyHeader, ProxyError> {
    match tokio::time::timeout(max_wait, read_header_inner(stream)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyError::Timeout(max_wait)),
    }
}

/// Encode a v2 header with the PROXY command for a TCP connection from
/// `source` to `destination`.
///
/// Both addresses go out as IPv4 when both are IPv4, otherwise as IPv6, an
/// IPv4 address becoming IPv4-mapped (`::ffff:a.b.c.d`), because one header
/// carries a single address family. Flow info and scope ids are not carried.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(V2_FIXED_LEN + V2_INET6_LEN);
    out.extend_from_slice(V2_SIGNATURE);
    out.push(V2_VERSION | CMD_PROXY);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.push(FAM_TCP4);
            out.extend_from_slice(&(V2_INET_LEN as u16).to_be_bytes());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            out.push(FAM_TCP6);
            out.extend_from_slice(&(V2_INET6_LEN as u16).to_be_bytes());
            out.extend_from_slice(&as_v6(src).octets());
            out.extend_from_slice(&as_v6(dst).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

/// The whole read, without the deadline.
async fn read_header_inner<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let first = stream.read_u8().await?;
    match first {
        b'P' => read_v1(stream).await,
        b'\r' => read_v2(stream).await,
        _ => Err(ProxyError::NotProxy),
    }
}

// === v1 ===

/// Read the rest of a v1 line (its `P` already read) up to and including CRLF.
async fn read_v1<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let mut line = Vec::with_capacity(V1_MAX_LEN);
    line.push(b'P');
    // The shortest valid line, `PROXY UNKNOWN\r\n`, is 15 bytes, so these
    // cannot run past a valid header.
    line.resize(V1_MIN_LEN, 0);
    stream.read_exact(&mut line[1..]).await?;
    if !line.starts_with(V1_SIGNATURE) {
        return Err(ProxyError::NotProxy);
    }
    // A line ending inside these bytes is shorter than any valid one, and
    // the loop below must not read on past its LF.
    if line[..V1_MIN_LEN - 1].contains(&b'\n') {
        return Err(malformed("v1 line is shorter than `PROXY UNKNOWN\\r\\n`"));
    }
    // One byte at a time from here: the line's end is only known once seen.
    while !line.ends_with(b"\n") {
        if line.len() == V1_MAX_LEN {
            return Err(malformed("v1 line has no CRLF within 107 bytes"));
        }
        line.push(stream.read_u8().await?);
    }
    parse_v1(&line)
}

/// Parse a complete v1 line, CRLF included.
fn parse_v1(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let body = line
        .strip_suffix(b"\r\n")
        .ok_or_else(|| malformed("v1 line ends in a bare LF, not CRLF"))?;
    let body = body.strip_prefix(V1_SIGNATURE).ok_or(ProxyError::NotProxy)?;
    // The spec allows printable US-ASCII only; this also rules out a stray CR.
    if !body.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(malformed("v1 line has a control or non-ASCII byte"));
    }
    // Infallible: every byte was just checked to be ASCII.
    let body = std::str::from_utf8(body).map_err(|_| malformed("v1 line is not ASCII"))?;
    let (protocol, rest) = body.split_once(' ').unwrap_or((body, ""));
    let addresses = match protocol {
        // "the receiver must ignore anything presented before the CRLF".
        "UNKNOWN" => None,
        "TCP4" => Some(v1_addresses(rest, |s| s.parse::<Ipv4Addr>().ok().map(IpAddr::V4))?),
        "TCP6" => Some(v1_addresses(rest, |s| s.parse::<Ipv6Addr>().ok().map(IpAddr::V6))?),
        _ => {
            return Err(malformed(format!(
                "v1 protocol {protocol:?} is not TCP4, TCP6 or UNKNOWN"
            )))
        }
    };
    Ok(ProxyHeader {
        version: ProxyVersion::V1,
        addresses,
    })
}

/// Parse `SRC DST SPORT DPORT`, fields separated by exactly one space.
fn v1_addresses(rest: &str, ip: impl Fn(&str) -> Option<IpAddr>) -> Result<(SocketAddr, SocketAddr), ProxyError> {
    let fields: Vec<&str> = rest.split(' ').collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(malformed(
            "v1 line needs exactly: source, destination, source port, destination port",
        ));
    };
    let src = ip(src).ok_or_else(|| malformed(format!("v1 source address {src:?} is not valid for the protocol")))?;
    let dst =
        ip(dst).ok_or_else(|| malformed(format!("v1 destination address {dst:?} is not valid for the protocol")))?;
    let sport = v1_port(sport)?;
    let dport = v1_port(dport)?;
    Ok((SocketAddr::new(src, sport), SocketAddr::new(dst, dport)))
}

/// A decimal port, 0..=65535, without sign or leading zero (as the `ppp`
/// crate also requires), so one port has one spelling.
fn v1_port(field: &str) -> Result<u16, ProxyError> {
    let canonical =
        !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit()) && (field == "0" || !field.starts_with('0'));
    match field.parse::<u16>() {
        Ok(port) if canonical => Ok(port),
        _ => Err(malformed(format!(
            "v1 port {field:?} is not a decimal number 0..=65535"
        ))),
    }
}

// === v2 ===

/// Read the rest of a v2 header (its first byte already read).
async fn read_v2<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let mut fixed = [0u8; V2_FIXED_LEN];
    fixed[0] = b'\r';
    // Every v2 header has these 16 bytes; a v1 line cannot start with CR.
    stream.read_exact(&mut fixed[1..]).await?;
    if !fixed.starts_with(V2_SIGNATURE) {
        return Err(ProxyError::NotProxy);
    }
    let version_command = fixed[12];
    let family = fixed[13];
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));

    if version_command & 0xf0 != V2_VERSION {
        return Err(malformed(format!("v2 version {} is not 2", version_command >> 4)));
    }
    let command = version_command & 0x0f;
    // Check everything the fixed part says before reading the rest, so a bad
    // header costs no further reads.
    let address_len = match command {
        // LOCAL: "the receiver must ... discard the protocol block including
        // the family", so the family byte is not checked.
        CMD_LOCAL => None,
        CMD_PROXY => v2_address_len(family)?,
        _ => return Err(malformed(format!("v2 command {command:#x} is neither LOCAL nor PROXY"))),
    };
    if len > V2_MAX_PAYLOAD {
        return Err(malformed(format!(
            "v2 length {len} exceeds our limit of {V2_MAX_PAYLOAD} bytes"
        )));
    }
    if let Some(needed) = address_len {
        if len < needed {
            return Err(malformed(format!(
                "v2 length {len} is too short for the {needed} address bytes of family {family:#04x}"
            )));
        }
    }

    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;

    let addresses = match (command, family) {
        (CMD_PROXY, FAM_TCP4) => Some(v2_inet(&payload)),
        (CMD_PROXY, FAM_TCP6) => Some(v2_inet6(&payload)),
        _ => None,
    };
    if let Some(needed) = address_len {
        check_tlvs(&payload[needed..])?;
    }
    Ok(ProxyHeader {
        version: ProxyVersion::V2,
        addresses,
    })
}

/// How many address bytes a PROXY-command family byte announces; `None` when
/// it carries no addresses we can use.
fn v2_address_len(family: u8) -> Result<Option<usize>, ProxyError> {
    match family {
        FAM_TCP4 => Ok(Some(V2_INET_LEN)),
        FAM_TCP6 => Ok(Some(V2_INET6_LEN)),
        // AF_UNSPEC: "the receiver ... must use the real connection endpoints".
        FAM_UNSPEC => Ok(None),
        // A unix socket peer has no IP address to report; the block is read
        // and skipped.
        FAM_UNIX_STREAM => Ok(Some(V2_UNIX_LEN)),
        // We only ever accept TCP, so a header describing a datagram flow
        // cannot be about this connection.
        0x12 | 0x22 | 0x32 => Err(malformed(format!(
            "v2 family {family:#04x} is a datagram transport, not TCP"
        ))),
        // "Other values are unspecified and ... must be rejected as invalid".
        _ => Err(malformed(format!(
            "v2 family/protocol {family:#04x} is not defined by the spec"
        ))),
    }
}

/// Source and destination from a TCP-over-IPv4 address block (length checked).
fn v2_inet(payload: &[u8]) -> (SocketAddr, SocketAddr) {
    let ip = |at: usize| {
        IpAddr::V4(Ipv4Addr::new(
            payload[at],
            payload[at + 1],
            payload[at + 2],
            payload[at + 3],
        ))
    };
    let port = |at: usize| u16::from_be_bytes([payload[at], payload[at + 1]]);
    (SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10)))
}

/// Source and destination from a TCP-over-IPv6 address block (length checked).
fn v2_inet6(payload: &[u8]) -> (SocketAddr, SocketAddr) {
    let ip = |at: usize| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&payload[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    let port = |at: usize| u16::from_be_bytes([payload[at], payload[at + 1]]);
    (SocketAddr::new(ip(0), port(32)), SocketAddr::new(ip(16), port(34)))
}

/// Walk the TLVs after the addresses without keeping them. Each must fit in
/// the announced length: one that overruns it means the sender frames the
/// header differently from us, so what follows may not be the client's bytes.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyError> {
    while !tlvs.is_empty() {
        let [kind, hi, lo, rest @ ..] = tlvs else {
            return Err(malformed(format!(
                "v2 has {} stray bytes after its last TLV",
                tlvs.len()
            )));
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        tlvs = rest
            .get(len..)
            .ok_or_else(|| malformed(format!("v2 TLV {kind:#04x} of {len} bytes overruns the header")))?;
    }
    Ok(())
}

/// `ip` as IPv6, IPv4 becoming IPv4-mapped.
fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// A `Malformed` error.
fn malformed(reason: impl Into<Cow<'static, str>>) -> ProxyError {
    ProxyError::Malformed(reason.into())
}

// === consts ===

/// `PROXY` and the space after it.
const V1_SIGNATURE: &[u8] = b"PROXY ";
/// The shortest valid v1 line: `PROXY UNKNOWN\r\n`.
const V1_MIN_LEN: usize = 15;
/// The spec's bound on a v1 line, CRLF included (its worst case: `UNKNOWN`
/// followed by the longest TCP6 fields).
const V1_MAX_LEN: usize = 107;

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/protocol, length.
const V2_FIXED_LEN: usize = 16;
/// Bound on the v2 bytes after the fixed part. The spec allows 65535, but
/// load balancers send the addresses plus a few short TLVs (AWS NLB's VPC
/// endpoint id, GCP's PSC connection id), far below this; nginx caps the
/// whole header at 4096. A bound keeps an unauthenticated peer from making
/// us buffer 64 KiB before the first byte of TLS.
const V2_MAX_PAYLOAD: usize = 1536;
/// Version 2 in the high nibble of byte 12.
const V2_VERSION: u8 = 0x20;
/// LOCAL command: a health check or the balancer's own connection.
const CMD_LOCAL: u8 = 0x0;
/// PROXY command: relayed on behalf of a client.
const CMD_PROXY: u8 = 0x1;
/// AF_UNSPEC, UNSPEC.
const FAM_UNSPEC: u8 = 0x00;
/// TCP over IPv4.
const FAM_TCP4: u8 = 0x11;
/// TCP over IPv6.
const FAM_TCP6: u8 = 0x21;
/// UNIX stream.
const FAM_UNIX_STREAM: u8 = 0x31;
/// Two IPv4 addresses and two ports.
const V2_INET_LEN: usize = 12;
/// Two IPv6 addresses and two ports.
const V2_INET6_LEN: usize = 36;
/// Two 108-byte unix socket paths.
const V2_UNIX_LEN: usize = 216;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV6;
    use tokio::io::{AsyncWriteExt, DuplexStream};

    const WAIT: Duration = Duration::from_secs(5);
    /// Chunk sizes the writer uses, so headers arrive split at every kind of boundary.
    const CHUNKS: [usize; 5] = [1, 2, 3, 7, 64];

    /// A stream that yields `bytes` in `chunk`-sized writes, then EOF.
    fn feed(bytes: Vec<u8>, chunk: usize) -> DuplexStream {
        let (mut client, server) = tokio::io::duplex(16);
        tokio::spawn(async move {
            for piece in bytes.chunks(chunk) {
                // The reader may have given up already; that is the test's business.
                if client.write_all(piece).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
        server
    }

    /// Read a header from `header` + "hello" in every chunk size, check the
    /// rest of the stream is exactly "hello", and return the header.
    async fn read_ok(header: &[u8]) -> ProxyHeader {
        let mut seen = None;
        for chunk in CHUNKS {
            let mut bytes = header.to_vec();
            bytes.extend_from_slice(b"hello");
            let mut stream = feed(bytes, chunk);
            let parsed = read_header(&mut stream, WAIT)
                .await
                .unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"hello", "chunk {chunk}: bytes after the header");
            if let Some(previous) = seen {
                assert_eq!(parsed, previous, "chunk {chunk}");
            }
            seen = Some(parsed);
        }
        seen.unwrap()
    }

    /// Read from exactly `bytes` (then EOF) and return the error.
    async fn read_err(bytes: &[u8]) -> ProxyError {
        for chunk in CHUNKS {
            let mut stream = feed(bytes.to_vec(), chunk);
            if let Ok(header) = read_header(&mut stream, WAIT).await {
                panic!("chunk {chunk}: {bytes:?} parsed as {header:?}");
            }
        }
        read_header(&mut feed(bytes.to_vec(), 64), WAIT).await.unwrap_err()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A v2 header: fixed part with the given bytes, then `payload`.
    fn v2(version_command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        v2_with_len(version_command, family, payload.len() as u16, payload)
    }

    fn v2_with_len(version_command: u8, family: u8, len: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(version_command);
        out.push(family);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// 192.0.2.1:56324 -> 198.51.100.7:443 as a v2 IPv4 address block.
    const INET_BLOCK: [u8; 12] = [192, 0, 2, 1, 198, 51, 100, 7, 0xdc, 0x04, 0x01, 0xbb];

    #[tokio::test]
    async fn v1_tcp4() {
        let header = read_ok(b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n").await;
        assert_eq!(header.version, ProxyVersion::V1);
        assert_eq!(header.addresses, Some((sa("192.0.2.1:56324"), sa("198.51.100.7:443"))));
    }

    #[tokio::test]
    async fn v1_tcp6() {
        let header = read_ok(b"PROXY TCP6 2001:db8::1 2001:db8::2:1 65535 0\r\n").await;
        assert_eq!(
            header.addresses,
            Some((sa("[2001:db8::1]:65535"), sa("[2001:db8::2:1]:0")))
        );
    }

    #[tokio::test]
    async fn v1_longest_lines() {
        let ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        // The spec's worst case, UNKNOWN with the longest TCP6 fields, is exactly 107 bytes.
        let line = format!("PROXY UNKNOWN {ip} {ip} 65535 65535\r\n");
        assert_eq!(line.len(), V1_MAX_LEN);
        assert_eq!(read_ok(line.as_bytes()).await.addresses, None);
        let line = format!("PROXY TCP6 {ip} {ip} 65535 65535\r\n");
        assert_eq!(line.len(), 104);
        assert!(read_ok(line.as_bytes()).await.addresses.is_some());
    }

    #[tokio::test]
    async fn v1_unknown() {
        let header = read_ok(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(
            header,
            ProxyHeader {
                version: ProxyVersion::V1,
                addresses: None
            }
        );
        // Anything after UNKNOWN is ignored.
        let header = read_ok(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").await;
        assert_eq!(header.addresses, None);
    }

    #[tokio::test]
    async fn v2_proxy_ipv4() {
        let header = read_ok(&v2(0x21, 0x11, &INET_BLOCK)).await;
        assert_eq!(header.version, ProxyVersion::V2);
        assert_eq!(header.addresses, Some((sa("192.0.2.1:56324"), sa("198.51.100.7:443"))));
    }

    #[tokio::test]
    async fn v2_proxy_ipv6() {
        let mut block = Vec::new();
        block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&[0x30, 0x39, 0x01, 0xbb]);
        let header = read_ok(&v2(0x21, 0x21, &block)).await;
        assert_eq!(
            header.addresses,
            Some((sa("[2001:db8::1]:12345"), sa("[2001:db8::2]:443")))
        );
    }

    #[tokio::test]
    async fn v2_local_unspec_and_unix_carry_no_addresses() {
        // LOCAL with no block, as health checks send it.
        assert_eq!(read_ok(&v2(0x20, 0x00, &[])).await.addresses, None);
        // LOCAL must be accepted whatever block follows, and the block skipped.
        assert_eq!(read_ok(&v2(0x20, 0x11, &INET_BLOCK)).await.addresses, None);
        assert_eq!(read_ok(&v2(0x20, 0x99, &[1, 2, 3])).await.addresses, None);
        // PROXY over AF_UNSPEC, with a TLV.
        assert_eq!(read_ok(&v2(0x21, 0x00, &[0x04, 0, 1, 0])).await.addresses, None);
        // PROXY from a unix socket: skipped.
        assert_eq!(read_ok(&v2(0x21, 0x31, &[b'/'; 216])).await.addresses, None);
    }

    #[tokio::test]
    async fn v2_tlvs_are_read_and_skipped() {
        let mut payload = INET_BLOCK.to_vec();
        // PP2_TYPE_AUTHORITY "db.example.com"
        payload.extend_from_slice(&[0x02, 0, 14]);
        payload.extend_from_slice(b"db.example.com");
        // AWS's 0xEA TLV with a VPC endpoint id.
        payload.extend_from_slice(&[0xea, 0, 23, 0x01]);
        payload.extend_from_slice(b"vpce-0123456789abcdef0");
        // An empty PP2_TYPE_NOOP.
        payload.extend_from_slice(&[0x04, 0, 0]);
        let header = read_ok(&v2(0x21, 0x11, &payload)).await;
        assert_eq!(header.addresses, Some((sa("192.0.2.1:56324"), sa("198.51.100.7:443"))));
    }

    #[tokio::test]
    async fn not_proxy() {
        let cases: &[&[u8]] = &[
            // A TLS ClientHello record header.
            &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01],
            // A PostgreSQL SSLRequest.
            &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f],
            b"POST / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"PROXY\r\nTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"\r\n\r\n\0\r\nQUIT!\x21\x11\x00\x0c",
        ];
        for case in cases {
            let err = read_err(case).await;
            assert!(matches!(err, ProxyError::NotProxy), "{case:?}: {err}");
        }
    }

    #[tokio::test]
    async fn malformed_v1() {
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(100));
        let cases: &[(&[u8], &str)] = &[
            (long.as_bytes(), "no CRLF within 107"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bare LF"),
            (b"PROXY TCP4\r\n1234567890", "shorter"),
            (b"PROXY X\nPROXY UNKNOWN\r\n", "shorter"),
            (b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "control"),
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "exactly"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "exactly"),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "exactly"),
            (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "source address"),
            (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "destination address"),
            (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "source address"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n", "port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 x\r\n", "port"),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 \u{e9}\r\n".as_bytes(), "non-ASCII"),
        ];
        for (case, expect) in cases {
            match read_err(case).await {
                ProxyError::Malformed(msg) => assert!(msg.contains(expect), "{case:?}: {msg}"),
                other => panic!("{case:?}: {other}"),
            }
        }
    }

    #[tokio::test]
    async fn malformed_v2() {
        let mut tlv_overrun = INET_BLOCK.to_vec();
        tlv_overrun.extend_from_slice(&[0x02, 0, 5, b'a', b'b']);
        let mut tlv_stray = INET_BLOCK.to_vec();
        tlv_stray.extend_from_slice(&[0x04, 0]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (v2(0x11, 0x11, &INET_BLOCK), "version 1"),
            (v2(0x31, 0x11, &INET_BLOCK), "version 3"),
            (v2(0x22, 0x11, &INET_BLOCK), "command 0x2"),
            (v2(0x2f, 0x11, &INET_BLOCK), "command 0xf"),
            (v2(0x21, 0x11, &INET_BLOCK[..8]), "too short"),
            (v2(0x21, 0x21, &[0; 12]), "too short"),
            (v2(0x21, 0x31, &[0; 108]), "too short"),
            (v2(0x21, 0x12, &INET_BLOCK), "datagram"),
            (v2(0x21, 0x22, &[0; 36]), "datagram"),
            (v2(0x21, 0x10, &INET_BLOCK), "not defined"),
            (v2(0x21, 0x41, &INET_BLOCK), "not defined"),
            (v2_with_len(0x21, 0x11, 1537, &[]), "exceeds"),
            (v2_with_len(0x21, 0x11, 0xffff, &[]), "exceeds"),
            (v2(0x21, 0x11, &tlv_overrun), "overruns"),
            (v2(0x21, 0x11, &tlv_stray), "stray"),
        ];
        for (case, expect) in &cases {
            match read_err(case).await {
                ProxyError::Malformed(msg) => assert!(msg.contains(expect), "{case:?}: {msg}"),
                other => panic!("{case:?}: {other}"),
            }
        }
    }

    #[tokio::test]
    async fn v2_payload_at_the_limit_is_accepted() {
        let mut payload = INET_BLOCK.to_vec();
        payload.extend_from_slice(&[0x04, 0x05, 0xf1]);
        payload.resize(V2_MAX_PAYLOAD, 0);
        assert!(read_ok(&v2(0x21, 0x11, &payload)).await.addresses.is_some());
    }

    #[tokio::test]
    async fn every_truncation_is_an_eof_error() {
        let headers = [
            b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2(0x21, 0x11, &INET_BLOCK),
            encode_v2(sa("[2001:db8::1]:1"), sa("[2001:db8::2]:2")),
        ];
        for header in &headers {
            for cut in 0..header.len() {
                match read_header(&mut feed(header[..cut].to_vec(), 3), WAIT).await {
                    Err(ProxyError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
                    other => panic!("{:?} cut at {cut}: {other:?}", String::from_utf8_lossy(header)),
                }
            }
        }
    }

    #[tokio::test]
    async fn silence_times_out() {
        let wait = Duration::from_millis(200);
        for partial in [&b""[..], b"PROXY TCP4 1.2", &v2(0x21, 0x11, &INET_BLOCK)[..20]] {
            // Keep the writing half open so the reader sees no EOF.
            let (mut client, mut server) = tokio::io::duplex(64);
            client.write_all(partial).await.unwrap();
            let started = tokio::time::Instant::now();
            let err = read_header(&mut server, wait).await.unwrap_err();
            assert!(started.elapsed() >= wait, "gave up after {:?}", started.elapsed());
            assert!(matches!(err, ProxyError::Timeout(d) if d == wait), "{err}");
            assert_eq!(err.reason(), "proxy_timeout");
            drop(client);
        }
    }

    #[test]
    fn encode_v2_matches_the_spec_layout() {
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
        expected.extend_from_slice(&INET_BLOCK);
        assert_eq!(encode_v2(sa("192.0.2.1:56324"), sa("198.51.100.7:443")), expected);
        assert_eq!(
            encode_v2(sa("[::1]:1"), sa("[::2]:2")).len(),
            V2_FIXED_LEN + V2_INET6_LEN
        );
    }

    #[tokio::test]
    async fn encode_v2_round_trips() {
        let cases = [
            (sa("192.0.2.1:56324"), sa("198.51.100.7:443")),
            (sa("0.0.0.0:0"), sa("255.255.255.255:65535")),
            (sa("[2001:db8::1]:12345"), sa("[2001:db8::2]:5432")),
        ];
        for (source, destination) in cases {
            let header = read_ok(&encode_v2(source, destination)).await;
            assert_eq!(header.version, ProxyVersion::V2);
            assert_eq!(header.addresses, Some((source, destination)));
        }
    }

    #[tokio::test]
    async fn encode_v2_maps_mixed_families_to_ipv6() {
        let source = sa("192.0.2.1:56324");
        let destination = sa("[2001:db8::2]:443");
        let header = read_ok(&encode_v2(source, destination)).await;
        let mapped = SocketAddr::V6(SocketAddrV6::new(
            Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped(),
            56324,
            0,
            0,
        ));
        assert_eq!(header.addresses, Some((mapped, destination)));
        let header = read_ok(&encode_v2(destination, source)).await;
        assert_eq!(header.addresses, Some((destination, mapped)));
    }
}
