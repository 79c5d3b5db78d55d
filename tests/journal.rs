//! The journal end to end: a restart against clusters in sync writes nothing, with the journal and without it,
//! and mirrors no Event twice. Writes are counted by the API servers themselves (and by claimsync's own count
//! where Crossplane writes the same resources the same way: v2 XRs on the control plane).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};

use crate::claim_support::{apply_claim, wait_ready, wait_secret};
use crate::instance::{Instance, metric_sum, tail};
use crate::support::{self, wait_for};
use crate::testenv_control_plane::kubernetes_cluster_resource;

/// `apiserver_request_total` by "resource verb", over the given verbs and resources.
async fn requests(client: &Client, verbs: &[&str], resources: &[&str]) -> BTreeMap<String, u64> {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.expect("read /metrics");
    let label = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        Some(line[start..].split('"').next()?.to_string())
    };
    let mut counts = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let (Some(verb), Some(resource)) = (label(line, "verb"), label(line, "resource")) else {
            continue;
        };
        if verbs.contains(&verb.as_str()) && resources.contains(&resource.as_str()) {
            let value = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
            *counts.entry(format!("{resource} {verb}")).or_insert(0) += value;
        }
    }
    counts
}

type Counts = (BTreeMap<String, u64>, BTreeMap<String, u64>);

/// Writes claimsync could make, as the API servers count them: creates, updates and applies of the app cluster's
/// claims, Secrets and CRDs; on the control plane, creates and applies of claims (Crossplane itself only updates
/// them). Deletes are claimsync's own count's to say. Events are left out: Crossplane may
/// record something new while claimsync is down, and mirroring that is no redundant write; that nothing is
/// mirrored twice is checked on the Events themselves.
async fn writes(instance: &Instance) -> Counts {
    let app_resources = [
        "kubernetesclusters",
        "postgresqlinstances",
        "webapps",
        "secrets",
        "customresourcedefinitions",
    ];
    let app = requests(&instance.app, &["POST", "PUT", "PATCH", "APPLY"], &app_resources).await;
    // Not DELETE: a namespace another test removed is emptied by its namespace controller meanwhile (seen: claims
    // deleted on the control plane during this test's window). Claimsync's own count says its deletes.
    let remote_verbs = ["POST", "PATCH", "APPLY"];
    let remote = requests(
        &instance.control_plane,
        &remote_verbs,
        // Not webapps: Crossplane v2 writes its XRs by server-side apply too (every poll), so the API server's
        // count cannot tell claimsync's applies of XR twins from Crossplane's; claimsync's own count says those.
        &["kubernetesclusters", "postgresqlinstances"],
    )
    .await;
    (app, remote)
}

/// Fails if any Event mirrored from the control plane stands twice on the same claim.
async fn assert_events_mirrored_once(instance: &Instance, ns: &str, what: &str) {
    let events = Api::<Event>::namespaced(instance.app.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    for e in events
        .items
        .iter()
        .filter(|e| e.note.as_deref().is_some_and(|n| n.starts_with("[control plane] ")))
    {
        let regarding = e.regarding.as_ref().and_then(|r| r.uid.clone()).unwrap_or_default();
        let key = (
            regarding,
            e.reason.clone().unwrap_or_default(),
            e.note.clone().unwrap_or_default(),
        );
        assert!(seen.insert(key.clone()), "{what}: mirrored twice: {key:?}");
    }
}

async fn assert_no_writes_after_start(instance: &mut Instance, what: &str) {
    let before = writes(instance).await;
    instance.start().await;
    // Watches may still deliver a late event; watch the counters for a while after in-sync.
    let settle = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < settle {
        let now = writes(instance).await;
        assert_eq!(
            now,
            before,
            "{what}: claimsync wrote (app, control plane)\n{}",
            tail(&instance.log(), 20)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // And by claimsync's own count (it started afresh): no write to the control plane at all, XR twins included,
    // and no delete in the app cluster.
    for (cluster, verb) in [
        ("controlplane", "POST"),
        ("controlplane", "PUT"),
        ("controlplane", "PATCH"),
        ("controlplane", "DELETE"),
        ("app", "DELETE"),
    ] {
        assert_eq!(
            requests_made(instance, cluster, verb).await,
            0.0,
            "{what}: claimsync sent {verb} to the {cluster}\n{}",
            tail(&instance.log(), 20)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_against_in_sync_clusters_writes_nothing() {
    // Exclusive: other tests' writes would show in the API servers' counters.
    let _env = support::env_exclusive().await;
    let mut instance = Instance::new("restart").await;
    instance.start().await;
    let ns = instance.namespace("restart").await;
    apply_claim(&ns, "one").await;
    apply_claim(&ns, "two").await;
    let kc = kubernetes_cluster_resource();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kc);
    for name in ["one", "two"] {
        wait_ready(&local, name, &instance).await;
        wait_secret(&instance.app, &ns, &format!("{name}-conn")).await;
    }
    // On Crossplane v2, a namespaced XR with its connection Secret too.
    let web = crate::xrs::web_app_resource();
    let local_xrs = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &web);
    let v2 = support::env().crossplane_v2();
    if v2 {
        crate::xrs::apply_web_app(
            &crate::support::env().app_kubeconfig,
            &crate::xrs::web_app_yaml(&ns, "web", "nginx:1.27", ""),
        )
        .await;
        wait_ready(&local_xrs, "web", &instance).await;
        wait_secret(&instance.app, &ns, "web-conn").await;
    }
    // Let Crossplane finish its own follow-up work, then restart claimsync.
    wait_for("the clusters to be quiet", Duration::from_secs(60), || async {
        let first = writes(&instance).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let second = writes(&instance).await;
        (first == second)
            .then_some(())
            .ok_or(format!("{first:?} -> {second:?}"))
    })
    .await;
    instance.stop().await;
    assert_no_writes_after_start(&mut instance, "restart with the journal").await;
    // Nor into its journal: confirming a claim in sync rewrites no record.
    let metrics = instance.ops("/metrics").await.unwrap();
    assert!(
        metrics.lines().any(|l| l == "claimsync_journal_claim_writes_total 0"),
        "restart with the journal rewrote claim records:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("journal"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    assert_events_mirrored_once(&instance, &ns, "restart with the journal").await;
    instance.stop().await;
    std::fs::remove_dir_all(&instance.state_dir).unwrap();
    assert_no_writes_after_start(&mut instance, "restart without the journal").await;
    assert_events_mirrored_once(&instance, &ns, "restart without the journal").await;
    for name in ["one", "two"] {
        wait_ready(&local, name, &instance).await;
    }
    if v2 {
        wait_ready(&local_xrs, "web", &instance).await;
    }
}

/// The sum of claimsync's own count of API requests to `cluster` with `verb` (every response code).
async fn requests_made(instance: &Instance, cluster: &str, verb: &str) -> f64 {
    let metrics = instance.ops("/metrics").await.unwrap_or_default();
    metric_sum(
        &metrics,
        &format!(r#"claimsync_api_requests_total{{cluster="{cluster}",verb="{verb}","#),
    )
}

/// A running instance, a claim kind of its own offered and established locally, a namespace it replicates, and
/// that namespace's claims of the kind.
async fn instance_with_kind(
    prefix: &str,
    kind: &str,
) -> (Instance, crate::platform_support::TestKind, String, Api<DynamicObject>) {
    let mut instance = Instance::new(prefix).await;
    instance.start().await;
    let kind =
        crate::platform_support::TestKind::offer(&instance.control_plane, prefix, kind, serde_json::json!({})).await;
    kind.wait_local(&instance.app).await;
    let ns = instance.namespace(prefix).await;
    let claims = kind.claims(&instance.app, &ns);
    (instance, kind, ns, claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_lists_per_kind_not_a_get_per_claim() {
    let _env = support::env_shared().await;
    let (mut instance, kind, ns, claims) = instance_with_kind("reads", "Reader").await;
    let count = 30;
    for i in 0..count {
        claims
            .create(&PostParams::default(), &kind.claim(&ns, &format!("r{i}")))
            .await
            .unwrap();
    }
    for i in 0..count {
        wait_ready(&claims, &format!("r{i}"), &instance).await;
    }
    // Restarted with its journal, then without: each claim is confirmed in sync from the watch caches. Only the
    // test's own group is replicated, so that the kinds other tests offer meanwhile (each costs a GET of its CRD:
    // the catalog reads a claim CRD whole, the others as metadata only) do not count.
    for journal in ["with", "without"] {
        instance.stop().await;
        if journal == "without" {
            std::fs::remove_dir_all(&instance.state_dir).unwrap();
        }
        instance.start_in_sync(&["--claim-groups", &kind.group]).await;
        let gets = requests_made(&instance, "controlplane", "GET").await;
        let lists = requests_made(&instance, "controlplane", "LIST").await;
        let metrics = instance.ops("/metrics").await.unwrap();
        let offered = metric_sum(&metrics, r#"claimsync_claim_kinds{state="offered"}"#);
        eprintln!(
            "restart {journal} the journal: {gets} GETs and {lists} LISTs on the control plane for {count} claims of \
             {offered} offered kinds"
        );
        // No GET per claim: a few GETs of single objects (the claim namespace, the probe's, the kind's CRD)
        // whatever the count.
        assert!(
            gets <= 6.0,
            "restart {journal} the journal: {gets} GETs of single objects on the control plane for {count} claims"
        );
        // One LIST per offered kind and a few more (the catalog, the caches of CRDs, XRDs and Secrets, the Events); a
        // kind another test left behind, resumed from its local CRD, is listed once (a 404) before the catalog finds
        // it withdrawn, so only answered LISTs count.
        let answered_lists = metric_sum(
            &metrics,
            r#"claimsync_api_requests_total{cluster="controlplane",verb="LIST",code="200"}"#,
        );
        assert!(
            answered_lists <= offered + 8.0,
            "restart {journal} the journal: {answered_lists} answered LISTs on the control plane for {count} claims \
             of {offered} offered kinds"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_claim_costs_no_read_of_the_control_plane() {
    let _env = support::env_shared().await;
    // Only the test's own group: the catalog reads an offered kind's CRD when it changes, and other tests' kinds
    // come and go meanwhile (a CRD deleted between its event and the read is a 404 too).
    let mut instance = Instance::new("noread").await;
    let kind =
        crate::platform_support::TestKind::offer(&instance.control_plane, "noread", "Fresh", serde_json::json!({}))
            .await;
    instance.start_in_sync(&["--claim-groups", &kind.group]).await;
    kind.wait_local(&instance.app).await;
    let ns = instance.namespace("noread").await;
    let claims = kind.claims(&instance.app, &ns);
    // Once the caches are filled, a new claim's twin is known to be absent from the twin cache (which holds every
    // twin of this cluster): no GET, which would answer 404, before the create.
    let missing = || async {
        let metrics = instance.ops("/metrics").await.unwrap_or_default();
        metric_sum(
            &metrics,
            r#"claimsync_api_requests_total{cluster="controlplane",verb="GET",code="404"}"#,
        )
    };
    let writes = || async {
        (
            requests_made(&instance, "controlplane", "POST").await,
            requests_made(&instance, "controlplane", "PATCH").await,
        )
    };
    // A first claim, so that the kind's twin cache has listed (before, a reconcile asks the API server instead).
    claims
        .create(&PostParams::default(), &kind.claim(&ns, "first"))
        .await
        .unwrap();
    wait_ready(&claims, "first", &instance).await;
    let (missing_before, writes_before) = (missing().await, writes().await);
    let count = 10;
    for i in 0..count {
        claims
            .create(&PostParams::default(), &kind.claim(&ns, &format!("fresh{i}")))
            .await
            .unwrap();
    }
    for i in 0..count {
        wait_ready(&claims, &format!("fresh{i}"), &instance).await;
    }
    assert_eq!(
        missing().await - missing_before,
        0.0,
        "GETs of twins that did not exist yet"
    );
    // One create per twin, as a plain client would make it, and nothing written to it after.
    let writes_after = writes().await;
    assert_eq!(
        (writes_after.0 - writes_before.0, writes_after.1 - writes_before.1),
        (count as f64, 0.0),
        "(POST, PATCH) on the control plane for {count} new claims"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_ahead_of_the_app_cluster_delays_a_change_by_seconds_not_for_ever() {
    let _env = support::env_shared().await;
    let (mut instance, kind, ns, claims) = instance_with_kind("ahead", "Sprocket").await;
    claims
        .create(&PostParams::default(), &kind.claim(&ns, "s"))
        .await
        .unwrap();
    wait_ready(&claims, "s", &instance).await;

    // The app cluster is restored from a backup (its resource versions are now behind what the journal recorded),
    // and the journal's record was written by a clock an hour ahead of this one.
    instance.stop().await;
    let journal = claimsync_state::Journal::open(&instance.state_dir).unwrap();
    let key = claimsync_state::ClaimKey::new(&kind.group, &kind.kind, &ns, "s");
    let hour_ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    // (claimsync was killed: its last record may not have reached the disk, so the test writes the one it needs.)
    let uid = claims.get("s").await.unwrap().metadata.uid.unwrap();
    journal
        .update_claim(&key, |record| {
            let mut record = record.unwrap_or_default();
            record.local_uid = uid.clone();
            record.local_resource_version = "999999999999".into();
            record.updated_unix = hour_ahead;
            Some(record)
        })
        .unwrap();
    journal.flush().unwrap();
    drop(journal);

    claims
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"size": 2}})),
        )
        .await
        .unwrap();
    instance.start().await;
    let twins = kind.claims(&instance.control_plane, &instance.claim_namespace);
    let twin_name = claimsync::model::naming::remote_claim_name("s", &ns, &instance.id);
    wait_for("the edit to reach the twin", Duration::from_secs(60), || async {
        let twin = twins.get(&twin_name).await.map_err(|e| e.to_string())?;
        (twin.data["spec"]["size"] == 2)
            .then_some(())
            .ok_or_else(|| format!("{}\n{}", twin.data["spec"], tail(&instance.log(), 8)))
    })
    .await;
}
