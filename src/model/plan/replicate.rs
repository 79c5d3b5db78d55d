//! The plan for a live claim: held by claimsync's finalizer, its twin applied up (or why not: unsupported,
//! offline, withdrawn, a name taken, refused), its connection Secret and status brought down, and the journal
//! record of what was synced. Decisions only; the executor reads and writes.

use std::time::Duration;

use claimsync_state::{ClaimRecord, content_hash};
use serde_json::{Value, json};

use super::secret::secret_step;
use super::{ApplyFailure, Facts, On, Outcome, Pending, Say, Step, Then, TwinWrite, finish};
use crate::model::conditions::{Reason, Replicated};
use crate::model::downward::is_shown;
use crate::model::fields::{is_subset, merge_into, owned_fields, removals};
use crate::model::link::{Down, LinkState};
use crate::model::naming::{is_twin, written_by_other};
use crate::model::pending::{change_count, describe, pending_patch};
use crate::model::phase::Phase;
use crate::model::secret::SecretOutcome;
use crate::model::vocabulary::{ADOPT_FROM, MANAGER_UP};

/// How long a claim whose cached version is older than claimsync's own last write to it waits for the cache, and
/// how recent that write must be for the wait (an app cluster restored from a backup has older versions for good).
pub const CACHE_CATCH_UP: Duration = Duration::from_secs(5);

/// The next step for a live claim in a selected namespace.
pub(super) fn live(f: &Facts) -> Step {
    // This claim's own last writes made it newer than the cache holds (its watch event is on its way, and with it
    // another reconcile): writing from the older version would only be refused (409) and retried. Only for a record
    // written in the last seconds: an app cluster restored from a backup has older versions for good, and a record
    // from a clock that was ahead must not hold the claim until this clock catches up.
    if let Some(record) = f.record
        && record.local_uid == f.uid()
        && f.now_unix
            .checked_sub(record.updated_unix)
            .is_some_and(|age| age < CACHE_CATCH_UP.as_secs())
        && older(f.resource_version(), Some(&record.local_resource_version))
    {
        return finish(Outcome {
            then: Then::Requeue(CACHE_CATCH_UP),
            ..Outcome::default()
        });
    }
    if !f.held_by_us() {
        return Step::Hold;
    }
    if let Some((field, why)) = f.kind.rules.unsupported_field(&f.claim) {
        let message = format!("{field} is not replicated: {why}; the claim is not sent to the control plane");
        return stop(f, Reason::Unsupported, message, true, Then::Resync);
    }
    let remote_name = f.remote_name();
    let (intent, intent_hash) = f.intent(&remote_name);
    // Offline: nothing goes up; what waits is recorded and said, and the last known status stays. The link's return
    // reconciles every claim again.
    if let LinkState::Down { why, reason } = f.link {
        return offline(f, *why, reason, intent);
    }
    if f.kind.withdrawn {
        let message = format!(
            "the control plane no longer offers {}; the claim is kept but not replicated",
            f.kind.kind
        );
        return stop(f, Reason::KindWithdrawn, message, false, Then::AwaitChange);
    }
    let Some(twin) = &f.twin else {
        return Step::ReadTwin {
            name: remote_name,
            known_version: f.record.and_then(|r| r.remote_resource_version.clone()),
        };
    };
    if let Some(twin) = twin
        && let Some(step) = not_ours(f, twin)
    {
        return step;
    }
    // Checked on every pass, twin or not: while Crossplane takes a kind away it deletes the claims itself (so a
    // vanished twin must not be recreated), and its claims may hang until the XRD is gone.
    let Some(withdrawing) = f.withdrawing else {
        return Step::ReadWithdrawing;
    };
    if withdrawing {
        let message = format!(
            "the control plane is withdrawing {}; the claim is kept but not replicated",
            f.kind.kind
        );
        return stop(f, Reason::KindWithdrawn, message, false, Then::Resync);
    }
    let remote = match (twin, &f.applied) {
        (_, Some(Ok(applied))) => applied,
        (_, Some(Err(failure))) => return refused(f, failure, intent),
        (Some(twin), None)
            if *f
                .memo
                .in_place
                .get_or_init(|| in_place(twin, intent, intent_hash, f.record, &f.claim)) =>
        {
            twin
        }
        (existing, None) => {
            let mut then_say: Vec<Say> = apply_said(f, existing.is_some(), intent_hash).into_iter().collect();
            if let Some((field, why)) = f.kind.rules.not_sent(&f.claim) {
                let message = format!("{field} is not replicated: {why}");
                then_say.push(Say::on(On::Claim, "FieldNotReplicated", message));
            }
            let how = match existing {
                None => TwinWrite::Create,
                Some(twin) => match ours(twin) {
                    Some(owned) => TwinWrite::Patch(twin_patch(twin, &owned, intent, &f.claim)),
                    None => TwinWrite::Apply,
                },
            };
            return Step::WriteTwin {
                intent: intent.clone(),
                then_say,
                how,
            };
        }
    };
    down(f, remote, intent.clone(), intent_hash.clone())
}

/// After the twin is in place: the connection Secret, the down-state, the record.
fn down(f: &Facts, remote: &Value, intent: Value, intent_hash: String) -> Step {
    let secret_name = f.kind.rules.connection_secret(&f.claim);
    let secret = match secret_step(f, remote, secret_name) {
        Ok(outcome) => outcome,
        Err(step) => return step,
    };
    let mut say = Vec::new();
    let condition = match &secret {
        SecretOutcome::Conflict { name } => {
            let message = format!(
                "Secret {}/{name} exists and is not this claim's; delete or rename it, or change \
                 spec.writeConnectionSecretToRef.name",
                f.namespace()
            );
            say_once(f, &mut say, Reason::SecretConflict, &message);
            Replicated::new(Reason::SecretConflict, message)
        }
        SecretOutcome::RemoteNotOwned { name } => {
            let message = format!(
                "Secret {}/{name} on the control plane was not written by Crossplane for this claim's twin (its \
                 controller is not the twin); it is not copied",
                f.who.claim_namespace
            );
            say_once(f, &mut say, Reason::RemoteSecretConflict, &message);
            Replicated::new(Reason::RemoteSecretConflict, message)
        }
        _ => {
            let left_out = f.kind.rules.not_sent(&f.claim);
            let left_out = left_out.map(|(field, _)| format!("; {field} is Crossplane's and was not sent"));
            Replicated::new(
                Reason::Synced,
                format!(
                    "replicated to {} on the control plane{}",
                    f.remote_object(),
                    left_out.unwrap_or_default()
                ),
            )
        }
    };
    let shown = f.kind.rules.local_down(&f.claim, remote, &condition, f.now);
    if f.written_down.is_none() && !is_shown(&f.claim, &shown) {
        return Step::WriteDown { down: shown };
    }
    let status_hash =
        content_hash(&json!({"spec": shown.spec, "annotations": shown.annotations, "status": shown.status}));
    let local_version = f
        .written_down
        .clone()
        .or_else(|| f.resource_version().map(str::to_string))
        .unwrap_or_default();
    let synced = ClaimRecord {
        local_uid: f.uid().to_string(),
        local_resource_version: local_version,
        remote_name: f.remote_name(),
        remote_uid: remote["metadata"]["uid"].as_str().map(str::to_string),
        remote_resource_version: remote["metadata"]["resourceVersion"].as_str().map(str::to_string),
        spec_hash_up: Some(intent_hash),
        last_intent: Some(intent),
        status_hash_down: Some(status_hash),
        secret_hash_down: match secret {
            SecretOutcome::InPlace { hash, .. } => Some(hash),
            _ => None,
        },
        secret_name_down: secret_name.map(str::to_string),
        last_status: Some(shown.status),
        pending_patch: None,
        last_error: None,
        updated_unix: f.now_unix,
    };
    // A resync that only confirms what the journal says writes nothing (10,000 claims after a restart would be
    // 10,000 journal writes); `updated_unix` therefore tells when something last changed.
    let record = f.record.is_none_or(|old| !old.says_the_same(&synced)).then_some(synced);
    finish(Outcome {
        phase: Some(Phase::of(Some(condition.reason.as_str()), false)),
        say,
        record,
        then: Then::Resync,
        ..Outcome::default()
    })
}

/// The claim is not replicated for `reason`: shown on the claim (with an Event the first time when `warn`), and
/// nothing else changes.
fn stop(f: &Facts, reason: Reason, message: String, warn: bool, then: Then) -> Step {
    let mut say = Vec::new();
    if warn {
        say_once(f, &mut say, reason, &message);
    }
    finish(Outcome {
        phase: Some(Phase::of(Some(reason.as_str()), false)),
        say,
        show: Some(Replicated::new(reason, message)),
        then,
        ..Outcome::default()
    })
}

/// A Warning Event on the claim about `reason`, unless the claim already shows it (the Event was published then).
fn say_once(f: &Facts, say: &mut Vec<Say>, reason: Reason, message: &str) {
    if !f.shows(reason.as_str()) {
        say.push(Say::on(On::Claim, reason.as_str(), message));
    }
}

/// The control plane is unreachable, or refuses claimsync's credentials: what waits is recorded and said.
fn offline(f: &Facts, why: Down, reason: &str, intent: &Value) -> Step {
    let pending = pending_patch(f.record.and_then(|r| r.last_intent.as_ref()), intent);
    let waits = describe(&pending).map(|w| format!("; {w}")).unwrap_or_default();
    let (shown, message) = match why {
        Down::Unreachable => (
            Reason::ControlPlaneUnreachable,
            format!("the control plane is unreachable ({reason}); showing the last known status{waits}"),
        ),
        Down::CredentialsRejected => (
            Reason::CredentialsRejected,
            format!("{reason}; showing the last known status{waits}"),
        ),
    };
    finish(Outcome {
        phase: Some(Phase::of(Some(shown.as_str()), false)),
        pending: Some(Pending {
            remote_name: f.remote_name(),
            patch: pending,
            error: None,
        }),
        show: Some(Replicated::new(shown, message)),
        then: Then::AwaitChange,
        ..Outcome::default()
    })
}

/// The twin at the claim's remote name is not this claim's to write: someone else's object (a name conflict), or
/// another app cluster's with the same cluster id (contested). `None`: it is ours.
fn not_ours(f: &Facts, twin: &Value) -> Option<Step> {
    let labels = &twin["metadata"]["labels"];
    let remote_object = f.remote_object();
    if !is_twin(labels, &f.who.cluster_id, f.namespace(), f.name()) {
        let message = format!(
            "the control plane already has a claim {remote_object} that is not this claim's twin; it is left alone"
        );
        return Some(stop(f, Reason::NameConflict, message, true, Then::Resync));
    }
    let other = written_by_other(labels, &f.who.cluster_uid)?;
    if f.annotation(ADOPT_FROM) == Some(other.as_str()) {
        return None;
    }
    let message = format!(
        "the twin {remote_object} was written by another app cluster (kube-system uid {other}) with the same cluster \
         id {}: two app clusters must not share one. The twin is left alone. Give one of them another --cluster-id; \
         or, if this app cluster replaced that one, adopt its twins with `claimsync restore --adopt-from-cluster-uid \
         {other}`",
        f.who.cluster_id
    );
    let mut step = stop(f, Reason::NameConflict, message.clone(), true, Then::Resync);
    // Said on the twin too, so that the other app cluster hears it on its own claim (it mirrors Events about its
    // twin); nothing of the twin itself is changed.
    if let Step::Finish(outcome) = &mut step
        && !outcome.say.is_empty()
    {
        outcome.say.push(Say::on(On::Twin, "TwinContested", message));
    }
    Some(step)
}

/// What is said once the twin is applied: the control plane's edit reverted, or its delete undone.
fn apply_said(f: &Facts, exists: bool, intent_hash: &str) -> Option<Say> {
    let remote_object = f.remote_object();
    let synced_before = f.record.and_then(|r| r.spec_hash_up.as_deref()) == Some(intent_hash);
    let vanished = !exists && f.record.is_some_and(|r| r.remote_uid.is_some());
    if exists && synced_before {
        let message = format!("the remote claim {remote_object} was edited on the control plane; the local spec wins");
        Some(Say::on(On::Claim, "RemoteDriftReverted", message))
    } else if vanished {
        let message = format!("the remote claim {remote_object} was deleted on the control plane; recreated it");
        Some(Say::on(On::Claim, "RemoteRecreated", message))
    } else {
        None
    }
}

/// The control plane did not take the twin: refused for good (shown, retried at the resync), refused for now
/// (shown, retried with backoff), or not reached (retried with backoff; a lasting outage is the link's to say).
fn refused(f: &Facts, failure: &ApplyFailure, intent: &Value) -> Step {
    let Some(code) = failure.code else {
        return finish(Outcome {
            then: Then::Retry,
            ..Outcome::default()
        });
    };
    let for_good = refused_for_good(code);
    let message = if for_good {
        format!("the control plane refused the claim: {}", failure.message)
    } else {
        // Not allowed (401/403), not found (404, e.g. a namespace or CRD on its way), throttled: these pass.
        format!(
            "the control plane did not take the claim, retrying: {}",
            failure.message
        )
    };
    let say = if for_good {
        vec![Say::on(On::Claim, "RemoteRejected", message.clone())]
    } else {
        Vec::new()
    };
    finish(Outcome {
        phase: Some(Phase::of(Some(Reason::Error.as_str()), false)),
        pending: Some(Pending {
            remote_name: f.remote_name(),
            patch: pending_patch(f.record.and_then(|r| r.last_intent.as_ref()), intent),
            error: Some(message.clone()),
        }),
        say,
        show: Some(Replicated::new(Reason::Error, message)),
        record: None,
        release: false,
        then: if for_good { Then::Resync } else { Then::Retry },
    })
}

/// Whether the control plane's answer to an apply refuses the claim's content, so that the same content would be
/// refused again: 4xx, but not 401/403 (credentials, RBAC on its way), 404 (a namespace or CRD on its way), 409 or
/// 429.
fn refused_for_good(code: u16) -> bool {
    (400..500).contains(&code) && !matches!(code, 401 | 403 | 404 | 409 | 429)
}

/// Whether the twin already carries the intent: known from the journal when its version is the one claimsync
/// last saw, otherwise by comparing content, and by the fields claimsync set that the intent no longer has (a field
/// the user removed, still there remotely). Those removals do not count once this very intent was written (the
/// journal says so): nulling what the last write left would change nothing.
fn in_place(twin: &Value, intent: &Value, intent_hash: &str, record: Option<&ClaimRecord>, local: &Value) -> bool {
    let version = twin["metadata"]["resourceVersion"].as_str();
    let written = record.is_some_and(|r| r.spec_hash_up.as_deref() == Some(intent_hash));
    if written
        && record
            .is_some_and(|r| r.remote_resource_version.is_some() && r.remote_resource_version.as_deref() == version)
    {
        return true;
    }
    let content = is_subset(&intent["spec"], &twin["spec"])
        && is_subset(&intent["metadata"]["labels"], &twin["metadata"]["labels"])
        && is_subset(&intent["metadata"]["annotations"], &twin["metadata"]["annotations"]);
    content && (written || ours(twin).is_none_or(|owned| removed(twin, &owned, intent, local).is_none()))
}

/// What claimsync's up manager owns on the twin (by create, merge patch or, before, server-side apply); `None` when
/// it owns nothing there (a twin it never wrote).
fn ours(twin: &Value) -> Option<Value> {
    owned_fields(twin, |m| m == MANAGER_UP).filter(|owned| owned.as_object().is_some_and(|o| !o.is_empty()))
}

/// The merge patch that makes `twin` carry `intent`: the intent's spec, labels and annotations, and nulls for what
/// claimsync set that the intent no longer has. Fields others set are kept (a merge patch merges maps; lists are
/// replaced whole, as a server-side apply of claim fields replaces them).
fn twin_patch(twin: &Value, owned: &Value, intent: &Value, local: &Value) -> Value {
    let mut patch = json!({"metadata": {}, "spec": intent["spec"].clone()});
    for part in ["labels", "annotations"] {
        if let Some(map) = intent["metadata"].get(part) {
            patch["metadata"][part] = map.clone();
        }
    }
    if let Some(nulls) = removed(twin, owned, intent, local) {
        merge_into(&mut patch, nulls);
    }
    patch
}

/// What claimsync's up manager set on the twin (`owned`) that the intent no longer has, as nulls of a merge patch.
/// Not what the local claim still has at the same value: the intent leaves out policies the identical CRDs default
/// alike, which the twin's create came to own.
fn removed(twin: &Value, owned: &Value, intent: &Value, local: &Value) -> Option<Value> {
    let mut nulls = json!({});
    if let Some(spec) = removals(&owned["f:spec"], &intent["spec"], &twin["spec"], &local["spec"]) {
        nulls["spec"] = spec;
    }
    for part in ["labels", "annotations"] {
        let key = format!("f:{part}");
        if let Some(map) = removals(
            &owned["f:metadata"][&key],
            &intent["metadata"][part],
            &twin["metadata"][part],
            &local["metadata"][part],
        ) {
            nulls["metadata"][part] = map;
        }
    }
    nulls.as_object().is_some_and(|n| !n.is_empty()).then_some(nulls)
}

/// Whether resource version `seen` is older than `known`. Kubernetes calls resource versions opaque; the
/// kube-apiserver's are etcd revisions, so they compare as numbers, and whatever does not parse is not called older
/// (the caller then trusts what it has).
pub fn older(seen: Option<&str>, known: Option<&str>) -> bool {
    match (
        seen.and_then(|s| s.parse::<u64>().ok()),
        known.and_then(|k| k.parse::<u64>().ok()),
    ) {
        (Some(seen), Some(known)) => seen < known,
        _ => false,
    }
}

/// The journal record of a claim whose change waits to go up: the record before (a claim never replicated gets a
/// record of its own) with the claim's version, what waits and why. The same wait said again keeps its record as it
/// was, time included, so that the journal does not write it (every claim is looked at when the link flips).
pub fn pending_record(before: Option<&ClaimRecord>, claim: &Value, pending: &Pending, now_unix: u64) -> ClaimRecord {
    let metadata = &claim["metadata"];
    let mut record = before.cloned().unwrap_or_else(|| ClaimRecord {
        local_uid: metadata["uid"].as_str().unwrap_or_default().to_string(),
        remote_name: pending.remote_name.clone(),
        ..ClaimRecord::default()
    });
    record.local_resource_version = metadata["resourceVersion"].as_str().unwrap_or_default().to_string();
    record.pending_patch = (change_count(&pending.patch) > 0).then(|| pending.patch.clone());
    record.last_error = pending.error.clone();
    if before != Some(&record) {
        record.updated_unix = now_unix;
    }
    record
}
