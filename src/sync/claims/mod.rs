//! The claim controller of one kind: its watches (local claims, remote twins, remote Secrets) and what triggers a
//! claim's reconcile. Each reconcile (`reconcile.rs`) has the executor (`executor.rs`) carry out the steps
//! `model::plan` decides; these files do the I/O and decide nothing.

mod arrivals;
mod executor;
mod finalizer;
mod kind_context;
mod orphans;
mod reconcile;
mod secret;
pub mod status;
mod triggers;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use self::kind_context::KindContext;
pub use self::kind_context::api_resource;
use self::reconcile::{error_policy, reconcile};
use crate::error::Error;
use crate::model::fields::pack;
use crate::model::kind::ClaimKind;
use crate::model::vocabulary::{LAST_APPLIED, MANAGER_DOWN, MANAGER_UP, ORIGIN_CLUSTER};
use crate::sync::caches::{Cache, KindCaches, kind_key};
use crate::sync::context::Context;

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
    kctx.track_maps();
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
    let claim_events = triggers::clocked(claim_events, kctx.clone());
    let config = controller::Config::default().concurrency(ctx.concurrency);
    let controller =
        Controller::for_stream_with(claim_events.applied_objects(), claims.store.clone(), resource.clone())
            .with_config(config);
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
    let controller = if withdrawn {
        controller
    } else {
        let (twin_changes, claim_of_twin) = triggers::twins(&kctx, &claims, twin_events);
        controller
            .watches_stream_with(twin_changes, claim_of_twin, resource.clone())
            .reconcile_on(triggers::secrets(&kctx, &claims))
    };
    // A reconcile (or its retry's backoff) that ends after its claim's Delete event put the claim's state back:
    // it is taken out again when the claim is no longer in the cache.
    let (store, store_for_errors) = (claims.store.clone(), claims.store.clone());
    let (of_kind, of_kind_for_errors) = (resource.clone(), resource.clone());
    let reconcile_gone_aware = move |claim: Arc<DynamicObject>, kctx: Arc<KindContext>| {
        let (store, of_kind) = (store.clone(), of_kind.clone());
        async move {
            let result = reconcile(claim.clone(), kctx.clone()).await;
            if result.is_ok() && store.get(&ObjectRef::from_obj_with(&*claim, of_kind)).is_none() {
                triggers::forget(&kctx, &claim);
            }
            result
        }
    };
    let error_policy_gone_aware = move |claim: Arc<DynamicObject>, error: &Error, kctx: Arc<KindContext>| {
        let action = error_policy(claim.clone(), error, kctx.clone());
        if store_for_errors
            .get(&ObjectRef::from_obj_with(&*claim, of_kind_for_errors.clone()))
            .is_none()
        {
            triggers::forget(&kctx, &claim);
        }
        action
    };
    let controller = controller
        .reconcile_on(triggers::namespaces(&kctx, &claims))
        .reconcile_all_on(triggers::link(&ctx))
        .run(reconcile_gone_aware, error_policy_gone_aware, kctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "claim reconcile");
            }
        });
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
