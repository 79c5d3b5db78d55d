//! Orphans: twins on the control plane whose local claim is gone although claimsync never saw it deleted (its
//! finalizer removed by hand, the app cluster rebuilt). They are never deleted automatically; each is reported once
//! (log and an Event on claimsync) and kept in a list the metrics and the shim read. `claimsync restore` brings
//! their claims back. Reads only.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use tracing::warn;

use super::kind_context::api_resource;
use crate::model::kind::ClaimKind;
use crate::model::naming::{origin_of, remote_name, written_by_other};
use crate::model::notes::bounded_note;
use crate::model::orphans::Orphans;
use crate::sync::caches::Cache;
use crate::sync::context::Context;

/// How often each kind's twins are compared with its local claims.
const SCAN_EVERY: Duration = Duration::from_secs(30);

/// Compares the twins of one kind with its local claims every half minute while the link is up. Both sides come
/// from the controller's watch caches; a twin that looks orphaned for the first time is confirmed with a GET of its
/// claim, so a claim the cache has not caught up with is never reported.
pub async fn watch(ctx: Arc<Context>, kind: ClaimKind, claims: Cache<DynamicObject>, twins: Cache<DynamicObject>) {
    let resource = api_resource(&kind);
    if !claims.filled().await || !twins.filled().await {
        return;
    }
    loop {
        if ctx.link_state().is_up() {
            let known = ctx.orphans.lock().expect("orphans lock").clone();
            let mut found = Orphans::default();
            for twin in twins
                .store
                .state()
                .iter()
                .filter(|t| t.metadata.deletion_timestamp.is_none())
            {
                let labels = serde_json::to_value(twin.labels()).unwrap_or_default();
                // Another app cluster's twin (the same cluster id by mistake) is not this one's orphan.
                if written_by_other(&labels, &ctx.cluster_uid).is_some() {
                    continue;
                }
                let Some((namespace, name)) = origin_of(&labels, &ctx.cluster_id) else {
                    continue;
                };
                if remote_name(kind.family, &name, &namespace, &ctx.cluster_id) != twin.name_any()
                    || !ctx.namespace_selected(&namespace)
                {
                    continue;
                }
                let local = ObjectRef::new_with(&name, resource.clone()).within(&namespace);
                if claims.store.get(&local).is_some() {
                    continue;
                }
                let key = format!("{}/{} {namespace}/{name}", kind.group, kind.kind);
                if known.contains(&key) || claim_is_gone(&ctx, &resource, &namespace, &name).await {
                    found.insert(key, twin.name_any());
                }
            }
            report(&ctx, &kind, found).await;
        }
        tokio::time::sleep(SCAN_EVERY).await;
    }
}

/// Whether the app cluster says the claim does not exist (an error of any other kind: not known, not reported).
async fn claim_is_gone(ctx: &Context, resource: &ApiResource, namespace: &str, name: &str) -> bool {
    let api = Api::<DynamicObject>::namespaced_with(ctx.local.clone(), namespace, resource);
    matches!(api.get_opt(name).await, Ok(None))
}

/// Keeps this kind's part of the orphan list current and says each new orphan once.
async fn report(ctx: &Context, kind: &ClaimKind, found: Orphans) {
    let prefix = format!("{}/{} ", kind.group, kind.kind);
    let new: Vec<(String, String)> = {
        let mut orphans = ctx.orphans.lock().expect("orphans lock");
        let new = orphans.replace_kind(&prefix, found);
        ctx.metrics.orphans.set(orphans.len() as i64);
        new
    };
    for (claim, twin) in new {
        let message = format!(
            "twin {}/{twin} has no local claim {claim} (it went without claimsync seeing a delete); the twin is kept, \
             and `claimsync restore` creates the claim again",
            ctx.claim_namespace
        );
        warn!(%claim, %twin, "orphaned twin: {message}");
        // The twin as the related object: Events about one object with the same reason are otherwise merged.
        let related = ObjectReference {
            api_version: Some(api_resource(kind).api_version),
            kind: Some(kind.kind.clone()),
            name: Some(twin.clone()),
            namespace: Some(ctx.claim_namespace.clone()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "OrphanedTwin".into(),
            note: Some(bounded_note(&message)),
            action: "FindOrphans".into(),
            secondary: Some(related),
        };
        if let Err(e) = ctx.recorder.publish(&event, &ctx.reporting_object).await {
            warn!(error = %e, "could not publish an Event about an orphan");
        }
    }
}
