//! The claim controller of one kind: per local claim, the remote twin applied up, the status, Crossplane's spec
//! fields and the connection Secret copied down, a finalizer that deletes remotely, and the `Replicated` condition.
//! The decisions are the pure functions of upward.rs, downward.rs and secrets.rs; this file does the I/O.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use claimsync_state::{ClaimKey, ClaimRecord, content_hash};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::catalog::ClaimKind;
use crate::conditions::{Reason, Replicated, replicated_of, with_replicated};
use crate::context::Context;
use crate::downward::{LocalDown, is_shown, local_down, spec_shown};
use crate::error::{Error, KubeContext, Side};
use crate::events::bounded_note;
use crate::fields::{field_set, is_subset, owned_fields, same_fields};
use crate::naming::{ORIGIN_CLUSTER, is_twin, origin_of, remote_claim_name};
use crate::secrets::{self, Owner, SecretOutcome};
use crate::upward::{MANAGER_DOWN, MANAGER_UP, RemoteTarget, remote_intent};

/// Held by every local claim that has (or may have) a remote twin: a pending remote delete.
pub const FINALIZER: &str = "claimsync.dev/remote-claim";
/// `Orphan` leaves the remote claim in place when the local one is deleted.
pub const DELETION_POLICY: &str = "claimsync.dev/deletion-policy";
/// How often an in-sync claim is looked at again even without a change on either side.
const RESYNC: Duration = Duration::from_secs(600);

struct KindContext {
    ctx: Arc<Context>,
    kind: ClaimKind,
    remote: Api<DynamicObject>,
    remote_secrets: Api<Secret>,
}

impl KindContext {
    fn new(ctx: Arc<Context>, kind: ClaimKind) -> Self {
        let remote = Api::namespaced_with(ctx.remote.clone(), &ctx.claim_namespace, &kind.resource);
        let remote_secrets = Api::namespaced(ctx.remote.clone(), &ctx.claim_namespace);
        KindContext {
            ctx,
            kind,
            remote,
            remote_secrets,
        }
    }

    fn local(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.ctx.local.clone(), namespace, &self.kind.resource)
    }

    fn key(&self, namespace: &str, name: &str) -> ClaimKey {
        ClaimKey::new(&self.kind.resource.group, &self.kind.resource.kind, namespace, name)
    }
}

/// Starts the controller of one claim kind; it runs until the returned task is aborted.
pub async fn start(ctx: Arc<Context>, kind: ClaimKind) -> JoinHandle<()> {
    let resource = kind.resource.clone();
    let local_all = Api::<DynamicObject>::all_with(ctx.local.clone(), &resource);
    let existing = local_all
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let selected = existing
        .iter()
        .filter(|c| ctx.namespace_selected(&c.namespace().unwrap_or_default()));
    ctx.sync.expect(selected.map(claim_key));
    let kctx = Arc::new(KindContext::new(ctx.clone(), kind.clone()));
    let remote = kctx.remote.clone();

    // A change of a remote claim (or of its Secret, which bears the remote claim's name) reconciles the local
    // claim it was made for. The claim watch lists every remote claim first, so the name index is complete.
    let origins: Arc<Mutex<HashMap<String, ObjectRef<DynamicObject>>>> = Arc::default();
    let selector = format!("{ORIGIN_CLUSTER}={}", ctx.cluster_id);
    let (cluster_id, ar, index) = (ctx.cluster_id.clone(), resource.clone(), origins.clone());
    let claim_mapper = move |remote: DynamicObject| {
        let target = local_ref(&remote, &cluster_id, &ar);
        if let Some(target) = &target {
            index
                .lock()
                .expect("origin index")
                .insert(remote.name_any(), target.clone());
        }
        target
    };
    let secret_mapper = move |secret: Secret| origins.lock().expect("origin index").get(&secret.name_any()).cloned();

    let config = controller::Config::default().concurrency(ctx.concurrency);
    let controller = Controller::new_with(local_all, watcher::Config::default(), resource.clone())
        .with_config(config)
        .watches_with(
            remote,
            resource,
            watcher::Config::default().labels(&selector),
            claim_mapper,
        )
        .watches(
            Api::<Secret>::namespaced(ctx.remote.clone(), &ctx.claim_namespace),
            watcher::Config::default(),
            secret_mapper,
        )
        .run(reconcile, error_policy, kctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "claim reconcile");
            }
        });
    info!(kind = %kind.resource.kind, version = %kind.resource.api_version, "claim controller started");
    tokio::spawn(controller)
}

fn local_ref(
    remote: &DynamicObject,
    cluster_id: &str,
    ar: &kube::api::ApiResource,
) -> Option<ObjectRef<DynamicObject>> {
    let labels = serde_json::to_value(remote.labels()).ok()?;
    let (namespace, name) = origin_of(&labels, cluster_id)?;
    Some(ObjectRef::new_with(&name, ar.clone()).within(&namespace))
}

fn error_policy(claim: Arc<DynamicObject>, error: &Error, kctx: Arc<KindContext>) -> Action {
    let key = claim_key(&claim);
    let delay = kctx.ctx.next_retry(&key);
    warn!(kind = %kctx.kind.resource.kind, claim = %key, error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile(claim: Arc<DynamicObject>, kctx: Arc<KindContext>) -> Result<Action, Error> {
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let key = format!("{namespace}/{name}");
    let span = info_span!("claim", kind = %kctx.kind.resource.kind, key = %key);
    let result = async {
        // Namespaces outside the selector are another instance's business, deletions included.
        if !kctx.ctx.namespace_selected(&namespace) {
            return Ok(Action::await_change());
        }
        if claim.meta().deletion_timestamp.is_some() {
            return cleanup(&kctx, &claim).await;
        }
        sync(&kctx, &claim).await
    }
    .instrument(span)
    .await;
    if result.is_ok() {
        kctx.ctx.succeeded(&key);
        kctx.ctx.sync.done(&key);
    }
    result
}

fn now() -> String {
    Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_else(|_| Timestamp::now())
        .to_string()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Replicates one live local claim.
async fn sync(kctx: &KindContext, claim: &DynamicObject) -> Result<Action, Error> {
    let ctx = &kctx.ctx;
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let object = format!("{} {namespace}/{name}", kctx.kind.resource.kind);
    let local = serde_json::to_value(claim).map_err(|e| Error::Invalid {
        object: object.clone(),
        message: e.to_string(),
    })?;
    let local_api = kctx.local(&namespace);
    if !claim.finalizers().iter().any(|f| f == FINALIZER) {
        set_finalizer(&local_api, claim, true).await?;
    }

    let remote_name = remote_claim_name(&name, &namespace, &ctx.cluster_id);
    let remote_object = format!("{}/{remote_name}", ctx.claim_namespace);
    let key = kctx.key(&namespace, &name);
    let record = ctx.journal.claim(&key).unwrap_or_else(|e| {
        warn!(error = %e, "journal unreadable for this claim; resyncing from the clusters");
        None
    });

    let remote = match kctx
        .remote
        .get_opt(&remote_name)
        .await
        .context(Side::ControlPlane, "get claim", &remote_object)
    {
        Ok(remote) => remote,
        Err(e) => return Err(told_if_unreachable(kctx, claim, &local, e).await),
    };
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
            return Ok(Action::requeue(RESYNC));
        }
    }

    let target = RemoteTarget {
        api_version: &kctx.kind.resource.api_version,
        kind: &kctx.kind.resource.kind,
        remote_name: &remote_name,
        claim_namespace: &ctx.claim_namespace,
        cluster_id: &ctx.cluster_id,
    };
    let intent = remote_intent(&local, &target);
    let intent_hash = content_hash(&intent);
    // Checked on every pass, twin or not: while Crossplane takes a kind away it deletes the claims itself (so a
    // vanished twin must not be recreated), and its claims may hang until the XRD is gone.
    if kind_withdrawing(kctx).await? {
        let message = format!(
            "the control plane is withdrawing {}; the claim is kept but not replicated",
            kctx.kind.resource.kind
        );
        show(kctx, claim, &local, Replicated::new(Reason::KindWithdrawn, message)).await?;
        return Ok(Action::requeue(RESYNC));
    }
    let remote = match remote {
        Some(remote) if remote_in_place(&remote, &intent, &intent_hash, record.as_ref()) => remote,
        existing => {
            let drifted =
                existing.is_some() && record.as_ref().and_then(|r| r.spec_hash_up.as_deref()) == Some(&intent_hash);
            let vanished = existing.is_none() && record.as_ref().is_some_and(|r| r.remote_uid.is_some());
            let applied = kctx
                .remote
                .patch(
                    &remote_name,
                    &PatchParams::apply(MANAGER_UP).force(),
                    &Patch::Apply(&intent),
                )
                .await
                .context(Side::ControlPlane, "apply claim", &remote_object);
            let applied = match applied {
                Ok(applied) => applied,
                Err(e)
                    if e.status_code()
                        .is_some_and(|c| (400..500).contains(&c) && c != 409 && c != 429) =>
                {
                    // The control plane refused the claim: retrying the same content would not help.
                    let message = format!("the control plane refused the claim: {e}");
                    event(kctx, claim, EventType::Warning, "RemoteRejected", &message).await;
                    show(kctx, claim, &local, Replicated::new(Reason::Error, message)).await?;
                    return Ok(Action::requeue(RESYNC));
                }
                Err(e) => return Err(told_if_unreachable(kctx, claim, &local, e).await),
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
    let owner = Owner {
        api_version: &kctx.kind.resource.api_version,
        kind: &kctx.kind.resource.kind,
        name: &name,
        uid: &uid,
    };
    let secret_name = local["spec"]["writeConnectionSecretToRef"]["name"].as_str();
    let local_secrets = Api::<Secret>::namespaced(ctx.local.clone(), &namespace);
    let outcome = secrets::sync(
        &kctx.remote_secrets,
        &local_secrets,
        &remote_name,
        secret_name,
        &namespace,
        &owner,
    )
    .await?;
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
        _ => Replicated::new(
            Reason::Synced,
            format!("replicated to {remote_object} on the control plane"),
        ),
    };

    let remote_json = serde_json::to_value(&remote).unwrap_or(Value::Null);
    let down = local_down(&local, &remote_json, &condition, &now());
    if !is_shown(&local, &down) {
        write_down(&local_api, claim, &local, &down).await?;
    }

    let secret_hash = match outcome {
        SecretOutcome::InPlace { hash, .. } => Some(hash),
        _ => None,
    };
    let status_hash = content_hash(&json!({"spec": down.spec, "annotations": down.annotations, "status": down.status}));
    ctx.journal.put_claim(
        &key,
        &ClaimRecord {
            local_uid: claim.uid().unwrap_or_default(),
            local_resource_version: claim.resource_version().unwrap_or_default(),
            remote_name: remote_name.clone(),
            remote_uid: remote.uid(),
            remote_resource_version: remote.resource_version(),
            spec_hash_up: Some(intent_hash),
            status_hash_down: Some(status_hash),
            secret_hash_down: secret_hash,
            last_status: Some(down.status),
            updated_unix: unix_now(),
        },
    )?;
    Ok(Action::requeue(RESYNC))
}

/// Whether the control plane is taking this kind away: its claim CRD, or the XRD that owns it, is gone or being
/// deleted. Crossplane then deletes every claim of the kind itself, and recreating them would fight it.
async fn kind_withdrawing(kctx: &KindContext) -> Result<bool, Error> {
    let crd_name = &kctx.kind.crd_name;
    let crds = Api::<CustomResourceDefinition>::all(kctx.ctx.remote.clone());
    let Some(crd) = crds
        .get_opt(crd_name)
        .await
        .context(Side::ControlPlane, "get CRD", crd_name)?
    else {
        return Ok(true);
    };
    if crd.metadata.deletion_timestamp.is_some() {
        return Ok(true);
    }
    let xrd = crd
        .owner_references()
        .iter()
        .find(|o| o.kind == "CompositeResourceDefinition")
        .map(|o| o.name.clone());
    let Some(xrd) = xrd else { return Ok(false) };
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.crossplane.io", "v1", "CompositeResourceDefinition"),
        "compositeresourcedefinitions",
    );
    let xrds = Api::<DynamicObject>::all_with(kctx.ctx.remote.clone(), &resource);
    let xrd = xrds.get_opt(&xrd).await.context(Side::ControlPlane, "get XRD", &xrd)?;
    Ok(xrd.is_none_or(|x| x.metadata.deletion_timestamp.is_some()))
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

/// Writes the down-state into the local claim (`local` is `claim` as JSON): Crossplane's spec fields and
/// annotations, then the status.
async fn write_down(
    local_api: &Api<DynamicObject>,
    claim: &DynamicObject,
    local: &Value,
    down: &LocalDown,
) -> Result<(), Error> {
    let name = claim.name_any();
    if !spec_shown(local, down) {
        let types = claim.types.clone().unwrap_or_default();
        let mut patch =
            json!({"apiVersion": types.api_version, "kind": types.kind, "metadata": {"name": name}, "spec": down.spec});
        if !down.annotations.is_empty() {
            patch["metadata"]["annotations"] = Value::Object(down.annotations.clone());
        }
        local_api
            .patch(&name, &PatchParams::apply(MANAGER_DOWN).force(), &Patch::Apply(&patch))
            .await
            .context(Side::App, "apply Crossplane's spec fields to claim", claim_key(claim))?;
    }
    if local["status"] != down.status {
        apply_status(local_api, claim, &down.status, "apply status to claim").await?;
    }
    Ok(())
}

/// Server-side applies a local claim's whole status as claimsync's down manager.
async fn apply_status(
    local_api: &Api<DynamicObject>,
    claim: &DynamicObject,
    status: &Value,
    action: &'static str,
) -> Result<(), Error> {
    let types = claim.types.clone().unwrap_or_default();
    let name = claim.name_any();
    let patch =
        json!({"apiVersion": types.api_version, "kind": types.kind, "metadata": {"name": name}, "status": status});
    local_api
        .patch_status(&name, &PatchParams::apply(MANAGER_DOWN).force(), &Patch::Apply(&patch))
        .await
        .context(Side::App, action, claim_key(claim))?;
    Ok(())
}

fn claim_key(claim: &DynamicObject) -> String {
    format!("{}/{}", claim.namespace().unwrap_or_default(), claim.name_any())
}

/// Shows `ControlPlaneUnreachable` on the claim when `error` is the control plane not answering, keeping the
/// last known status; hands back the error to retry on (or the failure to show it).
async fn told_if_unreachable(kctx: &KindContext, claim: &DynamicObject, local: &Value, error: Error) -> Error {
    if !error.is_unreachable(Side::ControlPlane) {
        return error;
    }
    let message = format!("the control plane is unreachable ({error}); showing the last known status");
    match show(
        kctx,
        claim,
        local,
        Replicated::new(Reason::ControlPlaneUnreachable, message),
    )
    .await
    {
        Ok(()) => error,
        Err(shown) => shown,
    }
}

/// Sets only the `Replicated` condition, keeping the rest of the status (the last known remote status).
async fn show(kctx: &KindContext, claim: &DynamicObject, local: &Value, cond: Replicated) -> Result<(), Error> {
    let status = with_replicated(&local["status"], &cond, &now());
    if status == local["status"] {
        return Ok(());
    }
    let local_api = kctx.local(&claim.namespace().unwrap_or_default());
    apply_status(&local_api, claim, &status, "set Replicated condition on claim").await
}

/// Adds or removes claimsync's finalizer, guarded by the resource version so no concurrent change is lost.
async fn set_finalizer(local_api: &Api<DynamicObject>, claim: &DynamicObject, present: bool) -> Result<(), Error> {
    let mut finalizers: Vec<String> = claim.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    if present {
        finalizers.push(FINALIZER.to_string());
    }
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": claim.resource_version()}});
    let params = PatchParams {
        field_manager: Some(MANAGER_DOWN.to_string()),
        ..PatchParams::default()
    };
    local_api
        .patch(&claim.name_any(), &params, &Patch::Merge(&patch))
        .await
        .context(Side::App, "set finalizer on claim", claim_key(claim))?;
    Ok(())
}

/// A local claim being deleted: delete its remote twin (unless orphaned), and release the finalizer once it is gone.
async fn cleanup(kctx: &KindContext, claim: &DynamicObject) -> Result<Action, Error> {
    if !claim.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let ctx = &kctx.ctx;
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let remote_name = remote_claim_name(&name, &namespace, &ctx.cluster_id);
    let remote_object = format!("{}/{remote_name}", ctx.claim_namespace);
    let orphan = claim.annotations().get(DELETION_POLICY).is_some_and(|p| p == "Orphan");
    if !orphan {
        let remote =
            match kctx
                .remote
                .get_opt(&remote_name)
                .await
                .context(Side::ControlPlane, "get claim", &remote_object)
            {
                Ok(remote) => remote,
                Err(e) => {
                    let local = serde_json::to_value(claim).unwrap_or(Value::Null);
                    return Err(told_if_unreachable(kctx, claim, &local, e).await);
                }
            };
        if let Some(remote) = remote {
            let labels = serde_json::to_value(remote.labels()).unwrap_or(Value::Null);
            if is_twin(&labels, &ctx.cluster_id, &namespace, &name) {
                if remote.meta().deletion_timestamp.is_none() {
                    kctx.remote
                        .delete(&remote_name, &DeleteParams::default())
                        .await
                        .context(Side::ControlPlane, "delete claim", &remote_object)?;
                    info!(remote = %remote_object, "deleting the remote claim");
                }
                // Crossplane may hold the remote claim until its composite is gone (Foreground).
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
        }
    } else {
        info!(remote = %remote_object, "deletion policy Orphan: the remote claim stays");
    }
    ctx.journal.remove_claim(&kctx.key(&namespace, &name))?;
    set_finalizer(&kctx.local(&namespace), claim, false).await?;
    Ok(Action::await_change())
}

/// Sets `cond` as the `Replicated` condition of every local claim of a kind (in the selected namespaces),
/// keeping the rest of their status.
pub async fn mark_all(ctx: &Arc<Context>, kind: &ClaimKind, cond: &Replicated) -> Result<(), Error> {
    let all = Api::<DynamicObject>::all_with(ctx.local.clone(), &kind.resource);
    let claims = all
        .list(&ListParams::default())
        .await
        .context(Side::App, "list claims", &kind.resource.plural)?;
    let claims = claims
        .items
        .into_iter()
        .filter(|c| ctx.namespace_selected(&c.namespace().unwrap_or_default()));
    let kctx = KindContext::new(ctx.clone(), kind.clone());
    for mut claim in claims {
        if claim.meta().deletion_timestamp.is_some() {
            continue;
        }
        claim.types.get_or_insert_with(|| kube::api::TypeMeta {
            api_version: kind.resource.api_version.clone(),
            kind: kind.resource.kind.clone(),
        });
        let local = serde_json::to_value(&claim).unwrap_or(Value::Null);
        show(&kctx, &claim, &local, cond.clone()).await?;
    }
    Ok(())
}

/// Publishes an Event on the local claim; a failure to do so is only logged.
async fn event(kctx: &KindContext, claim: &DynamicObject, type_: EventType, reason: &str, note: &str) {
    let reference = claim.object_ref(&kctx.kind.resource);
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(bounded_note(note)),
        action: "Replicate".into(),
        secondary: None,
    };
    if let Err(e) = kctx.ctx.recorder.publish(&ev, &reference).await {
        warn!(error = %e, reason, "could not publish an Event");
    }
}
