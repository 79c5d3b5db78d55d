//! Events down: what Crossplane records about a remote claim (core/v1 Events in the claim namespace) is mirrored,
//! once, as an Event on the local claim. De-duplicated by the journal, and by the local Events when the journal
//! is new, so a restart publishes nothing twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event as RemoteEvent;
use k8s_openapi::api::events::v1::Event as LocalEvent;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

use crate::error::{Error, KubeContext, Side, absent_if_not_found};
use crate::model::naming::{origin_of, remote_name, written_by_other};
use crate::model::notes::mirrored_note;
use crate::sync::caches::kind_key;
use crate::sync::context::Context;

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
    let mut mirrored = Mirrored::default();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if let Err(e) = mirror(&ctx, &mut mirrored, &event).await {
                    warn!(event = %event.name_any(), error = %e, "could not mirror a control plane Event");
                }
            }
            Err(e) => debug!(error = %e, "watching the control plane's Events"),
        }
    }
}

/// What was mirrored onto local claims before this process started, per namespace: listed once per namespace (the
/// journal may be new and not know), then kept up to date with what this process publishes.
#[derive(Default)]
struct Mirrored {
    by_namespace: HashMap<String, HashSet<(String, String, String)>>,
}

impl Mirrored {
    /// Whether (claim uid, reason, note) is there in `namespace`, listing its Events the first time.
    async fn contains(
        &mut self,
        ctx: &Context,
        namespace: &str,
        key: &(String, String, String),
    ) -> Result<bool, Error> {
        if !self.by_namespace.contains_key(namespace) {
            let listed = Api::<LocalEvent>::namespaced(ctx.local.clone(), namespace)
                .list(&ListParams::default())
                .await
                .context(Side::App, "list Events", namespace)?;
            let seen = listed
                .items
                .into_iter()
                .filter_map(|e| {
                    let regarding = e.regarding?.uid?;
                    Some((regarding, e.reason?, e.note?))
                })
                .collect();
            self.by_namespace.insert(namespace.to_string(), seen);
        }
        Ok(self.by_namespace.get(namespace).is_some_and(|seen| seen.contains(key)))
    }

    fn insert(&mut self, namespace: &str, key: (String, String, String)) {
        self.by_namespace.entry(namespace.to_string()).or_default().insert(key);
    }
}

/// Mirrors one remote Event onto the local claim whose twin it is about: a constant number of calls per Event
/// (the twin and the local claim come from the controllers' caches).
async fn mirror(ctx: &Context, mirrored: &mut Mirrored, remote: &RemoteEvent) -> Result<(), Error> {
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
    let Some((group, _)) = api_version.split_once('/') else {
        return Ok(());
    };
    // Only Events about twins of a kind whose controller runs (and so whose caches are filled).
    let Some(caches) = ctx.caches.kind(&kind_key(group, kind)) else {
        return Ok(());
    };
    let twin_ref = ObjectRef::new_with(name, caches.resource.clone()).within(&ctx.claim_namespace);
    let remote_claim = match caches.twins.store.get(&twin_ref) {
        Some(twin) => (*twin).clone(),
        // A twin made a moment ago may not be in the cache yet: one read.
        None => {
            let twins =
                Api::<DynamicObject>::namespaced_with(ctx.remote.clone(), &ctx.claim_namespace, &caches.resource);
            let object = format!("{}/{name}", ctx.claim_namespace);
            match absent_if_not_found(twins.get(name).await).context(Side::ControlPlane, "get claim", &object)? {
                Some(twin) => twin,
                None => return Ok(()),
            }
        }
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
    if remote_name(caches.family, &local_name, &namespace, &ctx.cluster_id) != *name {
        debug!(remote = %name, "labels name a local claim whose twin has another name; not mirrored");
        return Ok(());
    }
    if !ctx.namespace_selected(&namespace) {
        return Ok(());
    }
    let local_ref = ObjectRef::new_with(&local_name, caches.resource.clone()).within(&namespace);
    let Some(local) = caches.claims.store.get(&local_ref) else {
        return Ok(());
    };
    let local_object = format!("{namespace}/{local_name}");
    let reason = remote.reason.clone().unwrap_or_else(|| "ControlPlaneEvent".into());
    let note = mirrored_note(remote.message.as_deref().unwrap_or_default());
    let key = (local.uid().unwrap_or_default(), reason.clone(), note.clone());
    if !mirrored.contains(ctx, &namespace, &key).await? {
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
            .publish(&event, &local.object_ref(&caches.resource))
            .await
            .context(Side::App, "publish Event on claim", &local_object)?;
        mirrored.insert(&namespace, key);
    }
    ctx.journal.record_event_mirrored(uid, count)?;
    Ok(())
}
