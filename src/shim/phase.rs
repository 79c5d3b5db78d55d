//! The phase a claimsync shows: one word from the claim's `Replicated` condition and its deletion mark. A pure
//! function and its table; the reasons are the ones `model::conditions::Reason` defines.

use crate::model::conditions::Reason;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The twin carries the local spec; status and Secret come back.
    Synced,
    /// Not (yet) written to the control plane, or not replicated by choice (namespace no longer selected).
    Pending,
    /// The control plane is unreachable; the claim shows its last known status.
    Offline,
    /// A name or a Secret is taken by something that is not the claim's.
    Conflict,
    /// The claim is being deleted (its twin first).
    Deleting,
    /// A twin the journal knows of whose local claim is gone.
    Orphaned,
    /// Replication failed, the claim asks for something that cannot be replicated, or its kind was withdrawn.
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
            Phase::Error => "Error",
        }
    }
}

/// The phase of a local claim: `deleting` when it has a deletionTimestamp, `reason` that of its `Replicated`
/// condition (`None` before claimsync set one). A reason this version does not know is an `Error`, shown with
/// its own name beside the phase.
pub fn phase_of(deleting: bool, reason: Option<&str>) -> Phase {
    if deleting {
        return Phase::Deleting;
    }
    let Some(reason) = reason else {
        return Phase::Pending;
    };
    match Reason::parse(reason) {
        Some(Reason::Synced) => Phase::Synced,
        Some(Reason::Pending | Reason::NotSelected) => Phase::Pending,
        Some(Reason::ControlPlaneUnreachable) => Phase::Offline,
        Some(Reason::SecretConflict | Reason::RemoteSecretConflict | Reason::NameConflict) => Phase::Conflict,
        Some(Reason::KindWithdrawn | Reason::Unsupported | Reason::Error) | None => Phase::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_phase_and_deletion_wins() {
        let cases = [
            (false, None, Phase::Pending),
            (false, Some("Synced"), Phase::Synced),
            (false, Some("Pending"), Phase::Pending),
            (false, Some("NotSelected"), Phase::Pending),
            (false, Some("ControlPlaneUnreachable"), Phase::Offline),
            (false, Some("SecretConflict"), Phase::Conflict),
            (false, Some("RemoteSecretConflict"), Phase::Conflict),
            (false, Some("NameConflict"), Phase::Conflict),
            (false, Some("KindWithdrawn"), Phase::Error),
            (false, Some("Unsupported"), Phase::Error),
            (false, Some("Error"), Phase::Error),
            (false, Some("SomethingNew"), Phase::Error),
            (false, Some(""), Phase::Error),
            (true, None, Phase::Deleting),
            (true, Some("Synced"), Phase::Deleting),
            (true, Some("ControlPlaneUnreachable"), Phase::Deleting),
        ];
        for (deleting, reason, want) in cases {
            assert_eq!(phase_of(deleting, reason), want, "{deleting} {reason:?}");
        }
    }
}
