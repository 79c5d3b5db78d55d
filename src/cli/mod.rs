//! Command-line interface: the subcommands and their flags (each also an environment variable).
//! Parsing only; what `run` does lives in run.rs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    Run(RunArgs),
    /// Print the version and exit.
    Version,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kubeconfig of the app cluster (default: in-cluster config, else $KUBECONFIG or ~/.kube/config).
    #[arg(long, env = "CLAIMSYNC_APP_KUBECONFIG")]
    pub app_kubeconfig: Option<PathBuf>,
    /// Kubeconfig file of the control plane.
    #[arg(
        long,
        env = "CLAIMSYNC_CONTROL_PLANE_KUBECONFIG",
        required_unless_present = "control_plane_kubeconfig_secret"
    )]
    pub control_plane_kubeconfig: Option<PathBuf>,
    /// Secret in the app cluster holding the control plane's kubeconfig: `<namespace>/<name>[:<key>]`
    /// (key default `kubeconfig`).
    #[arg(
        long,
        env = "CLAIMSYNC_CONTROL_PLANE_KUBECONFIG_SECRET",
        conflicts_with = "control_plane_kubeconfig"
    )]
    pub control_plane_kubeconfig_secret: Option<String>,
    /// Namespace of the control plane that holds this cluster's claims; it must exist.
    #[arg(long, env = "CLAIMSYNC_CLAIM_NAMESPACE")]
    pub claim_namespace: String,
    /// Identity of this app cluster in remote names and labels (default: uid of its kube-system namespace).
    #[arg(long, env = "CLAIMSYNC_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Directory of the journal (a sled database).
    #[arg(long, env = "CLAIMSYNC_STATE_DIR", default_value = "/var/lib/claimsync")]
    pub state_dir: PathBuf,
    /// Only claims in namespaces matching this label selector are replicated (e.g. `claimsync=enabled`).
    #[arg(long, env = "CLAIMSYNC_NAMESPACE_SELECTOR")]
    pub namespace_selector: Option<String>,
    /// How many claims of one kind are reconciled at once.
    #[arg(long, env = "CLAIMSYNC_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,
}
