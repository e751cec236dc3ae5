//! The `mysticchallenge` binary: parses the command line, sets up logging,
//! and runs the gateway until SIGINT or SIGTERM.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use mysticchallenge::{Args, Config, gateway, shutdown};
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(gateway::run(config, stop_signal(), announce)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn stop_signal() {
    match shutdown::signalled().await {
        Ok(name) => tracing::info!(signal = name, "shutdown requested"),
        Err(err) => {
            tracing::error!(cause = %err, "cannot listen for SIGINT/SIGTERM; stop the gateway with SIGKILL");
            std::future::pending::<()>().await;
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
