//! `claimsync run` as an operator starts it: the control plane's kubeconfig from a Secret, and bad input (a claim
//! the CRD rejects, an unreachable control plane, a missing claim namespace, a missing flag) as clear errors that
//! touch nothing.

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use serde_json::json;

use crate::claim_support::{apply_claim, cluster_claim_yaml, kubectl_apply, wait_ready};
use crate::instance::{INSTANCE_LABEL, Instance};
use crate::support::{self, env, wait_for};
use crate::testenv_control_plane::kubernetes_cluster_resource;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_kubeconfig_can_come_from_a_secret() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("kcfg").await;
    let ns = instance.namespace("kcfg").await;
    let kubeconfig = std::fs::read_to_string(&env().control_plane_kubeconfig).unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "controlplane"}, "stringData": {"config": kubeconfig}
    }))
    .unwrap();
    Api::<Secret>::namespaced(instance.app.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    instance.control_plane_secret = Some(format!("{ns}/controlplane:config"));
    instance.start().await;
    apply_claim(&ns, "viasecret").await;
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kubernetes_cluster_resource());
    wait_ready(&local, "viasecret", &instance).await;
}

/// `claimsync run`'s arguments for the two kubeconfigs, the claim namespace and the journal given, then `rest`.
fn against<'a>(
    app: &'a str,
    control_plane: &'a str,
    claim_namespace: &'a str,
    state: &'a str,
    rest: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "--app-kubeconfig",
        app,
        "--control-plane-kubeconfig",
        control_plane,
        "--claim-namespace",
        claim_namespace,
        "--state-dir",
        state,
    ];
    args.extend_from_slice(rest);
    args
}

async fn run_claimsync(args: &[&str]) -> (i32, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_claimsync"))
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("claimsync exits on bad input")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error_that_touches_nothing() {
    let _env = support::env_shared().await;
    let instance = Instance::new("bad").await;
    let ns = instance.namespace("bad").await;

    // A claim the local CRD rejects is refused with the field named; the valid one beside it is stored.
    let yaml = cluster_claim_yaml(&ns, "huge", "huge", "huge-conn", "").replace("size: small", "size: enormous");
    let rejected = kubectl_apply(&yaml).await.expect_err("the CRD rejects size: enormous");
    assert!(rejected.contains("spec.parameters.nodes.size"), "{rejected}");
    apply_claim(&ns, "fine").await;
    let kc = kubernetes_cluster_resource();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kc);
    let before = local.get("fine").await.unwrap();

    let app = env().app_kubeconfig.to_str().unwrap().to_string();
    let control_plane = env().control_plane_kubeconfig.to_str().unwrap().to_string();
    let state = instance.state_dir.to_str().unwrap().to_string();
    // Scoped to this test's namespace like every instance, so that a run that wrongly started would show here.
    let selector = format!("{INSTANCE_LABEL}={}", instance.id);
    let scope = [
        "--namespace-selector",
        selector.as_str(),
        "--cluster-id",
        instance.id.as_str(),
    ];

    // A control plane kubeconfig file that is not there: a configuration error (an unreachable control plane is
    // not one: claimsync then starts offline, see offline.rs).
    let missing = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such.kubeconfig");
    let (code, stderr) = run_claimsync(&against(
        &app,
        missing.to_str().unwrap(),
        &instance.claim_namespace,
        &state,
        &scope,
    ))
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--control-plane-kubeconfig") && stderr.contains("no-such.kubeconfig"),
        "{stderr}"
    );

    // A claim namespace that does not exist.
    let (code, stderr) = run_claimsync(&against(&app, &control_plane, "no-such-namespace", &state, &scope)).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("\"no-such-namespace\" does not exist on the control plane"),
        "{stderr}"
    );

    // No claim namespace at all.
    let (code, stderr) = run_claimsync(&["--app-kubeconfig", &app, "--control-plane-kubeconfig", &control_plane]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--claim-namespace"), "{stderr}");

    // A journal cache of nothing (or more than 64 GiB) is refused by name, before anything starts.
    let cache = [&scope[..], &["--journal-cache-mib", "0"]].concat();
    let (code, stderr) = run_claimsync(&against(
        &app,
        &control_plane,
        &instance.claim_namespace,
        &state,
        &cache,
    ))
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--journal-cache-mib"), "{stderr}");

    // None of it touched the claim that was there, replicated anything, or made a journal.
    let after = local.get("fine").await.unwrap();
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "the local claim was written"
    );
    assert!(after.finalizers().is_empty(), "{:?}", after.finalizers());
    let remote = Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &kc);
    let twins = remote.list(&ListParams::default()).await.unwrap();
    assert!(twins.items.is_empty(), "a twin was made: {:?}", twins.items);
    assert!(!instance.state_dir.exists());
}

/// Runs a claimsync subcommand other than `run` against the env's app cluster; returns (exit code, stdout, stderr).
async fn claimsync(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_claimsync"))
        .args(args)
        .arg("--app-kubeconfig")
        .arg(&env().app_kubeconfig)
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("claimsync stops")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_sync_table_and_disconnect_lets_go_of_every_claim() {
    let _env = support::env_shared().await;
    let (mut instance, ns, local) = crate::claim_support::ready_instance("disc", "kept").await;
    apply_claim(&ns, "also").await;
    wait_ready(&local, "also", &instance).await;

    let (code, table, stderr) = claimsync(&["status", "--namespace", &instance.own_namespace, "-n", &ns]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(table.lines().next().unwrap().contains("REMOTE"), "{table}");
    for name in ["kept", "also"] {
        let twin = claimsync::model::naming::remote_claim_name(name, &ns, &instance.id);
        let row = table
            .lines()
            .find(|l| l.contains(&twin))
            .unwrap_or_else(|| panic!("{twin} in {table}"));
        assert!(row.contains("KubernetesCluster") && row.contains("Synced"), "{row}");
    }

    // Uninstall runs disconnect while claimsync still runs: it stops writing and every claim is let go.
    let (code, out, stderr) = claimsync(&["disconnect", "--namespace", &instance.own_namespace]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}", stdout = out);
    assert!(out.contains("released 2 KubernetesCluster claim(s)"), "{out}");
    wait_for("claimsync to stop writing", Duration::from_secs(30), || async {
        let ready = instance.ops("/readyz").await?;
        ready.contains("leader: no").then_some(()).ok_or(ready)
    })
    .await;
    for name in ["kept", "also"] {
        let claim = local.get(name).await.unwrap();
        assert!(claim.finalizers().is_empty(), "{name}: {:?}", claim.finalizers());
    }
    // The local claims can go; their twins stay, untouched.
    let remote = Api::<DynamicObject>::namespaced_with(
        instance.control_plane.clone(),
        &instance.claim_namespace,
        &kubernetes_cluster_resource(),
    );
    let twins_before = remote.list(&ListParams::default()).await.unwrap();
    for name in ["kept", "also"] {
        local.delete(name, &kube::api::DeleteParams::default()).await.unwrap();
        support::wait_gone("the local claim to go", Duration::from_secs(30), &local, name, |_| {
            "still there".into()
        })
        .await;
    }
    let twins_after = remote.list(&ListParams::default()).await.unwrap();
    assert_eq!(twins_after.items.len(), 2);
    for (before, after) in twins_before.items.iter().zip(&twins_after.items) {
        assert_eq!(before.uid(), after.uid());
        assert!(after.metadata.deletion_timestamp.is_none(), "a twin is being deleted");
    }

    // Starting again means replicating again: the start clears the mark, and a new claim goes up.
    instance.stop().await;
    instance.start().await;
    apply_claim(&ns, "again").await;
    wait_ready(&local, "again", &instance).await;
}
