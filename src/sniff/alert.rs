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

/// The RFC name of an alert a client received (`unrecognized_name`), as
/// OpenSSL and most clients print it.
pub fn rfc_name(alert: rustls::AlertDescription) -> String {
    // rustls spells RFC 6066's unrecognized_name the British way.
    let debug = format!("{alert:?}").replace("Unrecognised", "Unrecognized");
    let mut out = String::new();
    let mut previous_lower = false;
    for c in debug.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push('_');
        }
        previous_lower = c.is_ascii_lowercase();
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_alert_record() {
        assert_eq!(Alert::UnrecognizedName.record(), [0x15, 3, 3, 0, 2, 2, 112]);
        assert_eq!(Alert::DecodeError.record()[6], 50);
    }

    #[test]
    fn names_as_clients_print_them() {
        assert_eq!(
            rfc_name(rustls::AlertDescription::UnrecognisedName),
            "unrecognized_name"
        );
        assert_eq!(
            rfc_name(rustls::AlertDescription::CertificateRequired),
            "certificate_required"
        );
        assert_eq!(rfc_name(rustls::AlertDescription::UnknownCA), "unknown_ca");
    }
}
