//! Crossplane v2's namespaced composite resources (XRs): where their rules differ from a claim's. Crossplane's
//! machinery is under `spec.crossplane`: the user's composition choices go up, what Crossplane chose comes down,
//! and `resourceRefs` is Crossplane's alone. Conditions carry `observedGeneration`. Pure functions over JSON.

use serde_json::{Map, Value, json};

use crate::model::conditions::Replicated;
use crate::model::downward::{LocalDown, shown_status};
use crate::model::fields::owned_fields;
use crate::model::upward::{RemoteTarget, remote_intent, user_intent};
use crate::model::vocabulary::MANAGER_DOWN;

/// The fields of `spec.crossplane` Crossplane fills in: down where the local XR has none (or the one claimsync
/// copied before); `resourceRefs` always, and never up.
pub const XR_CROSSPLANE_FIELDS: [&str; 4] = [
    "resourceRefs",
    "compositionRef",
    "compositionRevisionRef",
    "compositionRevisionSelector",
];

/// The twin of a local XR: a claim's intent (the user's spec, labels and annotations, the origin labels, the
/// connection Secret's name made unique) without `spec.crossplane.resourceRefs`, which in a shared claim namespace
/// could name another tenant's composed objects, and without the update policy the identical CRDs default alike.
pub fn xr_intent(local: &Value, target: &RemoteTarget) -> Value {
    let mut intent = remote_intent(local, target);
    if let Some(spec) = intent["spec"].as_object_mut() {
        let emptied = spec
            .get_mut("crossplane")
            .and_then(Value::as_object_mut)
            .is_some_and(|crossplane| {
                crossplane.remove("resourceRefs");
                if crossplane.get("compositionUpdatePolicy").and_then(Value::as_str) == Some("Automatic") {
                    crossplane.remove("compositionUpdatePolicy");
                }
                crossplane.is_empty()
            });
        if emptied {
            spec.remove("crossplane");
        }
    }
    intent
}

/// A field the user set on a local XR that is never sent up, with why (said in a Warning Event; the XR itself
/// still goes up without it).
pub fn xr_not_sent(local: &Value) -> Option<(&'static str, &'static str)> {
    let (spec, _, _) = user_intent(local);
    spec["crossplane"].get("resourceRefs").map(|_| {
        (
            "spec.crossplane.resourceRefs",
            "Crossplane alone sets which objects an XR composed; a value set in the app cluster could name another \
             tenant's objects in the shared claim namespace, so it is not sent and Crossplane's own comes back",
        )
    })
}

/// What a local XR must show of its twin: the `spec.crossplane` fields Crossplane chose, and the twin's status with
/// claimsync's `Replicated` condition. A remote `observedGeneration` counts the twin's generations: where the twin's
/// status is current (it observed the twin's generation) it says the local XR's generation, whose spec the twin
/// carries; otherwise it is dropped (not known to be current).
pub fn xr_down(local: &Value, remote: &Value, cond: &Replicated, now: &str) -> LocalDown {
    let copied_down = owned_fields(local, |m| m == MANAGER_DOWN).unwrap_or_else(|| json!({}));
    let mut crossplane = Map::new();
    for field in XR_CROSSPLANE_FIELDS {
        let owned = copied_down["f:spec"]["f:crossplane"][format!("f:{field}")].is_object();
        let take = field == "resourceRefs" || local["spec"]["crossplane"].get(field).is_none() || owned;
        if let Some(value) = remote["spec"]["crossplane"].get(field).filter(|_| take) {
            crossplane.insert(field.to_string(), value.clone());
        }
    }
    let mut spec = Map::new();
    if !crossplane.is_empty() {
        spec.insert("crossplane".into(), Value::Object(crossplane));
    }
    let generations = Generations {
        twin: remote["metadata"]["generation"].as_i64(),
        local: local["metadata"]["generation"].as_i64(),
    };
    LocalDown {
        spec,
        annotations: Map::new(),
        status: xr_status(&remote["status"], &local["status"], cond, now, generations),
    }
}

/// The generation of the twin and of the local XR it stands for.
#[derive(Clone, Copy)]
struct Generations {
    twin: Option<i64>,
    local: Option<i64>,
}

impl Generations {
    /// The local generation for a remote `observedGeneration`, if the remote one is the twin's current one.
    fn local_for(self, observed: &Value) -> Option<i64> {
        (observed.as_i64().is_some() && observed.as_i64() == self.twin)
            .then_some(self.local)
            .flatten()
    }
}

fn xr_status(remote: &Value, local: &Value, cond: &Replicated, now: &str, generations: Generations) -> Value {
    shown_status(remote, local, cond, now, |object| map_generation(object, generations))
}

/// Replaces an object's remote `observedGeneration` by the local generation it stands for, or drops it.
fn map_generation(object: &mut Map<String, Value>, generations: Generations) {
    if let Some(observed) = object.remove("observedGeneration")
        && let Some(local) = generations.local_for(&observed)
    {
        object.insert("observedGeneration".into(), json!(local));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conditions::Reason;
    use crate::model::vocabulary::LOCAL_SECRET_NAME;

    fn target() -> RemoteTarget<'static> {
        RemoteTarget {
            api_version: "platform.example.org/v1alpha1",
            kind: "App",
            remote_name: "nxr-0123456789abcdef",
            claim_namespace: "claims",
            cluster_id: "c1",
            cluster_uid: "k1",
        }
    }

    fn xr(spec: Value) -> Value {
        json!({
            "apiVersion": "platform.example.org/v1alpha1", "kind": "App",
            "metadata": {"name": "web", "namespace": "team", "uid": "u1", "generation": 4},
            "spec": spec,
        })
    }

    #[test]
    fn the_users_composition_choices_go_up_and_resource_refs_never() {
        let local = xr(json!({
            "image": "nginx",
            "writeConnectionSecretToRef": {"name": "web-conn"},
            "crossplane": {
                "compositionSelector": {"matchLabels": {"tier": "small"}},
                "compositionUpdatePolicy": "Automatic",
                "resourceRefs": [{"apiVersion": "v1", "kind": "Secret", "name": "another-tenants"}],
            },
        }));
        let intent = xr_intent(&local, &target());
        assert_eq!(intent["metadata"]["name"], "nxr-0123456789abcdef");
        assert_eq!(
            intent["spec"]["crossplane"],
            json!({"compositionSelector": {"matchLabels": {"tier": "small"}}})
        );
        assert_eq!(
            intent["spec"]["writeConnectionSecretToRef"],
            json!({"name": "nxr-0123456789abcdef"})
        );
        assert_eq!(intent["metadata"]["annotations"][LOCAL_SECRET_NAME], "web-conn");
        assert_eq!(
            xr_not_sent(&local).map(|(field, _)| field),
            Some("spec.crossplane.resourceRefs")
        );
        let only_refs = xr(json!({"image": "nginx", "crossplane": {"resourceRefs": []}}));
        assert_eq!(xr_intent(&only_refs, &target())["spec"], json!({"image": "nginx"}));
    }

    #[test]
    fn resource_refs_claimsync_copied_down_are_not_the_users() {
        let mut local = xr(json!({"image": "nginx", "crossplane": {"resourceRefs": [{"kind": "ConfigMap"}]}}));
        local["metadata"]["managedFields"] = json!([{"manager": MANAGER_DOWN, "operation": "Apply",
            "fieldsV1": {"f:spec": {"f:crossplane": {"f:resourceRefs": {}}}}}]);
        assert_eq!(xr_not_sent(&local), None);
    }

    #[test]
    fn what_crossplane_chose_comes_down_and_generations_say_the_local_one() {
        let local = xr(json!({"image": "nginx", "crossplane": {"compositionRef": {"name": "users-choice"}}}));
        let remote = json!({
            "metadata": {"generation": 2},
            "spec": {"image": "nginx", "crossplane": {
                "compositionRef": {"name": "crossplanes-choice"},
                "compositionRevisionRef": {"name": "rev-1"},
                "resourceRefs": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "web-abc"}],
            }},
            "status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": "Available", "observedGeneration": 2},
                {"type": "Synced", "status": "True", "reason": "ReconcileSuccess", "observedGeneration": 1},
                {"type": "Responsive", "status": "True", "reason": "WatchCircuitClosed"},
            ]},
        });
        let down = xr_down(&local, &remote, &Replicated::new(Reason::Synced, "ok"), "now");
        assert_eq!(
            Value::Object(down.spec),
            json!({"crossplane": {
                "compositionRevisionRef": {"name": "rev-1"},
                "resourceRefs": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "web-abc"}],
            }}),
            "the user's compositionRef stays theirs"
        );
        let conditions = down.status["conditions"].as_array().unwrap();
        let of = |kind: &str| conditions.iter().find(|c| c["type"] == kind).unwrap();
        assert_eq!(of("Ready")["observedGeneration"], 4, "current: the local generation");
        assert!(
            of("Synced").get("observedGeneration").is_none(),
            "behind the twin: not known to be current"
        );
        assert!(of("Responsive").get("observedGeneration").is_none());
        assert_eq!(of("Replicated")["reason"], "Synced");
    }

    #[test]
    fn crossplanes_choices_beside_the_users_own_count_as_shown() {
        let remote = json!({"spec": {"crossplane": {"resourceRefs": [{"kind": "ConfigMap", "name": "a"}]}}});
        let mut local = xr(json!({"crossplane": {"compositionSelector": {"matchLabels": {"a": "b"}}}}));
        let down = xr_down(&local, &remote, &Replicated::new(Reason::Synced, "ok"), "now");
        assert!(!crate::model::downward::spec_shown(&local, &down));
        local["spec"]["crossplane"]["resourceRefs"] = json!([{"kind": "ConfigMap", "name": "a"}]);
        assert!(
            crate::model::downward::spec_shown(&local, &down),
            "no write for what is already shown"
        );
    }
}
