//! The claim controller of one kind: its watches (local claims, remote twins, remote Secrets), the per-kind
//! context, and the entry of each reconcile, which hands a live claim to `reconcile.rs` and a deleted one to
//! `cleanup.rs`. The rules are the pure functions of `model`; these files do the I/O.

mod cleanup;
mod kind_context;
mod reconcile;
mod secret;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use self::kind_context::{KindContext, api_resource, claim_key};
use crate::context::Context;
use crate::error::Error;
use crate::model::kind::ClaimKind;
use crate::model::naming::origin_of;
use crate::model::vocabulary::ORIGIN_CLUSTER;

/// Starts the controller of one claim kind; it runs until the returned task is aborted.
pub async fn start(ctx: Arc<Context>, kind: ClaimKind) -> JoinHandle<()> {
    let resource = api_resource(&kind);
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
    info!(kind = %kind.kind, version = %kind.api_version(), "claim controller started");
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
    warn!(kind = %kctx.kind.kind, claim = %key, error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile(claim: Arc<DynamicObject>, kctx: Arc<KindContext>) -> Result<Action, Error> {
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let key = format!("{namespace}/{name}");
    let span = info_span!("claim", kind = %kctx.kind.kind, key = %key);
    let result = async {
        // Namespaces outside the selector are another instance's business, deletions included.
        if !kctx.ctx.namespace_selected(&namespace) {
            return Ok(Action::await_change());
        }
        if claim.meta().deletion_timestamp.is_some() {
            return cleanup::cleanup(&kctx, &claim).await;
        }
        reconcile::sync(&kctx, &claim).await
    }
    .instrument(span)
    .await;
    if result.is_ok() {
        kctx.ctx.succeeded(&key);
        kctx.ctx.sync.done(&key);
    }
    result
}
