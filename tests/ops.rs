//! Running claimsync as a service: the ops endpoint (health, readiness, metrics that count claims by phase, syncs
//! and API calls), and leader election among replicas: one writes, the standby takes over within seconds when the
//! leader is killed, and no claim is written twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use claimsync::model::naming::remote_claim_name;
use kube::api::{Api, DynamicObject};

use crate::claim_support::{cluster_claim_yaml, kubectl_apply, wait_ready};
use crate::instance::{Instance, tail};
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
        r#"claimsync_api_requests_total{cluster="controlplane",verb="PATCH""#,
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

    // Every twin was applied once: by the leader of its time, never by both.
    let twins: Vec<String> = before
        .iter()
        .chain(&after)
        .map(|name| remote_claim_name(name, &ns, &first.id))
        .collect();
    let mut applies: BTreeMap<String, usize> = twins.iter().map(|t| (t.clone(), 0)).collect();
    for write in audit_writes("controlplane", "admin") {
        if write.verb == "patch"
            && write.resource == "kubernetesclusters"
            && let Some(count) = write.name.as_ref().and_then(|n| applies.get_mut(n))
        {
            *count += 1;
        }
    }
    assert!(applies.values().all(|n| *n == 1), "applies per twin: {applies:?}");
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
