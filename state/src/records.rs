//! The plain-Rust record types stored in the journal: claim keys and records,
//! catalog entries, and the private event marks used for de-duplication.

use serde::{Deserialize, Serialize};

/// Identity of a replicated claim in the app cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClaimKey {
    /// API group of the claim kind (e.g. `k8s.starter.org`).
    pub group: String,
    /// Kind of the claim (e.g. `KubernetesCluster`).
    pub kind: String,
    /// Namespace of the local claim.
    pub namespace: String,
    /// Name of the local claim.
    pub name: String,
}

impl ClaimKey {
    /// Builds a key from its four parts.
    pub fn new(
        group: impl Into<String>,
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        ClaimKey {
            group: group.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ClaimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} {}/{}", self.group, self.kind, self.namespace, self.name)
    }
}

/// What was last synced for one claim, in each direction.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClaimRecord {
    /// UID of the local claim.
    pub local_uid: String,
    /// Resource version of the local claim last synced.
    pub local_resource_version: String,
    /// Name of the replica on the control plane.
    pub remote_name: String,
    /// UID of the remote replica, once known.
    pub remote_uid: Option<String>,
    /// Resource version of the remote replica last synced.
    pub remote_resource_version: Option<String>,
    /// Hash of the remote intent last applied up.
    pub spec_hash_up: Option<String>,
    /// The remote intent last applied up (what pending changes are measured against).
    pub last_intent: Option<serde_json::Value>,
    /// Hash of the status and Crossplane-owned fields last written down.
    pub status_hash_down: Option<String>,
    /// Hash of the connection secret data last written down.
    pub secret_hash_down: Option<String>,
    /// Name of the local connection Secret last written down (the claim's `writeConnectionSecretToRef.name`).
    pub secret_name_down: Option<String>,
    /// Last known remote status, kept for outages.
    pub last_status: Option<serde_json::Value>,
    /// What would go up but has not yet (offline, or failing): an RFC 6902 JSON Patch against the last remote state.
    pub pending_patch: Option<serde_json::Value>,
    /// The last error replicating this claim, if its last attempt failed.
    pub last_error: Option<String>,
    /// Unix time (seconds) this record was last updated, set by the caller.
    pub updated_unix: u64,
}

impl ClaimRecord {
    /// Whether two records say the same of their claim, whenever each was written: a record that only confirms
    /// the one before needs no write.
    pub fn says_the_same(&self, other: &ClaimRecord) -> bool {
        let mut same_time = other.clone();
        same_time.updated_unix = self.updated_unix;
        *self == same_time
    }
}

/// A claim kind offered by the control plane, as last replicated locally.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Name of the CRD (e.g. `kubernetesclusters.k8s.starter.org`).
    pub crd_name: String,
    /// API group of the kind.
    pub group: String,
    /// Kind name.
    pub kind: String,
    /// Plural resource name.
    pub plural: String,
    /// Served versions.
    pub versions: Vec<String>,
    /// Resource version of the remote CRD last replicated.
    pub remote_resource_version: String,
    /// Hash of the CRD spec as replicated.
    pub content_hash: String,
    /// The replicated CRD object as last applied locally.
    pub crd: serde_json::Value,
    /// True once the kind disappeared remotely.
    #[serde(default)]
    pub withdrawn: bool,
    /// Why a kind the control plane offers is not replicated (e.g. a cluster-scoped XR kind): such an entry is
    /// kept only so that users can see the kind and the reason; it has no local CRD and no claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_replicated: Option<String>,
}

/// Record that a remote event was mirrored locally up to some count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventMark {
    /// Highest `count` of the event mirrored so far.
    pub count: u64,
    /// Unix time (seconds) the mark was last written.
    pub recorded_unix: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_that_differ_only_in_time_say_the_same() {
        let first = ClaimRecord {
            local_uid: "u".into(),
            local_resource_version: "10".into(),
            last_status: Some(serde_json::json!({"ready": true})),
            updated_unix: 100,
            ..ClaimRecord::default()
        };
        let later = ClaimRecord {
            updated_unix: 900,
            ..first.clone()
        };
        assert!(first.says_the_same(&later));
        assert_eq!(later.updated_unix, 900, "the comparison leaves both as they are");
        let changed = [
            ClaimRecord {
                local_resource_version: "11".into(),
                ..later.clone()
            },
            ClaimRecord {
                last_status: Some(serde_json::json!({"ready": false})),
                ..later.clone()
            },
            ClaimRecord {
                last_error: Some("refused".into()),
                ..later.clone()
            },
        ];
        for other in changed {
            assert!(!first.says_the_same(&other), "{other:?}");
        }
    }
}
