//! Status down: what the local claim must show of its remote twin (Crossplane's status without remote
//! generations, claimsync's `Replicated` condition, and the spec fields Crossplane chose). Pure functions.

use serde_json::{Map, Value, json};

use crate::model::conditions::{Replicated, with_replicated};
use crate::model::fields::{is_subset, owned_fields};
use crate::model::vocabulary::{CROSSPLANE_SPEC_FIELDS, EXTERNAL_NAME, MANAGER_DOWN, REPLICATED};

/// The local side of a claim as claimsync writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalDown {
    /// Crossplane-owned spec fields, applied by the down manager.
    pub spec: Map<String, Value>,
    /// Annotations copied down (the external name, when the user did not set one).
    pub annotations: Map<String, Value>,
    /// The whole status.
    pub status: Value,
}

/// The local claim's down-state for a remote claim.
pub fn local_down(local: &Value, remote: &Value, cond: &Replicated, now: &str) -> LocalDown {
    // A Crossplane field is copied down where the local claim has none, or has the one claimsync copied before;
    // a value someone else set locally is the user's choice and stays.
    let copied_down = owned_fields(local, |m| m == MANAGER_DOWN).unwrap_or_else(|| json!({}));
    let ours_or_absent = |current: Option<&Value>, owned: &Value| current.is_none() || owned.is_object();
    let mut spec = Map::new();
    for field in CROSSPLANE_SPEC_FIELDS {
        let owned = &copied_down["f:spec"][format!("f:{field}")];
        let take = field == "resourceRef" || ours_or_absent(local["spec"].get(field), owned);
        if let Some(value) = remote["spec"].get(field).filter(|_| take) {
            spec.insert(field.to_string(), value.clone());
        }
    }
    let mut annotations = Map::new();
    let owned = &copied_down["f:metadata"]["f:annotations"][format!("f:{EXTERNAL_NAME}")];
    if ours_or_absent(local["metadata"]["annotations"].get(EXTERNAL_NAME), owned)
        && let Some(name) = remote["metadata"]["annotations"].get(EXTERNAL_NAME)
    {
        annotations.insert(EXTERNAL_NAME.to_string(), name.clone());
    }
    let status = local_status(&remote["status"], &local["status"], cond, now);
    LocalDown {
        spec,
        annotations,
        status,
    }
}

/// The remote status as the local claim shows it: remote `observedGeneration`s removed (they count remote
/// generations), and claimsync's `Replicated` condition carried over from the local status and set to `cond`.
pub fn local_status(remote: &Value, local: &Value, cond: &Replicated, now: &str) -> Value {
    shown_status(remote, local, cond, now, |object| {
        object.remove("observedGeneration");
    })
}

/// The remote status as a local object shows it: `generation` rewrites the remote `observedGeneration` of the
/// status and of each condition (they count the twin's generations), and claimsync's `Replicated` condition is
/// carried over from the local status and set to `cond`.
pub fn shown_status(
    remote: &Value,
    local: &Value,
    cond: &Replicated,
    now: &str,
    generation: impl Fn(&mut Map<String, Value>),
) -> Value {
    let mut status = if remote.is_object() { remote.clone() } else { json!({}) };
    let map = status.as_object_mut().expect("status is an object");
    generation(map);
    let mut conditions: Vec<Value> = map
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for c in &mut conditions {
        if let Some(c) = c.as_object_mut() {
            generation(c);
        }
    }
    conditions.retain(|c| c["type"] != REPLICATED);
    // Keep the local Replicated condition's history so its transition time survives.
    if let Some(previous) = local.get("conditions").and_then(Value::as_array) {
        conditions.extend(previous.iter().filter(|c| c["type"] == REPLICATED).cloned());
    }
    map.insert("conditions".into(), Value::Array(conditions));
    with_replicated(&status, cond, now)
}

/// Whether `current` (the local object) already shows Crossplane's spec fields and annotations of `down`.
pub fn spec_shown(current: &Value, down: &LocalDown) -> bool {
    // Field by field: a namespaced XR's `spec.crossplane` also holds the user's own choices beside Crossplane's.
    let spec = down
        .spec
        .iter()
        .all(|(k, v)| current["spec"].get(k).is_some_and(|shown| is_subset(v, shown)));
    spec && down
        .annotations
        .iter()
        .all(|(k, v)| current["metadata"]["annotations"].get(k) == Some(v))
}

/// Whether `current` (the local object) already shows everything of `down`.
pub fn is_shown(current: &Value, down: &LocalDown) -> bool {
    spec_shown(current, down) && current["status"] == down.status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conditions::Reason;

    fn remote() -> Value {
        json!({
            "metadata": {"annotations": {EXTERNAL_NAME: "ext-1"}},
            "spec": {"id": "demo", "resourceRef": {"name": "xr-1"}, "compositionRef": {"name": "comp"},
                     "compositionRevisionRef": {"name": "comp-abc"}},
            "status": {"observedGeneration": 7, "clusterName": "kc-demo", "conditions": [
                {"type": "Ready", "status": "True", "reason": "Available", "observedGeneration": 7, "lastTransitionTime": "t0"}]}
        })
    }

    #[test]
    fn copies_status_without_remote_generations_and_adds_replicated() {
        let local = json!({"metadata": {"generation": 2}, "spec": {"id": "demo"}});
        let down = local_down(&local, &remote(), &Replicated::new(Reason::Synced, "ok"), "t1");
        assert_eq!(down.status["clusterName"], "kc-demo");
        assert!(down.status.get("observedGeneration").is_none());
        let conditions = down.status["conditions"].as_array().unwrap();
        assert!(conditions[0].get("observedGeneration").is_none());
        assert_eq!(conditions[1]["type"], "Replicated");
        assert!(conditions[1].get("observedGeneration").is_none());
        assert_eq!(down.spec.len(), 3);
        assert_eq!(down.annotations[EXTERNAL_NAME], "ext-1");
    }

    #[test]
    fn leaves_user_choices_alone() {
        let local = json!({"metadata": {"generation": 1, "annotations": {EXTERNAL_NAME: "mine"}, "managedFields": [
            {"manager": "kubectl", "operation": "Apply", "fieldsV1": {
                "f:metadata": {"f:annotations": {"f:crossplane.io/external-name": {}}},
                "f:spec": {"f:compositionRef": {"f:name": {}}}}},
            {"manager": MANAGER_DOWN, "operation": "Apply", "fieldsV1": {"f:spec": {"f:compositionRevisionRef": {}}}}
        ]}, "spec": {"id": "demo", "compositionRef": {"name": "mine"}}});
        let down = local_down(&local, &remote(), &Replicated::new(Reason::Synced, "ok"), "t1");
        assert!(!down.spec.contains_key("compositionRef"));
        assert!(down.spec.contains_key("resourceRef"));
        assert!(down.spec.contains_key("compositionRevisionRef"));
        assert!(down.annotations.is_empty());
    }

    #[test]
    fn writing_the_same_state_twice_is_no_change() {
        let local = json!({"metadata": {"generation": 1}, "spec": {"id": "demo"}});
        let cond = Replicated::new(Reason::Synced, "ok");
        let first = local_down(&local, &remote(), &cond, "t1");
        let mut shown = local.clone();
        shown["status"] = first.status.clone();
        shown["spec"]["resourceRef"] = remote()["spec"]["resourceRef"].clone();
        shown["spec"]["compositionRef"] = remote()["spec"]["compositionRef"].clone();
        shown["spec"]["compositionRevisionRef"] = remote()["spec"]["compositionRevisionRef"].clone();
        shown["metadata"]["annotations"] = json!({EXTERNAL_NAME: "ext-1"});
        let second = local_down(&shown, &remote(), &cond, "t2");
        assert!(is_shown(&shown, &second), "{:?}", second.status);
    }
}
