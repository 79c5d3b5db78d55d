//! Each cluster of the env runs a kube-controller-manager: deleted namespaces go away, and dependents of a deleted
//! owner are garbage-collected, as in a real cluster.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::support;

async fn namespace_deletion_completes(client: Client) {
    let ns = support::namespace(&client, "gone").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "content"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let namespaces = Api::<Namespace>::all(client);
    namespaces.delete(&ns, &DeleteParams::default()).await.unwrap();
    support::wait_gone(
        "the namespace to be removed",
        // The namespace controller walks every resource type: on a busy control plane with many CRDs, slowly.
        Duration::from_secs(180),
        &namespaces,
        &ns,
        |n| format!("still there, phase {:?}", n.status.and_then(|s| s.phase)),
    )
    .await;
}

async fn dependents_are_collected(client: Client) {
    let ns = support::namespace(&client, "gc").await;
    let cms = Api::<ConfigMap>::namespaced(client, &ns);
    let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap();
    let owner = cms.create(&PostParams::default(), &owner).await.unwrap();
    let dependent: ConfigMap = serde_json::from_value(json!({"metadata": {
        "name": "dependent",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                             "uid": owner.metadata.uid.unwrap()}]
    }}))
    .unwrap();
    cms.create(&PostParams::default(), &dependent).await.unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    support::wait_gone(
        "the dependent to be garbage-collected",
        Duration::from_secs(60),
        &cms,
        "dependent",
        |_| "still there".to_string(),
    )
    .await;
}

#[tokio::test]
async fn app_cluster_deletes_namespaces_and_collects_garbage() {
    let _env = support::env_shared().await;
    let client = support::app().await;
    tokio::join!(
        namespace_deletion_completes(client.clone()),
        dependents_are_collected(client)
    );
}

#[tokio::test]
async fn control_plane_deletes_namespaces_and_collects_garbage() {
    let _env = support::env_shared().await;
    let client = support::control_plane().await;
    tokio::join!(
        namespace_deletion_completes(client.clone()),
        dependents_are_collected(client)
    );
}
