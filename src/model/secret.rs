//! Connection secrets down: the Secret Crossplane writes for a remote claim becomes a Secret in the local claim's
//! namespace under the name the user asked for, owned by the local claim. Never overwrites a Secret it does not own.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::error::{Error, KubeContext, Side};
use crate::upward::MANAGER_DOWN;

pub const CONNECTION_SECRET_TYPE: &str = "connection.crossplane.io/v1alpha1";
pub const MANAGED_BY: &str = "claimsync.dev/managed-by";

/// The local claim a connection Secret belongs to.
pub struct Owner<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// The local Secret for the remote Secret's data.
pub fn local_secret(data: &BTreeMap<String, Value>, name: &str, namespace: &str, owner: &Owner) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY: "claimsync"},
            "ownerReferences": [{
                "apiVersion": owner.api_version, "kind": owner.kind, "name": owner.name, "uid": owner.uid,
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "type": CONNECTION_SECRET_TYPE,
        "data": data,
    })
}

/// Whether an existing local Secret is this claim's (its controller is the claim).
pub fn is_claims(existing: &Secret, claim_uid: &str) -> bool {
    existing
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == claim_uid)
}

/// What happened to a claim's connection Secret.
#[derive(Debug, PartialEq)]
pub enum SecretOutcome {
    /// The claim asks for no Secret.
    NotRequested,
    /// Crossplane has not written the remote Secret yet.
    NotYet,
    /// The local Secret holds the remote data; the hash of that data.
    InPlace { hash: String, written: bool },
    /// A Secret of that name exists locally and is not the claim's.
    Conflict { name: String },
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_secret_is_owned_by_the_claim() {
        let data = BTreeMap::from([("endpoint".to_string(), json!("aHR0cHM="))]);
        let owner = Owner {
            api_version: "k8s.starter.org/v1alpha1",
            kind: "KubernetesCluster",
            name: "demo",
            uid: "u1",
        };
        let secret = local_secret(&data, "demo-conn", "team", &owner);
        assert_eq!(secret["type"], CONNECTION_SECRET_TYPE);
        assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(secret["metadata"]["ownerReferences"][0]["controller"], true);
        let typed: Secret = serde_json::from_value(secret).unwrap();
        assert!(is_claims(&typed, "u1"));
        assert!(!is_claims(&typed, "u2"));
    }
}
