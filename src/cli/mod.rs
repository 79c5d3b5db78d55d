//! The command line: the subcommands, one file each (`run` now), with their flags (each also an environment
//! variable) and the client set-up they share (`clients.rs`). Nothing here replicates; it configures and hands
//! over to `sync`.

mod clients;
pub mod run;
mod shim;

use clap::{Parser, Subcommand};

pub use run::RunArgs;

/// claimsync: Crossplane claims in your app cluster, replicated to and from a remote control plane.
#[derive(Debug, Parser)]
#[command(name = "claimsync", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replicate claims between the app cluster and the control plane until stopped.
    Run(Box<RunArgs>),
    /// Print the version and exit.
    Version,
}
