//! A local claim going away, and claimsync letting go of a claim: a user's delete deletes the twin first (unless
//! the claim says `Orphan`), then the finalizer is released; a claim that goes with its local CRD, or whose kind
//! the control plane withdrew, or whose namespace left the selector, is released with its twin left alone.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::kind_context::{KindContext, claim_key};
use super::status::{event, show};
use crate::error::{Error, KubeContext, Side};
use crate::model::conditions::{Reason, Replicated};
use crate::model::naming::{is_twin, remote_claim_name, written_by_other};
use crate::model::phase::Phase;
use crate::model::vocabulary::{ADOPT_FROM, DELETION_POLICY, FINALIZER, MANAGER_DOWN, REPLICATED_BY};

/// Adds claimsync's finalizer and the annotation naming this claimsync, or removes both; guarded by the resource
/// version so no concurrent change is lost. Returns the claim as written.
pub(super) async fn set_finalizer(
    kctx: &KindContext,
    claim: &DynamicObject,
    present: bool,
) -> Result<DynamicObject, Error> {
    let mut finalizers: Vec<String> = claim.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    let replicated_by = if present {
        finalizers.push(FINALIZER.to_string());
        Value::String(kctx.ctx.instance.clone())
    } else {
        Value::Null
    };
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "annotations": {REPLICATED_BY: replicated_by},
        "resourceVersion": claim.resource_version(),
    }});
    let params = PatchParams {
        field_manager: Some(MANAGER_DOWN.to_string()),
        ..PatchParams::default()
    };
    let mut written = kctx
        .local(&claim.namespace().unwrap_or_default())
        .patch(&claim.name_any(), &params, &Patch::Merge(&patch))
        .await
        .context(Side::App, "set finalizer on claim", claim_key(claim))?;
    written.types = written.types.or_else(|| claim.types.clone());
    Ok(written)
}

/// Whether this claimsync holds the claim: its finalizer, put there by this claimsync (not another one that
/// replicates other namespaces of the same app cluster).
pub(super) fn held_by_us(kctx: &KindContext, claim: &DynamicObject) -> bool {
    claim.finalizers().iter().any(|f| f == FINALIZER)
        && claim.annotations().get(REPLICATED_BY) == Some(&kctx.ctx.instance)
}

/// Lets go of a claim without touching its twin: says why (an Event and the log; on a live claim also the
/// `Replicated` condition with `reason`), forgets it in the journal and removes the finalizer.
pub(super) async fn release(
    kctx: &KindContext,
    claim: &DynamicObject,
    event_reason: &str,
    reason: Reason,
    message: String,
) -> Result<Action, Error> {
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    warn!(reason = event_reason, "{message}");
    event(kctx, claim, EventType::Warning, event_reason, &message).await;
    let mut claim = claim.clone();
    if claim.meta().deletion_timestamp.is_none() {
        let local = serde_json::to_value(&claim).unwrap_or(Value::Null);
        show(kctx, &claim, &local, Replicated::new(reason, message)).await?;
        claim = kctx
            .local(&namespace)
            .get(&name)
            .await
            .context(Side::App, "get claim", claim_key(&claim))?;
    }
    kctx.ctx.journal.remove_claim(&kctx.key(&namespace, &name))?;
    set_finalizer(kctx, &claim, false).await?;
    kctx.ctx.metrics.forget(&kctx.key(&namespace, &name).to_string());
    Ok(Action::await_change())
}

/// A local claim being deleted: delete its remote twin (unless orphaned), and release the finalizer once it is gone.
pub(super) async fn cleanup(kctx: &KindContext, claim: &DynamicObject) -> Result<Action, Error> {
    if !claim.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let ctx = &kctx.ctx;
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    ctx.metrics
        .set_phase(&kctx.key_of(claim).to_string(), &kctx.kind.kind, Phase::Deleting);
    let remote_name = remote_claim_name(&name, &namespace, &ctx.cluster_id);
    let remote_object = format!("{}/{remote_name}", ctx.claim_namespace);

    // The API server deletes every claim of a CRD that is deleted: that is not a user deleting claims.
    let crd_name = &kctx.kind.crd_name;
    let local_crd = Api::<CustomResourceDefinition>::all(ctx.local.clone())
        .get_opt(crd_name)
        .await
        .context(Side::App, "get CRD", crd_name)?;
    if local_crd.is_none_or(|crd| crd.metadata.deletion_timestamp.is_some()) {
        let message = format!(
            "the local CRD {crd_name} is being deleted and takes this claim with it; that is not a delete of the \
             claim, so its twin {remote_object} stays on the control plane (apply the claim again once the CRD is \
             back to adopt it)"
        );
        return release(kctx, claim, "LocalCRDDeleted", Reason::KindWithdrawn, message).await;
    }
    if claim.annotations().get(DELETION_POLICY).is_some_and(|p| p == "Orphan") {
        info!(remote = %remote_object, "deletion policy Orphan: the remote claim stays");
        return finish(kctx, claim).await;
    }
    // The kind is withdrawn: the control plane took its twins with it.
    if kctx.withdrawn {
        return finish(kctx, claim).await;
    }
    // Offline, the delete waits (the finalizer holds it); the link's return reconciles the claim again.
    if !ctx.link_state().is_up() {
        return Ok(Action::await_change());
    }
    let remote = kctx.twin(&remote_name, None).await?;
    if let Some(remote) = remote {
        let labels = serde_json::to_value(remote.labels()).unwrap_or(Value::Null);
        // Ours only if this app cluster wrote it (or the claim was restored to adopt it from a replaced one).
        let other = written_by_other(&labels, &ctx.cluster_uid);
        let ours = other.is_none() || claim.annotations().get(ADOPT_FROM) == other.as_ref();
        if ours && is_twin(&labels, &ctx.cluster_id, &namespace, &name) {
            if remote.meta().deletion_timestamp.is_none() {
                kctx.remote
                    .delete(&remote_name, &DeleteParams::default())
                    .await
                    .context(Side::ControlPlane, "delete claim", &remote_object)?;
                info!(remote = %remote_object, "deleting the remote claim");
            }
            // Crossplane may hold the remote claim until its composite is gone (Foreground).
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
    }
    // No twin (also when the control plane withdrew the kind, which takes its twins with it): let the claim go.
    finish(kctx, claim).await
}

/// The twin is gone (or stays by the user's choice): forget the claim and let it go.
async fn finish(kctx: &KindContext, claim: &DynamicObject) -> Result<Action, Error> {
    let key = kctx.key_of(claim);
    kctx.ctx.journal.remove_claim(&key)?;
    set_finalizer(kctx, claim, false).await?;
    kctx.ctx.metrics.forget(&key.to_string());
    Ok(Action::await_change())
}
