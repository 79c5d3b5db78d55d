//! claimsync's own condition on local claims, `Replicated`: its reasons and how it is merged into a status
//! without disturbing Crossplane's conditions. Pure functions only.

use serde_json::{Value, json};

use crate::model::vocabulary::REPLICATED;

/// Why a claim is, or is not, replicated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The remote claim carries the local spec; status and Secret are copied back.
    Synced,
    /// Not written to the control plane yet.
    Pending,
    ControlPlaneUnreachable,
    /// The control plane rejected claimsync's credentials (401).
    CredentialsRejected,
    /// A local Secret of the requested name exists and is not the claim's.
    SecretConflict,
    /// The Secret at the twin's name on the control plane was not written by Crossplane for the twin.
    RemoteSecretConflict,
    NameConflict,
    KindWithdrawn,
    /// The claim's namespace no longer matches `--namespace-selector`: released, its twin kept.
    NotSelected,
    /// The claim sets a field claimsync cannot replicate.
    Unsupported,
    Error,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::Synced,
        Reason::Pending,
        Reason::ControlPlaneUnreachable,
        Reason::CredentialsRejected,
        Reason::SecretConflict,
        Reason::RemoteSecretConflict,
        Reason::NameConflict,
        Reason::KindWithdrawn,
        Reason::NotSelected,
        Reason::Unsupported,
        Reason::Error,
    ];

    /// The reason named `text`, if it is one of claimsync's.
    pub fn parse(text: &str) -> Option<Reason> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Synced => "Synced",
            Reason::Pending => "Pending",
            Reason::ControlPlaneUnreachable => "ControlPlaneUnreachable",
            Reason::CredentialsRejected => "CredentialsRejected",
            Reason::SecretConflict => "SecretConflict",
            Reason::RemoteSecretConflict => "RemoteSecretConflict",
            Reason::NameConflict => "NameConflict",
            Reason::KindWithdrawn => "KindWithdrawn",
            Reason::NotSelected => "NotSelected",
            Reason::Unsupported => "Unsupported",
            Reason::Error => "Error",
        }
    }
}

/// The `Replicated` condition to show on a claim.
#[derive(Clone, Debug, PartialEq)]
pub struct Replicated {
    pub reason: Reason,
    pub message: String,
}

impl Replicated {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Replicated {
            reason,
            message: message.into(),
        }
    }

    pub fn is_true(&self) -> bool {
        self.reason == Reason::Synced
    }
}

/// `status` with its `Replicated` condition set to `cond`. The transition time is kept while the condition's
/// status does not change, so that writing the same condition twice is no change at all.
/// It carries no `observedGeneration`: Crossplane's condition schema (v1.20) has no such field.
pub fn with_replicated(status: &Value, cond: &Replicated, now: &str) -> Value {
    let mut status = if status.is_object() { status.clone() } else { json!({}) };
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let state = if cond.is_true() { "True" } else { "False" };
    let previous = conditions.iter().find(|c| c["type"] == REPLICATED);
    let since = match previous {
        Some(p) if p["status"] == state => p["lastTransitionTime"].as_str().unwrap_or(now).to_string(),
        _ => now.to_string(),
    };
    conditions.retain(|c| c["type"] != REPLICATED);
    let replicated = json!({
        "type": REPLICATED,
        "status": state,
        "reason": cond.reason.as_str(),
        "message": cond.message,
        "lastTransitionTime": since,
    });
    conditions.push(replicated);
    status["conditions"] = Value::Array(conditions);
    status
}

/// The `Replicated` condition of an object's status, if any: (status, reason).
pub fn replicated_of(object: &Value) -> Option<(String, String)> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == REPLICATED)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_its_own_condition_and_keeps_transition_time() {
        let status = json!({"conditions": [
            {"type": "Ready", "status": "True", "reason": "Available", "lastTransitionTime": "t0"},
            {"type": REPLICATED, "status": "True", "reason": "Synced", "message": "old", "lastTransitionTime": "t1"},
        ]});
        let out = with_replicated(&status, &Replicated::new(Reason::Synced, "new"), "t9");
        let conditions = out["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0]["type"], "Ready");
        assert_eq!(conditions[1]["lastTransitionTime"], "t1");
        assert_eq!(conditions[1]["message"], "new");
        assert!(conditions[1].get("observedGeneration").is_none());

        let failed = with_replicated(&out, &Replicated::new(Reason::NameConflict, "taken"), "t9");
        assert_eq!(failed["conditions"][1]["status"], "False");
        assert_eq!(failed["conditions"][1]["lastTransitionTime"], "t9");
        assert_eq!(
            replicated_of(&json!({"status": failed})),
            Some(("False".into(), "NameConflict".into()))
        );
    }

    #[test]
    fn reasons_parse_back_from_their_names() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::parse("synced"), None);
    }

    #[test]
    fn starts_a_status_when_there_is_none() {
        let out = with_replicated(&Value::Null, &Replicated::new(Reason::Pending, "waiting"), "t");
        assert_eq!(out["conditions"][0]["reason"], "Pending");
    }
}
