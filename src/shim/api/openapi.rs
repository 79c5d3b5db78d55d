//! The OpenAPI v3 documents: the root `/openapi/v3` naming the group version, and the group version's document
//! with its paths (each operation carrying `x-kubernetes-group-version-kind`, which `kubectl explain` looks for)
//! and schemas with descriptions. Built once from static data; pure functions.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::resources::{GROUP, GROUP_VERSION, Resource, VERSION};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

fn schema_name(name: &str) -> String {
    format!("dev.claimsync.{VERSION}.{name}")
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn gvk(kind: &str) -> Value {
    json!({"group": GROUP, "version": VERSION, "kind": kind})
}

fn object(description: &str, properties: Value) -> Value {
    json!({"type": "object", "description": description, "properties": properties})
}

/// apiVersion, kind and metadata of a top-level object or list, then its own properties.
fn top_level(kind: &str, description: &str, meta: &str, mut properties: Map<String, Value>) -> Value {
    properties.insert(
        "apiVersion".into(),
        string("APIVersion defines the versioned schema of this representation of an object."),
    );
    properties.insert(
        "kind".into(),
        string("Kind is a string value representing the REST resource this object represents."),
    );
    properties.insert("metadata".into(), {
        let mut m = reference(meta);
        m["description"] = json!("Standard object's metadata.");
        m
    });
    let mut schema = object(description, Value::Object(properties));
    schema["x-kubernetes-group-version-kind"] = json!([gvk(kind)]);
    schema
}

fn properties(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn schemas() -> Value {
    let mut s = Map::new();
    s.insert(
        schema_name("ClaimSync"),
        top_level(
            "ClaimSync",
            "ClaimSync shows how one claim of the app cluster is replicated to the control plane. One per claim, of every claim kind, named like the claim; read-only.",
            OBJECT_META,
            properties(json!({
                "spec": {"$ref": format!("#/components/schemas/{}", schema_name("ClaimSyncSpec")), "description": "Which claim, and its twin's name."},
                "status": {"$ref": format!("#/components/schemas/{}", schema_name("ClaimSyncStatus")), "description": "How the claim's replication stands."},
            })),
        ),
    );
    s.insert(
        schema_name("ClaimSyncSpec"),
        object(
            "Which claim a ClaimSync is about, and where its twin lives.",
            json!({
                "claimRef": {"$ref": format!("#/components/schemas/{}", schema_name("ClaimReference")), "description": "The local claim."},
                "remoteName": string("The twin's name on the control plane: claim- and 16 hex of a hash of name, namespace and cluster id."),
                "remoteNamespace": string("The control plane namespace that holds this cluster's claims (--claim-namespace)."),
            }),
        ),
    );
    s.insert(
        schema_name("ClaimReference"),
        object(
            "A reference to a local claim.",
            json!({
                "apiVersion": string("The claim's API version."),
                "kind": string("The claim's kind."),
                "namespace": string("The claim's namespace."),
                "name": string("The claim's name."),
                "uid": string("The claim's uid."),
            }),
        ),
    );
    s.insert(
        schema_name("ClaimSyncStatus"),
        object(
            "How a claim's replication stands, from the claim's Replicated condition and this claimsync replica's journal.",
            json!({
                "phase": {"type": "string", "enum": ["Synced", "Pending", "Offline", "Conflict", "Deleting", "Orphaned", "Withdrawn", "Released", "Error"],
                          "description": "Synced: the twin carries the spec. Pending: not written yet (or its namespace is not selected). Offline: the control plane is unreachable. Conflict: a name or Secret is taken. Deleting: the claim is being deleted. Orphaned: the journal knows a twin whose claim is gone. Error: replication failed, is unsupported, or the kind was withdrawn."},
                "reason": string("The reason of the claim's Replicated condition."),
                "message": string("The message of the claim's Replicated condition."),
                "localResourceVersion": string("The local claim's resourceVersion."),
                "remoteResourceVersion": string("The twin's resourceVersion when last synced (from the journal)."),
                "lastSyncTime": {"type": "string", "format": "date-time", "description": "When claimsync last synced a change of the claim, up or down (from the journal; else since when it is Synced). A resync that finds nothing to change leaves it."},
                "lastError": string("The last error replicating the claim (from the journal)."),
                "pendingPatch": {"type": "array", "description": "What would go up but has not yet: an RFC 6902 JSON Patch against the last remote state.",
                                 "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }),
        ),
    );
    s.insert(
        schema_name("ClaimKind"),
        top_level(
            "ClaimKind",
            "ClaimKind shows one claim kind the control plane offers and its local CRD. Named like the CRD; read-only.",
            OBJECT_META,
            properties(json!({
                "spec": {"$ref": format!("#/components/schemas/{}", schema_name("ClaimKindSpec")), "description": "What the kind is."},
                "status": {"$ref": format!("#/components/schemas/{}", schema_name("ClaimKindStatus")), "description": "How the kind is replicated."},
            })),
        ),
    );
    s.insert(
        schema_name("ClaimKindSpec"),
        object(
            "What a claim kind is.",
            json!({
                "group": string("The API group."),
                "kind": string("The kind."),
                "plural": string("The plural resource name."),
                "versions": {"type": "array", "items": {"type": "string"}, "description": "The served versions."},
                "storageVersion": string("The version claimsync reads and writes claims at."),
                "compositeResourceDefinition": string("The XRD on the control plane that defines the kind."),
                "family": string("Claim (a claim of a legacy XRD) or NamespacedXR (a Crossplane v2 namespaced composite resource)."),
            }),
        ),
    );
    s.insert(
        schema_name("ClaimKindStatus"),
        object(
            "How a claim kind is replicated.",
            json!({
                "established": {"type": "boolean", "description": "Whether the local CRD is established."},
                "claims": {"type": "integer", "description": "Claims of this kind in the namespaces claimsync replicates."},
                "claimsReplicated": {"type": "integer", "description": "Of those, the claims in sync."},
                "lastCatalogSync": {"type": "string", "format": "date-time", "description": "When claimsync last wrote the local CRD."},
                "withdrawn": {"type": "boolean", "description": "Whether the control plane no longer offers the kind (unset: this replica's journal does not know)."},
            }),
        ),
    );
    for resource in Resource::ALL {
        let item = schema_name(resource.kind());
        s.insert(
            schema_name(resource.list_kind()),
            top_level(
                resource.list_kind(),
                &format!("A list of {}.", resource.plural()),
                LIST_META,
                properties(
                    json!({"items": {"type": "array", "items": reference(&item), "description": "The objects."}}),
                ),
            ),
        );
    }
    s.insert(
        OBJECT_META.into(),
        object(
            "ObjectMeta is metadata that all persisted resources must have.",
            json!({
                "name": string("Name, unique within a namespace for one claim kind; see the claimsync.dev/qualified-name annotation."),
                "namespace": string("Namespace of the object."),
                "uid": string("UID of the object (that of the claim or CRD it shows)."),
                "resourceVersion": string("This claimsync replica's version of the object; opaque, and meaningless to another replica."),
                "creationTimestamp": {"type": "string", "format": "date-time", "description": "When the claim or CRD was created."},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "claimsync.dev/kind, claimsync.dev/group and, on claimsyncs, claimsync.dev/phase."},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "claimsync.dev/qualified-name on claimsyncs."},
            }),
        ),
    );
    s.insert(
        LIST_META.into(),
        object(
            "ListMeta describes metadata that synthetic resources must have.",
            json!({"resourceVersion": string("The version of the list."), "continue": string("Unused: lists are answered whole.")}),
        ),
    );
    Value::Object(s)
}

fn query_parameters() -> Value {
    let parameter = |name: &str, type_: &str, description: &str| json!({"name": name, "in": "query", "description": description, "schema": {"type": type_}, "uniqueItems": true});
    json!([
        parameter("labelSelector", "string", "A selector to restrict the list by labels."),
        parameter(
            "fieldSelector",
            "string",
            "A selector on metadata.name or metadata.namespace."
        ),
        parameter(
            "watch",
            "boolean",
            "Watch for changes and return them as a stream of events."
        ),
        parameter(
            "resourceVersion",
            "string",
            "Where a watch starts; 410 Expired when this replica cannot resume there."
        ),
        parameter("timeoutSeconds", "integer", "How long a watch lasts."),
        parameter("allowWatchBookmarks", "boolean", "Send BOOKMARK events."),
    ])
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    /// List (in a namespace, for claimsyncs).
    List,
    /// List claimsyncs of every namespace.
    ListAll,
    Read,
}

fn operation(resource: Resource, action: Action) -> Value {
    let (verb, response) = match action {
        Action::List | Action::ListAll => ("list", schema_name(resource.list_kind())),
        Action::Read => ("read", schema_name(resource.kind())),
    };
    let scope = match action {
        Action::ListAll => "ForAllNamespaces",
        _ if resource.namespaced() => "Namespaced",
        _ => "",
    };
    let (prefix, suffix) = if action == Action::ListAll {
        ("", scope)
    } else {
        (scope, "")
    };
    json!({
        "get": {
            "tags": [format!("claimsync_{VERSION}")],
            "description": format!("{verb} {}", resource.plural()),
            "operationId": format!("{verb}ClaimsyncDevV1alpha1{prefix}{}{suffix}", resource.kind()),
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference(&response)}}}},
            "x-kubernetes-action": if action == Action::Read { "get" } else { "list" },
            "x-kubernetes-group-version-kind": gvk(resource.kind()),
        },
    })
}

fn path_parameter(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string"}, "uniqueItems": true})
}

fn paths() -> Value {
    let base = format!("/apis/{GROUP_VERSION}");
    let namespace = || {
        path_parameter(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        )
    };
    let with = |mut item: Value, mut parameters: Vec<Value>, query: bool| {
        if query {
            parameters.extend(query_parameters().as_array().cloned().unwrap_or_default());
        }
        item["parameters"] = Value::Array(parameters);
        item
    };
    let entries = [
        (
            "claimkinds",
            with(operation(Resource::ClaimKinds, Action::List), vec![], true),
        ),
        (
            "claimkinds/{name}",
            with(
                operation(Resource::ClaimKinds, Action::Read),
                vec![path_parameter("name", "name of the ClaimKind (the CRD's name)")],
                false,
            ),
        ),
        (
            "claimsyncs",
            with(operation(Resource::ClaimSyncs, Action::ListAll), vec![], true),
        ),
        (
            "namespaces/{namespace}/claimsyncs",
            with(operation(Resource::ClaimSyncs, Action::List), vec![namespace()], true),
        ),
        (
            "namespaces/{namespace}/claimsyncs/{name}",
            with(
                operation(Resource::ClaimSyncs, Action::Read),
                vec![
                    namespace(),
                    path_parameter("name", "the claim's name, or <name>.<kind-lowercase>.<group>"),
                ],
                false,
            ),
        ),
    ];
    Value::Object(
        entries
            .into_iter()
            .map(|(path, item)| (format!("{base}/{path}"), item))
            .collect(),
    )
}

/// The group version's OpenAPI v3 document, serialized once.
pub fn group_version_document() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| {
        let doc = json!({
            "openapi": "3.0.0",
            "info": {"title": "claimsync", "version": VERSION},
            "paths": paths(),
            "components": {"schemas": schemas()},
        });
        serde_json::to_vec(&doc).expect("a JSON document serializes")
    })
}

/// The path of the group version under `/openapi/v3/`.
pub fn group_version_path() -> String {
    format!("apis/{GROUP_VERSION}")
}

/// `/openapi/v3`: where the group version's document is, with a hash of it for caches.
pub fn root() -> Value {
    let hash = hex::encode_upper(Sha256::digest(group_version_document()));
    json!({"paths": {group_version_path(): {"serverRelativeURL": format!("/openapi/v3/{}?hash={hash}", group_version_path())}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Value {
        serde_json::from_slice(group_version_document()).unwrap()
    }

    #[test]
    fn every_operation_names_a_kind_with_a_schema() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 5);
        for (path, item) in paths {
            let gvk = &item["get"]["x-kubernetes-group-version-kind"];
            assert_eq!(gvk["group"], GROUP, "{path}");
            let schema = schemas
                .values()
                .find(|s| {
                    s["x-kubernetes-group-version-kind"]
                        .as_array()
                        .is_some_and(|l| l.contains(gvk))
                })
                .unwrap_or_else(|| panic!("{path}: no schema for {gvk}"));
            assert!(schema["properties"]["metadata"]["$ref"].is_string(), "{path}");
        }
        // Every reference resolves inside the document.
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling reference {name}");
        }
        let status = &schemas[&schema_name("ClaimSyncStatus")]["properties"];
        assert!(status["phase"]["description"].as_str().unwrap().contains("Orphaned"));
        let ids: std::collections::BTreeSet<&str> = paths
            .values()
            .map(|p| p["get"]["operationId"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 5, "operation ids are unique: {ids:?}");
    }

    #[test]
    fn root_points_at_the_document() {
        let root = root();
        let url = root["paths"]["apis/claimsync.dev/v1alpha1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(
            url.starts_with("/openapi/v3/apis/claimsync.dev/v1alpha1?hash="),
            "{url}"
        );
    }
}
