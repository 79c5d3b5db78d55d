//! Events down: what Crossplane records about a remote claim (core/v1 Events in the claim namespace) is mirrored,
//! once, as an Event on the local claim. De-duplicated by the journal, and by the local Events when the journal
//! is new, so a restart publishes nothing twice.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event as RemoteEvent;
use k8s_openapi::api::events::v1::Event as LocalEvent;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

use crate::context::Context;
use crate::error::{Error, KubeContext, Side, absent_if_not_found};
use crate::model::naming::{origin_of, remote_claim_name, written_by_other};
use crate::model::notes::mirrored_note;

/// Marks of mirrored Events are kept this long.
const REMEMBER: Duration = Duration::from_secs(24 * 3600);

/// Mirrors remote Events for as long as claimsync runs.
pub async fn run(ctx: Arc<Context>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if let Err(e) = ctx.journal.forget_events_before(now.saturating_sub(REMEMBER.as_secs())) {
        warn!(error = %e, "could not forget old Event marks in the journal");
    }
    // Events are matched to claim kinds through the catalog: wait until it is known.
    while !ctx.sync.catalog_ready() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let remote_events = Api::<RemoteEvent>::namespaced(ctx.remote.clone(), &ctx.claim_namespace);
    let mut events = watcher(remote_events, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if let Err(e) = mirror(&ctx, &event).await {
                    warn!(event = %event.name_any(), error = %e, "could not mirror a control plane Event");
                }
            }
            Err(e) => debug!(error = %e, "watching the control plane's Events"),
        }
    }
}

async fn mirror(ctx: &Context, remote: &RemoteEvent) -> Result<(), Error> {
    let Some(uid) = remote.metadata.uid.as_deref() else {
        return Ok(());
    };
    let count = remote.count.unwrap_or(1).max(1) as u64;
    if ctx.journal.event_mirrored(uid, count)? {
        return Ok(());
    }
    let involved = &remote.involved_object;
    let (Some(api_version), Some(kind), Some(name)) = (&involved.api_version, &involved.kind, &involved.name) else {
        return Ok(());
    };
    let Some((group, version)) = api_version.split_once('/') else {
        return Ok(());
    };
    // Only Events about claims of a kind in the catalog.
    let Some(entry) = ctx
        .journal
        .catalog()?
        .into_iter()
        .find(|e| e.group == group && &e.kind == kind)
    else {
        return Ok(());
    };
    let resource = ApiResource {
        group: group.to_string(),
        version: version.to_string(),
        api_version: api_version.clone(),
        kind: kind.clone(),
        plural: entry.plural,
    };
    let remote_claims = Api::<DynamicObject>::namespaced_with(ctx.remote.clone(), &ctx.claim_namespace, &resource);
    let object = format!("{}/{name}", ctx.claim_namespace);
    let Some(remote_claim) =
        absent_if_not_found(remote_claims.get(name).await).context(Side::ControlPlane, "get claim", &object)?
    else {
        return Ok(());
    };
    // The Event must be about the twin as it is now (same uid), and the twin must bear the name claimsync computes
    // for the local claim its labels name: labels and Events are written by anyone on the control plane.
    if involved.uid.is_some() && involved.uid != remote_claim.metadata.uid {
        return Ok(());
    }
    let labels = serde_json::to_value(remote_claim.labels()).unwrap_or_default();
    if written_by_other(&labels, &ctx.cluster_uid).is_some() {
        return Ok(());
    }
    let Some((namespace, local_name)) = origin_of(&labels, &ctx.cluster_id) else {
        return Ok(());
    };
    if remote_claim_name(&local_name, &namespace, &ctx.cluster_id) != *name {
        debug!(remote = %object, "labels name a local claim whose twin has another name; not mirrored");
        return Ok(());
    }
    if !ctx.namespace_selected(&namespace) {
        return Ok(());
    }
    let local_claims = Api::<DynamicObject>::namespaced_with(ctx.local.clone(), &namespace, &resource);
    let local_object = format!("{namespace}/{local_name}");
    let Some(local) = local_claims
        .get_opt(&local_name)
        .await
        .context(Side::App, "get claim", &local_object)?
    else {
        return Ok(());
    };
    let reason = remote.reason.clone().unwrap_or_else(|| "ControlPlaneEvent".into());
    let note = mirrored_note(remote.message.as_deref().unwrap_or_default());
    // A journal that is new may not know what an earlier run mirrored: the local Events do.
    let local_events = Api::<LocalEvent>::namespaced(ctx.local.clone(), &namespace);
    let already = local_events
        .list(&ListParams::default())
        .await
        .context(Side::App, "list Events", &namespace)?;
    let there = already.items.iter().any(|e| {
        e.reason.as_deref() == Some(reason.as_str())
            && e.note.as_deref() == Some(note.as_str())
            && e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == local.meta().uid.as_deref()
    });
    if !there {
        let type_ = if remote.type_.as_deref() == Some("Warning") {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let event = Event {
            type_,
            reason,
            note: Some(note),
            action: "Mirror".into(),
            secondary: None,
        };
        ctx.recorder
            .publish(&event, &local.object_ref(&resource))
            .await
            .context(Side::App, "publish Event on claim", &local_object)?;
    }
    ctx.journal.record_event_mirrored(uid, count)?;
    Ok(())
}
