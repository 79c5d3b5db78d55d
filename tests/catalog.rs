//! The catalog, end to end: a claim kind offered at runtime appears in the app cluster without a restart, its
//! schema changes follow, a withdrawn kind keeps its CRD and claims (marked KindWithdrawn), and a local CRD
//! claimsync does not own is left alone. Each test's kinds live in a group of their own.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::instance::{Instance, tail};
use crate::platform_support::{
    apply, composition, composition_resource, local_crd, wait_claim_crd_gone, xrd, xrd_resource,
};
use crate::support::{self, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_kinds_arrive_change_and_withdraw_without_restart() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("cat").await;
    instance.start().await;
    let ns = instance.namespace("cat").await;
    let group = format!("{}.test.starter.org", support::unique("g"));
    let crd_name = format!("gadgets.{group}");

    apply(
        &instance.control_plane,
        &composition_resource(),
        &composition(&group, "Gadget"),
    )
    .await;
    apply(
        &instance.control_plane,
        &xrd_resource(),
        &xrd(&group, "Gadget", json!({}), false),
    )
    .await;
    let app = instance.app.clone();
    let crd = wait_for(
        "the new claim kind to reach the app cluster",
        Duration::from_secs(90),
        || async {
            let crd = local_crd(&app, &crd_name).await?;
            let established = crd["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Established" && c["status"] == "True");
            established.then_some(crd).ok_or_else(|| "not established".to_string())
        },
    )
    .await;
    assert_eq!(crd["metadata"]["labels"]["claimsync.dev/managed-by"], "claimsync");
    assert_eq!(crd["spec"]["names"]["categories"], json!(["claim"]));

    // A claim of the new kind replicates, with no restart of claimsync.
    let gadget = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1alpha1", "Gadget"), "gadgets");
    let claims = Api::<DynamicObject>::namespaced_with(app.clone(), &ns, &gadget);
    let mut claim = DynamicObject::new("g1", &gadget).within(&ns);
    claim.data = json!({"spec": {"size": 1}});
    claims.create(&PostParams::default(), &claim).await.unwrap();
    wait_for("the gadget to be replicated", Duration::from_secs(90), || async {
        let c = claims.get("g1").await.map_err(|e| e.to_string())?;
        let replicated = c.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Replicated" && c["status"] == "True");
        replicated
            .then_some(())
            .ok_or_else(|| format!("{}\n{}", c.data["status"], tail(&instance.log(), 8)))
    })
    .await;

    // A new field, then a new version, reach the local CRD.
    apply(
        &instance.control_plane,
        &xrd_resource(),
        &xrd(&group, "Gadget", json!({"color": {"type": "string"}}), false),
    )
    .await;
    wait_for("the new field in the local CRD", Duration::from_secs(90), || async {
        let crd = local_crd(&app, &crd_name).await?;
        let color =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["color"];
        color
            .is_object()
            .then_some(())
            .ok_or_else(|| "no color yet".to_string())
    })
    .await;
    apply(
        &instance.control_plane,
        &xrd_resource(),
        &xrd(&group, "Gadget", json!({"color": {"type": "string"}}), true),
    )
    .await;
    wait_for("the new version in the local CRD", Duration::from_secs(90), || async {
        let crd = local_crd(&app, &crd_name).await?;
        let versions: Vec<&str> = crd["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .collect();
        (versions == ["v1alpha1", "v1beta1"])
            .then_some(())
            .ok_or(format!("versions {versions:?}"))
    })
    .await;

    // Withdrawn: the local CRD and claim stay, the claim says why it is no longer replicated, and the twin that
    // Crossplane deletes with its kind is not made again. Every twin the control plane holds from now on is seen.
    let remote_gadgets =
        Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &gadget);
    let twin = remote_gadgets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .expect("the gadget's twin");
    let twins_seen = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = twins_seen.clone();
    let watch = tokio::spawn(
        watcher(remote_gadgets, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .for_each(move |twin| {
                if let Ok(twin) = twin {
                    seen.lock().unwrap().insert(twin.uid().unwrap_or_default());
                }
                futures::future::ready(())
            }),
    );
    Api::<DynamicObject>::all_with(instance.control_plane.clone(), &xrd_resource())
        .delete(&format!("xgadgets.{group}"), &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the gadget to be marked KindWithdrawn",
        Duration::from_secs(120),
        || async {
            let c = claims.get("g1").await.map_err(|e| e.to_string())?;
            let withdrawn = c.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Replicated" && c["status"] == "False" && c["reason"] == "KindWithdrawn");
            withdrawn
                .then_some(())
                .ok_or_else(|| format!("{}\n{}", c.data["status"], tail(&instance.log(), 8)))
        },
    )
    .await;
    assert!(
        local_crd(&app, &crd_name).await.is_ok(),
        "the local CRD is never deleted"
    );
    wait_claim_crd_gone(&instance.control_plane, &crd_name, &format!("xgadgets.{group}")).await;
    watch.abort();
    assert_eq!(
        *twins_seen.lock().unwrap(),
        BTreeSet::from([twin.uid().unwrap()]),
        "the twin of a withdrawn kind was made again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_crd_claimsync_does_not_own_is_left_alone() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("foreign").await;
    instance.start().await;
    let group = format!("{}.test.starter.org", support::unique("f"));
    let crd_name = format!("widgets.{group}");
    let foreign: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": crd_name, "labels": {"owner": "someone-else"}},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    let crds = Api::<CustomResourceDefinition>::all(instance.app.clone());
    let before = crds.create(&PostParams::default(), &foreign).await.unwrap();

    apply(
        &instance.control_plane,
        &composition_resource(),
        &composition(&group, "Widget"),
    )
    .await;
    apply(
        &instance.control_plane,
        &xrd_resource(),
        &xrd(&group, "Widget", json!({}), false),
    )
    .await;
    // claimsync says so with a Warning Event about the CRD (in `default`, as CRDs are cluster-scoped).
    let events = Api::<Event>::namespaced(instance.app.clone(), "default");
    let said = wait_for(
        "claimsync to report the foreign CRD",
        Duration::from_secs(90),
        || async {
            let list = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
            list.items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("ForeignCRD")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(crd_name.as_str())
                })
                .ok_or_else(|| tail(&instance.log(), 5))
        },
    )
    .await;
    assert_eq!(said.type_.as_deref(), Some("Warning"));
    assert!(
        said.note.as_deref().is_some_and(|n| n.contains("is not claimsync's")),
        "{:?}",
        said.note
    );
    let after = crds.get(&crd_name).await.unwrap();
    assert_eq!(
        serde_json::to_value(&after.spec).unwrap(),
        serde_json::to_value(&before.spec).unwrap(),
        "untouched"
    );
    assert_eq!(after.labels(), before.labels());
    assert!(
        !after
            .managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("claimsync"))
    );
    Api::<DynamicObject>::all_with(instance.control_plane.clone(), &xrd_resource())
        .delete(&format!("xwidgets.{group}"), &DeleteParams::default())
        .await
        .unwrap();
}
