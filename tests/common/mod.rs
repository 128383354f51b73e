//! Fixtures shared by the integration tests: certificates, a router started on
//! port 0, TLS backends, and the real PostgreSQL and Redis servers.
#![allow(dead_code)]

pub mod services;
