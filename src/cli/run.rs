//! `claimsync run`: its flags; resolves the configuration into clients and checks it before touching anything,
//! opens the journal, and runs the catalog (which starts one claim controller per kind), the Event mirror and the
//! link probe until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use claimsync_state::Journal;
use clap::Args;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::watch;
use tracing::{info, warn};

use super::args::ClusterArgs;
use super::clients::{REACH_TIMEOUT, RemoteSource, app_client, reachable};
use crate::context::{Context, Settings};
use crate::error::Error;
use crate::model::link::{LinkState, Probe};
use crate::sync::{catalog, events, identity, link, namespaces};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub clusters: ClusterArgs,
    /// Directory of the journal (a sled database).
    #[arg(long, env = "CLAIMSYNC_STATE_DIR", default_value = "/var/lib/claimsync")]
    pub state_dir: PathBuf,
    /// Only claims in namespaces matching this label selector are replicated (e.g. `claimsync=enabled`).
    #[arg(long, env = "CLAIMSYNC_NAMESPACE_SELECTOR")]
    pub namespace_selector: Option<String>,
    /// How many claims of one kind are reconciled at once.
    #[arg(long, env = "CLAIMSYNC_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,
    /// Only claim kinds of these API groups are replicated (comma-separated; `*.example.org` matches every
    /// subgroup); default: every claim kind the control plane offers.
    #[arg(long, env = "CLAIMSYNC_CLAIM_GROUPS", value_delimiter = ',')]
    pub claim_groups: Vec<String>,
}

pub async fn run(args: RunArgs) -> Result<(), Error> {
    let clusters = &args.clusters;
    clusters.check()?;
    let local = app_client(clusters).await?;
    reachable(&local, "app cluster").await?;
    // Configuration errors stop claimsync here; an unreachable control plane does not (it starts offline).
    let source = RemoteSource::from_args(clusters)?;
    let (mut remote_config, mut fingerprint) = source.load(&local).await?;
    let mut first_probe = Some(first_look(&remote_config, &clusters.claim_namespace).await?);
    let (cluster_id, id_source) = clusters.cluster_id(&local).await?;
    let instance = clusters.own_namespace();
    let (journal, was_reset) = Journal::open_or_reset(&args.state_dir)?;
    if was_reset {
        warn!(dir = %args.state_dir.display(), "the journal was unusable and starts empty; claimsync resyncs from the clusters");
    }
    identity::pin_cluster_id(&local, &instance, &journal, &cluster_id, id_source).await?;
    let selection = match &args.namespace_selector {
        None => None,
        Some(selector) => Some(namespaces::select(&local, selector).await?),
    };
    let reporter = Reporter {
        controller: "claimsync".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(local.clone(), reporter);
    let reporting_object = link::reporting_object(&instance);

    // One pass per control plane kubeconfig: a rotated one reconnects every controller without a restart.
    loop {
        let remote = control_plane_client(&remote_config)?;
        let initial = match first_probe.take() {
            Some(initial) => initial,
            None => first_look(&remote_config, &clusters.claim_namespace).await?,
        };
        let (link_tx, link_rx) = watch::channel(initial.clone());
        info!(claim_namespace = %clusters.claim_namespace, cluster_id = %cluster_id, namespace = %instance, journal = %args.state_dir.display(), online = initial.is_up(), "claimsync starting");
        let ctx = Arc::new(Context::new(Settings {
            local: local.clone(),
            remote,
            claim_namespace: clusters.claim_namespace.clone(),
            cluster_id: cluster_id.clone(),
            instance: instance.clone(),
            claim_groups: args.claim_groups.clone(),
            journal: journal.clone(),
            recorder: recorder.clone(),
            selection: selection.clone(),
            link: link_rx,
            reporting_object: reporting_object.clone(),
            concurrency: args.concurrency,
        }));
        if !initial.is_up() {
            // Degraded, not dead: the local claims keep working and show it.
            link::announce(&ctx, &initial).await;
        }
        let tasks = [
            tokio::spawn(link::watch(ctx.clone(), link_tx)),
            tokio::spawn(catalog::run(ctx.clone())),
            tokio::spawn(events::run(ctx.clone())),
        ];
        let rotated = tokio::select! {
            _ = shutdown_signal() => None,
            rotated = source.changed(&local, &fingerprint) => Some(rotated),
        };
        for task in &tasks {
            task.abort();
        }
        match rotated {
            None => {
                info!("shutting down");
                journal.flush()?;
                return Ok(());
            }
            Some((config, seen)) => {
                info!("the control plane's kubeconfig changed; reconnecting with it");
                (remote_config, fingerprint) = (config, seen);
            }
        }
    }
}

fn control_plane_client(config: &kube::Config) -> Result<Client, Error> {
    Client::try_from(config.clone()).map_err(|e| Error::Config(format!("control plane: {e}")))
}

/// Whether the control plane can be used now (the link's state to start from), after checking that the claim
/// namespace exists if the control plane answers.
async fn first_look(config: &kube::Config, claim_namespace: &str) -> Result<LinkState, Error> {
    let remote = control_plane_client(config)?;
    match link::probe(&remote).await {
        Probe::Ok => {
            claim_namespace_exists(&remote, claim_namespace).await?;
            Ok(LinkState::Up)
        }
        Probe::Failed { why, reason } => Ok(LinkState::Down { why, reason }),
    }
}

/// The claim namespace must exist on a control plane that answers: a missing one is a configuration error. One
/// that cannot be read (claimsync's role may not allow reading namespaces) is only warned about.
async fn claim_namespace_exists(remote: &Client, claim_namespace: &str) -> Result<(), Error> {
    let namespaces = Api::<Namespace>::all(remote.clone());
    match tokio::time::timeout(REACH_TIMEOUT, namespaces.get_opt(claim_namespace)).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err(Error::Config(format!(
            "claim namespace {claim_namespace:?} does not exist on the control plane; create it first (kubectl create namespace {claim_namespace})"
        ))),
        Ok(Err(e)) => {
            warn!(error = %e, namespace = %claim_namespace, "could not check that the claim namespace exists on the control plane");
            Ok(())
        }
        Err(_) => {
            warn!(namespace = %claim_namespace, "the control plane did not answer whether the claim namespace exists");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
