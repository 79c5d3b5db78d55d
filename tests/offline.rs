//! Offline tolerance, against real outages: the control plane stopped, a link of the test's own cut, reset or
//! flapping, claimsync started while cut, killed with -9 in a burst, its journal deleted, its token rotated, and
//! claims restored from their twins. Each checks that every change made meanwhile reaches the control plane once,
//! in its final form: nothing lost, nothing duplicated.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use claimsync::model::kind::KindFamily;
use claimsync::model::naming::remote_claim_name;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::claim_support::{condition, is_true, wait_ready, wait_reason};
use crate::instance::{Instance, tail};
use crate::platform_support::TestKind;
use crate::support::{self, env, wait_for};
use crate::testenv_control_plane::kubernetes_cluster_resource;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_keep_working_and_say_so_while_the_control_plane_is_down() {
    let _env = support::env_exclusive().await;
    let (instance, ns, local) = crate::claim_support::ready_instance("offline", "steady").await;
    let kc = kubernetes_cluster_resource();

    env().script(&["stop", "controlplane"]);
    let claim = wait_reason(&local, "steady", "ControlPlaneUnreachable", &instance).await;
    assert!(
        is_true(&claim, "Ready"),
        "the last known status stays: {}",
        claim.data["status"]
    );
    let edit = json!({"spec": {"parameters": {"nodes": {"count": 7}}}});
    local
        .patch("steady", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("local edits work offline");

    env().script(&["start", "controlplane"]);
    let remote = Api::<DynamicObject>::namespaced_with(support::control_plane().await, &instance.claim_namespace, &kc);
    let remote_name = remote_claim_name("steady", &ns, &instance.id);
    wait_for(
        "the offline edit to reach the control plane",
        Duration::from_secs(90),
        || async {
            let r = remote.get(&remote_name).await.map_err(|e| e.to_string())?;
            (r.data["spec"]["parameters"]["nodes"]["count"] == 7)
                .then_some(())
                .ok_or("not yet".to_string())
        },
    )
    .await;
    wait_ready(&local, "steady", &instance).await;
}

/// The claims of one kind in the app cluster, in every namespace, by `namespace/name`. An error (a CRD that was
/// just made again may not be served for a moment) is for a wait to retry.
async fn try_local_claims(kind: &TestKind, app: &Client) -> Result<BTreeMap<String, DynamicObject>, String> {
    Ok(Api::<DynamicObject>::all_with(app.clone(), &kind.resource)
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list the local claims: {e}"))?
        .items
        .into_iter()
        .map(|c| (format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()), c))
        .collect())
}

async fn local_claims(kind: &TestKind, app: &Client) -> BTreeMap<String, DynamicObject> {
    try_local_claims(kind, app).await.unwrap()
}

/// The twins of one kind in the claim namespace, by name.
async fn try_twins(kind: &TestKind, instance: &Instance) -> Result<BTreeMap<String, DynamicObject>, String> {
    Ok(Api::<DynamicObject>::namespaced_with(
        instance.control_plane.clone(),
        &instance.claim_namespace,
        &kind.resource,
    )
    .list(&ListParams::default())
    .await
    .map_err(|e| format!("list the twins: {e}"))?
    .items
    .into_iter()
    .map(|t| (t.name_any(), t))
    .collect())
}

async fn twins(kind: &TestKind, instance: &Instance) -> BTreeMap<String, DynamicObject> {
    try_twins(kind, instance).await.unwrap()
}

/// Creates `names` (`namespace/name`) as claims of `kind` with spec `{size: 1}`, 16 at a time.
async fn create_claims(kind: &TestKind, app: &Client, names: &[String]) {
    futures::stream::iter(names.iter().cloned())
        .map(|key| async move {
            let (ns, name) = key.split_once('/').unwrap();
            kind.claims(app, ns)
                .create(&PostParams::default(), &kind.claim(ns, name))
                .await
                .map(drop)
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("create claims");
}

async fn patch_claim(kind: &TestKind, app: &Client, key: &str, patch: serde_json::Value) {
    let (ns, name) = key.split_once('/').unwrap();
    kind.claims(app, ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patch {key}: {e}"));
}

async fn delete_claim(kind: &TestKind, app: &Client, key: &str) {
    let (ns, name) = key.split_once('/').unwrap();
    kind.claims(app, ns)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete {key}: {e}"));
}

/// What the control plane must hold once claimsync has caught up: one twin per live local claim, with its spec, and
/// no twin of a claim that is gone; each twin bound to exactly one composite. Returns a mismatch, if any.
async fn mismatch(kind: &TestKind, instance: &Instance) -> Option<String> {
    let local = match try_local_claims(kind, &instance.app).await {
        Ok(local) => local,
        Err(e) => return Some(e),
    };
    let twins = match try_twins(kind, instance).await {
        Ok(twins) => twins,
        Err(e) => return Some(e),
    };
    let mut expected = BTreeMap::new();
    for (key, claim) in &local {
        if claim.metadata.deletion_timestamp.is_some() {
            return Some(format!("{key} is still being deleted"));
        }
        if condition(claim, "Replicated").map(|(s, _)| s) != Some("True".into()) {
            return Some(format!("{key} is not replicated: {}", claim.data["status"]));
        }
        let (ns, name) = key.split_once('/').unwrap();
        expected.insert(kind.remote_name(name, ns, &instance.id), (key, claim));
    }
    for (twin_name, (key, claim)) in &expected {
        let Some(twin) = twins.get(twin_name) else {
            return Some(format!("{key} has no twin {twin_name}"));
        };
        for field in ["size", "color"] {
            if twin.data["spec"][field] != claim.data["spec"][field] {
                return Some(format!(
                    "twin of {key}: spec.{field} {} != {}",
                    twin.data["spec"][field], claim.data["spec"][field]
                ));
            }
        }
    }
    let extra: Vec<&String> = twins
        .iter()
        .filter(|(name, twin)| !expected.contains_key(*name) && twin.metadata.deletion_timestamp.is_none())
        .map(|(name, _)| name)
        .collect();
    if !extra.is_empty() {
        return Some(format!("twins without a local claim: {extra:?}"));
    }
    // A namespaced XR's twin is its composite: nothing more to count.
    if kind.family == KindFamily::NamespacedXr {
        return None;
    }
    let mut composites: BTreeMap<String, usize> = BTreeMap::new();
    let all = match kind
        .composites(&instance.control_plane)
        .list(&ListParams::default())
        .await
    {
        Ok(all) => all,
        Err(e) => return Some(format!("list the composites: {e}")),
    };
    for composite in all.items {
        if let Some(claim) = composite.labels().get("crossplane.io/claim-name") {
            *composites.entry(claim.clone()).or_default() += 1;
        }
    }
    for twin_name in expected.keys() {
        match composites.get(twin_name) {
            Some(1) => {}
            other => return Some(format!("twin {twin_name} has {other:?} composites")),
        }
    }
    None
}

/// A claimsync (through a link of its own when `link`), a claim kind of its own offered and established in the
/// app cluster, a namespace it replicates, and `count` claims `<ns>/<name_prefix><i>` created there.
async fn fleet(
    prefix: &str,
    kind_name: &str,
    link: bool,
    name_prefix: &str,
    count: usize,
) -> (Instance, TestKind, String, Vec<String>) {
    fleet_of(KindFamily::Claim, prefix, kind_name, link, name_prefix, count).await
}

/// [`fleet`] of a kind of `family`.
async fn fleet_of(
    family: KindFamily,
    prefix: &str,
    kind_name: &str,
    link: bool,
    name_prefix: &str,
    count: usize,
) -> (Instance, TestKind, String, Vec<String>) {
    let mut instance = Instance::new(prefix).await;
    if link {
        instance.use_link();
    }
    instance.start().await;
    let kind = TestKind::offer_of(
        family,
        &instance.control_plane,
        prefix,
        kind_name,
        json!({"color": {"type": "string"}}),
    )
    .await;
    kind.wait_local(&instance.app).await;
    let ns = instance.namespace(prefix).await;
    let claims: Vec<String> = (0..count).map(|i| format!("{ns}/{name_prefix}{i}")).collect();
    create_claims(&kind, &instance.app, &claims).await;
    (instance, kind, ns, claims)
}

async fn wait_converged(kind: &TestKind, instance: &Instance, what: &str, timeout: Duration) {
    wait_for(what, timeout, || async {
        match mismatch(kind, instance).await {
            None => Ok(()),
            Some(m) => Err(format!("{m}\n{}", tail(&instance.log(), 6))),
        }
    })
    .await;
}

/// How many claims of `kind` show `Replicated` with `reason`.
async fn count_reason(kind: &TestKind, app: &Client, reason: &str) -> usize {
    local_claims(kind, app)
        .await
        .values()
        .filter(|c| condition(c, "Replicated").is_some_and(|(_, r)| r == reason))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_with_hundreds_of_changes_loses_and_duplicates_nothing() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("outage").await;
    instance.use_link();
    instance.start().await;
    let (app, cp) = (instance.app.clone(), instance.control_plane.clone());
    let kind = TestKind::offer(&cp, "outage", "Outage", json!({"color": {"type": "string"}})).await;
    kind.wait_local(&app).await;
    let mut namespaces = Vec::new();
    for prefix in ["out-a", "out-b", "out-c"] {
        namespaces.push(instance.namespace(prefix).await);
    }
    let key = |i: usize, name: String| format!("{}/{name}", namespaces[i % 3]);
    let existing: Vec<String> = (0..60).map(|i| key(i, format!("e{i}"))).collect();
    create_claims(&kind, &app, &existing).await;
    wait_converged(
        &kind,
        &instance,
        "the first 60 claims to be replicated",
        Duration::from_secs(180),
    )
    .await;
    let uids: BTreeMap<String, Option<String>> = twins(&kind, &instance)
        .await
        .into_iter()
        .map(|(name, twin)| (name, twin.uid()))
        .collect();

    instance.link("cut");
    wait_for(
        "every claim to say the control plane is unreachable",
        Duration::from_secs(90),
        || async {
            let n = count_reason(&kind, &app, "ControlPlaneUnreachable").await;
            (n == 60)
                .then_some(())
                .ok_or(format!("{n} of 60\n{}", tail(&instance.log(), 4)))
        },
    )
    .await;
    // During the outage: 100 creates, 30 claims edited twice, 15 deleted, 20 created and deleted again.
    let created: Vec<String> = (0..100).map(|i| key(i, format!("n{i}"))).collect();
    create_claims(&kind, &app, &created).await;
    for claim in &existing[..30] {
        patch_claim(&kind, &app, claim, json!({"spec": {"size": 2}})).await;
    }
    for claim in &existing[..30] {
        patch_claim(&kind, &app, claim, json!({"spec": {"size": 3, "color": "blue"}})).await;
    }
    for claim in &existing[45..] {
        delete_claim(&kind, &app, claim).await;
    }
    let fleeting: Vec<String> = (0..20).map(|i| key(i, format!("d{i}"))).collect();
    create_claims(&kind, &app, &fleeting).await;
    for claim in &fleeting {
        delete_claim(&kind, &app, claim).await;
    }
    let changes = created.len() + 2 * 30 + 15 + 2 * fleeting.len();
    // What waits is said on the claims.
    let edited = kind.claims(&app, &namespaces[0]).get("e0").await.unwrap();
    let said = edited.data["status"].to_string();
    assert!(said.contains("change") && said.contains("wait"), "{said}");

    instance.link("restore");
    let restored = Instant::now();
    wait_converged(
        &kind,
        &instance,
        "the control plane to hold the local state",
        Duration::from_secs(300),
    )
    .await;
    let converged = restored.elapsed();
    let twins_after = twins(&kind, &instance).await;
    for (name, uid) in uids.iter().filter(|(name, _)| twins_after.contains_key(*name)) {
        assert_eq!(&twins_after[name].uid(), uid, "twin {name} was made again");
    }
    for claim in &fleeting {
        let (ns, name) = claim.split_once('/').unwrap();
        assert!(
            !twins_after.contains_key(&remote_claim_name(name, ns, &instance.id)),
            "{claim} got a twin"
        );
    }
    eprintln!(
        "FIGURE outage: {changes} changes during the outage; lost 0, duplicated 0; converged {converged:?} after the link came back"
    );
    kind.withdraw(&cp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_while_cut_it_works_offline_and_converges_when_the_link_returns() {
    let _env = support::env_shared().await;
    let (mut instance, kind, ns, claims) = fleet("cutstart", "Cutstart", true, "c", 5).await;
    let (app, cp) = (instance.app.clone(), instance.control_plane.clone());
    wait_converged(
        &kind,
        &instance,
        "the claims to be replicated",
        Duration::from_secs(120),
    )
    .await;
    for claim in &claims {
        wait_ready(&kind.claims(&app, &ns), claim.split_once('/').unwrap().1, &instance).await;
    }

    // claimsync stops; the link goes; a claim is edited and one is made; claimsync starts during the outage.
    instance.stop().await;
    instance.link("cut");
    patch_claim(&kind, &app, &claims[0], json!({"spec": {"size": 4}})).await;
    create_claims(&kind, &app, &[format!("{ns}/late")]).await;
    let started = Instant::now();
    instance.start_with(&[]).await;
    let local = kind.claims(&app, &ns);
    let waiting = wait_reason(&local, "c0", "ControlPlaneUnreachable", &instance).await;
    assert!(
        is_true(&waiting, "Ready"),
        "the last known status stays: {}",
        waiting.data["status"]
    );
    assert!(
        waiting.data["status"].to_string().contains("1 change waits"),
        "{}",
        waiting.data["status"]
    );
    let late = wait_reason(&local, "late", "ControlPlaneUnreachable", &instance).await;
    assert!(
        late.data["status"].to_string().contains("create the twin"),
        "{}",
        late.data["status"]
    );
    let offline_for = started.elapsed();
    assert!(
        instance.running(),
        "claimsync stopped while the control plane was unreachable"
    );
    // It says it is degraded.
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(app.clone(), &instance.own_namespace);
    let degraded = events.list(&ListParams::default()).await.unwrap();
    assert!(
        degraded
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("ControlPlaneUnreachable")),
        "no ControlPlaneUnreachable Event in {}",
        instance.own_namespace
    );

    instance.link("restore");
    let restored = Instant::now();
    wait_converged(
        &kind,
        &instance,
        "the offline changes to reach the control plane",
        Duration::from_secs(120),
    )
    .await;
    eprintln!(
        "FIGURE start-while-cut: offline state shown {offline_for:?} after start; converged {:?} after the link came back",
        restored.elapsed()
    );
    kind.withdraw(&cp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_link_with_edits_throughout_converges() {
    let _env = support::env_shared().await;
    let (instance, kind, _, claims) = fleet("flap", "Flapper", true, "f", 10).await;
    let (app, cp) = (instance.app.clone(), instance.control_plane.clone());
    wait_converged(
        &kind,
        &instance,
        "the claims to be replicated",
        Duration::from_secs(120),
    )
    .await;

    // For a minute the link is cut and restored every few seconds (a reset now and then), while claims change.
    let mut edits = 0;
    let flapping = Instant::now();
    let mut round = 0u64;
    while flapping.elapsed() < Duration::from_secs(60) {
        let action = match round % 4 {
            0 | 2 => "cut",
            1 => "restore",
            _ => "reset",
        };
        instance.link(action);
        for claim in &claims[(round as usize % 10)..((round as usize % 10) + 1)] {
            patch_claim(&kind, &app, claim, json!({"spec": {"size": round + 2}})).await;
            edits += 1;
        }
        // The fault's schedule, not a wait for something: each link state is held about as long as one probe.
        tokio::time::sleep(Duration::from_secs(3)).await;
        round += 1;
    }
    instance.link("restore");
    let restored = Instant::now();
    wait_converged(
        &kind,
        &instance,
        "the control plane to hold the last edits",
        Duration::from_secs(180),
    )
    .await;
    eprintln!(
        "FIGURE flapping: {round} link changes and {edits} edits in 60 s; converged {:?} after the last restore",
        restored.elapsed()
    );
    kind.withdraw(&cp).await;
}

/// A deterministic generator for the kill moments and operations of one seed.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_and_duplicates_nothing() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("kill").await;
    instance.start().await;
    let (app, cp) = (instance.app.clone(), instance.control_plane.clone());
    let kind = TestKind::offer(&cp, "kill", "Killer", json!({"color": {"type": "string"}})).await;
    kind.wait_local(&app).await;
    let ns = instance.namespace("kill").await;
    let mut kills = 0;
    for seed in [11u64, 23, 47] {
        let mut rng = Seeded(seed);
        let mut live: Vec<String> = Vec::new();
        for i in 0..30 {
            let claim = format!("{ns}/s{seed}-{i}");
            create_claims(&kind, &app, std::slice::from_ref(&claim)).await;
            live.push(claim);
            match rng.next(10) {
                0..=2 if live.len() > 1 => {
                    let edited = &live[rng.next(live.len() as u64) as usize];
                    patch_claim(
                        &kind,
                        &app,
                        edited,
                        json!({"spec": {"size": 1 + rng.next(9), "color": "green"}}),
                    )
                    .await;
                }
                3 if live.len() > 2 => {
                    let gone = live.remove(rng.next(live.len() as u64) as usize);
                    delete_claim(&kind, &app, &gone).await;
                }
                _ => {}
            }
            if rng.next(6) == 0 {
                // The kill moment: somewhere in the next second of claimsync's work.
                tokio::time::sleep(Duration::from_millis(rng.next(1000))).await;
                instance.stop().await;
                kills += 1;
                if seed == 47 && kills % 2 == 0 {
                    let _ = std::fs::remove_dir_all(&instance.state_dir);
                }
                instance.start_with(&[]).await;
            }
        }
    }
    let settled = Instant::now();
    wait_converged(
        &kind,
        &instance,
        "the control plane to hold the local state",
        Duration::from_secs(240),
    )
    .await;
    eprintln!(
        "FIGURE kill-9: 3 seeds, 90 creates with edits and deletes, {kills} kills (journal deleted on some); lost 0, duplicated 0; converged {:?} after the burst",
        settled.elapsed()
    );
    kind.withdraw(&cp).await;
}

/// A service account on the control plane allowed everything, and a token for it.
async fn admin_token(cp: &Client, name: &str) -> String {
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<ServiceAccount>::namespaced(cp.clone(), "default")
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}]
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(cp.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    env()
        .kubectl(
            &env().control_plane_kubeconfig,
            &["create", "token", name, "-n", "default", "--duration=2h"],
        )
        .await
        .unwrap()
        .trim()
        .to_string()
}

/// The control plane's kubeconfig with another token.
fn kubeconfig_with_token(token: &str) -> String {
    let text = std::fs::read_to_string(&env().control_plane_kubeconfig).unwrap();
    text.lines()
        .map(|l| match l.find("token:") {
            Some(at) => format!("{}token: {token}", &l[..at]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_is_picked_up_and_a_rejected_one_is_said() {
    let _env = support::env_shared().await;
    let cp = support::control_plane().await;
    let (first, second) = (support::unique("rot-a"), support::unique("rot-b"));
    let first_token = admin_token(&cp, &first).await;
    let second_token = admin_token(&cp, &second).await;
    let mut instance = Instance::new("rotate").await;
    let ns = instance.namespace("rotate").await;
    let secrets = Api::<Secret>::namespaced(instance.app.clone(), &ns);
    let secret = |token: &str| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": "controlplane"},
            "stringData": {"kubeconfig": kubeconfig_with_token(token)}}))
        .unwrap()
    };
    secrets
        .create(&PostParams::default(), &secret(&first_token))
        .await
        .unwrap();
    instance.control_plane_secret = Some(format!("{ns}/controlplane"));
    instance.start().await;
    let app = instance.app.clone();
    let kc = kubernetes_cluster_resource();
    let local = Api::<DynamicObject>::namespaced_with(app.clone(), &ns, &kc);
    let apply = |name: &'static str| {
        let ns = ns.clone();
        async move {
            crate::claim_support::kubectl_apply(&crate::claim_support::cluster_claim_yaml(
                &ns,
                name,
                &support::unique("kc"),
                &format!("{name}-conn"),
                "",
            ))
            .await
            .unwrap()
        }
    };
    apply("before").await;
    wait_ready(&local, "before", &instance).await;

    // The token in use is revoked (its account deleted), with no new one yet: claims say the credentials were
    // rejected, and claimsync keeps running.
    Api::<ServiceAccount>::namespaced(cp.clone(), "default")
        .delete(&first, &DeleteParams::default())
        .await
        .unwrap();
    let rejected = wait_reason(&local, "before", "CredentialsRejected", &instance).await;
    assert!(
        rejected.data["status"].to_string().contains("401"),
        "{}",
        rejected.data["status"]
    );
    assert!(instance.running(), "claimsync stopped on rejected credentials");

    // The platform team rotates the Secret: claimsync picks the new token up without a restart.
    secrets
        .replace("controlplane", &PostParams::default(), &{
            let mut s = secret(&second_token);
            s.metadata.resource_version = secrets.get("controlplane").await.unwrap().resource_version();
            s
        })
        .await
        .unwrap();
    wait_ready(&local, "before", &instance).await;
    apply("after").await;
    wait_ready(&local, "after", &instance).await;
    assert!(instance.running());
    for name in [&first, &second] {
        let _ = Api::<ClusterRoleBinding>::all(cp.clone())
            .delete(name, &DeleteParams::default())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_brings_lost_claims_back_without_a_new_composite() {
    restore_lost(KindFamily::Claim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_brings_lost_xrs_back_to_the_same_twins() {
    if support::env().crossplane_v2() {
        restore_lost(KindFamily::NamespacedXr).await;
    }
}

async fn restore_lost(family: KindFamily) {
    let _env = support::env_shared().await;
    let (mut instance, kind, ns, claims) = fleet_of(family, "restore", "Keeper", false, "k", 2).await;
    let (app, cp) = (instance.app.clone(), instance.control_plane.clone());
    patch_claim(
        &kind,
        &app,
        &claims[0],
        json!({"metadata": {"labels": {"team": "blue"}}, "spec": {"color": "red"}}),
    )
    .await;
    wait_converged(
        &kind,
        &instance,
        "the claims to be replicated",
        Duration::from_secs(120),
    )
    .await;
    let before: BTreeMap<String, Option<String>> = twins(&kind, &instance)
        .await
        .into_iter()
        .map(|(name, twin)| (name, twin.spec_ref()))
        .collect();

    // 1. Lost with their CRD (deleted by someone): claimsync puts the CRD back, restore the claims.
    env()
        .kubectl(&env().app_kubeconfig, &["delete", "crd", &kind.crd_name, "--wait=true"])
        .await
        .unwrap();
    kind.wait_local(&app).await;
    let said = instance.restore(&[]).await;
    assert_eq!(said.matches("restored").count(), 2, "{said}");
    wait_converged(
        &kind,
        &instance,
        "the restored claims to be adopted",
        Duration::from_secs(120),
    )
    .await;
    let k0 = kind.claims(&app, &ns).get("k0").await.unwrap();
    assert_eq!(k0.labels().get("team").map(String::as_str), Some("blue"));
    assert_eq!(k0.data["spec"]["color"], "red");
    assert_twins_bound_as_before(&kind, &instance, &before).await;

    // 2. Wiped without claimsync seeing a delete (finalizers removed by hand while it was down; with it running, it
    // may put its finalizer back between the patch and the delete, and then it sees a delete and rightly takes the
    // twin): the twins are reported as orphans and kept; restore gives the claims back.
    instance.stop().await;
    for claim in &claims {
        let (ns, name) = claim.split_once('/').unwrap();
        let api = kind.claims(&app, ns);
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    instance.start().await;
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(app.clone(), &instance.own_namespace);
    wait_for("the orphaned twins to be reported", Duration::from_secs(90), || async {
        let list = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        let orphans: BTreeSet<String> = list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("OrphanedTwin"))
            .filter_map(|e| e.note.clone())
            .filter(|n| n.contains(&kind.group))
            .collect();
        (orphans.len() == 2).then_some(()).ok_or(format!("{orphans:?}"))
    })
    .await;
    assert_eq!(twins(&kind, &instance).await.len(), 2, "orphaned twins are kept");
    let said = instance.restore(&[]).await;
    assert_eq!(said.matches("restored").count(), 2, "{said}");
    wait_converged(
        &kind,
        &instance,
        "the restored claims to be adopted",
        Duration::from_secs(120),
    )
    .await;
    assert_twins_bound_as_before(&kind, &instance, &before).await;
    kind.withdraw(&cp).await;
}

trait ResourceRef {
    fn spec_ref(&self) -> Option<String>;
}

impl ResourceRef for DynamicObject {
    /// The composite a claim is bound to (a namespaced XR is its own: its uid).
    fn spec_ref(&self) -> Option<String> {
        match self.data["spec"]["resourceRef"]["name"].as_str() {
            Some(name) => Some(name.to_string()),
            None => self.uid(),
        }
    }
}

async fn assert_twins_bound_as_before(kind: &TestKind, instance: &Instance, before: &BTreeMap<String, Option<String>>) {
    let after: BTreeMap<String, Option<String>> = twins(kind, instance)
        .await
        .into_iter()
        .map(|(name, twin)| (name, twin.spec_ref()))
        .collect();
    assert_eq!(&after, before, "each twin keeps its composite");
}
