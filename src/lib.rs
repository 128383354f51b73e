//! sni-router: a TLS passthrough SNI router driven by an envoy-configs values file.
#![deny(unsafe_code)]

pub mod pki;
