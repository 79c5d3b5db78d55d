//! Nothing remote is trusted blindly: labels and Events a control-plane tenant writes cannot reach another claim,
//! a Secret Crossplane did not write is not copied, only XRD-owned claim CRDs of allowed groups come down, and what
//! goes up leaves Crossplane's control keys and unsupported fields behind. Also: copies of a connection Secret the
//! claim no longer asks for go, and a kubeconfig Secret may not run code in claimsync's pod.

use std::collections::BTreeSet;
use std::time::Duration;

use claimsync::model::naming::remote_claim_name;
use k8s_openapi::api::core::v1::{ConfigMap, Event as RemoteEvent, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::claim_support::{
    apply_claim, cluster_claim_yaml, condition, kubectl_apply, postgres_resource, ready_instance, wait_ready,
    wait_reason, wait_secret,
};
use crate::instance::{Instance, tail};
use crate::support::{self, env, wait_for};
use crate::testenv_control_plane::kubernetes_cluster_resource;

/// Notes of the Events about `claim` in `ns` of the app cluster.
async fn event_notes(app: &Client, ns: &str, claim: &str) -> Vec<(String, String)> {
    Api::<Event>::namespaced(app.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(claim))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// A core/v1 Event on the control plane about a claim of the seed's kind.
fn remote_event(claim_namespace: &str, about: &str, uid: &str, reason: &str, message: &str) -> RemoteEvent {
    serde_json::from_value(json!({
        "metadata": {"name": support::unique("ev"), "namespace": claim_namespace},
        "involvedObject": {"apiVersion": "k8s.starter.org/v1alpha1", "kind": "KubernetesCluster",
                           "name": about, "namespace": claim_namespace, "uid": uid},
        "reason": reason, "message": message, "type": "Normal",
        "source": {"component": "offered/compositeresourcedefinition.apiextensions.crossplane.io"},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_and_events_written_on_the_control_plane_cannot_reach_another_claim() {
    let _env = support::env_shared().await;
    let (instance, ns, _local) = ready_instance("hostile", "victim").await;
    let kc = kubernetes_cluster_resource();
    let remote = Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &kc);
    let twin = remote
        .get(&remote_claim_name("victim", &ns, &instance.id))
        .await
        .unwrap();

    // A tenant of the control plane makes a claim of its own whose labels say it is the victim's twin.
    let mut impostor = DynamicObject::new("impostor", &kc).within(&instance.claim_namespace);
    impostor.metadata.labels = Some(twin.labels().clone());
    impostor.data =
        json!({"spec": {"id": support::unique("imp"), "parameters": {"nodes": {"count": 1, "size": "small"}}}});
    let impostor = remote.create(&PostParams::default(), &impostor).await.unwrap();
    // ...and Events: about the impostor, and about the twin's name with another uid. Then one true Event.
    let events = Api::<RemoteEvent>::namespaced(instance.control_plane.clone(), &instance.claim_namespace);
    let forged = [
        remote_event(
            &instance.claim_namespace,
            "impostor",
            &impostor.uid().unwrap(),
            "Forged",
            "about the impostor",
        ),
        remote_event(
            &instance.claim_namespace,
            &twin.name_any(),
            "7e57-0000-0000",
            "Forged",
            "about another uid",
        ),
    ];
    for event in &forged {
        events.create(&PostParams::default(), event).await.unwrap();
    }
    let marker = remote_event(
        &instance.claim_namespace,
        &twin.name_any(),
        &twin.uid().unwrap(),
        "Marker",
        "true",
    );
    events.create(&PostParams::default(), &marker).await.unwrap();

    // Events are mirrored in the order the control plane stored them: once the true one is here, the forged ones
    // were looked at before it.
    let app = instance.app.clone();
    wait_for("the true Event to be mirrored", Duration::from_secs(60), || async {
        let notes = event_notes(&app, &ns, "victim").await;
        notes
            .iter()
            .any(|(reason, _)| reason == "Marker")
            .then_some(notes.clone())
            .ok_or(format!("{notes:?}\n{}", tail(&instance.log(), 5)))
    })
    .await;
    let notes = event_notes(&app, &ns, "victim").await;
    assert!(!notes.iter().any(|(reason, _)| reason == "Forged"), "{notes:?}");
    remote.delete("impostor", &DeleteParams::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_secret_crossplane_did_not_write_for_the_twin_is_not_copied() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("lure").await;
    instance.start().await;
    let ns = instance.namespace("lure").await;
    // A Secret waiting at the name the twin's connection Secret will have, written by someone else and controlled
    // by an object of theirs. (One with no controller at all, Crossplane v2 adopts and overwrites with the twin's
    // connection details alone, seen on v2.3.4: it then is the twin's, and copying it is right; which of the two a
    // reconcile saw first made this test pass or fail.)
    let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "lure-owner"}})).unwrap();
    let owner = Api::<ConfigMap>::namespaced(instance.control_plane.clone(), &instance.claim_namespace)
        .create(&PostParams::default(), &owner)
        .await
        .unwrap();
    let bait: Secret = serde_json::from_value(json!({
        "metadata": {"name": remote_claim_name("lured", &ns, &instance.id), "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "lure-owner", "uid": owner.uid().unwrap(),
            "controller": true}]},
        "type": "connection.crossplane.io/v1alpha1", "data": {"password": "c3RvbGVu"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(instance.control_plane.clone(), &instance.claim_namespace)
        .create(&PostParams::default(), &bait)
        .await
        .unwrap();
    apply_claim(&ns, "lured").await;
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kubernetes_cluster_resource());
    let claim = wait_reason(&local, "lured", "RemoteSecretConflict", &instance).await;
    assert!(claim.data["status"].to_string().contains("not written by Crossplane"));
    let copied = Api::<Secret>::namespaced(instance.app.clone(), &ns)
        .get_opt("lured-conn")
        .await
        .unwrap();
    assert!(copied.is_none(), "the bait was copied: {copied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_claim_crds_an_xrd_controls_and_allowed_groups_come_down() {
    let _env = support::env_shared().await;
    // A namespaced CRD in the claim category that no XRD controls, already there when claimsync starts.
    let group = format!("{}.test.starter.org", support::unique("fake"));
    let crd_name = format!("fakes.{group}");
    let fake: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": crd_name},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"kind": "Fake", "plural": "fakes", "categories": ["claim"]},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                          "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    let remote_crds = Api::<CustomResourceDefinition>::all(support::control_plane().await);
    remote_crds.create(&PostParams::default(), &fake).await.unwrap();

    // claimsync limited to the seed's KubernetesCluster group, with a claim of each seed kind waiting.
    let mut instance = Instance::new("groups").await;
    let ns = instance.namespace("groups").await;
    apply_claim(&ns, "allowed").await;
    let db = format!(
        "apiVersion: db.starter.org/v1alpha1\nkind: PostgreSQLInstance\nmetadata:\n  name: skipped\n  namespace: {ns}\nspec:\n  parameters:\n    storageGB: 20\n"
    );
    kubectl_apply(&db).await.unwrap();
    instance.start_in_sync(&["--claim-groups", "k8s.starter.org"]).await;
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kubernetes_cluster_resource());
    wait_ready(&local, "allowed", &instance).await;
    // In sync means the catalog was listed and replicated: what it did not copy by now, it will not.
    let app_crds = Api::<CustomResourceDefinition>::all(instance.app.clone());
    assert!(
        app_crds.get_opt(&crd_name).await.unwrap().is_none(),
        "{crd_name} was copied"
    );
    let skipped = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &postgres_resource("v1beta1"))
        .get("skipped")
        .await
        .unwrap();
    assert!(skipped.finalizers().is_empty(), "{:?}", skipped.finalizers());
    assert_eq!(condition(&skipped, "Replicated"), None);
    remote_crds.delete(&crd_name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossplane_control_keys_and_unsupported_fields_do_not_go_up() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("keys").await;
    instance.start().await;
    let ns = instance.namespace("keys").await;
    let yaml = cluster_claim_yaml(
        &ns,
        "keyed",
        &support::unique("kc"),
        "keyed-conn",
        "\n    crossplane.io/paused: \"true\"\n    crossplane.io/composition-resource-name: hijack",
    )
    .replace(
        "    team: platform-users",
        "    team: platform-users\n    crossplane.io/composite: someone-elses",
    );
    kubectl_apply(&yaml).await.unwrap();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kubernetes_cluster_resource());
    wait_for("the claim to be replicated", Duration::from_secs(60), || async {
        let claim = local.get("keyed").await.map_err(|e| e.to_string())?;
        (condition(&claim, "Replicated") == Some(("True".into(), "Synced".into())))
            .then_some(())
            .ok_or(format!("{}\n{}", claim.data["status"], tail(&instance.log(), 5)))
    })
    .await;
    let remote = Api::<DynamicObject>::namespaced_with(
        instance.control_plane.clone(),
        &instance.claim_namespace,
        &kubernetes_cluster_resource(),
    );
    let twin = remote
        .get(&remote_claim_name("keyed", &ns, &instance.id))
        .await
        .unwrap();
    assert_eq!(
        twin.annotations().get("crossplane.io/paused").map(String::as_str),
        Some("true")
    );
    assert!(
        !twin
            .annotations()
            .contains_key("crossplane.io/composition-resource-name")
    );
    assert!(!twin.labels().contains_key("crossplane.io/composite"));
    assert_eq!(twin.labels().get("team").map(String::as_str), Some("platform-users"));

    // A claim that asks to publish its connection details to a secret store is not sent up at all. Crossplane v2
    // dropped secret stores: its claim kinds have no spec.publishConnectionDetailsTo, so no claim can ask.
    let crd = crate::platform_support::local_crd(&instance.app, "kubernetesclusters.k8s.starter.org")
        .await
        .unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    if spec.get("publishConnectionDetailsTo").is_none() {
        return;
    }
    let publishing = cluster_claim_yaml(&ns, "publisher", &support::unique("kc"), "publisher-conn", "").replace(
        "  writeConnectionSecretToRef:",
        "  publishConnectionDetailsTo:\n    name: publisher-details\n  writeConnectionSecretToRef:",
    );
    kubectl_apply(&publishing).await.unwrap();
    let claim = wait_reason(&local, "publisher", "Unsupported", &instance).await;
    assert!(
        claim.data["status"]
            .to_string()
            .contains("spec.publishConnectionDetailsTo")
    );
    let twin = remote
        .get_opt(&remote_claim_name("publisher", &ns, &instance.id))
        .await
        .unwrap();
    assert!(twin.is_none(), "a twin was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_secret_the_claim_no_longer_asks_for_is_removed() {
    let _env = support::env_shared().await;
    let (instance, ns, local) = ready_instance("rename", "renamed").await;
    let secrets = Api::<Secret>::namespaced(instance.app.clone(), &ns);
    wait_secret(&instance.app, &ns, "renamed-conn").await;
    let names = || async {
        secrets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|s| s.name_any())
            .filter(|n| n.starts_with("renamed"))
            .collect::<BTreeSet<String>>()
    };

    let rename = json!({"spec": {"writeConnectionSecretToRef": {"name": "renamed-again"}}});
    local
        .patch("renamed", &PatchParams::default(), &Patch::Merge(&rename))
        .await
        .unwrap();
    wait_for("only the new Secret to be there", Duration::from_secs(60), || async {
        let now = names().await;
        (now == BTreeSet::from(["renamed-again".to_string()]))
            .then_some(())
            .ok_or(format!("{now:?}\n{}", tail(&instance.log(), 5)))
    })
    .await;

    let unask = json!({"spec": {"writeConnectionSecretToRef": null}});
    local
        .patch("renamed", &PatchParams::default(), &Patch::Merge(&unask))
        .await
        .unwrap();
    wait_for("no Secret to be left", Duration::from_secs(60), || async {
        let now = names().await;
        now.is_empty()
            .then_some(())
            .ok_or(format!("{now:?}\n{}", tail(&instance.log(), 5)))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_secret_may_not_run_code_in_claimsync() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("exec").await;
    let ns = instance.namespace("exec").await;
    let kubeconfig = std::fs::read_to_string(&env().control_plane_kubeconfig).unwrap();
    let token_line = kubeconfig
        .lines()
        .find(|l| l.trim_start().starts_with("token:"))
        .unwrap()
        .to_string();
    let witness = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(support::unique("pwned"));
    let hostile = kubeconfig.replace(
        &token_line,
        &format!(
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [-c, \"touch {}\"]",
            witness.display()
        ),
    );
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "controlplane"}, "stringData": {"kubeconfig": hostile}
    }))
    .unwrap();
    Api::<Secret>::namespaced(instance.app.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    instance.control_plane_secret = Some(format!("{ns}/controlplane"));
    let (code, stderr) = instance.run_to_exit(&[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("Secret {ns}/controlplane")) && stderr.contains(".exec is refused"),
        "{stderr}"
    );
    assert!(!witness.exists(), "the kubeconfig's exec plugin ran");
}
