//! Claims end to end, against the real env with real Crossplane: spec up, status, Crossplane's fields, Events and
//! connection Secrets down, drift reverted, deletion with both policies, conflicts, and MCP Connector adoption.

use std::collections::BTreeSet;
use std::time::Duration;

use claimsync::model::naming::remote_claim_name;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::claim_support::{
    apply_claim, cluster_claim_yaml, column, composite_resource, condition, keys, kubectl_apply, postgres_resource,
    ready_instance, wait_event, wait_ready, wait_reason, wait_secret,
};
use crate::instance::{Instance, tail};
use crate::support::{self, env, wait_for};
use crate::testenv_control_plane::kubernetes_cluster_resource;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_replicate_up_and_status_and_secrets_come_down() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("rep").await;
    instance.start().await;
    let (ns_a, ns_b) = (instance.namespace("team-a").await, instance.namespace("team-b").await);

    // The same claim name in two namespaces, applied with kubectl.
    for ns in [&ns_a, &ns_b] {
        let yaml = cluster_claim_yaml(ns, "demo", &support::unique("kc"), "demo-conn", "");
        kubectl_apply(&yaml)
            .await
            .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
    }
    // A claim of the two-version kind, written at its older version.
    let db_yaml = format!(
        "apiVersion: db.starter.org/v1alpha1\nkind: PostgreSQLInstance\nmetadata:\n  name: db\n  namespace: {ns_a}\nspec:\n  parameters:\n    storageGB: 20\n  writeConnectionSecretToRef:\n    name: db-conn\n"
    );
    kubectl_apply(&db_yaml)
        .await
        .unwrap_or_else(|e| panic!("kubectl apply: {e}"));

    let kc = kubernetes_cluster_resource();
    let remote_claims =
        Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &kc);
    let mut remote_names = BTreeSet::new();
    for ns in [&ns_a, &ns_b] {
        let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), ns, &kc);
        let claim = wait_ready(&local, "demo", &instance).await;
        let secret = wait_secret(&instance.app, ns, "demo-conn").await;
        assert_eq!(secret.type_.as_deref(), Some("connection.crossplane.io/v1alpha1"));
        assert_eq!(
            keys(&secret),
            BTreeSet::from(["clusterName".into(), "endpoint".into(), "kubeconfig".into()])
        );
        assert_eq!(secret.owner_references()[0].uid, claim.uid().unwrap());

        let remote_name = remote_claim_name("demo", ns, &instance.id);
        let remote = remote_claims.get(&remote_name).await.unwrap();
        assert_eq!(remote.labels()["claimsync.dev/origin-namespace"], *ns);
        assert_eq!(remote.labels()["claimsync.dev/origin-name"], "demo");
        assert_eq!(remote.labels()["team"], "platform-users");
        assert_eq!(remote.annotations()["note"], "from-the-app-cluster");
        assert!(
            !remote
                .annotations()
                .contains_key("kubectl.kubernetes.io/last-applied-configuration")
        );
        assert_eq!(remote.data["spec"]["writeConnectionSecretToRef"]["name"], remote_name);
        // Crossplane's choice came down; the remote generation did not.
        assert_eq!(claim.data["spec"]["resourceRef"], remote.data["spec"]["resourceRef"]);
        assert!(
            claim.data["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c.get("observedGeneration").is_none())
        );
        assert!(remote_names.insert(remote_name));
    }
    // What Crossplane said about the remote claim is told on the local one.
    let events = Api::<Event>::namespaced(instance.app.clone(), &ns_a);
    wait_for(
        "a control plane Event mirrored onto the claim",
        Duration::from_secs(60),
        || async {
            let list = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
            let mirrored = list.items.iter().any(|e| {
                e.note.as_deref().is_some_and(|n| n.starts_with("[control plane] "))
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("demo")
            });
            mirrored.then_some(()).ok_or_else(|| "none yet".to_string())
        },
    )
    .await;
    let pg = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns_a, &postgres_resource("v1beta1"));
    wait_ready(&pg, "db", &instance).await;
    let db_secret = wait_secret(&instance.app, &ns_a, "db-conn").await;
    assert!(keys(&db_secret).contains("password"), "{:?}", keys(&db_secret));

    // kubectl shows claimsync's column.
    let table = env()
        .kubectl(&env().app_kubeconfig, &["get", "kubernetesclusters", "-n", &ns_a])
        .await
        .unwrap();
    assert_eq!(column(&table, "REPLICATED"), ["True"], "{table}");

    // A local edit goes up; Crossplane's resourceRef is never dropped, so no second composite appears.
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns_a, &kc);
    let remote_name = remote_claim_name("demo", &ns_a, &instance.id);
    let before = remote_claims.get(&remote_name).await.unwrap();
    let patch = json!({"spec": {"parameters": {"nodes": {"count": 5}}}});
    local
        .patch("demo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(
        "the edit to reach the control plane",
        Duration::from_secs(60),
        || async {
            let remote = remote_claims.get(&remote_name).await.map_err(|e| e.to_string())?;
            (remote.data["spec"]["parameters"]["nodes"]["count"] == 5)
                .then_some(())
                .ok_or("not yet".to_string())
        },
    )
    .await;
    let after = remote_claims.get(&remote_name).await.unwrap();
    assert_eq!(after.data["spec"]["resourceRef"], before.data["spec"]["resourceRef"]);
    let composites = Api::<DynamicObject>::all_with(instance.control_plane.clone(), &composite_resource())
        .list(&ListParams::default().labels(&format!("crossplane.io/claim-name={remote_name}")))
        .await
        .unwrap();
    assert_eq!(composites.items.len(), 1, "one composite per claim");

    // Fields the user removes are removed remotely (claimsync created the twin, so its create's entry owns them);
    // what Crossplane set on the twin stays.
    let removal = json!({"metadata": {"labels": {"team": null}, "annotations": {"note": null}},
                         "spec": {"parameters": {"services": null, "nodes": {"size": null}}}});
    local
        .patch("demo", &PatchParams::default(), &Patch::Merge(&removal))
        .await
        .unwrap();
    wait_for(
        "the removals to reach the control plane",
        Duration::from_secs(60),
        || async {
            let remote = remote_claims.get(&remote_name).await.map_err(|e| e.to_string())?;
            let parameters = &remote.data["spec"]["parameters"];
            let gone = parameters.get("services").is_none()
                && parameters["nodes"].get("size").is_none()
                && !remote.labels().contains_key("team")
                && !remote.annotations().contains_key("note");
            gone.then_some(()).ok_or(format!("not yet: {}", remote.data["spec"]))
        },
    )
    .await;
    let removed = remote_claims.get(&remote_name).await.unwrap();
    assert_eq!(removed.data["spec"]["parameters"]["nodes"], json!({"count": 5}));
    assert_eq!(removed.data["spec"]["resourceRef"], before.data["spec"]["resourceRef"]);
    assert_eq!(
        removed.data["spec"]["compositeDeletePolicy"], before.data["spec"]["compositeDeletePolicy"],
        "the control plane's default stays"
    );
    assert_eq!(removed.labels()["claimsync.dev/origin-name"], "demo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_edits_are_reverted_and_remote_deletes_recreated() {
    let _env = support::env_shared().await;
    let (instance, ns, local) = ready_instance("drift", "steady").await;
    let kc = kubernetes_cluster_resource();

    let remote_name = remote_claim_name("steady", &ns, &instance.id);
    let remote = Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &kc);
    let edit = json!({"spec": {"parameters": {"nodes": {"count": 9}}}});
    remote
        .patch(&remote_name, &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    wait_for("the remote edit to be reverted", Duration::from_secs(60), || async {
        let r = remote.get(&remote_name).await.map_err(|e| e.to_string())?;
        (r.data["spec"]["parameters"]["nodes"]["count"] == 3)
            .then_some(())
            .ok_or(format!("count {}", r.data["spec"]["parameters"]["nodes"]["count"]))
    })
    .await;
    wait_event(&instance.app, &ns, "steady", "RemoteDriftReverted").await;

    let uid = remote.get(&remote_name).await.unwrap().uid();
    remote.delete(&remote_name, &DeleteParams::default()).await.unwrap();
    wait_for("the remote claim to be recreated", Duration::from_secs(90), || async {
        match remote.get_opt(&remote_name).await.map_err(|e| e.to_string())? {
            Some(r) if r.uid() != uid && r.metadata.deletion_timestamp.is_none() => Ok(()),
            _ => Err("not recreated yet".to_string()),
        }
    })
    .await;
    wait_event(&instance.app, &ns, "steady", "RemoteRecreated").await;
    wait_ready(&local, "steady", &instance).await;
}

/// What the control plane stops saying is no longer said locally: a status field and a condition dropped from the
/// twin's status go from the local claim's (claimsync writes the local status as a merge patch of its difference,
/// so a key must be nulled, not left out). Crossplane is paused on this claim, so the test alone writes the twin's
/// status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_the_control_plane_drops_is_dropped_locally() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("drop").await;
    instance.start().await;
    let ns = instance.namespace("team").await;
    let yaml = format!(
        "apiVersion: k8s.starter.org/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: quiet\n  namespace: {ns}\n  \
         annotations:\n    crossplane.io/paused: \"true\"\nspec:\n  id: {}\n",
        support::unique("kc")
    );
    kubectl_apply(&yaml)
        .await
        .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
    let kc = kubernetes_cluster_resource();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kc);
    let twins = Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &kc);
    let twin_name = remote_claim_name("quiet", &ns, &instance.id);
    wait_for("the twin", Duration::from_secs(60), || async {
        twins
            .get_opt(&twin_name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("not yet".to_string())
    })
    .await;

    let said = json!({"status": {"clusterName": "said-once", "conditions": [
        {"type": "Degraded", "status": "True", "reason": "TestSaidSo", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    twins
        .patch_status(&twin_name, &PatchParams::default(), &Patch::Merge(&said))
        .await
        .unwrap();
    wait_for("the twin's status to come down", Duration::from_secs(60), || async {
        let claim = local.get("quiet").await.map_err(|e| e.to_string())?;
        let shown = claim.data["status"]["clusterName"] == "said-once" && condition(&claim, "Degraded").is_some();
        shown.then_some(()).ok_or(format!("status {}", claim.data["status"]))
    })
    .await;

    // Crossplane's own condition (it marks a paused claim) stays on the twin; the test's go.
    let twin = twins.get(&twin_name).await.unwrap();
    let kept: Vec<_> = twin.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["type"] != "Degraded")
        .collect();
    let dropped = json!({"status": {"clusterName": null, "conditions": kept}});
    twins
        .patch_status(&twin_name, &PatchParams::default(), &Patch::Merge(&dropped))
        .await
        .unwrap();
    let claim = wait_for("the dropped status to go locally", Duration::from_secs(60), || async {
        let claim = local.get("quiet").await.map_err(|e| e.to_string())?;
        let gone = claim.data["status"].get("clusterName").is_none() && condition(&claim, "Degraded").is_none();
        gone.then_some(claim.clone())
            .ok_or(format!("status {}\n{}", claim.data["status"], tail(&instance.log(), 8)))
    })
    .await;
    assert_eq!(
        condition(&claim, "Replicated"),
        Some(("True".into(), "Synced".into())),
        "claimsync's own condition stays: {}",
        claim.data["status"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_claim_deletes_its_twin_unless_orphaned() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("del").await;
    instance.start().await;
    let ns = instance.namespace("del").await;
    apply_claim(&ns, "gone").await;
    let orphan = "\n    claimsync.dev/deletion-policy: Orphan";
    kubectl_apply(&cluster_claim_yaml(
        &ns,
        "kept",
        &support::unique("kc"),
        "kept-conn",
        orphan,
    ))
    .await
    .unwrap();
    let kc = kubernetes_cluster_resource();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kc);
    let remote = Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &kc);
    for name in ["gone", "kept"] {
        wait_ready(&local, name, &instance).await;
        local.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["gone", "kept"] {
        let what = format!("local claim {name} to be deleted");
        support::wait_gone(&what, Duration::from_secs(120), &local, name, |c| {
            format!(
                "still there, finalizers {:?}\n{}",
                c.finalizers(),
                tail(&instance.log(), 8)
            )
        })
        .await;
    }
    let gone = remote_claim_name("gone", &ns, &instance.id);
    assert!(
        remote.get_opt(&gone).await.unwrap().is_none(),
        "the remote twin of a deleted claim is gone first"
    );
    // The connection Secret went with its claim (owner reference, garbage collector).
    let secrets = Api::<Secret>::namespaced(instance.app.clone(), &ns);
    support::wait_gone(
        "the deleted claim's Secret to be collected",
        Duration::from_secs(90),
        &secrets,
        "gone-conn",
        |_| "still there".to_string(),
    )
    .await;
    let kept = remote
        .get_opt(&remote_claim_name("kept", &ns, &instance.id))
        .await
        .unwrap();
    assert!(
        kept.is_some_and(|k| k.metadata.deletion_timestamp.is_none()),
        "Orphan keeps the remote claim"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_leave_foreign_objects_alone() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("clash").await;
    instance.start().await;
    let ns = instance.namespace("clash").await;
    let kc = kubernetes_cluster_resource();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kc);

    // A Secret the user already has under the requested name.
    let taken: Secret = serde_json::from_value(json!({
        "metadata": {"name": "taken"}, "type": "Opaque", "data": {"mine": "MQ=="}
    }))
    .unwrap();
    let secrets = Api::<Secret>::namespaced(instance.app.clone(), &ns);
    secrets.create(&PostParams::default(), &taken).await.unwrap();
    kubectl_apply(&cluster_claim_yaml(&ns, "clash", &support::unique("kc"), "taken", ""))
        .await
        .unwrap();
    let claim = wait_reason(&local, "clash", "SecretConflict", &instance).await;
    assert!(claim.data["status"]["conditions"].to_string().contains("taken"));
    wait_event(&instance.app, &ns, "clash", "SecretConflict").await;
    let still = secrets.get("taken").await.unwrap();
    assert_eq!(keys(&still), BTreeSet::from(["mine".to_string()]));
    assert!(still.owner_references().is_empty());

    // Someone else's claim already sits at the remote name.
    let remote_name = remote_claim_name("squat", &ns, &instance.id);
    let remote = Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &kc);
    let mut squatter = DynamicObject::new(&remote_name, &kc).within(&instance.claim_namespace);
    squatter.data = json!({"spec": {"id": support::unique("sq")}});
    remote.create(&PostParams::default(), &squatter).await.unwrap();
    apply_claim(&ns, "squat").await;
    wait_reason(&local, "squat", "NameConflict", &instance).await;
    let untouched = remote.get(&remote_name).await.unwrap();
    assert_eq!(untouched.data["spec"]["id"], squatter.data["spec"]["id"]);
    assert!(!untouched.labels().contains_key("claimsync.dev/origin-cluster"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_made_by_the_mcp_connector_are_adopted_not_duplicated() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("adopt").await;
    instance.start().await;
    let ns = instance.namespace("adopt").await;
    let kc = kubernetes_cluster_resource();
    let id = support::unique("kc");

    // A claim the MCP Connector wrote for this app cluster, already provisioned.
    let remote_name = remote_claim_name("legacy", &ns, &instance.id);
    let remote = Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &kc);
    let mut legacy = DynamicObject::new(&remote_name, &kc).within(&instance.claim_namespace);
    legacy.metadata.labels = Some(
        [
            ("mcp-connector.upbound.io/app-cluster".to_string(), instance.id.clone()),
            ("mcp-connector.upbound.io/app-namespace".to_string(), ns.clone()),
            (
                "mcp-connector.upbound.io/app-resource-name".to_string(),
                "legacy".to_string(),
            ),
        ]
        .into(),
    );
    legacy.data = json!({"spec": {"id": id, "parameters": {"nodes": {"count": 3, "size": "small"},
        "services": {"operators": {"prometheus": {"version": "34.5.1"}}}}}});
    let created = remote.create(&PostParams::default(), &legacy).await.unwrap();

    kubectl_apply(&cluster_claim_yaml(&ns, "legacy", &id, "legacy-conn", ""))
        .await
        .unwrap();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kc);
    wait_ready(&local, "legacy", &instance).await;
    let adopted = remote.get(&remote_name).await.unwrap();
    assert_eq!(adopted.uid(), created.uid(), "adopted in place, not recreated");
    assert_eq!(adopted.labels()["claimsync.dev/origin-name"], "legacy");
    // claimsync's entry owns the whole of the user's spec on the adopted twin, as on a twin it created: what
    // `claimsync restore` gives back, and what a later removal is computed from.
    let owned = claimsync::model::fields::owned_fields(&serde_json::to_value(&adopted).unwrap(), |m| {
        m == claimsync::model::vocabulary::MANAGER_UP
    })
    .expect("managed fields");
    for field in [
        "/f:spec/f:id",
        "/f:spec/f:parameters/f:nodes/f:count",
        "/f:spec/f:writeConnectionSecretToRef",
    ] {
        assert!(
            owned.pointer(field).is_some(),
            "claimsync does not own {field}: {owned}"
        );
    }
    let composites = Api::<DynamicObject>::all_with(instance.control_plane.clone(), &composite_resource())
        .list(&ListParams::default().labels(&format!("crossplane.io/claim-name={remote_name}")))
        .await
        .unwrap();
    assert_eq!(composites.items.len(), 1, "one composite for the adopted claim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_change_lost_in_a_burst_that_outruns_the_controller_still_comes_down() {
    // Crossplane is paused during the burst (so exclusively): it would touch the twin after its Secret changed, and
    // that twin change alone would bring the Secret down, hiding whether the Secret's own trigger was lost.
    let _env = support::env_exclusive().await;
    let mut instance = Instance::new("lag").await;
    // One Secret change of room: a burst of them makes every claim controller fall behind.
    instance.start_in_sync(&["--trigger-buffer", "1"]).await;
    let ns = instance.namespace("lag").await;
    apply_claim(&ns, "burst").await;
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kubernetes_cluster_resource());
    wait_ready(&local, "burst", &instance).await;
    wait_secret(&instance.app, &ns, "burst-conn").await;

    // Crossplane leaves keys it did not write in a claim's connection Secret: a key added to the twin's Secret is a
    // change claimsync must copy down. It is one change among 1,000 Secret changes of the claim namespace.
    let paused = support::CrossplanePaused::now();
    let remote_secrets = Api::<Secret>::namespaced(instance.control_plane.clone(), &instance.claim_namespace);
    let twin_secret = remote_claim_name("burst", &ns, &instance.id);
    let noise = |i: usize| {
        let secrets = remote_secrets.clone();
        async move {
            let secret: Secret =
                serde_json::from_value(json!({"metadata": {"name": format!("noise-{i}")}, "stringData": {"n": "1"}}))
                    .unwrap();
            secrets.create(&PostParams::default(), &secret).await.unwrap();
        }
    };
    futures::future::join_all((0..500).map(noise)).await;
    let marker = json!({"stringData": {"rotated": "yes"}});
    remote_secrets
        .patch(&twin_secret, &PatchParams::default(), &Patch::Merge(&marker))
        .await
        .unwrap();
    futures::future::join_all((500..1000).map(noise)).await;

    wait_for("the rotated key to come down", Duration::from_secs(60), || async {
        let secret = Api::<Secret>::namespaced(instance.app.clone(), &ns)
            .get("burst-conn")
            .await
            .map_err(|e| e.to_string())?;
        keys(&secret).contains("rotated").then_some(()).ok_or(format!(
            "keys {:?}\n{}",
            keys(&secret),
            tail(&instance.log(), 5)
        ))
    })
    .await;
    drop(paused);
    assert!(
        instance.log().contains("missed Secret changes"),
        "the burst did not outrun the controller, so the test proved nothing:\n{}",
        tail(&instance.log(), 10)
    );
}
