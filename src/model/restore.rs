//! Restore: the local claim a twin stands for, rebuilt from the twin alone (for an app cluster rebuilt with the same
//! cluster id, or claims lost with their CRD): the user's spec (what claimsync applied up, never what Crossplane
//! chose), labels and annotations, and the connection Secret name the claim asked for. Pure functions over JSON.

use serde_json::{Map, Value, json};

use crate::model::composite::XR_CROSSPLANE_FIELDS;
use crate::model::fields::{owned_fields, retain_fields};
use crate::model::kind::KindFamily;
use crate::model::naming::{origin_of, remote_name, written_by_other};
use crate::model::vocabulary::{
    ADOPT_FROM, CROSSPLANE_SPEC_FIELDS, LAST_APPLIED, LOCAL_SECRET_NAME, MANAGER_UP, MCP_CLUSTER, MCP_NAME,
    MCP_NAMESPACE, OWN_PREFIX,
};

/// Which app cluster restores: its cluster id, its kube-system uid, and the uid of the app cluster it replaces (a
/// rebuilt one), whose twins it may adopt.
pub struct Restorer<'a> {
    pub cluster_id: &'a str,
    pub cluster_uid: &'a str,
    pub adopt_from: Option<&'a str>,
}

/// The local claim for a twin, or None when the twin is not one of this cluster's (its labels name no local claim,
/// or a claim whose computed twin name is another, or another app cluster wrote it).
pub fn local_claim(twin: &Value, family: KindFamily, restorer: &Restorer) -> Option<Value> {
    let cluster_id = restorer.cluster_id;
    let labels = &twin["metadata"]["labels"];
    let adopted = written_by_other(labels, restorer.cluster_uid);
    if adopted.is_some() && adopted.as_deref() != restorer.adopt_from {
        return None;
    }
    let (namespace, name) = origin_of(labels, cluster_id)?;
    if twin["metadata"]["name"].as_str() != Some(remote_name(family, &name, &namespace, cluster_id).as_str()) {
        return None;
    }
    let mut spec = twin["spec"].clone();
    match owned_fields(twin, |m| m == MANAGER_UP) {
        // What claimsync wrote up is what the user had set (its create also owns what the control plane
        // defaulted, which the identical local CRD defaults alike).
        Some(owned) if owned["f:spec"].is_object() => retain_fields(&mut spec, &owned["f:spec"]),
        // A twin claimsync never applied (the MCP Connector made it): all but what Crossplane fills in.
        _ => {
            if let Some(spec) = spec.as_object_mut() {
                for field in CROSSPLANE_SPEC_FIELDS {
                    spec.remove(field);
                }
                if family == KindFamily::NamespacedXr
                    && let Some(crossplane) = spec.get_mut("crossplane").and_then(Value::as_object_mut)
                {
                    for field in XR_CROSSPLANE_FIELDS {
                        crossplane.remove(field);
                    }
                }
            }
        }
    }
    let annotations = &twin["metadata"]["annotations"];
    if let Some(secret) = annotations.get(LOCAL_SECRET_NAME)
        && spec.get("writeConnectionSecretToRef").is_some()
    {
        spec["writeConnectionSecretToRef"] = json!({"name": secret});
    }
    let keep = |map: &Value| -> Map<String, Value> {
        map.as_object()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| {
                !k.starts_with(OWN_PREFIX)
                    && k != LAST_APPLIED
                    && ![MCP_CLUSTER, MCP_NAMESPACE, MCP_NAME].contains(&k.as_str())
            })
            .collect()
    };
    let mut metadata = json!({"name": name, "namespace": namespace});
    let labels = keep(&twin["metadata"]["labels"]);
    if !labels.is_empty() {
        metadata["labels"] = Value::Object(labels);
    }
    let mut annotations = keep(annotations);
    if let Some(replaced) = adopted {
        annotations.insert(ADOPT_FROM.to_string(), Value::String(replaced));
    }
    if !annotations.is_empty() {
        metadata["annotations"] = Value::Object(annotations);
    }
    Some(json!({
        "apiVersion": twin["apiVersion"], "kind": twin["kind"], "metadata": metadata, "spec": spec,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::vocabulary::{ORIGIN_CLUSTER, ORIGIN_CLUSTER_UID, ORIGIN_NAME, ORIGIN_NAMESPACE, ORIGIN_UID};

    fn restorer(adopt_from: Option<&'static str>) -> Restorer<'static> {
        Restorer {
            cluster_id: "c1",
            cluster_uid: "k1",
            adopt_from,
        }
    }

    #[test]
    fn another_app_clusters_twins_come_back_only_when_adopted_on_purpose() {
        let mut foreign = twin(json!([]));
        foreign["metadata"]["labels"][ORIGIN_CLUSTER_UID] = json!("k-old");
        assert!(local_claim(&foreign, KindFamily::Claim, &restorer(None)).is_none());
        assert!(local_claim(&foreign, KindFamily::Claim, &restorer(Some("k-other"))).is_none());
        let adopted = local_claim(&foreign, KindFamily::Claim, &restorer(Some("k-old"))).unwrap();
        assert_eq!(adopted["metadata"]["annotations"][ADOPT_FROM], "k-old");
    }

    #[test]
    fn a_namespaced_xrs_twin_comes_back_by_its_own_name_without_crossplanes_choices() {
        let mut xr = twin(json!([]));
        assert!(
            local_claim(&xr, KindFamily::NamespacedXr, &restorer(None)).is_none(),
            "a claim's twin name is not an XR's"
        );
        xr["metadata"]["name"] = json!(remote_name(KindFamily::NamespacedXr, "demo", "team", "c1"));
        xr["spec"]["crossplane"] = json!({"compositionSelector": {"matchLabels": {"a": "b"}},
            "compositionRef": {"name": "chosen"}, "resourceRefs": [{"kind": "ConfigMap", "name": "x"}]});
        let local = local_claim(&xr, KindFamily::NamespacedXr, &restorer(None)).unwrap();
        assert_eq!(
            local["spec"]["crossplane"],
            json!({"compositionSelector": {"matchLabels": {"a": "b"}}})
        );
    }

    fn twin(managed: Value) -> Value {
        json!({
            "apiVersion": "k8s.starter.org/v1alpha1", "kind": "KubernetesCluster",
            "metadata": {
                "name": crate::model::naming::remote_claim_name("demo", "team", "c1"),
                "labels": {ORIGIN_CLUSTER: "c1", ORIGIN_CLUSTER_UID: "k1", ORIGIN_NAMESPACE: "team",
                           ORIGIN_NAME: "demo", ORIGIN_UID: "u", "team": "a"},
                "annotations": {LOCAL_SECRET_NAME: "demo-conn", "note": "n", "crossplane.io/external-name": "x"},
                "managedFields": managed,
            },
            "spec": {"id": "demo", "parameters": {"size": 3}, "writeConnectionSecretToRef": {"name": "claim-1"},
                     "resourceRef": {"name": "xr-1"}, "compositionRef": {"name": "chosen"},
                     "compositeDeletePolicy": "Background"},
        })
    }

    #[test]
    fn the_users_part_of_a_twin_comes_back() {
        let managed = json!([
            {"manager": MANAGER_UP, "operation": "Apply", "fieldsV1": {"f:spec": {
                "f:id": {}, "f:parameters": {"f:size": {}}, "f:writeConnectionSecretToRef": {"f:name": {}}}}},
            {"manager": "crossplane", "operation": "Update", "fieldsV1": {"f:spec": {
                "f:resourceRef": {}, "f:compositionRef": {}}}},
        ]);
        let local = local_claim(&twin(managed), KindFamily::Claim, &restorer(None)).unwrap();
        assert_eq!(local["metadata"]["name"], "demo");
        assert_eq!(local["metadata"]["namespace"], "team");
        assert_eq!(local["metadata"]["labels"], json!({"team": "a"}));
        assert_eq!(
            local["metadata"]["annotations"],
            json!({"note": "n", "crossplane.io/external-name": "x"})
        );
        assert_eq!(
            local["spec"],
            json!({"id": "demo", "parameters": {"size": 3}, "writeConnectionSecretToRef": {"name": "demo-conn"}})
        );
    }

    #[test]
    fn a_twin_claimsync_never_applied_keeps_all_but_crossplanes_fields() {
        let local = local_claim(&twin(json!([])), KindFamily::Claim, &restorer(None)).unwrap();
        assert!(local["spec"].get("resourceRef").is_none());
        assert!(local["spec"].get("compositionRef").is_none());
        assert_eq!(local["spec"]["compositeDeletePolicy"], "Background");
    }

    #[test]
    fn twins_of_others_or_with_borrowed_labels_are_not_restored() {
        let other_id = Restorer {
            cluster_id: "c2",
            cluster_uid: "k1",
            adopt_from: None,
        };
        assert!(local_claim(&twin(json!([])), KindFamily::Claim, &other_id).is_none());
        let mut renamed = twin(json!([]));
        renamed["metadata"]["name"] = json!("impostor");
        assert!(local_claim(&renamed, KindFamily::Claim, &restorer(None)).is_none());
    }
}
