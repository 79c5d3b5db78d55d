//! Where the served objects come from, all in the app cluster (never the control plane): watches of the claim
//! CRDs claimsync made, of each established kind's claims and of the selected namespaces, and the journal once
//! `run` hands it over; each update goes through `Facts` into the store. Reads only; writes nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use claimsync_state::{ClaimKey, Journal};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::facts::{Dirty, Facts};
use super::store::Index;
use crate::model::kind::group_allowed;
use crate::model::vocabulary::{IDENTITY_CONFIGMAP, MANAGED_BY};
use crate::shim::api::objects::{KindFacts, claim_facts, kind_facts};

/// How often the journal is read for changes.
const JOURNAL_EVERY: Duration = Duration::from_secs(2);

/// What the source needs to know from the command line.
pub struct SourceSettings {
    pub client: Client,
    /// `--namespace-selector`: only claims in matching namespaces are shown.
    pub namespace_selector: Option<String>,
    /// `--cluster-id`, if given; else read from the identity ConfigMap in `own_namespace` until `run` says.
    pub cluster_id: Option<String>,
    pub own_namespace: String,
    /// `--claim-namespace`, shown as each twin's namespace.
    pub remote_namespace: Option<String>,
    /// `--claim-groups`: only kinds of these groups are watched and shown (claimsync replicates no others, and its
    /// RBAC may not let it read them).
    pub claim_groups: Vec<String>,
}

/// The facts, the index they are projected into, and whether everything was listed once.
pub struct Source {
    pub index: Arc<Mutex<Index>>,
    facts: Mutex<Facts>,
    complete: watch::Sender<bool>,
    journal: OnceLock<Journal>,
}

impl Source {
    /// Applies one update to the facts and projects what it changed.
    fn update(&self, f: impl FnOnce(&mut Facts) -> Dirty) {
        let mut facts = self.facts.lock().expect("facts lock");
        let dirty = f(&mut facts);
        if !dirty.is_empty() {
            facts.project(dirty, &mut self.index.lock().expect("index lock"));
        }
        let complete = facts.is_complete();
        self.complete
            .send_if_modified(|c| std::mem::replace(c, complete) != complete);
    }

    /// Waits until everything was listed once, or `timeout` passed; answers whether it was.
    pub async fn wait_complete(&self, timeout: Duration) -> bool {
        let mut complete = self.complete.subscribe();
        tokio::time::timeout(timeout, complete.wait_for(|c| *c)).await.is_ok()
    }

    /// The journal (and the cluster id it was pinned with), once `run` has opened it.
    pub fn attach(&self, journal: Journal, cluster_id: &str) {
        let _ = self.journal.set(journal);
        self.update(|facts| facts.set_cluster_id(cluster_id.to_string()));
    }
}

/// Starts every watch; returns at once (the index fills as lists arrive).
pub fn start(settings: SourceSettings, start_rv: u64) -> Arc<Source> {
    let source = Arc::new(Source {
        index: Arc::new(Mutex::new(Index::new(start_rv))),
        facts: Mutex::new(Facts::new(
            settings.namespace_selector.is_some(),
            settings.cluster_id.clone(),
            settings.remote_namespace.clone(),
        )),
        complete: watch::channel(false).0,
        journal: OnceLock::new(),
    });
    tokio::spawn(watch_kinds(
        source.clone(),
        settings.client.clone(),
        settings.claim_groups.clone(),
    ));
    if let Some(selector) = settings.namespace_selector.clone() {
        tokio::spawn(watch_selection(source.clone(), settings.client.clone(), selector));
    }
    tokio::spawn(read_journal(source.clone()));
    if settings.cluster_id.is_none() {
        tokio::spawn(read_cluster_id(source.clone(), settings.client, settings.own_namespace));
    }
    source
}

/// The cluster id recorded in the app cluster, until `run` attaches the one it pinned.
async fn read_cluster_id(source: Arc<Source>, client: Client, namespace: String) {
    let config_maps = Api::<ConfigMap>::namespaced(client, &namespace);
    match config_maps.get_opt(IDENTITY_CONFIGMAP).await {
        Ok(Some(cm)) => {
            if let Some(id) = cm.data.and_then(|d| d.get("clusterID").cloned()) {
                source.update(|facts| {
                    if facts.cluster_id.is_some() {
                        return Dirty::default();
                    }
                    facts.set_cluster_id(id)
                });
            }
        }
        Ok(None) => {}
        Err(e) => debug!(error = %e, "could not read the recorded cluster id; remote names appear once run pins it"),
    }
}

async fn read_journal(source: Arc<Source>) {
    let mut tick = tokio::time::interval(JOURNAL_EVERY);
    loop {
        tick.tick().await;
        let Some(journal) = source.journal.get() else { continue };
        match (journal.claims(), journal.catalog()) {
            (Ok(claims), Ok(catalog)) => source.update(|facts| facts.set_journal(claims, catalog)),
            (Err(e), _) | (_, Err(e)) => warn!(error = %e, "the shim could not read the journal"),
        }
    }
}

async fn watch_selection(source: Arc<Source>, client: Client, selector: String) {
    let namespaces = Api::<Namespace>::all(client);
    let mut events = watcher(namespaces, watcher::Config::default().labels(&selector))
        .default_backoff()
        .boxed();
    let mut selected = BTreeSet::new();
    let mut listing = BTreeSet::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(ns)) => {
                listing.insert(ns.name_any());
            }
            Ok(watcher::Event::InitDone) => selected = std::mem::take(&mut listing),
            Ok(watcher::Event::Apply(ns)) => {
                selected.insert(ns.name_any());
            }
            Ok(watcher::Event::Delete(ns)) => {
                selected.remove(&ns.name_any());
            }
            Err(e) => {
                warn!(error = %e, "watching the selected namespaces failed; retrying");
                continue;
            }
        }
        let now = selected.clone();
        source.update(|facts| facts.set_selection(Some(now)));
    }
}

/// The claim CRDs claimsync made, and one claim watch per established kind.
async fn watch_kinds(source: Arc<Source>, client: Client, claim_groups: Vec<String>) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let ours = watcher::Config::default().labels(&format!("{MANAGED_BY}=claimsync"));
    let mut events = watcher(crds, ours).default_backoff().boxed();
    let mut claim_watches: HashMap<String, (KindFacts, JoinHandle<()>)> = HashMap::new();
    let mut listing = BTreeSet::new();
    let set = |crd: &CustomResourceDefinition, claim_watches: &mut HashMap<String, (KindFacts, JoinHandle<()>)>| {
        let Some(kind) = kind_facts(&serde_json::to_value(crd).unwrap_or(Value::Null)) else {
            return;
        };
        if !group_allowed(&kind.group, &claim_groups) {
            return;
        }
        let running = claim_watches
            .get(&kind.crd_name)
            .map(|(k, _)| (&k.group, &k.kind, &k.version, &k.plural));
        let wanted = (&kind.group, &kind.kind, &kind.version, &kind.plural);
        if kind.established && running != Some(wanted) {
            if let Some((_, handle)) = claim_watches.remove(&kind.crd_name) {
                handle.abort();
            }
            let handle = tokio::spawn(watch_claims(source.clone(), client.clone(), kind.clone()));
            claim_watches.insert(kind.crd_name.clone(), (kind.clone(), handle));
        }
        source.update(|facts| facts.set_kind(kind));
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(crd)) => {
                listing.insert(crd.name_any());
                set(&crd, &mut claim_watches);
            }
            Ok(watcher::Event::Apply(crd)) => set(&crd, &mut claim_watches),
            Ok(watcher::Event::InitDone) => {
                let gone: Vec<String> = claim_watches
                    .keys()
                    .filter(|n| !listing.contains(*n))
                    .cloned()
                    .collect();
                for name in gone {
                    stop(&source, &mut claim_watches, &name);
                }
                source.update(|facts| facts.set_kinds_listed());
            }
            Ok(watcher::Event::Delete(crd)) => stop(&source, &mut claim_watches, &crd.name_any()),
            Err(e) => warn!(error = %e, "watching the local claim CRDs failed; retrying"),
        }
    }
}

fn stop(source: &Source, claim_watches: &mut HashMap<String, (KindFacts, JoinHandle<()>)>, crd_name: &str) {
    if let Some((_, handle)) = claim_watches.remove(crd_name) {
        handle.abort();
    }
    source.update(|facts| facts.remove_kind(crd_name));
}

/// The claims of one kind, in every namespace.
async fn watch_claims(source: Arc<Source>, client: Client, kind: KindFacts) {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(&kind.group, &kind.version, &kind.kind),
        &kind.plural,
    );
    let claims = Api::<DynamicObject>::all_with(client, &resource);
    let mut events = watcher(claims, watcher::Config::default()).default_backoff().boxed();
    let key = |claim: &DynamicObject| {
        ClaimKey::new(
            &kind.group,
            &kind.kind,
            claim.namespace().unwrap_or_default(),
            claim.name_any(),
        )
    };
    let facts = |claim: &DynamicObject| claim_facts(&serde_json::to_value(claim).unwrap_or(Value::Null));
    let mut listing = Vec::new();
    info!(kind = %kind.kind, group = %kind.group, "the shim watches this kind's claims");
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(claim)) => listing.push((key(&claim), facts(&claim))),
            Ok(watcher::Event::InitDone) => {
                let listed = std::mem::take(&mut listing);
                source.update(|f| f.replace_claims(&kind.crd_name, &kind.group, &kind.kind, listed));
            }
            Ok(watcher::Event::Apply(claim)) => source.update(|f| f.set_claim(key(&claim), facts(&claim))),
            Ok(watcher::Event::Delete(claim)) => source.update(|f| f.remove_claim(&key(&claim))),
            Err(e) => debug!(kind = %kind.kind, error = %e, "watching claims failed; retrying"),
        }
    }
}
