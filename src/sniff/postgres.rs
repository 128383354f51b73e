//! PostgreSQL's pre-TLS messages: SSLRequest, GSSENCRequest, CancelRequest and
//! StartupMessage (protocol 3.0 and 3.2), and the ErrorResponse the router
//! sends to a plaintext client.
//!
//! Every one of them starts with a 4-byte length and a 4-byte code, so the
//! first byte is 0x00 for any sane length, never a TLS record's 0x16.

/// `SSLRequest`: length 8, code 80877103.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// The server accepts the SSLRequest: TLS starts now.
pub const ACCEPT_TLS: u8 = b'S';
/// The server declines GSS encryption.
pub const DECLINE: u8 = b'N';
/// Largest StartupMessage the server reads (`MAX_STARTUP_PACKET_LENGTH`).
const MAX_STARTUP: usize = 10_000;
/// CancelRequest: 16 bytes in 3.0; 3.2 allows a secret key of up to 256 bytes.
const MAX_CANCEL: usize = 12 + 256;

/// A PostgreSQL message at the start of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgMessage {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// A query-cancel request of `len` bytes.
    CancelRequest {
        /// Total length on the wire.
        len: usize,
    },
    /// A plaintext session start.
    Startup {
        /// Protocol major version (3).
        major: u16,
        /// Protocol minor version (0 or 2).
        minor: u16,
        /// Total length on the wire.
        len: usize,
    },
}

/// Classify the first 8 bytes; `None` if they are no PostgreSQL message.
pub fn classify(head: &[u8; 8]) -> Option<PgMessage> {
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    match code {
        SSL_REQUEST_CODE if len == 8 => Some(PgMessage::SslRequest),
        GSSENC_REQUEST_CODE if len == 8 => Some(PgMessage::GssEncRequest),
        CANCEL_REQUEST_CODE if (16..=MAX_CANCEL).contains(&len) => Some(PgMessage::CancelRequest { len }),
        _ if code >> 16 == 3 && (8..=MAX_STARTUP).contains(&len) => Some(PgMessage::Startup {
            major: 3,
            minor: (code & 0xffff) as u16,
            len,
        }),
        _ => None,
    }
}

/// An `ErrorResponse` (severity FATAL) with SQLSTATE `code`, `message` and a `hint`.
pub fn error_response(code: &str, message: &str, hint: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
        (b'H', hint),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&fields);
    out
}

/// SQLSTATE 28000, `invalid_authorization_specification`, as the server
/// itself uses when pg_hba has only `hostssl` rules.
pub const SQLSTATE_INVALID_AUTHORIZATION: &str = "28000";

/// The refusal a plaintext PostgreSQL client gets.
pub fn plaintext_refusal() -> Vec<u8> {
    error_response(
        SQLSTATE_INVALID_AUTHORIZATION,
        "this gateway accepts only TLS connections: connect with sslmode=require or stronger \
         (sslmode=verify-ca or verify-full to check the server)",
        "sni-router routes PostgreSQL by the TLS server name (SNI); a plaintext connection carries none",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_negotiation_messages() {
        assert_eq!(classify(&SSL_REQUEST), Some(PgMessage::SslRequest));
        assert_eq!(
            classify(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]),
            Some(PgMessage::GssEncRequest)
        );
        assert_eq!(
            classify(&[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e]),
            Some(PgMessage::CancelRequest { len: 16 })
        );
        assert_eq!(
            classify(&[0, 0, 0, 42, 0x04, 0xd2, 0x16, 0x2e]),
            Some(PgMessage::CancelRequest { len: 42 })
        );
        assert_eq!(
            classify(&[0, 0, 0, 40, 0, 3, 0, 0]),
            Some(PgMessage::Startup {
                major: 3,
                minor: 0,
                len: 40
            })
        );
        assert_eq!(
            classify(&[0, 0, 0, 40, 0, 3, 0, 2]),
            Some(PgMessage::Startup {
                major: 3,
                minor: 2,
                len: 40
            })
        );
        // Wrong lengths and unknown codes are not PostgreSQL.
        assert_eq!(classify(&[0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f]), None);
        assert_eq!(classify(&[0, 0, 0, 8, 0, 2, 0, 0]), None);
        assert_eq!(classify(&[0, 1, 0, 0, 0, 3, 0, 0]), None);
    }

    #[test]
    fn error_response_wire_format() {
        let e = error_response("28000", "m", "h");
        assert_eq!(e[0], b'E');
        let len = u32::from_be_bytes([e[1], e[2], e[3], e[4]]) as usize;
        assert_eq!(len + 1, e.len());
        assert_eq!(&e[5..], b"SFATAL\0VFATAL\0C28000\0Mm\0Hh\0\0");
    }
}
