//! Running claimsync as a service: the ops endpoint (health, readiness, metrics that count claims by phase, syncs
//! and API calls), and leader election among replicas: one writes, the standby takes over within seconds when the
//! leader is killed, no claim is written twice, and a leader cut off from the app cluster stops writing before the
//! standby starts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use claimsync::model::naming::remote_claim_name;
use kube::api::{Api, DynamicObject};

use crate::claim_support::{cluster_claim_yaml, kubectl_apply, wait_ready};
use crate::instance::{Instance, no_claim_kept, tail, tracked_entries};
use crate::support::{self, audit_writes, wait_for};
use crate::testenv_control_plane::kubernetes_cluster_resource;

/// The value of the metric sample `line_start` (name and labels), if present.
fn sample(metrics: &str, line_start: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_endpoint_answers_health_readiness_and_metrics() {
    let _env = support::env_shared().await;
    let (instance, _ns, _local) = crate::claim_support::ready_instance("ops", "counted").await;
    assert_eq!(instance.ops("/healthz").await.unwrap(), "ok\n");
    let ready = instance.ops("/readyz").await.unwrap();
    assert!(
        ready.contains("control plane link: up") && ready.contains("leader: yes"),
        "{ready}"
    );
    let metrics = instance.ops("/metrics").await.unwrap();
    let checks = [
        r#"claimsync_claims{kind="KubernetesCluster",phase="Synced"}"#,
        r#"claimsync_syncs_total{direction="up"}"#,
        r#"claimsync_syncs_total{direction="down"}"#,
        r#"claimsync_api_requests_total{cluster="controlplane",verb="POST",code="201"}"#,
        r#"claimsync_api_requests_total{cluster="app",verb="WATCH",code="200"}"#,
        "claimsync_link_up",
        "claimsync_leader",
        "claimsync_initial_sync_done",
        // The claim's create, and the twin's, each waited for a reconcile.
        "claimsync_queue_wait_seconds_count",
    ];
    for check in checks {
        assert!(
            sample(&metrics, check).is_some_and(|v| v >= 1.0),
            "{check} missing or 0 in:\n{metrics}"
        );
    }
    assert!(sample(&metrics, "claimsync_journal_size_bytes").is_some(), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_keyed_by_claims_lose_their_entries_when_the_claims_go() {
    let _env = support::env_shared().await;
    let (instance, ns, local) = crate::claim_support::ready_instance("maps", "first").await;
    for i in 0..4 {
        crate::claim_support::apply_claim(&ns, &format!("more-{i}")).await;
    }
    for i in 0..4 {
        wait_ready(&local, &format!("more-{i}"), &instance).await;
    }
    let with_claims = tracked_entries(&instance.ops("/metrics").await.unwrap());
    assert_eq!(with_claims.get("claim_phases"), Some(&5.0), "{with_claims:?}");
    assert_eq!(with_claims.get("twin_origins"), Some(&5.0), "{with_claims:?}");
    support::env()
        .kubectl(
            &support::env().app_kubeconfig,
            &["-n", &ns, "delete", "kubernetesclusters", "--all"],
        )
        .await
        .unwrap();
    wait_for(
        "every map keyed by claims or twins to be empty",
        Duration::from_secs(60),
        || async {
            let now = tracked_entries(&instance.ops("/metrics").await?);
            no_claim_kept(&now).then_some(()).ok_or(format!("{now:?}"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_when_the_leader_dies_and_nothing_is_written_twice() {
    let _env = support::env_shared().await;
    let mut first = Instance::new("lead").await;
    let ns = first.namespace("lead").await;
    let mut second = first.replica("b");
    first.start_in_sync(&["--leader-elect"]).await;
    second.start_with(&["--leader-elect"]).await;
    wait_leading(&second, "the second replica to stand by", "no").await;

    let local = Api::<DynamicObject>::namespaced_with(first.app.clone(), &ns, &kubernetes_cluster_resource());
    let apply = |name: String| {
        let ns = ns.clone();
        async move {
            kubectl_apply(&cluster_claim_yaml(
                &ns,
                &name,
                &support::unique("kc"),
                &format!("{name}-conn"),
                "",
            ))
            .await
            .unwrap();
        }
    };
    let before: Vec<String> = (0..4).map(|i| format!("before-{i}")).collect();
    for name in &before {
        apply(name.clone()).await;
    }
    for name in &before {
        wait_ready(&local, name, &first).await;
    }

    // The leader dies (kill -9); the standby takes the lease once it expires, and carries on.
    first.stop().await;
    let killed = Instant::now();
    wait_leading(&second, "the standby to lead", "yes").await;
    let takeover = killed.elapsed();
    let after: Vec<String> = (0..3).map(|i| format!("after-{i}")).collect();
    for name in &after {
        apply(name.clone()).await;
    }
    for name in &after {
        wait_ready(&local, name, &second).await;
    }

    // Every twin was written once (its create): by the leader of its time, never by both; the new leader, with a
    // journal of its own to fill, found the old leader's twins in place.
    let twins: Vec<String> = before
        .iter()
        .chain(&after)
        .map(|name| remote_claim_name(name, &ns, &first.id))
        .collect();
    let mut applies: BTreeMap<String, usize> = twins.iter().map(|t| (t.clone(), 0)).collect();
    for write in audit_writes("controlplane", "admin") {
        if matches!(write.verb.as_str(), "create" | "patch")
            && write.resource == "kubernetesclusters"
            && let Some(count) = write.name.as_ref().and_then(|n| applies.get_mut(n))
        {
            *count += 1;
        }
    }
    assert!(applies.values().all(|n| *n == 1), "writes per twin: {applies:?}");
    eprintln!("FIGURE leader election: the standby led {takeover:?} after the leader was killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_gracefully_hands_over_at_once() {
    let _env = support::env_shared().await;
    let mut first = Instance::new("handover").await;
    let mut second = first.replica("b");
    first.start_in_sync(&["--leader-elect"]).await;
    second.start_with(&["--leader-elect"]).await;
    wait_leading(&second, "the second replica to stand by", "no").await;
    // A rollout: SIGTERM. The lease is released, so the standby need not wait for it to expire (10 s).
    let stopped = Instant::now();
    first.terminate().await;
    wait_leading(&second, "the standby to lead", "yes").await;
    let handover = stopped.elapsed();
    assert!(
        handover < Duration::from_secs(8),
        "the standby led {handover:?} after the leader stopped: the lease was not released\n{}",
        tail(&first.log(), 5)
    );
    assert!(
        first.log().contains("released the leader lease"),
        "{}",
        tail(&first.log(), 5)
    );
    eprintln!("FIGURE leader election: after a graceful stop the standby led {handover:?} later");
}

/// Writes a replica made to a cluster, by verb and code, leaving out the ones its write fence refused (those never
/// left the process).
fn writes_made(metrics: &str, cluster: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!(r#"claimsync_api_requests_total{{cluster="{cluster}","#)))
        .filter(|l| {
            ["POST", "PUT", "PATCH", "DELETE"]
                .iter()
                .any(|v| l.contains(&format!(r#"verb="{v}""#)))
        })
        .filter(|l| !l.contains(r#"code="fenced""#))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once(' ')?;
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_app_cluster_stops_writing_before_the_standby_leads() {
    let _env = support::env_shared().await;
    let mut first = Instance::new("partition").await;
    let ns = first.namespace("part").await;
    let second = first.replica("b");
    let mut second = second;
    // The first replica reaches the app cluster through a link the test can cut; both reach the control plane.
    let app_link = support::link_to(&first.id, "app");
    first.app_kubeconfig = app_link.kubeconfig.clone();
    first.start_in_sync(&["--leader-elect"]).await;
    second.start_with(&["--leader-elect"]).await;
    wait_leading(&second, "the second replica to stand by", "no").await;

    let local = Api::<DynamicObject>::namespaced_with(first.app.clone(), &ns, &kubernetes_cluster_resource());
    let remote = Api::<DynamicObject>::namespaced_with(
        first.control_plane.clone(),
        &first.claim_namespace,
        &kubernetes_cluster_resource(),
    );
    for name in ["keep", "doomed"] {
        crate::claim_support::apply_claim(&ns, name).await;
    }
    for name in ["keep", "doomed"] {
        wait_ready(&local, name, &first).await;
    }
    let (keep_twin, doomed_twin) = (
        remote_claim_name("keep", &ns, &first.id),
        remote_claim_name("doomed", &ns, &first.id),
    );

    // A partition: the leader's app link hangs (nothing answered, nothing closed); its control plane link works.
    app_link_action(&app_link, "cut");
    let cut = Instant::now();
    wait_leading(&first, "the cut-off leader to stand down", "no").await;
    let stood_down = cut.elapsed();
    let writes_at_stand_down = writes_made(&first.ops("/metrics").await.unwrap(), "controlplane");
    let app_writes_at_stand_down = writes_made(&first.ops("/metrics").await.unwrap(), "app");
    wait_leading(&second, "the standby to lead", "yes").await;
    let standby_led = cut.elapsed();
    assert!(
        stood_down < standby_led,
        "the old leader stood down {stood_down:?} after the cut, the standby led {standby_led:?} after it"
    );

    // Through the new leader: a user deletes one claim and edits the other.
    let kubectl = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::env().kubectl(&support::env().app_kubeconfig, &args).await
    };
    kubectl(vec![
        "-n".into(),
        ns.clone(),
        "delete".into(),
        "kubernetesclusters".into(),
        "doomed".into(),
        "--wait=false".into(),
    ])
    .await
    .unwrap();
    kubectl(vec![
        "-n".into(),
        ns.clone(),
        "patch".into(),
        "kubernetesclusters".into(),
        "keep".into(),
        "--type=merge".into(),
        "-p".into(),
        r#"{"spec":{"parameters":{"nodes":{"count":5}}}}"#.into(),
    ])
    .await
    .unwrap();
    let nodes = |claim: &DynamicObject| claim.data["spec"]["parameters"]["nodes"]["count"].as_i64();
    wait_for(
        "the new leader to delete the twin and the claim, and to replicate the edit",
        Duration::from_secs(60),
        || async {
            let doomed_gone = remote.get_opt(&doomed_twin).await.map_err(|e| e.to_string())?.is_none()
                && local.get_opt("doomed").await.map_err(|e| e.to_string())?.is_none();
            let twin = remote.get(&keep_twin).await.map_err(|e| e.to_string())?;
            (doomed_gone && nodes(&twin) == Some(5)).then_some(()).ok_or(format!(
                "doomed gone: {doomed_gone}, keep's twin nodes {:?}\n{}",
                nodes(&twin),
                tail(&second.log(), 10)
            ))
        },
    )
    .await;

    // The partition heals: the old leader reads the lease again and stays a standby.
    app_link_action(&app_link, "restore");
    wait_for(
        "the old leader to see the new holder of the lease",
        Duration::from_secs(30),
        || async {
            let ready = first.ops("/readyz").await?;
            (ready.contains("leader: no") && ready.contains("lease: held by") && !ready.contains("(this replica)"))
                .then_some(())
                .ok_or(format!("{ready}\n{}", tail(&first.log(), 5)))
        },
    )
    .await;
    // The new leader's next pass over the kept claim (a user's touch) ends with the edit in place.
    kubectl(vec![
        "-n".into(),
        ns.clone(),
        "annotate".into(),
        "kubernetesclusters".into(),
        "keep".into(),
        "touched=after-heal".into(),
    ])
    .await
    .unwrap();
    wait_for(
        "the new leader to replicate a touch after the heal",
        Duration::from_secs(60),
        || async {
            let twin = remote.get(&keep_twin).await.map_err(|e| e.to_string())?;
            let touched = twin
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("touched"))
                .is_some();
            touched
                .then_some(())
                .ok_or(format!("not yet\n{}", tail(&second.log(), 5)))
        },
    )
    .await;

    // Nothing was re-created or reverted, and the old leader wrote nothing since it stood down.
    assert!(
        remote.get_opt(&doomed_twin).await.unwrap().is_none(),
        "the deleted claim's twin came back"
    );
    assert!(
        local.get_opt("doomed").await.unwrap().is_none(),
        "the deleted claim came back"
    );
    assert_eq!(
        nodes(&remote.get(&keep_twin).await.unwrap()),
        Some(5),
        "the edit was reverted remotely"
    );
    assert_eq!(
        nodes(&local.get("keep").await.unwrap()),
        Some(5),
        "the edit was reverted locally"
    );
    let metrics = first.ops("/metrics").await.unwrap();
    assert_eq!(
        writes_made(&metrics, "controlplane"),
        writes_at_stand_down,
        "the old leader wrote to the control plane"
    );
    assert_eq!(
        writes_made(&metrics, "app"),
        app_writes_at_stand_down,
        "the old leader wrote to the app cluster"
    );
    assert!(first.running(), "the old leader exited\n{}", tail(&first.log(), 10));
    eprintln!(
        "FIGURE partition: the cut-off leader stood down {stood_down:?} after the cut, the standby led {standby_led:?} after it"
    );
}

fn app_link_action(link: &support::Link, action: &str) {
    support::env().script(&["link", action, &link.name]);
}

/// Waits until a replica's readiness says `leader: <yes or no>`.
async fn wait_leading(replica: &Instance, what: &str, leading: &str) {
    wait_for(what, Duration::from_secs(30), || async {
        let ready = replica.ops("/readyz").await?;
        ready
            .contains(&format!("leader: {leading}"))
            .then_some(())
            .ok_or(format!("{ready}\n{}", tail(&replica.log(), 5)))
    })
    .await;
}
