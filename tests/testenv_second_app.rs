//! The env's second app cluster (app2) is a real cluster of its own: a CRD and object made there are not in the
//! first app cluster, its identity (kube-system's uid) differs, and its controller manager removes namespaces.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;

use crate::support::{self, wait_for};

#[tokio::test]
async fn second_app_cluster_is_independent() {
    let _env = support::env_shared().await;
    let (app, app2, control_plane) = (
        support::app().await,
        support::app2().await,
        support::control_plane().await,
    );
    let uid = |client: kube::Client| async move {
        Api::<Namespace>::all(client)
            .get("kube-system")
            .await
            .unwrap()
            .metadata
            .uid
            .unwrap()
    };
    let app2_uid = uid(app2.clone()).await;
    assert_ne!(app2_uid, uid(app.clone()).await, "app and app2 share kube-system");
    assert_ne!(
        app2_uid,
        uid(control_plane).await,
        "app2 and the control plane share kube-system"
    );

    let group = format!("{}.test.claimsync.dev", support::unique("second"));
    let name = format!("gadgets.{group}");
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .unwrap();
    let crds2 = Api::<CustomResourceDefinition>::all(app2.clone());
    crds2.create(&PostParams::default(), &crd).await.unwrap();
    let ns = support::namespace(&app2, "second").await;
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Gadget"), "gadgets");
    let gadgets = Api::<DynamicObject>::namespaced_with(app2.clone(), &ns, &resource);
    let mut gadget = DynamicObject::new("g1", &resource).within(&ns);
    gadget.data = json!({"spec": {"color": "blue"}});
    // Until the CRD is established its resource is not served.
    wait_for("the Gadget to be stored in app2", Duration::from_secs(30), || async {
        match gadgets.create(&PostParams::default(), &gadget).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    assert_eq!(gadgets.get("g1").await.unwrap().data["spec"]["color"], "blue");

    let crds1 = Api::<CustomResourceDefinition>::all(app.clone());
    assert!(crds1.get_opt(&name).await.unwrap().is_none(), "app2's CRD is in app");
    assert!(
        Api::<Namespace>::all(app).get_opt(&ns).await.unwrap().is_none(),
        "app2's namespace is in app"
    );
    crds2.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn second_app_cluster_deletes_namespaces() {
    let client = support::app2().await;
    let ns = support::namespace(&client, "gone2").await;
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "content"}})).unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let namespaces = Api::<Namespace>::all(client);
    namespaces.delete(&ns, &DeleteParams::default()).await.unwrap();
    support::wait_gone(
        "app2's namespace to be removed",
        Duration::from_secs(60),
        &namespaces,
        &ns,
        |n| format!("still there, phase {:?}", n.status.and_then(|s| s.phase)),
    )
    .await;
}
