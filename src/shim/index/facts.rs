//! What the shim knows, gathered from watches and the journal, and how it becomes served objects: each update
//! names the objects it may change, and only those are projected again into the index. Plain data and functions;
//! `source` does the watching and reading.

use std::collections::{BTreeMap, BTreeSet};

use claimsync_state::{CatalogEntry, ClaimKey, ClaimRecord};
use serde_json::Value;

use super::store::{Index, ObjectKey};
use crate::model::kind::KindFamily;
use crate::model::phase::Phase;
use crate::shim::api::objects::{
    ClaimFacts, Counts, KindFacts, SyncContext, claim_kind_object, claim_sync, not_replicated_kind_object, orphan_sync,
};
use crate::shim::api::resources::Resource;

#[derive(Default)]
pub struct Facts {
    /// The cluster id twins are named after, once known.
    pub cluster_id: Option<String>,
    /// `--claim-namespace`.
    pub remote_namespace: Option<String>,
    /// Local claim CRDs made by claimsync, by CRD name.
    kinds: BTreeMap<String, KindFacts>,
    /// Whether the CRDs were listed once (before that, a kind not known may still exist).
    kinds_listed: bool,
    /// CRDs whose claims were listed once since their watch started.
    claims_listed: BTreeSet<String>,
    /// Live local claims, by (group, kind, namespace, name).
    claims: BTreeMap<ClaimKey, ClaimFacts>,
    /// The counts of each (group, kind), kept as claims change so that a change costs no scan of its kind.
    counts: BTreeMap<(String, String), Counts>,
    /// Namespaces whose claims this claimsync replicates; `None`: every namespace.
    selected: Option<BTreeSet<String>>,
    /// Whether `selected` was listed (or there is no selector).
    selection_known: bool,
    /// The journal's records and catalog, if this replica has a journal.
    records: BTreeMap<ClaimKey, ClaimRecord>,
    catalog: BTreeMap<String, CatalogEntry>,
}

/// The objects an update may have changed.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Dirty {
    claims: BTreeSet<ClaimKey>,
    /// (group, kind) of claim kinds whose counts or facts changed.
    kinds: BTreeSet<(String, String)>,
}

impl Dirty {
    fn claim(&mut self, key: &ClaimKey) {
        self.kinds.insert((key.group.clone(), key.kind.clone()));
        self.claims.insert(key.clone());
    }

    pub fn is_empty(&self) -> bool {
        self.claims.is_empty() && self.kinds.is_empty()
    }
}

fn kind_range(group: &str, kind: &str) -> std::ops::RangeFrom<ClaimKey> {
    ClaimKey::new(group, kind, "", "")..
}

/// What one claim adds to its kind's counts.
fn weight(claim: &ClaimFacts, selected: bool) -> Counts {
    let synced = Phase::of(claim.reason.as_deref(), claim.deleting) == Phase::Synced;
    Counts {
        claims: usize::from(selected),
        replicated: usize::from(selected && synced),
    }
}

impl Facts {
    /// Facts for a claimsync that replicates every namespace (`selector` false), or only the namespaces a label
    /// selector picks, none of which are known yet.
    pub fn new(selector: bool, cluster_id: Option<String>, remote_namespace: Option<String>) -> Facts {
        Facts {
            cluster_id,
            remote_namespace,
            selected: selector.then(BTreeSet::new),
            selection_known: !selector,
            ..Facts::default()
        }
    }

    /// Whether everything was listed once: the CRDs, the claims of every established kind, the namespaces.
    pub fn is_complete(&self) -> bool {
        self.kinds_listed
            && self.selection_known
            && self
                .kinds
                .values()
                .filter(|k| k.established)
                .all(|k| self.claims_listed.contains(&k.crd_name))
    }

    fn claims_of<'a>(&'a self, group: &'a str, kind: &'a str) -> impl Iterator<Item = (&'a ClaimKey, &'a ClaimFacts)> {
        self.claims
            .range(kind_range(group, kind))
            .take_while(move |(k, _)| k.group == group && k.kind == kind)
    }

    fn kind_of(&self, group: &str, kind: &str) -> Option<&KindFacts> {
        self.kinds.values().find(|k| k.group == group && k.kind == kind)
    }

    /// A local claim CRD appeared or changed. Its claims are projected again only when it is new or its version
    /// changed (their claimRef names it); otherwise only the kind itself.
    pub fn set_kind(&mut self, kind: KindFacts) -> Dirty {
        let mut dirty = Dirty::default();
        dirty.kinds.insert((kind.group.clone(), kind.kind.clone()));
        let previous = self.kinds.get(&kind.crd_name);
        if previous.is_none_or(|p| p.version != kind.version) {
            let keys: Vec<ClaimKey> = self
                .claims_of(&kind.group, &kind.kind)
                .map(|(k, _)| k.clone())
                .collect();
            dirty.claims.extend(keys);
            dirty.claims.extend(self.records_of(&kind.group, &kind.kind));
        }
        if let Some(previous) = self.kinds.insert(kind.crd_name.clone(), kind) {
            dirty.kinds.insert((previous.group, previous.kind));
        }
        dirty
    }

    /// A local claim CRD is gone, and with it the claims of its kind (their watch ends).
    pub fn remove_kind(&mut self, crd_name: &str) -> Dirty {
        let mut dirty = Dirty::default();
        self.claims_listed.remove(crd_name);
        let Some(kind) = self.kinds.remove(crd_name) else {
            return dirty;
        };
        dirty.kinds.insert((kind.group.clone(), kind.kind.clone()));
        let keys: Vec<ClaimKey> = self
            .claims_of(&kind.group, &kind.kind)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.claims.remove(&key);
            dirty.claims.insert(key);
        }
        self.counts.remove(&(kind.group.clone(), kind.kind.clone()));
        dirty.claims.extend(self.records_of(&kind.group, &kind.kind));
        dirty
    }

    pub fn set_kinds_listed(&mut self) -> Dirty {
        self.kinds_listed = true;
        self.all_claims()
    }

    fn count(&mut self, key: &ClaimKey, minus: Counts, plus: Counts) {
        let counts = self.counts.entry((key.group.clone(), key.kind.clone())).or_default();
        counts.claims = (counts.claims + plus.claims).saturating_sub(minus.claims);
        counts.replicated = (counts.replicated + plus.replicated).saturating_sub(minus.replicated);
    }

    pub fn set_claim(&mut self, key: ClaimKey, claim: ClaimFacts) -> Dirty {
        let mut dirty = Dirty::default();
        if self.claims.get(&key) != Some(&claim) {
            dirty.claim(&key);
            let selected = self.is_selected(&key.namespace);
            let plus = weight(&claim, selected);
            let minus = self
                .claims
                .insert(key.clone(), claim)
                .map(|old| weight(&old, selected))
                .unwrap_or_default();
            self.count(&key, minus, plus);
        }
        dirty
    }

    pub fn remove_claim(&mut self, key: &ClaimKey) -> Dirty {
        let mut dirty = Dirty::default();
        if let Some(old) = self.claims.remove(key) {
            dirty.claim(key);
            let minus = weight(&old, self.is_selected(&key.namespace));
            self.count(key, minus, Counts::default());
        }
        dirty
    }

    /// A full listing of one kind's claims: what it does not hold is gone.
    pub fn replace_claims(
        &mut self,
        crd_name: &str,
        group: &str,
        kind: &str,
        listed: Vec<(ClaimKey, ClaimFacts)>,
    ) -> Dirty {
        let mut dirty = Dirty::default();
        dirty.kinds.insert((group.to_string(), kind.to_string()));
        let listed: BTreeMap<ClaimKey, ClaimFacts> = listed.into_iter().collect();
        let before: Vec<ClaimKey> = self.claims_of(group, kind).map(|(k, _)| k.clone()).collect();
        for key in before {
            if !listed.contains_key(&key) {
                let removed = self.remove_claim(&key);
                dirty.claims.extend(removed.claims);
            }
        }
        for (key, claim) in listed {
            let changed = self.set_claim(key, claim);
            dirty.claims.extend(changed.claims);
        }
        if self.claims_listed.insert(crd_name.to_string()) {
            dirty.claims.extend(self.records_of(group, kind));
        }
        dirty
    }

    /// The namespaces selected now (`None`: all); claims of namespaces that joined or left are projected again.
    pub fn set_selection(&mut self, selected: Option<BTreeSet<String>>) -> Dirty {
        let mut dirty = Dirty::default();
        self.selection_known = true;
        let before = std::mem::replace(&mut self.selected, selected);
        let was = |ns: &str| before.as_ref().is_none_or(|s| s.contains(ns));
        let moved: Vec<(ClaimKey, Counts, Counts)> = self
            .claims
            .iter()
            .filter(|(k, _)| was(&k.namespace) != self.is_selected(&k.namespace))
            .map(|(k, c)| (k.clone(), weight(c, was(&k.namespace)), weight(c, !was(&k.namespace))))
            .collect();
        for (key, minus, plus) in moved {
            self.count(&key, minus, plus);
            dirty.claim(&key);
        }
        dirty
    }

    fn is_selected(&self, namespace: &str) -> bool {
        self.selected.as_ref().is_none_or(|s| s.contains(namespace))
    }

    /// The journal as read now: records and catalog entries that differ from the last reading are projected again.
    pub fn set_journal(&mut self, records: Vec<(ClaimKey, ClaimRecord)>, catalog: Vec<CatalogEntry>) -> Dirty {
        let mut dirty = Dirty::default();
        let records: BTreeMap<ClaimKey, ClaimRecord> = records.into_iter().collect();
        for key in self.records.keys().chain(records.keys()) {
            if self.records.get(key) != records.get(key) {
                dirty.claim(key);
            }
        }
        self.records = records;
        let catalog: BTreeMap<String, CatalogEntry> = catalog.into_iter().map(|e| (e.crd_name.clone(), e)).collect();
        for (name, kind) in &self.kinds {
            if self.catalog.get(name).map(|e| e.withdrawn) != catalog.get(name).map(|e| e.withdrawn) {
                dirty.kinds.insert((kind.group.clone(), kind.kind.clone()));
            }
        }
        // Kinds listed but not replicated: shown from the catalog alone.
        for (name, entry) in self.catalog.iter().chain(catalog.iter()) {
            if entry.not_replicated.is_some() && self.catalog.get(name) != catalog.get(name) {
                dirty.kinds.insert((entry.group.clone(), entry.kind.clone()));
            }
        }
        self.catalog = catalog;
        dirty
    }

    /// The cluster id became known: every remote name may change.
    pub fn set_cluster_id(&mut self, cluster_id: String) -> Dirty {
        if self.cluster_id.as_deref() == Some(cluster_id.as_str()) {
            return Dirty::default();
        }
        self.cluster_id = Some(cluster_id);
        self.all_claims()
    }

    fn all_claims(&self) -> Dirty {
        let mut dirty = Dirty::default();
        for key in self.claims.keys().chain(self.records.keys()) {
            dirty.claim(key);
        }
        dirty
    }

    fn records_of(&self, group: &str, kind: &str) -> Vec<ClaimKey> {
        self.records
            .range(kind_range(group, kind))
            .take_while(|(k, _)| k.group == group && k.kind == kind)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn context(&self) -> SyncContext<'_> {
        SyncContext {
            cluster_id: self.cluster_id.as_deref(),
            remote_namespace: self.remote_namespace.as_deref(),
            family: KindFamily::Claim,
        }
    }

    /// The `ClaimSync` to serve for a claim key: its live claim if replicated here, else an orphan if the journal
    /// knows a twin whose claim was seen gone, else nothing.
    fn claim_sync(&self, key: &ClaimKey) -> Option<Value> {
        let kind = self.kind_of(&key.group, &key.kind);
        let record = self.records.get(key);
        if let Some(claim) = self.claims.get(key) {
            if !self.is_selected(&key.namespace) {
                return None;
            }
            let version = kind.map(|k| k.version.as_str()).unwrap_or_default();
            let ctx = SyncContext {
                family: kind.map(|k| k.family).unwrap_or_default(),
                ..self.context()
            };
            return Some(claim_sync(key, version, claim, record, &ctx));
        }
        let record = record?;
        let seen_gone = match kind {
            Some(kind) => self.claims_listed.contains(&kind.crd_name),
            None => self.kinds_listed,
        };
        let ctx = SyncContext {
            family: kind.map(|k| k.family).unwrap_or_default(),
            ..self.context()
        };
        seen_gone.then(|| orphan_sync(key, kind.map(|k| k.version.as_str()), record, &ctx))
    }

    /// The catalog's entry of a kind offered but not replicated, by group and kind.
    fn not_replicated_of(&self, group: &str, kind: &str) -> Option<&CatalogEntry> {
        self.catalog
            .values()
            .find(|e| e.not_replicated.is_some() && e.group == group && e.kind == kind)
    }

    /// Projects the dirty objects into the index.
    pub fn project(&self, dirty: Dirty, index: &mut Index) {
        for key in &dirty.claims {
            let object_key = ObjectKey {
                resource: Resource::ClaimSyncs,
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                group: key.group.clone(),
                kind: key.kind.clone(),
            };
            index.set(object_key, self.claim_sync(key));
        }
        for (group, kind_name) in &dirty.kinds {
            // A kind no longer known: whichever CRD served it is gone.
            let stale: Vec<ObjectKey> = index
                .objects(Resource::ClaimKinds)
                .filter(|s| &s.key.group == group && &s.key.kind == kind_name)
                .map(|s| s.key.clone())
                .collect();
            let kind = self.kind_of(group, kind_name);
            let not_replicated = kind
                .is_none()
                .then(|| self.not_replicated_of(group, kind_name))
                .flatten();
            for key in stale {
                let kept = kind.map(|k| &k.crd_name).or(not_replicated.map(|e| &e.crd_name));
                if kept != Some(&key.name) {
                    index.set(key, None);
                }
            }
            if let Some(entry) = not_replicated {
                let key = ObjectKey {
                    resource: Resource::ClaimKinds,
                    namespace: String::new(),
                    name: entry.crd_name.clone(),
                    group: entry.group.clone(),
                    kind: entry.kind.clone(),
                };
                index.set(key, Some(not_replicated_kind_object(entry)));
            }
            if let Some(kind) = kind {
                let key = ObjectKey {
                    resource: Resource::ClaimKinds,
                    namespace: String::new(),
                    name: kind.crd_name.clone(),
                    group: kind.group.clone(),
                    kind: kind.kind.clone(),
                };
                let counts = self.counts.get(&(group.clone(), kind_name.clone())).copied();
                let object = claim_kind_object(kind, counts.unwrap_or_default(), self.catalog.get(&kind.crd_name));
                index.set(key, Some(object));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::api::objects::{claim_facts, kind_facts};
    use serde_json::json;

    fn crd(kind: &str, plural: &str) -> KindFacts {
        kind_facts(&json!({
            "metadata": {"name": format!("{plural}.g.org"), "uid": "u"},
            "spec": {"group": "g.org", "names": {"kind": kind, "plural": plural},
                     "versions": [{"name": "v1", "served": true, "storage": true}]},
            "status": {"conditions": [{"type": "Established", "status": "True"}]},
        }))
        .unwrap()
    }

    fn claim(reason: &str) -> ClaimFacts {
        claim_facts(&json!({
            "metadata": {"uid": "u", "resourceVersion": "1"},
            "status": {"conditions": [{"type": "Replicated", "status": "True", "reason": reason}]},
        }))
    }

    fn key(kind: &str, namespace: &str, name: &str) -> ClaimKey {
        ClaimKey::new("g.org", kind, namespace, name)
    }

    type SyncRow = (String, String, String, String);
    type KindRow = (String, u64, u64);

    /// (namespace, name, kind, phase) of every claimsync, and (name, claims, replicated) of every claimkind.
    fn served(index: &Index) -> (Vec<SyncRow>, Vec<KindRow>) {
        let syncs = index
            .objects(Resource::ClaimSyncs)
            .map(|s| {
                (
                    s.key.namespace.clone(),
                    s.key.name.clone(),
                    s.key.kind.clone(),
                    s.content["status"]["phase"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let kinds = index
            .objects(Resource::ClaimKinds)
            .map(|s| {
                (
                    s.key.name.clone(),
                    s.content["status"]["claims"].as_u64().unwrap(),
                    s.content["status"]["claimsReplicated"].as_u64().unwrap(),
                )
            })
            .collect();
        (syncs, kinds)
    }

    fn row(ns: &str, name: &str, kind: &str, phase: &str) -> SyncRow {
        (ns.into(), name.into(), kind.into(), phase.into())
    }

    #[test]
    fn claims_kinds_selection_and_orphans() {
        let mut facts = Facts::default();
        let mut index = Index::new(0);
        let apply = |facts: &mut Facts, index: &mut Index, dirty: Dirty| facts.project(dirty, index);

        let d = facts.set_kind(crd("Db", "dbs"));
        apply(&mut facts, &mut index, d);
        let d = facts.set_kind(crd("Cluster", "clusters"));
        apply(&mut facts, &mut index, d);
        let d = facts.set_kinds_listed();
        apply(&mut facts, &mut index, d);
        let d = facts.replace_claims(
            "dbs.g.org",
            "g.org",
            "Db",
            vec![
                (key("Db", "a", "x"), claim("Synced")),
                (key("Db", "b", "x"), claim("NameConflict")),
            ],
        );
        apply(&mut facts, &mut index, d);
        let d = facts.set_claim(key("Cluster", "a", "x"), claim("ControlPlaneUnreachable"));
        apply(&mut facts, &mut index, d);
        let (syncs, kinds) = served(&index);
        assert_eq!(
            syncs,
            [
                row("a", "x", "Cluster", "Offline"),
                row("a", "x", "Db", "Synced"),
                row("b", "x", "Db", "Conflict")
            ]
        );
        assert_eq!(kinds, [("clusters.g.org".into(), 1, 0), ("dbs.g.org".into(), 2, 1)]);

        // The same CRD again (its status changed): the kind is projected again, its claims are not.
        let d = facts.set_kind(crd("Db", "dbs"));
        assert!(d.claims.is_empty() && !d.kinds.is_empty(), "{d:?}");

        // Only namespace a is selected now.
        let d = facts.set_selection(Some(BTreeSet::from(["a".to_string()])));
        apply(&mut facts, &mut index, d);
        let (syncs, kinds) = served(&index);
        assert_eq!(syncs.len(), 2);
        assert_eq!(kinds[1], ("dbs.g.org".into(), 1, 1));

        // The journal knows a twin whose claim is gone, and one whose kind's claims were never listed.
        let record = ClaimRecord {
            remote_name: "claim-1".into(),
            ..ClaimRecord::default()
        };
        let d = facts.set_journal(
            vec![
                (key("Db", "a", "lost"), record.clone()),
                (key("Cluster", "a", "unseen"), record.clone()),
                (key("Gone", "a", "kind-deleted"), record.clone()),
            ],
            vec![],
        );
        apply(&mut facts, &mut index, d);
        let (syncs, _) = served(&index);
        assert!(syncs.contains(&row("a", "lost", "Db", "Orphaned")), "{syncs:?}");
        assert!(
            syncs.contains(&row("a", "kind-deleted", "Gone", "Orphaned")),
            "{syncs:?}"
        );
        assert!(
            !syncs.iter().any(|s| s.1 == "unseen"),
            "the Cluster claims were never listed, so the claim may exist: {syncs:?}"
        );

        // The Db CRD goes: its claims go with it, and the journal's become orphans.
        let rv = index.rv();
        let d = facts.remove_kind("dbs.g.org");
        apply(&mut facts, &mut index, d);
        let (syncs, kinds) = served(&index);
        assert_eq!(kinds, [("clusters.g.org".into(), 1, 0)]);
        assert!(!syncs.iter().any(|s| s.2 == "Db" && s.3 != "Orphaned"), "{syncs:?}");
        assert!(index.rv() > rv);

        // Nothing changed: nothing is projected, no version is spent.
        let rv = index.rv();
        let d = facts.set_claim(key("Cluster", "a", "x"), claim("ControlPlaneUnreachable"));
        assert!(d.is_empty());
        apply(&mut facts, &mut index, d);
        assert_eq!(index.rv(), rv);
    }

    #[test]
    fn ten_thousand_claims() {
        let mut facts = Facts::default();
        let mut index = Index::new(0);
        let d = facts.set_kind(crd("Db", "dbs"));
        facts.project(d, &mut index);
        let listed: Vec<(ClaimKey, ClaimFacts)> = (0..10_000)
            .map(|i| {
                (
                    key("Db", &format!("ns-{}", i % 100), &format!("c-{i}")),
                    claim("Synced"),
                )
            })
            .collect();
        let started = std::time::Instant::now();
        let d = facts.replace_claims("dbs.g.org", "g.org", "Db", listed);
        facts.project(d, &mut index);
        let listing = started.elapsed();
        let started = std::time::Instant::now();
        for i in 0..100 {
            let d = facts.set_claim(
                key("Db", "ns-0", &format!("c-{}", i * 100)),
                claim("ControlPlaneUnreachable"),
            );
            facts.project(d, &mut index);
        }
        let per_change = started.elapsed() / 100;
        eprintln!("10,000 claims: listed in {listing:?}, then {per_change:?} per change");
        let (syncs, kinds) = served(&index);
        assert_eq!(syncs.len(), 10_000);
        assert_eq!(kinds, [("dbs.g.org".into(), 10_000, 9_900)]);
        assert_eq!(
            index
                .objects(Resource::ClaimSyncs)
                .filter(|s| s.key.namespace == "ns-0")
                .count(),
            100
        );
    }

    #[test]
    fn the_cluster_id_names_every_twin() {
        let mut facts = Facts::default();
        let mut index = Index::new(0);
        let d = facts.set_kind(crd("Db", "dbs"));
        facts.project(d, &mut index);
        let d = facts.set_claim(key("Db", "a", "x"), claim("Pending"));
        facts.project(d, &mut index);
        let remote =
            |index: &Index| index.objects(Resource::ClaimSyncs).next().unwrap().content["spec"]["remoteName"].clone();
        assert!(remote(&index).is_null());
        let d = facts.set_cluster_id("c1".into());
        facts.project(d, &mut index);
        assert_eq!(remote(&index), crate::model::naming::remote_claim_name("x", "a", "c1"));
    }

    #[test]
    fn a_kind_offered_but_not_replicated_is_listed_with_why_until_it_goes() {
        let mut facts = Facts::new(false, Some("app".into()), Some("claims".into()));
        let mut index = Index::new(1);
        let apply = |facts: &mut Facts, index: &mut Index, dirty: Dirty| facts.project(dirty, index);
        let entry = CatalogEntry {
            crd_name: "fleets.g.org".into(),
            group: "g.org".into(),
            kind: "Fleet".into(),
            plural: "fleets".into(),
            versions: vec!["v1".into()],
            remote_resource_version: "7".into(),
            content_hash: "h".into(),
            crd: Value::Null,
            withdrawn: false,
            not_replicated: Some("cluster-scoped".into()),
        };
        let d = facts.set_journal(vec![], vec![entry.clone()]);
        apply(&mut facts, &mut index, d);
        let listed: Vec<Value> = index.objects(Resource::ClaimKinds).map(|s| s.content.clone()).collect();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["metadata"]["name"], "fleets.g.org");
        assert_eq!(listed[0]["spec"]["family"], "ClusterXR");
        assert_eq!(listed[0]["status"]["notReplicated"], "cluster-scoped");
        assert_eq!(listed[0]["status"]["established"], false);

        // Read again unchanged: nothing projected; gone from the catalog: gone from the list.
        assert!(facts.set_journal(vec![], vec![entry]).is_empty());
        let d = facts.set_journal(vec![], vec![]);
        apply(&mut facts, &mut index, d);
        assert_eq!(index.objects(Resource::ClaimKinds).count(), 0);
    }
}
