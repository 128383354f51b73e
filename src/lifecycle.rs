//! `sni-router run`: load, serve, and react to the outside world: SIGHUP or a
//! changed config file reloads, SIGTERM/SIGINT drains, a second signal exits.

use std::time::Duration;

use crate::cli::RunArgs;
use crate::config::{self, ConfigError};
use crate::listener::BindError;
use crate::router::Router;

/// Why `run` stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The values file is invalid (exit code 2).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A gateway port could not be bound.
    #[error("{0}")]
    Bind(#[from] BindError),
}

/// Serve until a stop signal, then drain.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let config = config::load_file(&args.config)?;
    for warning in &config.warnings {
        tracing::warn!("{}", warning.display(&config.source));
    }
    if config.routes.is_empty() {
        tracing::warn!(config = %config.source.display(), "routes.tls is empty: nothing to listen on");
    }
    let router = Router::start(&config, args.serve.options(args.bind)).await?;
    tracing::info!(config = %config.source.display(), routes = config.routes.len(), "serving");
    wait_for_stop_signal().await;
    drain(router, args.drain_timeout).await;
    Ok(())
}

async fn drain(router: Router, timeout: Duration) {
    tracing::info!(timeout = ?timeout, "draining: no new connections, waiting for open ones");
    let drained = tokio::select! {
        drained = router.shutdown(timeout) => drained,
        () = wait_for_stop_signal() => {
            tracing::warn!("second signal: exiting now");
            false
        }
    };
    if !drained {
        tracing::warn!("drain timeout reached or interrupted; closing remaining connections");
    }
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
