#![forbid(unsafe_code)]

use claimsync::cli::{Cli, Command};
use clap::Parser;

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Version) | None => println!("claimsync {}", env!("CARGO_PKG_VERSION")),
    }
}
