//! Certificate diagnostics: the mistakes the mutual-TLS deployment keeps
//! running into, named in plain words instead of OpenSSL's.
//!
//! Used offline by `sni-router certs` and by `probe` to load `--ca`,
//! `--cert` and `--key` (PEM with `\r\n` line endings and several blocks per
//! file are accepted where that is safe, and reported).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::SectionKind;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Default warning window before expiry: the `renewBefore: 720h` of the site certificates.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// A PEM file as found on disk.
#[derive(Debug)]
pub struct PemFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Certificates, in file order.
    pub certs: Vec<CertificateDer<'static>>,
    /// Private keys, in file order.
    pub keys: Vec<PrivateKeyDer<'static>>,
    /// Windows line endings were found (and accepted).
    pub crlf: bool,
    /// Other PEM sections (public keys, CRLs, CSRs), by label.
    pub other: Vec<&'static str>,
}

/// A file could not be read or holds no PEM at all.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The PEM text is broken.
    #[error("{path}: not valid PEM: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's words.
        why: String,
    },
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// A check that passed, worth showing.
    Ok,
    /// Accepted, but worth fixing (expiring soon, odd PEM layout).
    Warning,
    /// This will make connections fail.
    Error,
}

/// One diagnostic, about one of the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Ok, warning or error.
    pub level: Level,
    /// Which input: `ca`, `cert` or `key`.
    pub about: &'static str,
    /// Short rule id, e.g. `ca-is-leaf`, `not-signed-by-ca`, `key-mismatch`.
    pub rule: &'static str,
    /// What was found and what to do, in plain words.
    pub message: String,
}

/// What `certs` checks, and against what.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The CA bundle clients use (`sslrootcert`, `--cacert`).
    pub ca: Option<&'a Path>,
    /// The client certificate.
    pub cert: Option<&'a Path>,
    /// The client certificate's private key.
    pub key: Option<&'a Path>,
    /// The PostgreSQL user the certificate must name (pg_hba `cert` maps CN to user).
    pub pg_user: Option<&'a str>,
    /// Warn when a certificate expires within this.
    pub renew_before: Duration,
}

/// Read a PEM file, accepting CRLF line endings and mixed sections.
pub fn read_pem(path: &Path) -> Result<PemFile, PemError> {
    let bytes = std::fs::read(path).map_err(|source| PemError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_pem(&bytes, path)
}

/// Parse PEM text; `path` is for messages.
pub fn parse_pem(bytes: &[u8], path: &Path) -> Result<PemFile, PemError> {
    let mut file = PemFile {
        path: path.to_path_buf(),
        certs: Vec::new(),
        keys: Vec::new(),
        crlf: bytes.windows(2).any(|w| w == b"\r\n"),
        other: Vec::new(),
    };
    let mut reader = std::io::BufReader::new(bytes);
    loop {
        match rustls::pki_types::pem::from_buf(&mut reader) {
            Ok(None) => break,
            Ok(Some((kind, der))) => match kind {
                SectionKind::Certificate => file.certs.push(CertificateDer::from(der)),
                SectionKind::PrivateKey => file.keys.push(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der))),
                SectionKind::EcPrivateKey => file.keys.push(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der))),
                SectionKind::RsaPrivateKey => file.keys.push(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der))),
                SectionKind::PublicKey => file.other.push("PUBLIC KEY"),
                SectionKind::Crl => file.other.push("X509 CRL"),
                SectionKind::Csr => file.other.push("CERTIFICATE REQUEST"),
                _ => file.other.push("unknown"),
            },
            Err(e) => {
                return Err(PemError::Invalid {
                    path: path.to_path_buf(),
                    why: e.to_string(),
                })
            }
        }
    }
    if file.certs.is_empty() && file.keys.is_empty() && file.other.is_empty() {
        return Err(PemError::Invalid {
            path: path.to_path_buf(),
            why: "no PEM section found".into(),
        });
    }
    Ok(file)
}

/// Run every check that the given inputs allow.
pub fn diagnose(inputs: &Inputs<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let ca = inputs.ca.and_then(|p| load(p, "ca", &mut out));
    let cert = inputs.cert.and_then(|p| load(p, "cert", &mut out));
    let key = inputs.key.and_then(|p| load(p, "key", &mut out));

    // A file that holds both halves (secrets providers store them so) serves for both.
    let cert_file = cert.as_ref().or(key.as_ref().filter(|k| !k.certs.is_empty()));
    let key_file = key.as_ref().or(cert.as_ref().filter(|c| !c.keys.is_empty()));

    let ca_cert = ca.as_ref().and_then(|f| check_ca(f, inputs.renew_before, &mut out));
    let leaf = cert_file.and_then(|f| f.certs.first().map(|der| (f, der)));
    if let Some((file, der)) = leaf {
        check_leaf(file, der, ca_cert.as_ref(), inputs, &mut out);
        if let Some(key) = key_file.and_then(|k| k.keys.first()) {
            check_key_pair(der, key, &mut out);
        } else if inputs.key.is_some() {
            out.push(finding(
                Level::Error,
                "key",
                "no-key",
                "the key file holds no private key",
            ));
        }
    } else if inputs.cert.is_some() {
        out.push(finding(
            Level::Error,
            "cert",
            "no-cert",
            "the certificate file holds no certificate",
        ));
    }
    out
}

/// Load the CA bundle for a rustls root store.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let file = read_pem(path).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in file.certs {
        roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in the CA file", path.display()));
    }
    Ok(roots)
}

/// Load a client identity: certificates from `cert` and the first key from
/// `key` (either file may hold both).
pub fn load_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let cert_file = read_pem(cert).map_err(|e| e.to_string())?;
    let key_file = read_pem(key).map_err(|e| e.to_string())?;
    let certs = if cert_file.certs.is_empty() {
        key_file.certs.clone()
    } else {
        cert_file.certs.clone()
    };
    let key = key_file
        .keys
        .into_iter()
        .chain(cert_file.keys)
        .next()
        .ok_or_else(|| format!("{}: no private key", key.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    Ok((certs, key))
}

/// Subject, issuer and validity of a certificate, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// e.g. `CN=app`.
    pub subject: String,
    /// e.g. `CN=understack-mtls-ca`.
    pub issuer: String,
    /// Whole days until `notAfter` (negative: expired).
    pub days_left: i64,
    /// `notAfter`, RFC 2822-ish as x509-parser prints it.
    pub not_after: String,
}

/// Summarise a DER certificate; `None` if it does not parse.
pub fn summary(der: &[u8]) -> Option<CertSummary> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(CertSummary {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        days_left: days_left(&cert),
        not_after: cert.validity().not_after.to_string(),
    })
}

fn load(path: &Path, about: &'static str, out: &mut Vec<Finding>) -> Option<PemFile> {
    match read_pem(path) {
        Ok(file) => {
            if file.crlf {
                out.push(finding(
                    Level::Warning,
                    about,
                    "crlf",
                    format!(
                        "{} has Windows (\\r\\n) line endings; accepted, but some tools refuse them",
                        path.display()
                    ),
                ));
            }
            let mut parts = Vec::new();
            if !file.certs.is_empty() {
                parts.push(format!("{} certificate(s)", file.certs.len()));
            }
            if !file.keys.is_empty() {
                parts.push(format!("{} private key(s)", file.keys.len()));
            }
            parts.extend(file.other.iter().map(|o| format!("a {o}")));
            let several = file.certs.len() + file.keys.len() + file.other.len() > 1;
            let mixed = !file.certs.is_empty() && !file.keys.is_empty();
            if several && (mixed || about != "ca") {
                out.push(finding(
                    Level::Warning,
                    about,
                    "several-blocks",
                    format!(
                        "{} holds {}; the first {} is used",
                        path.display(),
                        parts.join(" and "),
                        if about == "key" { "private key" } else { "certificate" }
                    ),
                ));
            }
            Some(file)
        }
        Err(e) => {
            out.push(finding(Level::Error, about, "unreadable", e.to_string()));
            None
        }
    }
}

/// The CA file must hold a CA: a leaf there is the deployment's classic mistake.
fn check_ca(file: &PemFile, renew_before: Duration, out: &mut Vec<Finding>) -> Option<Vec<u8>> {
    let Some(first) = file.certs.first() else {
        out.push(finding(
            Level::Error,
            "ca",
            "no-cert",
            format!("{} holds no certificate", file.path.display()),
        ));
        return None;
    };
    let Ok((_, cert)) = X509Certificate::from_der(first) else {
        out.push(finding(
            Level::Error,
            "ca",
            "unparsable",
            "the CA certificate does not parse as X.509",
        ));
        return None;
    };
    let subject = cert.subject().to_string();
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    if !is_ca {
        out.push(finding(
            Level::Error,
            "ca",
            "ca-is-leaf",
            format!(
                "the CA file holds a leaf certificate ({subject}, issued by {}), not a CA certificate \
                 (basicConstraints CA:FALSE or missing). Clients using it as sslrootcert/--cacert fail with \
                 \"certificate verify failed\" / \"self-signed certificate in certificate chain\". \
                 Use the issuing CA's certificate (ca.crt), not tls.crt",
                cert.issuer()
            ),
        ));
    } else {
        out.push(finding(Level::Ok, "ca", "ca", format!("CA certificate {subject}")));
    }
    check_validity("ca", &cert, renew_before, out);
    Some(first.to_vec())
}

fn check_leaf(file: &PemFile, der: &[u8], ca: Option<&Vec<u8>>, inputs: &Inputs<'_>, out: &mut Vec<Finding>) {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        out.push(finding(
            Level::Error,
            "cert",
            "unparsable",
            "the certificate does not parse as X.509",
        ));
        return;
    };
    let subject = cert.subject().to_string();
    out.push(finding(
        Level::Ok,
        "cert",
        "cert",
        format!("certificate {subject}, issued by {}", cert.issuer()),
    ));
    if let Some(ca_der) = ca {
        if let Ok((_, ca_cert)) = X509Certificate::from_der(ca_der) {
            let issuer_matches = cert.issuer().as_raw() == ca_cert.subject().as_raw();
            let signature_ok = cert.verify_signature(Some(ca_cert.public_key())).is_ok();
            if issuer_matches && signature_ok {
                out.push(finding(
                    Level::Ok,
                    "cert",
                    "signed-by-ca",
                    format!("signed by {}", ca_cert.subject()),
                ));
            } else {
                let why = if issuer_matches {
                    "its issuer name matches the CA, but the signature does not verify with the CA's key (a CA \
                     with the same name was re-created?)"
                        .to_string()
                } else {
                    format!(
                        "it was issued by {}, the CA file holds {}",
                        cert.issuer(),
                        ca_cert.subject()
                    )
                };
                out.push(finding(
                    Level::Error,
                    "cert",
                    "not-signed-by-ca",
                    format!(
                        "the certificate is not signed by the given CA: {why}. A server trusting that CA rejects it \
                         with \"tlsv1 alert unknown ca\""
                    ),
                ));
            }
        }
    }
    if let Some(user) = inputs.pg_user {
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or("");
        if cn == user {
            out.push(finding(
                Level::Ok,
                "cert",
                "cn-is-user",
                format!("CN={cn} matches the PostgreSQL user"),
            ));
        } else {
            out.push(finding(
                Level::Error,
                "cert",
                "cn-not-user",
                format!(
                    "the certificate's CN is {cn:?} but the PostgreSQL user is {user:?}: pg_hba `cert` maps the CN to \
                     the user, so the server answers \"certificate authentication failed for user {user:?}\""
                ),
            ));
        }
    }
    match cert.extended_key_usage() {
        Ok(Some(eku)) if !(eku.value.client_auth || eku.value.any) => out.push(finding(
            Level::Error,
            "cert",
            "no-client-auth",
            "the certificate's extended key usage lacks clientAuth: servers refuse it as a client certificate \
             (\"unsupported certificate purpose\"); issue it with usages [client auth]",
        )),
        _ => {}
    }
    check_validity("cert", &cert, inputs.renew_before, out);
    let _ = file;
}

fn check_key_pair(cert: &CertificateDer<'static>, key: &PrivateKeyDer<'static>, out: &mut Vec<Finding>) {
    let signing_key = match rustls::crypto::ring::sign::any_supported_type(key) {
        Ok(k) => k,
        Err(e) => {
            out.push(finding(
                Level::Error,
                "key",
                "unsupported-key",
                format!("the private key cannot be used: {e}"),
            ));
            return;
        }
    };
    let certified = rustls::sign::CertifiedKey::new(vec![cert.clone()], signing_key);
    match certified.keys_match() {
        Ok(()) => out.push(finding(
            Level::Ok,
            "key",
            "key-matches",
            "the private key matches the certificate",
        )),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => out.push(finding(
            Level::Error,
            "key",
            "key-mismatch",
            "the private key does not belong to the certificate (their public keys differ): the TLS handshake \
             fails with \"decrypt error\" or \"key values mismatch\"; use the tls.key issued with this tls.crt",
        )),
    }
}

fn check_validity(about: &'static str, cert: &X509Certificate<'_>, renew_before: Duration, out: &mut Vec<Finding>) {
    let days = days_left(cert);
    let not_after = cert.validity().not_after;
    if !cert.validity().is_valid() && days >= 0 {
        out.push(finding(
            Level::Error,
            about,
            "not-yet-valid",
            format!(
                "the certificate is not valid before {} (clock skew?)",
                cert.validity().not_before
            ),
        ));
    } else if days < 0 {
        out.push(finding(
            Level::Error,
            about,
            "expired",
            format!(
                "the certificate expired on {not_after} ({} days ago): \"certificate has expired\"",
                -days
            ),
        ));
    } else if Duration::from_secs(days as u64 * 86_400) < renew_before {
        out.push(finding(
            Level::Warning,
            about,
            "expiring",
            format!(
                "the certificate expires on {not_after}, in {days} days, within the renewal window of {} days",
                renew_before.as_secs() / 86_400
            ),
        ));
    }
}

fn days_left(cert: &X509Certificate<'_>) -> i64 {
    let not_after = cert.validity().not_after.timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    (not_after - now).div_euclid(86_400)
}

fn finding(level: Level, about: &'static str, rule: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        level,
        about,
        rule,
        message: message.into(),
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Error => "error",
        };
        write!(f, "{level:<7} {:<4} {:<16} {}", self.about, self.rule, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_and_concatenated_blocks_are_read() {
        let ca = crate::pki::Ca::new().unwrap();
        let leaf = ca.client("app").unwrap();
        let text = format!("{}{}", leaf.cert_pem, leaf.key_pem).replace('\n', "\r\n");
        let file = parse_pem(text.as_bytes(), Path::new("bundle.pem")).unwrap();
        assert!(file.crlf);
        assert_eq!(file.certs.len(), 1);
        assert_eq!(file.keys.len(), 1);
        assert!(parse_pem(b"not pem at all", Path::new("x")).is_err());
    }
}
