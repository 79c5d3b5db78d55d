//! Server-side printing: the `meta.k8s.io` Table `kubectl get` asks for, with the columns of each resource, rows
//! that carry their object (PartialObjectMetadata by default, so kubectl can show NAMESPACE and labels) and the
//! list's resourceVersion; ages rendered the way kubectl renders them. Pure functions.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::resources::Resource;

/// How much of each object a `Table` row carries (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// An `includeObject` value the API does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unrecognized includeObject value: {value:?}")]
pub struct UnknownIncludeObject {
    pub value: String,
}

impl IncludeObject {
    pub fn parse(value: Option<&str>) -> Result<IncludeObject, UnknownIncludeObject> {
        match value {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(UnknownIncludeObject {
                value: other.to_string(),
            }),
        }
    }
}

/// (name, type, format, description, priority): priority 1 columns show with `-o wide`.
type Column = (&'static str, &'static str, &'static str, &'static str, u8);

#[rustfmt::skip]
const CLAIM_SYNC_COLUMNS: [Column; 12] = [
    ("Name", "string", "name", "The claim's name (see the claimsync.dev/qualified-name annotation when two kinds share it).", 0),
    ("Kind", "string", "", "The claim's kind.", 0),
    ("Phase", "string", "", "Synced, Pending, Offline, Conflict, Deleting, Orphaned, Withdrawn, Released or Error.", 0),
    ("Remote", "string", "", "The twin's name in the control plane's claim namespace.", 0),
    ("Last Sync", "string", "", "How long ago this claimsync last recorded a sync of the claim.", 0),
    ("Age", "string", "", "How long ago the claim was created.", 0),
    ("Group", "string", "", "The claim's API group.", 1),
    ("Reason", "string", "", "The reason of the claim's Replicated condition.", 1),
    ("Local RV", "string", "", "The local claim's resourceVersion.", 1),
    ("Remote RV", "string", "", "The twin's resourceVersion when last synced.", 1),
    ("Pending", "integer", "", "Operations of the JSON Patch waiting to go up.", 1),
    ("Last Error", "string", "", "The last error replicating the claim.", 1),
];

#[rustfmt::skip]
const CLAIM_KIND_COLUMNS: [Column; 11] = [
    ("Name", "string", "name", "The claim CRD's name.", 0),
    ("Kind", "string", "", "The claim kind.", 0),
    ("Family", "string", "", "Claim, or NamespacedXR (a Crossplane v2 namespaced composite resource).", 0),
    ("Versions", "string", "", "The served versions.", 0),
    ("Established", "boolean", "", "Whether the local CRD is established.", 0),
    ("Claims", "integer", "", "Claims of this kind in the namespaces replicated.", 0),
    ("Replicated", "integer", "", "Of those, the claims in sync.", 0),
    ("Withdrawn", "string", "", "Whether the control plane withdrew the kind (blank: unknown to this replica).", 0),
    ("Last Sync", "string", "", "How long ago claimsync last wrote the local CRD.", 0),
    ("Age", "string", "", "How long ago the local CRD was created.", 0),
    ("XRD", "string", "", "The CompositeResourceDefinition behind the kind.", 1),
];

fn columns(resource: Resource) -> &'static [Column] {
    match resource {
        Resource::ClaimSyncs => &CLAIM_SYNC_COLUMNS,
        Resource::ClaimKinds => &CLAIM_KIND_COLUMNS,
    }
}

pub fn column_definitions(resource: Resource) -> Value {
    columns(resource)
        .iter()
        .map(|(name, type_, format, description, priority)| {
            json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
        })
        .collect()
}

/// How long ago a time was, the way `kubectl` prints ages (`45s`, `3m12s`, `5h`, `12d`, `2y30d`); empty when
/// there is no time.
pub fn age(time: Option<&str>, now: Timestamp) -> String {
    let Some(then) = time.and_then(|t| t.parse::<Timestamp>().ok()) else {
        return String::new();
    };
    human_duration(now.as_second() - then.as_second())
}

pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86400);
    let with_rest = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small}{small_unit}")
        }
    };
    match () {
        _ if seconds < 120 => format!("{seconds}s"),
        _ if minutes < 10 => with_rest(minutes, "m", seconds % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 => with_rest(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 24 * 8 => with_rest(days, "d", hours % 24, "h"),
        _ if days < 365 * 2 => format!("{days}d"),
        _ if days < 365 * 8 => with_rest(days / 365, "y", days % 365, "d"),
        _ => format!("{}y", days / 365),
    }
}

fn cells(resource: Resource, object: &Value, now: Timestamp) -> Value {
    let m = &object["metadata"];
    let (spec, status) = (&object["spec"], &object["status"]);
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    match resource {
        Resource::ClaimSyncs => json!([
            m["name"],
            spec["claimRef"]["kind"],
            status["phase"],
            text(&spec["remoteName"]),
            age(status["lastSyncTime"].as_str(), now),
            age(m["creationTimestamp"].as_str(), now),
            m["labels"][super::resources::GROUP_LABEL],
            text(&status["reason"]),
            text(&status["localResourceVersion"]),
            text(&status["remoteResourceVersion"]),
            status["pendingPatch"].as_array().map_or(0, Vec::len),
            text(&status["lastError"]),
        ]),
        Resource::ClaimKinds => json!([
            m["name"],
            spec["kind"],
            spec["family"],
            spec["versions"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
            status["established"],
            status["claims"],
            status["claimsReplicated"],
            status["withdrawn"].as_bool().map(|w| w.to_string()).unwrap_or_default(),
            age(status["lastCatalogSync"].as_str(), now),
            age(m["creationTimestamp"].as_str(), now),
            text(&spec["compositeResourceDefinition"]),
        ]),
    }
}

/// The metadata-only form of an object (`PartialObjectMetadata`).
pub fn partial(object: &Value, version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": object["metadata"],
    })
}

/// One row: the cells and, as asked, the object, its metadata, or nothing.
pub fn row(resource: Resource, object: &Value, include: IncludeObject, version: &str, now: Timestamp) -> Value {
    let mut row = json!({"cells": cells(resource, object, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => row["object"] = partial(object, version),
        IncludeObject::Object => row["object"] = object.clone(),
    }
    row
}

/// A Table of `objects` at the list's resourceVersion `rv`; without column definitions when `headers` is false
/// (watch events after the first, as the API server does).
pub fn table(
    resource: Resource,
    objects: &[Value],
    rv: u64,
    include: IncludeObject,
    version: &str,
    headers: bool,
    now: Timestamp,
) -> Value {
    let mut table = json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": {"resourceVersion": rv.to_string()},
        "rows": objects.iter().map(|o| row(resource, o, include, version, now)).collect::<Vec<_>>(),
    });
    if headers {
        table["columnDefinitions"] = column_definitions(resource);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_kubectl() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (192, "3m12s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 120, "3h2m"),
            (8 * 3600 + 120, "8h"),
            (47 * 3600, "47h"),
            (2 * 86400 + 3 * 3600, "2d3h"),
            (7 * 86400, "7d"),
            (30 * 86400, "30d"),
            (800 * 86400, "2y70d"),
            (365 * 9 * 86400, "9y"),
        ];
        for (seconds, want) in cases {
            assert_eq!(human_duration(seconds), want, "{seconds}");
        }
    }

    fn claim_sync() -> Value {
        json!({
            "apiVersion": "claimsync.dev/v1alpha1", "kind": "ClaimSync",
            "metadata": {"name": "db", "namespace": "team-a", "resourceVersion": "7",
                         "creationTimestamp": "2025-01-01T00:00:00Z",
                         "labels": {"claimsync.dev/group": "k8s.starter.org"}},
            "spec": {"claimRef": {"kind": "KubernetesCluster"}, "remoteName": "claim-1"},
            "status": {"phase": "Synced", "reason": "Synced", "lastSyncTime": "2025-01-01T00:04:00Z",
                       "pendingPatch": [{"op": "add"}, {"op": "remove"}]},
        })
    }

    #[test]
    fn rows_carry_cells_and_metadata() {
        let now: Timestamp = "2025-01-01T00:05:00Z".parse().unwrap();
        let t = table(
            Resource::ClaimSyncs,
            &[claim_sync()],
            12,
            IncludeObject::Metadata,
            "v1",
            true,
            now,
        );
        assert_eq!(t["metadata"]["resourceVersion"], "12");
        assert_eq!(
            t["columnDefinitions"].as_array().unwrap().len(),
            CLAIM_SYNC_COLUMNS.len()
        );
        let row = &t["rows"][0];
        assert_eq!(
            row["cells"],
            json!([
                "db",
                "KubernetesCluster",
                "Synced",
                "claim-1",
                "60s",
                "5m",
                "k8s.starter.org",
                "Synced",
                "",
                "",
                2,
                ""
            ])
        );
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["metadata"]["namespace"], "team-a");

        let t = table(
            Resource::ClaimSyncs,
            &[claim_sync()],
            12,
            IncludeObject::None,
            "v1beta1",
            false,
            now,
        );
        assert!(t.get("columnDefinitions").is_none());
        assert!(t["rows"][0].get("object").is_none());
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1beta1");
        let t = table(
            Resource::ClaimSyncs,
            &[claim_sync()],
            12,
            IncludeObject::Object,
            "v1",
            false,
            now,
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "ClaimSync");
    }

    #[test]
    fn every_row_has_a_cell_per_column() {
        let now = Timestamp::now();
        let kind = json!({"metadata": {"name": "dbs.g"},
                          "spec": {"kind": "Db", "family": "NamespacedXR", "versions": ["v1", "v2"]},
                          "status": {"established": true, "claims": 2, "claimsReplicated": 1, "withdrawn": false}});
        let cells = cells(Resource::ClaimKinds, &kind, now);
        assert_eq!(cells.as_array().unwrap().len(), CLAIM_KIND_COLUMNS.len());
        assert_eq!(cells[2], "NamespacedXR");
        assert_eq!(cells[3], "v1,v2");
        assert_eq!(cells[7], "false");
        let empty = cells_len(Resource::ClaimSyncs, &json!({}), now);
        assert_eq!(empty, CLAIM_SYNC_COLUMNS.len());
    }

    fn cells_len(resource: Resource, object: &Value, now: Timestamp) -> usize {
        cells(resource, object, now).as_array().unwrap().len()
    }

    #[test]
    fn include_object_values() {
        assert_eq!(IncludeObject::parse(None), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("Object")), Ok(IncludeObject::Object));
        assert_eq!(IncludeObject::parse(Some("None")), Ok(IncludeObject::None));
        assert!(IncludeObject::parse(Some("All")).is_err());
    }
}
