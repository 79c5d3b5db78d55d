//! The state shared by every reconciler: both clients, the settings, the journal, the event recorder, the
//! namespace selection, per-claim retry counts, and the tracker that announces, once, that everything is in sync.
//! It holds what `sync`'s controllers share; it must not import any of them (they import it).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use claimsync_state::Journal;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{broadcast, watch};
use tracing::info;

use crate::model::link::LinkState;
use crate::model::orphans::Orphans;
use crate::ops::metrics::Metrics;
use crate::sync::caches::RemoteCaches;
use crate::sync::namespaces::Selection;
use crate::sync::store::{Store, shrink_map_when_sparse, shrink_set_when_sparse};

pub struct Context {
    pub local: Client,
    pub remote: Client,
    pub claim_namespace: String,
    pub cluster_id: String,
    /// The app cluster's kube-system uid, written on twins beside the cluster id.
    pub cluster_uid: String,
    /// Which claimsync this is: its own namespace in the app cluster. Written beside the finalizer on every claim
    /// it holds, so that it never releases a claim another claimsync holds.
    pub instance: String,
    /// `--claim-groups`: the API groups of claim kinds that may be replicated; empty allows every group.
    pub claim_groups: Vec<String>,
    pub journal: Journal,
    pub recorder: Recorder,
    /// Namespaces matching the namespace selector; `None` syncs every namespace.
    pub namespaces: Option<Store<Namespace>>,
    /// Names of namespaces that joined or left the selection, sent after `namespaces` changed.
    pub namespace_changes: broadcast::Sender<String>,
    /// The declared state of the link to the control plane (see sync/link.rs).
    pub link: watch::Receiver<LinkState>,
    /// What claimsync's own Events (about itself, not a claim) are about.
    pub reporting_object: ObjectReference,
    pub metrics: Arc<Metrics>,
    /// Watch caches of the control plane and of each running kind.
    pub caches: RemoteCaches,
    pub concurrency: u16,
    pub sync: SyncTracker,
    /// Twins whose local claim is gone unseen, by claim key (see sync/claims/orphans.rs).
    pub orphans: Mutex<Orphans>,
    failures: Mutex<HashMap<String, ExponentialBackoff>>,
}

/// What a [`Context`] is made of, besides its trackers.
pub struct Settings {
    pub local: Client,
    pub remote: Client,
    pub claim_namespace: String,
    pub cluster_id: String,
    pub cluster_uid: String,
    pub instance: String,
    pub claim_groups: Vec<String>,
    pub journal: Journal,
    pub recorder: Recorder,
    pub selection: Option<Selection>,
    pub link: watch::Receiver<LinkState>,
    pub reporting_object: ObjectReference,
    pub concurrency: u16,
    pub metrics: Arc<Metrics>,
    pub caches: RemoteCaches,
}

impl Context {
    pub fn new(settings: Settings) -> Self {
        let (namespaces, namespace_changes) = match settings.selection {
            Some(Selection { store, changes }) => (Some(store), changes),
            None => (None, broadcast::channel(1).0),
        };
        Context {
            local: settings.local,
            remote: settings.remote,
            claim_namespace: settings.claim_namespace,
            cluster_id: settings.cluster_id,
            cluster_uid: settings.cluster_uid,
            instance: settings.instance,
            claim_groups: settings.claim_groups,
            journal: settings.journal,
            recorder: settings.recorder,
            namespaces,
            namespace_changes,
            link: settings.link,
            reporting_object: settings.reporting_object,
            sync: SyncTracker::new(settings.metrics.clone()),
            metrics: settings.metrics,
            caches: settings.caches,
            concurrency: settings.concurrency.max(1),
            orphans: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// Reports the sizes of the context's maps keyed by claims (`claimsync_tracked_entries`) for as long as it
    /// lives.
    pub fn track_maps(self: &Arc<Self>) {
        let ctx = Arc::downgrade(self);
        self.metrics.track("claim_backoffs", move || {
            ctx.upgrade().map(|c| c.failures.lock().expect("failures lock").len())
        });
        let ctx = Arc::downgrade(self);
        self.metrics.track("orphaned_twins", move || {
            ctx.upgrade().map(|c| c.orphans.lock().expect("orphans lock").len())
        });
        let ctx = Arc::downgrade(self);
        self.metrics
            .track("first_sync_pending", move || ctx.upgrade().map(|c| c.sync.tracked()));
    }

    /// The link's declared state now.
    pub fn link_state(&self) -> LinkState {
        self.link.borrow().clone()
    }

    /// Whether claims in this namespace are replicated.
    pub fn namespace_selected(&self, namespace: &str) -> bool {
        match &self.namespaces {
            None => true,
            Some(store) => store.get(&ObjectRef::new(namespace)).is_some(),
        }
    }

    /// The delay before retrying a claim that failed again: the exponential backoff kube-runtime's watchers use
    /// (backon), from 1s doubling to a minute with jitter, per claim until it succeeds.
    pub fn next_retry(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("failures lock");
        let backoff = failures.entry(key.to_string()).or_insert_with(retry_backoff);
        backoff.next().unwrap_or(MAX_RETRY_DELAY)
    }

    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().expect("failures lock");
        if failures.remove(key).is_some() {
            shrink_map_when_sparse(&mut failures);
        }
    }
}

const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

pub fn retry_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(MAX_RETRY_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Announces, once, that the catalog is replicated and every claim found at start-up was reconciled: a log line and
/// the `claimsync_initial_sync_done` metric.
pub struct SyncTracker {
    state: Mutex<TrackerState>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct TrackerState {
    /// Kinds whose controllers have not listed their claims yet.
    listing: usize,
    pending: HashSet<String>,
    /// Claims reconciled before their kind's listing was counted.
    finished: HashSet<String>,
    seen: usize,
    kinds: usize,
    catalog_ready: bool,
    announced: bool,
}

impl SyncTracker {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        SyncTracker {
            state: Mutex::default(),
            metrics,
        }
    }

    /// A kind's controller started: in sync waits until it has listed its claims.
    pub fn kind_started(&self) {
        let mut state = self.state.lock().expect("tracker lock");
        state.listing += 1;
        tracing::debug!(listing = state.listing, "a kind's controller started");
    }

    /// A kind's controller listed its claims: in sync waits until each of `keys` was reconciled once.
    pub fn kind_listed(&self, keys: impl IntoIterator<Item = String>) {
        let mut state = self.state.lock().expect("tracker lock");
        state.listing = state.listing.saturating_sub(1);
        tracing::debug!(listing = state.listing, "a kind listed its claims");
        state.kinds += 1;
        for key in keys {
            state.seen += 1;
            if !state.finished.contains(&key) {
                state.pending.insert(key);
            }
        }
        self.announce(&mut state);
    }

    /// Claims this tracker holds (none once in sync).
    pub fn tracked(&self) -> usize {
        let state = self.state.lock().expect("tracker lock");
        state.pending.len() + state.finished.len()
    }

    pub fn done(&self, key: &str) {
        let mut state = self.state.lock().expect("tracker lock");
        if state.announced {
            return;
        }
        state.pending.remove(key);
        shrink_set_when_sparse(&mut state.pending);
        state.finished.insert(key.to_string());
        self.announce(&mut state);
    }

    pub fn set_catalog_ready(&self, ready: bool) {
        let mut state = self.state.lock().expect("tracker lock");
        state.catalog_ready = ready;
        self.announce(&mut state);
    }

    /// Whether the catalog has been listed and replicated once.
    pub fn catalog_ready(&self) -> bool {
        self.state.lock().expect("tracker lock").catalog_ready
    }

    fn announce(&self, state: &mut TrackerState) {
        if state.catalog_ready && state.listing == 0 && state.pending.is_empty() && !state.announced {
            state.announced = true;
            state.finished.clear();
            self.metrics.initial_sync_done.set(1);
            info!(
                kinds = state.kinds,
                claims = state.seen,
                "in sync: every claim kind and claim is replicated"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_to_a_minute() {
        let delays: Vec<Duration> = retry_backoff().take(12).collect();
        assert!(
            delays[0] >= Duration::from_secs(1) && delays[0] < Duration::from_secs(3),
            "{delays:?}"
        );
        assert!(delays.iter().all(|d| *d <= 2 * MAX_RETRY_DELAY), "{delays:?}");
        assert!(delays[11] >= MAX_RETRY_DELAY, "{delays:?}");
    }
}
