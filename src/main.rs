//! The `sni-router` binary: parse the command line, set up logging, run the
//! subcommand, and map failure to an exit code (2: bad config, 1: other).

use std::process::ExitCode;

use clap::Parser;
use sni_router::cli::{Cli, Command, LogFormat, RunArgs};
use sni_router::{config, demo, router::Router};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sni-router: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Demo(args) => match demo::run(&args).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e @ demo::DemoError::Config(_)) => {
                    eprint!("sni-router demo: {e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("sni-router demo: {e}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

async fn run(args: RunArgs) -> ExitCode {
    let config = match config::load_file(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprint!("sni-router: {e}");
            return ExitCode::from(2);
        }
    };
    for warning in &config.warnings {
        tracing::warn!("{}", warning.display(&config.source));
    }
    if config.routes.is_empty() {
        tracing::warn!(config = %config.source.display(), "routes.tls is empty: nothing to listen on");
    }
    let router = match Router::start(&config, args.serve.options(args.bind)).await {
        Ok(router) => router,
        Err(e) => {
            eprintln!("sni-router: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(config = %config.source.display(), routes = config.routes.len(), "serving");
    wait_for_stop_signal().await;
    tracing::info!(timeout = ?args.drain_timeout, "draining: no new connections, waiting for open ones");
    let drained = tokio::select! {
        drained = router.shutdown(args.drain_timeout) => drained,
        () = wait_for_stop_signal() => {
            tracing::warn!("second signal: exiting now");
            false
        }
    };
    if !drained {
        tracing::warn!("drain timeout reached or interrupted; closing remaining connections");
    }
    ExitCode::SUCCESS
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

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}
