//! The claim controller of one kind: its watches (local claims, remote twins, remote Secrets), the per-kind
//! context, and the entry of each reconcile, which hands a live claim to `reconcile.rs` and a deleted one to
//! `cleanup.rs`. The rules are the pure functions of `model`; these files do the I/O.

mod arrivals;
mod cleanup;
mod kind_context;
mod reconcile;
mod secret;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use self::arrivals::arrival_key;
use self::kind_context::KindContext;
pub use self::kind_context::api_resource;
use crate::context::Context;
use crate::error::Error;
use crate::model::conditions::Reason;
use crate::model::fields::pack;
use crate::model::kind::ClaimKind;
use crate::model::naming::{origin_of, remote_claim_name, written_by_other};
use crate::model::vocabulary::{LAST_APPLIED, MANAGER_DOWN, MANAGER_UP, ORIGIN_CLUSTER};
use crate::sync::caches::{Cache, KindCaches, kind_key};
use crate::sync::orphans;

/// Starts the controller of one claim kind; it runs until the returned task is aborted.
/// A withdrawn kind's controller watches its local claims only: the control plane has nothing of it left to watch.
pub async fn start(ctx: Arc<Context>, kind: ClaimKind, withdrawn: bool) -> JoinHandle<()> {
    let resource = api_resource(&kind);
    let (twins, twin_events) = Cache::fill(
        reflector::store::Writer::<DynamicObject>::new(resource.clone()),
        watcher(
            Api::<DynamicObject>::namespaced_with(ctx.remote.clone(), &ctx.claim_namespace, &resource),
            watcher::Config::default().labels(&format!("{ORIGIN_CLUSTER}={}", ctx.cluster_id)),
        )
        .default_backoff()
        .modify(slim),
    );
    let kctx = Arc::new(KindContext::new(ctx.clone(), kind.clone(), withdrawn, twins.clone()));
    let orphan_twins = twins.clone();
    // The controller is driven by a claims cache of ours, not one of its own making, so that tasks other than the
    // controller can wait for its first listing (see `Cache`).
    let (claims, claim_events) = Cache::fill(
        reflector::store::Writer::<DynamicObject>::new(resource.clone()),
        watcher(
            Api::<DynamicObject>::all_with(ctx.local.clone(), &resource),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(slim),
    );
    // Every claim event starts the clock of the claim's wait for its reconcile; a deleted claim stops it.
    let arriving = kctx.clone();
    let claim_events = claim_events.inspect(move |event| match event {
        Ok(watcher::Event::Apply(claim) | watcher::Event::InitApply(claim)) => arriving.arrivals.note(
            arrival_key(&claim.namespace().unwrap_or_default(), &claim.name_any()),
            Instant::now(),
        ),
        Ok(watcher::Event::Delete(claim)) => arriving
            .arrivals
            .forget(&arrival_key(&claim.namespace().unwrap_or_default(), &claim.name_any())),
        _ => {}
    });
    let config = controller::Config::default().concurrency(ctx.concurrency);
    let controller =
        Controller::for_stream_with(claim_events.applied_objects(), claims.store.clone(), resource.clone())
            .with_config(config);
    ctx.caches.register(
        &kind_key(&kind.group, &kind.kind),
        KindCaches {
            resource: resource.clone(),
            twins,
            claims: claims.clone(),
        },
    );
    // What the in-sync announcement waits for: every selected claim there is when the controller has listed.
    ctx.sync.kind_started();
    let (tracker, tracked_kctx) = (claims.clone(), kctx.clone());
    tokio::spawn(async move {
        // A controller replaced before it listed (its watch dropped) counts as listed with nothing.
        let selected = if tracker.filled().await {
            tracker
                .store
                .state()
                .into_iter()
                .filter(|c| tracked_kctx.ctx.namespace_selected(&c.namespace().unwrap_or_default()))
                .map(|c| tracked_kctx.key_of(&c).to_string())
                .collect::<Vec<_>>()
        } else {
            Vec::new()
        };
        tracked_kctx.ctx.sync.kind_listed(selected);
    });

    // A change of a twin, or of its Secret (which bears the twin's name), reconciles the local claim it was made
    // for. The twin watch lists every twin first, so the name index is complete.
    let origins: Arc<Mutex<HashMap<String, ObjectRef<DynamicObject>>>> = Arc::default();
    let (cluster_id, cluster_uid) = (ctx.cluster_id.clone(), ctx.cluster_uid.clone());
    let (ar, index) = (resource.clone(), origins.clone());
    let (mapped, mapped_claims) = (kctx.clone(), claims.store.clone());
    let claim_mapper = move |remote: DynamicObject| {
        let target = local_ref(&remote, &cluster_id, &cluster_uid, &ar);
        if let Some(target) = &target {
            index
                .lock()
                .expect("origin index")
                .insert(remote.name_any(), target.clone());
            note_arrival(&mapped, &mapped_claims, target);
        }
        target
    };
    let (noted, noted_claims) = (kctx.clone(), claims.store.clone());
    let secrets_changed = broadcast_stream(ctx.caches.secret_changes.subscribe()).filter_map(move |secret| {
        let target = origins.lock().expect("origin index").get(&secret).cloned();
        if let Some(target) = &target {
            note_arrival(&noted, &noted_claims, target);
        }
        futures::future::ready(target)
    });

    // A namespace that joins or leaves the selection has its claims looked at now, not at their next change.
    let (selected_claims, claims_resource, joining) = (claims.store.clone(), resource.clone(), kctx.clone());
    let joined_or_left = broadcast_stream(ctx.namespace_changes.subscribe()).flat_map(move |namespace| {
        let refs: Vec<ObjectRef<DynamicObject>> = selected_claims
            .state()
            .iter()
            .filter(|c| c.namespace().as_deref() == Some(namespace.as_str()))
            .map(|c| ObjectRef::from_obj_with(c.as_ref(), claims_resource.clone()))
            .collect();
        for claim in &refs {
            joining.arrivals.note(
                arrival_key(claim.namespace.as_deref().unwrap_or_default(), &claim.name),
                Instant::now(),
            );
        }
        futures::stream::iter(refs)
    });
    let controller = if withdrawn {
        controller
    } else {
        // The twins' watch backs off and keeps its errors to itself: while the control plane refuses every list (a
        // rejected token, rotated in) a stream of errors would starve the local claims' watch, so the controller's
        // store never got ready and no claim was told why. The link probe says what is wrong, on every claim.
        let twin_changes = twin_events
            .touched_objects()
            .filter_map(|event| quietly("the control plane's claims", event));
        controller
            .watches_stream_with(twin_changes, claim_mapper, resource.clone())
            .reconcile_on(secrets_changed)
    };
    let controller = controller
        .reconcile_on(joined_or_left)
        .reconcile_all_on(link_changes(&ctx))
        .run(reconcile, error_policy, kctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "claim reconcile");
            }
        });
    info!(kind = %kind.kind, version = %kind.api_version(), withdrawn, "claim controller started");
    let orphans = async move {
        if !withdrawn {
            orphans::watch(ctx.clone(), kind.clone(), claims, orphan_twins).await;
        }
    };
    // The orphan scan lives and dies with the controller.
    tokio::spawn(async move {
        tokio::join!(controller, orphans);
    })
}

/// Starts the wait of the local claim `target` for its reconcile, if the claim is there to be reconciled (a
/// twin or Secret whose claim is gone would leave a clock no reconcile stops).
fn note_arrival(kctx: &KindContext, claims: &reflector::Store<DynamicObject>, target: &ObjectRef<DynamicObject>) {
    if claims.get(target).is_some() {
        kctx.arrivals.note(
            arrival_key(target.namespace.as_deref().unwrap_or_default(), &target.name),
            Instant::now(),
        );
    }
}

/// What a cached claim or twin keeps: of its managed fields only claimsync's own managers' entries for the main
/// resource (the rules read no others: what went up, what came down), their field sets packed into text, and no
/// `kubectl apply` copy of the whole object. The rest was most of a cached claim's size (the nested field sets are
/// many small maps), and a cache of 10,000 claims and their twins held it all. Cached objects are never written
/// back whole.
fn slim(object: &mut DynamicObject) {
    if let Some(entries) = object.metadata.managed_fields.as_mut() {
        entries.retain(|entry| {
            matches!(entry.manager.as_deref(), Some(MANAGER_UP | MANAGER_DOWN))
                && entry.subresource.as_deref().unwrap_or_default().is_empty()
        });
        for entry in entries.iter_mut() {
            if let Some(FieldsV1(set)) = entry.fields_v1.as_mut() {
                pack(set);
            }
        }
    }
    if let Some(annotations) = object.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The messages of a broadcast channel as a stream (a receiver that lags skips what it missed).
fn broadcast_stream<T: Clone + Send + 'static>(receiver: broadcast::Receiver<T>) -> impl Stream<Item = T> + Send {
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(item) => return Some((item, receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// A trigger's event, or nothing for an error, which is logged: the link probe says what is wrong with the control
/// plane, on every claim.
async fn quietly<K>(what: &str, event: Result<K, watcher::Error>) -> Option<Result<K, watcher::Error>> {
    match event {
        Ok(object) => Some(Ok(object)),
        Err(e) => {
            debug!(error = %e, "watching {what}");
            None
        }
    }
}

/// A signal for each change of the link's declared state: lost, every claim says so (and waits); back, every claim
/// is looked at again and what waited goes up. The controller keeps its watches and caches either way.
fn link_changes(ctx: &Context) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(ctx.link.clone(), |mut link| async move {
        link.changed().await.ok()?;
        Some(((), link))
    })
}

/// The local claim a remote claim stands for: named by its origin labels, and only if the remote claim bears the
/// name claimsync computes for that local claim (labels are hints anyone on the control plane can write).
fn local_ref(
    remote: &DynamicObject,
    cluster_id: &str,
    cluster_uid: &str,
    ar: &ApiResource,
) -> Option<ObjectRef<DynamicObject>> {
    let labels = serde_json::to_value(remote.labels()).ok()?;
    if written_by_other(&labels, cluster_uid).is_some() {
        return None;
    }
    let (namespace, name) = origin_of(&labels, cluster_id)?;
    (remote_claim_name(&name, &namespace, cluster_id) == remote.name_any())
        .then(|| ObjectRef::new_with(&name, ar.clone()).within(&namespace))
}

fn error_policy(claim: Arc<DynamicObject>, error: &Error, kctx: Arc<KindContext>) -> Action {
    let key = kctx.key_of(&claim).to_string();
    let delay = kctx.ctx.next_retry(&key);
    warn!(claim = %key, error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// How soon a claim that changed under a write is looked at again (its new version is on its way anyway).
const AFTER_CONFLICT: Duration = Duration::from_millis(500);
/// The longest one reconcile may take. A request into a link that blackholes hangs far longer than that (the
/// client's read timeout is kept long for watches); bounded here, the claim is retried and sees the link's state.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(20);

async fn reconcile(claim: Arc<DynamicObject>, kctx: Arc<KindContext>) -> Result<Action, Error> {
    let namespace = claim.namespace().unwrap_or_default();
    if let Some(wait) = kctx
        .arrivals
        .take(&arrival_key(&namespace, &claim.name_any()), Instant::now())
    {
        kctx.ctx.metrics.waited(wait);
    }
    let key = kctx.key_of(&claim).to_string();
    let span = info_span!("claim", key = %key);
    let result = async {
        if !kctx.ctx.namespace_selected(&namespace) {
            // Another claimsync's business, unless this one held it: then its namespace left the selection.
            if cleanup::held_by_us(&kctx, &claim) {
                let message = format!(
                    "namespace {namespace} no longer matches this claimsync's --namespace-selector: the claim is \
                     released and no longer replicated; its twin stays on the control plane"
                );
                return cleanup::release(&kctx, &claim, "NotSelected", Reason::NotSelected, message).await;
            }
            return Ok(Action::await_change());
        }
        if claim.meta().deletion_timestamp.is_some() {
            return cleanup::cleanup(&kctx, &claim).await;
        }
        reconcile::sync(&kctx, &claim).await
    }
    .instrument(span);
    let result = match tokio::time::timeout(RECONCILE_TIMEOUT, result).await {
        Ok(result) => result,
        Err(_) => Err(Error::Invalid {
            object: key.clone(),
            message: format!(
                "no answer within {}s (the control plane may be unreachable); retrying",
                RECONCILE_TIMEOUT.as_secs()
            ),
        }),
    };
    let result = match result {
        // The claim changed under a write: nothing was undone; look again at its new version.
        Err(e) if e.is_conflict() => {
            debug!(claim = %key, error = %e, "the claim changed meanwhile; looking again");
            Ok(Action::requeue(AFTER_CONFLICT))
        }
        other => other,
    };
    if result.is_ok() {
        kctx.ctx.succeeded(&key);
        kctx.ctx.sync.done(&key);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slim_keeps_claimsyncs_own_field_sets_packed_and_drops_the_rest() {
        let mut claim: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "g/v1", "kind": "K",
            "metadata": {"name": "a", "namespace": "ns",
                "annotations": {LAST_APPLIED: "{}", "keep": "me"},
                "managedFields": [
                    {"manager": MANAGER_UP, "operation": "Apply", "fieldsV1": {"f:spec": {"f:size": {}}}},
                    {"manager": MANAGER_DOWN, "operation": "Apply", "subresource": "status",
                     "fieldsV1": {"f:status": {"f:conditions": {}}}},
                    {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {"f:other": {}}}},
                ]},
            "spec": {"size": 1}
        }))
        .unwrap();
        slim(&mut claim);
        let entries = claim.metadata.managed_fields.as_ref().unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].manager.as_deref(), Some(MANAGER_UP));
        let json = serde_json::to_value(&claim).unwrap();
        assert!(json["metadata"]["managedFields"][0]["fieldsV1"].is_string(), "{json}");
        assert_eq!(
            crate::model::fields::owned_fields(&json, |m| m == MANAGER_UP),
            Some(json!({"f:spec": {"f:size": {}}}))
        );
        assert_eq!(claim.annotations().len(), 1);
        assert_eq!(claim.data["spec"]["size"], 1);
    }
}
