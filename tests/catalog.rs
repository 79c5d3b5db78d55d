//! The catalog, end to end: a claim kind offered at runtime appears in the app cluster without a restart, its
//! schema changes follow, a withdrawn kind keeps its CRD and claims (marked KindWithdrawn), and a local CRD
//! claimsync does not own is left alone. Each test runs a claimsync of its own and its kinds live in a group of
//! their own; a test that needs a kind already there (or a claim of it replicated) sets that up itself.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::instance::{Instance, tail};
use crate::platform_support::{
    TestKind, apply, composition, composition_resource, local_crd, wait_claim_crd_gone, xrd, xrd_resource,
};
use crate::support::{self, wait_for};

/// A running claimsync and a kind `Gadget` of its own that has reached the app cluster; the kind's local CRD.
async fn arrived_gadget(prefix: &str) -> (Instance, TestKind, Value) {
    let mut instance = Instance::new(prefix).await;
    instance.start().await;
    let kind = TestKind::offer(&instance.control_plane, "g", "Gadget", json!({})).await;
    let crd = kind.wait_local(&instance.app).await;
    (instance, kind, crd)
}

/// Waits until the claim `name` has a Replicated condition of `status` (and, if given, `reason`).
async fn wait_replicated(
    claims: &Api<DynamicObject>,
    name: &str,
    instance: &Instance,
    status: &str,
    reason: Option<&str>,
) {
    wait_for(
        &format!(
            "claim {name} to be Replicated={status}{}",
            reason.map(|r| format!("/{r}")).unwrap_or_default()
        ),
        Duration::from_secs(120),
        || async {
            let c = claims.get(name).await.map_err(|e| e.to_string())?;
            let found = c.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Replicated" && c["status"] == status && reason.is_none_or(|r| c["reason"] == r));
            found
                .then_some(())
                .ok_or_else(|| format!("{}\n{}", c.data["status"], tail(&instance.log(), 8)))
        },
    )
    .await;
}

/// A claim `g1` of an arrived kind, created in a namespace the instance replicates, and replicated.
async fn replicated_gadget(instance: &Instance, kind: &TestKind) -> Api<DynamicObject> {
    let ns = instance.namespace("cat").await;
    let claims = kind.claims(&instance.app, &ns);
    claims
        .create(&PostParams::default(), &kind.claim(&ns, "g1"))
        .await
        .unwrap();
    wait_replicated(&claims, "g1", instance, "True", None).await;
    claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offered_claim_kind_arrives_as_a_local_crd_of_claimsyncs() {
    let _env = support::env_shared().await;
    let (_instance, _kind, crd) = arrived_gadget("cat").await;
    assert_eq!(crd["metadata"]["labels"]["claimsync.dev/managed-by"], "claimsync");
    assert_eq!(crd["spec"]["names"]["categories"], json!(["claim"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_of_a_kind_offered_at_runtime_replicates_without_a_restart() {
    let _env = support::env_shared().await;
    let (instance, kind, _) = arrived_gadget("cat").await;
    replicated_gadget(&instance, &kind).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_kind_brings_its_new_field_then_its_new_version_to_the_local_crd() {
    let _env = support::env_shared().await;
    let (instance, kind, _) = arrived_gadget("cat").await;
    let (app, group, crd_name) = (&instance.app, &kind.group, &kind.crd_name);
    apply(
        &instance.control_plane,
        &xrd_resource(),
        &xrd(group, "Gadget", json!({"color": {"type": "string"}}), false),
    )
    .await;
    wait_for("the new field in the local CRD", Duration::from_secs(90), || async {
        let crd = local_crd(app, crd_name).await?;
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
        &xrd(group, "Gadget", json!({"color": {"type": "string"}}), true),
    )
    .await;
    wait_for("the new version in the local CRD", Duration::from_secs(90), || async {
        let crd = local_crd(app, crd_name).await?;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_kind_keeps_its_crd_and_claims_and_its_twin_is_not_made_again() {
    let _env = support::env_shared().await;
    let (instance, kind, _) = arrived_gadget("cat").await;
    let claims = replicated_gadget(&instance, &kind).await;

    // Withdrawn: the local CRD and claim stay, the claim says why it is no longer replicated, and the twin that
    // Crossplane deletes with its kind is not made again. Every twin the control plane holds from now on is seen.
    let remote_gadgets = kind.claims(&instance.control_plane, &instance.claim_namespace);
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
    kind.withdraw(&instance.control_plane).await;
    wait_replicated(&claims, "g1", &instance, "False", Some("KindWithdrawn")).await;
    assert!(
        local_crd(&instance.app, &kind.crd_name).await.is_ok(),
        "the local CRD is never deleted"
    );
    wait_claim_crd_gone(&instance.control_plane, &kind.crd_name, &kind.xrd_name()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_whose_crd_is_slow_to_be_established_holds_up_no_other_kind() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("slowkind").await;
    instance.start().await;
    // In the app cluster, a CRD of someone else's whose short name is the plural the kind to come will have: that
    // kind's copy is stored, but its names are not accepted, so it is never established (claimsync waits a minute).
    let group = format!("{}.test.starter.org", support::unique("slow"));
    let foreign: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": format!("blockers.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"kind": "Blocker", "plural": "blockers", "shortNames": ["sluggishs"]},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object"}}}]}
    }))
    .unwrap();
    let local_crds = Api::<CustomResourceDefinition>::all(instance.app.clone());
    local_crds.create(&PostParams::default(), &foreign).await.unwrap();
    let slow = TestKind::offer_in(&instance.control_plane, &group, "Sluggish", json!({})).await;
    wait_for("the slow kind's copy to be stored", Duration::from_secs(60), || async {
        local_crds
            .get_opt(&slow.crd_name)
            .await
            .map_err(|e| e.to_string())?
            .map(drop)
            .ok_or_else(|| "not yet".to_string())
    })
    .await;

    // Another kind offered meanwhile arrives at once, not after the slow one's minute.
    let offered = std::time::Instant::now();
    let brisk = TestKind::offer(&instance.control_plane, "brisk", "Brisk", json!({})).await;
    brisk.wait_local(&instance.app).await;
    let took = offered.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "the other kind took {took:?}: held up by the slow one\n{}",
        tail(&instance.log(), 10)
    );
    let copy = local_crds.get(&slow.crd_name).await.unwrap();
    let established = copy
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(!established, "the slow kind's copy was established after all");
    eprintln!("FIGURE catalog: a kind offered beside one that cannot be established arrived in {took:?}");
    local_crds
        .delete(&foreign.name_any(), &DeleteParams::default())
        .await
        .unwrap();
}
