//! The planner: every decision of one claim's reconcile, as a pure function from what is known of the claim (its
//! local object, its twin, its journal record, the link, claimsync's identity, its family's rules) to the next
//! step. The executor in `sync/claims` reads and writes; it asks [`next`] again after each step with what it
//! learned, and does nothing the planner did not say. No I/O, no clock, no randomness here.

mod family;
mod release;
mod replicate;
mod secret;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;
use std::time::Duration;

use claimsync_state::{ClaimRecord, content_hash};
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

use crate::model::conditions::{Replicated, replicated_of};
use crate::model::downward::LocalDown;
use crate::model::link::LinkState;
use crate::model::phase::Phase;
use crate::model::upward::RemoteTarget;
use crate::model::vocabulary::{FINALIZER, REPLICATED_BY};

pub use self::family::{Claims, Family, NamespacedXrs, rules_of};
pub use self::replicate::{CACHE_CATCH_UP, older, pending_record};

/// Who this claimsync is: what names every twin and marks every claim it holds.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub cluster_id: String,
    /// The app cluster's kube-system uid, written on twins beside the cluster id.
    pub cluster_uid: String,
    pub claim_namespace: String,
    /// claimsync's own namespace in the app cluster, written beside its finalizer on every claim it holds.
    pub instance: String,
}

/// The kind of a claim as the planner knows it: its names, its family's rules, and whether the control plane still
/// offered it when its controller started.
pub struct KindFacts {
    pub rules: &'static dyn Family,
    pub api_version: String,
    pub kind: String,
    /// The name of the kind's CRD (the same in both clusters).
    pub crd_name: String,
    pub withdrawn: bool,
}

/// Everything the planner may look at. The executor fills the first part before it asks; the second part starts
/// empty (`None`, `false`) and is filled with the result of each step the planner asked for.
pub struct Facts<'a> {
    pub kind: &'a KindFacts,
    pub who: &'a Identity,
    pub namespace_selected: bool,
    pub link: &'a LinkState,
    /// Now, as unix seconds and as an RFC 3339 timestamp for conditions.
    pub now_unix: u64,
    pub now: &'a str,
    pub record: Option<&'a ClaimRecord>,
    /// The local claim as JSON, as last read, or as claimsync's finalizer write returned it (see
    /// [`Facts::claim_written`]).
    pub claim: Value,
    /// What the planner derived from the claim and the twin, kept for the rest of the pass.
    memo: Memo,

    /// The twin at the claim's remote name (`Some(None)`: there is none).
    pub twin: Option<Option<Value>>,
    /// Whether the control plane is taking the kind away (its claim CRD or XRD gone or going).
    pub withdrawing: Option<bool>,
    /// What the control plane answered to the twin's apply.
    pub applied: Option<Result<Value, ApplyFailure>>,
    /// The Secrets claimsync made in the claim's namespace.
    pub made_secrets: Option<Vec<Secret>>,
    pub stale_secrets_removed: bool,
    /// The connection Secret at the twin's name on the control plane.
    pub remote_secret: Option<Option<Secret>>,
    /// The local Secret at the name the claim asks for.
    pub local_secret: Option<Option<Secret>>,
    pub secret_written: bool,
    /// The claim's resource version after claimsync wrote its down-state.
    pub written_down: Option<String>,
    /// Whether the claim's local CRD is gone or being deleted.
    pub local_crd_going: Option<bool>,
    pub twin_delete_sent: bool,
}

impl<'a> Facts<'a> {
    /// The facts before any step: nothing learned yet.
    pub fn new(
        kind: &'a KindFacts,
        who: &'a Identity,
        claim: Value,
        record: Option<&'a ClaimRecord>,
        link: &'a LinkState,
        now: (u64, &'a str),
    ) -> Self {
        Facts {
            kind,
            who,
            namespace_selected: true,
            link,
            now_unix: now.0,
            now: now.1,
            record,
            claim,
            memo: Memo::default(),
            twin: None,
            withdrawing: None,
            applied: None,
            made_secrets: None,
            stale_secrets_removed: false,
            remote_secret: None,
            local_secret: None,
            secret_written: false,
            written_down: None,
            local_crd_going: None,
            twin_delete_sent: false,
        }
    }

    /// The claim as claimsync's own write returned it: what was derived from the claim before is derived again.
    pub fn claim_written(&mut self, claim: Value) {
        self.claim = claim;
        self.memo = Memo::default();
    }

    /// The twin this claim wants and its content hash: computed once a pass (the planner is asked after each
    /// step, and the claim changes only by claimsync's own finalizer write, which resets it).
    fn intent(&self, remote_name: &str) -> &(Value, String) {
        self.memo.intent.get_or_init(|| {
            let target = RemoteTarget {
                api_version: &self.kind.api_version,
                kind: &self.kind.kind,
                remote_name,
                claim_namespace: &self.who.claim_namespace,
                cluster_id: &self.who.cluster_id,
                cluster_uid: &self.who.cluster_uid,
            };
            let intent = self.kind.rules.remote_intent(&self.claim, &target);
            let hash = content_hash(&intent);
            (intent, hash)
        })
    }

    fn name(&self) -> &str {
        self.claim["metadata"]["name"].as_str().unwrap_or_default()
    }

    fn namespace(&self) -> &str {
        self.claim["metadata"]["namespace"].as_str().unwrap_or_default()
    }

    fn uid(&self) -> &str {
        self.claim["metadata"]["uid"].as_str().unwrap_or_default()
    }

    fn resource_version(&self) -> Option<&str> {
        self.claim["metadata"]["resourceVersion"].as_str()
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.claim["metadata"]["annotations"][key].as_str()
    }

    fn deleting(&self) -> bool {
        self.claim["metadata"]["deletionTimestamp"].is_string()
    }

    fn has_finalizer(&self) -> bool {
        self.claim["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
    }

    /// Whether this claimsync holds the claim: its finalizer, put there by this claimsync (not another one that
    /// replicates other namespaces of the same app cluster).
    pub fn held_by_us(&self) -> bool {
        self.has_finalizer() && self.annotation(REPLICATED_BY) == Some(self.who.instance.as_str())
    }

    fn remote_name(&self) -> String {
        self.kind
            .rules
            .remote_name(self.name(), self.namespace(), &self.who.cluster_id)
    }

    /// `namespace/name` of the twin on the control plane.
    fn remote_object(&self) -> String {
        format!("{}/{}", self.who.claim_namespace, self.remote_name())
    }

    /// Whether the claim already shows `reason` (so an Event about it was already published).
    fn shows(&self, reason: &str) -> bool {
        replicated_of(&self.claim).is_some_and(|(_, shown)| shown == reason)
    }
}

/// Values the planner derives from facts that stay the same for the rest of a pass.
#[derive(Default)]
struct Memo {
    intent: OnceLock<(Value, String)>,
    /// Whether the twin as read carries the intent (the twin is read once a pass).
    in_place: OnceLock<bool>,
}

/// The control plane's answer to an apply that did not succeed.
#[derive(Clone, Debug, PartialEq)]
pub struct ApplyFailure {
    /// The HTTP status, if the API server answered at all.
    pub code: Option<u16>,
    /// The error as claimsync reports it.
    pub message: String,
}

/// How the twin is written: the cheapest request that leaves claimsync owning what it set (a create or a merge
/// patch cost the control plane less than a server-side apply of the same content; measured by `e2e/bench --steps`).
#[derive(Debug, PartialEq)]
pub enum TwinWrite {
    /// Create it (POST).
    Create,
    /// Merge-patch it with this body.
    Patch(Value),
    /// Server-side apply the intent: a twin claimsync never wrote (the MCP Connector's, or one whose managed fields
    /// were cleared), so that claimsync's entry comes to own every field of the intent, as after its own create
    /// (`claimsync restore` gives back what claimsync's entries own). Once per adopted twin.
    Apply,
}

/// What the executor does next.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Add claimsync's finalizer and the annotation naming this claimsync (conditional on the resource version);
    /// then ask again with the claim as written.
    Hold,
    /// Read the twin: from the watch cache when it holds `known_version` or newer, else from the control plane.
    ReadTwin {
        name: String,
        known_version: Option<String>,
    },
    /// Ask the catalog whether the control plane is taking the kind away.
    ReadWithdrawing,
    /// Write the twin as claimsync's up manager; on success, say `then_say` (else log the write). `Create` when no
    /// twin was seen (the watch cache holds every twin of this cluster, so nothing was read): a create fails on a
    /// name that is taken (someone else's object), which is read instead. `Patch` otherwise: a JSON merge patch
    /// carrying the intent and nulling the fields claimsync set that the intent no longer has.
    WriteTwin {
        intent: Value,
        then_say: Vec<Say>,
        how: TwinWrite,
    },
    /// List the Secrets claimsync made in the claim's namespace.
    ListMadeSecrets,
    /// Delete local Secrets the claim no longer asks for.
    DeleteSecrets { names: Vec<String> },
    /// Read the twin's connection Secret on the control plane.
    ReadRemoteSecret { name: String },
    /// Read the local Secret at the name the claim asks for.
    ReadLocalSecret { name: String },
    /// Server-side apply the local connection Secret as claimsync's down manager.
    ApplySecret { name: String, secret: Value },
    /// Write Crossplane's spec fields and the status into the local claim, conditional on its resource version.
    WriteDown { down: LocalDown },
    /// Read the claim's local CRD.
    ReadLocalCrd,
    /// Delete the twin on the control plane.
    DeleteTwin { name: String },
    /// Nothing more to read or learn: carry these out in order and end the reconcile.
    Finish(Box<Outcome>),
}

/// The last writes of a reconcile and how it ends, carried out in the order of the fields.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// The phase the metrics show for the claim.
    pub phase: Option<Phase>,
    /// What waits to go up, recorded in the journal (see [`pending_record`]).
    pub pending: Option<Pending>,
    /// Events to publish (and log).
    pub say: Vec<Say>,
    /// The `Replicated` condition to set, keeping the rest of the status.
    pub show: Option<Replicated>,
    /// The journal record of what was synced, when it says something new.
    pub record: Option<ClaimRecord>,
    /// Let go of the claim: its journal record and metrics go, and its finalizer is removed.
    pub release: bool,
    pub then: Then,
}

/// What waits to go up for a claim, and why when an attempt failed.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub remote_name: String,
    pub patch: Value,
    pub error: Option<String>,
}

/// Something said about the claim: an Event, or a log line only.
#[derive(Clone, Debug, PartialEq)]
pub struct Say {
    pub on: On,
    pub reason: String,
    pub message: String,
}

/// Where a [`Say`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    /// A Warning Event on the local claim.
    Claim,
    /// A Warning Event on the twin (which the app cluster that owns it mirrors onto its claim).
    Twin,
    /// claimsync's log only.
    Log,
}

impl Say {
    fn on(on: On, reason: &str, message: impl Into<String>) -> Self {
        Say {
            on,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// How a reconcile ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Then {
    /// Look again at the periodic resync (jittered by the executor).
    Resync,
    Requeue(Duration),
    /// Wait for a change of the claim, its twin or the link.
    #[default]
    AwaitChange,
    /// Fail with the error of the last step, to be retried with backoff.
    Retry,
}

/// How long a deleting claim waits before it looks at its twin again (Crossplane may hold a twin until its
/// composite is gone).
pub const TWIN_DELETE_POLL: Duration = Duration::from_secs(2);

/// The next step for a claim.
pub fn next(facts: &Facts) -> Step {
    if !facts.namespace_selected {
        return release::deselected(facts);
    }
    if facts.deleting() {
        return release::deleting(facts);
    }
    replicate::live(facts)
}

fn finish(outcome: Outcome) -> Step {
    Step::Finish(Box::new(outcome))
}
