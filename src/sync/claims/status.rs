//! What claimsync writes into a local claim: Crossplane's spec fields and the status (write_down), the
//! `Replicated` condition alone (show, mark_all), and Events on the claim. Server-side apply as the down manager.

use std::sync::Arc;

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::warn;

use super::kind_context::{KindContext, claim_key, now};
use crate::context::Context;
use crate::error::{Error, KubeContext, Side};
use crate::model::conditions::{Reason, Replicated, with_replicated};
use crate::model::downward::{LocalDown, spec_shown};
use crate::model::kind::ClaimKind;
use crate::model::notes::bounded_note;
use crate::model::vocabulary::MANAGER_DOWN;

/// Writes the down-state into the local claim (`local` is `claim` as JSON): Crossplane's spec fields and
/// annotations, then the status.
pub(super) async fn write_down(
    local_api: &Api<DynamicObject>,
    claim: &DynamicObject,
    local: &Value,
    down: &LocalDown,
) -> Result<(), Error> {
    let name = claim.name_any();
    if !spec_shown(local, down) {
        let types = claim.types.clone().unwrap_or_default();
        let mut patch =
            json!({"apiVersion": types.api_version, "kind": types.kind, "metadata": {"name": name}, "spec": down.spec});
        if !down.annotations.is_empty() {
            patch["metadata"]["annotations"] = Value::Object(down.annotations.clone());
        }
        local_api
            .patch(&name, &PatchParams::apply(MANAGER_DOWN).force(), &Patch::Apply(&patch))
            .await
            .context(Side::App, "apply Crossplane's spec fields to claim", claim_key(claim))?;
    }
    if local["status"] != down.status {
        apply_status(local_api, claim, &down.status, "apply status to claim").await?;
    }
    Ok(())
}

/// Server-side applies a local claim's whole status as claimsync's down manager.
async fn apply_status(
    local_api: &Api<DynamicObject>,
    claim: &DynamicObject,
    status: &Value,
    action: &'static str,
) -> Result<(), Error> {
    let types = claim.types.clone().unwrap_or_default();
    let name = claim.name_any();
    let patch =
        json!({"apiVersion": types.api_version, "kind": types.kind, "metadata": {"name": name}, "status": status});
    local_api
        .patch_status(&name, &PatchParams::apply(MANAGER_DOWN).force(), &Patch::Apply(&patch))
        .await
        .context(Side::App, action, claim_key(claim))?;
    Ok(())
}

/// Shows `ControlPlaneUnreachable` on the claim when `error` is the control plane not answering, keeping the
/// last known status; hands back the error to retry on (or the failure to show it).
pub(super) async fn told_if_unreachable(
    kctx: &KindContext,
    claim: &DynamicObject,
    local: &Value,
    error: Error,
) -> Error {
    if !error.is_unreachable(Side::ControlPlane) {
        return error;
    }
    let message = format!("the control plane is unreachable ({error}); showing the last known status");
    match show(
        kctx,
        claim,
        local,
        Replicated::new(Reason::ControlPlaneUnreachable, message),
    )
    .await
    {
        Ok(()) => error,
        Err(shown) => shown,
    }
}

/// Sets only the `Replicated` condition, keeping the rest of the status (the last known remote status).
pub(super) async fn show(
    kctx: &KindContext,
    claim: &DynamicObject,
    local: &Value,
    cond: Replicated,
) -> Result<(), Error> {
    let status = with_replicated(&local["status"], &cond, &now());
    if status == local["status"] {
        return Ok(());
    }
    let local_api = kctx.local(&claim.namespace().unwrap_or_default());
    apply_status(&local_api, claim, &status, "set Replicated condition on claim").await
}

/// Sets `cond` as the `Replicated` condition of every local claim of a kind (in the selected namespaces),
/// keeping the rest of their status.
pub async fn mark_all(ctx: &Arc<Context>, kind: &ClaimKind, cond: &Replicated) -> Result<(), Error> {
    let kctx = KindContext::new(ctx.clone(), kind.clone());
    let all = Api::<DynamicObject>::all_with(ctx.local.clone(), &kctx.resource);
    let claims = all
        .list(&ListParams::default())
        .await
        .context(Side::App, "list claims", &kind.plural)?;
    let claims = claims
        .items
        .into_iter()
        .filter(|c| ctx.namespace_selected(&c.namespace().unwrap_or_default()));
    for mut claim in claims {
        if claim.meta().deletion_timestamp.is_some() {
            continue;
        }
        claim.types.get_or_insert_with(|| kube::api::TypeMeta {
            api_version: kctx.resource.api_version.clone(),
            kind: kctx.resource.kind.clone(),
        });
        let local = serde_json::to_value(&claim).unwrap_or(Value::Null);
        show(&kctx, &claim, &local, cond.clone()).await?;
    }
    Ok(())
}

/// Publishes an Event on the local claim; a failure to do so is only logged.
pub(super) async fn event(kctx: &KindContext, claim: &DynamicObject, type_: EventType, reason: &str, note: &str) {
    let reference = claim.object_ref(&kctx.resource);
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(bounded_note(note)),
        action: "Replicate".into(),
        secondary: None,
    };
    if let Err(e) = kctx.ctx.recorder.publish(&ev, &reference).await {
        warn!(error = %e, reason, "could not publish an Event");
    }
}
