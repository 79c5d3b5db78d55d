//! What makes a claim's reconcile happen besides its own watch events: a change of its twin or of the twin's
//! Secret (mapped back only through the name claimsync computes), its namespace joining or leaving the selection,
//! the link's state flipping; and the clock of each claim's wait for its reconcile (and the per-claim state a gone
//! claim leaves). No decisions about claims.

use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::broadcast;
use tracing::{debug, warn};

use super::arrivals::arrival_key;
use super::kind_context::KindContext;
use crate::model::naming::{origin_of, written_by_other};
use crate::model::plan::Family;
use crate::sync::caches::Cache;
use crate::sync::context::Context;
use crate::sync::store::{Store, shrink_map_when_sparse};

use super::kind_context::ClaimRef;

/// The local claims' watch events, each starting the clock of its claim's wait for a reconcile (a deleted claim
/// stops it).
pub(super) fn clocked<S>(events: S, kctx: Arc<KindContext>) -> impl Stream<Item = S::Item> + Send
where
    S: Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Send,
{
    events.inspect(move |event| match event {
        Ok(watcher::Event::Apply(claim) | watcher::Event::InitApply(claim)) => kctx.arrivals.note(
            arrival_key(&claim.namespace().unwrap_or_default(), &claim.name_any()),
            Instant::now(),
        ),
        Ok(watcher::Event::Delete(claim)) => forget(&kctx, claim),
        _ => {}
    })
}

/// A claim that is gone takes its per-claim state with it, however it went (a failing claim is never reconciled
/// again, a claim whose finalizer was removed by hand is never released): its wait, its retry backoff, its phase in
/// the metrics, its twin's entry in the origin index (put back if the twin changes later). Called on its Delete
/// event, and after a reconcile or retry that ended once the claim was already gone (it wrote its state back).
pub(super) fn forget(kctx: &KindContext, claim: &DynamicObject) {
    let (namespace, name) = (claim.namespace().unwrap_or_default(), claim.name_any());
    kctx.arrivals.forget(&arrival_key(&namespace, &name));
    let key = kctx.key(&namespace, &name).to_string();
    kctx.ctx.succeeded(&key);
    kctx.ctx.metrics.forget(&key);
    let twin = kctx.facts.rules.remote_name(&name, &namespace, &kctx.ctx.cluster_id);
    let mut origins = kctx.origins.lock().expect("origin index");
    origins.remove(&twin);
    shrink_map_when_sparse(&mut origins);
}

/// The twins' changes, and the mapper from a twin to the local claim it was made for (which also indexes the
/// twin's name, so that its Secret, bearing that name, finds the claim too). The twin watch lists every twin
/// first, so the index is complete.
pub(super) fn twins<S>(
    kctx: &Arc<KindContext>,
    claims: &Cache<DynamicObject>,
    twin_events: S,
) -> (
    impl Stream<Item = Result<DynamicObject, watcher::Error>> + Send + use<S>,
    impl Fn(DynamicObject) -> Option<ClaimRef> + Send + Sync + use<S>,
)
where
    S: Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Send + 'static,
{
    // The twins' watch backs off and keeps its errors to itself: while the control plane refuses every list (a
    // rejected token, rotated in) a stream of errors would starve the local claims' watch, so the controller's
    // store never got ready and no claim was told why. The link probe says what is wrong, on every claim.
    let changes = twin_events
        .touched_objects()
        .filter_map(|event| quietly("the control plane's claims", event));
    let (ctx, resource, rules) = (kctx.ctx.clone(), kctx.resource.clone(), kctx.facts.rules);
    let (mapped, store, index) = (kctx.clone(), claims.store.clone(), kctx.origins.clone());
    let mapper = move |remote: DynamicObject| {
        let target = local_ref(&remote, rules, &ctx.cluster_id, &ctx.cluster_uid, &resource);
        if let Some(target) = &target {
            index
                .lock()
                .expect("origin index")
                .insert(remote.name_any(), target.clone());
            note_arrival(&mapped, &store, target);
        }
        target
    };
    (changes, mapper)
}

/// The claims whose twin's Secret changed on the control plane; every claim of the kind when changes were missed
/// (a burst larger than the channel holds), since which of them changed is not known.
pub(super) fn secrets(
    kctx: &Arc<KindContext>,
    claims: &Cache<DynamicObject>,
) -> impl Stream<Item = ClaimRef> + Send + use<> {
    let (noted, store, index) = (kctx.clone(), claims.store.clone(), kctx.origins.clone());
    let resource = kctx.resource.clone();
    broadcast_stream(kctx.ctx.caches.secret_changes.subscribe()).flat_map(move |heard| {
        let targets: Vec<ClaimRef> = match heard {
            Heard::Said(secret) => index.lock().expect("origin index").get(&secret).cloned().into_iter().collect(),
            Heard::Missed(missed) => {
                warn!(missed, kind = %resource.kind, "missed Secret changes of the control plane; looking at every claim of the kind");
                all_claims(&store, &resource)
            }
        };
        for target in &targets {
            note_arrival(&noted, &store, target);
        }
        futures::stream::iter(targets)
    })
}

/// Every claim of the kind in the cache.
fn all_claims(store: &Store<DynamicObject>, resource: &ApiResource) -> Vec<ClaimRef> {
    store
        .state()
        .iter()
        .map(|c| ObjectRef::from_obj_with(c.as_ref(), resource.clone()))
        .collect()
}

/// The claims of each namespace that joins or leaves the selection: looked at now, not at their next change.
pub(super) fn namespaces(
    kctx: &Arc<KindContext>,
    claims: &Cache<DynamicObject>,
) -> impl Stream<Item = ClaimRef> + Send + use<> {
    let (joining, store, resource) = (kctx.clone(), claims.store.clone(), kctx.resource.clone());
    broadcast_stream(kctx.ctx.namespace_changes.subscribe()).flat_map(move |heard| {
        let refs: Vec<ClaimRef> = match heard {
            Heard::Said(namespace) => store
                .state()
                .iter()
                .filter(|c| c.namespace().as_deref() == Some(namespace.as_str()))
                .map(|c| ObjectRef::from_obj_with(c.as_ref(), resource.clone()))
                .collect(),
            // Which namespaces joined or left is not known: every claim is looked at.
            Heard::Missed(missed) => {
                warn!(missed, kind = %resource.kind, "missed namespace selection changes; looking at every claim of the kind");
                all_claims(&store, &resource)
            }
        };
        for claim in &refs {
            joining.arrivals.note(
                arrival_key(claim.namespace.as_deref().unwrap_or_default(), &claim.name),
                Instant::now(),
            );
        }
        futures::stream::iter(refs)
    })
}

/// A signal for each change of the link's declared state: lost, every claim says so (and waits); back, every claim
/// is looked at again and what waited goes up. The controller keeps its watches and caches either way.
pub(super) fn link(ctx: &Context) -> impl Stream<Item = ()> + Send + use<> {
    futures::stream::unfold(ctx.link.clone(), |mut link| async move {
        link.changed().await.ok()?;
        Some(((), link))
    })
}

/// Starts the wait of the local claim `target` for its reconcile, if the claim is there to be reconciled (a
/// twin or Secret whose claim is gone would leave a clock no reconcile stops).
fn note_arrival(kctx: &KindContext, claims: &Store<DynamicObject>, target: &ClaimRef) {
    if claims.get(target).is_some() {
        kctx.arrivals.note(
            arrival_key(target.namespace.as_deref().unwrap_or_default(), &target.name),
            Instant::now(),
        );
    }
}

/// What a broadcast receiver hears: a message, or that it missed some (how many) because it lagged behind.
#[derive(Debug, PartialEq)]
enum Heard<T> {
    Said(T),
    Missed(u64),
}

/// The messages of a broadcast channel as a stream; a receiver that lags says so instead of skipping silently, so
/// that what it missed is looked at anyway.
fn broadcast_stream<T: Clone + Send + 'static>(
    receiver: broadcast::Receiver<T>,
) -> impl Stream<Item = Heard<T>> + Send {
    futures::stream::unfold(receiver, |mut receiver| async move {
        match receiver.recv().await {
            Ok(item) => Some((Heard::Said(item), receiver)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some((Heard::Missed(missed), receiver)),
            Err(broadcast::error::RecvError::Closed) => None,
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

/// The local claim a remote claim stands for: named by its origin labels, and only if the remote claim bears the
/// name claimsync computes for that local claim (labels are hints anyone on the control plane can write).
fn local_ref(
    remote: &DynamicObject,
    rules: &dyn Family,
    cluster_id: &str,
    cluster_uid: &str,
    ar: &ApiResource,
) -> Option<ClaimRef> {
    let labels = serde_json::to_value(remote.labels()).ok()?;
    if written_by_other(&labels, cluster_uid).is_some() {
        return None;
    }
    let (namespace, name) = origin_of(&labels, cluster_id)?;
    (rules.remote_name(&name, &namespace, cluster_id) == remote.name_any())
        .then(|| ObjectRef::new_with(&name, ar.clone()).within(&namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lagging_receiver_says_it_missed_changes_instead_of_skipping_them() {
        let (sender, receiver) = broadcast::channel(2);
        for secret in ["a", "b", "c", "d", "e"] {
            sender.send(secret.to_string()).unwrap();
        }
        drop(sender);
        let heard: Vec<Heard<String>> = broadcast_stream(receiver).collect().await;
        assert_eq!(
            heard,
            [
                Heard::Missed(3),
                Heard::Said("d".to_string()),
                Heard::Said("e".to_string())
            ]
        );
    }
}
