//! Fatal TLS alerts the router sends before closing, so clients print a reason.

/// TLS alert descriptions the router uses (RFC 8446 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    /// 40: the backend side could not complete the handshake path.
    HandshakeFailure,
    /// 50: the ClientHello could not be parsed or was too large.
    DecodeError,
    /// 80: the router could not reach a backend.
    InternalError,
    /// 112 (RFC 6066): no route for the SNI, or no SNI at all.
    UnrecognizedName,
}

impl Alert {
    /// The alert's code.
    pub fn code(self) -> u8 {
        match self {
            Alert::HandshakeFailure => 40,
            Alert::DecodeError => 50,
            Alert::InternalError => 80,
            Alert::UnrecognizedName => 112,
        }
    }

    /// The alert's RFC name, as clients print it.
    pub fn name(self) -> &'static str {
        match self {
            Alert::HandshakeFailure => "handshake_failure",
            Alert::DecodeError => "decode_error",
            Alert::InternalError => "internal_error",
            Alert::UnrecognizedName => "unrecognized_name",
        }
    }

    /// A plaintext alert record: level fatal. The record version is TLS 1.2's,
    /// the legacy value every TLS 1.2 and 1.3 client accepts before keys exist.
    pub fn record(self) -> [u8; 7] {
        [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, self.code()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_alert_record() {
        assert_eq!(Alert::UnrecognizedName.record(), [0x15, 3, 3, 0, 2, 2, 112]);
        assert_eq!(Alert::DecodeError.record()[6], 50);
    }
}
