//! The control plane going away is a normal state: claims say so at once, keep their last known status, local
//! edits keep working, and everything done meanwhile reaches the control plane when it is back.

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;

use crate::claim_support::{is_true, ready_instance, wait_ready, wait_reason};
use crate::support::{self, env, wait_for};
use crate::testenv_control_plane::kubernetes_cluster_resource;
use claimsync::model::naming::remote_claim_name;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_keep_working_and_say_so_while_the_control_plane_is_down() {
    let _env = support::env_exclusive().await;
    let (instance, ns, local) = ready_instance("offline", "steady").await;
    let kc = kubernetes_cluster_resource();

    env().script(&["stop", "controlplane"]);
    let claim = wait_reason(&local, "steady", "ControlPlaneUnreachable", &instance).await;
    assert!(
        is_true(&claim, "Ready"),
        "the last known status stays: {}",
        claim.data["status"]
    );
    let edit = json!({"spec": {"parameters": {"nodes": {"count": 7}}}});
    local
        .patch("steady", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("local edits work offline");

    env().script(&["start", "controlplane"]);
    let remote = Api::<DynamicObject>::namespaced_with(support::control_plane().await, &instance.claim_namespace, &kc);
    let remote_name = remote_claim_name("steady", &ns, &instance.id);
    wait_for(
        "the offline edit to reach the control plane",
        Duration::from_secs(90),
        || async {
            let r = remote.get(&remote_name).await.map_err(|e| e.to_string())?;
            (r.data["spec"]["parameters"]["nodes"]["count"] == 7)
                .then_some(())
                .ok_or("not yet".to_string())
        },
    )
    .await;
    wait_ready(&local, "steady", &instance).await;
}
