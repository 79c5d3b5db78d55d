//! `claimsync run`: its flags; resolves the configuration into clients and checks it before touching anything,
//! opens the journal, and runs the catalog (which starts one claim controller per kind), the Event mirror and the
//! link probe until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use claimsync_state::Journal;
use clap::Args;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::watch;
use tracing::{info, warn};

use super::args::{ClusterArgs, kube_system_uid};
use super::clients::{REACH_TIMEOUT, RemoteSource, app_config, reachable};
use crate::error::{Error, Side};
use crate::model::link::{LinkState, Probe};
use crate::ops;
use crate::ops::counting::{counted_client, fenced_client};
use crate::ops::deadline::WriteFence;
use crate::ops::leader::Elector;
use crate::ops::metrics::Metrics;
use crate::ops::server::OpsState;
use crate::sync::caches::RemoteCaches;
use crate::sync::context::{Context, Settings};
use crate::sync::credential::CredentialSecret;
use crate::sync::{catalog, credential, events, identity, link, namespaces};

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
    /// Address of the ops endpoint (`/healthz`, `/readyz`, `/metrics`); empty turns it off.
    #[arg(long, env = "CLAIMSYNC_OPS_ADDR", default_value = "0.0.0.0:8080")]
    pub ops_addr: String,
    /// Elect a leader among replicas (a Lease in claimsync's namespace): only the leader writes; every replica
    /// serves the ops endpoint (and the shim).
    #[arg(long, env = "CLAIMSYNC_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Name of the leader election Lease.
    #[arg(long, env = "CLAIMSYNC_LEADER_LEASE", default_value = "claimsync")]
    pub leader_lease: String,
    /// How long before its expiry the control plane credential is renewed, in seconds, when it is a ServiceAccount
    /// token in a kubeconfig Secret (as `claimsync connect` makes it); at the latest two thirds into its life.
    #[arg(long, env = "CLAIMSYNC_CREDENTIAL_RENEW_BEFORE", default_value_t = 3600)]
    pub credential_renew_before: u64,
    /// How many Secret or namespace changes a claim controller may fall behind before it looks at every claim of
    /// its kind instead of the changed ones (tests make it small to take that path).
    #[arg(long, env = "CLAIMSYNC_TRIGGER_BUFFER", default_value_t = 4096, hide = true)]
    pub trigger_buffer: usize,
    /// How much of the journal claimsync keeps in memory, in MiB (sled's page cache; the rest is read from
    /// `--state-dir` when needed).
    #[arg(long, env = "CLAIMSYNC_JOURNAL_CACHE_MIB", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub journal_cache_mib: u64,
    #[command(flatten)]
    pub shim: super::shim::ShimArgs,
}

pub async fn run(args: RunArgs) -> Result<(), Error> {
    let clusters = &args.clusters;
    clusters.check()?;
    let metrics = Arc::new(Metrics::new());
    let ops = OpsState::new(metrics.clone());
    if !args.ops_addr.is_empty() {
        ops::server::serve(&args.ops_addr, ops.clone()).await?;
    }
    let app_config = app_config(&clusters.app).await?;
    let local = counted_client(app_config.clone(), "app", metrics.clone()).map_err(|e| client_failed("app", e))?;
    reachable(&local, Side::App).await?;
    // Leadership opens the controllers' writes (their clients pass this fence); one replica alone always writes.
    let fence = if args.leader_elect {
        WriteFence::closed()
    } else {
        WriteFence::always_open()
    };
    let writer =
        fenced_client(app_config, "app", metrics.clone(), fence.clone()).map_err(|e| client_failed("app", e))?;
    // The aggregated API needs only the app cluster: it serves before (and whether or not) the rest starts.
    let shim = super::shim::start(&args, &local).await?;
    // Configuration errors stop claimsync here; an unreachable control plane does not (it starts offline).
    let source = RemoteSource::from_args(clusters)?;
    let (mut remote_config, mut fingerprint) = source.load(&local).await?;
    let mut first_probe = Some(
        first_look(
            &control_plane_client(&remote_config, &metrics)?,
            &clusters.claim_namespace,
        )
        .await?,
    );
    let (cluster_id, id_source) = clusters.cluster_id(&local).await?;
    let cluster_uid = kube_system_uid(&local).await?;
    let instance = clusters.own_namespace();
    let (journal, was_reset) = Journal::open_or_reset_with_cache(&args.state_dir, args.journal_cache_mib << 20)?;
    if was_reset {
        warn!(dir = %args.state_dir.display(), "the journal was unusable and starts empty; claimsync resyncs from the clusters");
    }
    identity::pin_cluster_id(&local, &instance, &journal, &cluster_id, id_source).await?;
    identity::pin_claim_namespace(&local, &instance, &clusters.claim_namespace).await?;
    if let Some(shim) = &shim {
        shim.attach(journal.clone(), &cluster_id);
    }
    let selection = match &args.namespace_selector {
        None => None,
        Some(selector) => Some(namespaces::select(&local, selector, args.trigger_buffer).await?),
    };
    let reporter = Reporter {
        controller: "claimsync".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(writer.clone(), reporter);
    let reporting_object = link::reporting_object(&instance);

    // Leadership and the disconnect switch decide when this replica writes; it serves ops (and the shim) always.
    let (leading_tx, mut leading) = watch::channel(!args.leader_elect);
    // The elector and its task, to stop it and release the lease on shutdown.
    let mut lease: Option<(Elector, tokio::task::JoinHandle<()>)> = None;
    if args.leader_elect {
        let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
            format!(
                "{}-{}",
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .unwrap_or_default()
                    .trim(),
                std::process::id()
            )
        });
        let elector = Elector::new(&local, &instance, &args.leader_lease, &identity, ops.lease.clone());
        let running = tokio::spawn(elector.clone().run(leading_tx, fence.clone()));
        lease = Some((elector, running));
    } else {
        std::mem::forget(leading_tx);
    }
    let mut disconnected = identity::disconnect_switch(&local, &instance).await?;
    ops.ready.store(true, Ordering::Relaxed);
    metrics.count_journal_writes(&journal);
    tokio::spawn(measure_journal(journal.clone(), metrics.clone()));
    let mut shutdown = std::pin::pin!(shutdown_signal());

    // One pass per stretch of writing: a rotated kubeconfig reconnects every controller without a restart, and
    // losing the lead (or a disconnect) stops them at once.
    loop {
        let may_write = |leading: &watch::Receiver<bool>, disconnected: &watch::Receiver<bool>| {
            *leading.borrow() && !*disconnected.borrow()
        };
        while !may_write(&leading, &disconnected) {
            metrics.leader.set(0);
            if *disconnected.borrow() {
                info!("disconnected (claimsync disconnect): not replicating; restart claimsync to replicate again");
            } else {
                info!("standing by: another replica leads");
            }
            tokio::select! {
                _ = &mut shutdown => return shut_down(&journal, lease.as_ref()).await,
                _ = leading.changed() => {}
                _ = disconnected.changed() => {}
            }
        }
        metrics.leader.set(1);
        let remote = fenced_client(remote_config.clone(), "controlplane", metrics.clone(), fence.clone())
            .map_err(|e| client_failed("controlplane", e))?;
        let initial = match first_probe.take() {
            Some(initial) => initial,
            None => first_look(&remote, &clusters.claim_namespace).await?,
        };
        metrics.link_up.set(i64::from(initial.is_up()));
        let (link_tx, link_rx) = watch::channel(initial.clone());
        let (caches, cache_tasks) =
            RemoteCaches::start(&writer, &remote, &clusters.claim_namespace, args.trigger_buffer);
        info!(claim_namespace = %clusters.claim_namespace, cluster_id = %cluster_id, namespace = %instance, journal = %args.state_dir.display(), online = initial.is_up(), "claimsync starting");
        let ctx = Arc::new(Context::new(Settings {
            local: writer.clone(),
            remote,
            claim_namespace: clusters.claim_namespace.clone(),
            cluster_id: cluster_id.clone(),
            cluster_uid: cluster_uid.clone(),
            instance: instance.clone(),
            claim_groups: args.claim_groups.clone(),
            journal: journal.clone(),
            recorder: recorder.clone(),
            selection: selection.clone(),
            link: link_rx,
            reporting_object: reporting_object.clone(),
            concurrency: args.concurrency,
            metrics: metrics.clone(),
            caches,
        }));
        ctx.track_maps();
        if !initial.is_up() {
            // Degraded, not dead: the local claims keep working and show it.
            link::announce(&ctx, &initial).await;
        }
        let mut tasks = vec![
            tokio::spawn(link::watch(ctx.clone(), link_tx)),
            tokio::spawn(catalog::run(ctx.clone())),
            tokio::spawn(events::run(ctx.clone())),
        ];
        tasks.extend(cache_tasks);
        if let RemoteSource::Secret { namespace, name, key } = &source {
            let secret = CredentialSecret {
                namespace: namespace.clone(),
                name: name.clone(),
                key: key.clone(),
            };
            let lead = std::time::Duration::from_secs(args.credential_renew_before);
            tasks.push(tokio::spawn(credential::keep_fresh(ctx.clone(), secret, lead)));
        }
        let stop_writing = async {
            while may_write(&leading, &disconnected) {
                tokio::select! {
                    _ = leading.changed() => {}
                    _ = disconnected.changed() => {}
                }
            }
        };
        let outcome = tokio::select! {
            _ = &mut shutdown => None,
            rotated = source.changed(&local, &fingerprint) => Some(Some(rotated)),
            _ = stop_writing => Some(None),
        };
        for task in &tasks {
            task.abort();
        }
        metrics.leader.set(0);
        match outcome {
            None => return shut_down(&journal, lease.as_ref()).await,
            Some(Some((config, seen))) => {
                info!("the control plane's kubeconfig changed; reconnecting with it");
                (remote_config, fingerprint) = (config, seen);
            }
            Some(None) => warn!("stopped writing: the lead was lost or claimsync was disconnected"),
        }
    }
}

/// The last things before exiting, once nothing writes any more: the journal flushed, and the lease given up so
/// that a standby leads at once.
async fn shut_down(journal: &Journal, lease: Option<&(Elector, tokio::task::JoinHandle<()>)>) -> Result<(), Error> {
    info!("shutting down");
    journal.flush()?;
    if let Some((elector, running)) = lease {
        // Stopped first, so that it does not take the lease back before the process is gone.
        running.abort();
        elector.release().await;
    }
    Ok(())
}

/// Keeps the journal's size in the metrics.
async fn measure_journal(journal: Journal, metrics: Arc<Metrics>) {
    loop {
        metrics.journal_bytes.set(journal.size_on_disk().unwrap_or(0) as i64);
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
}

fn control_plane_client(config: &kube::Config, metrics: &Arc<Metrics>) -> Result<Client, Error> {
    counted_client(config.clone(), "controlplane", metrics.clone()).map_err(|e| client_failed("controlplane", e))
}

fn client_failed(cluster: &str, e: kube::Error) -> Error {
    Error::Load {
        setting: format!("the {cluster} client"),
        action: "build",
        source: e.into(),
    }
}

/// Whether the control plane can be used now (the link's state to start from), after checking that the claim
/// namespace exists if the control plane answers.
async fn first_look(remote: &Client, claim_namespace: &str) -> Result<LinkState, Error> {
    match link::probe(remote).await {
        Probe::Ok => {
            claim_namespace_exists(remote, claim_namespace).await?;
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
        Ok(Ok(None)) => Err(Error::Setting {
            setting: "--claim-namespace".into(),
            problem: format!(
                "claim namespace {claim_namespace:?} does not exist on the control plane; create it first (kubectl \
                 create namespace {claim_namespace})"
            ),
        }),
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
