//! The objects the API serves, as JSON: a `ClaimSync` from what the app cluster says of a claim (plus its journal
//! record), an orphaned `ClaimSync` from a journal record alone, and a `ClaimKind` from a local claim CRD. Also
//! the facts read out of those Kubernetes objects. Pure functions; no resourceVersion here (the index sets it).

use std::collections::BTreeMap;

use claimsync_state::{CatalogEntry, ClaimKey, ClaimRecord};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::names::qualified_name;
use super::resources::{GROUP_LABEL, GROUP_VERSION, KIND_LABEL, PHASE_LABEL, QUALIFIED_NAME_ANNOTATION, Resource};
use crate::model::kind::{KindFamily, claim_kind, owning_xrd, served_versions};
use crate::model::naming::remote_name;
use crate::model::phase::Phase;
use crate::model::vocabulary::{MANAGER_UP, REPLICATED, XRD_ANNOTATION};

/// What a local claim CRD made by claimsync says of its kind.
#[derive(Clone, Debug, PartialEq)]
pub struct KindFacts {
    pub crd_name: String,
    /// Claims, or Crossplane v2 namespaced XRs.
    pub family: KindFamily,
    pub uid: String,
    pub created: String,
    pub group: String,
    pub kind: String,
    pub plural: String,
    /// The storage version, at which claims are read.
    pub version: String,
    pub versions: Vec<String>,
    pub established: bool,
    pub xrd: Option<String>,
    /// When claimsync last wrote the CRD (its managedFields entry).
    pub last_written: Option<String>,
}

/// Reads a local claim CRD; `None` if it is not one (no names, no versions).
pub fn kind_facts(crd: &Value) -> Option<KindFacts> {
    let kind = claim_kind(crd)?;
    let metadata = &crd["metadata"];
    let established = crd["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
    let xrd = metadata["annotations"][XRD_ANNOTATION]
        .as_str()
        .or_else(|| owning_xrd(crd))
        .map(str::to_string);
    let last_written = metadata["managedFields"].as_array().and_then(|entries| {
        entries
            .iter()
            .filter(|e| e["manager"] == MANAGER_UP && e["subresource"].is_null())
            .filter_map(|e| e["time"].as_str())
            .max()
            .map(str::to_string)
    });
    Some(KindFacts {
        family: kind.family,
        crd_name: kind.crd_name,
        uid: text(&metadata["uid"]),
        created: text(&metadata["creationTimestamp"]),
        group: kind.group,
        kind: kind.kind,
        plural: kind.plural,
        version: kind.version,
        versions: served_versions(crd),
        established,
        xrd,
        last_written,
    })
}

/// What a local claim says of its replication.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimFacts {
    pub uid: String,
    pub resource_version: String,
    pub created: String,
    pub deleting: bool,
    /// The claim's `Replicated` condition: reason, message and since when.
    pub reason: Option<String>,
    pub message: Option<String>,
    pub since: Option<String>,
}

pub fn claim_facts(claim: &Value) -> ClaimFacts {
    let metadata = &claim["metadata"];
    let condition = claim["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == REPLICATED));
    let field = |name: &str| condition.and_then(|c| c[name].as_str()).map(str::to_string);
    ClaimFacts {
        uid: text(&metadata["uid"]),
        resource_version: text(&metadata["resourceVersion"]),
        created: text(&metadata["creationTimestamp"]),
        deleting: metadata["deletionTimestamp"].is_string(),
        reason: field("reason"),
        message: field("message"),
        since: field("lastTransitionTime"),
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

/// RFC 3339 of a unix time, as the API writes times.
pub fn rfc3339(unix: u64) -> Option<String> {
    let seconds = i64::try_from(unix).ok()?;
    Timestamp::from_second(seconds).ok().map(|t| t.to_string())
}

/// The facts a `ClaimSync` is made of besides the claim's own.
pub struct SyncContext<'a> {
    /// The cluster id twins are named after, once known.
    pub cluster_id: Option<&'a str>,
    /// `--claim-namespace`: where the twins live on the control plane.
    pub remote_namespace: Option<&'a str>,
    /// The family of the claim's kind, which names its twin.
    pub family: KindFamily,
}

fn labels(kind: &str, group: &str, phase: Option<Phase>) -> Value {
    let mut labels = Map::new();
    labels.insert(KIND_LABEL.into(), json!(kind));
    labels.insert(GROUP_LABEL.into(), json!(group));
    if let Some(phase) = phase {
        labels.insert(PHASE_LABEL.into(), json!(phase.as_str()));
    }
    Value::Object(labels)
}

/// Drops the nulls of an object's top level (optional fields unset).
fn compact(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        other => other,
    }
}

/// The `ClaimSync` of a live local claim of `kind` (at `version`), with its journal record if this replica has one.
pub fn claim_sync(
    key: &ClaimKey,
    version: &str,
    claim: &ClaimFacts,
    record: Option<&ClaimRecord>,
    ctx: &SyncContext<'_>,
) -> Value {
    let phase = Phase::of(claim.reason.as_deref(), claim.deleting);
    let remote_name = record
        .map(|r| r.remote_name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| {
            ctx.cluster_id
                .map(|id| remote_name(ctx.family, &key.name, &key.namespace, id))
        });
    let last_sync = record
        .and_then(|r| rfc3339(r.updated_unix).filter(|_| r.updated_unix > 0))
        .or_else(|| claim.since.clone().filter(|_| phase == Phase::Synced));
    json!({
        "apiVersion": GROUP_VERSION,
        "kind": Resource::ClaimSyncs.kind(),
        "metadata": {
            "name": key.name,
            "namespace": key.namespace,
            "uid": claim.uid,
            "creationTimestamp": claim.created,
            "labels": labels(&key.kind, &key.group, Some(phase)),
            "annotations": {QUALIFIED_NAME_ANNOTATION: qualified_name(&key.name, &key.kind, &key.group)},
        },
        "spec": compact(json!({
            "claimRef": {
                "apiVersion": format!("{}/{version}", key.group),
                "kind": key.kind,
                "namespace": key.namespace,
                "name": key.name,
                "uid": claim.uid,
            },
            "remoteName": remote_name,
            "remoteNamespace": ctx.remote_namespace,
        })),
        "status": compact(json!({
            "phase": phase.as_str(),
            "reason": claim.reason,
            "message": claim.message,
            "localResourceVersion": claim.resource_version,
            "remoteResourceVersion": record.and_then(|r| r.remote_resource_version.clone()),
            "lastSyncTime": last_sync,
            "lastError": record.and_then(|r| r.last_error.clone()),
            "pendingPatch": record.and_then(|r| r.pending_patch.clone()),
        })),
    })
}

/// The `ClaimSync` of a twin the journal knows whose local claim is gone (seen gone: its kind's claims were listed
/// since, or its kind is gone). Whether the twin itself still exists only the control plane can say.
pub fn orphan_sync(key: &ClaimKey, version: Option<&str>, record: &ClaimRecord, ctx: &SyncContext<'_>) -> Value {
    let api_version = version.map(|v| format!("{}/{v}", key.group));
    json!({
        "apiVersion": GROUP_VERSION,
        "kind": Resource::ClaimSyncs.kind(),
        "metadata": {
            "name": key.name,
            "namespace": key.namespace,
            "uid": record.local_uid,
            "labels": labels(&key.kind, &key.group, Some(Phase::Orphaned)),
            "annotations": {QUALIFIED_NAME_ANNOTATION: qualified_name(&key.name, &key.kind, &key.group)},
        },
        "spec": compact(json!({
            "claimRef": compact(json!({
                "apiVersion": api_version,
                "kind": key.kind,
                "namespace": key.namespace,
                "name": key.name,
                "uid": record.local_uid,
            })),
            "remoteName": record.remote_name,
            "remoteNamespace": ctx.remote_namespace,
        })),
        "status": compact(json!({
            "phase": Phase::Orphaned.as_str(),
            "message": "the journal records a twin on the control plane, but the local claim is gone",
            "localResourceVersion": Some(record.local_resource_version.clone()).filter(|v| !v.is_empty()),
            "remoteResourceVersion": record.remote_resource_version,
            "lastSyncTime": rfc3339(record.updated_unix).filter(|_| record.updated_unix > 0),
            "lastError": record.last_error,
            "pendingPatch": record.pending_patch,
        })),
    })
}

/// How many claims of a kind there are, and how many of them are in sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub claims: usize,
    pub replicated: usize,
}

/// The `ClaimKind` of a local claim CRD; `entry` is its journal catalog entry if this replica has one.
pub fn claim_kind_object(kind: &KindFacts, counts: Counts, entry: Option<&CatalogEntry>) -> Value {
    json!({
        "apiVersion": GROUP_VERSION,
        "kind": Resource::ClaimKinds.kind(),
        "metadata": {
            "name": kind.crd_name,
            "uid": kind.uid,
            "creationTimestamp": kind.created,
            "labels": labels(&kind.kind, &kind.group, None),
        },
        "spec": compact(json!({
            "group": kind.group,
            "kind": kind.kind,
            "plural": kind.plural,
            "versions": kind.versions,
            "storageVersion": kind.version,
            "compositeResourceDefinition": kind.xrd,
            "family": kind.family.as_str(),
        })),
        "status": compact(json!({
            "established": kind.established,
            "claims": counts.claims,
            "claimsReplicated": counts.replicated,
            "lastCatalogSync": kind.last_written,
            "withdrawn": entry.map(|e| e.withdrawn),
        })),
    })
}

/// The `ClaimKind` of a kind the control plane offers that claimsync does not replicate (a cluster-scoped XR kind):
/// its names, family and why, from the journal's catalog; it has no local CRD and no claims.
pub fn not_replicated_kind_object(entry: &CatalogEntry) -> Value {
    json!({
        "apiVersion": GROUP_VERSION,
        "kind": Resource::ClaimKinds.kind(),
        "metadata": {
            "name": entry.crd_name,
            "labels": labels(&entry.kind, &entry.group, None),
        },
        "spec": compact(json!({
            "group": entry.group,
            "kind": entry.kind,
            "plural": entry.plural,
            "versions": entry.versions,
            "family": "ClusterXR",
        })),
        "status": compact(json!({
            "established": false,
            "claims": 0,
            "claimsReplicated": 0,
            "notReplicated": entry.not_replicated,
        })),
    })
}

/// The labels of a served object, for label selectors.
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::naming::remote_claim_name;

    fn crd() -> Value {
        json!({
            "metadata": {
                "name": "kubernetesclusters.k8s.starter.org", "uid": "u-crd", "creationTimestamp": "2025-01-01T00:00:00Z",
                "labels": {"claimsync.dev/managed-by": "claimsync"},
                "annotations": {XRD_ANNOTATION: "xkubernetesclusters.k8s.starter.org"},
                "managedFields": [
                    {"manager": "claimsync", "operation": "Apply", "time": "2025-01-02T00:00:00Z"},
                    {"manager": "kube-apiserver", "operation": "Update", "subresource": "status", "time": "2025-01-03T00:00:00Z"},
                ],
            },
            "spec": {"group": "k8s.starter.org", "scope": "Namespaced",
                     "names": {"kind": "KubernetesCluster", "plural": "kubernetesclusters"},
                     "versions": [{"name": "v1alpha1", "served": true, "storage": true}]},
            "status": {"conditions": [{"type": "Established", "status": "True"}]},
        })
    }

    fn claim(reason: Option<&str>, deleting: bool) -> Value {
        let mut claim = json!({
            "metadata": {"name": "db", "namespace": "team-a", "uid": "u-1", "resourceVersion": "41",
                         "creationTimestamp": "2025-02-01T00:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Available"}]},
        });
        if let Some(reason) = reason {
            claim["status"]["conditions"].as_array_mut().unwrap().push(json!({
                "type": REPLICATED, "status": "True", "reason": reason, "message": "m",
                "lastTransitionTime": "2025-02-01T00:01:00Z",
            }));
        }
        if deleting {
            claim["metadata"]["deletionTimestamp"] = json!("2025-02-02T00:00:00Z");
        }
        claim
    }

    fn key() -> ClaimKey {
        ClaimKey::new("k8s.starter.org", "KubernetesCluster", "team-a", "db")
    }

    #[test]
    fn kind_facts_come_from_the_local_crd() {
        let facts = kind_facts(&crd()).unwrap();
        assert_eq!(facts.xrd.as_deref(), Some("xkubernetesclusters.k8s.starter.org"));
        assert!(facts.established);
        assert_eq!(facts.last_written.as_deref(), Some("2025-01-02T00:00:00Z"));
        assert_eq!(facts.versions, ["v1alpha1"]);

        let mut pending = crd();
        pending["status"] = json!({});
        pending["metadata"]["annotations"] = json!({});
        let facts = kind_facts(&pending).unwrap();
        assert!(!facts.established);
        assert_eq!(facts.xrd, None);
        assert!(kind_facts(&json!({"metadata": {"name": "x"}})).is_none());
    }

    #[test]
    fn claim_syncs_combine_the_claim_and_the_journal() {
        let ctx = SyncContext {
            cluster_id: Some("c1"),
            remote_namespace: Some("app-claims"),
            family: KindFamily::Claim,
        };
        let record = ClaimRecord {
            remote_name: "claim-recorded".into(),
            remote_resource_version: Some("9".into()),
            updated_unix: 1_700_000_000,
            last_error: Some("boom".into()),
            pending_patch: Some(json!([{"op": "add", "path": "/spec/x", "value": 1}])),
            ..ClaimRecord::default()
        };
        // (claim, record, phase, remote name, last sync)
        let cases = [
            (
                claim(Some("Synced"), false),
                None,
                "Synced",
                remote_claim_name("db", "team-a", "c1"),
                Some("2025-02-01T00:01:00Z"),
            ),
            (
                claim(Some("Synced"), false),
                Some(&record),
                "Synced",
                "claim-recorded".into(),
                Some("2023-11-14T22:13:20Z"),
            ),
            (
                claim(None, false),
                None,
                "Pending",
                remote_claim_name("db", "team-a", "c1"),
                None,
            ),
            (
                claim(Some("ControlPlaneUnreachable"), false),
                None,
                "Offline",
                remote_claim_name("db", "team-a", "c1"),
                None,
            ),
            (
                claim(Some("Synced"), true),
                None,
                "Deleting",
                remote_claim_name("db", "team-a", "c1"),
                None,
            ),
        ];
        for (claim, record, phase, remote, last_sync) in cases {
            let object = claim_sync(&key(), "v1alpha1", &claim_facts(&claim), record, &ctx);
            assert_eq!(object["status"]["phase"], phase, "{object}");
            assert_eq!(object["metadata"]["labels"][PHASE_LABEL], phase);
            assert_eq!(object["spec"]["remoteName"], remote.as_str());
            assert_eq!(object["status"]["lastSyncTime"].as_str(), last_sync, "{object}");
            assert_eq!(
                object["metadata"]["annotations"][QUALIFIED_NAME_ANNOTATION],
                "db.kubernetescluster.k8s.starter.org"
            );
            assert_eq!(object["spec"]["claimRef"]["apiVersion"], "k8s.starter.org/v1alpha1");
            assert_eq!(object["status"]["localResourceVersion"], "41");
            assert!(object["metadata"].get("resourceVersion").is_none());
        }
        let with_record = claim_sync(
            &key(),
            "v1alpha1",
            &claim_facts(&claim(Some("Error"), false)),
            Some(&record),
            &ctx,
        );
        assert_eq!(with_record["status"]["remoteResourceVersion"], "9");
        assert_eq!(with_record["status"]["lastError"], "boom");
        assert_eq!(with_record["status"]["pendingPatch"][0]["op"], "add");
        // Without a cluster id (not known yet) and without a record, the remote name is left out.
        let unknown = SyncContext {
            cluster_id: None,
            remote_namespace: None,
            family: KindFamily::Claim,
        };
        let object = claim_sync(&key(), "v1alpha1", &claim_facts(&claim(None, false)), None, &unknown);
        assert!(object["spec"].get("remoteName").is_none(), "{object}");
        assert!(object["status"].get("lastError").is_none(), "{object}");
    }

    #[test]
    fn orphans_and_kinds() {
        let ctx = SyncContext {
            cluster_id: Some("c1"),
            remote_namespace: None,
            family: KindFamily::Claim,
        };
        let record = ClaimRecord {
            local_uid: "u-1".into(),
            remote_name: "claim-x".into(),
            ..ClaimRecord::default()
        };
        let orphan = orphan_sync(&key(), None, &record, &ctx);
        assert_eq!(orphan["status"]["phase"], "Orphaned");
        assert_eq!(orphan["spec"]["remoteName"], "claim-x");
        assert!(orphan["spec"]["claimRef"].get("apiVersion").is_none());

        let kind = kind_facts(&crd()).unwrap();
        let counts = Counts {
            claims: 3,
            replicated: 2,
        };
        let object = claim_kind_object(&kind, counts, None);
        assert_eq!(object["status"]["claims"], 3);
        assert_eq!(object["status"]["claimsReplicated"], 2);
        assert!(object["status"].get("withdrawn").is_none());
        assert_eq!(
            object["spec"]["compositeResourceDefinition"],
            "xkubernetesclusters.k8s.starter.org"
        );
        assert_eq!(
            labels_of(&object).get(KIND_LABEL).map(String::as_str),
            Some("KubernetesCluster")
        );
    }
}
