//! The flags every subcommand that talks to both clusters shares: where the app cluster and the control plane are,
//! the claim namespace, the cluster id and claimsync's own namespace; and how they resolve.

use std::path::PathBuf;

use clap::Args;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::Api;

use crate::error::{Error, KubeContext, Side};
use crate::model::identity::IdSource;

/// Where the app cluster is and claimsync's own namespace in it: every subcommand's, also those that never reach
/// the control plane (`status`, `disconnect`).
#[derive(Debug, Args)]
pub struct AppArgs {
    /// Kubeconfig of the app cluster (default: in-cluster config, else $KUBECONFIG or ~/.kube/config).
    #[arg(long, env = "CLAIMSYNC_APP_KUBECONFIG")]
    pub app_kubeconfig: Option<PathBuf>,
    /// claimsync's own namespace in the app cluster, where it records the cluster id (ConfigMap
    /// `claimsync-identity`) and the disconnect mark; default: $POD_NAMESPACE, else `claimsync-system`. It must exist.
    #[arg(long, env = "CLAIMSYNC_NAMESPACE")]
    pub namespace: Option<String>,
}

impl AppArgs {
    /// claimsync's own namespace: the flag, else the pod's namespace, else `claimsync-system`.
    pub fn own_namespace(&self) -> String {
        self.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty()))
            .unwrap_or_else(|| "claimsync-system".to_string())
    }
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub app: AppArgs,
    /// Kubeconfig file of the control plane.
    #[arg(
        long,
        env = "CLAIMSYNC_CONTROL_PLANE_KUBECONFIG",
        required_unless_present = "control_plane_kubeconfig_secret"
    )]
    pub control_plane_kubeconfig: Option<PathBuf>,
    /// Secret in the app cluster holding the control plane's kubeconfig: `<namespace>/<name>[:<key>]`
    /// (key default `kubeconfig`). It may carry only inline credentials.
    #[arg(
        long,
        env = "CLAIMSYNC_CONTROL_PLANE_KUBECONFIG_SECRET",
        conflicts_with = "control_plane_kubeconfig"
    )]
    pub control_plane_kubeconfig_secret: Option<String>,
    /// Namespace of the control plane that holds this cluster's claims; it must exist.
    #[arg(long, env = "CLAIMSYNC_CLAIM_NAMESPACE")]
    pub claim_namespace: String,
    /// Identity of this app cluster in remote names and labels (default: uid of its kube-system namespace). Once
    /// chosen it is pinned: a different one is refused.
    #[arg(long, env = "CLAIMSYNC_CLUSTER_ID")]
    pub cluster_id: Option<String>,
}

impl ClusterArgs {
    /// Checks what clap cannot.
    pub fn check(&self) -> Result<(), Error> {
        if self.claim_namespace.trim().is_empty() {
            return Err(Error::Setting {
                setting: "--claim-namespace (CLAIMSYNC_CLAIM_NAMESPACE)".into(),
                problem: "must name a namespace of the control plane".into(),
            });
        }
        Ok(())
    }

    pub fn own_namespace(&self) -> String {
        self.app.own_namespace()
    }

    /// The cluster id to use and where it came from: `--cluster-id`, else the uid of `kube-system`.
    pub async fn cluster_id(&self, local: &Client) -> Result<(String, IdSource), Error> {
        if let Some(id) = self.cluster_id.clone().filter(|id| !id.is_empty()) {
            return Ok((id, IdSource::Flag));
        }
        Ok((kube_system_uid(local).await?, IdSource::KubeSystemUid))
    }
}

/// The uid of the app cluster's `kube-system` namespace: what tells this app cluster from any other.
pub async fn kube_system_uid(local: &Client) -> Result<String, Error> {
    kube_system_uid_of(local, Side::App).await
}

/// The uid of a cluster's `kube-system` namespace: its identity (the app cluster's id; the control plane's record).
pub async fn kube_system_uid_of(client: &Client, side: Side) -> Result<String, Error> {
    let namespace = Api::<Namespace>::all(client.clone()).get("kube-system").await.context(
        side,
        "get namespace (claimsync needs get on namespaces)",
        "kube-system",
    )?;
    namespace.metadata.uid.ok_or_else(|| Error::Object {
        object: format!("namespace kube-system of the {side}"),
        problem: "has no uid, which claimsync takes as the cluster's identity".into(),
    })
}
