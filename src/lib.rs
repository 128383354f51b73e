//! sni-router: a TLS passthrough SNI router driven by an envoy-configs values file.
#![deny(unsafe_code)]

pub mod config;
pub mod pki;
pub mod routes;
pub mod sniff;
