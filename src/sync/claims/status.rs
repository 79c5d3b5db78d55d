//! What claimsync writes into a local claim: Crossplane's spec fields and the status (write_down), the
//! `Replicated` condition alone (show, mark_all), and Events on the claim. As the down manager (the spec fields by
//! server-side apply, the status, which is claimsync's alone, by merge patch), each write conditional on the
//! resource version it was computed from.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::warn;

use super::kind_context::{KindContext, claim_key, now};
use crate::error::{Error, KubeContext, Side};
use crate::model::conditions::{Replicated, with_replicated};
use crate::model::downward::{LocalDown, spec_shown};
use crate::model::fields::merge_diff;
use crate::model::kind::ClaimKind;
use crate::model::notes::bounded_note;
use crate::model::vocabulary::MANAGER_DOWN;
use crate::sync::caches::Cache;
use crate::sync::context::Context;

/// Writes the down-state into the local claim (`local` is `claim` as JSON): Crossplane's spec fields and
/// annotations, then the status. Each write holds only while the claim is still at the version it was read at,
/// so nothing computed from an older read replaces a user's newer change or a newer status (409 instead).
/// Returns the claim's resource version after the last write.
pub async fn write_down(
    local_api: &Api<DynamicObject>,
    claim: &DynamicObject,
    local: &Value,
    down: &LocalDown,
) -> Result<Option<String>, Error> {
    let name = claim.name_any();
    let mut current = None;
    if !spec_shown(local, down) {
        let types = claim.types.clone().unwrap_or_default();
        let mut patch = json!({
            "apiVersion": types.api_version, "kind": types.kind,
            "metadata": {"name": name, "resourceVersion": claim.resource_version()},
            "spec": down.spec,
        });
        if !down.annotations.is_empty() {
            patch["metadata"]["annotations"] = Value::Object(down.annotations.clone());
        }
        let written = local_api
            .patch(&name, &PatchParams::apply(MANAGER_DOWN).force(), &Patch::Apply(&patch))
            .await
            .context(Side::App, "apply Crossplane's spec fields to claim", claim_key(claim))?;
        current = Some(written);
    }
    if local["status"] != down.status {
        let written = write_status(
            local_api,
            current.as_ref().unwrap_or(claim),
            &local["status"],
            &down.status,
            "write status to claim",
        )
        .await?;
        current = Some(written);
    }
    Ok(current.as_ref().unwrap_or(claim).resource_version())
}

/// Makes a local claim's status `status` (it was `before`, as read in `claim`) by a merge patch of the difference,
/// as claimsync's down manager (the local status is claimsync's alone: what is not in `status` goes), only while the
/// claim is still at `claim`'s resource version (else 409: the caller read something older than what is there now).
/// A merge patch costs the API server less than a server-side apply of the whole status (`e2e/bench --steps`).
pub async fn write_status(
    local_api: &Api<DynamicObject>,
    claim: &DynamicObject,
    before: &Value,
    status: &Value,
    action: &'static str,
) -> Result<DynamicObject, Error> {
    let name = claim.name_any();
    let change = merge_diff(before, status).unwrap_or_else(|| json!({}));
    let patch = json!({"metadata": {"resourceVersion": claim.resource_version()}, "status": change});
    let params = PatchParams {
        field_manager: Some(MANAGER_DOWN.into()),
        ..PatchParams::default()
    };
    let mut written = local_api
        .patch_status(&name, &params, &Patch::Merge(&patch))
        .await
        .context(Side::App, action, claim_key(claim))?;
    written.types = written.types.or_else(|| claim.types.clone());
    Ok(written)
}

/// Sets only the `Replicated` condition, keeping the rest of the status (the last known remote status); fails
/// with 409 if the claim changed since `claim` was read (`local` is `claim` as JSON). Returns the claim as written,
/// or `None` when it already showed the condition.
pub(super) async fn show(
    local_api: &Api<DynamicObject>,
    claim: &DynamicObject,
    local: &Value,
    cond: &Replicated,
) -> Result<Option<DynamicObject>, Error> {
    let status = with_replicated(&local["status"], cond, &now());
    if status == local["status"] {
        return Ok(None);
    }
    let written = write_status(
        local_api,
        claim,
        &local["status"],
        &status,
        "set Replicated condition on claim",
    )
    .await?;
    Ok(Some(written))
}

/// How often a condition set outside a reconcile reads the claim again after a conflict before giving up.
const CONFLICT_RETRIES: usize = 5;

/// Sets `cond` as the `Replicated` condition of a claim read earlier (`claim`, e.g. from a list), keeping the rest
/// of its status as it is now: on a conflict the claim is read again, so an older read never undoes a newer status.
pub async fn set_replicated(
    local_api: &Api<DynamicObject>,
    claim: DynamicObject,
    cond: &Replicated,
) -> Result<(), Error> {
    let types = claim.types.clone();
    let mut claim = claim;
    for _ in 0..CONFLICT_RETRIES {
        let local = serde_json::to_value(&claim).unwrap_or(Value::Null);
        match show(local_api, &claim, &local, cond).await.map(|_| ()) {
            Err(e) if e.is_conflict() => {
                let Some(mut fresh) =
                    local_api
                        .get_opt(&claim.name_any())
                        .await
                        .context(Side::App, "get claim", claim_key(&claim))?
                else {
                    return Ok(());
                };
                fresh.types = fresh.types.or_else(|| types.clone());
                claim = fresh;
            }
            other => return other,
        }
    }
    Err(Error::Object {
        object: claim_key(&claim),
        problem: format!(
            "the claim kept changing; the Replicated condition was not set after {CONFLICT_RETRIES} tries"
        ),
    })
}

/// Sets `cond` as the `Replicated` condition of every local claim of a kind (in the selected namespaces),
/// keeping the rest of their status.
pub async fn mark_all(ctx: &Arc<Context>, kind: &ClaimKind, cond: &Replicated) -> Result<(), Error> {
    let kctx = KindContext::new(ctx.clone(), kind.clone(), false, Cache::unwatched());
    let all = Api::<DynamicObject>::all_with(ctx.local.clone(), &kctx.resource);
    let claims = all
        .list(&ListParams::default())
        .await
        .context(Side::App, "list claims", &kind.plural)?;
    let claims: Vec<DynamicObject> = claims
        .items
        .into_iter()
        .filter(|c| ctx.namespace_selected(&c.namespace().unwrap_or_default()))
        .filter(|c| c.meta().deletion_timestamp.is_none())
        .collect();
    // As many at once as the claim controllers write: a kind of thousands of claims is marked in its time, not
    // thousands of round trips in a row.
    let kctx = &kctx;
    futures::stream::iter(claims)
        .map(|mut claim| async move {
            claim.types.get_or_insert_with(|| kube::api::TypeMeta {
                api_version: kctx.resource.api_version.clone(),
                kind: kctx.resource.kind.clone(),
            });
            let local_api = kctx.local(&claim.namespace().unwrap_or_default());
            set_replicated(&local_api, claim, cond).await
        })
        .buffer_unordered(usize::from(ctx.concurrency.max(1)))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Publishes a Warning Event on the local claim; a failure to do so is only logged.
pub(super) async fn event(kctx: &KindContext, claim: &DynamicObject, reason: &str, note: &str) {
    let reference = claim.object_ref(&kctx.resource);
    let ev = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(bounded_note(note)),
        action: "Replicate".into(),
        secondary: None,
    };
    if let Err(e) = kctx.ctx.recorder.publish(&ev, &reference).await {
        warn!(error = %e, reason, "could not publish an Event");
    }
}
