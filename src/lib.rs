//! sni-router: a TLS passthrough SNI router driven by an envoy-configs values file.
//!
//! Data flows one way through the modules:
//!
//! ```text
//! cli ─▶ config::load ─▶ Config ─▶ routes::RouteTable (swapped whole on reload)
//! listener ─accept─▶ pending::admit ─▶ session::run(conn, table snapshot, &Limits)
//!   sniff ─▶ Sniffed ─▶ lookup ─▶ Target ─▶ upstream::connect ─▶ forward ─▶ Outcome
//! ```
//!
//! One connection:
//!
//! ```text
//! accept ─▶ sniff first bytes ─┬─ TLS record (0x16 0x03 ..) ─▶ read ClientHello ─▶ SNI ─▶ route
//!                              ├─ PG SSLRequest ─▶ reply 'S' ─▶ read ClientHello ─▶ SNI ─▶ route
//!                              ├─ PG GSSENCRequest ─▶ reply 'N' ─▶ sniff again
//!                              ├─ PG StartupMessage (plaintext) ─▶ PG ErrorResponse, close
//!                              ├─ PG CancelRequest (plaintext) ─▶ the port's only backend, or drop
//!                              ├─ RESP command (plaintext) ─▶ -ERR, close
//!                              └─ anything else ─▶ close (reason not_tls)
//! route ─▶ connect backend (timeout, next endpoint on failure)
//!       ─▶ [SSLRequest path: send SSLRequest, require exactly 'S']
//!       ─▶ write the buffered ClientHello bytes ─▶ splice both ways until both sides closed
//! ```
#![deny(unsafe_code)]

pub mod access;
pub mod admin;
pub mod busypoll;
pub mod certs;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod forward;
pub mod lifecycle;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod pending;
pub mod pki;
pub mod probe;
pub mod proxy_protocol;
pub mod render;
pub mod router;
pub mod routes;
pub mod session;
pub mod sniff;
pub mod sockbuf;
pub mod upstream;
