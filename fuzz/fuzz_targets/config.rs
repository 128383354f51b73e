//! The values-file loader (`config::load`) on arbitrary text.
//!
//! Checks: `load` returns, never panics; a refusal names at least one error,
//! and every position it gives lies inside the text; an accepted file's
//! routes have patterns that print and parse back to themselves, and the
//! route table built from them finds each route by its own name; and when
//! the YAML fast path (events straight to a tree) takes the text, its tree
//! equals serde-saphyr's, positions included.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sni_router::config::{self, Severity, SniPattern};
use sni_router::routes::{Backends, RouteTable};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // YAML breaks lines at LF, CR LF and a lone CR alike.
    sni_router::config::yaml::check_fast_path(text);
    let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count() as u32;
    match config::load(text, Path::new("fuzz.yaml")) {
        Err(e) => {
            assert!(
                e.problems.iter().any(|p| p.severity == Severity::Error),
                "a refusal without an error: {e}"
            );
            for p in &e.problems {
                assert!(p.at.line <= lines + 1, "line {} of a {lines}-line text: {e}", p.at.line);
            }
        }
        Ok(config) => {
            let table = RouteTable::new(&config, &Backends::default());
            for route in &config.routes {
                let printed = route.sni.to_string();
                assert_eq!(SniPattern::parse(&printed).as_ref(), Ok(&route.sni), "{printed}");
                let probe = match &route.sni {
                    SniPattern::Exact(name) => name.clone(),
                    SniPattern::Wildcard(suffix) => format!("x.{suffix}"),
                };
                let found = table
                    .lookup(route.gateway_port, &probe)
                    .unwrap_or_else(|| panic!("{probe} finds no route on {}", route.gateway_port));
                assert!(found.route.sni.matches(&probe), "{probe} found {}", found.route.sni);
                if let SniPattern::Exact(_) = route.sni {
                    assert_eq!(found.route, *route);
                }
            }
        }
    }
});
