//! Catalog down: the claim CRDs Crossplane generates on the control plane become identical CRDs in the app
//! cluster (plus a REPLICATED column), and each offered kind gets its claim controller. Never deletes a local CRD.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use claimsync_state::{CatalogEntry, content_hash};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::claims;
use crate::conditions::{Reason, Replicated as ConditionReplicated};
use crate::context::Context;
use crate::error::{Error, KubeContext, Side};
use crate::fields::is_subset;
use crate::link::Link;
use crate::secrets::MANAGED_BY;
use crate::upward::MANAGER_UP;

/// One claim kind offered by the control plane, at the version claimsync reads and writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimKind {
    pub crd_name: String,
    pub resource: ApiResource,
}

/// Whether a CRD is a claim CRD (Crossplane puts its generated claim CRDs in the `claim` category).
pub fn is_claim_crd(crd: &Value) -> bool {
    crd["spec"]["names"]["categories"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c == "claim"))
        && crd["spec"]["scope"] == "Namespaced"
}

/// The local CRD for a remote claim CRD: the same spec, claimsync's label, a REPLICATED column in every version.
pub fn local_crd(remote: &Value) -> Value {
    let mut spec = remote["spec"].clone();
    // A conversion webhook lives in the control plane and cannot be called from the app cluster.
    if spec["conversion"]["strategy"] != "None" {
        spec["conversion"] = json!({"strategy": "None"});
    }
    if let Some(versions) = spec["versions"].as_array_mut() {
        for version in versions {
            let mut columns = version["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            columns.retain(|c| c["name"] != "REPLICATED");
            let column = json!({
                "name": "REPLICATED", "type": "string",
                "jsonPath": ".status.conditions[?(@.type=='Replicated')].status",
            });
            let at = columns.iter().position(|c| c["name"] == "AGE").unwrap_or(columns.len());
            columns.insert(at, column);
            version["additionalPrinterColumns"] = Value::Array(columns);
        }
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": remote["metadata"]["name"], "labels": {MANAGED_BY: "claimsync"}},
        "spec": spec,
    })
}

/// The kind as claimsync syncs it: at the storage version, which both identical CRDs share.
pub fn claim_kind(crd: &Value) -> Option<ClaimKind> {
    let spec = &crd["spec"];
    let versions = spec["versions"].as_array()?;
    let version = versions
        .iter()
        .find(|v| v["storage"] == true)
        .or_else(|| versions.first())?;
    let group = spec["group"].as_str()?;
    let version = version["name"].as_str()?;
    let kind = spec["names"]["kind"].as_str()?;
    let plural = spec["names"]["plural"].as_str()?;
    Some(ClaimKind {
        crd_name: crd["metadata"]["name"].as_str()?.to_string(),
        resource: ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: format!("{group}/{version}"),
            kind: kind.to_string(),
            plural: plural.to_string(),
        },
    })
}

fn served_versions(crd: &Value) -> Vec<String> {
    crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"] == true)
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect()
}

/// Whether a local CRD already is what claimsync would apply.
fn is_current(existing: &Value, desired: &Value) -> bool {
    existing["metadata"]["labels"][MANAGED_BY] == "claimsync" && is_subset(&desired["spec"], &existing["spec"])
}

/// Outcome of replicating one remote claim CRD.
enum Replicated {
    Ready(ClaimKind),
    NotOwned,
}

/// Makes the local CRD match the remote one and waits until it is established.
async fn replicate(ctx: &Context, remote: &Value) -> Result<Replicated, Error> {
    let name = remote["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let local_crds = Api::<CustomResourceDefinition>::all(ctx.local.clone());
    let desired = local_crd(remote);
    let existing = local_crds.get_opt(&name).await.context(Side::App, "get CRD", &name)?;
    let existing = existing.map(|c| serde_json::to_value(c).unwrap_or(Value::Null));
    if let Some(existing) = &existing
        && existing["metadata"]["labels"][MANAGED_BY] != "claimsync"
    {
        return Ok(Replicated::NotOwned);
    }
    if !existing.as_ref().is_some_and(|e| is_current(e, &desired)) {
        local_crds
            .patch(&name, &PatchParams::apply(MANAGER_UP).force(), &Patch::Apply(&desired))
            .await
            .context(Side::App, "apply CRD", &name)?;
        info!(crd = %name, "replicated claim CRD to the app cluster");
    }
    // Claims can be served only once the CRD is established.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let crd = local_crds.get(&name).await.context(Side::App, "get CRD", &name)?;
        let established = crd
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Invalid {
                object: format!("CRD {name}"),
                message: "not established after 60s".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ctx.journal.put_catalog_entry(&CatalogEntry {
        crd_name: name.clone(),
        group: remote["spec"]["group"].as_str().unwrap_or_default().to_string(),
        kind: remote["spec"]["names"]["kind"].as_str().unwrap_or_default().to_string(),
        plural: remote["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        versions: served_versions(remote),
        remote_resource_version: remote["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        content_hash: content_hash(&desired["spec"]),
        crd: desired.clone(),
        withdrawn: false,
    })?;
    claim_kind(remote).map(Replicated::Ready).ok_or_else(|| Error::Invalid {
        object: format!("CRD {name}"),
        message: "has no versions or names".into(),
    })
}

/// The running claim controllers, by CRD name.
#[derive(Default)]
struct Running {
    kinds: HashMap<String, (ClaimKind, JoinHandle<()>)>,
}

impl Running {
    async fn ensure(&mut self, ctx: &Arc<Context>, kind: ClaimKind) {
        if let Some((running, handle)) = self.kinds.get(&kind.crd_name) {
            if *running == kind && !handle.is_finished() {
                return;
            }
            handle.abort();
        }
        let handle = claims::start(ctx.clone(), kind.clone()).await;
        self.kinds.insert(kind.crd_name.clone(), (kind, handle));
    }

    fn kinds(&self) -> Vec<ClaimKind> {
        self.kinds.values().map(|(kind, _)| kind.clone()).collect()
    }

    async fn restart_all(&mut self, ctx: &Arc<Context>) {
        for kind in self.kinds() {
            if let Some((_, handle)) = self.kinds.remove(&kind.crd_name) {
                handle.abort();
            }
            self.ensure(ctx, kind).await;
        }
    }

    fn stop(&mut self, crd_name: &str) -> Option<ClaimKind> {
        let (kind, handle) = self.kinds.remove(crd_name)?;
        handle.abort();
        Some(kind)
    }
}

/// Watches the control plane's claim CRDs for as long as claimsync runs.
pub async fn run(ctx: Arc<Context>, mut link: UnboundedReceiver<Link>) {
    let remote_crds = Api::<CustomResourceDefinition>::all(ctx.remote.clone());
    let mut catalog = Catalog::default();
    let mut events = watcher(remote_crds, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => catalog.handle(&ctx, event).await,
                Some(Err(e)) => {
                    warn!(error = %e, "watching the control plane's CRDs failed; retrying");
                    ctx.sync.set_catalog_ready(false);
                }
                None => return,
            },
            Some(change) = link.recv() => catalog.link_changed(&ctx, change).await,
        }
    }
}

/// What the catalog task keeps between events.
#[derive(Default)]
struct Catalog {
    running: Running,
    /// Claim CRDs seen in the current listing.
    listed: BTreeSet<String>,
    /// Foreign local CRDs already reported by this process.
    reported: BTreeSet<String>,
}

impl Catalog {
    async fn handle(&mut self, ctx: &Arc<Context>, event: watcher::Event<CustomResourceDefinition>) {
        match event {
            watcher::Event::Init => self.listed.clear(),
            watcher::Event::InitApply(crd) | watcher::Event::Apply(crd) => {
                let crd = serde_json::to_value(&crd).unwrap_or(Value::Null);
                if !is_claim_crd(&crd) {
                    return;
                }
                let name = crd["metadata"]["name"].as_str().unwrap_or_default().to_string();
                self.listed.insert(name.clone());
                if crd["metadata"]["deletionTimestamp"].is_string() {
                    withdraw(ctx, &mut self.running, &name).await;
                    return;
                }
                match replicate(ctx, &crd).await {
                    Ok(Replicated::Ready(kind)) => self.running.ensure(ctx, kind).await,
                    Ok(Replicated::NotOwned) => {
                        if self.reported.insert(name.clone()) {
                            report_foreign(ctx, &name).await;
                        }
                    }
                    Err(e) => error!(crd = %name, error = %e, "could not replicate claim CRD"),
                }
            }
            watcher::Event::InitDone => {
                // Kinds withdrawn while claimsync was not watching.
                for entry in ctx.journal.catalog().unwrap_or_default() {
                    if !self.listed.contains(&entry.crd_name) && !entry.withdrawn {
                        withdraw(ctx, &mut self.running, &entry.crd_name).await;
                    }
                }
                ctx.sync.set_catalog_ready(true);
            }
            watcher::Event::Delete(crd) => {
                let crd = serde_json::to_value(&crd).unwrap_or(Value::Null);
                if is_claim_crd(&crd) {
                    withdraw(
                        ctx,
                        &mut self.running,
                        crd["metadata"]["name"].as_str().unwrap_or_default(),
                    )
                    .await;
                }
            }
        }
    }

    /// The control plane went away: every claim says so and keeps its last known status. It came back: every
    /// claim controller starts over, so each claim (and what changed locally meanwhile) is reconciled now.
    async fn link_changed(&mut self, ctx: &Arc<Context>, change: Link) {
        match change {
            Link::Lost(reason) => {
                let cond = ConditionReplicated::new(
                    Reason::ControlPlaneUnreachable,
                    format!("the control plane is unreachable ({reason}); showing the last known status"),
                );
                for kind in self.running.kinds() {
                    if let Err(e) = claims::mark_all(ctx, &kind, &cond).await {
                        warn!(kind = %kind.resource.kind, error = %e, "could not mark claims as unreachable");
                    }
                }
            }
            Link::Restored => self.running.restart_all(ctx).await,
        }
    }
}

/// A local CRD of a claim kind's name that claimsync does not own: left alone, said once in the log and an Event.
async fn report_foreign(ctx: &Context, name: &str) {
    let message =
        format!("a local CRD {name} exists and is not claimsync's; it is left alone and its claims are not replicated");
    warn!(crd = %name, "{message}");
    let reference = ObjectReference {
        api_version: Some("apiextensions.k8s.io/v1".into()),
        kind: Some("CustomResourceDefinition".into()),
        name: Some(name.to_string()),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "ForeignCRD".into(),
        note: Some(message),
        action: "ReplicateCatalog".into(),
        secondary: None,
    };
    // Said once per cluster, not once per start: a restart must write nothing that is already there.
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(ctx.local.clone(), "default");
    let said = events.list(&ListParams::default()).await.is_ok_and(|list| {
        list.items.iter().any(|e| {
            e.reason.as_deref() == Some("ForeignCRD")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
    });
    if said {
        return;
    }
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        warn!(crd = %name, error = %e, "could not publish an Event");
    }
}

/// A kind the control plane no longer offers: its local CRD and claims stay, marked `KindWithdrawn`.
async fn withdraw(ctx: &Arc<Context>, running: &mut Running, crd_name: &str) {
    warn!(crd = %crd_name, "the control plane withdrew this claim kind; its local claims stay, marked KindWithdrawn");
    running.stop(crd_name);
    let entry = match ctx.journal.catalog_entry(crd_name) {
        Ok(Some(mut entry)) => {
            entry.withdrawn = true;
            let _ = ctx.journal.put_catalog_entry(&entry);
            entry
        }
        _ => return,
    };
    if let Some(kind) = claim_kind(&entry.crd) {
        let message = format!(
            "the control plane no longer offers {}; the claim is kept but not replicated",
            kind.resource.kind
        );
        let cond = ConditionReplicated::new(Reason::KindWithdrawn, message);
        if let Err(e) = claims::mark_all(ctx, &kind, &cond).await {
            error!(crd = %crd_name, error = %e, "could not mark the claims of a withdrawn kind");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> Value {
        json!({
            "metadata": {"name": "kubernetesclusters.k8s.starter.org", "resourceVersion": "5",
                         "ownerReferences": [{"kind": "CompositeResourceDefinition"}]},
            "spec": {
                "group": "k8s.starter.org", "scope": "Namespaced",
                "names": {"kind": "KubernetesCluster", "plural": "kubernetesclusters", "categories": ["claim"]},
                "conversion": {"strategy": "None"},
                "versions": [
                    {"name": "v1alpha1", "served": true, "storage": false,
                     "additionalPrinterColumns": [{"name": "SYNCED", "type": "string", "jsonPath": ".x"},
                                                  {"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]},
                    {"name": "v1beta1", "served": true, "storage": true}
                ]
            }
        })
    }

    #[test]
    fn recognises_claim_crds() {
        assert!(is_claim_crd(&remote()));
        let mut composite = remote();
        composite["spec"]["names"]["categories"] = json!(["composite"]);
        assert!(!is_claim_crd(&composite));
    }

    #[test]
    fn local_crd_is_the_remote_spec_with_a_replicated_column() {
        let local = local_crd(&remote());
        assert_eq!(
            local["metadata"],
            json!({"name": "kubernetesclusters.k8s.starter.org", "labels": {MANAGED_BY: "claimsync"}})
        );
        let columns: Vec<&str> = local["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["SYNCED", "REPLICATED", "AGE"]);
        assert_eq!(
            local["spec"]["versions"][1]["additionalPrinterColumns"][0]["name"],
            "REPLICATED"
        );
        // Applying it twice changes nothing.
        let mut again = remote();
        again["spec"] = local["spec"].clone();
        assert_eq!(local_crd(&again)["spec"], local["spec"]);
    }

    #[test]
    fn kind_uses_the_storage_version() {
        let kind = claim_kind(&remote()).unwrap();
        assert_eq!(kind.resource.api_version, "k8s.starter.org/v1beta1");
        assert_eq!(kind.resource.plural, "kubernetesclusters");
        assert_eq!(served_versions(&remote()), ["v1alpha1", "v1beta1"]);
    }

    #[test]
    fn webhook_conversion_is_not_replicated() {
        let mut crd = remote();
        crd["spec"]["conversion"] = json!({"strategy": "Webhook", "webhook": {"clientConfig": {}}});
        assert_eq!(local_crd(&crd)["spec"]["conversion"], json!({"strategy": "None"}));
    }
}
