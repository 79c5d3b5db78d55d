//! The claimsync binary: parses the command line, sets up logging and runs the chosen subcommand; all the
//! work is in the library.
#![forbid(unsafe_code)]

use claimsync::cli::{Cli, Command};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = Cli::parse();
    let command = match cli.command {
        Some(Command::Version) | None => {
            println!("claimsync {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Some(command) => command,
    };
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn")))
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(e) = runtime.block_on(claimsync::cli::execute(command)) {
        eprintln!("claimsync: {}", claimsync::error::with_causes(&e));
        std::process::exit(1);
    }
}
