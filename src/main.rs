//! The `sni-router` binary: parse the command line, set up logging, run the
//! subcommand, and map failure to an exit code (2: bad config, 1: other).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sni_router::busypoll::BusyPoll;
use sni_router::cli::CertsArgs;
use sni_router::cli::{Cli, Command, LogFormat};
use sni_router::logging::LogOutput;
use sni_router::{certs, check, demo, lifecycle, probe, render};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = init_tracing(cli.log_format, cli.log_flush_interval);
    let busy_poll = match &cli.command {
        Command::Run(args) => BusyPoll::new(args.serve.busy_poll),
        Command::Demo(args) => BusyPoll::new(args.serve.busy_poll),
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(busy_poll) = &busy_poll {
        busy_poll.install(&mut builder);
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sni-router: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let exit = runtime.block_on(async {
        if let Some(busy_poll) = &busy_poll {
            busy_poll.start();
        }
        match cli.command {
            Command::Run(args) => match flushed(lifecycle::run(args).await, &log) {
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
            // check: 0 clean, 1 warnings only with --strict, 2 errors.
            Command::Check(args) => ExitCode::from(check::run(&args)),
            Command::Render(args) => match render::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e @ (render::RenderFailure::Config(_) | render::RenderFailure::Chart(_))) => {
                    eprintln!("sni-router render: {}", e.to_string().trim_end());
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("sni-router render: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Probe(args) => probe::command(&args).await,
            Command::Certs(args) => certs_command(&args),
            Command::Demo(args) => match flushed(demo::run(&args).await, &log) {
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
    });
    if let Some(log) = &log {
        log.close();
    }
    exit
}

/// `result`, once every log line gathered before it is on stderr (what is
/// printed about it comes after them).
fn flushed<T>(result: T, log: &Option<LogOutput>) -> T {
    if let Some(log) = log {
        log.flush();
    }
    result
}

/// `certs`: print every finding; exit 1 when any is an error.
fn certs_command(args: &CertsArgs) -> ExitCode {
    if args.ca.is_none() && args.cert.is_none() && args.key.is_none() {
        eprintln!("sni-router certs: give at least one of --ca, --cert, --key");
        return ExitCode::from(2);
    }
    let findings = certs::diagnose(&certs::Inputs {
        ca: args.ca.as_deref(),
        cert: args.cert.as_deref(),
        key: args.key.as_deref(),
        pg_user: Some(args.pg_user.as_str()).filter(|u| !u.is_empty()),
        renew_before: args.renew_before,
    });
    for finding in &findings {
        println!("{finding}");
    }
    let errors = findings.iter().filter(|f| f.level == certs::Level::Error).count();
    let warnings = findings.iter().filter(|f| f.level == certs::Level::Warning).count();
    println!("\n{errors} error(s), {warnings} warning(s)");
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Log to stderr, access-log lines in batches written at most
/// `flush_interval` late (`logging`); the returned output must be flushed
/// before the process exits. With no interval, or no flusher thread (none
/// could be started), every line is written at once.
fn init_tracing(format: LogFormat, flush_interval: Duration) -> Option<LogOutput> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log = if flush_interval.is_zero() {
        None
    } else {
        LogOutput::new(std::io::stderr(), flush_interval).ok()
    };
    let writer = match &log {
        Some(log) => BoxMakeWriter::new(log.clone()),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
    if let Some(log) = &log {
        // A panic's message goes straight to stderr: the lines logged before
        // it go first.
        let log = log.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            log.try_flush();
            previous(info)
        }));
    }
    log
}
