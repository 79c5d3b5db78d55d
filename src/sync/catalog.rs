//! Catalog down: the claim CRDs Crossplane generates on the control plane become identical CRDs in the app
//! cluster (plus a REPLICATED column), and each offered kind gets its claim controller. Never deletes a local CRD.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use claimsync_state::{CatalogEntry, content_hash};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{error, info, warn};

use crate::context::Context;
use crate::error::{Error, KubeContext, Side};
use crate::model::conditions::{Reason, Replicated as ConditionReplicated};
use crate::model::kind::{ClaimKind, claim_kind, is_claim_crd, is_current, local_crd, served_versions};
use crate::model::vocabulary::{MANAGED_BY, MANAGER_UP};
use crate::sync::claims::status::mark_all;
use crate::sync::link::Link;
use crate::sync::supervisor::Running;

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
                    if let Err(e) = mark_all(ctx, &kind, &cond).await {
                        warn!(kind = %kind.kind, error = %e, "could not mark claims as unreachable");
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
            kind.kind
        );
        let cond = ConditionReplicated::new(Reason::KindWithdrawn, message);
        if let Err(e) = mark_all(ctx, &kind, &cond).await {
            error!(crd = %crd_name, error = %e, "could not mark the claims of a withdrawn kind");
        }
    }
}
