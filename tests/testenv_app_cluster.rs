//! The app cluster of the env is a real API server: CRDs are established, custom resources stored, watches fire.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::support::{self, wait_for};

#[tokio::test]
async fn crd_and_custom_resource_round_trip_and_watch() {
    let _env = support::env_shared().await;
    let client = support::app().await;
    let ns = support::namespace(&client, "crd").await;
    let group = format!("{}.test.claimsync.dev", support::unique("g"));
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                }}}
            }]
        }
    }))
    .unwrap();
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    wait_for("the CRD to be established", Duration::from_secs(30), || async {
        let crd = crds.get(&format!("widgets.{group}")).await.map_err(|e| e.to_string())?;
        let established = crd
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(()).ok_or_else(|| "not established".to_string())
    })
    .await;

    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Widget"), "widgets");
    let widgets = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &resource);
    let mut widget = DynamicObject::new("w1", &resource).within(&ns);
    widget.data = json!({"spec": {"size": 3}});
    // Right after Established the new resource may still be missing from discovery for a moment.
    wait_for("the first Widget to be stored", Duration::from_secs(30), || async {
        match widgets.create(&PostParams::default(), &widget).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    let read = widgets.get("w1").await.unwrap();
    assert_eq!(read.data["spec"]["size"], 3);

    let mut events = watcher(widgets.clone(), watcher::Config::default()).boxed();
    // The watch's initial listing contains the widget as it is now.
    let patch = json!({"spec": {"size": 5}});
    let mut patched = false;
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.next().await {
            match event.unwrap() {
                watcher::Event::InitDone if !patched => {
                    widgets
                        .patch("w1", &PatchParams::apply("claimsync-test"), &Patch::Merge(&patch))
                        .await
                        .unwrap();
                    patched = true;
                }
                watcher::Event::Apply(obj) if obj.data["spec"]["size"] == 5 => return obj,
                _ => {}
            }
        }
        panic!("the watch ended");
    })
    .await
    .expect("the watch saw the change within 30s");
    assert_eq!(seen.metadata.name.as_deref(), Some("w1"));
}
