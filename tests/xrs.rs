//! Crossplane v2's namespaced composite resources (XRs) end to end, with the example platform's `WebApp` (a v2 XRD
//! whose composition writes a Secret named by `spec.writeConnectionSecretToRef`): spec up under an `nxr-` name,
//! Crossplane's `spec.crossplane` fields, status and the connection Secret down, edits, deletion, the
//! `resourceRefs` safety rail, and offline edits replayed. On Crossplane v1.20 there are no XRs: each test says so
//! and passes.

use std::collections::BTreeSet;
use std::time::Duration;

use claimsync::model::kind::KindFamily;
use claimsync::model::naming::remote_name;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::claim_support::{column, is_true, keys, kubectl_apply, wait_event, wait_ready, wait_reason, wait_secret};
use crate::instance::{Instance, tail};
use crate::support::{self, env, wait_for};

/// The example platform's namespaced XR kind (`e2e/platform/v2/webapp.yaml`).
pub(crate) fn web_app_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps.starter.org", "v1alpha1", "WebApp"),
        "webapps",
    )
}

/// Whether the env runs Crossplane v2; if not, says that the test has nothing to check.
fn xrs_offered(test: &str) -> bool {
    let v2 = env().crossplane_v2();
    if !v2 {
        eprintln!("{test}: the control plane runs Crossplane v1.20, which has no namespaced XRs; nothing to check");
    }
    v2
}

/// A WebApp `name` in `ns`, as a user writes it, with `extra` spec lines.
pub(crate) fn web_app_yaml(ns: &str, name: &str, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: apps.starter.org/v1alpha1\nkind: WebApp\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  \
         image: {image}\n  replicas: 2\n  writeConnectionSecretToRef:\n    name: {name}-conn\n{extra}"
    )
}

/// `kubectl apply`s a WebApp as a user would, to the app cluster of `kubeconfig`, retrying while its kind is not
/// served there yet (claimsync copies it down as it starts).
pub(crate) async fn apply_web_app(kubeconfig: &std::path::Path, yaml: &str) {
    wait_for(
        "the WebApp kind in the app cluster",
        Duration::from_secs(60),
        || async { crate::claim_support::kubectl_apply_to(kubeconfig, yaml).await },
    )
    .await;
}

/// The names in an XR's `spec.crossplane.resourceRefs`, as `Kind/name`.
fn resource_refs(xr: &DynamicObject) -> BTreeSet<String> {
    xr.data["spec"]["crossplane"]["resourceRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{}/{}",
                r["kind"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_xrs_replicate_up_and_status_and_secrets_come_down() {
    if !xrs_offered("namespaced_xrs_replicate") {
        return;
    }
    let _env = support::env_shared().await;
    let mut instance = Instance::new("xr").await;
    instance.start().await;
    let ns = instance.namespace("xr").await;
    let web = web_app_resource();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &web);
    crate::xrs::apply_web_app(
        &crate::support::env().app_kubeconfig,
        &web_app_yaml(&ns, "web", "nginx:1.27", ""),
    )
    .await;

    let xr = wait_ready(&local, "web", &instance).await;
    let twin_name = remote_name(KindFamily::NamespacedXr, "web", &ns, &instance.id);
    assert!(twin_name.starts_with("nxr-"), "{twin_name}");
    let twins = Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &web);
    let twin = twins.get(&twin_name).await.unwrap();
    assert_eq!(twin.labels()["claimsync.dev/origin-namespace"], ns);
    assert_eq!(twin.labels()["claimsync.dev/origin-name"], "web");
    // The Secret's name is made unique in the shared claim namespace; the user's comes back as the local name.
    assert_eq!(twin.data["spec"]["writeConnectionSecretToRef"]["name"], twin_name);
    // Crossplane's choices come down: the objects it composed, the composition it picked.
    let refs = resource_refs(&xr);
    assert_eq!(refs, resource_refs(&twin), "{}", xr.data["spec"]);
    assert!(refs.contains(&format!("Secret/{twin_name}")), "{refs:?}");
    assert_eq!(refs.len(), 2, "{refs:?}");
    assert_eq!(
        xr.data["spec"]["crossplane"]["compositionRef"]["name"],
        "webapps.apps.starter.org"
    );
    assert_eq!(xr.data["status"]["host"], format!("{twin_name}.apps.starter.org"));
    // A remote observedGeneration says the local generation it stands for.
    let synced = xr.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Synced")
        .cloned()
        .unwrap();
    assert_eq!(synced["observedGeneration"], json!(xr.metadata.generation), "{synced}");

    // The composition's Secret, controlled by the twin, comes down under the name the user asked for.
    let secret = wait_secret(&instance.app, &ns, "web-conn").await;
    assert_eq!(secret.type_.as_deref(), Some("connection.crossplane.io/v1alpha1"));
    assert_eq!(
        keys(&secret),
        BTreeSet::from(["host".into(), "image".into(), "password".into(), "username".into()])
    );
    assert_eq!(secret.owner_references()[0].uid, xr.uid().unwrap());

    // What Crossplane said about the twin is told on the local XR; the metrics count XRs by kind and phase.
    let events = Api::<Event>::namespaced(instance.app.clone(), &ns);
    wait_for(
        "a control plane Event mirrored onto the XR",
        Duration::from_secs(60),
        || async {
            let list = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
            list.items
                .iter()
                .any(|e| {
                    e.note.as_deref().is_some_and(|n| n.starts_with("[control plane] "))
                        && e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == xr.uid().as_deref()
                })
                .then_some(())
                .ok_or_else(|| "none yet".to_string())
        },
    )
    .await;
    let metrics = instance.ops("/metrics").await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"claimsync_claims{kind="WebApp",phase="Synced"} 1"#),
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("claimsync_claims"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // kubectl shows claimsync's column on XRs too.
    let table = env()
        .kubectl(&env().app_kubeconfig, &["get", "webapps", "-n", &ns])
        .await
        .unwrap();
    assert_eq!(column(&table, "REPLICATED"), ["True"], "{table}");

    // An edit goes up, and what the composition derives from it comes back down, Secret included.
    let edit = json!({"spec": {"image": "nginx:1.28"}});
    local
        .patch("web", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(instance.app.clone(), &ns);
    wait_for(
        "the edit to come back in the connection Secret",
        Duration::from_secs(90),
        || async {
            let secret = secrets.get("web-conn").await.map_err(|e| e.to_string())?;
            let image = secret.data.unwrap_or_default().get("image").map(|v| v.0.clone());
            (image.as_deref() == Some(b"nginx:1.28".as_slice()))
                .then_some(())
                .ok_or(format!("image {image:?}\n{}", tail(&instance.log(), 10)))
        },
    )
    .await;
    let twin = twins.get(&twin_name).await.unwrap();
    assert_eq!(twin.data["spec"]["image"], "nginx:1.28");
    assert_eq!(resource_refs(&twin).len(), 2, "no second set of composed objects");

    // Deleting the local XR deletes its twin, then lets the local XR go.
    local.delete("web", &DeleteParams::default()).await.unwrap();
    support::wait_gone("the twin", Duration::from_secs(90), &twins, &twin_name, |t| {
        format!("{:?}", t.metadata.deletion_timestamp)
    })
    .await;
    support::wait_gone("the local XR", Duration::from_secs(60), &local, "web", |x| {
        format!("{}\n{}", x.data["status"], tail(&instance.log(), 10))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_refs_set_in_the_app_cluster_never_go_up() {
    if !xrs_offered("resource_refs_never_go_up") {
        return;
    }
    let _env = support::env_shared().await;
    let mut instance = Instance::new("xrrefs").await;
    instance.start().await;
    let ns = instance.namespace("xrrefs").await;
    let web = web_app_resource();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &web);
    // A tenant names another tenant's object as if the XR had composed it.
    let smuggled = "  crossplane:\n    resourceRefs:\n      - apiVersion: v1\n        kind: Secret\n        name: \
                    another-tenants-secret\n";
    crate::xrs::apply_web_app(
        &crate::support::env().app_kubeconfig,
        &web_app_yaml(&ns, "sly", "nginx:1.27", smuggled),
    )
    .await;
    wait_event(&instance.app, &ns, "sly", "FieldNotReplicated").await;
    let xr = wait_ready(&local, "sly", &instance).await;
    let twin_name = remote_name(KindFamily::NamespacedXr, "sly", &ns, &instance.id);
    let twins = Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &web);
    let twin = twins.get(&twin_name).await.unwrap();
    // The twin lists what Crossplane composed for it, never the smuggled object, and so does the local XR now.
    let refs = resource_refs(&twin);
    assert!(!refs.iter().any(|r| r.contains("another-tenants")), "{refs:?}");
    assert_eq!(resource_refs(&xr), refs, "{}", xr.data["spec"]);
    // Crossplane's list replaced the smuggled one locally (claimsync's copy), so the Event is what says it.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xrs_made_and_edited_offline_go_up_when_the_link_returns() {
    if !xrs_offered("xrs_offline") {
        return;
    }
    let _env = support::env_shared().await;
    let mut instance = Instance::new("xroff").await;
    instance.use_link();
    instance.start().await;
    let ns = instance.namespace("xroff").await;
    let web = web_app_resource();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &web);
    crate::xrs::apply_web_app(
        &crate::support::env().app_kubeconfig,
        &web_app_yaml(&ns, "steady", "nginx:1.27", ""),
    )
    .await;
    wait_ready(&local, "steady", &instance).await;

    instance.link("cut");
    let waiting = wait_reason(&local, "steady", "ControlPlaneUnreachable", &instance).await;
    assert!(
        is_true(&waiting, "Ready"),
        "the last known status stays: {}",
        waiting.data["status"]
    );
    let edit = json!({"spec": {"replicas": 5}});
    local
        .patch("steady", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("local edits work offline");
    kubectl_apply(&web_app_yaml(&ns, "late", "nginx:1.27", ""))
        .await
        .expect("new XRs are taken offline");
    let late = wait_reason(&local, "late", "ControlPlaneUnreachable", &instance).await;
    assert!(
        late.data["status"].to_string().contains("create the twin"),
        "{}",
        late.data["status"]
    );

    instance.link("restore");
    wait_ready(&local, "late", &instance).await;
    wait_secret(&instance.app, &ns, "late-conn").await;
    let twins = Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &web);
    let steady = remote_name(KindFamily::NamespacedXr, "steady", &ns, &instance.id);
    wait_for(
        "the offline edit to reach the control plane",
        Duration::from_secs(90),
        || async {
            let twin = twins.get(&steady).await.map_err(|e| e.to_string())?;
            (twin.data["spec"]["replicas"] == 5).then_some(()).ok_or(format!(
                "{}\n{}",
                twin.data["spec"],
                tail(&instance.log(), 10)
            ))
        },
    )
    .await;
    wait_ready(&local, "steady", &instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shim_lists_xr_kinds_and_xrs_by_family() {
    if !xrs_offered("the_shim_lists_xr_kinds") {
        return;
    }
    let _env = support::env_shared().await;
    let mut instance = Instance::new("xrshim").await;
    let _registered = crate::shim_support::start_registered(&mut instance).await;
    let ns = instance.namespace("xrshim").await;
    crate::xrs::apply_web_app(
        &crate::support::env().app_kubeconfig,
        &web_app_yaml(&ns, "web", "nginx:1.27", ""),
    )
    .await;
    crate::shim_support::wait_phase(&ns, &["web"], "Synced", &instance).await;

    let kinds = crate::shim_support::kubectl(&["get", "claimkinds", "-o", "wide"])
        .await
        .unwrap();
    let names = column(&kinds, "NAME");
    let row = names
        .iter()
        .position(|n| n == "webapps.apps.starter.org")
        .unwrap_or_else(|| panic!("{kinds}"));
    assert_eq!(column(&kinds, "FAMILY")[row], "NamespacedXR", "{kinds}");
    assert_eq!(column(&kinds, "XRD")[row], "webapps.apps.starter.org", "{kinds}");
    let claim_row = names
        .iter()
        .position(|n| n == "kubernetesclusters.k8s.starter.org")
        .unwrap_or_else(|| panic!("{kinds}"));
    assert_eq!(column(&kinds, "FAMILY")[claim_row], "Claim", "{kinds}");

    // A cluster-scoped XR kind is offered too: listed, not replicated, and it says why.
    let group = format!("{}.test.starter.org", support::unique("fleet"));
    let mut xrd = crate::platform_support::namespaced_xrd(&group, "Fleet", json!({}));
    xrd["spec"]["scope"] = json!("Cluster");
    crate::platform_support::apply(
        &instance.control_plane,
        &crate::platform_support::xrd_v2_resource(),
        &xrd,
    )
    .await;
    let fleet = format!("fleets.{group}");
    let why = wait_for(
        "the cluster-scoped kind in claimkinds",
        Duration::from_secs(60),
        || async {
            let out = crate::shim_support::kubectl(&["get", "claimkind", &fleet, "-o", "json"]).await?;
            let object: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            (object["spec"]["family"] == "ClusterXR")
                .then(|| {
                    object["status"]["notReplicated"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .ok_or(out)
        },
    )
    .await;
    assert!(why.contains("no namespace to map"), "{why}");
    let local_crd = crate::platform_support::local_crd(&instance.app, &fleet).await;
    assert!(
        local_crd.is_err(),
        "a cluster-scoped kind gets no local CRD: {local_crd:?}"
    );
    env()
        .kubectl(
            &env().control_plane_kubeconfig,
            &[
                "delete",
                "xrd",
                xrd["metadata"]["name"].as_str().unwrap(),
                "--wait=false",
            ],
        )
        .await
        .unwrap();

    let items = crate::shim_support::claimsyncs(&ns).await.unwrap();
    let web = items
        .iter()
        .find(|i| i["metadata"]["name"] == "web")
        .unwrap_or_else(|| panic!("{items:?}"));
    assert_eq!(web["spec"]["claimRef"]["kind"], "WebApp", "{web}");
    assert_eq!(
        web["spec"]["remoteName"],
        remote_name(KindFamily::NamespacedXr, "web", &ns, &instance.id),
        "{web}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xr_secret_its_twin_does_not_control_is_not_copied() {
    if !xrs_offered("an_xr_secret_its_twin_does_not_control") {
        return;
    }
    let _env = support::env_shared().await;
    let mut instance = Instance::new("xrlure").await;
    instance.start().await;
    let ns = instance.namespace("xrlure").await;
    // Another tenant of the claim namespace got there first: a Secret at the name the twin's composition will
    // write, controlled by an object of theirs.
    let twin_name = remote_name(KindFamily::NamespacedXr, "lured", &ns, &instance.id);
    let owner: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "xr-lure-owner"}})).unwrap();
    let owner = Api::namespaced(instance.control_plane.clone(), &instance.claim_namespace)
        .create(&Default::default(), &owner)
        .await
        .unwrap();
    let bait: Secret = serde_json::from_value(json!({
        "metadata": {"name": twin_name, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "xr-lure-owner", "uid": owner.uid().unwrap(),
            "controller": true}]},
        "data": {"password": "c3RvbGVu"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(instance.control_plane.clone(), &instance.claim_namespace)
        .create(&Default::default(), &bait)
        .await
        .unwrap();
    crate::xrs::apply_web_app(
        &crate::support::env().app_kubeconfig,
        &web_app_yaml(&ns, "lured", "nginx:1.27", ""),
    )
    .await;
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &web_app_resource());
    let xr = wait_reason(&local, "lured", "RemoteSecretConflict", &instance).await;
    assert!(
        xr.data["status"].to_string().contains("not written by Crossplane"),
        "{}",
        xr.data["status"]
    );
    let copied = Api::<Secret>::namespaced(instance.app.clone(), &ns)
        .get_opt("lured-conn")
        .await
        .unwrap();
    assert!(copied.is_none(), "the bait was copied: {copied:?}");
}
