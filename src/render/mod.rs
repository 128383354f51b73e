//! `sni-router render`: what a values file becomes elsewhere, either the
//! Gateway API objects the `envoy-configs` chart renders (`gateway_api`), or
//! an Envoy bootstrap that serves the routes the way `run` does (`envoy`), or
//! the manifests that run the router itself in a cluster (`kubernetes`).
//!
//! `chart` is the chart's view of the file, shared with `check`; `emit`
//! writes the trees as YAML (with comments) or JSON.

pub mod chart;
pub mod emit;
pub mod envoy;
pub mod gateway_api;
pub mod kubernetes;

use std::collections::HashMap;
use std::io::Write;

use crate::cli::{AdminAddr, RenderArgs, RenderTarget};
use crate::config::{self, ConfigError};
use crate::routes::Backends;

/// Why `render` printed nothing.
#[derive(Debug, thiserror::Error)]
pub enum RenderFailure {
    /// The values file does not load (as `run` would refuse it).
    #[error("{0}")]
    Config(ConfigError),
    /// The chart cannot render this file.
    #[error("{0}")]
    Chart(gateway_api::RenderError),
    /// stdout could not be written.
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
}

/// Run `sni-router render`: the rendered text on stdout, notes on stderr.
pub fn run(args: &RenderArgs) -> Result<(), RenderFailure> {
    let config = config::load_file(&args.config).map_err(RenderFailure::Config)?;
    let source = args.config.display().to_string();
    let text = match args.to {
        RenderTarget::GatewayApi => {
            let options = gateway_api::Options {
                tlsroute_version: args.tlsroute_version,
                release: args.release.clone(),
                source,
            };
            gateway_api::render(&config.values, &options).map_err(RenderFailure::Chart)?
        }
        RenderTarget::Envoy => {
            let rendered = envoy::render(&config, &envoy_options(args, source));
            for note in &rendered.notes {
                eprintln!("sni-router render: note: {note}");
            }
            rendered.yaml
        }
        RenderTarget::Kubernetes => {
            // The ConfigMap carries the file as written, comments included.
            let text = std::fs::read_to_string(&args.config)?;
            let rendered = kubernetes::render(&config, &text, &kubernetes::options(args, source));
            for note in &rendered.notes {
                eprintln!("sni-router render: note: {note}");
            }
            rendered.yaml
        }
    };
    for warning in &config.warnings {
        eprintln!("sni-router render: {}", warning.display(&args.config));
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// The Envoy options from the same flags `run` takes.
pub fn envoy_options(args: &RenderArgs, source: String) -> envoy::Options {
    let mut overrides: HashMap<String, Vec<String>> = HashMap::new();
    for (service, endpoint) in &args.backend {
        overrides.entry(service.clone()).or_default().push(endpoint.clone());
    }
    envoy::Options {
        backends: Backends {
            cluster_domain: args.cluster_domain.clone(),
            overrides,
        },
        bind: args.bind,
        listen: args.listen.iter().copied().collect(),
        hello_timeout: args.hello_timeout,
        max_hello: args.max_hello_size,
        connect_timeout: args.connect_timeout,
        idle_timeout: args.idle_timeout,
        admin: match args.admin {
            AdminAddr::Off => None,
            AdminAddr::At(addr) => Some(addr),
        },
        source,
    }
}
