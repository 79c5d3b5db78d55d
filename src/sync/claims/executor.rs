//! The executor of a claim's plan: it gathers what the planner needs (the claim, its journal record, the link),
//! asks `model::plan::next`, carries each step out with the guards of the API (resource-version preconditions,
//! claimsync's field managers) and hands the result back, until the planner says how the reconcile ends. It
//! decides nothing itself; every rule is in `model::plan`.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::Value;
use tracing::{info, warn};

use super::finalizer::set_finalizer;
use super::kind_context::{KindContext, now, unix_now};
use super::runner::Requeue;
use super::secret;
use super::status::{event, show, write_down};
use crate::error::{Error, KubeContext, Side};
use crate::model::plan::{self, ApplyFailure, Facts, On, Outcome, Say, Step, Then, TwinWrite, pending_record};
use crate::model::vocabulary::MANAGER_UP;
use crate::sync::offer::kind_withdrawing;

/// How often an in-sync claim is looked at again even without a change on either side (give or take a tenth, so
/// that claims reconciled together at start are not all looked at again at one moment).
const RESYNC: Duration = Duration::from_secs(600);

/// More steps than any plan takes: a planner that keeps asking is a bug, reported instead of looping.
const MAX_STEPS: usize = 32;

/// Carries out the plan of one claim.
pub(super) async fn run(kctx: &KindContext, claim: &DynamicObject) -> Result<Requeue, Error> {
    let key = kctx.key_of(claim);
    let record = kctx.ctx.journal.claim(&key).unwrap_or_else(|e| {
        warn!(error = %e, "journal unreadable for this claim; resyncing from the clusters");
        None
    });
    let link = kctx.ctx.link_state();
    let now = now();
    let mut claim = claim.clone();
    let mut facts = Facts::new(
        &kctx.facts,
        &kctx.who,
        as_json(&claim)?,
        record.as_ref(),
        &link,
        (unix_now(), &now),
    );
    facts.namespace_selected = kctx.ctx.namespace_selected(&claim.namespace().unwrap_or_default());
    // The error of a failed apply, returned if the plan ends in a retry.
    let mut failed = None;
    for _ in 0..MAX_STEPS {
        match plan::next(&facts) {
            Step::Finish(outcome) => return finish(kctx, &facts, claim, *outcome, failed).await,
            Step::Hold => {
                claim = set_finalizer(kctx, &claim, true).await?;
                facts.claim_written(as_json(&claim)?);
            }
            Step::WriteTwin { intent, then_say, how } => {
                let creating = how == TwinWrite::Create;
                match write_twin(kctx, &intent, how).await {
                    Ok(twin) => {
                        if then_say.is_empty() {
                            info!(twin = %twin.name_any(), "wrote claim to the control plane");
                        }
                        for said in &then_say {
                            say(kctx, &claim, &facts, said).await;
                        }
                        facts.applied = Some(Ok(as_json(&twin)?));
                    }
                    // The name is taken (by an object this cluster's twin cache does not hold), or the twin went
                    // since the cache saw it: read it, and the planner decides again with what is there.
                    Err(e) if (creating && e.is_conflict()) || (!creating && e.status_code() == Some(404)) => {
                        let name = intent["metadata"]["name"].as_str().unwrap_or_default();
                        let found = kctx.get_remote(name).await?;
                        facts.twin = Some(found.as_ref().map(as_json).transpose()?);
                    }
                    Err(e) => {
                        facts.applied = Some(Err(ApplyFailure {
                            code: e.status_code(),
                            message: e.to_string(),
                        }));
                        failed = Some(e);
                    }
                }
            }
            Step::WriteDown { down } => {
                let started = Instant::now();
                let api = kctx.local(&claim.namespace().unwrap_or_default());
                let written = write_down(&api, &claim, &facts.claim, &down).await?;
                kctx.ctx.metrics.synced("down", started.elapsed());
                facts.written_down = Some(written.unwrap_or_else(|| claim.resource_version().unwrap_or_default()));
            }
            step => read(kctx, &mut facts, step).await?,
        }
    }
    Err(Error::Object {
        object: key.to_string(),
        problem: format!("the plan took more than {MAX_STEPS} steps; giving up on this pass"),
    })
}

/// Carries out a step that reads, or writes something other than the claim and its twin, and notes its result.
async fn read(kctx: &KindContext, facts: &mut Facts<'_>, step: Step) -> Result<(), Error> {
    let namespace = facts.claim["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let local_secrets = Api::<Secret>::namespaced(kctx.ctx.local.clone(), &namespace);
    match step {
        Step::ReadTwin { name, known_version } => {
            let twin = kctx.twin(&name, known_version.as_deref()).await?;
            facts.twin = Some(twin.as_ref().map(as_json).transpose()?);
        }
        Step::ReadWithdrawing => facts.withdrawing = Some(kind_withdrawing(&kctx.ctx, &kctx.kind).await?),
        Step::ListMadeSecrets => facts.made_secrets = Some(secret::list_made(&local_secrets, &namespace).await?),
        Step::DeleteSecrets { names } => {
            secret::delete(&local_secrets, &namespace, &names).await?;
            facts.stale_secrets_removed = true;
        }
        Step::ReadRemoteSecret { name } => {
            let found = secret::read_remote(&kctx.ctx.caches, &kctx.remote_secrets, &name).await?;
            facts.remote_secret = Some(found);
        }
        Step::ReadLocalSecret { name } => {
            let found = secret::read_local(&kctx.ctx.caches, &local_secrets, &namespace, &name).await?;
            facts.local_secret = Some(found);
        }
        Step::ApplySecret { name, secret } => {
            secret::apply(&local_secrets, &namespace, &name, &secret).await?;
            facts.secret_written = true;
        }
        Step::ReadLocalCrd => {
            let crd_name = &kctx.kind.crd_name;
            let crd = Api::<CustomResourceDefinition>::all(kctx.ctx.local.clone())
                .get_opt(crd_name)
                .await
                .context(Side::App, "get CRD", crd_name)?;
            facts.local_crd_going = Some(crd.is_none_or(|crd| crd.metadata.deletion_timestamp.is_some()));
        }
        Step::DeleteTwin { name } => {
            let object = format!("{}/{name}", kctx.ctx.claim_namespace);
            kctx.remote.delete(&name, &DeleteParams::default()).await.context(
                Side::ControlPlane,
                "delete claim",
                &object,
            )?;
            info!(remote = %object, "deleting the remote claim");
            facts.twin_delete_sent = true;
        }
        Step::Hold | Step::WriteTwin { .. } | Step::WriteDown { .. } | Step::Finish(_) => {
            unreachable!("carried out by run")
        }
    }
    Ok(())
}

/// Writes the twin as claimsync's up manager: creates it (failing with a conflict, with no read before, on a name
/// that is taken), merge-patches it, or (a twin claimsync never wrote) applies it.
async fn write_twin(kctx: &KindContext, intent: &Value, how: TwinWrite) -> Result<DynamicObject, Error> {
    let name = intent["metadata"]["name"].as_str().unwrap_or_default();
    let object = format!("{}/{name}", kctx.ctx.claim_namespace);
    let started = Instant::now();
    let written = match how {
        TwinWrite::Create => {
            let twin: DynamicObject = serde_json::from_value(intent.clone()).map_err(|e| Error::Object {
                object: object.clone(),
                problem: format!("the twin to create is not an object: {e}"),
            })?;
            let params = PostParams {
                field_manager: Some(MANAGER_UP.into()),
                ..PostParams::default()
            };
            kctx.remote
                .create(&params, &twin)
                .await
                .context(Side::ControlPlane, "create claim", &object)?
        }
        TwinWrite::Apply => kctx
            .remote
            .patch(name, &PatchParams::apply(MANAGER_UP).force(), &Patch::Apply(intent))
            .await
            .context(Side::ControlPlane, "apply claim", &object)?,
        TwinWrite::Patch(patch) => {
            let params = PatchParams {
                field_manager: Some(MANAGER_UP.into()),
                ..PatchParams::default()
            };
            kctx.remote.patch(name, &params, &Patch::Merge(&patch)).await.context(
                Side::ControlPlane,
                "patch claim",
                &object,
            )?
        }
    };
    kctx.ctx.metrics.synced("up", started.elapsed());
    Ok(written)
}

/// Carries out the last writes of a plan, in order, and ends the reconcile as it says.
async fn finish(
    kctx: &KindContext,
    facts: &Facts<'_>,
    mut claim: DynamicObject,
    outcome: Outcome,
    failed: Option<Error>,
) -> Result<Requeue, Error> {
    let key = kctx.key_of(&claim);
    if let Some(phase) = outcome.phase {
        kctx.ctx.metrics.set_phase(&key.to_string(), &kctx.kind.kind, phase);
    }
    if let Some(pending) = &outcome.pending {
        kctx.ctx.journal.update_claim(&key, |before| {
            Some(pending_record(before.as_ref(), &facts.claim, pending, facts.now_unix))
        })?;
    }
    for said in &outcome.say {
        say(kctx, &claim, facts, said).await;
    }
    if let Some(condition) = &outcome.show {
        let api = kctx.local(&claim.namespace().unwrap_or_default());
        if let Some(written) = show(&api, &claim, &facts.claim, condition).await? {
            claim = written;
        }
    }
    if let Some(record) = &outcome.record {
        kctx.ctx.journal.put_claim(&key, record)?;
    }
    if outcome.release {
        kctx.ctx.journal.remove_claim(&key)?;
        set_finalizer(kctx, &claim, false).await?;
        kctx.ctx.metrics.forget(&key.to_string());
    }
    match outcome.then {
        Then::Resync => Ok(Some(resync())),
        Then::Requeue(after) => Ok(Some(after)),
        Then::AwaitChange => Ok(None),
        Then::Retry => Err(failed.unwrap_or_else(|| Error::Object {
            object: key.to_string(),
            problem: "the plan asked for a retry without a failed step".into(),
        })),
    }
}

/// Publishes what the plan says: an Event on the claim or its twin, or a log line.
async fn say(kctx: &KindContext, claim: &DynamicObject, facts: &Facts<'_>, said: &Say) {
    match said.on {
        On::Claim => event(kctx, claim, &said.reason, &said.message).await,
        On::Twin => match facts
            .twin
            .clone()
            .flatten()
            .map(serde_json::from_value::<DynamicObject>)
        {
            Some(Ok(twin)) => kctx.remote_event(&twin, &said.reason, &said.message).await,
            _ => warn!(reason = %said.reason, "no twin to say this on: {}", said.message),
        },
        On::Log => info!(reason = %said.reason, "{}", said.message),
    }
}

/// A claim or twin as the JSON the planner reads.
fn as_json(object: &DynamicObject) -> Result<Value, Error> {
    serde_json::to_value(object).map_err(|e| Error::Json {
        object: format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any()),
        source: e,
    })
}

/// The resync delay of one claim: [`RESYNC`] with a random tenth added or taken away.
fn resync() -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let tenth = RESYNC.as_millis() as u64 / 10;
    RESYNC - Duration::from_millis(tenth) + Duration::from_millis(random % (2 * tenth + 1))
}
