//! Copying one claim CRD of the control plane into the app cluster: claimsync's copy applied (never over a CRD that
//! is not claimsync's), awaited until established, and recorded in the journal's catalog. Knows nothing of the
//! catalog's state or of other kinds.

use std::time::Duration;

use claimsync_state::{CatalogEntry, content_hash};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;
use tracing::info;

use crate::error::{Error, KubeContext, Side};
use crate::model::kind::{ClaimKind, claim_kind, is_current, local_crd, served_versions};
use crate::model::vocabulary::{MANAGED_BY, MANAGER_UP};
use crate::sync::context::Context;

/// Outcome of copying one remote claim CRD into the app cluster.
pub enum Copied {
    /// The local CRD is claimsync's copy and established; the copy as applied.
    Established(Value),
    /// A local CRD of that name is not claimsync's: left alone.
    NotOwned,
    /// The local CRD is being deleted; it can be made again once it is gone.
    Terminating,
}

/// Copies a remote claim CRD into the app cluster (unless the copy is current) and waits until it is established.
pub async fn copy_crd(local: &Client, remote: &Value) -> Result<Copied, Error> {
    let name = remote["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let local_crds = Api::<CustomResourceDefinition>::all(local.clone());
    let desired = local_crd(remote);
    let existing = local_crds.get_opt(&name).await.context(Side::App, "get CRD", &name)?;
    let existing = existing.map(|c| serde_json::to_value(c).unwrap_or(Value::Null));
    if let Some(existing) = &existing {
        if existing["metadata"]["labels"][MANAGED_BY] != "claimsync" {
            return Ok(Copied::NotOwned);
        }
        if existing["metadata"]["deletionTimestamp"].is_string() {
            return Ok(Copied::Terminating);
        }
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
            return Ok(Copied::Established(desired));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Object {
                object: format!("CRD {name}"),
                problem: "not established after 60s".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Outcome of replicating one remote claim CRD.
pub(super) enum Replicated {
    Ready(ClaimKind),
    /// A local CRD of that name is not claimsync's.
    NotOwned,
    /// The local CRD is being deleted; it is made again once it is gone.
    Terminating,
}

/// Makes the local CRD match the remote one and waits until it is established.
pub(super) async fn replicate(ctx: &Context, remote: &Value) -> Result<Replicated, Error> {
    let name = remote["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let desired = match copy_crd(&ctx.local, remote).await? {
        Copied::Established(desired) => desired,
        Copied::NotOwned => return Ok(Replicated::NotOwned),
        Copied::Terminating => return Ok(Replicated::Terminating),
    };
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
        not_replicated: None,
    })?;
    claim_kind(remote).map(Replicated::Ready).ok_or_else(|| Error::Object {
        object: format!("CRD {name}"),
        problem: "has no versions or names".into(),
    })
}
