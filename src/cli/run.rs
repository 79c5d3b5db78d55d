//! `claimsync run`: resolves the configuration into clients and checks it before touching anything, opens the
//! journal, and runs the catalog (which starts one claim controller per kind) until SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use claimsync_state::Journal;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use tracing::{info, warn};

use crate::cli::RunArgs;
use crate::context::Context;
use crate::error::Error;
use crate::{catalog, events, link};

/// How long start-up waits for each API server before giving up with a clear message.
const REACH_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn run(args: RunArgs) -> Result<(), Error> {
    if args.claim_namespace.trim().is_empty() {
        return Err(Error::Config(
            "--claim-namespace (CLAIMSYNC_CLAIM_NAMESPACE) must name a namespace of the control plane".into(),
        ));
    }
    let local = app_client(&args).await?;
    reachable(&local, "app cluster").await?;
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
    let cluster_id = match args.cluster_id.clone().filter(|id| !id.is_empty()) {
        Some(id) => id,
        None => Api::<Namespace>::all(local.clone())
            .get("kube-system")
            .await
            .ok()
            .and_then(|ns| ns.metadata.uid)
            .ok_or_else(|| {
                Error::Config("cannot read the uid of the app cluster's kube-system namespace; set --cluster-id".into())
            })?,
    };
    let (journal, was_reset) = Journal::open_or_reset(&args.state_dir)?;
    if was_reset {
        warn!(dir = %args.state_dir.display(), "the journal was unusable and starts empty; claimsync resyncs from the clusters");
    }

    let namespaces = match &args.namespace_selector {
        None => None,
        Some(selector) => {
            // Checked once here so that a malformed selector is an error at start, not a silent empty sync.
            Api::<Namespace>::all(local.clone())
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| Error::Config(format!("--namespace-selector {selector:?}: {e}")))?;
            let writer = Writer::<Namespace>::default();
            let store = writer.as_reader();
            let stream = reflector::reflector(
                writer,
                watcher(
                    Api::<Namespace>::all(local.clone()),
                    watcher::Config::default().labels(selector),
                ),
            );
            tokio::spawn(stream.default_backoff().for_each(|_| futures::future::ready(())));
            store
                .wait_until_ready()
                .await
                .map_err(|e| Error::Config(format!("namespace selector: {e}")))?;
            Some(store)
        }
    };

    let reporter = Reporter {
        controller: "claimsync".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(local.clone(), reporter);
    info!(claim_namespace = %args.claim_namespace, cluster_id = %cluster_id, journal = %args.state_dir.display(), "claimsync starting");
    let ctx = Arc::new(Context::new(
        local,
        remote,
        args.claim_namespace.clone(),
        cluster_id,
        journal.clone(),
        recorder,
        namespaces,
        args.concurrency.max(1),
    ));
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

async fn app_client(args: &RunArgs) -> Result<Client, Error> {
    let config = match &args.app_kubeconfig {
        Some(path) => from_file(path, "--app-kubeconfig").await?,
        None => Config::infer().await.map_err(|e| {
            Error::Config(format!(
                "app cluster: no in-cluster config and no usable $KUBECONFIG: {e}"
            ))
        })?,
    };
    Client::try_from(config).map_err(|e| Error::Config(format!("app cluster: {e}")))
}

async fn control_plane_client(args: &RunArgs, local: &Client) -> Result<Client, Error> {
    let config = match (&args.control_plane_kubeconfig, &args.control_plane_kubeconfig_secret) {
        (Some(path), _) => from_file(path, "--control-plane-kubeconfig").await?,
        (None, Some(reference)) => {
            let (namespace, rest) = reference.split_once('/').ok_or_else(|| {
                Error::Config(format!(
                    "--control-plane-kubeconfig-secret {reference:?}: want <namespace>/<name>[:<key>]"
                ))
            })?;
            let (name, key) = rest.split_once(':').unwrap_or((rest, "kubeconfig"));
            let secret = Api::<Secret>::namespaced(local.clone(), namespace)
                .get(name)
                .await
                .map_err(|e| {
                    Error::Config(format!(
                        "control plane kubeconfig: Secret {namespace}/{name} in the app cluster: {e}"
                    ))
                })?;
            let raw = secret.data.and_then(|d| d.get(key).cloned()).ok_or_else(|| {
                Error::Config(format!(
                    "control plane kubeconfig: Secret {namespace}/{name} has no key {key:?}"
                ))
            })?;
            let text = String::from_utf8(raw.0).map_err(|_| {
                Error::Config(format!(
                    "control plane kubeconfig: key {key:?} of Secret {namespace}/{name} is not text"
                ))
            })?;
            let kubeconfig = Kubeconfig::from_yaml(&text)
                .map_err(|e| Error::Config(format!("control plane kubeconfig in Secret {namespace}/{name}: {e}")))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Config(format!("control plane kubeconfig in Secret {namespace}/{name}: {e}")))?
        }
        (None, None) => {
            return Err(Error::Config(
                "the control plane's kubeconfig is missing: set --control-plane-kubeconfig or --control-plane-kubeconfig-secret".into(),
            ));
        }
    };
    Client::try_from(config).map_err(|e| Error::Config(format!("control plane: {e}")))
}

async fn from_file(path: &std::path::Path, flag: &str) -> Result<Config, Error> {
    let kubeconfig =
        Kubeconfig::read_from(path).map_err(|e| Error::Config(format!("{flag} {}: {e}", path.display())))?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Config(format!("{flag} {}: {e}", path.display())))
}

async fn reachable(client: &Client, which: &str) -> Result<(), Error> {
    match tokio::time::timeout(REACH_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::Config(format!("{which} is unreachable: {e}"))),
        Err(_) => Err(Error::Config(format!(
            "{which} did not answer within {}s",
            REACH_TIMEOUT.as_secs()
        ))),
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
