//! Connection secrets down, the I/O: reads the Secret Crossplane wrote for a twin and applies its data to the
//! local Secret the user asked for, unless it is in place, and removes copies the claim no longer asks for. Never
//! copies a remote Secret Crossplane did not write for the twin, never overwrites a local one the claim does not own.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::error::{Error, KubeContext, Side};
use crate::model::secret::{Owner, SecretOutcome, controlled_by, local_secret, stale_copies};
use crate::model::vocabulary::{CONNECTION_SECRET_TYPE, MANAGED_BY, MANAGER_DOWN};
use crate::sync::caches::RemoteCaches;

/// One claim's connection Secret: where Crossplane writes it and where the user wants it.
pub struct SecretCopy<'a> {
    /// The twin's name, which is also the name of its Secret in the claim namespace.
    pub remote_name: &'a str,
    /// The twin's uid: the remote Secret must be controlled by it.
    pub twin_uid: &'a str,
    /// `spec.writeConnectionSecretToRef.name` of the local claim, if any.
    pub local_name: Option<&'a str>,
    pub namespace: &'a str,
    pub owner: Owner<'a>,
}

/// Copies the twin's connection Secret to the local Secret the claim asks for, unless it is in place. Both Secrets
/// are read from the watch caches when they are filled (a local Secret claimsync did not make is not in its cache,
/// so a name that may be taken is asked of the API server).
pub async fn sync(
    caches: &RemoteCaches,
    remote: &Api<Secret>,
    local: &Api<Secret>,
    copy: &SecretCopy<'_>,
) -> Result<SecretOutcome, Error> {
    let (remote_name, namespace, owner) = (copy.remote_name, copy.namespace, &copy.owner);
    let Some(local_name) = copy.local_name else {
        return Ok(SecretOutcome::NotRequested);
    };
    let remote_secret = match caches.secret(remote_name).await {
        Some(cached) => cached.map(|s| (*s).clone()),
        None => remote
            .get_opt(remote_name)
            .await
            .context(Side::ControlPlane, "get Secret", remote_name)?,
    };
    let Some(remote_secret) = remote_secret else {
        return Ok(SecretOutcome::NotYet);
    };
    if !controlled_by(&remote_secret, copy.twin_uid) {
        return Ok(SecretOutcome::RemoteNotOwned {
            name: remote_name.to_string(),
        });
    }
    let data: BTreeMap<String, Value> = remote_secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or(Value::Null)))
        .collect();
    let hash = claimsync_state::content_hash(&json!(data));
    let object = format!("{namespace}/{local_name}");
    let existing = match caches.local_secret(namespace, local_name) {
        Some(ours) => Some((*ours).clone()),
        None => local
            .get_opt(local_name)
            .await
            .context(Side::App, "get Secret", &object)?,
    };
    if let Some(existing) = &existing {
        if !controlled_by(existing, owner.uid) {
            return Ok(SecretOutcome::Conflict {
                name: local_name.to_string(),
            });
        }
        let current: BTreeMap<String, Value> = existing
            .data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or(Value::Null)))
            .collect();
        if current == data && existing.type_.as_deref() == Some(CONNECTION_SECRET_TYPE) {
            return Ok(SecretOutcome::InPlace { hash, written: false });
        }
    }
    let desired = local_secret(&data, local_name, namespace, owner);
    local
        .patch(
            local_name,
            &PatchParams::apply(MANAGER_DOWN).force(),
            &Patch::Apply(&desired),
        )
        .await
        .context(Side::App, "apply Secret", &object)?;
    Ok(SecretOutcome::InPlace { hash, written: true })
}

/// Deletes the local Secrets claimsync made for this claim under a name it no longer asks for; returns their names.
pub async fn remove_stale(local: &Api<Secret>, copy: &SecretCopy<'_>) -> Result<Vec<String>, Error> {
    let ours = local
        .list(&ListParams::default().labels(&format!("{MANAGED_BY}=claimsync")))
        .await
        .context(Side::App, "list Secrets", copy.namespace)?;
    let stale: Vec<String> = stale_copies(&ours.items, copy.owner.uid, copy.local_name)
        .into_iter()
        .map(str::to_string)
        .collect();
    for name in &stale {
        local.delete(name, &DeleteParams::default()).await.context(
            Side::App,
            "delete Secret",
            format!("{}/{name}", copy.namespace),
        )?;
    }
    Ok(stale)
}
