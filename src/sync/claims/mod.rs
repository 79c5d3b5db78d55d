//! The claim controller of one kind: its watches (local claims, remote twins, remote Secrets) and what triggers a
//! claim's reconcile, run by `runner.rs`. Each reconcile (`reconcile.rs`) has the executor (`executor.rs`) carry
//! out the steps `model::plan` decides; these files do the I/O and decide nothing.

mod arrivals;
mod executor;
mod finalizer;
mod kind_context;
mod orphans;
mod reconcile;
mod runner;
mod secret;
pub mod status;
mod triggers;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;
use tracing::info;

pub use self::kind_context::api_resource;
use self::kind_context::{ClaimRef, KindContext};
use self::reconcile::{error_policy, reconcile};
use self::runner::Trigger;
use crate::model::fields::pack;
use crate::model::kind::ClaimKind;
use crate::model::vocabulary::{LAST_APPLIED, MANAGER_DOWN, MANAGER_UP, ORIGIN_CLUSTER};
use crate::sync::caches::{Cache, KindCaches, kind_key};
use crate::sync::context::Context;
use crate::sync::store::Store;

/// Starts the controller of one claim kind; it runs until the returned task is aborted.
/// A withdrawn kind's controller watches its local claims only: the control plane has nothing of it left to watch.
pub async fn start(ctx: Arc<Context>, kind: ClaimKind, withdrawn: bool) -> JoinHandle<()> {
    let resource = api_resource(&kind);
    let (twins, twin_events) = Cache::fill(
        watcher(
            Api::<DynamicObject>::namespaced_with(ctx.remote.clone(), &ctx.claim_namespace, &resource),
            watcher::Config::default().labels(&format!("{ORIGIN_CLUSTER}={}", ctx.cluster_id)),
        )
        .default_backoff()
        .modify(slim),
    );
    let kctx = Arc::new(KindContext::new(ctx.clone(), kind.clone(), withdrawn, twins.clone()));
    kctx.track_maps();
    // The controller is driven by a claims cache of ours, not one of its own making, so that tasks other than the
    // controller can wait for its first listing (see `Cache`).
    let (claims, claim_events) = Cache::fill(
        watcher(
            Api::<DynamicObject>::all_with(ctx.local.clone(), &resource),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(slim),
    );
    let claim_events = triggers::clocked(claim_events, kctx.clone());
    ctx.caches.register(
        &kind_key(&kind.group, &kind.kind),
        KindCaches {
            family: kind.family,
            resource: resource.clone(),
            twins: twins.clone(),
            claims: claims.clone(),
        },
    );
    track_listing(claims.clone(), kctx.clone());
    // Every trigger names a claim: its own change, its twin's, its twin's Secret's, its namespace's; the link's
    // names them all.
    let mut sources: Vec<BoxStream<'static, Trigger<ClaimRef>>> = vec![
        listed_then_changed(claim_events, resource.clone()).boxed(),
        triggers::namespaces(&kctx, &claims).map(Trigger::One).boxed(),
        triggers::link(&ctx).map(|()| Trigger::All).boxed(),
    ];
    if !withdrawn {
        let (twin_changes, claim_of_twin) = triggers::twins(&kctx, &claims, twin_events);
        sources.push(
            twin_changes
                .filter_map(move |twin| futures::future::ready(twin.ok().and_then(&claim_of_twin).map(Trigger::One)))
                .boxed(),
        );
        sources.push(triggers::secrets(&kctx, &claims).map(Trigger::One).boxed());
    }
    let (store, every_store, ready_cache) = (claims.store.clone(), claims.store.clone(), claims.clone());
    let gone_store = claims.store.clone();
    let every_kind = resource.clone();
    let run_kctx = kctx.clone();
    let controller = runner::run(
        futures::stream::select_all(sources),
        async move {
            ready_cache.filled().await;
        },
        move |claim: &ClaimRef| store.get(claim),
        move || {
            every_store
                .state()
                .iter()
                .map(|c| ObjectRef::from_obj_with(c.as_ref(), every_kind.clone()))
                .collect()
        },
        usize::from(ctx.concurrency),
        move |claim: Arc<DynamicObject>| reconcile_once(claim, run_kctx.clone(), gone_store.clone()),
    );
    info!(kind = %kind.kind, version = %kind.api_version(), withdrawn, "claim controller started");
    let orphans = async move {
        if !withdrawn {
            orphans::watch(ctx.clone(), kind.clone(), claims, twins).await;
        }
    };
    // The orphan scan lives and dies with the controller.
    tokio::spawn(async move {
        tokio::join!(controller, orphans);
    })
}

/// The claims' own triggers: each change as it comes, and the claims of a listing (the first, or a relist after
/// the watch broke, e.g. while the CRD was deleted and put back) once the listing is done: the cache takes a listing
/// in whole at its end, and a claim triggered before that would not be found in it and be skipped as gone.
fn listed_then_changed<S>(claim_events: S, resource: ApiResource) -> impl futures::Stream<Item = Trigger<ClaimRef>>
where
    S: futures::Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>>,
{
    claim_events
        .scan(Vec::new(), move |listed: &mut Vec<ClaimRef>, event| {
            let of = |claim: &DynamicObject| ObjectRef::from_obj_with(claim, resource.clone());
            let now: Vec<Trigger<ClaimRef>> = match event {
                Ok(watcher::Event::Apply(claim)) => vec![Trigger::One(of(&claim))],
                Ok(watcher::Event::Init) => {
                    listed.clear();
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(claim)) => {
                    listed.push(of(&claim));
                    Vec::new()
                }
                Ok(watcher::Event::InitDone) => std::mem::take(listed).into_iter().map(Trigger::One).collect(),
                Ok(watcher::Event::Delete(_)) | Err(_) => Vec::new(),
            };
            futures::future::ready(Some(futures::stream::iter(now)))
        })
        .flatten()
}

/// One reconcile, its failure turned into a retry after the claim's backoff. A reconcile that ends after its
/// claim's Delete event put the claim's state back (its phase, a backoff): it is taken out again when the claim is
/// no longer in the cache.
async fn reconcile_once(
    claim: Arc<DynamicObject>,
    kctx: Arc<KindContext>,
    claims: Store<DynamicObject>,
) -> Option<Duration> {
    let requeue = match reconcile(claim.clone(), kctx.clone()).await {
        Ok(requeue) => requeue,
        Err(e) => Some(error_policy(&claim, &e, &kctx)),
    };
    if claims
        .get(&ObjectRef::from_obj_with(&*claim, kctx.resource.clone()))
        .is_none()
    {
        triggers::forget(&kctx, &claim);
    }
    requeue
}

/// Tells the in-sync tracker what it waits for: every selected claim there is when the controller has listed.
fn track_listing(claims: Cache<DynamicObject>, kctx: Arc<KindContext>) {
    kctx.ctx.sync.kind_started();
    tokio::spawn(async move {
        // A controller replaced before it listed (its watch dropped) counts as listed with nothing.
        let selected = if claims.filled().await {
            claims
                .store
                .state()
                .into_iter()
                .filter(|c| kctx.ctx.namespace_selected(&c.namespace().unwrap_or_default()))
                .map(|c| kctx.key_of(&c).to_string())
                .collect::<Vec<_>>()
        } else {
            Vec::new()
        };
        kctx.ctx.sync.kind_listed(selected);
    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_listings_claims_are_triggered_once_it_is_done() {
        let resource = ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("g", "v1", "K"));
        let claim = |name: &str| -> DynamicObject {
            serde_json::from_value(json!({"apiVersion": "g/v1", "kind": "K",
                "metadata": {"name": name, "namespace": "ns"}}))
            .unwrap()
        };
        let events = futures::stream::iter(vec![
            Ok(watcher::Event::Apply(claim("x"))),
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(claim("a"))),
            Err(watcher::Error::NoResourceVersion),
            Ok(watcher::Event::InitApply(claim("b"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Delete(claim("b"))),
            Ok(watcher::Event::Apply(claim("a"))),
        ]);
        let named: Vec<String> = listed_then_changed(events, resource)
            .map(|t| match t {
                Trigger::One(claim) => claim.name,
                Trigger::All => "all".to_string(),
            })
            .collect()
            .await;
        assert_eq!(named, ["x", "a", "b", "a"]);
    }

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
