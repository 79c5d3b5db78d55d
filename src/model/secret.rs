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

/// Whether a local Secret is one claimsync made for an earlier claim of the same kind, namespace and name: its label,
/// and a controller of the same API group, kind and name with another uid. A name is unique in a namespace, so
/// that claim is gone (deleted with its CRD, say, and applied again by GitOps): the Secret is the new claim's to
/// take over. Anything else at the name stays a conflict.
pub fn made_for_an_earlier(secret: &Secret, owner: &Owner) -> bool {
    let group = |api_version: &str| api_version.rsplit_once('/').map_or("", |(group, _)| group).to_string();
    let ours = secret
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.get(MANAGED_BY).map(String::as_str) == Some("claimsync"));
    let controller = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    ours && controller.is_some_and(|r| {
        group(&r.api_version) == group(owner.api_version)
            && r.kind == owner.kind
            && r.name == owner.name
            && r.uid != owner.uid
    })
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
    fn a_secret_made_for_an_earlier_claim_of_the_same_name_is_the_new_ones() {
        let owner = Owner {
            api_version: "k8s.starter.org/v1beta1",
            kind: "KubernetesCluster",
            name: "demo",
            uid: "new-uid",
        };
        let secret = |labelled: bool, api_version: &str, kind: &str, name: &str, uid: &str| -> Secret {
            let labels = if labelled {
                json!({MANAGED_BY: "claimsync"})
            } else {
                json!({})
            };
            serde_json::from_value(
                json!({"metadata": {"name": "demo-conn", "labels": labels, "ownerReferences": [
                {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": true}]}}),
            )
            .unwrap()
        };
        let earlier = secret(true, "k8s.starter.org/v1alpha1", "KubernetesCluster", "demo", "old-uid");
        assert!(
            made_for_an_earlier(&earlier, &owner),
            "another version of the same kind"
        );
        for (case, other) in [
            (
                "not claimsync's",
                secret(
                    false,
                    "k8s.starter.org/v1alpha1",
                    "KubernetesCluster",
                    "demo",
                    "old-uid",
                ),
            ),
            (
                "another claim's",
                secret(true, "k8s.starter.org/v1alpha1", "KubernetesCluster", "web", "old-uid"),
            ),
            (
                "another kind's",
                secret(true, "k8s.starter.org/v1alpha1", "Database", "demo", "old-uid"),
            ),
            (
                "another group's",
                secret(true, "db.starter.org/v1alpha1", "KubernetesCluster", "demo", "old-uid"),
            ),
            (
                "this claim's",
                secret(true, "k8s.starter.org/v1beta1", "KubernetesCluster", "demo", "new-uid"),
            ),
        ] {
            assert!(!made_for_an_earlier(&other, &owner), "{case}");
        }
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
