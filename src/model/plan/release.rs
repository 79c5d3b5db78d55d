//! The plan for a claim claimsync lets go of: a user's delete deletes the twin first (unless the claim says
//! `Orphan`), then the finalizer is released; a claim that goes with its local CRD, or whose kind the control plane
//! withdrew, or whose namespace left the selector, is released with its twin left alone. Decisions only.

use super::{Facts, On, Outcome, Say, Step, TWIN_DELETE_POLL, Then, finish};
use crate::model::conditions::{Reason, Replicated};
use crate::model::naming::{is_twin, written_by_other};
use crate::model::phase::Phase;
use crate::model::vocabulary::{ADOPT_FROM, DELETION_POLICY};

/// A claim in a namespace this claimsync does not select: another claimsync's business, unless this one held it;
/// then its namespace left the selection and the claim is released.
pub(super) fn deselected(f: &Facts) -> Step {
    if !f.held_by_us() {
        return finish(Outcome::default());
    }
    let message = format!(
        "namespace {} no longer matches this claimsync's --namespace-selector: the claim is released and no longer \
         replicated; its twin stays on the control plane",
        f.namespace()
    );
    release(f, "NotSelected", Reason::NotSelected, message)
}

/// A claim being deleted: its twin deleted (unless orphaned), and the finalizer released once it is gone.
pub(super) fn deleting(f: &Facts) -> Step {
    if !f.has_finalizer() {
        return finish(Outcome::default());
    }
    let remote_object = f.remote_object();
    // The API server deletes every claim of a CRD that is deleted: that is not a user deleting claims.
    let Some(crd_going) = f.local_crd_going else {
        return Step::ReadLocalCrd;
    };
    if crd_going {
        let message = format!(
            "the local CRD {} is being deleted and takes this claim with it; that is not a delete of the claim, so \
             its twin {remote_object} stays on the control plane (apply the claim again once the CRD is back to \
             adopt it)",
            f.kind.crd_name
        );
        return release(f, "LocalCRDDeleted", Reason::KindWithdrawn, message);
    }
    if f.annotation(DELETION_POLICY) == Some("Orphan") {
        let message = format!("deletion policy Orphan: the remote claim {remote_object} stays");
        return let_go(vec![Say::on(On::Log, "Orphan", message)]);
    }
    // The kind is withdrawn: the control plane took its twins with it, where its family's does (Crossplane v2 leaves
    // namespaced XRs in place, so an XR's twin is deleted as for a live kind).
    if f.kind.withdrawn && f.kind.rules.withdrawal_takes_twins() {
        return let_go(Vec::new());
    }
    // Offline, the delete waits (the finalizer holds it); the link's return reconciles the claim again.
    if !f.link.is_up() {
        return finish(Outcome {
            phase: Some(Phase::Deleting),
            ..Outcome::default()
        });
    }
    let Some(twin) = &f.twin else {
        return Step::ReadTwin {
            name: f.remote_name(),
            known_version: None,
        };
    };
    if let Some(twin) = twin {
        let labels = &twin["metadata"]["labels"];
        // Ours only if this app cluster wrote it (or the claim was restored to adopt it from a replaced one).
        let other = written_by_other(labels, &f.who.cluster_uid);
        let ours = other.is_none() || f.annotation(ADOPT_FROM) == other.as_deref();
        if ours && is_twin(labels, &f.who.cluster_id, f.namespace(), f.name()) {
            if twin["metadata"]["deletionTimestamp"].is_null() && !f.twin_delete_sent {
                return Step::DeleteTwin { name: f.remote_name() };
            }
            // Crossplane may hold the remote claim until its composite is gone (Foreground).
            return finish(Outcome {
                phase: Some(Phase::Deleting),
                then: Then::Requeue(TWIN_DELETE_POLL),
                ..Outcome::default()
            });
        }
    }
    // No twin of ours (also when the control plane withdrew the kind, which takes its twins with it): let it go.
    let_go(Vec::new())
}

/// Lets go of a claim without touching its twin, saying why (an Event and the log; on a live claim also the
/// `Replicated` condition with `reason`).
fn release(f: &Facts, event_reason: &str, reason: Reason, message: String) -> Step {
    let show = (!f.deleting()).then(|| Replicated::new(reason, message.clone()));
    finish(Outcome {
        say: vec![
            Say::on(On::Log, event_reason, message.clone()),
            Say::on(On::Claim, event_reason, message),
        ],
        show,
        release: true,
        ..Outcome::default()
    })
}

/// The twin is gone (or stays by the user's choice): forget the claim and let it go.
fn let_go(say: Vec<Say>) -> Step {
    finish(Outcome {
        phase: Some(Phase::Deleting),
        say,
        release: true,
        ..Outcome::default()
    })
}
