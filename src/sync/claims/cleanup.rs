//! A local claim being deleted: its twin deleted first (unless the claim says `Orphan`), then claimsync's
//! finalizer released; and the finalizer itself, added and removed under a resource-version precondition.

use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::info;

use super::kind_context::{KindContext, claim_key};
use super::status::told_if_unreachable;
use crate::error::{Error, KubeContext, Side};
use crate::model::naming::{is_twin, remote_claim_name};
use crate::model::vocabulary::{DELETION_POLICY, FINALIZER, MANAGER_DOWN};

/// Adds or removes claimsync's finalizer, guarded by the resource version so no concurrent change is lost.
pub(super) async fn set_finalizer(
    local_api: &Api<DynamicObject>,
    claim: &DynamicObject,
    present: bool,
) -> Result<(), Error> {
    let mut finalizers: Vec<String> = claim.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    if present {
        finalizers.push(FINALIZER.to_string());
    }
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": claim.resource_version()}});
    let params = PatchParams {
        field_manager: Some(MANAGER_DOWN.to_string()),
        ..PatchParams::default()
    };
    local_api
        .patch(&claim.name_any(), &params, &Patch::Merge(&patch))
        .await
        .context(Side::App, "set finalizer on claim", claim_key(claim))?;
    Ok(())
}

/// A local claim being deleted: delete its remote twin (unless orphaned), and release the finalizer once it is gone.
pub(super) async fn cleanup(kctx: &KindContext, claim: &DynamicObject) -> Result<Action, Error> {
    if !claim.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let ctx = &kctx.ctx;
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let remote_name = remote_claim_name(&name, &namespace, &ctx.cluster_id);
    let remote_object = format!("{}/{remote_name}", ctx.claim_namespace);
    let orphan = claim.annotations().get(DELETION_POLICY).is_some_and(|p| p == "Orphan");
    if !orphan {
        let remote =
            match kctx
                .remote
                .get_opt(&remote_name)
                .await
                .context(Side::ControlPlane, "get claim", &remote_object)
            {
                Ok(remote) => remote,
                Err(e) => {
                    let local = serde_json::to_value(claim).unwrap_or(Value::Null);
                    return Err(told_if_unreachable(kctx, claim, &local, e).await);
                }
            };
        if let Some(remote) = remote {
            let labels = serde_json::to_value(remote.labels()).unwrap_or(Value::Null);
            if is_twin(&labels, &ctx.cluster_id, &namespace, &name) {
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
    } else {
        info!(remote = %remote_object, "deletion policy Orphan: the remote claim stays");
    }
    ctx.journal.remove_claim(&kctx.key(&namespace, &name))?;
    set_finalizer(&kctx.local(&namespace), claim, false).await?;
    Ok(Action::await_change())
}
