//! Connection secrets down, the I/O: reads the Secret Crossplane wrote for a remote claim and applies its data to
//! the local Secret the user asked for, unless it is in place. Never overwrites a Secret the claim does not own.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::error::{Error, KubeContext, Side};
use crate::model::secret::{Owner, SecretOutcome, is_claims, local_secret};
use crate::model::vocabulary::{CONNECTION_SECRET_TYPE, MANAGER_DOWN};

/// Copies the remote connection Secret `remote_name` to `local_name` in `namespace`, unless it is in place.
pub async fn sync(
    remote: &Api<Secret>,
    local: &Api<Secret>,
    remote_name: &str,
    local_name: Option<&str>,
    namespace: &str,
    owner: &Owner<'_>,
) -> Result<SecretOutcome, Error> {
    let Some(local_name) = local_name else {
        return Ok(SecretOutcome::NotRequested);
    };
    let Some(remote_secret) =
        remote
            .get_opt(remote_name)
            .await
            .context(Side::ControlPlane, "get Secret", remote_name)?
    else {
        return Ok(SecretOutcome::NotYet);
    };
    let data: BTreeMap<String, Value> = remote_secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or(Value::Null)))
        .collect();
    let hash = claimsync_state::content_hash(&json!(data));
    let object = format!("{namespace}/{local_name}");
    let existing = local
        .get_opt(local_name)
        .await
        .context(Side::App, "get Secret", &object)?;
    if let Some(existing) = &existing {
        if !is_claims(existing, owner.uid) {
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
