//! What waits to go up while the control plane cannot be reached (or a claim keeps failing): the local intent as an
//! RFC 6902 JSON Patch against the intent last applied to the twin, and how the `Replicated` message says it.
//! Pure functions over JSON.

use serde_json::{Value, json};

/// The patch that would bring the twin from `last_applied` (None: never made) to `intent`.
pub fn pending_patch(last_applied: Option<&Value>, intent: &Value) -> Value {
    match last_applied {
        // The twin is still to be made: the whole intent, as one operation on the document root.
        None => json!([{"op": "add", "path": "", "value": intent}]),
        Some(last) => serde_json::to_value(json_patch::diff(last, intent)).unwrap_or_else(|_| json!([])),
    }
}

/// How many operations a patch holds.
pub fn change_count(patch: &Value) -> usize {
    patch.as_array().map_or(0, Vec::len)
}

/// "N changes wait: <op> <path>, ..." (at most five paths named), or None when nothing waits.
pub fn describe(patch: &Value) -> Option<String> {
    let ops = patch.as_array().filter(|ops| !ops.is_empty())?;
    let named: Vec<String> = ops
        .iter()
        .take(5)
        .map(|op| {
            let path = op["path"].as_str().unwrap_or_default();
            if path.is_empty() {
                "create the twin".to_string()
            } else {
                format!("{} {path}", op["op"].as_str().unwrap_or("change"))
            }
        })
        .collect();
    let more = if ops.len() > named.len() { ", ..." } else { "" };
    let noun = if ops.len() == 1 { "change waits" } else { "changes wait" };
    Some(format!("{} {noun}: {}{more}", ops.len(), named.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_never_replicated_waits_as_one_create() {
        let intent = json!({"spec": {"size": 1}});
        let patch = pending_patch(None, &intent);
        assert_eq!(change_count(&patch), 1);
        assert_eq!(describe(&patch).unwrap(), "1 change waits: create the twin");
    }

    #[test]
    fn edits_wait_as_the_operations_that_replay_them() {
        let last = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"size": 1, "color": "red"}});
        let intent = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"size": 3}});
        let patch = pending_patch(Some(&last), &intent);
        let mut replayed = last.clone();
        json_patch::patch(
            &mut replayed,
            &serde_json::from_value::<json_patch::Patch>(patch.clone()).unwrap(),
        )
        .unwrap();
        assert_eq!(replayed, intent, "the patch brings the twin to the intent");
        assert_eq!(change_count(&patch), 3);
        let said = describe(&patch).unwrap();
        assert!(said.starts_with("3 changes wait: "), "{said}");
        assert!(
            said.contains("/spec/size") && said.contains("/metadata/labels/b"),
            "{said}"
        );
        assert_eq!(describe(&pending_patch(Some(&intent), &intent)), None);
    }
}
