//! The planner's rules, one row per behaviour as the README names it. Each row sets up a claim, its journal record
//! and a world (what a read or write would return), drives the planner to the end as the executor would, and
//! checks the steps it asked for and how the reconcile ends.

use claimsync_state::ClaimRecord;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

use super::*;
use crate::model::conditions::Reason;
use crate::model::link::Down;
use crate::model::vocabulary::{ADOPT_FROM, DELETION_POLICY, MANAGED_BY, ORIGIN_CLUSTER, ORIGIN_CLUSTER_UID};
use crate::model::vocabulary::{ORIGIN_NAME, ORIGIN_NAMESPACE};

const NOW: u64 = 1_000_000;

fn kind(withdrawn: bool, rules: &'static dyn Family) -> KindFacts {
    KindFacts {
        rules,
        api_version: "k8s.starter.org/v1alpha1".into(),
        kind: "KubernetesCluster".into(),
        crd_name: "kubernetesclusters.k8s.starter.org".into(),
        withdrawn,
    }
}

fn who() -> Identity {
    Identity {
        cluster_id: "app".into(),
        cluster_uid: "kube-system-uid".into(),
        claim_namespace: "claims".into(),
        instance: "claimsync".into(),
    }
}

fn twin_name() -> String {
    Claims.remote_name("demo", "team", "app")
}

/// A claim claimsync holds, asking for a connection Secret.
fn claim() -> Value {
    json!({
        "apiVersion": "k8s.starter.org/v1alpha1", "kind": "KubernetesCluster",
        "metadata": {"name": "demo", "namespace": "team", "uid": "u1", "resourceVersion": "10",
            "finalizers": [FINALIZER], "annotations": {REPLICATED_BY: "claimsync"}},
        "spec": {"id": "demo", "writeConnectionSecretToRef": {"name": "demo-conn"}}
    })
}

fn labels(cluster_uid: &str) -> Value {
    json!({ORIGIN_CLUSTER: "app", ORIGIN_CLUSTER_UID: cluster_uid, ORIGIN_NAMESPACE: "team", ORIGIN_NAME: "demo"})
}

fn secret(name: &str, controller_uid: &str, endpoint: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {MANAGED_BY: "claimsync"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "K", "name": "x", "uid": controller_uid, "controller": true}]},
        "type": crate::model::vocabulary::CONNECTION_SECRET_TYPE,
        "data": {"endpoint": endpoint}
    }))
    .unwrap()
}

/// The copy claimsync made for an earlier claim `team/demo` of the same kind (another uid).
fn earlier_claims_secret() -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": "demo-conn", "labels": {MANAGED_BY: "claimsync"},
            "ownerReferences": [{"apiVersion": "k8s.starter.org/v1alpha1", "kind": "KubernetesCluster",
                "name": "demo", "uid": "earlier-uid", "controller": true}]},
        "type": crate::model::vocabulary::CONNECTION_SECRET_TYPE,
        "data": {"endpoint": "aHR0cHM="}
    }))
    .unwrap()
}

/// What the clusters would answer to each step.
#[derive(Clone)]
struct World {
    twin: Option<Value>,
    withdrawing: bool,
    apply: Result<(), ApplyFailure>,
    remote_secret: Option<Secret>,
    local_secret: Option<Secret>,
    made_secrets: Vec<Secret>,
    local_crd_going: bool,
}

impl Default for World {
    fn default() -> Self {
        World {
            twin: None,
            withdrawing: false,
            apply: Ok(()),
            remote_secret: Some(secret(&twin_name(), "t1", "aHR0cHM=")),
            local_secret: None,
            made_secrets: Vec::new(),
            local_crd_going: false,
        }
    }
}

/// What a row starts from besides the world.
struct Start {
    claim: Value,
    record: Option<ClaimRecord>,
    link: LinkState,
    selected: bool,
    withdrawn: bool,
    rules: &'static dyn Family,
}

impl Default for Start {
    fn default() -> Self {
        Start {
            claim: claim(),
            record: None,
            link: LinkState::Up,
            selected: true,
            withdrawn: false,
            rules: &Claims,
        }
    }
}

/// The steps the planner asked for (by name) and the outcome it ended with.
struct Run {
    steps: Vec<&'static str>,
    writes: Vec<Step>,
    outcome: Outcome,
}

impl Run {
    fn shown(&self) -> Option<Reason> {
        self.outcome.show.as_ref().map(|c| c.reason)
    }

    fn said(&self) -> Vec<(On, &str)> {
        self.outcome.say.iter().map(|s| (s.on, s.reason.as_str())).collect()
    }

    /// The twin's apply this run asked for: its intent and what is said when it succeeds.
    fn applied(&self) -> (&Value, &[Say]) {
        self.writes
            .iter()
            .find_map(|w| match w {
                Step::WriteTwin { intent, then_say, .. } => Some((intent, then_say.as_slice())),
                _ => None,
            })
            .expect("the twin was applied")
    }

    fn write_down(&self) -> Option<&LocalDown> {
        self.writes.iter().find_map(|w| match w {
            Step::WriteDown { down } => Some(down),
            _ => None,
        })
    }
}

/// Drives the planner as the executor does, answering each step from `world`.
fn drive(start: Start, world: &World) -> Run {
    let kind = kind(start.withdrawn, start.rules);
    let who = who();
    let mut facts = Facts::new(
        &kind,
        &who,
        start.claim,
        start.record.as_ref(),
        &start.link,
        (NOW, "now"),
    );
    facts.namespace_selected = start.selected;
    let mut steps = Vec::new();
    let mut writes = Vec::new();
    for _ in 0..32 {
        let step = next(&facts);
        let name = match &step {
            Step::Finish(_) => "Finish",
            Step::Hold => "Hold",
            Step::ReadTwin { .. } => "ReadTwin",
            Step::ReadWithdrawing => "ReadWithdrawing",
            Step::WriteTwin { .. } => "WriteTwin",
            Step::ListMadeSecrets => "ListMadeSecrets",
            Step::DeleteSecrets { .. } => "DeleteSecrets",
            Step::ReadRemoteSecret { .. } => "ReadRemoteSecret",
            Step::ReadLocalSecret { .. } => "ReadLocalSecret",
            Step::ApplySecret { .. } => "ApplySecret",
            Step::WriteDown { .. } => "WriteDown",
            Step::ReadLocalCrd => "ReadLocalCrd",
            Step::DeleteTwin { .. } => "DeleteTwin",
        };
        steps.push(name);
        match &step {
            Step::Finish(_) => {
                let Step::Finish(outcome) = step else { unreachable!() };
                return Run {
                    steps,
                    writes,
                    outcome: *outcome,
                };
            }
            Step::Hold => {
                let mut held = facts.claim.clone();
                held["metadata"]["finalizers"] = json!([FINALIZER]);
                held["metadata"]["annotations"][REPLICATED_BY] = json!("claimsync");
                held["metadata"]["resourceVersion"] = json!("11");
                facts.claim_written(held);
            }
            Step::ReadTwin { .. } => facts.twin = Some(world.twin.clone()),
            Step::ReadWithdrawing => facts.withdrawing = Some(world.withdrawing),
            Step::WriteTwin { intent, .. } => {
                // A write gives the twin a version newer than the one read.
                let version = match facts.twin.clone().flatten() {
                    Some(twin) => {
                        twin["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap()
                            .parse::<u64>()
                            .unwrap()
                            + 1
                    }
                    None => 20,
                };
                facts.applied = Some(world.apply.clone().map(|()| {
                    let mut twin = intent.clone();
                    twin["metadata"]["uid"] = json!("t1");
                    twin["metadata"]["resourceVersion"] = json!(version.to_string());
                    twin
                }));
            }
            Step::ListMadeSecrets => facts.made_secrets = Some(world.made_secrets.clone()),
            Step::DeleteSecrets { .. } => facts.stale_secrets_removed = true,
            Step::ReadRemoteSecret { .. } => facts.remote_secret = Some(world.remote_secret.clone()),
            Step::ReadLocalSecret { .. } => facts.local_secret = Some(world.local_secret.clone()),
            Step::ApplySecret { .. } => facts.secret_written = true,
            Step::WriteDown { .. } => facts.written_down = Some("12".into()),
            Step::ReadLocalCrd => facts.local_crd_going = Some(world.local_crd_going),
            Step::DeleteTwin { .. } => facts.twin_delete_sent = true,
        }
        writes.push(step);
    }
    panic!("the planner did not finish: {steps:?}");
}

/// A claim and world in sync: what a new claim leaves behind, read again.
fn in_sync() -> (Start, World) {
    let world = World::default();
    let first = drive(Start::default(), &world);
    let record = first.outcome.record.clone().expect("a new claim is recorded");
    let down = first.write_down().expect("a new claim gets its status").clone();
    let mut claim = claim();
    claim["metadata"]["resourceVersion"] = json!("12");
    for (field, value) in down.spec {
        claim["spec"][field] = value;
    }
    claim["status"] = down.status;
    let applied = first.applied().0.clone();
    let mut twin = applied;
    twin["metadata"]["uid"] = json!("t1");
    twin["metadata"]["resourceVersion"] = json!("20");
    let start = Start {
        claim,
        record: Some(record),
        ..Start::default()
    };
    let world = World {
        twin: Some(twin),
        local_secret: Some(secret("demo-conn", "u1", "aHR0cHM=")),
        ..world
    };
    (start, world)
}

fn deleting(mut claim: Value) -> Value {
    claim["metadata"]["deletionTimestamp"] = json!("2026-12-06T00:00:00Z");
    claim
}

/// A twin at the claim's remote name whose labels say `labels`.
fn twin_with(labels: Value) -> Value {
    json!({"metadata": {"name": twin_name(), "namespace": "claims", "uid": "t1", "resourceVersion": "20",
        "labels": labels}, "spec": {"id": "demo"}})
}

type Check = fn(&Run);

/// The steps of a held claim that gets its twin for the first time, with a connection Secret to copy.
const FIRST_TWIN: &[&str] = &[
    "ReadTwin",
    "ReadWithdrawing",
    "WriteTwin",
    "ListMadeSecrets",
    "ReadRemoteSecret",
    "ReadLocalSecret",
    "ApplySecret",
    "WriteDown",
    "Finish",
];

/// The rows: behaviour, start, world, the steps asked for, what else must hold.
fn rows() -> Vec<(&'static str, Start, World, &'static [&'static str], Check)> {
    let (synced, synced_world) = in_sync();
    let (drift, mut drift_world) = in_sync();
    if let Some(twin) = drift_world.twin.as_mut() {
        twin["spec"]["id"] = json!("edited-remotely");
        twin["metadata"]["resourceVersion"] = json!("25");
    }
    let (vanished, vanished_world) = in_sync();
    let vanished_world = World {
        twin: None,
        ..vanished_world
    };
    let (cached_behind, _) = in_sync();
    let mut cached_behind = cached_behind;
    if let Some(record) = cached_behind.record.as_mut() {
        record.local_resource_version = "13".into();
        record.updated_unix = NOW - 1;
    }
    let (restored_backup, restored_world) = in_sync();
    let mut restored_backup = restored_backup;
    if let Some(record) = restored_backup.record.as_mut() {
        record.local_resource_version = "13".into();
        record.updated_unix = NOW - 3600;
    }
    let (offline, _) = in_sync();
    let mut offline = offline;
    offline.claim["spec"]["id"] = json!("changed-while-offline");
    offline.link = LinkState::Down {
        why: Down::Unreachable,
        reason: "connection refused".into(),
    };
    let mut adopting = claim();
    adopting["metadata"]["annotations"][ADOPT_FROM] = json!("old-uid");
    let mut orphan = deleting(claim());
    orphan["metadata"]["annotations"][DELETION_POLICY] = json!("Orphan");
    let mut unsupported = claim();
    unsupported["spec"]["publishConnectionDetailsTo"] = json!({"name": "x"});
    let mut unheld = claim();
    unheld["metadata"]["finalizers"] = json!([]);
    unheld["metadata"]["annotations"] = json!({});
    let mut other_instance = claim();
    other_instance["metadata"]["annotations"][REPLICATED_BY] = json!("another-claimsync");
    let mut no_secret = claim();
    no_secret["spec"] = json!({"id": "demo"});
    let (renamed, renamed_world) = in_sync();
    let mut renamed = renamed;
    renamed.claim["spec"]["writeConnectionSecretToRef"]["name"] = json!("new-conn");
    let renamed_world = World {
        made_secrets: vec![secret("demo-conn", "u1", "aHR0cHM="), secret("other", "u9", "eA==")],
        local_secret: None,
        ..renamed_world
    };
    let failing = |code: Option<u16>| World {
        apply: Err(ApplyFailure {
            code,
            message: "nope".into(),
        }),
        ..World::default()
    };
    let user_delete = Start {
        claim: deleting(claim()),
        ..Start::default()
    };
    let (delete_offline, _) = in_sync();
    let delete_offline = Start {
        claim: deleting(delete_offline.claim),
        link: LinkState::Down {
            why: Down::Unreachable,
            reason: "timed out".into(),
        },
        ..delete_offline
    };
    let ours = twin_with(labels("kube-system-uid"));
    let mut xr_with_refs = claim();
    xr_with_refs["spec"]["crossplane"] = json!({
        "compositionRef": {"name": "small"},
        "resourceRefs": [{"apiVersion": "v1", "kind": "Secret", "name": "another-tenants"}],
    });

    vec![
        (
            "new claim: held, applied, its Secret and status brought down, recorded",
            Start {
                claim: unheld,
                ..Start::default()
            },
            World::default(),
            &[
                "Hold",
                "ReadTwin",
                "ReadWithdrawing",
                "WriteTwin",
                "ListMadeSecrets",
                "ReadRemoteSecret",
                "ReadLocalSecret",
                "ApplySecret",
                "WriteDown",
                "Finish",
            ],
            |run| {
                assert!(run.said().is_empty());
                assert_eq!(run.outcome.then, Then::Resync);
                let record = run.outcome.record.as_ref().expect("recorded");
                assert_eq!(
                    record.local_resource_version, "12",
                    "the version after claimsync's own write"
                );
                assert_eq!(record.remote_uid.as_deref(), Some("t1"));
                assert_eq!(record.secret_name_down.as_deref(), Some("demo-conn"));
                assert!(record.secret_hash_down.is_some());
                let down = run.write_down().unwrap();
                assert_eq!(down.status["conditions"][0]["reason"], "Synced");
                let (intent, then_say) = run.applied();
                assert_eq!(intent["metadata"]["name"], twin_name().as_str());
                assert_eq!(
                    intent["spec"]["writeConnectionSecretToRef"]["name"],
                    twin_name().as_str()
                );
                assert!(then_say.is_empty());
            },
        ),
        (
            "in sync: reads from the caches, writes nothing, records nothing",
            synced,
            synced_world,
            &[
                "ReadTwin",
                "ReadWithdrawing",
                "ReadRemoteSecret",
                "ReadLocalSecret",
                "Finish",
            ],
            |run| {
                assert_eq!(
                    run.outcome,
                    Outcome {
                        phase: Some(crate::model::phase::Phase::Synced),
                        then: Then::Resync,
                        ..Outcome::default()
                    }
                );
            },
        ),
        (
            "drift reverted: a twin edited on the control plane is applied again, and said",
            drift,
            drift_world,
            &[
                "ReadTwin",
                "ReadWithdrawing",
                "WriteTwin",
                "ReadRemoteSecret",
                "ReadLocalSecret",
                "Finish",
            ],
            |run| {
                let (_, then_say) = run.applied();
                assert_eq!(then_say.first().map(|s| s.reason.as_str()), Some("RemoteDriftReverted"));
                assert!(run.outcome.record.is_some(), "the twin's new version is recorded");
            },
        ),
        (
            "twin deleted remotely: recreated, and said",
            vanished,
            vanished_world,
            &[
                "ReadTwin",
                "ReadWithdrawing",
                "WriteTwin",
                "ReadRemoteSecret",
                "ReadLocalSecret",
                "Finish",
            ],
            |run| {
                let (_, then_say) = run.applied();
                assert_eq!(then_say.first().map(|s| s.reason.as_str()), Some("RemoteRecreated"));
            },
        ),
        (
            "name conflict: someone else's object at the twin's name is left alone",
            Start::default(),
            World {
                twin: Some(twin_with(json!({"app": "not-claimsync"}))),
                ..World::default()
            },
            &["ReadTwin", "Finish"],
            |run| {
                assert_eq!(run.shown(), Some(Reason::NameConflict));
                assert_eq!(run.said(), [(On::Claim, "NameConflict")]);
                assert_eq!(run.outcome.then, Then::Resync);
            },
        ),
        (
            "contested twin: another app cluster with the same cluster id wrote it; said on both sides",
            Start::default(),
            World {
                twin: Some(twin_with(labels("old-uid"))),
                ..World::default()
            },
            &["ReadTwin", "Finish"],
            |run| {
                assert_eq!(run.shown(), Some(Reason::NameConflict));
                assert_eq!(run.said(), [(On::Claim, "NameConflict"), (On::Twin, "TwinContested")]);
                assert!(run.outcome.say[0].message.contains("--adopt-from-cluster-uid old-uid"));
            },
        ),
        (
            "contested twin adopted: a claim restored to adopt the other app cluster's twin takes it",
            Start {
                claim: adopting,
                ..Start::default()
            },
            World {
                twin: Some(twin_with(labels("old-uid"))),
                ..World::default()
            },
            FIRST_TWIN,
            |run| assert!(run.said().is_empty()),
        ),
        (
            "stale cache: a claim older than claimsync's own write of a moment ago waits for the cache",
            cached_behind,
            World::default(),
            &["Finish"],
            |run| {
                assert_eq!(
                    run.outcome,
                    Outcome {
                        then: Then::Requeue(CACHE_CATCH_UP),
                        ..Outcome::default()
                    }
                );
            },
        ),
        (
            "stale cache: an app cluster restored from a backup is not waited for",
            restored_backup,
            restored_world,
            &[
                "ReadTwin",
                "ReadWithdrawing",
                "ReadRemoteSecret",
                "ReadLocalSecret",
                "Finish",
            ],
            |run| assert!(run.outcome.record.is_some(), "the restored version is recorded"),
        ),
        (
            "withdrawn kind: shown, nothing read or written on the control plane",
            Start {
                withdrawn: true,
                ..Start::default()
            },
            World::default(),
            &["Finish"],
            |run| {
                assert_eq!(run.shown(), Some(Reason::KindWithdrawn));
                assert_eq!(run.outcome.then, Then::AwaitChange);
            },
        ),
        (
            "withdrawn kind: while the control plane withdraws it, a missing twin is not recreated",
            Start::default(),
            World {
                withdrawing: true,
                ..World::default()
            },
            &["ReadTwin", "ReadWithdrawing", "Finish"],
            |run| {
                assert_eq!(run.shown(), Some(Reason::KindWithdrawn));
                assert_eq!(run.outcome.then, Then::Resync);
            },
        ),
        (
            "deselected namespace: a claim this claimsync held is released, its twin kept",
            Start {
                selected: false,
                ..Start::default()
            },
            World::default(),
            &["Finish"],
            |run| {
                assert!(run.outcome.release);
                assert_eq!(run.shown(), Some(Reason::NotSelected));
                assert_eq!(run.said(), [(On::Log, "NotSelected"), (On::Claim, "NotSelected")]);
            },
        ),
        (
            "deselected namespace: another claimsync's claim is not touched",
            Start {
                claim: other_instance,
                selected: false,
                ..Start::default()
            },
            World::default(),
            &["Finish"],
            |run| assert_eq!(run.outcome, Outcome::default()),
        ),
        (
            "offline with pending changes: recorded and said, the last status kept",
            offline,
            World::default(),
            &["Finish"],
            |run| {
                assert_eq!(run.shown(), Some(Reason::ControlPlaneUnreachable));
                let pending = run.outcome.pending.as_ref().expect("what waits is recorded");
                assert_eq!(pending.patch[0]["path"], "/spec/id");
                let message = &run.outcome.show.as_ref().unwrap().message;
                assert!(
                    message.contains("connection refused") && message.contains("1 change waits"),
                    "{message}"
                );
                assert_eq!(run.outcome.then, Then::AwaitChange);
            },
        ),
        (
            "credentials rejected: said on the claim, what waits recorded",
            Start {
                link: LinkState::Down {
                    why: Down::CredentialsRejected,
                    reason: "the control plane rejected claimsync's token".into(),
                },
                ..Start::default()
            },
            World::default(),
            &["Finish"],
            |run| {
                assert_eq!(run.shown(), Some(Reason::CredentialsRejected));
                assert!(run.outcome.pending.is_some());
            },
        ),
        (
            "refused for good: the control plane's 422 is shown and said, retried at the resync",
            Start::default(),
            failing(Some(422)),
            &["ReadTwin", "ReadWithdrawing", "WriteTwin", "Finish"],
            |run| {
                assert_eq!(run.shown(), Some(Reason::Error));
                assert_eq!(run.said(), [(On::Claim, "RemoteRejected")]);
                assert_eq!(
                    run.outcome.pending.as_ref().unwrap().error.as_deref(),
                    run.outcome.show.as_ref().map(|c| c.message.as_str())
                );
                assert_eq!(run.outcome.then, Then::Resync);
            },
        ),
        (
            "refused for now: a 403 is shown and retried with backoff",
            Start::default(),
            failing(Some(403)),
            &["ReadTwin", "ReadWithdrawing", "WriteTwin", "Finish"],
            |run| {
                assert_eq!(run.shown(), Some(Reason::Error));
                assert!(run.said().is_empty());
                assert_eq!(run.outcome.then, Then::Retry);
            },
        ),
        (
            "control plane not reached: retried with backoff, nothing shown (the link says it)",
            Start::default(),
            failing(None),
            &["ReadTwin", "ReadWithdrawing", "WriteTwin", "Finish"],
            |run| {
                assert_eq!(
                    run.outcome,
                    Outcome {
                        then: Then::Retry,
                        ..Outcome::default()
                    }
                );
            },
        ),
        (
            "Secret conflict: a local Secret the claim does not own is left alone, and said",
            Start::default(),
            World {
                local_secret: Some(secret("demo-conn", "someone-else", "eA==")),
                ..World::default()
            },
            &[
                "ReadTwin",
                "ReadWithdrawing",
                "WriteTwin",
                "ListMadeSecrets",
                "ReadRemoteSecret",
                "ReadLocalSecret",
                "WriteDown",
                "Finish",
            ],
            |run| {
                assert_eq!(run.said(), [(On::Claim, "SecretConflict")]);
                assert_eq!(
                    run.write_down().unwrap().status["conditions"][0]["reason"],
                    "SecretConflict"
                );
                assert_eq!(run.outcome.record.as_ref().unwrap().secret_hash_down, None);
            },
        ),
        (
            "Secret of an earlier claim: the copy made for the claim before its CRD was deleted is taken over",
            Start::default(),
            World {
                local_secret: Some(earlier_claims_secret()),
                ..World::default()
            },
            FIRST_TWIN,
            |run| {
                let written = run
                    .writes
                    .iter()
                    .find_map(|w| match w {
                        Step::ApplySecret { secret, .. } => Some(secret),
                        _ => None,
                    })
                    .unwrap();
                assert_eq!(written["metadata"]["ownerReferences"][0]["uid"], "u1");
                assert_eq!(run.shown(), None, "shown by the write-down: {:?}", run.write_down());
                assert_eq!(run.write_down().unwrap().status["conditions"][0]["reason"], "Synced");
            },
        ),
        (
            "remote Secret conflict: a Secret Crossplane did not write for the twin is not copied",
            Start::default(),
            World {
                remote_secret: Some(secret(&twin_name(), "not-the-twin", "eA==")),
                ..World::default()
            },
            &[
                "ReadTwin",
                "ReadWithdrawing",
                "WriteTwin",
                "ListMadeSecrets",
                "ReadRemoteSecret",
                "WriteDown",
                "Finish",
            ],
            |run| assert_eq!(run.said(), [(On::Claim, "RemoteSecretConflict")]),
        ),
        (
            "connection Secret renamed: the copy under the old name goes, the new one is written",
            renamed,
            renamed_world,
            &[
                "ReadTwin",
                "ReadWithdrawing",
                "WriteTwin",
                "ListMadeSecrets",
                "DeleteSecrets",
                "ReadRemoteSecret",
                "ReadLocalSecret",
                "ApplySecret",
                "Finish",
            ],
            |run| {
                assert!(run.writes.contains(&Step::DeleteSecrets {
                    names: vec!["demo-conn".into()]
                }));
            },
        ),
        (
            "no connection Secret asked for: none read",
            Start {
                claim: no_secret,
                ..Start::default()
            },
            World::default(),
            &["ReadTwin", "ReadWithdrawing", "WriteTwin", "WriteDown", "Finish"],
            |run| assert_eq!(run.outcome.record.as_ref().unwrap().secret_name_down, None),
        ),
        (
            "unsupported field: the claim is not sent up, and why is said",
            Start {
                claim: unsupported,
                ..Start::default()
            },
            World::default(),
            &["Finish"],
            |run| {
                assert_eq!(run.shown(), Some(Reason::Unsupported));
                assert_eq!(run.said(), [(On::Claim, "Unsupported")]);
                assert!(
                    run.outcome
                        .show
                        .as_ref()
                        .unwrap()
                        .message
                        .contains("spec.publishConnectionDetailsTo")
                );
            },
        ),
        (
            "user delete: the twin is deleted first, and the claim waits for it to go",
            Start {
                claim: deleting(claim()),
                ..Start::default()
            },
            World {
                twin: Some(ours.clone()),
                ..World::default()
            },
            &["ReadLocalCrd", "ReadTwin", "DeleteTwin", "Finish"],
            |run| {
                assert_eq!(run.outcome.then, Then::Requeue(TWIN_DELETE_POLL));
                assert!(!run.outcome.release);
            },
        ),
        (
            "user delete: once the twin is gone the claim is released",
            user_delete,
            World::default(),
            &["ReadLocalCrd", "ReadTwin", "Finish"],
            |run| {
                assert!(run.outcome.release);
                assert!(run.said().is_empty());
            },
        ),
        (
            "user delete: someone else's object at the twin's name is not deleted",
            Start {
                claim: deleting(claim()),
                ..Start::default()
            },
            World {
                twin: Some(twin_with(json!({"app": "not-claimsync"}))),
                ..World::default()
            },
            &["ReadLocalCrd", "ReadTwin", "Finish"],
            |run| assert!(run.outcome.release),
        ),
        (
            "user delete offline: waits, held by the finalizer",
            delete_offline,
            World::default(),
            &["ReadLocalCrd", "Finish"],
            |run| {
                assert!(!run.outcome.release);
                assert_eq!(run.outcome.then, Then::AwaitChange);
            },
        ),
        (
            "Orphan policy: the claim goes, its twin stays",
            Start {
                claim: orphan,
                ..Start::default()
            },
            World {
                twin: Some(ours.clone()),
                ..World::default()
            },
            &["ReadLocalCrd", "Finish"],
            |run| {
                assert!(run.outcome.release);
                assert_eq!(run.said(), [(On::Log, "Orphan")]);
            },
        ),
        (
            "deleted local CRD: its claims go, their twins stay",
            Start {
                claim: deleting(claim()),
                ..Start::default()
            },
            World {
                twin: Some(ours.clone()),
                local_crd_going: true,
                ..World::default()
            },
            &["ReadLocalCrd", "Finish"],
            |run| {
                assert!(run.outcome.release);
                assert_eq!(
                    run.said(),
                    [(On::Log, "LocalCRDDeleted"), (On::Claim, "LocalCRDDeleted")]
                );
                assert_eq!(run.outcome.show, None, "a deleting claim's status is not written");
            },
        ),
        (
            "namespaced XR: its twin is nxr-, its resourceRefs are not sent, and that is said",
            Start {
                claim: xr_with_refs,
                rules: &NamespacedXrs,
                ..Start::default()
            },
            World {
                remote_secret: Some(secret(
                    &NamespacedXrs.remote_name("demo", "team", "app"),
                    "t1",
                    "aHR0cHM=",
                )),
                ..World::default()
            },
            FIRST_TWIN,
            |run| {
                let (intent, then_say) = run.applied();
                let twin = NamespacedXrs.remote_name("demo", "team", "app");
                assert!(twin.starts_with("nxr-"), "{twin}");
                assert_eq!(intent["metadata"]["name"], twin.as_str());
                assert_eq!(
                    intent["spec"]["crossplane"],
                    json!({"compositionRef": {"name": "small"}})
                );
                assert_eq!(intent["spec"]["writeConnectionSecretToRef"]["name"], twin.as_str());
                assert_eq!(
                    then_say.iter().map(|s| s.reason.as_str()).collect::<Vec<_>>(),
                    ["FieldNotReplicated"]
                );
                let down = run.write_down().unwrap();
                let message = down.status["conditions"][0]["message"].as_str().unwrap();
                assert!(
                    message.contains("resourceRefs is Crossplane's and was not sent"),
                    "{message}"
                );
            },
        ),
        (
            "withdrawn kind: a deleted claim is released at once, without waiting for its twin",
            Start {
                claim: deleting(claim()),
                withdrawn: true,
                ..Start::default()
            },
            World {
                twin: Some(ours.clone()),
                ..World::default()
            },
            &["ReadLocalCrd", "Finish"],
            |run| assert!(run.outcome.release),
        ),
        (
            "withdrawn XR kind: Crossplane v2 leaves the XRs, so a deleted XR's twin is deleted before it is released",
            Start {
                claim: deleting(claim()),
                withdrawn: true,
                rules: &NamespacedXrs,
                ..Start::default()
            },
            World {
                twin: Some(ours.clone()),
                ..World::default()
            },
            &["ReadLocalCrd", "ReadTwin", "DeleteTwin", "Finish"],
            |run| {
                assert!(!run.outcome.release, "held until the twin is gone");
                assert_eq!(run.outcome.then, Then::Requeue(TWIN_DELETE_POLL));
            },
        ),
    ]
}

#[test]
fn each_behaviour_plans_its_steps() {
    for (behaviour, start, world, steps, check) in rows() {
        let run = drive(start, &world);
        assert_eq!(run.steps, steps, "{behaviour}");
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&run)));
        assert!(checked.is_ok(), "{behaviour}: its check failed (see above)");
    }
}

#[test]
fn an_event_already_shown_is_not_said_again() {
    let mut claim = claim();
    claim["status"] = json!({"conditions": [{"type": "Replicated", "status": "False", "reason": "NameConflict"}]});
    let run = drive(
        Start {
            claim,
            ..Start::default()
        },
        &World {
            twin: Some(twin_with(labels("old-uid"))),
            ..World::default()
        },
    );
    assert_eq!(run.shown(), Some(Reason::NameConflict));
    assert!(
        run.said().is_empty(),
        "neither on the claim nor on the twin: {:?}",
        run.said()
    );
}

#[test]
fn the_same_wait_said_again_keeps_its_record_as_it_was() {
    let pending = Pending {
        remote_name: twin_name(),
        patch: json!([{"op": "replace", "path": "/spec/id", "value": "x"}]),
        error: None,
    };
    let first = pending_record(None, &claim(), &pending, NOW);
    assert_eq!(first.updated_unix, NOW);
    assert_eq!(first.local_uid, "u1");
    assert_eq!(first.remote_name, twin_name());
    let again = pending_record(Some(&first), &claim(), &pending, NOW + 60);
    assert_eq!(again, first, "nothing new: the journal does not write it");
    let nothing = Pending {
        patch: json!([]),
        ..pending
    };
    assert_eq!(
        pending_record(Some(&first), &claim(), &nothing, NOW + 60).pending_patch,
        None
    );
}

#[test]
fn resource_versions_compare_as_numbers_and_anything_else_is_not_older() {
    assert!(older(Some("9"), Some("10")));
    assert!(!older(Some("10"), Some("10")));
    assert!(!older(Some("abc"), Some("10")));
    assert!(!older(None, Some("10")));
}

/// The twin write of a run, if it wrote the twin.
fn twin_write(run: &Run) -> Option<&TwinWrite> {
    run.writes.iter().find_map(|w| match w {
        Step::WriteTwin { how, .. } => Some(how),
        _ => None,
    })
}

#[test]
fn a_new_twin_is_created_and_an_existing_one_merge_patched_with_claimsyncs_removals() {
    use crate::model::vocabulary::MANAGER_UP;
    // No twin seen: created, with no read before.
    let run = drive(Start::default(), &World::default());
    assert_eq!(twin_write(&run), Some(&TwinWrite::Create));

    // A twin claimsync never wrote (the MCP Connector's: someone else's entries only) is applied once, so that
    // claimsync's entry owns the whole intent from then on.
    let (start, mut world) = in_sync();
    let twin = world.twin.as_mut().unwrap();
    twin["spec"]["id"] = json!("as-the-connector-left-it");
    twin["metadata"]["managedFields"] = json!([{"manager": "mcp-connector", "operation": "Update",
        "fieldsV1": {"f:spec": {"f:id": {}}}}]);
    let adopted = drive(
        Start {
            claim: start.claim,
            ..Start::default()
        },
        &world,
    );
    assert_eq!(twin_write(&adopted), Some(&TwinWrite::Apply), "{:?}", adopted.steps);

    // A twin claimsync created (its create owns what it sent and what the control plane defaulted), where Crossplane
    // set a reference and someone else a label; the user has since removed `size` and the `team` label.
    let (start, mut world) = in_sync();
    let twin = world.twin.as_mut().unwrap();
    twin["metadata"]["resourceVersion"] = json!("25");
    twin["metadata"]["labels"]["team"] = json!("a");
    twin["metadata"]["labels"]["theirs"] = json!("b");
    twin["spec"]["size"] = json!(3);
    twin["spec"]["compositeDeletePolicy"] = json!("Background");
    twin["spec"]["resourceRef"] = json!({"name": "xr-1"});
    twin["metadata"]["managedFields"] = json!([
        {"manager": MANAGER_UP, "operation": "Update", "fieldsV1": {
            "f:metadata": {"f:labels": {"f:team": {}}},
            "f:spec": {"f:id": {}, "f:size": {}, "f:compositeDeletePolicy": {}}}},
        {"manager": "crossplane", "operation": "Update", "fieldsV1": {"f:spec": {"f:resourceRef": {}}}},
        {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {"f:theirs": {}}}}},
    ]);
    let run = drive(
        Start {
            claim: start.claim,
            ..Start::default()
        },
        &world,
    );
    let Some(TwinWrite::Patch(patch)) = twin_write(&run) else {
        panic!("an existing twin is patched: {:?}", run.steps);
    };
    assert_eq!(patch["spec"]["size"], Value::Null);
    assert!(patch["spec"].get("size").is_some(), "size is nulled: {patch}");
    assert!(
        patch["metadata"]["labels"].get("team").is_some_and(Value::is_null),
        "{patch}"
    );
    assert!(
        patch["spec"].get("resourceRef").is_none(),
        "Crossplane's reference is left alone: {patch}"
    );
    assert!(
        patch["metadata"]["labels"].get("theirs").is_none(),
        "someone else's label is left alone: {patch}"
    );
    assert_eq!(patch["spec"]["id"], json!("demo"), "the intent goes whole: {patch}");

    // The control plane defaulted a policy on the twin, which claimsync's create then owns, and the intent leaves
    // out (the local CRD defaults it alike, so the local claim has it too): not a removal, with or without the
    // journal (a restart without it writes nothing).
    let (start, mut world) = in_sync();
    let twin = world.twin.as_mut().unwrap();
    twin["metadata"]["resourceVersion"] = json!("25");
    twin["spec"]["compositeDeletePolicy"] = json!("Background");
    twin["metadata"]["managedFields"] = json!([{"manager": MANAGER_UP, "operation": "Update", "fieldsV1": {
        "f:spec": {"f:id": {}, "f:compositeDeletePolicy": {}, "f:writeConnectionSecretToRef": {"f:name": {}}}}}]);
    let mut defaulted = start.claim.clone();
    defaulted["spec"]["compositeDeletePolicy"] = json!("Background");
    for record in [start.record.clone(), None] {
        let run = drive(
            Start {
                claim: defaulted.clone(),
                record,
                ..Start::default()
            },
            &world,
        );
        assert_eq!(twin_write(&run), None, "{:?}", run.steps);
    }
    // A kind whose local claim lacks it: once this intent was written, as the journal says, the twin is in place
    // even at a newer version (Crossplane wrote its status); without the journal one merge patch nulls it.
    let journal_says = drive(
        Start {
            claim: start.claim.clone(),
            record: start.record.clone(),
            ..Start::default()
        },
        &world,
    );
    assert_eq!(twin_write(&journal_says), None, "{:?}", journal_says.steps);
    let no_journal = drive(
        Start {
            claim: start.claim,
            ..Start::default()
        },
        &world,
    );
    let Some(TwinWrite::Patch(patch)) = twin_write(&no_journal) else {
        panic!("without the journal the removal is sent once: {:?}", no_journal.steps);
    };
    assert!(patch["spec"]["compositeDeletePolicy"].is_null(), "{patch}");
    assert!(no_journal.outcome.record.is_some(), "and recorded");
}
