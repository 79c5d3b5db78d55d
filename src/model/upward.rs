//! Spec up: the remote claim that stands for a local claim, built from what the user set (their spec, labels and
//! annotations) and never from what Crossplane or defaulting filled in. Pure functions; `claims.rs` applies it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::model::fields::{owned_fields, remove_fields};
use crate::model::naming::origin_labels;
use crate::model::vocabulary::{EXTERNAL_NAME, LAST_APPLIED, LOCAL_SECRET_NAME, MANAGER_DOWN, OWN_PREFIX, PAUSED};

/// Policies the identical CRDs default identically on both sides: a defaulted value is not sent up.
const DEFAULTED: [(&str, &str); 2] = [
    ("compositeDeletePolicy", "Background"),
    ("compositionUpdatePolicy", "Automatic"),
];

/// Where a local claim goes on the control plane.
pub struct RemoteTarget<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub remote_name: &'a str,
    pub claim_namespace: &'a str,
    pub cluster_id: &'a str,
    /// The app cluster's kube-system uid.
    pub cluster_uid: &'a str,
}

/// What the user set on a local claim: (spec, labels, annotations), that is everything but what claimsync copied
/// down (the fields its down manager owns). Only claimsync's own managed-fields entry is consulted: other
/// managers' entries may be reset by the API server (a claim written at another version shows `before-first-apply`
/// owning nothing of the spec), claimsync's own is maintained by its applies.
pub fn user_intent(local: &Value) -> (Value, Map<String, Value>, Map<String, Value>) {
    let metadata = &local["metadata"];
    let copied_down = owned_fields(local, |m| m == MANAGER_DOWN).unwrap_or_else(|| json!({}));
    let mut spec = local["spec"].clone();
    if !spec.is_object() {
        spec = json!({});
    }
    remove_fields(&mut spec, &copied_down["f:spec"]);
    let mut annotations = metadata["annotations"].clone();
    remove_fields(&mut annotations, &copied_down["f:metadata"]["f:annotations"]);
    let keep = |map: &Value| -> Map<String, Value> {
        map.as_object()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !k.starts_with(OWN_PREFIX) && k != LAST_APPLIED && !is_crossplane_control_key(k))
            .collect()
    };
    (spec, keep(&metadata["labels"]), keep(&annotations))
}

/// Whether a label or annotation key is one Crossplane acts on (`crossplane.io/...` or `<x>.crossplane.io/...`),
/// other than the two the user may set: the pause switch, and the external name (which the ownership of the
/// field decides: copied-down values were already removed). Sent up, such a key would let an app-cluster user
/// steer Crossplane on the control plane (e.g. bind a claim to another composite).
pub fn is_crossplane_control_key(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return false;
    };
    let crossplane = prefix == "crossplane.io" || prefix.ends_with(".crossplane.io");
    crossplane && key != PAUSED && key != EXTERNAL_NAME
}

/// Spec fields claimsync cannot replicate, with why: a claim that sets one is not sent up.
pub fn unsupported_field(local: &Value) -> Option<(&'static str, &'static str)> {
    local["spec"].get("publishConnectionDetailsTo").map(|_| {
        (
            "spec.publishConnectionDetailsTo",
            "it publishes to a secret store configured on the control plane, which claimsync cannot copy back; use \
             spec.writeConnectionSecretToRef",
        )
    })
}

/// The remote claim for `local`, written by [`MANAGER_UP`] (created, or merge-patched with removals).
pub fn remote_intent(local: &Value, target: &RemoteTarget) -> Value {
    let (mut spec, mut labels, mut annotations) = user_intent(local);
    let spec_map = spec.as_object_mut().expect("spec is an object");
    spec_map.remove("resourceRef");
    for (field, default) in DEFAULTED {
        if spec_map.get(field).and_then(Value::as_str) == Some(default) {
            spec_map.remove(field);
        }
    }
    // The Secret is written under a name unique in the claim namespace and copied back under the user's name,
    // which the twin remembers (so that `claimsync restore` can give it back).
    if let Some(local_name) = spec_map
        .get("writeConnectionSecretToRef")
        .and_then(|r| r.get("name"))
        .cloned()
    {
        spec_map.insert("writeConnectionSecretToRef".into(), json!({"name": target.remote_name}));
        annotations.insert(LOCAL_SECRET_NAME.into(), local_name);
    }
    let metadata = &local["metadata"];
    let origin: BTreeMap<String, String> = origin_labels(
        target.cluster_id,
        target.cluster_uid,
        metadata["namespace"].as_str().unwrap_or_default(),
        metadata["name"].as_str().unwrap_or_default(),
        metadata["uid"].as_str().unwrap_or_default(),
    );
    for (k, v) in origin {
        labels.insert(k, Value::String(v));
    }
    let mut meta = json!({"name": target.remote_name, "namespace": target.claim_namespace, "labels": labels});
    if !annotations.is_empty() {
        meta["annotations"] = Value::Object(annotations);
    }
    json!({"apiVersion": target.api_version, "kind": target.kind, "metadata": meta, "spec": spec})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> RemoteTarget<'static> {
        RemoteTarget {
            api_version: "k8s.starter.org/v1alpha1",
            kind: "KubernetesCluster",
            remote_name: "claim-0123456789abcdef",
            claim_namespace: "claims",
            cluster_id: "c1",
            cluster_uid: "k1",
        }
    }

    fn local(spec: Value, managed: Value) -> Value {
        json!({
            "apiVersion": "k8s.starter.org/v1alpha1", "kind": "KubernetesCluster",
            "metadata": {"name": "demo", "namespace": "team", "uid": "u1",
                         "labels": {"team": "a", "claimsync.dev/x": "y"},
                         "annotations": {LAST_APPLIED: "{}", "note": "n", "crossplane.io/external-name": "ext"},
                         "managedFields": managed},
            "spec": spec,
        })
    }

    #[test]
    fn sends_only_what_the_user_set() {
        let spec = json!({
            "id": "demo", "parameters": {"nodes": {"count": 3}},
            "writeConnectionSecretToRef": {"name": "demo-conn"},
            "compositeDeletePolicy": "Background",
            "compositionRef": {"name": "chosen-by-crossplane"},
            "resourceRef": {"apiVersion": "k8s.starter.org/v1alpha1", "kind": "XKubernetesCluster", "name": "x"},
        });
        let managed = json!([
            {"manager": "kubectl-client-side-apply", "operation": "Update", "fieldsV1": {
                "f:metadata": {"f:labels": {"f:team": {}}, "f:annotations": {"f:note": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}},
                "f:spec": {"f:id": {}, "f:parameters": {"f:nodes": {"f:count": {}}},
                           "f:writeConnectionSecretToRef": {"f:name": {}}, "f:compositeDeletePolicy": {}}}},
            {"manager": MANAGER_DOWN, "operation": "Apply", "fieldsV1": {
                "f:metadata": {"f:annotations": {"f:crossplane.io/external-name": {}}},
                "f:spec": {"f:compositionRef": {".": {}, "f:name": {}}, "f:resourceRef": {".": {}, "f:name": {}}}}},
        ]);
        let intent = remote_intent(&local(spec, managed), &target());
        assert_eq!(intent["metadata"]["name"], "claim-0123456789abcdef");
        assert_eq!(intent["metadata"]["namespace"], "claims");
        assert_eq!(
            intent["spec"],
            json!({"id": "demo", "parameters": {"nodes": {"count": 3}},
                   "writeConnectionSecretToRef": {"name": "claim-0123456789abcdef"}})
        );
        assert_eq!(intent["metadata"]["labels"]["team"], "a");
        assert_eq!(intent["metadata"]["labels"]["claimsync.dev/origin-namespace"], "team");
        assert!(intent["metadata"]["labels"].get("claimsync.dev/x").is_none());
        assert_eq!(
            intent["metadata"]["annotations"],
            json!({"note": "n", LOCAL_SECRET_NAME: "demo-conn"})
        );
    }

    #[test]
    fn user_choices_of_crossplane_fields_go_up() {
        let spec = json!({"id": "demo", "compositionRef": {"name": "mine"}, "compositeDeletePolicy": "Foreground"});
        let managed = json!([{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {
            "f:id": {}, "f:compositionRef": {"f:name": {}}, "f:compositeDeletePolicy": {}}}}]);
        let intent = remote_intent(&local(spec.clone(), managed), &target());
        assert_eq!(intent["spec"], spec);
    }

    #[test]
    fn crossplane_control_keys_stay_home_but_pause_and_external_name_go_up() {
        let mut claim = local(json!({"id": "demo"}), json!([]));
        claim["metadata"]["labels"] = json!({"team": "a", "crossplane.io/claim-name": "someone-else",
            "crossplane.io/composite": "x-1", "pkg.crossplane.io/revision": "r"});
        claim["metadata"]["annotations"] = json!({"crossplane.io/paused": "true", EXTERNAL_NAME: "mine",
            "crossplane.io/composition-resource-name": "db", "notcrossplane.io/x": "kept"});
        let intent = remote_intent(&claim, &target());
        let labels: Vec<&String> = intent["metadata"]["labels"].as_object().unwrap().keys().collect();
        assert!(labels.iter().all(|k| !k.contains("crossplane.io")), "{labels:?}");
        assert_eq!(
            intent["metadata"]["annotations"],
            json!({"crossplane.io/paused": "true", EXTERNAL_NAME: "mine", "notcrossplane.io/x": "kept"})
        );
        let cases = [
            ("crossplane.io/paused", false),
            ("crossplane.io/external-name", false),
            ("crossplane.io/claim-namespace", true),
            ("apiextensions.crossplane.io/x", true),
            ("crossplane.io.example.org/x", false),
            ("team", false),
        ];
        for (key, want) in cases {
            assert_eq!(is_crossplane_control_key(key), want, "{key}");
        }
    }

    #[test]
    fn publish_connection_details_is_refused() {
        let claim = local(
            json!({"id": "demo", "publishConnectionDetailsTo": {"name": "x"}}),
            json!([]),
        );
        assert_eq!(
            unsupported_field(&claim).map(|(f, _)| f),
            Some("spec.publishConnectionDetailsTo")
        );
        assert_eq!(unsupported_field(&local(json!({"id": "demo"}), json!([]))), None);
    }

    #[test]
    fn unowned_fields_count_as_the_users() {
        let spec = json!({"id": "demo", "resourceRef": {"name": "x"}});
        let intent = remote_intent(&local(spec, json!([])), &target());
        assert_eq!(intent["spec"], json!({"id": "demo"}));
        assert_eq!(intent["metadata"]["annotations"]["crossplane.io/external-name"], "ext");
    }
}
