//! claimsync's hold on a local claim: its finalizer and the annotation naming this claimsync, put on or taken off
//! together in one write guarded by the claim's resource version. When to do either is the planner's decision.

use kube::ResourceExt;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::kind_context::{KindContext, claim_key};
use crate::error::{Error, KubeContext, Side};
use crate::model::vocabulary::{FINALIZER, MANAGER_DOWN, REPLICATED_BY};

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
