//! Connection secrets down, the rules: the local Secret made from the one Crossplane wrote for a remote claim
//! (the user's name, owned by the local claim), and when an existing local Secret is the claim's. Pure functions;
//! sync/claims/secret.rs copies it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

use crate::model::vocabulary::{CONNECTION_SECRET_TYPE, MANAGED_BY};

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

/// Whether a Secret's controller is the object of `owner_uid`: a local Secret is the local claim's, and a remote
/// Secret was written by Crossplane for the twin (Crossplane makes the claim the controller of its connection
/// Secret, and refuses to write one it does not control).
pub fn controlled_by(secret: &Secret, owner_uid: &str) -> bool {
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == owner_uid)
}

/// Local Secrets claimsync made for a claim that the claim no longer asks for (its
/// `writeConnectionSecretToRef.name` changed or was removed): every Secret the claim controls but `current`.
pub fn stale_copies<'a>(secrets: &'a [Secret], claim_uid: &str, current: Option<&str>) -> Vec<&'a str> {
    secrets
        .iter()
        .filter(|s| controlled_by(s, claim_uid))
        .filter_map(|s| s.metadata.name.as_deref())
        .filter(|name| Some(*name) != current)
        .collect()
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
    /// The Secret at the twin's name on the control plane is not controlled by the twin: not Crossplane's.
    RemoteNotOwned { name: String },
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
        assert!(controlled_by(&typed, "u1"));
        assert!(!controlled_by(&typed, "u2"));
    }

    #[test]
    fn stale_copies_are_the_claims_other_secrets() {
        let secret = |name: &str, owner: &str, controller: bool| -> Secret {
            serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": [
                {"apiVersion": "v1", "kind": "K", "name": "c", "uid": owner, "controller": controller}]}}))
            .unwrap()
        };
        let secrets = [
            secret("old", "u1", true),
            secret("new", "u1", true),
            secret("other-claims", "u2", true),
            secret("only-referenced", "u1", false),
        ];
        assert_eq!(stale_copies(&secrets, "u1", Some("new")), ["old"]);
        assert_eq!(stale_copies(&secrets, "u1", None), ["old", "new"]);
    }
}
