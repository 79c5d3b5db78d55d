//! Two real app clusters on one control plane, sharing one claim namespace, one claimsync each: the same claim in
//! both makes two twins, two composites and two Secrets; each cluster sees only its own; stopping, cutting off or
//! disconnecting one changes nothing for the other; neither touches the other's twins, even when their labels
//! lie; and two app clusters given the same cluster id get a conflict on both sides instead of a fight.

use std::time::Duration;

use claimsync::model::kind::KindFamily;
use claimsync::model::naming::remote_claim_name;
use k8s_openapi::api::core::v1::{Event as RemoteEvent, Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::claim_support::{cluster_claim_yaml, condition, kubectl_apply_to, wait_ready, wait_reason, wait_secret};
use crate::instance::{INSTANCE_LABEL, Instance, tail};
use crate::platform_support::TestKind;
use crate::support::{self, env, wait_for};
use crate::testenv_control_plane::kubernetes_cluster_resource;

/// One claimsync on the env's app cluster and one on app2, sharing a claim namespace of the control plane.
async fn tenants(prefix: &str, same_cluster_id: Option<&str>) -> (Instance, Instance, String) {
    let shared = format!("{}-shared", support::unique(prefix));
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": shared}})).unwrap();
    Api::<Namespace>::all(support::control_plane().await)
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let mut first = Instance::new_on(&format!("{prefix}-a"), &env().app_kubeconfig, Some(&shared)).await;
    let mut second = Instance::new_on(&format!("{prefix}-b"), &env().app2_kubeconfig, Some(&shared)).await;
    second.use_link();
    let args: Vec<String> = same_cluster_id
        .map(|id| vec!["--cluster-id".to_string(), id.to_string()])
        .unwrap_or_default();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    first.start_in_sync(&args).await;
    second.start_in_sync(&args).await;
    (first, second, shared)
}

/// A namespace of the same name in both app clusters, replicated by both claimsyncs.
async fn shared_namespace(first: &Instance, second: &Instance, prefix: &str) -> String {
    let name = support::unique(prefix);
    for instance in [first, second] {
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {INSTANCE_LABEL: instance.id}}
        }))
        .unwrap();
        Api::<Namespace>::all(instance.app.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    name
}

fn claims(instance: &Instance, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(instance.app.clone(), ns, &kubernetes_cluster_resource())
}

fn twins(instance: &Instance) -> Api<DynamicObject> {
    Api::namespaced_with(
        instance.control_plane.clone(),
        &instance.claim_namespace,
        &kubernetes_cluster_resource(),
    )
}

/// The name of the composite a claim (local or remote) is bound to.
fn bound_to(claim: &DynamicObject) -> String {
    claim.data["spec"]["resourceRef"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn create_widget(kind: &TestKind, client: &Client, ns: &str, name: &str) {
    let claim = kind.claim(ns, name);
    let api = kind.claims(client, ns);
    wait_for("the claim to be stored", Duration::from_secs(30), || async {
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_app_clusters_share_a_claim_namespace_without_touching_each_other() {
    let _env = support::env_shared().await;
    let (first, mut second, shared) = tenants("ten", None).await;
    let ns = shared_namespace(&first, &second, "team").await;

    // The same claim (namespace, name and spec) of a kind of the test's own, in both app clusters.
    let kind = TestKind::offer(&first.control_plane, "ten", "Tenant", json!({})).await;
    kind.wait_local(&first.app).await;
    kind.wait_local(&second.app).await;
    for instance in [&first, &second] {
        create_widget(&kind, &instance.app, &ns, "same").await;
    }
    for instance in [&first, &second] {
        wait_ready(&kind.claims(&instance.app, &ns), "same", instance).await;
    }
    let remote_widgets = Api::<DynamicObject>::namespaced_with(first.control_plane.clone(), &shared, &kind.resource);
    let mut bindings = Vec::new();
    for instance in [&first, &second] {
        let twin = remote_widgets
            .get(&remote_claim_name("same", &ns, &instance.id))
            .await
            .unwrap();
        let local = kind.claims(&instance.app, &ns).get("same").await.unwrap();
        assert_eq!(
            bound_to(&local),
            bound_to(&twin),
            "each cluster shows its own twin's composite"
        );
        bindings.push(bound_to(&twin));
    }
    assert_ne!(bindings[0], bindings[1], "two twins, two composites");

    // The seed's claim of the same namespace and name, with a connection Secret each.
    for (instance, kubeconfig) in [(&first, &env().app_kubeconfig), (&second, &env().app2_kubeconfig)] {
        let yaml = cluster_claim_yaml(&ns, "db", &support::unique("kc"), "db-conn", "");
        kubectl_apply_to(kubeconfig, &yaml).await.unwrap();
        wait_ready(&claims(instance, &ns), "db", instance).await;
    }
    let mut endpoints = Vec::new();
    for instance in [&first, &second] {
        let secret = wait_secret(&instance.app, &ns, "db-conn").await;
        endpoints.push(secret.data.unwrap()["endpoint"].clone());
    }
    assert_ne!(endpoints[0], endpoints[1], "each cluster got its own twin's Secret");

    // Deleting the claim in one cluster deletes only its twin.
    claims(&first, &ns)
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    let first_twin = remote_claim_name("db", &ns, &first.id);
    support::wait_gone(
        "the first cluster's twin to go",
        Duration::from_secs(120),
        &twins(&first),
        &first_twin,
        |_| "still there".into(),
    )
    .await;
    let second_twin = remote_claim_name("db", &ns, &second.id);
    assert!(
        twins(&second)
            .get(&second_twin)
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
    wait_ready(&claims(&second, &ns), "db", &second).await;

    // The second claimsync is cut off, then stopped: the first carries on.
    second.link("cut");
    wait_reason(&claims(&second, &ns), "db", "ControlPlaneUnreachable", &second).await;
    let yaml = cluster_claim_yaml(&ns, "while-cut", &support::unique("kc"), "while-cut-conn", "");
    kubectl_apply_to(&env().app_kubeconfig, &yaml).await.unwrap();
    wait_ready(&claims(&first, &ns), "while-cut", &first).await;
    second.stop().await;
    second.link("restore");
    let yaml = cluster_claim_yaml(&ns, "while-stopped", &support::unique("kc"), "while-stopped-conn", "");
    kubectl_apply_to(&env().app_kubeconfig, &yaml).await.unwrap();
    wait_ready(&claims(&first, &ns), "while-stopped", &first).await;
    second.start_in_sync(&[]).await;
    wait_ready(&claims(&second, &ns), "db", &second).await;

    // Disconnecting the first leaves the second's claims and twins alone.
    let before = twins(&second).get(&second_twin).await.unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_claimsync"))
        .arg("disconnect")
        .arg("--app-kubeconfig")
        .arg(&env().app_kubeconfig)
        .args(["--namespace", &first.own_namespace])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let claim = claims(&second, &ns).get("db").await.unwrap();
    assert!(
        claim.finalizers().iter().any(|f| f == "claimsync.dev/remote-claim"),
        "{:?}",
        claim.finalizers()
    );
    let after = twins(&second).get(&second_twin).await.unwrap();
    assert_eq!(after.uid(), before.uid());
    assert!(after.metadata.deletion_timestamp.is_none());
    kind.withdraw(&first.control_plane).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_that_lie_do_not_let_one_tenant_reach_the_other() {
    let _env = support::env_shared().await;
    let (first, second, shared) = tenants("lie", None).await;
    let ns = shared_namespace(&first, &second, "lie").await;
    for (instance, kubeconfig) in [(&first, &env().app_kubeconfig), (&second, &env().app2_kubeconfig)] {
        let yaml = cluster_claim_yaml(&ns, "mine", &support::unique("kc"), "mine-conn", "");
        kubectl_apply_to(kubeconfig, &yaml).await.unwrap();
        wait_ready(&claims(instance, &ns), "mine", instance).await;
    }
    // The second cluster's twin is made to carry the first cluster's labels, as a hostile or confused tenant might.
    let first_twin = twins(&first)
        .get(&remote_claim_name("mine", &ns, &first.id))
        .await
        .unwrap();
    let second_name = remote_claim_name("mine", &ns, &second.id);
    let lying = json!({"metadata": {"labels": first_twin.labels()}});
    twins(&second)
        .patch(&second_name, &PatchParams::default(), &Patch::Merge(&lying))
        .await
        .unwrap();
    let lied = twins(&second).get(&second_name).await.unwrap();
    // An Event about the lying twin, then a true one about the first cluster's twin (mirrored in order).
    let events = Api::<RemoteEvent>::namespaced(first.control_plane.clone(), &shared);
    for (about, uid, reason) in [
        (&second_name, lied.uid().unwrap(), "AboutTheOther"),
        (&first_twin.name_any(), first_twin.uid().unwrap(), "Marker"),
    ] {
        let event: RemoteEvent = serde_json::from_value(json!({
            "metadata": {"name": support::unique("ev")},
            "involvedObject": {"apiVersion": "k8s.starter.org/v1alpha1", "kind": "KubernetesCluster",
                               "name": about, "namespace": shared, "uid": uid},
            "reason": reason, "message": reason, "type": "Normal",
        }))
        .unwrap();
        events.create(&PostParams::default(), &event).await.unwrap();
    }
    let local_events = Api::<Event>::namespaced(first.app.clone(), &ns);
    wait_for("the true Event to be mirrored", Duration::from_secs(60), || async {
        let list = local_events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Marker"))
            .then_some(())
            .ok_or(tail(&first.log(), 5))
    })
    .await;
    let list = local_events.list(&ListParams::default()).await.unwrap();
    assert!(!list.items.iter().any(|e| e.reason.as_deref() == Some("AboutTheOther")));
    // The first claimsync looks at its claim again: nothing of the other's twin is written or taken.
    let touch = json!({"metadata": {"labels": {"touched": "yes"}}});
    claims(&first, &ns)
        .patch("mine", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    wait_for(
        "the first twin to get the new label",
        Duration::from_secs(60),
        || async {
            let twin = twins(&first)
                .get(&first_twin.name_any())
                .await
                .map_err(|e| e.to_string())?;
            (twin.labels().get("touched").map(String::as_str) == Some("yes"))
                .then_some(())
                .ok_or("not yet".to_string())
        },
    )
    .await;
    let untouched = twins(&second).get(&second_name).await.unwrap();
    assert_eq!(
        untouched.resource_version(),
        lied.resource_version(),
        "the other cluster's twin was written"
    );
    // Nor is it the first cluster's orphan, nor restored there.
    let said = first.restore(&["--dry-run"]).await;
    assert!(!said.contains(&second_name), "{said}");
    let local_secret = Api::<Secret>::namespaced(first.app.clone(), &ns)
        .get("mine-conn")
        .await
        .unwrap();
    let remote_secret = Api::<Secret>::namespaced(first.control_plane.clone(), &shared)
        .get(&second_name)
        .await
        .unwrap();
    assert_ne!(
        local_secret.data, remote_secret.data,
        "the other cluster's Secret came down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_cluster_id_in_two_app_clusters_is_a_conflict_not_a_fight() {
    let _env = support::env_shared().await;
    let id = support::unique("same-id");
    let (first, second, _shared) = tenants("clash", Some(&id)).await;
    let ns = shared_namespace(&first, &second, "clash").await;
    let yaml = cluster_claim_yaml(&ns, "both", &support::unique("kc"), "both-conn", "");
    kubectl_apply_to(&env().app_kubeconfig, &yaml).await.unwrap();
    wait_ready(&claims(&first, &ns), "both", &first).await;
    let twin_name = remote_claim_name("both", &ns, &id);
    let twin = twins(&first).get(&twin_name).await.unwrap();

    // The second app cluster, given the same cluster id, makes a claim of the same namespace and name.
    let other =
        cluster_claim_yaml(&ns, "both", &support::unique("kc"), "both-conn", "").replace("count: 3", "count: 5");
    kubectl_apply_to(&env().app2_kubeconfig, &other).await.unwrap();
    let refused = wait_reason(&claims(&second, &ns), "both", "NameConflict", &second).await;
    assert!(
        refused.data["status"].to_string().contains("another app cluster"),
        "{}",
        refused.data["status"]
    );
    // The first hears of it on its own claim, and keeps its twin as it was.
    let events = Api::<Event>::namespaced(first.app.clone(), &ns);
    wait_for(
        "the first cluster to hear of the clash",
        Duration::from_secs(60),
        || async {
            let list = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("TwinContested")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("both")
                })
                .then_some(())
                .ok_or(tail(&first.log(), 5))
        },
    )
    .await;
    // The second claimsync looks at its claim again (counted by its reads of the twin): still no fight.
    let reads = || async {
        let metrics = second.ops("/metrics").await.unwrap_or_default();
        metrics
            .lines()
            .filter(|l| l.starts_with(r#"claimsync_api_requests_total{cluster="controlplane",verb="GET",code="200"}"#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = reads().await;
    let touch = json!({"metadata": {"labels": {"again": "yes"}}});
    claims(&second, &ns)
        .patch("both", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    wait_for(
        "the second claim to be looked at again",
        Duration::from_secs(60),
        || async {
            let now = reads().await;
            (now > before).then_some(()).ok_or(format!("{before} -> {now}"))
        },
    )
    .await;
    assert_eq!(
        condition(&claims(&second, &ns).get("both").await.unwrap(), "Replicated").map(|(_, r)| r),
        Some("NameConflict".to_string())
    );
    let after = twins(&first).get(&twin_name).await.unwrap();
    assert_eq!(
        after.data["spec"]["parameters"]["nodes"]["count"], 3,
        "the second cluster's spec won"
    );
    assert_eq!(
        after.labels()["claimsync.dev/origin-cluster-uid"],
        twin.labels()["claimsync.dev/origin-cluster-uid"]
    );
    assert!(
        condition(&claims(&first, &ns).get("both").await.unwrap(), "Replicated")
            == Some(("True".into(), "Synced".into())),
        "the first keeps replicating its claim"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_app_clusters_share_a_claim_namespace_with_namespaced_xrs_too() {
    if !env().crossplane_v2() {
        eprintln!("the control plane runs Crossplane v1.20, which has no namespaced XRs; nothing to check");
        return;
    }
    let _env = support::env_shared().await;
    let (first, second, shared) = tenants("xrten", None).await;
    let ns = shared_namespace(&first, &second, "team").await;
    let web = crate::xrs::web_app_resource();

    // The same XR, with the same connection Secret name, in both app clusters.
    for (instance, kubeconfig) in [(&first, &env().app_kubeconfig), (&second, &env().app2_kubeconfig)] {
        let yaml = crate::xrs::web_app_yaml(&ns, "web", "nginx:1.27", "");
        crate::xrs::apply_web_app(kubeconfig, &yaml).await;
        let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &web);
        wait_ready(&local, "web", instance).await;
    }
    let twins = Api::<DynamicObject>::namespaced_with(first.control_plane.clone(), &shared, &web);
    let mut hosts = Vec::new();
    for instance in [&first, &second] {
        let twin_name = claimsync::model::naming::remote_name(KindFamily::NamespacedXr, "web", &ns, &instance.id);
        let twin = twins.get(&twin_name).await.unwrap();
        // Each twin's Secret is named after the twin, so the two never share one in the claim namespace.
        assert_eq!(twin.data["spec"]["writeConnectionSecretToRef"]["name"], twin_name);
        let secret = wait_secret(&instance.app, &ns, "web-conn").await;
        let host = secret.data.unwrap()["host"].clone();
        assert_eq!(host.0, format!("{twin_name}.apps.starter.org").into_bytes());
        hosts.push(host);
    }
    assert_ne!(hosts[0], hosts[1], "each cluster got its own twin's Secret");

    // Deleting the XR in one cluster deletes only its twin.
    Api::<DynamicObject>::namespaced_with(first.app.clone(), &ns, &web)
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let first_twin = claimsync::model::naming::remote_name(KindFamily::NamespacedXr, "web", &ns, &first.id);
    support::wait_gone(
        "the first cluster's twin to go",
        Duration::from_secs(90),
        &twins,
        &first_twin,
        |_| "still there".into(),
    )
    .await;
    let second_twin = claimsync::model::naming::remote_name(KindFamily::NamespacedXr, "web", &ns, &second.id);
    let kept = twins.get(&second_twin).await.unwrap();
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "the other cluster's twin stays"
    );
    wait_ready(
        &Api::<DynamicObject>::namespaced_with(second.app.clone(), &ns, &web),
        "web",
        &second,
    )
    .await;
}
