//! The command line: the subcommands, one file each (run, status, restore, connect, disconnect; version is here), with
//! their flags (each also an environment variable), the flags they share (`args.rs`) and the client set-up
//! (`clients.rs`). Nothing here replicates; it configures and hands over to `sync`.

pub mod args;
mod clients;
pub mod connect;
pub mod disconnect;
pub mod restore;
pub mod run;
mod shim;
pub mod status;

use clap::{Parser, Subcommand};

pub use restore::RestoreArgs;
pub use run::RunArgs;

use crate::error::Error;

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
    /// Create again the local claims whose twins are on the control plane but which are missing locally.
    Restore(Box<RestoreArgs>),
    /// Show every claim's sync state (read from the app cluster; works offline).
    Status(status::StatusArgs),
    /// Join this app cluster to a control plane: its account, rights and credential there, the kubeconfig Secret
    /// here, and the chart installed (run by an operator with admin rights on both).
    Connect(Box<connect::ConnectArgs>),
    /// Let go of every local claim (what uninstall runs): their twins stay on the control plane untouched.
    Disconnect(disconnect::DisconnectArgs),
    /// Print the version and exit.
    Version,
}

/// Runs a subcommand that works against the clusters.
pub async fn execute(command: Command) -> Result<(), Error> {
    match command {
        Command::Run(args) => run::run(*args).await,
        Command::Restore(args) => restore::restore(*args).await,
        Command::Status(args) => status::status(args).await,
        Command::Connect(args) => connect::connect(*args).await,
        Command::Disconnect(args) => disconnect::disconnect(args).await,
        Command::Version => Ok(()),
    }
}
