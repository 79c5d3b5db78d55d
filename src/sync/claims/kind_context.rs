//! What the reconciles of one claim kind share: the context, the kind as kube-rs addresses it, the remote APIs of
//! the claim namespace, and the clock and key helpers every reconcile file uses. No reconcile logic here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use claimsync_state::ClaimKey;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};

use kube::runtime::reflector::ObjectRef;

use super::arrivals::Arrivals;
use crate::error::{Error, KubeContext, Side, absent_if_not_found};
use crate::model::kind::ClaimKind;
use crate::model::notes::bounded_note;
use crate::model::plan::{Identity, KindFacts, older, rules_of};
use crate::sync::caches::{CACHE_WAIT, Cache};
use crate::sync::context::Context;

/// A local claim as the controller's queue names it.
pub(super) type ClaimRef = ObjectRef<DynamicObject>;

/// Which local claim each twin name stands for, as the twins' watch last said.
pub(super) type Origins = Arc<Mutex<HashMap<String, ClaimRef>>>;

/// What every reconcile of one kind shares: the context, the kind, and the remote APIs of the claim namespace.
pub(crate) struct KindContext {
    pub ctx: Arc<Context>,
    pub kind: ClaimKind,
    /// The kind as kube-rs addresses it.
    pub resource: ApiResource,
    pub remote: Api<DynamicObject>,
    pub remote_secrets: Api<Secret>,
    /// The twins of this kind this claimsync wrote (label-selected), kept by the controller's watch.
    pub twins: Cache<DynamicObject>,
    /// When each claim's oldest unhandled change arrived.
    pub arrivals: Arrivals,
    /// Which local claim each twin name stands for (the twins' watch fills it; Secret changes read it).
    pub origins: Origins,
    /// The kind and this claimsync as the planner sees them.
    pub facts: KindFacts,
    pub who: Identity,
}

impl KindContext {
    pub fn new(ctx: Arc<Context>, kind: ClaimKind, withdrawn: bool, twins: Cache<DynamicObject>) -> Self {
        let resource = api_resource(&kind);
        let remote = Api::namespaced_with(ctx.remote.clone(), &ctx.claim_namespace, &resource);
        let remote_secrets = Api::namespaced(ctx.remote.clone(), &ctx.claim_namespace);
        let facts = KindFacts {
            rules: rules_of(kind.family),
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
            crd_name: kind.crd_name.clone(),
            withdrawn,
        };
        let who = Identity {
            cluster_id: ctx.cluster_id.clone(),
            cluster_uid: ctx.cluster_uid.clone(),
            claim_namespace: ctx.claim_namespace.clone(),
            instance: ctx.instance.clone(),
        };
        KindContext {
            ctx,
            kind,
            resource,
            remote,
            remote_secrets,
            twins,
            arrivals: Arrivals::default(),
            origins: Origins::default(),
            facts,
            who,
        }
    }

    /// Reports the sizes of the kind's maps keyed by claims or twins (`claimsync_tracked_entries`, summed over
    /// kinds) for as long as the kind runs.
    pub fn track_maps(self: &Arc<Self>) {
        let metrics = &self.ctx.metrics;
        metrics.track_map("twin_origins", &self.origins);
        let kctx = Arc::downgrade(self);
        metrics.track("change_arrivals", move || kctx.upgrade().map(|k| k.arrivals.len()));
    }

    /// The twin at `name`, from the watch cache when it holds it at least as new as `known_version` (the version
    /// this claimsync last wrote or saw), or none when the cache holds none and no version is known (a new claim);
    /// else from the API server: a twin the cache does not hold though claimsync wrote one (deleted remotely, or
    /// its labels changed), or a cache that has not caught up with claimsync's own write.
    pub async fn twin(&self, name: &str, known_version: Option<&str>) -> Result<Option<DynamicObject>, Error> {
        if self.twins.ready_within(CACHE_WAIT).await {
            let cached = self
                .twins
                .store
                .get(&ObjectRef::new_with(name, self.resource.clone()).within(&self.ctx.claim_namespace));
            match cached {
                Some(twin) if !older(twin.resource_version().as_deref(), known_version) => {
                    return Ok(Some((*twin).clone()));
                }
                // Not in the cache, and this claimsync never wrote one (no version known): none of this cluster's.
                // An object of someone else's at the name is not in the cache; the twin is then created, which
                // fails on a taken name and reads what it finds. A new claim costs no read.
                None if known_version.is_none() => return Ok(None),
                _ => {}
            }
        }
        self.get_remote(name).await
    }

    /// The remote claim at `name` in the claim namespace, if any; also `None` while the kind is not served there.
    pub async fn get_remote(&self, name: &str) -> Result<Option<DynamicObject>, Error> {
        let object = format!("{}/{name}", self.ctx.claim_namespace);
        absent_if_not_found(self.remote.get(name).await).context(Side::ControlPlane, "get claim", object)
    }

    /// Publishes a Warning Event about a twin on the control plane (where the app cluster that owns the twin, if
    /// another one, mirrors it onto its claim); a failure to do so is only logged.
    pub async fn remote_event(&self, twin: &DynamicObject, reason: &str, note: &str) {
        let reporter = Reporter {
            controller: "claimsync".into(),
            instance: Some(self.ctx.cluster_uid.clone()),
        };
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(bounded_note(note)),
            action: "Replicate".into(),
            secondary: None,
        };
        let recorder = Recorder::new(self.ctx.remote.clone(), reporter);
        if let Err(e) = recorder.publish(&event, &twin.object_ref(&self.resource)).await {
            tracing::warn!(error = %e, reason, "could not publish an Event on the control plane");
        }
    }

    pub fn local(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.ctx.local.clone(), namespace, &self.resource)
    }

    /// The journal's key of a claim of this kind; it is also the key of its retries and of the in-sync tracker,
    /// so the same name in two kinds is two claims.
    pub fn key(&self, namespace: &str, name: &str) -> ClaimKey {
        ClaimKey::new(&self.kind.group, &self.kind.kind, namespace, name)
    }

    pub fn key_of(&self, claim: &DynamicObject) -> ClaimKey {
        self.key(&claim.namespace().unwrap_or_default(), &claim.name_any())
    }
}

/// A claim kind as kube-rs addresses it.
pub fn api_resource(kind: &ClaimKind) -> ApiResource {
    ApiResource {
        group: kind.group.clone(),
        version: kind.version.clone(),
        api_version: kind.api_version(),
        kind: kind.kind.clone(),
        plural: kind.plural.clone(),
    }
}

pub(crate) fn now() -> String {
    Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_else(|_| Timestamp::now())
        .to_string()
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn claim_key(claim: &DynamicObject) -> String {
    format!("{}/{}", claim.namespace().unwrap_or_default(), claim.name_any())
}
