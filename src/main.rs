//! The `mysticchallenge` binary: parses the command line, sets up logging,
//! and runs the gateway until SIGINT or SIGTERM (a second one stops it at
//! once).

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use mysticchallenge::{Args, Config, gateway, shutdown};
use rustix::process::DumpableBehavior;
use tokio_stream::{Stream, StreamExt as _};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = match Config::try_from(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if !config.debuggable {
        // Closed to the functions it runs (same user): no /proc/<pid>/fd,
        // no /proc/<pid>/mem, no ptrace, no core dump.
        if let Err(err) = rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable) {
            eprintln!("error: cannot make the gateway not dumpable (prctl): {err}");
            return ExitCode::FAILURE;
        }
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.runtime_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let stop = runtime.block_on(async { stop_requests() });
    match runtime.block_on(gateway::run(config, stop, announce)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT and SIGTERM, logged as they come.
fn stop_requests() -> Box<dyn Stream<Item = &'static str> + Send + Unpin> {
    match shutdown::requests() {
        Ok(requests) => Box::new(requests.map(|signal| {
            tracing::info!(signal, "shutdown requested");
            signal
        })),
        Err(err) => {
            tracing::error!(cause = %err, "cannot listen for SIGINT/SIGTERM; stop the gateway with SIGKILL");
            Box::new(tokio_stream::pending())
        }
    }
}

/// Tells whoever started the gateway (a person, a script, a test) where it
/// serves: one line on stdout, once every worker is ready.
fn announce(url: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "serving {url}");
    let _ = stdout.flush();
}
