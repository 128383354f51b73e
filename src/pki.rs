//! Throwaway certificates for `demo`, the probe and the tests.
//!
//! Shaped like the deployment this router fronts: a private CA
//! (`CN=understack-mtls-ca`) issuing ECDSA P-256 server certificates whose SANs
//! are the route host names, and client certificates (`CN=app`, `clientAuth`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Common name of the private CA, as in the site-worker deployment.
pub const CA_COMMON_NAME: &str = "understack-mtls-ca";

/// Certificate generation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters (e.g. an invalid DNS name).
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// Writing PEM files failed.
    #[error("writing {path}: {source}")]
    Io {
        /// File being written.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// A private certificate authority that can issue server and client leaves.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// One issued certificate with its private key.
#[derive(Clone)]
pub struct Leaf {
    /// PEM of the certificate alone.
    pub cert_pem: String,
    /// PKCS#8 PEM of the private key.
    pub key_pem: String,
    /// DER of the certificate.
    pub cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

// === impl Ca ===

impl Ca {
    /// A new CA named `CN=understack-mtls-ca`, valid from yesterday for ten years.
    pub fn new() -> Result<Self, PkiError> {
        Self::with_name(CA_COMMON_NAME)
    }

    /// A new CA with the given common name.
    pub fn with_name(common_name: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, -1, 3650);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// PEM of the CA certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// DER of the CA certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A server certificate for `names` (DNS SANs; the first is also the CN).
    pub fn server(&self, names: &[&str]) -> Result<Leaf, PkiError> {
        self.leaf(
            names,
            names.first().copied().unwrap_or("server"),
            ExtendedKeyUsagePurpose::ServerAuth,
            -1,
            825,
        )
    }

    /// A client certificate with `CN=common_name` and the `clientAuth` usage.
    pub fn client(&self, common_name: &str) -> Result<Leaf, PkiError> {
        self.leaf(&[], common_name, ExtendedKeyUsagePurpose::ClientAuth, -1, 825)
    }

    /// A leaf with full control over its validity window, in days from now.
    pub fn leaf(
        &self,
        names: &[&str],
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
        not_before_days: i64,
        not_after_days: i64,
    ) -> Result<Leaf, PkiError> {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, not_before_days, not_after_days);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        })
    }
}

// === impl Leaf ===

impl Leaf {
    /// The private key as rustls takes it.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Write `<stem>.crt` and `<stem>.key` (mode 0600, as libpq insists) under `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), PkiError> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&cert, &self.cert_pem, 0o644)?;
        write_file(&key, &self.key_pem, 0o600)?;
        Ok((cert, key))
    }
}

/// A rustls server config presenting `leaf`; with `client_ca` set, client
/// certificates signed by it are required (mutual TLS).
pub fn server_config(
    leaf: &Leaf,
    client_ca: Option<&Ca>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert_der().clone())?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(vec![leaf.cert_der.clone()], leaf.key_der())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A rustls client config trusting `ca`, presenting `client` when given.
pub fn client_config(
    ca: &Ca,
    client: Option<&Leaf>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone())?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => builder.with_client_auth_cert(vec![leaf.cert_der.clone()], leaf.key_der())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn set_validity(params: &mut CertificateParams, not_before_days: i64, not_after_days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(not_before_days);
    params.not_after = now + time::Duration::days(not_after_days);
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(path, text).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_server_and_client_leaves_that_rustls_accepts() {
        let ca = Ca::new().unwrap();
        let server = ca.server(&["db.lab.example.com"]).unwrap();
        let client = ca.client("app").unwrap();
        server_config(&server, Some(&ca), &[]).unwrap();
        client_config(&ca, Some(&client), &[b"postgresql"]).unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(client.key_pem.contains("PRIVATE KEY"));
    }
}
