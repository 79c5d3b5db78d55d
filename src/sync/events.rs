//! Events down: what Crossplane records about a remote claim (core/v1 Events in the claim namespace) is mirrored,
//! once, as an Event on the local claim. De-duplicated by the journal, and by the local Events when the journal
//! is new, so a restart publishes nothing twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    let size = Arc::new(AtomicUsize::new(0));
    let weak = Arc::downgrade(&size);
    ctx.metrics.track("mirrored_events", move || {
        weak.upgrade().map(|n| n.load(Ordering::Relaxed))
    });
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if let Err(e) = mirror(&ctx, &mut mirrored, &event).await {
                    warn!(event = %event.name_any(), error = %e, "could not mirror a control plane Event");
                }
                size.store(mirrored.len(), Ordering::Relaxed);
            }
            Err(e) => debug!(error = %e, "watching the control plane's Events"),
        }
    }
}

/// How long a namespace's list of local Events is trusted: the API server keeps an Event an hour by default, so
/// what was listed (and mirrored since) longer ago is gone or listed again; a namespace not looked at for that long
/// is forgotten, so the set follows the Events that exist, not every Event ever mirrored.
const RELIST_AFTER: Duration = Duration::from_secs(3600);

/// A mirrored Event as the local Events show it: the claim's uid, the reason, the note.
type EventKey = (String, String, String);

/// What was mirrored onto local claims, per namespace: listed when first needed (the journal may be new and not
/// know) and again after [`RELIST_AFTER`], kept up to date with what this process publishes in between.
#[derive(Default)]
struct Mirrored {
    by_namespace: HashMap<String, (Instant, HashSet<EventKey>)>,
}

impl Mirrored {
    /// Forgets the namespaces listed longer than [`RELIST_AFTER`] before `now`.
    fn forget_old(&mut self, now: Instant) {
        self.by_namespace
            .retain(|_, (listed, _)| now.duration_since(*listed) < RELIST_AFTER);
    }

    /// Whether (claim uid, reason, note) is there in `namespace`, listing its Events when not known (or no longer).
    async fn contains(
        &mut self,
        ctx: &Context,
        namespace: &str,
        key: &(String, String, String),
    ) -> Result<bool, Error> {
        self.forget_old(Instant::now());
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
            self.by_namespace.insert(namespace.to_string(), (Instant::now(), seen));
        }
        Ok(self
            .by_namespace
            .get(namespace)
            .is_some_and(|(_, seen)| seen.contains(key)))
    }

    /// How many mirrored Events are known, over every namespace.
    fn len(&self) -> usize {
        self.by_namespace.values().map(|(_, seen)| seen.len()).sum()
    }

    fn insert(&mut self, namespace: &str, key: (String, String, String)) {
        if let Some((_, seen)) = self.by_namespace.get_mut(namespace) {
            seen.insert(key);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_listed_longer_ago_than_an_event_lives_are_forgotten() {
        let now = Instant::now();
        let mut mirrored = Mirrored::default();
        let key = ("uid".to_string(), "Reason".to_string(), "note".to_string());
        mirrored.by_namespace.insert(
            "old".into(),
            (
                now - RELIST_AFTER - Duration::from_secs(1),
                HashSet::from([key.clone()]),
            ),
        );
        mirrored
            .by_namespace
            .insert("recent".into(), (now - Duration::from_secs(60), HashSet::new()));
        mirrored.insert("recent", key.clone());
        // A namespace never listed is not started by an insert: it is listed when first needed.
        mirrored.insert("unlisted", key.clone());
        mirrored.forget_old(now);
        assert_eq!(mirrored.by_namespace.len(), 1);
        assert!(mirrored.by_namespace["recent"].1.contains(&key));
    }
}
