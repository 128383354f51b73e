//! `sni-router run`: load, serve, and react to the outside world.
//!
//! * SIGHUP, or a change of the config file's content (checked every
//!   `--watch-interval`; re-reading the path follows the `..data` symlink
//!   swap a Kubernetes ConfigMap mount does): validate, then swap the route
//!   table. A bad file keeps the old config, is logged with line and field,
//!   and counts as a failed reload.
//! * SIGTERM/SIGINT: `/ready` turns 503, listeners close, open connections
//!   get `--drain-timeout`, then exit 0. A second signal exits at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::cli::{AdminAddr, RunArgs};
use crate::config::{self, ConfigError};
use crate::listener::BindError;
use crate::router::Router;

/// How long a changed config file must stay unchanged before it is loaded.
const SETTLE: Duration = Duration::from_millis(100);

/// Why `run` stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The values file is invalid (exit code 2).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A gateway port could not be bound.
    #[error("{0}")]
    Bind(#[from] BindError),
    /// The admin address could not be bound.
    #[error("admin endpoint: cannot listen on {addr}: {source}")]
    Admin {
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Every connection costs two descriptors (plus pipes while data moves), and
/// the usual soft limit of 1024 would cap a gateway at ~500 connections:
/// raise the soft limit to the hard one, as most servers do.
pub fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
            return;
        };
        // An unlimited hard limit still stops at the kernel's nr_open (2^20 by default).
        let target = hard.min(1 << 20);
        if soft < target {
            match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
                Ok(()) => tracing::debug!(from = soft, to = target, "raised the open-file limit"),
                Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit"),
            }
        }
        if hard < 4096 {
            tracing::warn!(
                limit = hard,
                "open-file limit is low: about {} connections at most (raise it with ulimit -n or LimitNOFILE)",
                hard / 2
            );
        }
    }
}

/// How long connections cut at the drain timeout get to finish their
/// bookkeeping (each passes the client's end on to its backend and waits
/// for the backend's) before the process exits anyway.
const CUT_GRACE: Duration = Duration::from_secs(1);

/// Serve until a stop signal, then drain.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    // Installed first: until a handler exists, SIGHUP or SIGTERM would kill the process outright.
    let mut stop = StopSignals::new();
    #[cfg(unix)]
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    #[cfg(not(unix))]
    let hangup = None;
    // The bytes loaded now are the watcher's starting point, so a change that
    // lands while the router starts is still seen as a change.
    let initial = std::fs::read(&args.config).ok();
    let config = match initial.as_deref().map(std::str::from_utf8) {
        Some(Ok(text)) => config::load(text, &args.config)?,
        _ => config::load_file(&args.config)?,
    };
    for warning in &config.warnings {
        tracing::warn!("{}", warning.display(&config.source));
    }
    if config.routes.is_empty() {
        tracing::warn!(config = %config.source.display(), "routes.tls is empty: nothing to listen on yet");
    }
    raise_open_file_limit();
    let router = Router::start(&config, args.serve.options(args.bind)).await?;
    if let AdminAddr::At(addr) = args.admin {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Admin { addr, source })?;
        let local = listener.local_addr().unwrap_or(addr);
        tracing::info!(address = %local, "admin listening");
        tokio::spawn(crate::admin::serve(listener, router.clone()));
    }
    tracing::info!(config = %config.source.display(), routes = config.routes.len(), "serving");

    let reloads = tokio::spawn(reload_loop(
        router.clone(),
        args.config.clone(),
        initial,
        args.watch_interval,
        hangup,
    ));
    stop.recv().await;
    reloads.abort();
    tracing::info!(timeout = ?args.drain_timeout, open = router.open_connections(), "draining: no new connections");
    let drained = tokio::select! {
        drained = router.shutdown(args.drain_timeout) => drained,
        () = stop.recv() => {
            tracing::warn!("second signal: exiting now");
            return Ok(());
        }
    };
    if drained {
        tracing::info!("drained: every connection finished");
    } else {
        tracing::warn!(
            open = router.open_connections(),
            "drain timeout reached; closing the remaining connections"
        );
        if !router.cut(CUT_GRACE).await {
            // A backend that neither answers nor closes after the client's
            // end: those connections end with the process, unlogged.
            tracing::warn!(
                open = router.open_connections(),
                "connections still open {CUT_GRACE:?} after being closed; exiting"
            );
        }
    }
    Ok(())
}

/// Reload on SIGHUP and whenever the file's content changes.
async fn reload_loop(
    router: Arc<Router>,
    path: PathBuf,
    mut last: Option<Vec<u8>>,
    interval: Duration,
    mut hup: Option<Hangup>,
) {
    let mut tick = tokio::time::interval(if interval.is_zero() {
        Duration::from_secs(3600)
    } else {
        interval
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hangup = async {
            match hup.as_mut() {
                #[cfg(unix)]
                Some(signal) => signal.recv().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hangup => {
                tracing::info!("SIGHUP: reloading");
                last = std::fs::read(&path).ok();
                reload(&router, &path).await;
            }
            _ = tick.tick(), if !interval.is_zero() => {
                // During a ConfigMap update the path may briefly not exist; try again next tick.
                let Ok(now) = std::fs::read(&path) else { continue };
                if last.as_deref() != Some(now.as_slice()) {
                    // A file rewritten in place (truncate, then write) can be caught half
                    // written: act only on content that holds still for a moment.
                    tokio::time::sleep(SETTLE).await;
                    if std::fs::read(&path).ok().as_deref() != Some(now.as_slice()) {
                        continue;
                    }
                    tracing::info!(config = %path.display(), "config file changed: reloading");
                    last = Some(now);
                    reload(&router, &path).await;
                }
            }
        }
    }
}

/// Load and apply `path`; on any failure keep the running config.
pub async fn reload(router: &Router, path: &Path) -> bool {
    let reloads = &router.metrics().reloads;
    let config = match config::load_file(path) {
        Ok(config) => config,
        Err(e) => {
            for problem in &e.problems {
                tracing::error!("{}", problem.display(&e.source));
            }
            tracing::error!(config = %path.display(), "reload failed: keeping the previous config");
            reloads.with_label_values(&["failure"]).inc();
            return false;
        }
    };
    for warning in &config.warnings {
        tracing::warn!("{}", warning.display(&config.source));
    }
    match router.reload(&config).await {
        Ok(()) => {
            tracing::info!(config = %path.display(), routes = config.routes.len(), "config reloaded");
            reloads.with_label_values(&["success"]).inc();
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "reload failed: keeping the previous config");
            reloads.with_label_values(&["failure"]).inc();
            false
        }
    }
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

/// SIGTERM and SIGINT, listened for from the start.
struct StopSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            let term = async {
                match self.term.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match self.int.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term => {}
                _ = int => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
