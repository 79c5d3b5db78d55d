//! What makes a claim's reconcile happen besides its own watch events: a change of its twin or of the twin's
//! Secret (mapped back only through the name claimsync computes), its namespace joining or leaving the selection,
//! the link's state flipping; and the clock of each claim's wait for its reconcile. No decisions about claims.

use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::broadcast;
use tracing::debug;

use super::arrivals::arrival_key;
use super::kind_context::KindContext;
use crate::model::naming::{origin_of, written_by_other};
use crate::model::plan::Family;
use crate::sync::caches::Cache;
use crate::sync::context::Context;

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
        Ok(watcher::Event::Delete(claim)) => kctx
            .arrivals
            .forget(&arrival_key(&claim.namespace().unwrap_or_default(), &claim.name_any())),
        _ => {}
    })
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

/// The claims whose twin's Secret changed on the control plane.
pub(super) fn secrets(
    kctx: &Arc<KindContext>,
    claims: &Cache<DynamicObject>,
) -> impl Stream<Item = ClaimRef> + Send + use<> {
    let (noted, store, index) = (kctx.clone(), claims.store.clone(), kctx.origins.clone());
    broadcast_stream(kctx.ctx.caches.secret_changes.subscribe()).filter_map(move |secret| {
        let target = index.lock().expect("origin index").get(&secret).cloned();
        if let Some(target) = &target {
            note_arrival(&noted, &store, target);
        }
        futures::future::ready(target)
    })
}

/// The claims of each namespace that joins or leaves the selection: looked at now, not at their next change.
pub(super) fn namespaces(
    kctx: &Arc<KindContext>,
    claims: &Cache<DynamicObject>,
) -> impl Stream<Item = ClaimRef> + Send + use<> {
    let (joining, store, resource) = (kctx.clone(), claims.store.clone(), kctx.resource.clone());
    broadcast_stream(kctx.ctx.namespace_changes.subscribe()).flat_map(move |namespace| {
        let refs: Vec<ClaimRef> = store
            .state()
            .iter()
            .filter(|c| c.namespace().as_deref() == Some(namespace.as_str()))
            .map(|c| ObjectRef::from_obj_with(c.as_ref(), resource.clone()))
            .collect();
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
fn note_arrival(kctx: &KindContext, claims: &reflector::Store<DynamicObject>, target: &ClaimRef) {
    if claims.get(target).is_some() {
        kctx.arrivals.note(
            arrival_key(target.namespace.as_deref().unwrap_or_default(), &target.name),
            Instant::now(),
        );
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
