//! `claimsync run`: its flags; resolves the configuration into clients and checks it before touching anything,
//! opens the journal, and runs the catalog (which starts one claim controller per kind), the Event mirror and the
//! link probe until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use claimsync_state::Journal;
use clap::Args;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use tracing::{info, warn};

use super::clients::{REACH_TIMEOUT, app_client, control_plane_client, reachable};
use crate::context::{Context, Settings};
use crate::error::Error;
use crate::model::identity::IdSource;
use crate::sync::{catalog, events, identity, link, namespaces};

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
    /// claimsync's own namespace in the app cluster, where it records the cluster id (ConfigMap
    /// `claimsync-identity`); default: $POD_NAMESPACE, else `claimsync-system`. It must exist.
    #[arg(long, env = "CLAIMSYNC_NAMESPACE")]
    pub namespace: Option<String>,
    /// Only claim kinds of these API groups are replicated (comma-separated; `*.example.org` matches every
    /// subgroup); default: every claim kind the control plane offers.
    #[arg(long, env = "CLAIMSYNC_CLAIM_GROUPS", value_delimiter = ',')]
    pub claim_groups: Vec<String>,
    #[command(flatten)]
    pub shim: super::shim::ShimArgs,
}

impl RunArgs {
    /// claimsync's own namespace: the flag, else the pod's namespace, else `claimsync-system`.
    pub fn own_namespace(&self) -> String {
        self.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty()))
            .unwrap_or_else(|| "claimsync-system".to_string())
    }
}

pub async fn run(args: RunArgs) -> Result<(), Error> {
    if args.claim_namespace.trim().is_empty() {
        return Err(Error::Config(
            "--claim-namespace (CLAIMSYNC_CLAIM_NAMESPACE) must name a namespace of the control plane".into(),
        ));
    }
    let local = app_client(&args).await?;
    reachable(&local, "app cluster").await?;
    // The aggregated API needs only the app cluster: it serves before (and whether or not) the rest starts.
    let shim = super::shim::start(&args, &local).await?;
    let remote = control_plane_client(&args, &local).await?;
    reachable(&remote, "control plane").await?;
    let claim_namespaces = Api::<Namespace>::all(remote.clone());
    match tokio::time::timeout(REACH_TIMEOUT, claim_namespaces.get_opt(&args.claim_namespace)).await {
        Ok(Ok(Some(_))) => {}
        Ok(Ok(None)) => {
            return Err(Error::Config(format!(
                "claim namespace {:?} does not exist on the control plane; create it first (kubectl create namespace {})",
                args.claim_namespace, args.claim_namespace
            )));
        }
        Ok(Err(e)) => {
            return Err(Error::Config(format!(
                "control plane: get namespace {}: {e}",
                args.claim_namespace
            )));
        }
        Err(_) => return Err(Error::Config("control plane: no answer within 15s".into())),
    }
    let (cluster_id, source) = match args.cluster_id.clone().filter(|id| !id.is_empty()) {
        Some(id) => (id, IdSource::Flag),
        None => (
            Api::<Namespace>::all(local.clone())
                .get("kube-system")
                .await
                .ok()
                .and_then(|ns| ns.metadata.uid)
                .ok_or_else(|| {
                    Error::Config(
                        "cannot read the uid of the app cluster's kube-system namespace; set --cluster-id".into(),
                    )
                })?,
            IdSource::KubeSystemUid,
        ),
    };
    let instance = args.own_namespace();
    let (journal, was_reset) = Journal::open_or_reset(&args.state_dir)?;
    if was_reset {
        warn!(dir = %args.state_dir.display(), "the journal was unusable and starts empty; claimsync resyncs from the clusters");
    }
    identity::pin_cluster_id(&local, &instance, &journal, &cluster_id, source).await?;
    if let Some(shim) = &shim {
        shim.attach(journal.clone(), &cluster_id);
    }

    let selection = match &args.namespace_selector {
        None => None,
        Some(selector) => Some(namespaces::select(&local, selector).await?),
    };

    let reporter = Reporter {
        controller: "claimsync".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(local.clone(), reporter);
    info!(claim_namespace = %args.claim_namespace, cluster_id = %cluster_id, namespace = %instance, journal = %args.state_dir.display(), "claimsync starting");
    let ctx = Arc::new(Context::new(Settings {
        local,
        remote,
        claim_namespace: args.claim_namespace.clone(),
        cluster_id,
        instance,
        claim_groups: args.claim_groups.clone(),
        journal: journal.clone(),
        recorder,
        selection,
        concurrency: args.concurrency,
    }));
    let (link_changes, link_events) = tokio::sync::mpsc::unbounded_channel();
    let link = tokio::spawn(link::watch(ctx.clone(), link_changes));
    let catalog = tokio::spawn(catalog::run(ctx.clone(), link_events));
    let events = tokio::spawn(events::run(ctx));
    shutdown_signal().await;
    info!("shutting down");
    catalog.abort();
    events.abort();
    link.abort();
    journal.flush()?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
