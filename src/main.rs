//! The `sni-router` binary: parse the command line, set up logging, run the
//! subcommand, and map failure to an exit code (2: bad config, 1: other).

use std::process::ExitCode;

use clap::Parser;
use sni_router::cli::{Cli, Command, LogFormat};
use sni_router::{demo, lifecycle};
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
            Command::Run(args) => match lifecycle::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e @ lifecycle::RunError::Config(_)) => {
                    eprint!("sni-router: {e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("sni-router: {e}");
                    ExitCode::FAILURE
                }
            },
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
