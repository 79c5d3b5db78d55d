//! Reconciling one live local claim: its finalizer, its twin applied up (or a name conflict shown), the
//! connection Secret and status brought down, and the journal record of what was synced.

use std::time::{Duration, Instant};

use claimsync_state::{ClaimKey, ClaimRecord, content_hash};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::cleanup::{self, set_finalizer};
use super::kind_context::{KindContext, now, older, unix_now};
use super::secret::{self, SecretCopy};
use super::status::{event, record_phase, show, write_down};
use crate::error::{Error, KubeContext, Side};
use crate::model::conditions::{Reason, Replicated, replicated_of};
use crate::model::downward::{is_shown, local_down};
use crate::model::fields::{field_set, is_subset, owned_fields, same_fields};
use crate::model::link::{Down, LinkState};
use crate::model::naming::{is_twin, remote_claim_name, written_by_other};
use crate::model::pending::{change_count, describe, pending_patch};
use crate::model::secret::{Owner, SecretOutcome};
use crate::model::upward::{RemoteTarget, remote_intent, unsupported_field};
use crate::model::vocabulary::{ADOPT_FROM, MANAGER_UP};
use crate::sync::offer::kind_withdrawing;

/// How often an in-sync claim is looked at again even without a change on either side (give or take a tenth, so
/// that claims reconciled together at start are not all looked at again at one moment).
const RESYNC: Duration = Duration::from_secs(600);

/// How long a claim whose cached version is older than claimsync's own last write to it waits for the cache, and
/// how recent that write must be for the wait (an app cluster restored from a backup has older versions for good).
const CACHE_CATCH_UP: Duration = Duration::from_secs(5);

/// The resync delay of one claim: [`RESYNC`] with a random tenth added or taken away.
pub(super) fn resync() -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let tenth = RESYNC.as_millis() as u64 / 10;
    RESYNC - Duration::from_millis(tenth) + Duration::from_millis(random % (2 * tenth + 1))
}

/// Replicates one live local claim.
pub(super) async fn sync(kctx: &KindContext, claim: &DynamicObject) -> Result<Action, Error> {
    let ctx = &kctx.ctx;
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let object = format!("{} {namespace}/{name}", kctx.resource.kind);
    let key = kctx.key(&namespace, &name);
    let record = ctx.journal.claim(&key).unwrap_or_else(|e| {
        warn!(error = %e, "journal unreadable for this claim; resyncing from the clusters");
        None
    });
    // This claim's own last writes made it newer than the cache holds (its watch event is on its way, and with it
    // another reconcile): writing from the older version would only be refused (409) and retried. Only for a record
    // written in the last seconds: an app cluster restored from a backup has older versions for good, and a record
    // from a clock that was ahead must not hold the claim until this clock catches up.
    if let Some(record) = &record
        && record.local_uid == claim.uid().unwrap_or_default()
        && unix_now()
            .checked_sub(record.updated_unix)
            .is_some_and(|age| age < CACHE_CATCH_UP.as_secs())
        && older(
            claim.resource_version().as_deref(),
            Some(record.local_resource_version.as_str()),
        )
    {
        return Ok(Action::requeue(CACHE_CATCH_UP));
    }
    // Every later write back into the claim is conditional on the version held here.
    let mut claim = claim.clone();
    if !cleanup::held_by_us(kctx, &claim) {
        claim = set_finalizer(kctx, &claim, true).await?;
    }
    let claim = &claim;
    let local = serde_json::to_value(claim).map_err(|e| Error::Invalid {
        object: object.clone(),
        message: e.to_string(),
    })?;

    let remote_name = remote_claim_name(&name, &namespace, &ctx.cluster_id);
    let remote_object = format!("{}/{remote_name}", ctx.claim_namespace);

    if let Some((field, why)) = unsupported_field(&local) {
        let message = format!("{field} is not replicated: {why}; the claim is not sent to the control plane");
        if replicated_of(&local).map(|(_, r)| r) != Some(Reason::Unsupported.as_str().into()) {
            event(kctx, claim, EventType::Warning, Reason::Unsupported.as_str(), &message).await;
        }
        show(kctx, claim, &local, Replicated::new(Reason::Unsupported, message)).await?;
        return Ok(Action::requeue(resync()));
    }

    let target = RemoteTarget {
        api_version: &kctx.resource.api_version,
        kind: &kctx.resource.kind,
        remote_name: &remote_name,
        claim_namespace: &ctx.claim_namespace,
        cluster_id: &ctx.cluster_id,
        cluster_uid: &ctx.cluster_uid,
    };
    let intent = remote_intent(&local, &target);
    let intent_hash = content_hash(&intent);

    // Offline: nothing goes up; what waits is recorded and said, and the last known status stays. The link's return
    // reconciles every claim again.
    if let LinkState::Down { why, reason } = ctx.link_state() {
        let pending = pending_patch(record.as_ref().and_then(|r| r.last_intent.as_ref()), &intent);
        let waits = describe(&pending).map(|w| format!("; {w}")).unwrap_or_default();
        remember_pending(kctx, &key, claim, &remote_name, pending, None)?;
        let (reason_shown, message) = match why {
            Down::Unreachable => (
                Reason::ControlPlaneUnreachable,
                format!("the control plane is unreachable ({reason}); showing the last known status{waits}"),
            ),
            Down::CredentialsRejected => (
                Reason::CredentialsRejected,
                format!("{reason}; showing the last known status{waits}"),
            ),
        };
        show(kctx, claim, &local, Replicated::new(reason_shown, message)).await?;
        return Ok(Action::await_change());
    }

    if kctx.withdrawn {
        let message = format!(
            "the control plane no longer offers {}; the claim is kept but not replicated",
            kctx.resource.kind
        );
        show(kctx, claim, &local, Replicated::new(Reason::KindWithdrawn, message)).await?;
        return Ok(Action::await_change());
    }
    let known_version = record.as_ref().and_then(|r| r.remote_resource_version.as_deref());
    let remote = kctx.twin(&remote_name, known_version).await?;
    if let Some(remote) = &remote {
        let labels = serde_json::to_value(remote.labels()).unwrap_or(Value::Null);
        if !is_twin(&labels, &ctx.cluster_id, &namespace, &name) {
            let message = format!(
                "the control plane already has a claim {remote_object} that is not this claim's twin; it is left alone"
            );
            if replicated_of(&local).map(|(_, r)| r) != Some("NameConflict".into()) {
                event(kctx, claim, EventType::Warning, "NameConflict", &message).await;
            }
            show(kctx, claim, &local, Replicated::new(Reason::NameConflict, message)).await?;
            return Ok(Action::requeue(resync()));
        }
        if let Some(other) = written_by_other(&labels, &ctx.cluster_uid)
            && claim.annotations().get(ADOPT_FROM) != Some(&other)
        {
            let message = format!(
                "the twin {remote_object} was written by another app cluster (kube-system uid {other}) with the same \
                 cluster id {}: two app clusters must not share one. The twin is left alone. Give one of them another \
                 --cluster-id; or, if this app cluster replaced that one, adopt its twins with `claimsync restore \
                 --adopt-from-cluster-uid {other}`",
                ctx.cluster_id
            );
            if replicated_of(&local).map(|(_, r)| r) != Some("NameConflict".into()) {
                event(kctx, claim, EventType::Warning, "NameConflict", &message).await;
                // Said on the twin too, so that the other app cluster hears it on its own claim (it mirrors Events
                // about its twin); nothing of the twin itself is changed.
                kctx.remote_event(remote, "TwinContested", &message).await;
            }
            show(kctx, claim, &local, Replicated::new(Reason::NameConflict, message)).await?;
            return Ok(Action::requeue(resync()));
        }
    }

    // Checked on every pass, twin or not: while Crossplane takes a kind away it deletes the claims itself (so a
    // vanished twin must not be recreated), and its claims may hang until the XRD is gone.
    if kind_withdrawing(&kctx.ctx, &kctx.kind).await? {
        let message = format!(
            "the control plane is withdrawing {}; the claim is kept but not replicated",
            kctx.resource.kind
        );
        show(kctx, claim, &local, Replicated::new(Reason::KindWithdrawn, message)).await?;
        return Ok(Action::requeue(resync()));
    }
    let remote = match remote {
        Some(remote) if remote_in_place(&remote, &intent, &intent_hash, record.as_ref()) => remote,
        existing => {
            let drifted =
                existing.is_some() && record.as_ref().and_then(|r| r.spec_hash_up.as_deref()) == Some(&intent_hash);
            let vanished = existing.is_none() && record.as_ref().is_some_and(|r| r.remote_uid.is_some());
            let started = Instant::now();
            let applied = kctx
                .remote
                .patch(
                    &remote_name,
                    &PatchParams::apply(MANAGER_UP).force(),
                    &Patch::Apply(&intent),
                )
                .await
                .context(Side::ControlPlane, "apply claim", &remote_object);
            if applied.is_ok() {
                ctx.metrics.synced("up", started.elapsed());
            }
            let applied = match applied {
                Ok(applied) => applied,
                Err(e) if e.status_code().is_some_and(refused_for_good) => {
                    // The control plane refused the claim itself: retrying the same content would not help.
                    let message = format!("the control plane refused the claim: {e}");
                    let pending = pending_patch(record.as_ref().and_then(|r| r.last_intent.as_ref()), &intent);
                    remember_pending(kctx, &key, claim, &remote_name, pending, Some(message.clone()))?;
                    event(kctx, claim, EventType::Warning, "RemoteRejected", &message).await;
                    show(kctx, claim, &local, Replicated::new(Reason::Error, message)).await?;
                    return Ok(Action::requeue(resync()));
                }
                Err(e) if e.status_code().is_some() => {
                    // Not allowed (401/403), not found (404, e.g. a namespace or CRD on its way), throttled: shown,
                    // and retried with backoff; these pass.
                    let message = format!("the control plane did not take the claim, retrying: {e}");
                    let pending = pending_patch(record.as_ref().and_then(|r| r.last_intent.as_ref()), &intent);
                    remember_pending(kctx, &key, claim, &remote_name, pending, Some(message.clone()))?;
                    show(kctx, claim, &local, Replicated::new(Reason::Error, message)).await?;
                    return Err(e);
                }
                // Unreachable: retried with backoff; if it lasts, the link is declared down and every claim says so.
                Err(e) => return Err(e),
            };
            if drifted {
                let message =
                    format!("the remote claim {remote_object} was edited on the control plane; the local spec wins");
                event(kctx, claim, EventType::Warning, "RemoteDriftReverted", &message).await;
            } else if vanished {
                let message =
                    format!("the remote claim {remote_object} was deleted on the control plane; recreated it");
                event(kctx, claim, EventType::Warning, "RemoteRecreated", &message).await;
            } else {
                info!(remote = %remote_object, "applied claim to the control plane");
            }
            applied
        }
    };

    let uid = claim.uid().unwrap_or_default();
    let twin_uid = remote.uid().unwrap_or_default();
    let secret_name = local["spec"]["writeConnectionSecretToRef"]["name"].as_str();
    let copy = SecretCopy {
        remote_name: &remote_name,
        twin_uid: &twin_uid,
        local_name: secret_name,
        namespace: &namespace,
        owner: Owner {
            api_version: &kctx.resource.api_version,
            kind: &kctx.resource.kind,
            name: &name,
            uid: &uid,
        },
    };
    let local_secrets = Api::<Secret>::namespaced(ctx.local.clone(), &namespace);
    // A Secret the claim asked for under another name before (or no longer asks for) goes; only looked for when
    // the name differs from the journal's (and so once after the journal was lost).
    if record.as_ref().and_then(|r| r.secret_name_down.as_deref()) != secret_name {
        for stale in secret::remove_stale(&local_secrets, &copy).await? {
            info!(secret = %stale, "removed a connection Secret the claim no longer asks for");
        }
    }
    let outcome = secret::sync(&ctx.caches, &kctx.remote_secrets, &local_secrets, &copy).await?;
    let condition = match &outcome {
        SecretOutcome::Conflict { name: secret } => {
            let message = format!(
                "Secret {namespace}/{secret} exists and is not this claim's; delete or rename it, or change spec.writeConnectionSecretToRef.name"
            );
            if replicated_of(&local).map(|(_, r)| r) != Some("SecretConflict".into()) {
                event(kctx, claim, EventType::Warning, "SecretConflict", &message).await;
            }
            Replicated::new(Reason::SecretConflict, message)
        }
        SecretOutcome::RemoteNotOwned { name: secret } => {
            let message = format!(
                "Secret {}/{secret} on the control plane was not written by Crossplane for this claim's twin (its \
                 controller is not the twin); it is not copied",
                ctx.claim_namespace
            );
            if replicated_of(&local).map(|(_, r)| r) != Some(Reason::RemoteSecretConflict.as_str().into()) {
                event(
                    kctx,
                    claim,
                    EventType::Warning,
                    Reason::RemoteSecretConflict.as_str(),
                    &message,
                )
                .await;
            }
            Replicated::new(Reason::RemoteSecretConflict, message)
        }
        _ => Replicated::new(
            Reason::Synced,
            format!("replicated to {remote_object} on the control plane"),
        ),
    };

    let remote_json = serde_json::to_value(&remote).unwrap_or(Value::Null);
    let down = local_down(&local, &remote_json, &condition, &now());
    record_phase(kctx, claim, &condition);
    let mut local_version = claim.resource_version().unwrap_or_default();
    if !is_shown(&local, &down) {
        let started = Instant::now();
        if let Some(written) = write_down(&kctx.local(&namespace), claim, &local, &down).await? {
            local_version = written;
        }
        ctx.metrics.synced("down", started.elapsed());
    }

    let secret_hash = match outcome {
        SecretOutcome::InPlace { hash, .. } => Some(hash),
        _ => None,
    };
    let status_hash = content_hash(&json!({"spec": down.spec, "annotations": down.annotations, "status": down.status}));
    let synced = ClaimRecord {
        local_uid: uid.clone(),
        local_resource_version: local_version,
        remote_name: remote_name.clone(),
        remote_uid: remote.uid(),
        remote_resource_version: remote.resource_version(),
        spec_hash_up: Some(intent_hash),
        last_intent: Some(intent),
        status_hash_down: Some(status_hash),
        secret_hash_down: secret_hash,
        secret_name_down: secret_name.map(str::to_string),
        last_status: Some(down.status),
        pending_patch: None,
        last_error: None,
        updated_unix: unix_now(),
    };
    // A resync that only confirms what the journal says writes nothing (10,000 claims after a restart would be
    // 10,000 journal writes); `updated_unix` therefore tells when something last changed.
    if record.as_ref().is_none_or(|old| !old.says_the_same(&synced)) {
        ctx.journal.put_claim(&key, &synced)?;
    }
    Ok(Action::requeue(resync()))
}

/// Records in the journal what waits to go up for a claim (and why, when an attempt failed), keeping the rest of
/// its record; a claim never replicated gets a record of its own.
fn remember_pending(
    kctx: &KindContext,
    key: &ClaimKey,
    claim: &DynamicObject,
    remote_name: &str,
    pending: Value,
    error: Option<String>,
) -> Result<(), Error> {
    kctx.ctx.journal.update_claim(key, |record| {
        let before = record.clone();
        let mut record = record.unwrap_or_else(|| ClaimRecord {
            local_uid: claim.uid().unwrap_or_default(),
            remote_name: remote_name.to_string(),
            ..ClaimRecord::default()
        });
        record.local_resource_version = claim.resource_version().unwrap_or_default();
        record.pending_patch = (change_count(&pending) > 0).then(|| pending.clone());
        record.last_error = error.clone();
        // The same wait said again (every claim is looked at when the link flips) keeps its record as it was, which
        // the journal then does not write.
        if before.as_ref() != Some(&record) {
            record.updated_unix = unix_now();
        }
        Some(record)
    })?;
    Ok(())
}

/// Whether the control plane's answer to an apply refuses the claim's content, so that the same content would be
/// refused again: 4xx, but not 401/403 (credentials, RBAC on its way), 404 (a namespace or CRD on its way), 409 or
/// 429.
fn refused_for_good(code: u16) -> bool {
    (400..500).contains(&code) && !matches!(code, 401 | 403 | 404 | 409 | 429)
}

/// Whether the remote claim already carries the intent: known from the journal when its version is the one
/// claimsync last saw, otherwise by comparing content and claimsync's managed fields (so a field the user
/// removed, still owned remotely by claimsync, is not mistaken for in place).
fn remote_in_place(remote: &DynamicObject, intent: &Value, intent_hash: &str, record: Option<&ClaimRecord>) -> bool {
    if let Some(record) = record
        && record.spec_hash_up.as_deref() == Some(intent_hash)
        && record.remote_resource_version.is_some()
        && record.remote_resource_version == remote.resource_version()
    {
        return true;
    }
    let remote = serde_json::to_value(remote).unwrap_or(Value::Null);
    let content = is_subset(&intent["spec"], &remote["spec"])
        && is_subset(&intent["metadata"]["labels"], &remote["metadata"]["labels"])
        && is_subset(&intent["metadata"]["annotations"], &remote["metadata"]["annotations"]);
    let Some(owned) = owned_fields(&remote, |m| m == MANAGER_UP) else {
        return false;
    };
    let owned_labels = &owned["f:metadata"]["f:labels"];
    let owned_annotations = &owned["f:metadata"]["f:annotations"];
    content
        && same_fields(&field_set(&intent["spec"]), &owned["f:spec"])
        && same_fields(&field_set(&intent["metadata"]["labels"]), owned_labels)
        && same_fields(&field_set(&intent["metadata"]["annotations"]), owned_annotations)
}
