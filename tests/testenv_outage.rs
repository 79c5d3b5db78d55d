//! The control plane can be stopped and started again with its data intact, the way outage tests need it.

use std::time::Duration;

use kube::api::{Api, DynamicObject};

use crate::support::{self, env, wait_for};
use crate::testenv_control_plane::{condition_true, kubernetes_cluster_resource, ready_claim};

#[tokio::test]
async fn control_plane_restart_keeps_claims() {
    let _env = support::env_exclusive().await;
    let client = support::control_plane().await;
    let ns = support::namespace(&client, "outage").await;
    let claim = ready_claim(&client, &ns, "survivor").await;

    env().script(&["stop", "controlplane"]);
    let claims = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &kubernetes_cluster_resource());
    assert!(
        claims.get("survivor").await.is_err(),
        "the control plane still answers after stop"
    );

    env().script(&["start", "controlplane"]);
    let client = support::control_plane().await;
    let claims = Api::<DynamicObject>::namespaced_with(client, &ns, &kubernetes_cluster_resource());
    let after = wait_for("the claim to be back and Ready", Duration::from_secs(90), || async {
        let c = claims.get("survivor").await.map_err(|e| e.to_string())?;
        condition_true(&c, "Ready")
            .then_some(c)
            .ok_or_else(|| "not Ready".to_string())
    })
    .await;
    assert_eq!(after.metadata.uid, claim.metadata.uid);
    assert_eq!(after.data["spec"]["resourceRef"], claim.data["spec"]["resourceRef"]);
}
