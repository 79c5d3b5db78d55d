//! Crossplane really runs on the env's control plane: a KubernetesCluster claim becomes Synced and Ready, is
//! bound to a composite through spec.resourceRef, and gets its connection Secret; and one race of Crossplane's that
//! the withdrawal tests must see through.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::platform_support::{TestKind, wait_claim_crd_gone};
use crate::support::{self, wait_for};

pub fn kubernetes_cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.starter.org", "v1alpha1", "KubernetesCluster"),
        "kubernetesclusters",
    )
}

pub fn condition_true(obj: &DynamicObject, type_: &str) -> bool {
    obj.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == type_ && c["status"] == "True")
}

/// Creates a KubernetesCluster claim on the control plane and waits until Crossplane made it Ready.
pub async fn ready_claim(client: &Client, ns: &str, name: &str) -> DynamicObject {
    let resource = kubernetes_cluster_resource();
    let claims = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource);
    let mut claim = DynamicObject::new(name, &resource).within(ns);
    claim.data = json!({"spec": {
        "id": support::unique("c"),
        "parameters": {"nodes": {"count": 3, "size": "small"},
                       "services": {"operators": {"prometheus": {"version": "34.5.1"}}}},
        "writeConnectionSecretToRef": {"name": format!("{name}-conn")}
    }});
    claims.create(&PostParams::default(), &claim).await.unwrap();
    wait_for("the claim to be Synced and Ready", Duration::from_secs(90), || async {
        let claim = claims.get(name).await.map_err(|e| e.to_string())?;
        if condition_true(&claim, "Synced") && condition_true(&claim, "Ready") {
            Ok(claim)
        } else {
            Err(format!("status {}", claim.data["status"]))
        }
    })
    .await
}

#[tokio::test]
async fn kubernetes_cluster_claim_goes_ready_with_connection_secret() {
    let _env = support::env_shared().await;
    let client = support::control_plane().await;
    let ns = support::namespace(&client, "claim").await;
    let claim = ready_claim(&client, &ns, "demo").await;
    let resource_ref = &claim.data["spec"]["resourceRef"];
    assert_eq!(
        resource_ref["kind"], "XKubernetesCluster",
        "spec.resourceRef: {resource_ref}"
    );
    assert!(resource_ref["name"].as_str().is_some_and(|n| !n.is_empty()));

    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let secret = wait_for("the claim's connection Secret", Duration::from_secs(60), || async {
        secrets
            .get_opt("demo-conn")
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not there yet".to_string())
    })
    .await;
    assert_eq!(secret.type_.as_deref(), Some("connection.crossplane.io/v1alpha1"));
    let data = secret.data.unwrap_or_default();
    for key in ["kubeconfig", "endpoint", "clusterName"] {
        assert!(
            data.contains_key(key),
            "key {key} missing from {:?}",
            data.keys().collect::<Vec<_>>()
        );
    }
    let endpoint = String::from_utf8(data["endpoint"].clone().0).unwrap();
    assert!(endpoint.starts_with("https://kc-"), "endpoint {endpoint}");
    // The composed Namespace's name, kc-<spec.id>, read back through a FromFieldPath connection detail.
    let cluster_name = String::from_utf8(data["clusterName"].clone().0).unwrap();
    assert_eq!(
        cluster_name,
        format!("kc-{}", claim.data["spec"]["id"].as_str().unwrap()),
        "clusterName"
    );
}

/// Crossplane's own race when an XRD is withdrawn: a claim its claim controller had not finalized before Crossplane
/// removed the XR CRD keeps its finalizer for ever. Made certain here by pausing the claim until the XR CRD is gone;
/// `wait_claim_crd_gone`, which the withdrawal tests use, must still see the kind through.
#[tokio::test]
async fn a_claim_crossplane_wedged_while_withdrawing_its_kind_is_released_by_the_wait() {
    let _env = support::env_shared().await;
    let client = support::control_plane().await;
    let ns = support::namespace(&client, "wedge").await;
    let kind = TestKind::offer(&client, "wedge", "Widget", json!({})).await;
    let claims = kind.claims(&client, &ns);
    wait_for(
        "Crossplane to serve the claim kind",
        Duration::from_secs(90),
        || async {
            match claims.create(&PostParams::default(), &kind.claim(&ns, "w1")).await {
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    wait_for("the claim to be bound", Duration::from_secs(90), || async {
        let claim = claims.get("w1").await.map_err(|e| e.to_string())?;
        claim.data["spec"]["resourceRef"]["name"]
            .as_str()
            .map(|_| ())
            .ok_or_else(|| format!("spec {}", claim.data["spec"]))
    })
    .await;
    let pause = json!({"metadata": {"annotations": {"crossplane.io/paused": "true"}}});
    claims
        .patch("w1", &PatchParams::default(), &Patch::Merge(&pause))
        .await
        .unwrap();
    kind.withdraw(&client).await;
    let remote_crds = Api::<CustomResourceDefinition>::all(client.clone());
    let xr_crd = kind.xrd_name();
    wait_for("Crossplane to remove the XR CRD", Duration::from_secs(90), || async {
        match remote_crds.get_opt(&xr_crd).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    let unpause = json!({"metadata": {"annotations": {"crossplane.io/paused": null}}});
    claims
        .patch("w1", &PatchParams::default(), &Patch::Merge(&unpause))
        .await
        .unwrap();
    wait_claim_crd_gone(&client, &kind.crd_name, &xr_crd).await;
}
