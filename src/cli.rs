//! Command-line interface: the subcommands and their flags (each also an environment variable).
//! Parsing only; what a subcommand does lives in the module named after it.

use clap::{Parser, Subcommand};

/// claimsync: Crossplane claims in your app cluster, replicated to and from a remote control plane.
#[derive(Debug, Parser)]
#[command(name = "claimsync", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version and exit.
    Version,
}
