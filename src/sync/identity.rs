//! Reads and records the cluster id in the app cluster (ConfigMap `claimsync-identity` in claimsync's own
//! namespace, which outlives the journal) and in the journal, and refuses an id that differs from the record.

use std::collections::BTreeMap;

use claimsync_state::Journal;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tracing::info;

use crate::error::{Error, KubeContext, Side};
use crate::model::identity::{IdSource, Pinning, pin};
use crate::model::vocabulary::{IDENTITY_CONFIGMAP, MANAGED_BY};

const KEY: &str = "clusterID";

/// Checks `effective` against the records and records it where it is missing; an error says which ids differ,
/// where each came from, and what to do.
pub async fn pin_cluster_id(
    local: &Client,
    namespace: &str,
    journal: &Journal,
    effective: &str,
    source: IdSource,
) -> Result<(), Error> {
    let namespaces = Api::<Namespace>::all(local.clone());
    if namespaces
        .get_opt(namespace)
        .await
        .context(Side::App, "get namespace", namespace)?
        .is_none()
    {
        return Err(Error::Setting {
            setting: "--namespace (CLAIMSYNC_NAMESPACE or POD_NAMESPACE)".into(),
            problem: format!(
                "claimsync's own namespace {namespace:?} does not exist in the app cluster; create it first (kubectl \
                 create namespace {namespace})"
            ),
        });
    }
    let config_maps = Api::<ConfigMap>::namespaced(local.clone(), namespace);
    let object = format!("ConfigMap {namespace}/{IDENTITY_CONFIGMAP}");
    let in_cluster = recorded(&config_maps, &object, KEY).await?;
    let in_journal = journal.cluster_id()?;
    match pin(in_cluster.as_deref(), in_journal.as_deref(), effective) {
        Pinning::Refuse { recorded, recorded_in } => Err(Error::Refused {
            why: format!(
                "cluster id {effective:?} (from {}) differs from {recorded:?}, recorded in {recorded_in} ({}): every \
             twin on the control plane is named after {recorded:?}, so {effective:?} would replicate every claim a \
             second time and duplicate its infrastructure. Start with --cluster-id {recorded}; only if this really \
             is another app cluster, delete {object} and the journal in the state dir first",
                source.describe(),
                if recorded_in == "the journal" {
                    "the state dir".to_string()
                } else {
                    object.clone()
                },
            ),
        }),
        Pinning::Use {
            record_in_cluster,
            record_in_journal,
        } => {
            if record_in_cluster {
                let cm = ConfigMap {
                    metadata: kube::api::ObjectMeta {
                        name: Some(IDENTITY_CONFIGMAP.to_string()),
                        labels: Some(BTreeMap::from([(MANAGED_BY.to_string(), "claimsync".to_string())])),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([(KEY.to_string(), effective.to_string())])),
                    ..Default::default()
                };
                match config_maps.create(&PostParams::default(), &cm).await {
                    Ok(_) => info!(cluster_id = %effective, record = %object, "recorded the cluster id"),
                    // Another claimsync of this namespace recorded one at the same moment: check against it.
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        return Box::pin(pin_cluster_id(local, namespace, journal, effective, source)).await;
                    }
                    Err(e) => return Err(e).context(Side::App, "create", &object),
                }
            }
            if record_in_journal {
                journal.set_cluster_id(effective)?;
            }
            Ok(())
        }
    }
}

/// The key in the identity ConfigMap that holds the claim namespace every twin was made in.
pub const CLAIM_NAMESPACE_KEY: &str = "claimNamespace";

/// Holds the claim namespace to the one recorded in the identity ConfigMap (made by [`pin_cluster_id`], which runs
/// first), recording it if none is: another one refuses to start, naming both.
pub async fn pin_claim_namespace(local: &Client, namespace: &str, claim_namespace: &str) -> Result<(), Error> {
    let config_maps = Api::<ConfigMap>::namespaced(local.clone(), namespace);
    let object = format!("ConfigMap {namespace}/{IDENTITY_CONFIGMAP}");
    let recorded = recorded(&config_maps, &object, CLAIM_NAMESPACE_KEY).await?;
    match crate::model::identity::pin_claim_namespace(recorded.as_deref(), claim_namespace) {
        Ok(false) => Ok(()),
        Ok(true) => {
            let patch = serde_json::json!({"data": {CLAIM_NAMESPACE_KEY: claim_namespace}});
            config_maps
                .patch(IDENTITY_CONFIGMAP, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .context(Side::App, "record the claim namespace in", &object)?;
            info!(claim_namespace, record = %object, "recorded the claim namespace");
            Ok(())
        }
        Err(recorded) => Err(Error::Refused {
            why: format!(
                "claim namespace {claim_namespace:?} differs from {recorded:?}, recorded in {object}: every twin of this                  app cluster is in {recorded:?}, so {claim_namespace:?} would give every claim a second twin there, a                  second copy of its infrastructure. Start with --claim-namespace {recorded}; to move on purpose, see                  the README (Operate: changing the claim namespace)"
            ),
        }),
    }
}

/// What the identity ConfigMap (`object`, for errors) records under `key`, if it and the key exist.
async fn recorded(config_maps: &Api<ConfigMap>, object: &str, key: &str) -> Result<Option<String>, Error> {
    let record = config_maps
        .get_opt(IDENTITY_CONFIGMAP)
        .await
        .context(Side::App, "get", object)?;
    Ok(record.and_then(|cm| cm.data).and_then(|mut d| d.remove(key)))
}

/// The key in the identity ConfigMap that `claimsync disconnect` sets: a running claimsync stops writing while it is
/// there. A claimsync that starts clears it (starting again means replicating again).
pub const DISCONNECTED: &str = "disconnected";

/// Clears the disconnect mark and watches for it: the receiver says true while this claimsync is disconnected.
pub async fn disconnect_switch(local: &Client, namespace: &str) -> Result<watch::Receiver<bool>, Error> {
    let config_maps = Api::<ConfigMap>::namespaced(local.clone(), namespace);
    let object = format!("ConfigMap {namespace}/{IDENTITY_CONFIGMAP}");
    // Cleared only when it is there: a restart writes nothing it does not have to.
    let current = config_maps
        .get_opt(IDENTITY_CONFIGMAP)
        .await
        .context(Side::App, "read", &object)?;
    let marked = current.is_some_and(|cm| cm.data.is_some_and(|d| d.contains_key(DISCONNECTED)));
    if marked {
        let clear = serde_json::json!({"data": {DISCONNECTED: null}});
        config_maps
            .patch(IDENTITY_CONFIGMAP, &PatchParams::default(), &Patch::Merge(&clear))
            .await
            .context(Side::App, "clear the disconnect mark on", &object)?;
    }
    let (tx, rx) = watch::channel(false);
    let events = watcher(
        config_maps,
        watcher::Config::default().fields(&format!("metadata.name={IDENTITY_CONFIGMAP}")),
    )
    .default_backoff()
    .applied_objects();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let Ok(cm) = event else { continue };
            let marked = cm.data.as_ref().is_some_and(|d| d.contains_key(DISCONNECTED));
            if *tx.borrow() != marked {
                let _ = tx.send(marked);
            }
        }
    });
    Ok(rx)
}
