//! A family of replicated objects: the rules that differ between Crossplane claims and Crossplane v2's namespaced
//! composite resources: the twin's name, what goes up (and what never does), what comes down, which Secret the user
//! asked for. The planner is the same for every family; a new family is a new implementation of [`Family`].

use serde_json::Value;

use crate::model::composite::{xr_down, xr_intent, xr_not_sent};
use crate::model::conditions::Replicated;
use crate::model::downward::{LocalDown, local_down};
use crate::model::kind::KindFamily;
use crate::model::naming::{remote_claim_name, remote_name};
use crate::model::upward::{RemoteTarget, remote_intent, unsupported_field};

/// The rules of one family of replicated objects.
pub trait Family: Sync {
    /// The twin's name in the claim namespace.
    fn remote_name(&self, name: &str, namespace: &str, cluster_id: &str) -> String;
    /// A field the local object sets that cannot be replicated, with why.
    fn unsupported_field(&self, local: &Value) -> Option<(&'static str, &'static str)>;
    /// The twin as claimsync's up manager applies it.
    fn remote_intent(&self, local: &Value, target: &RemoteTarget) -> Value;
    /// What the local object must show of its twin.
    fn local_down(&self, local: &Value, remote: &Value, cond: &Replicated, now: &str) -> LocalDown;
    /// The local connection Secret's name the user asked for, if any.
    fn connection_secret<'v>(&self, local: &'v Value) -> Option<&'v str> {
        local["spec"]["writeConnectionSecretToRef"]["name"].as_str()
    }
    /// A field the user set that is never sent up, with why; the object still goes up without it.
    fn not_sent(&self, _local: &Value) -> Option<(&'static str, &'static str)> {
        None
    }
    /// Whether the control plane deletes the twins itself when it withdraws the kind (so a user's delete of a
    /// local object of a withdrawn kind has no twin left to delete).
    fn withdrawal_takes_twins(&self) -> bool {
        true
    }
}

/// The rules of a kind's family.
pub fn rules_of(family: KindFamily) -> &'static dyn Family {
    match family {
        KindFamily::Claim => &Claims,
        KindFamily::NamespacedXr => &NamespacedXrs,
    }
}

/// Crossplane claims (v1 XRDs' `claimNames`).
pub struct Claims;

impl Family for Claims {
    fn remote_name(&self, name: &str, namespace: &str, cluster_id: &str) -> String {
        remote_claim_name(name, namespace, cluster_id)
    }

    fn unsupported_field(&self, local: &Value) -> Option<(&'static str, &'static str)> {
        unsupported_field(local)
    }

    fn remote_intent(&self, local: &Value, target: &RemoteTarget) -> Value {
        remote_intent(local, target)
    }

    fn local_down(&self, local: &Value, remote: &Value, cond: &Replicated, now: &str) -> LocalDown {
        local_down(local, remote, cond, now)
    }
}

/// Crossplane v2's namespaced composite resources (v2 XRDs with `scope: Namespaced`).
pub struct NamespacedXrs;

impl Family for NamespacedXrs {
    fn remote_name(&self, name: &str, namespace: &str, cluster_id: &str) -> String {
        remote_name(KindFamily::NamespacedXr, name, namespace, cluster_id)
    }

    fn unsupported_field(&self, _local: &Value) -> Option<(&'static str, &'static str)> {
        None
    }

    fn remote_intent(&self, local: &Value, target: &RemoteTarget) -> Value {
        xr_intent(local, target)
    }

    fn local_down(&self, local: &Value, remote: &Value, cond: &Replicated, now: &str) -> LocalDown {
        xr_down(local, remote, cond, now)
    }

    fn not_sent(&self, local: &Value) -> Option<(&'static str, &'static str)> {
        xr_not_sent(local)
    }

    /// Crossplane v2 (v2.3.4) does not: deleting a v2 XRD sends one cluster-wide delete of the XR kind, which the
    /// API server refuses (404) for a namespaced kind, and then waits for the XRs to go, for ever. A user's delete
    /// must therefore still delete the twin.
    fn withdrawal_takes_twins(&self) -> bool {
        false
    }
}
