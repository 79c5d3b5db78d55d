//! claimsync's Prometheus metrics: claims by kind and phase, syncs and their latency per direction, API calls per
//! cluster, verb and code, the link, the journal's size, leadership, orphans, and whether the first full sync is
//! done. Recording only; the controllers call in, the ops server encodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use claimsync_state::Journal;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::model::phase::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindStateLabels {
    /// `offered` (the control plane serves it) or `withdrawn` (its claims only wait to be deleted).
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `up` (to the control plane) or `down` (into the app cluster).
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// `app` or `controlplane`.
    pub cluster: String,
    pub verb: String,
    /// The HTTP status, or `error` when none came back.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    kind: String,
    phase: String,
}

/// The phase of every claim claimsync has looked at, by claim key; counted by kind and phase at each scrape.
#[derive(Clone, Debug, Default)]
struct Phases(Arc<Mutex<HashMap<String, (String, Phase)>>>);

impl Collector for Phases {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = Family::<PhaseLabels, Gauge>::default();
        for (kind, phase) in self.0.lock().expect("phases lock").values() {
            family
                .get_or_create(&PhaseLabels {
                    kind: kind.clone(),
                    phase: phase.as_str().to_string(),
                })
                .inc();
        }
        let metric =
            encoder.encode_descriptor("claims", "Claims by kind and sync phase", None, family.metric_type())?;
        family.encode(metric)
    }
}

/// Claim records the journal wrote, read from the journal at each scrape (0 until `count_journal_writes`).
#[derive(Clone, Debug, Default)]
struct JournalWrites(Arc<OnceLock<Journal>>);

impl Collector for JournalWrites {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let writes = ConstCounter::new(self.0.get().map_or(0, Journal::claim_writes));
        let metric = encoder.encode_descriptor(
            "journal_claim_writes",
            "Claim records written to or removed from the journal since start",
            None,
            writes.metric_type(),
        )?;
        writes.encode(metric)
    }
}

/// How big a map is now, or None once the map is gone (its owner dropped).
type SizeOf = Box<dyn Fn() -> Option<usize> + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: String,
}

/// The long-lived maps keyed by claims, twins or Events, summed by name at each scrape: how an operator (and the
/// churn benchmark) sees that they shrink when their objects go.
#[derive(Clone, Default)]
struct Tracked(Arc<Mutex<Vec<(&'static str, SizeOf)>>>);

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracked")
    }
}

impl Collector for Tracked {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = Family::<MapLabels, Gauge>::default();
        let mut maps = self.0.lock().expect("tracked lock");
        maps.retain(|(map, size)| match size() {
            Some(n) => {
                family
                    .get_or_create(&MapLabels { map: map.to_string() })
                    .inc_by(n as i64);
                true
            }
            None => false,
        });
        let metric = encoder.encode_descriptor(
            "tracked_entries",
            "Entries of claimsync's long-lived maps (by claim, twin or Event), by map",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}

pub struct Metrics {
    registry: Registry,
    phases: Phases,
    tracked: Tracked,
    journal_writes: JournalWrites,
    pub syncs: Family<DirectionLabels, Counter>,
    pub sync_seconds: Family<DirectionLabels, Histogram>,
    pub queue_wait: Histogram,
    pub api_requests: Family<ApiLabels, Counter>,
    pub link_up: Gauge,
    pub leader: Gauge,
    pub journal_bytes: Gauge,
    pub orphans: Gauge,
    pub initial_sync_done: Gauge,
    pub claim_kinds: Family<KindStateLabels, Gauge>,
    pub credential_expires: Gauge,
    pub credential_renewals: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("claimsync");
        let phases = Phases::default();
        registry.register_collector(Box::new(phases.clone()));
        let journal_writes = JournalWrites::default();
        registry.register_collector(Box::new(journal_writes.clone()));
        let tracked = Tracked::default();
        registry.register_collector(Box::new(tracked.clone()));
        let by_claim = Arc::downgrade(&phases.0);
        tracked.0.lock().expect("tracked lock").push((
            "claim_phases",
            Box::new(move || by_claim.upgrade().map(|m| m.lock().expect("phases lock").len())),
        ));
        let syncs = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "syncs",
            "Writes that carried a claim's change up or its status down",
            syncs.clone(),
        );
        let sync_seconds = Family::<DirectionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        });
        registry.register(
            "sync_duration_seconds",
            "How long one sync write took",
            sync_seconds.clone(),
        );
        let queue_wait = Histogram::new([
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]);
        registry.register(
            "queue_wait_seconds",
            "How long a claim's oldest unhandled change waited from its watch event until its reconcile started",
            queue_wait.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "API requests by cluster, verb and response code",
            api_requests.clone(),
        );
        let link_up = Gauge::default();
        registry.register("link_up", "1 while the control plane can be used", link_up.clone());
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica is the one that writes", leader.clone());
        let journal_bytes = Gauge::default();
        registry.register(
            "journal_size_bytes",
            "Size of the journal on disk",
            journal_bytes.clone(),
        );
        let orphans = Gauge::default();
        registry.register(
            "orphaned_twins",
            "Twins whose local claim is gone unseen",
            orphans.clone(),
        );
        let initial_sync_done = Gauge::default();
        registry.register(
            "initial_sync_done",
            "1 once the catalog and every claim found at start were reconciled",
            initial_sync_done.clone(),
        );
        let claim_kinds = Family::<KindStateLabels, Gauge>::default();
        registry.register(
            "claim_kinds",
            "Claim kinds with a running controller, by whether the control plane still offers them",
            claim_kinds.clone(),
        );
        let credential_expires = Gauge::default();
        registry.register(
            "credential_expires_timestamp_seconds",
            "When the control plane token claimsync renews expires (0: not a ServiceAccount token it renews)",
            credential_expires.clone(),
        );
        let credential_renewals = Counter::default();
        registry.register(
            "credential_renewals",
            "Control plane tokens claimsync renewed before they expired",
            credential_renewals.clone(),
        );
        Metrics {
            registry,
            claim_kinds,
            credential_expires,
            credential_renewals,
            phases,
            tracked,
            journal_writes,
            syncs,
            sync_seconds,
            queue_wait,
            api_requests,
            link_up,
            leader,
            journal_bytes,
            orphans,
            initial_sync_done,
        }
    }

    /// Reports the size of a long-lived map as `claimsync_tracked_entries{map}` (summed with others of that name)
    /// for as long as `size` answers; it answers None once the map is gone, and is then forgotten.
    pub fn track(&self, map: &'static str, size: impl Fn() -> Option<usize> + Send + Sync + 'static) {
        self.tracked.0.lock().expect("tracked lock").push((map, Box::new(size)));
    }

    /// Reports the size of `map` (held weakly: it stops when the map is dropped).
    pub fn track_map<K, V, S>(&self, name: &'static str, map: &Arc<Mutex<std::collections::HashMap<K, V, S>>>)
    where
        K: Send + 'static,
        V: Send + 'static,
        S: Send + 'static,
    {
        let map = Arc::downgrade(map);
        self.track(name, move || {
            map.upgrade().map(|m| m.lock().expect("tracked map").len())
        });
    }

    /// Counts the claim records `journal` writes from now on (the first journal given is the one counted).
    pub fn count_journal_writes(&self, journal: &Journal) {
        let _ = self.journal_writes.0.set(journal.clone());
    }

    /// Records a claim's phase (`key` is its journal key, `kind` its kind).
    pub fn set_phase(&self, key: &str, kind: &str, phase: Phase) {
        self.phases
            .0
            .lock()
            .expect("phases lock")
            .insert(key.to_string(), (kind.to_string(), phase));
    }

    /// Forgets a claim that is gone.
    pub fn forget(&self, key: &str) {
        self.phases.0.lock().expect("phases lock").remove(key);
    }

    /// Records one sync write in `direction` and how long it took.
    pub fn synced(&self, direction: &str, took: Duration) {
        let labels = DirectionLabels {
            direction: direction.to_string(),
        };
        self.syncs.get_or_create(&labels).inc();
        self.sync_seconds.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Records how long a claim's change waited until its reconcile started.
    pub fn waited(&self, wait: Duration) {
        self.queue_wait.observe(wait.as_secs_f64());
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_counted_by_kind_and_phase() {
        let metrics = Metrics::new();
        metrics.set_phase("g/A ns/a", "A", Phase::Synced);
        metrics.set_phase("g/A ns/b", "A", Phase::Synced);
        metrics.set_phase("g/A ns/c", "A", Phase::Offline);
        metrics.set_phase("g/B ns/a", "B", Phase::Synced);
        metrics.set_phase("g/A ns/c", "A", Phase::Synced);
        metrics.forget("g/B ns/a");
        metrics.synced("up", Duration::from_millis(20));
        let text = metrics.encode();
        assert!(
            text.lines()
                .any(|l| l == r#"claimsync_claims{kind="A",phase="Synced"} 3"#),
            "{text}"
        );
        assert!(!text.contains(r#"kind="B""#), "{text}");
        assert!(text.contains(r#"claimsync_syncs_total{direction="up"} 1"#), "{text}");
    }

    #[test]
    fn journal_writes_are_read_from_the_journal_counted() {
        let metrics = Metrics::new();
        assert!(metrics.encode().contains("claimsync_journal_claim_writes_total 0"));
        let journal = Journal::temporary().expect("journal");
        metrics.count_journal_writes(&journal);
        let key = claimsync_state::ClaimKey::new("g", "K", "ns", "a");
        journal.put_claim(&key, &Default::default()).expect("put");
        journal.remove_claim(&key).expect("remove");
        let text = metrics.encode();
        assert!(text.contains("claimsync_journal_claim_writes_total 2"), "{text}");
    }
}
