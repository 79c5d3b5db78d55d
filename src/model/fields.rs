//! Field ownership from `metadata.managedFields`: which parts of an object each field manager set, so claimsync
//! can tell the user's intent from what defaulting or Crossplane filled in. Pure functions over JSON.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// A field set packed into its JSON text, for objects held in a cache: a field set is a tree of small maps, and as
/// a `Value` each map costs a few hundred bytes, several times its text. `owned_fields` reads either form.
pub fn pack(set: &mut Value) {
    if !set.is_string() {
        *set = Value::String(set.to_string());
    }
}

/// A field set as a tree, unpacking one that `pack` made (a packed set that does not parse counts as empty).
fn unpacked(set: &Value) -> Cow<'_, Value> {
    match set {
        Value::String(text) => Cow::Owned(serde_json::from_str(text).unwrap_or_else(|_| Value::Object(Map::new()))),
        tree => Cow::Borrowed(tree),
    }
}

/// The union of the field sets (`fieldsV1`, packed or not) of every manager accepted by `include`, for the main
/// resource (not the status subresource). `None` when the object carries no managed fields at all.
pub fn owned_fields(object: &Value, include: impl Fn(&str) -> bool) -> Option<Value> {
    let entries = object.pointer("/metadata/managedFields")?.as_array()?;
    if entries.is_empty() {
        return None;
    }
    let mut union = Value::Object(Map::new());
    for entry in entries {
        let manager = entry.get("manager").and_then(Value::as_str).unwrap_or("");
        let subresource = entry.get("subresource").and_then(Value::as_str).unwrap_or("");
        if subresource.is_empty()
            && include(manager)
            && let Some(set) = entry.get("fieldsV1")
        {
            merge_sets(&mut union, &unpacked(set));
        }
    }
    Some(union)
}

fn merge_sets(into: &mut Value, set: &Value) {
    let (Value::Object(into), Value::Object(set)) = (into, set) else {
        return;
    };
    for (key, child) in set {
        merge_sets(
            into.entry(key.clone()).or_insert_with(|| Value::Object(Map::new())),
            child,
        );
    }
}

/// Removes from `value` every field the set names as a leaf (its whole value owned), keeping the rest.
pub fn remove_fields(value: &mut Value, set: &Value) {
    let (Value::Object(map), Value::Object(set)) = (value, set) else {
        return;
    };
    for (key, child_set) in set {
        let Some(field) = key.strip_prefix("f:") else { continue };
        let leaf = child_set
            .as_object()
            .is_none_or(|c| !c.keys().any(|k| k.starts_with("f:")));
        if leaf {
            map.remove(field);
        } else if let Some(child) = map.get_mut(field) {
            let had_content = child.as_object().is_some_and(|c| !c.is_empty());
            remove_fields(child, child_set);
            // Everything the map held was the manager's: an empty husk would be sent as `{}`.
            if had_content && child.as_object().is_some_and(|c| c.is_empty()) {
                map.remove(field);
            }
        }
    }
}

/// Keeps in `value` only the fields the set names (a leaf keeps its whole value), dropping the rest.
pub fn retain_fields(value: &mut Value, set: &Value) {
    let (Value::Object(map), Value::Object(set)) = (value, set) else {
        return;
    };
    map.retain(|field, child| {
        let Some(child_set) = set.get(&format!("f:{field}")) else {
            return false;
        };
        let leaf = child_set
            .as_object()
            .is_none_or(|c| !c.keys().any(|k| k.starts_with("f:")));
        if !leaf {
            retain_fields(child, child_set);
        }
        true
    });
}

/// The fields a manager owns (`set`) that `intent` no longer has, as a JSON merge patch of nulls against `present`
/// (the object as it is): a field the object no longer has needs nothing, nor one that `kept` (where the intent
/// comes from) still has with the same value (the intent leaves it out on purpose: a value both sides default
/// alike); a missing field is nulled whole when everything under it is the manager's, else only the manager's parts
/// of it are; a map the intent still has is looked into. Lists and scalars the intent has are sent whole by the
/// caller, so their insides are never nulled. `None`: nothing to remove.
pub fn removals(set: &Value, intent: &Value, present: &Value, kept: &Value) -> Option<Value> {
    let Value::Object(set) = set else { return None };
    let mut nulls = Map::new();
    for (key, child_set) in set {
        let Some(field) = key.strip_prefix("f:") else { continue };
        let Some(present) = present.get(field) else { continue };
        let kept = kept.get(field).unwrap_or(&Value::Null);
        if kept == present {
            continue;
        }
        let removal = match intent.get(field) {
            None if all_owned(child_set, present) => Some(Value::Null),
            None => removals(child_set, &Value::Null, present, kept),
            Some(child @ Value::Object(_)) => removals(child_set, child, present, kept),
            Some(_) => None,
        };
        if let Some(removal) = removal {
            nulls.insert(field.to_string(), removal);
        }
    }
    (!nulls.is_empty()).then_some(Value::Object(nulls))
}

/// Whether the set owns everything `value` holds: a map's every key (recursively), or the whole of anything else.
/// A non-empty map the set names only as a whole (no fields under it) is not all owned: someone else's fields may
/// be inside.
fn all_owned(set: &Value, value: &Value) -> bool {
    let Value::Object(map) = value else { return true };
    let has_fields = set.as_object().is_some_and(|s| s.keys().any(|k| k.starts_with("f:")));
    if !has_fields {
        return map.is_empty();
    }
    map.iter()
        .all(|(key, child)| set.get(format!("f:{key}")).is_some_and(|s| all_owned(s, child)))
}

/// The JSON merge patch that turns `from` into `to`: maps compared key by key (a key `to` lacks is nulled), anything
/// else sent whole where it differs. `None`: they are the same. (A null inside `to` reads as "absent" in a merge
/// patch, as it does to the API server.)
pub fn merge_diff(from: &Value, to: &Value) -> Option<Value> {
    match (from, to) {
        (Value::Object(from), Value::Object(to)) => {
            let mut patch = Map::new();
            for (key, old) in from {
                match to.get(key) {
                    None | Some(Value::Null) if !old.is_null() => {
                        patch.insert(key.clone(), Value::Null);
                    }
                    Some(new) => {
                        if let Some(change) = merge_diff(old, new) {
                            patch.insert(key.clone(), change);
                        }
                    }
                    None => {}
                }
            }
            for (key, new) in to {
                if !from.contains_key(key) && !new.is_null() {
                    patch.insert(key.clone(), new.clone());
                }
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        (from, to) if from == to => None,
        (_, to) => Some(to.clone()),
    }
}

/// `patch` merged into `into` (objects key by key; anything else replaced): the intent and its removals as one
/// JSON merge patch.
pub fn merge_into(into: &mut Value, patch: Value) {
    match (into, patch) {
        (Value::Object(into), Value::Object(patch)) => {
            for (key, value) in patch {
                match into.get_mut(&key) {
                    Some(existing) if existing.is_object() && value.is_object() => merge_into(existing, value),
                    _ => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (into, patch) => *into = patch,
    }
}

/// Whether every field of `part` has the same value in `whole` (maps compared key by key, lists whole).
pub fn is_subset(part: &Value, whole: &Value) -> bool {
    match (part, whole) {
        (Value::Object(p), Value::Object(w)) => p.iter().all(|(k, v)| w.get(k).is_some_and(|wv| is_subset(v, wv))),
        (p, w) => p == w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object_with(managed: Value) -> Value {
        json!({"metadata": {"managedFields": managed}})
    }

    #[test]
    fn union_skips_excluded_managers_and_status() {
        let obj = object_with(json!([
            {"manager": "kubectl", "fieldsV1": {"f:spec": {"f:id": {}}}},
            {"manager": "claimsync-down", "fieldsV1": {"f:spec": {"f:resourceRef": {}}}},
            {"manager": "kubectl-edit", "fieldsV1": {"f:spec": {"f:parameters": {"f:size": {}}}}},
            {"manager": "kubectl", "subresource": "status", "fieldsV1": {"f:status": {}}},
        ]));
        let set = owned_fields(&obj, |m| m != "claimsync-down").unwrap();
        assert_eq!(set, json!({"f:spec": {"f:id": {}, "f:parameters": {"f:size": {}}}}));
        assert_eq!(owned_fields(&json!({"metadata": {}}), |_| true), None);
    }

    #[test]
    fn packed_field_sets_read_as_the_trees_they_were() {
        let mut packed = json!({"f:spec": {".": {}, "f:parameters": {"f:size": {}}}});
        let tree = packed.clone();
        pack(&mut packed);
        assert!(packed.is_string());
        let mut twice = packed.clone();
        pack(&mut twice);
        assert_eq!(twice, packed, "packing a packed set leaves it as it is");
        let obj = object_with(json!([
            {"manager": "claimsync", "fieldsV1": packed},
            {"manager": "claimsync", "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}}}},
            {"manager": "claimsync", "fieldsV1": "not a field set"},
        ]));
        let union = owned_fields(&obj, |_| true).unwrap();
        assert_eq!(union["f:spec"], tree["f:spec"]);
        assert_eq!(union["f:metadata"], json!({"f:labels": {"f:a": {}}}));
    }

    #[test]
    fn removes_what_the_set_owns() {
        let mut spec = json!({"id": "a", "ref": {"name": "n"}, "p": {"x": 1, "y": 2}, "tags": ["t"], "e": {}});
        let set = json!({"f:ref": {"f:name": {}}, "f:p": {"f:x": {}}, "f:tags": {"v:\"t\"": {}}, "f:e": {".": {}}});
        remove_fields(&mut spec, &set);
        assert_eq!(spec, json!({"id": "a", "p": {"y": 2}}));
    }

    #[test]
    fn retains_only_what_the_set_owns() {
        let mut spec = json!({"id": "a", "ref": {"name": "n", "ns": "x"}, "p": {"x": 1, "y": 2}, "tags": ["t"]});
        let set = json!({"f:id": {}, "f:ref": {"f:name": {}}, "f:tags": {"v:\"t\"": {}}});
        retain_fields(&mut spec, &set);
        assert_eq!(spec, json!({"id": "a", "ref": {"name": "n"}, "tags": ["t"]}));
    }

    #[test]
    fn removals_null_what_the_intent_dropped_and_nothing_else() {
        let owned = json!({".": {}, "f:id": {}, "f:p": {".": {}, "f:x": {}, "f:y": {}}, "f:tags": {"v:\"t\"": {}},
                           "f:gone": {"f:deep": {}}, "f:ref": {"f:name": {}}, "f:e": {".": {}}});
        let present = json!({"id": "a", "p": {"x": 1, "y": 2}, "tags": ["t"], "gone": {"deep": 1},
                             "ref": {"name": "n", "kind": "theirs"}, "e": {}, "other": 1});
        let cases = [
            // (intent, nulls)
            (
                json!({"id": "a", "p": {"x": 1, "y": 2}, "tags": ["t"], "gone": {"deep": 1}, "ref": {"name": "n"}, "e": {}}),
                None,
            ),
            (
                json!({"id": "a", "p": {"x": 1}, "tags": [], "ref": {"name": "n"}, "e": {}}),
                Some(json!({"p": {"y": null}, "gone": null})),
            ),
            // A map turned into a scalar or list is sent whole; nothing inside it is nulled.
            (
                json!({"id": "a", "p": 3, "tags": "x", "gone": [1], "ref": "n", "e": 1}),
                None,
            ),
            // Everything dropped: a map holding someone else's field keeps it (only the owned parts go), and a
            // field nobody owns stays.
            (
                json!({}),
                Some(json!({"id": null, "p": null, "tags": null, "gone": null, "ref": {"name": null}, "e": null})),
            ),
            // A field nobody owned that the intent now has needs no removal.
            (
                json!({"id": "a", "p": {"x": 1, "y": 2, "z": 3}, "tags": ["t"], "gone": {"deep": 1}, "ref": {"name": "n"}, "e": {}, "new": 1}),
                None,
            ),
        ];
        for (intent, nulls) in cases {
            assert_eq!(
                removals(&owned, &intent, &present, &Value::Null),
                nulls,
                "intent {intent}"
            );
        }
        // Owned fields the object no longer has need nothing; neither does an object with no field set.
        assert_eq!(removals(&owned, &json!({}), &json!({"other": 1}), &Value::Null), None);
        assert_eq!(removals(&Value::Null, &json!({}), &present, &Value::Null), None);
        // A map owned only as a whole that now holds someone else's fields is left alone.
        let whole = json!({"f:m": {".": {}}});
        assert_eq!(
            removals(&whole, &json!({}), &json!({"m": {"theirs": 1}}), &Value::Null),
            None
        );
        assert_eq!(
            removals(&whole, &json!({}), &json!({"m": {}}), &Value::Null),
            Some(json!({"m": null}))
        );
        // What the local object still has with the same value (a default both sides apply) is not removed; a value
        // it has changed is.
        let policy = json!({"f:policy": {}, "f:p": {"f:x": {}}});
        let twin = json!({"policy": "Background", "p": {"x": 1}});
        let local_same = json!({"policy": "Background", "p": {"x": 1}});
        assert_eq!(removals(&policy, &json!({}), &twin, &local_same), None);
        let local_changed = json!({"policy": "Orphan", "p": {"x": 2}});
        assert_eq!(
            removals(&policy, &json!({}), &twin, &local_changed),
            Some(json!({"policy": null, "p": null}))
        );
    }

    #[test]
    fn a_merge_diff_turns_one_value_into_the_other() {
        let cases = [
            (json!({"a": 1}), json!({"a": 1}), None),
            (json!({"a": 1, "b": 2}), json!({"a": 1}), Some(json!({"b": null}))),
            (
                json!({"a": 1}),
                json!({"a": 2, "c": [1]}),
                Some(json!({"a": 2, "c": [1]})),
            ),
            (
                json!({"m": {"x": 1, "y": 2}, "l": [1, 2]}),
                json!({"m": {"x": 1, "z": 3}, "l": [1]}),
                Some(json!({"m": {"y": null, "z": 3}, "l": [1]})),
            ),
            (json!({"m": {"x": 1}}), json!({"m": 5}), Some(json!({"m": 5}))),
            (json!(null), json!({"a": 1}), Some(json!({"a": 1}))),
            (json!({"a": null}), json!({}), None),
        ];
        for (from, to, patch) in cases {
            assert_eq!(merge_diff(&from, &to), patch, "{from} -> {to}");
            // Applied as a merge patch, the diff gives `to`.
            if let Some(patch) = patch.filter(|_| from.is_object()) {
                let mut applied = from.clone();
                json_patch::merge(&mut applied, &patch);
                assert_eq!(applied, to, "{from} + {patch}");
            }
        }
    }

    #[test]
    fn merging_patches_keeps_both_sides_and_replaces_non_objects() {
        let mut into = json!({"spec": {"a": 1, "m": {"x": 1}}, "metadata": {"labels": {"l": "v"}}});
        merge_into(
            &mut into,
            json!({"spec": {"b": null, "m": {"y": null}}, "metadata": {"annotations": {"n": null}}}),
        );
        assert_eq!(
            into,
            json!({"spec": {"a": 1, "b": null, "m": {"x": 1, "y": null}},
                   "metadata": {"labels": {"l": "v"}, "annotations": {"n": null}}})
        );
    }

    #[test]
    fn subset_compares_maps_by_key_and_lists_whole() {
        let whole = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        assert!(is_subset(&json!({"b": {"c": 2}}), &whole));
        assert!(is_subset(&json!({}), &whole));
        assert!(!is_subset(&json!({"b": {"c": 3}}), &whole));
        assert!(!is_subset(&json!({"l": [1]}), &whole));
        assert!(!is_subset(&json!({"x": 1}), &whole));
    }
}
