//! Catalog down: the claim CRDs Crossplane generates on the control plane become identical CRDs in the app
//! cluster (plus a REPLICATED column), and each offered kind gets its claim controller. This file keeps the
//! catalog's state and takes its events; `copy` copies one CRD, `records` writes the journal's catalog records,
//! `foreign` reports a CRD that is not claimsync's. Never deletes a local CRD.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use backon::ExponentialBackoff;
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio::sync::mpsc::{self, UnboundedSender};
use tracing::{error, info, warn};

use crate::error::Error;
use crate::model::conditions::{Reason, Replicated as ConditionReplicated};
use crate::model::kind::{ClaimKind, claim_kind, group_allowed, is_claim_crd, is_cluster_xr_crd, owning_xrd};
use crate::model::vocabulary::MANAGED_BY;
use crate::sync::caches::xrd_resource;
use crate::sync::claims::status::mark_all;
use crate::sync::context::{Context, retry_backoff};
use crate::sync::supervisor::Running;

mod copy;
mod foreign;
mod records;

pub use copy::{Copied, copy_crd};
use copy::{Replicated, replicate};
use foreign::report_foreign;
use records::{forget_not_replicated, record_not_replicated, record_withdrawn};

/// Watches the control plane's claim CRDs (and the local copies, to put back one that is deleted) for as long as
/// claimsync runs. Before the control plane has answered (it may be unreachable for hours), the kinds claimsync
/// knows already run: those of the journal's catalog, else the local CRDs claimsync made.
pub async fn run(ctx: Arc<Context>) {
    // Metadata only: a provider's hundreds of large CRDs are never read whole; a CRD an XRD controls is fetched.
    let remote_crds = Api::<PartialObjectMeta<CustomResourceDefinition>>::all(ctx.remote.clone());
    let local_crds = Api::<CustomResourceDefinition>::all(ctx.local.clone());
    let (retry_tx, mut retries) = mpsc::unbounded_channel();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let mut catalog = Catalog::new(retry_tx, done_tx);
    catalog.resume(&ctx).await;
    let mut events = watcher(remote_crds, watcher::Config::default())
        .default_backoff()
        .boxed();
    let ours = watcher::Config::default().labels(&format!("{MANAGED_BY}=claimsync"));
    let mut local_events = watcher(local_crds, ours).default_backoff().boxed();
    let mut xrd_deletions = ctx.caches.xrd_deletions.subscribe();
    loop {
        tokio::select! {
            deleting = xrd_deletions.recv() => match deleting {
                Ok(xrd) => catalog.xrd_deleting(&ctx, &[xrd]).await,
                // Missed some: every XRD the cache holds as deleting is looked at (withdrawing twice does nothing).
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let deleting: Vec<String> = ctx
                        .caches
                        .xrds
                        .store
                        .state()
                        .iter()
                        .filter(|x| x.metadata.deletion_timestamp.is_some())
                        .map(|x| x.name_any())
                        .collect();
                    catalog.xrd_deleting(&ctx, &deleting).await;
                }
                // The caches live as long as the context: not while this task runs.
                Err(broadcast::error::RecvError::Closed) => return,
            },
            event = events.next() => match event {
                Some(Ok(event)) => catalog.heard(&ctx, event).await,
                Some(Err(e)) => {
                    warn!(error = %e, "watching the control plane's CRDs failed; retrying");
                    ctx.sync.set_catalog_ready(false);
                }
                None => return,
            },
            Some(event) = local_events.next() => {
                if let Ok(watcher::Event::Delete(crd)) = event {
                    catalog.local_deleted(&ctx, &crd.name_any()).await;
                }
            }
            Some(name) = retries.recv() => catalog.retry(&ctx, &name).await,
            Some((name, result)) = done.recv() => catalog.replicated(&ctx, name, result).await,
        }
    }
}

/// What the catalog task keeps between events.
struct Catalog {
    running: Running,
    /// The claim CRDs the control plane offers now (allowed by `--claim-groups`), as last seen.
    offered: BTreeMap<String, Value>,
    /// Claim CRDs seen in the current listing.
    listed: BTreeSet<String>,
    /// Kinds offered but not replicated (cluster-scoped XR kinds) seen in the current listing.
    listed_not_replicated: BTreeSet<String>,
    /// Kinds withdrawn: their controllers run on so that their claims can still be deleted.
    withdrawn: BTreeSet<String>,
    /// Foreign local CRDs already reported by this process.
    reported: BTreeSet<String>,
    /// Backoff of each CRD whose replication failed, until it succeeds.
    failures: HashMap<String, ExponentialBackoff>,
    retry: UnboundedSender<String>,
    /// CRDs being replicated, each in a task of its own (so a CRD slow to be established holds up only itself), and
    /// whether it changed meanwhile (then it is replicated again when the task ends).
    in_flight: HashMap<String, bool>,
    done: UnboundedSender<(String, Result<Replicated, Error>)>,
    /// The first listing is done: the catalog is ready once the replications it started have ended.
    listed_once: bool,
    /// CRDs an XRD controls whose whole object could not be read yet (fetched again after a backoff).
    unfetched: BTreeSet<String>,
}

/// A control plane CRD as the catalog's rules take it: whole, read because an XRD controls it.
enum Offer {
    Listing,
    Seen(Box<CustomResourceDefinition>),
    Listed,
}

impl Catalog {
    fn new(retry: UnboundedSender<String>, done: UnboundedSender<(String, Result<Replicated, Error>)>) -> Self {
        Catalog {
            running: Running::default(),
            offered: BTreeMap::new(),
            listed: BTreeSet::new(),
            listed_not_replicated: BTreeSet::new(),
            withdrawn: BTreeSet::new(),
            reported: BTreeSet::new(),
            failures: HashMap::new(),
            retry,
            in_flight: HashMap::new(),
            done,
            listed_once: false,
            unfetched: BTreeSet::new(),
        }
    }

    /// Runs the controllers of the kinds known from before: the journal's catalog and the local CRDs claimsync made
    /// (the same spec as the remote ones, so the same kind and version). Both count: the journal may be older than
    /// the CRDs (restored from a backup, or a write that failed), and a kind it never heard of that was withdrawn
    /// meanwhile still has claims that must stay deletable.
    async fn resume(&mut self, ctx: &Arc<Context>) {
        let mut known: BTreeMap<String, (ClaimKind, bool)> = ctx
            .journal
            .catalog()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| group_allowed(&e.group, &ctx.claim_groups) && e.not_replicated.is_none())
            .filter_map(|e| claim_kind(&e.crd).map(|kind| (kind.crd_name.clone(), (kind, e.withdrawn))))
            .collect();
        let ours = ListParams::default().labels(&format!("{MANAGED_BY}=claimsync"));
        match Api::<CustomResourceDefinition>::all(ctx.local.clone())
            .list(&ours)
            .await
        {
            Ok(crds) => {
                for crd in &crds.items {
                    let Some(kind) = serde_json::to_value(crd).ok().and_then(|crd| claim_kind(&crd)) else {
                        continue;
                    };
                    if group_allowed(&kind.group, &ctx.claim_groups) {
                        known.entry(kind.crd_name.clone()).or_insert((kind, false));
                    }
                }
            }
            Err(e) => warn!(error = %e, "could not list the local claim CRDs to resume from"),
        }
        for (kind, withdrawn) in known.into_values() {
            if withdrawn {
                self.withdrawn.insert(kind.crd_name.clone());
            }
            self.running.ensure(ctx, kind, withdrawn).await;
        }
    }

    /// A change of the control plane's CRDs, seen as metadata: only a CRD an XRD controls (in an allowed group) is
    /// read whole and handed to the rules; a deleted one is withdrawn (or forgotten, a kind not replicated).
    async fn heard(&mut self, ctx: &Arc<Context>, event: watcher::Event<PartialObjectMeta<CustomResourceDefinition>>) {
        match event {
            watcher::Event::Init => self.handle(ctx, Offer::Listing).await,
            watcher::Event::InitDone => self.handle(ctx, Offer::Listed).await,
            watcher::Event::InitApply(meta) | watcher::Event::Apply(meta) => {
                let name = meta.name_any();
                if !controlled_by_an_xrd(&meta) || !group_allowed(group_of(&name), &ctx.claim_groups) {
                    return;
                }
                self.fetch(ctx, &name).await;
            }
            watcher::Event::Delete(meta) => {
                let name = meta.name_any();
                if !controlled_by_an_xrd(&meta) {
                    return;
                }
                self.unfetched.remove(&name);
                let recorded = ctx.journal.catalog_entry(&name).ok().flatten();
                if recorded.is_some_and(|e| e.not_replicated.is_some()) {
                    forget_not_replicated(ctx, &name);
                } else {
                    self.withdraw(ctx, &name).await;
                }
            }
        }
    }

    /// Reads a CRD an XRD controls whole and hands it to the rules; one that cannot be read is read again after a
    /// backoff (and counts as listed meanwhile, so that a failed read never withdraws its kind).
    async fn fetch(&mut self, ctx: &Arc<Context>, name: &str) {
        match Api::<CustomResourceDefinition>::all(ctx.remote.clone())
            .get_opt(name)
            .await
        {
            Ok(Some(crd)) => {
                self.unfetched.remove(name);
                self.handle(ctx, Offer::Seen(Box::new(crd))).await;
            }
            // Deleted meanwhile: its Delete event follows.
            Ok(None) => {
                self.unfetched.remove(name);
            }
            Err(e) => {
                self.listed.insert(name.to_string());
                self.unfetched.insert(name.to_string());
                let delay = self.retry_later(name);
                warn!(crd = %name, error = %e, retry_in = ?delay, "could not read a claim CRD of the control plane");
            }
        }
    }

    async fn handle(&mut self, ctx: &Arc<Context>, event: Offer) {
        match event {
            Offer::Listing => {
                self.listed.clear();
                self.listed_not_replicated.clear();
                self.listed_once = false;
            }
            Offer::Seen(crd) => {
                let crd = serde_json::to_value(&crd).unwrap_or(Value::Null);
                let group = crd["spec"]["group"].as_str().unwrap_or_default();
                if !group_allowed(group, &ctx.claim_groups) {
                    return;
                }
                if is_cluster_xr_crd(&crd) {
                    self.not_replicated(ctx, &crd);
                    return;
                }
                if !is_claim_crd(&crd) {
                    return;
                }
                let name = crd["metadata"]["name"].as_str().unwrap_or_default().to_string();
                self.listed.insert(name.clone());
                if crd["metadata"]["deletionTimestamp"].is_string() {
                    self.withdraw(ctx, &name).await;
                    return;
                }
                // An XRD being deleted no longer offers its kind, though Crossplane v2 leaves a namespaced XR
                // kind's CRD in place until every XR is gone.
                if owning_xrd(&crd).is_some_and(|xrd| xrd_deleting(ctx, xrd)) {
                    self.withdraw(ctx, &name).await;
                    return;
                }
                self.withdrawn.remove(&name);
                self.offered.insert(name.clone(), crd);
                self.replicate(ctx, &name);
            }
            Offer::Listed => {
                // Kinds known from the journal or run from local CRDs, withdrawn while claimsync was not watching
                // (or before): their claims must stay deletable.
                let catalog = ctx.journal.catalog().unwrap_or_default();
                // A kind listed as not replicated that the control plane no longer offers: nothing to keep.
                for gone in catalog
                    .iter()
                    .filter(|e| e.not_replicated.is_some() && !self.listed_not_replicated.contains(&e.crd_name))
                {
                    forget_not_replicated(ctx, &gone.crd_name);
                }
                let mut known: BTreeSet<String> = catalog
                    .into_iter()
                    .filter(|e| group_allowed(&e.group, &ctx.claim_groups) && e.not_replicated.is_none())
                    .map(|e| e.crd_name)
                    .collect();
                known.extend(self.running.names());
                for crd_name in known.difference(&self.listed.clone()) {
                    self.withdraw(ctx, crd_name).await;
                }
                self.listed_once = true;
                self.settle(ctx);
            }
        }
    }

    /// Replicates an offered claim CRD in a task of its own (one at a time per CRD); [`Self::replicated`] takes the
    /// result.
    fn replicate(&mut self, ctx: &Arc<Context>, name: &str) {
        let Some(remote) = self.offered.get(name).cloned() else {
            return;
        };
        if let Some(again) = self.in_flight.get_mut(name) {
            *again = true;
            return;
        }
        self.in_flight.insert(name.to_string(), false);
        let (ctx, done, name) = (ctx.clone(), self.done.clone(), name.to_string());
        tokio::spawn(async move {
            let result = replicate(&ctx, &remote).await;
            let _ = done.send((name, result));
        });
    }

    /// The catalog is ready once the first listing is done and every replication it started has ended: the claim
    /// controllers of every offered kind run.
    fn settle(&self, ctx: &Context) {
        if self.listed_once && self.in_flight.is_empty() {
            ctx.sync.set_catalog_ready(true);
        }
    }

    /// A replication ended: the kind's controller runs; on failure it is tried again after a backoff. A kind
    /// withdrawn meanwhile stays withdrawn; one that changed meanwhile is replicated again.
    async fn replicated(&mut self, ctx: &Arc<Context>, name: String, result: Result<Replicated, Error>) {
        let again = self.in_flight.remove(&name).unwrap_or(false);
        if self.withdrawn.contains(&name) {
            // The replication may have recorded the kind as offered after its withdrawal was recorded.
            record_withdrawn(ctx, &name);
        } else if self.offered.contains_key(&name) {
            self.take(ctx, &name, result).await;
            if again {
                self.replicate(ctx, &name);
            }
        }
        self.settle(ctx);
    }

    /// What a replication's result means for the kind.
    async fn take(&mut self, ctx: &Arc<Context>, name: &str, result: Result<Replicated, Error>) {
        match result {
            Ok(Replicated::Ready(kind)) => {
                self.failures.remove(name);
                self.running.ensure(ctx, kind, false).await;
            }
            Ok(Replicated::NotOwned) => {
                self.failures.remove(name);
                if self.reported.insert(name.to_string()) {
                    report_foreign(ctx, name).await;
                }
            }
            // Put back once the API server has removed it (a local Delete event).
            Ok(Replicated::Terminating) => {
                info!(crd = %name, "the local CRD is being deleted; it is made again once gone")
            }
            Err(e) => {
                let delay = self.retry_later(name);
                error!(crd = %name, error = %e, retry_in = ?delay, "could not replicate claim CRD");
            }
        }
    }

    /// Sends `name` back through the retry channel after the CRD's next backoff delay, which it returns.
    fn retry_later(&mut self, name: &str) -> Duration {
        let delay = self
            .failures
            .entry(name.to_string())
            .or_insert_with(retry_backoff)
            .next()
            .unwrap_or(Duration::from_secs(60));
        let (retry, name) = (self.retry.clone(), name.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = retry.send(name);
        });
        delay
    }

    /// A failed CRD's backoff ran out: try it again if it is still offered.
    async fn retry(&mut self, ctx: &Arc<Context>, name: &str) {
        if self.unfetched.contains(name) {
            self.fetch(ctx, name).await;
        } else if self.failures.contains_key(name) {
            self.replicate(ctx, name);
        }
    }

    /// A local CRD of claimsync's was deleted (by someone, with its claims): put it back if the kind is offered.
    async fn local_deleted(&mut self, ctx: &Arc<Context>, name: &str) {
        if self.offered.contains_key(name) {
            warn!(crd = %name, "the local claim CRD was deleted; putting it back (its twins stayed on the control plane)");
            self.replicate(ctx, name);
        }
    }

    /// A kind the control plane offers that is not replicated (a cluster-scoped XR kind): listed, and recorded in
    /// the journal's catalog with why, so that `claimkinds` shows it; forgotten when it goes.
    fn not_replicated(&mut self, ctx: &Arc<Context>, crd: &Value) {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if crd["metadata"]["deletionTimestamp"].is_string() {
            forget_not_replicated(ctx, &name);
            return;
        }
        self.listed_not_replicated.insert(name);
        record_not_replicated(ctx, crd);
    }

    /// The XRDs `xrds` are being deleted: the kinds they define are withdrawn.
    async fn xrd_deleting(&mut self, ctx: &Arc<Context>, xrds: &[String]) {
        let withdrawn: Vec<String> = self
            .offered
            .iter()
            .filter(|(_, crd)| owning_xrd(crd).is_some_and(|xrd| xrds.iter().any(|x| x == xrd)))
            .map(|(name, _)| name.clone())
            .collect();
        for crd_name in withdrawn {
            self.withdraw(ctx, &crd_name).await;
        }
    }

    /// A kind the control plane no longer offers: its local CRD and claims stay, marked `KindWithdrawn`, and its
    /// controller keeps running so that those claims can still be deleted.
    async fn withdraw(&mut self, ctx: &Arc<Context>, crd_name: &str) {
        self.offered.remove(crd_name);
        self.failures.remove(crd_name);
        if !self.withdrawn.insert(crd_name.to_string()) {
            return;
        }
        let entry = ctx.journal.catalog_entry(crd_name).ok().flatten();
        let Some(kind) = entry
            .as_ref()
            .and_then(|e| claim_kind(&e.crd))
            .or_else(|| self.running.kind(crd_name))
        else {
            return;
        };
        if entry.is_some_and(|e| !e.withdrawn) {
            warn!(crd = %crd_name, "the control plane withdrew this claim kind; its local claims stay, marked KindWithdrawn");
            record_withdrawn(ctx, crd_name);
        }
        self.running.ensure(ctx, kind.clone(), true).await;
        let message = format!(
            "the control plane no longer offers {}; the claim is kept but not replicated",
            kind.kind
        );
        let cond = ConditionReplicated::new(Reason::KindWithdrawn, message);
        if let Err(e) = mark_all(ctx, &kind, &cond).await {
            error!(crd = %crd_name, error = %e, "could not mark the claims of a withdrawn kind");
        }
    }
}

/// Whether a CRD's metadata names an XRD as its controller: the only CRDs the catalog reads whole.
fn controlled_by_an_xrd(meta: &PartialObjectMeta<CustomResourceDefinition>) -> bool {
    let metadata = serde_json::json!({"metadata": {"ownerReferences": meta.metadata.owner_references}});
    owning_xrd(&metadata).is_some()
}

/// The API group of a CRD, from its name (`<plural>.<group>`, which the API server enforces).
fn group_of(crd_name: &str) -> &str {
    crd_name.split_once('.').map_or("", |(_, group)| group)
}

/// Whether the XRD `name` is being deleted, as the XRD cache holds it (not yet listed: not known to be).
fn xrd_deleting(ctx: &Context, name: &str) -> bool {
    ctx.caches
        .xrds
        .store
        .get(&ObjectRef::new_with(name, xrd_resource()))
        .is_some_and(|xrd| xrd.metadata.deletion_timestamp.is_some())
}
