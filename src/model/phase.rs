//! A claim's sync phase, as `claimsync status`, the metrics and the shim show it, derived from what the claim
//! itself says (its `Replicated` condition and whether it is being deleted). Pure.

use crate::model::conditions::Reason;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// The twin carries the claim; status and Secret came back.
    Synced,
    /// Not replicated yet.
    Pending,
    /// The control plane cannot be used; the claim shows its last known status and its changes wait.
    Offline,
    /// Something else holds a name the claim needs (twin name, local or remote Secret).
    Conflict,
    /// Deleted locally; its twin is being deleted.
    Deleting,
    /// A twin whose local claim is gone unseen.
    Orphaned,
    /// The control plane no longer offers the kind.
    Withdrawn,
    /// Its namespace left this claimsync's selection; no longer replicated.
    Released,
    Error,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Synced => "Synced",
            Phase::Pending => "Pending",
            Phase::Offline => "Offline",
            Phase::Conflict => "Conflict",
            Phase::Deleting => "Deleting",
            Phase::Orphaned => "Orphaned",
            Phase::Withdrawn => "Withdrawn",
            Phase::Released => "Released",
            Phase::Error => "Error",
        }
    }

    /// The phase of a claim whose `Replicated` condition has `reason` (None: no condition yet).
    pub fn of(reason: Option<&str>, deleting: bool) -> Phase {
        if deleting {
            return Phase::Deleting;
        }
        let Some(reason) = reason else { return Phase::Pending };
        match Reason::parse(reason) {
            Some(Reason::Synced) => Phase::Synced,
            Some(Reason::Pending) => Phase::Pending,
            Some(Reason::ControlPlaneUnreachable | Reason::CredentialsRejected) => Phase::Offline,
            Some(Reason::NameConflict | Reason::SecretConflict | Reason::RemoteSecretConflict) => Phase::Conflict,
            Some(Reason::KindWithdrawn) => Phase::Withdrawn,
            Some(Reason::NotSelected) => Phase::Released,
            // A reason this version does not know (a newer claimsync wrote it) is shown as an error to look at.
            Some(Reason::Unsupported | Reason::Error) | None => Phase::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_phase() {
        let cases = [
            (Some("Synced"), false, Phase::Synced),
            (None, false, Phase::Pending),
            (Some("Pending"), false, Phase::Pending),
            (Some("ControlPlaneUnreachable"), false, Phase::Offline),
            (Some("CredentialsRejected"), false, Phase::Offline),
            (Some("NameConflict"), false, Phase::Conflict),
            (Some("SecretConflict"), false, Phase::Conflict),
            (Some("RemoteSecretConflict"), false, Phase::Conflict),
            (Some("KindWithdrawn"), false, Phase::Withdrawn),
            (Some("NotSelected"), false, Phase::Released),
            (Some("Unsupported"), false, Phase::Error),
            (Some("Error"), false, Phase::Error),
            (Some("Synced"), true, Phase::Deleting),
            (Some("SomethingNew"), false, Phase::Error),
        ];
        for (reason, deleting, want) in cases {
            assert_eq!(Phase::of(reason, deleting), want, "{reason:?} {deleting}");
        }
    }
}
