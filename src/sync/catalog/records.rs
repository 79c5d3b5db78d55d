//! The journal's catalog records the catalog keeps beside the copies: a kind withdrawn, a kind offered but not
//! replicated (with why). Writes the journal only.

use claimsync_state::{CatalogEntry, content_hash};
use serde_json::Value;
use tracing::{info, warn};

use crate::model::kind::{CLUSTER_XR_NOT_REPLICATED, served_versions};
use crate::sync::context::Context;

/// Records in the journal's catalog that a kind is withdrawn (if the catalog knows it and does not say so yet).
pub(super) fn record_withdrawn(ctx: &Context, crd_name: &str) {
    let Some(mut entry) = ctx.journal.catalog_entry(crd_name).ok().flatten() else {
        return;
    };
    if entry.withdrawn {
        return;
    }
    entry.withdrawn = true;
    if let Err(e) = ctx.journal.put_catalog_entry(&entry) {
        warn!(crd = %crd_name, error = %e, "could not record the withdrawal in the journal");
    }
}

/// Forgets a kind recorded as not replicated (and only such an entry: a replicated kind keeps its own).
pub(super) fn forget_not_replicated(ctx: &Context, name: &str) {
    let recorded = ctx.journal.catalog_entry(name).ok().flatten();
    if recorded.is_some_and(|e| e.not_replicated.is_some())
        && let Err(e) = ctx.journal.remove_catalog_entry(name)
    {
        warn!(crd = %name, error = %e, "could not forget a kind that is not replicated");
    }
}

/// Records a kind the control plane offers that is not replicated (a cluster-scoped XR kind) with why, unless the
/// catalog says so already for the same CRD spec.
pub(super) fn record_not_replicated(ctx: &Context, crd: &Value) {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let entry = CatalogEntry {
        crd_name: name.to_string(),
        group: text(&crd["spec"]["group"]),
        kind: text(&crd["spec"]["names"]["kind"]),
        plural: text(&crd["spec"]["names"]["plural"]),
        versions: served_versions(crd),
        remote_resource_version: text(&crd["metadata"]["resourceVersion"]),
        content_hash: content_hash(&crd["spec"]),
        crd: Value::Null,
        withdrawn: false,
        not_replicated: Some(CLUSTER_XR_NOT_REPLICATED.to_string()),
    };
    let known = ctx.journal.catalog_entry(name).ok().flatten();
    if known
        .as_ref()
        .is_some_and(|k| k.content_hash == entry.content_hash && k.not_replicated.is_some())
    {
        return;
    }
    info!(crd = %name, "the control plane offers a cluster-scoped XR kind; it is listed but not replicated");
    if let Err(e) = ctx.journal.put_catalog_entry(&entry) {
        warn!(crd = %name, error = %e, "could not record a kind that is not replicated");
    }
}
