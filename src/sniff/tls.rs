//! ClientHello reassembly and parsing.
//!
//! The first handshake message may span several TLS records and arrive in any
//! number of TCP segments. `HelloReader` is fed the growing buffer and walks
//! each byte once, so a client sending one byte per segment costs no more than
//! one sending it all at once. Parsing proper is `tls-parser`'s.

use tls_parser::{
    parse_tls_extension_alpn_content, parse_tls_extension_sni_content, parse_tls_extension_unknown,
    parse_tls_message_handshake, SNIType, TlsExtension, TlsMessage, TlsMessageHandshake,
};

/// TLS record content type `handshake`.
pub const CONTENT_HANDSHAKE: u8 = 0x16;
/// Handshake message type `client_hello`.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// RFC 8446 §5.1: a plaintext record carries at most 2^14 bytes.
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
const RECORD_HEADER: usize = 5;
/// Extension types the router reads (RFC 6066, RFC 7301).
const EXTENSION_SERVER_NAME: u16 = 0;
const EXTENSION_ALPN: u16 = 16;

/// What the router reads from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// The `host_name` of the server_name extension, as sent.
    pub sni: Option<String>,
    /// ALPN protocol names offered, for logs (e.g. `postgresql`).
    pub alpn: Vec<String>,
}

/// Why a ClientHello was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The hello (with its record headers) exceeds the size bound.
    #[error("ClientHello exceeds {limit} bytes")]
    TooLarge {
        /// The bound in bytes.
        limit: usize,
    },
    /// The bytes are not a well-formed ClientHello.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

/// Incremental reader of the first handshake message.
#[derive(Debug)]
pub struct HelloReader {
    limit: usize,
    /// Offset in the caller's buffer of the next record header.
    next_record: usize,
    /// Handshake payload gathered from the records so far.
    handshake: Vec<u8>,
}

impl HelloReader {
    /// A reader that refuses hellos larger than `limit` bytes on the wire.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            next_record: 0,
            handshake: Vec::new(),
        }
    }

    /// Continue with `buf`, everything received so far (previous bytes
    /// unchanged). `Ok(None)`: need more bytes. On success, also returns how
    /// many bytes of `buf` the records holding the hello span.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Option<(ClientHello, usize)>, HelloError> {
        loop {
            let Some(header) = buf.get(self.next_record..self.next_record + RECORD_HEADER) else {
                return self.need_more(buf);
            };
            if header[0] != CONTENT_HANDSHAKE {
                return Err(HelloError::Malformed(
                    "a record before the ClientHello is not a handshake record",
                ));
            }
            if header[1] != 3 {
                return Err(HelloError::Malformed("record version is not TLS"));
            }
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if len == 0 || len > MAX_RECORD_PAYLOAD {
                return Err(HelloError::Malformed("record length out of range"));
            }
            let end = self.next_record + RECORD_HEADER + len;
            if end > self.limit {
                return Err(HelloError::TooLarge { limit: self.limit });
            }
            let Some(payload) = buf.get(self.next_record + RECORD_HEADER..end) else {
                // Judge the handshake header as soon as it is in, so an
                // oversized or foreign message is refused before its body.
                // Only its first 4 bytes: copying the whole handshake here
                // made a hello dribbled byte by byte over several records
                // cost quadratic time (0.8 s of CPU for 60 KB, release build).
                let partial = &buf[self.next_record + RECORD_HEADER..];
                let mut head = [0u8; 4];
                let have = self.handshake.len().min(4);
                head[..have].copy_from_slice(&self.handshake[..have]);
                let more = partial.len().min(4 - have);
                head[have..have + more].copy_from_slice(&partial[..more]);
                self.check_header(&head[..have + more])?;
                return self.need_more(buf);
            };
            self.next_record = end;
            // The common case, a hello in one record: parsed in place, no copy.
            if self.handshake.is_empty() {
                if let Some(body) = self.check_header(payload)? {
                    if let Some(message) = payload.get(..body + 4) {
                        return Ok(Some((parse(message)?, end)));
                    }
                }
            }
            self.handshake.extend_from_slice(payload);

            let Some(body) = self.check_header(&self.handshake)? else {
                continue;
            };
            if self.handshake.len() >= body + 4 {
                let hello = parse(&self.handshake[..body + 4])?;
                return Ok(Some((hello, self.next_record)));
            }
        }
    }

    /// Check a handshake header once its 4 bytes are known; the body length.
    fn check_header(&self, head: &[u8]) -> Result<Option<usize>, HelloError> {
        let [kind, a, b, c, ..] = *head else {
            return Ok(None);
        };
        if kind != HANDSHAKE_CLIENT_HELLO {
            return Err(HelloError::Malformed("first handshake message is not a ClientHello"));
        }
        let body = u32::from_be_bytes([0, a, b, c]) as usize;
        // Each record adds a 5-byte header on the wire; the hello cannot fit
        // under the bound if its body alone does not.
        if body + 4 > self.limit {
            return Err(HelloError::TooLarge { limit: self.limit });
        }
        Ok(Some(body))
    }

    fn need_more(&self, buf: &[u8]) -> Result<Option<(ClientHello, usize)>, HelloError> {
        if buf.len() >= self.limit {
            return Err(HelloError::TooLarge { limit: self.limit });
        }
        Ok(None)
    }
}

/// Parse one complete handshake message that must be a ClientHello.
fn parse(message: &[u8]) -> Result<ClientHello, HelloError> {
    let Ok((rest, msg)) = parse_tls_message_handshake(message) else {
        return Err(HelloError::Malformed("ClientHello fields do not parse"));
    };
    let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) = msg else {
        return Err(HelloError::Malformed("first handshake message is not a ClientHello"));
    };
    if !rest.is_empty() {
        return Err(HelloError::Malformed("trailing bytes after the ClientHello"));
    }
    let mut out = ClientHello::default();
    let Some(mut extensions) = hello.ext else {
        return Ok(out);
    };
    // Only server_name and ALPN are read; every other extension is checked
    // for framing only and left to the backend, as Envoy's TLS inspector
    // (BoringSSL's early callback) does. Parsing them all cost ~10
    // allocations per connection.
    let (mut seen_sni, mut seen_alpn) = (false, false);
    while !extensions.is_empty() {
        let Ok((rest, TlsExtension::Unknown(kind, data))) = parse_tls_extension_unknown(extensions) else {
            return Err(HelloError::Malformed("an extension does not parse"));
        };
        extensions = rest;
        match kind.0 {
            EXTENSION_SERVER_NAME => {
                // Two would leave the route ambiguous: which one the backend reads.
                if std::mem::replace(&mut seen_sni, true) {
                    return Err(HelloError::Malformed("server_name sent twice"));
                }
                let Ok((_, TlsExtension::SNI(names))) = parse_tls_extension_sni_content(data) else {
                    return Err(HelloError::Malformed("server_name does not parse"));
                };
                // RFC 6066 §3: at most one name of each type; host_name is type 0.
                let mut host_names = names.iter().filter(|(t, _)| *t == SNIType::HostName);
                let first = host_names.next();
                if host_names.next().is_some() {
                    return Err(HelloError::Malformed("server_name lists two host names"));
                }
                if let Some((_, name)) = first {
                    let name =
                        std::str::from_utf8(name).map_err(|_| HelloError::Malformed("server_name is not ASCII"))?;
                    if !name.is_ascii() {
                        return Err(HelloError::Malformed("server_name is not ASCII"));
                    }
                    out.sni = Some(name.to_string());
                }
            }
            EXTENSION_ALPN => {
                if std::mem::replace(&mut seen_alpn, true) {
                    return Err(HelloError::Malformed("ALPN sent twice"));
                }
                let Ok((_, TlsExtension::ALPN(protocols))) = parse_tls_extension_alpn_content(data) else {
                    return Err(HelloError::Malformed("ALPN does not parse"));
                };
                out.alpn = protocols
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ClientHello record built by hand: `sni`, `alpn`, and `padding` extra
    /// bytes in a padding extension (to reach post-quantum sizes).
    pub fn hello(sni: Option<&str>, alpn: &[&str], padding: usize) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let mut list = vec![0u8];
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name.as_bytes());
            push_ext(&mut ext, 0, &[&(list.len() as u16).to_be_bytes()[..], &list].concat());
        }
        if !alpn.is_empty() {
            let mut list = Vec::new();
            for p in alpn {
                list.push(p.len() as u8);
                list.extend_from_slice(p.as_bytes());
            }
            push_ext(&mut ext, 16, &[&(list.len() as u16).to_be_bytes()[..], &list].concat());
        }
        if padding > 0 {
            push_ext(&mut ext, 21, &vec![0u8; padding]);
        }
        with_extensions(&ext)
    }

    /// A ClientHello record whose extensions block is `ext`, as given.
    pub fn with_extensions(ext: &[u8]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7u8; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(ext);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        records(&hs, usize::MAX)
    }

    /// Wrap a handshake payload in records of at most `chunk` bytes.
    pub fn records(handshake: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in handshake.chunks(chunk.min(MAX_RECORD_PAYLOAD)) {
            out.extend_from_slice(&[0x16, 3, 1]);
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    fn push_ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }

    fn read_all(bytes: &[u8], limit: usize) -> Result<Option<(ClientHello, usize)>, HelloError> {
        HelloReader::new(limit).advance(bytes)
    }

    #[test]
    fn reads_sni_and_alpn() {
        let bytes = hello(Some("db.example.com"), &["postgresql"], 0);
        let (h, used) = read_all(&bytes, 65536).unwrap().unwrap();
        assert_eq!(h.sni.as_deref(), Some("db.example.com"));
        assert_eq!(h.alpn, vec!["postgresql"]);
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn every_prefix_needs_more_and_every_byte_fed_alone_works() {
        for bytes in [
            hello(Some("a.example.com"), &[], 0),
            records(&hello(Some("a.example.com"), &[], 1800)[5..], 700),
        ] {
            for n in 0..bytes.len() {
                assert_eq!(read_all(&bytes[..n], 65536), Ok(None), "prefix {n}");
            }
            let mut reader = HelloReader::new(65536);
            for n in 1..bytes.len() {
                assert_eq!(reader.advance(&bytes[..n]), Ok(None));
            }
            let (h, _) = reader.advance(&bytes).unwrap().unwrap();
            assert_eq!(h.sni.as_deref(), Some("a.example.com"));
        }
    }

    #[test]
    fn hello_split_across_records() {
        let one = hello(Some("split.example.com"), &["h2"], 1800);
        for chunk in [1, 3, 100, 1000] {
            let bytes = records(&one[5..], chunk);
            let (h, used) = read_all(&bytes, 65536).unwrap().unwrap();
            assert_eq!(h.sni.as_deref(), Some("split.example.com"), "chunk {chunk}");
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn large_hello_in_four_records_fed_a_byte_at_a_time() {
        // Regression (issue 8): each call on a partial record used to copy every
        // earlier record (quadratic: 0.8 s of CPU for this input in a release
        // build). Its cost is measured in benches/micro.rs; here, correctness.
        let bytes = hello(Some("a.example.com"), &[], 60_000);
        assert!(
            bytes.windows(3).filter(|w| *w == [0x16, 3, 1]).count() >= 4,
            "four records"
        );
        let mut reader = HelloReader::new(65536);
        for n in 1..bytes.len() {
            assert_eq!(reader.advance(&bytes[..n]), Ok(None));
        }
        let (h, used) = reader.advance(&bytes).unwrap().unwrap();
        assert_eq!((h.sni.as_deref(), used), (Some("a.example.com"), bytes.len()));
    }

    #[test]
    fn no_sni_is_not_an_error_here() {
        let (h, _) = read_all(&hello(None, &[], 0), 65536).unwrap().unwrap();
        assert_eq!(h.sni, None);
    }

    #[test]
    fn oversized_hello_is_refused_early() {
        let big = hello(Some("a.example.com"), &[], 70_000 - 100);
        // Refused from the handshake header, before the body arrives.
        assert_eq!(read_all(&big[..20], 65536), Err(HelloError::TooLarge { limit: 65536 }));
        assert_eq!(
            read_all(&hello(Some("a.example.com"), &[], 2000), 1024),
            Err(HelloError::TooLarge { limit: 1024 })
        );
    }

    #[test]
    fn malformed_inputs() {
        let good = hello(Some("a.example.com"), &[], 0);
        let mut not_hello = good.clone();
        not_hello[5] = 2; // ServerHello
        assert!(matches!(read_all(&not_hello, 65536), Err(HelloError::Malformed(_))));
        let mut bad_version = good.clone();
        bad_version[1] = 2;
        assert!(matches!(read_all(&bad_version, 65536), Err(HelloError::Malformed(_))));
        let mut alert_first = good.clone();
        alert_first[0] = 0x15;
        assert!(matches!(read_all(&alert_first, 65536), Err(HelloError::Malformed(_))));
        let mut bad_ext = good.clone();
        let n = bad_ext.len();
        bad_ext[n - 3] = 0xff; // SNI list length beyond the extension
        assert!(matches!(read_all(&bad_ext, 65536), Err(HelloError::Malformed(_))));
        let zero_len = [0x16, 3, 1, 0, 0];
        assert!(matches!(read_all(&zero_len, 65536), Err(HelloError::Malformed(_))));
    }

    fn sni_extension(name: &str) -> Vec<u8> {
        let mut list = vec![0u8];
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name.as_bytes());
        let mut ext = Vec::new();
        push_ext(&mut ext, 0, &[&(list.len() as u16).to_be_bytes()[..], &list].concat());
        ext
    }

    /// Two server_name extensions could route on one name while the backend
    /// reads the other: refused, as BoringSSL and OpenSSL refuse them.
    #[test]
    fn a_second_server_name_extension_is_refused() {
        let ext = [sni_extension("a.example.com"), sni_extension("b.example.com")].concat();
        assert_eq!(
            read_all(&with_extensions(&ext), 65536),
            Err(HelloError::Malformed("server_name sent twice"))
        );
    }

    /// Extensions the router does not read are checked for framing only: a
    /// supported_groups list whose inner length is wrong is the backend's
    /// to judge (Envoy's inspector passes it on too); a frame that runs
    /// past the block is not.
    #[test]
    fn other_extensions_are_checked_for_framing_only() {
        let mut ext = sni_extension("a.example.com");
        push_ext(&mut ext, 10, &[0xff, 0xff, 0, 29]);
        let (h, _) = read_all(&with_extensions(&ext), 65536).unwrap().unwrap();
        assert_eq!(h.sni.as_deref(), Some("a.example.com"));

        let mut truncated = sni_extension("a.example.com");
        truncated.extend_from_slice(&[0, 10, 0, 9, 0, 2]); // says 9 bytes, has 2
        assert_eq!(
            read_all(&with_extensions(&truncated), 65536),
            Err(HelloError::Malformed("an extension does not parse"))
        );
    }
}
