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
}

/// Record that a remote event was mirrored locally up to some count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventMark {
    /// Highest `count` of the event mirrored so far.
    pub count: u64,
    /// Unix time (seconds) the mark was last written.
    pub recorded_unix: u64,
}
