//! Each API server of the env keeps an audit log of writes: a write made while impersonating a user is found by
//! that user's name with its verb and object, and a read is not logged at all.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use crate::support::{self, AuditEntry, audit_writes, env, wait_for};

/// A client of the app cluster that impersonates `user` in group system:masters.
async fn impersonating(user: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(&env().app_kubeconfig).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(vec!["system:masters".to_string()]);
    Client::try_from(config).unwrap()
}

#[tokio::test]
async fn writes_are_audited_by_impersonated_user_and_reads_are_not() {
    let user = support::unique("audit-probe");
    let ns = support::namespace(&support::app().await, "audit").await;
    let client = impersonating(&user).await;
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), &ns);

    // Reads first, so that they would be in the log before the writes if they were logged.
    Api::<Namespace>::all(client).get(&ns).await.unwrap();
    assert!(configmaps.get_opt("probe").await.unwrap().is_none());
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "probe"}})).unwrap();
    configmaps.create(&PostParams::default(), &cm).await.unwrap();
    configmaps
        .patch(
            "probe",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "v"}})),
        )
        .await
        .unwrap();
    configmaps.delete("probe", &DeleteParams::default()).await.unwrap();

    let writes: Vec<AuditEntry> = wait_for("the three writes in the audit log", Duration::from_secs(30), || async {
        let writes = audit_writes("app", &user);
        if writes.len() >= 3 {
            Ok(writes)
        } else {
            Err(format!("{writes:?}"))
        }
    })
    .await;
    let verbs: Vec<&str> = writes.iter().map(|w| w.verb.as_str()).collect();
    assert_eq!(verbs, ["create", "patch", "delete"], "{writes:#?}");
    for write in &writes {
        assert_eq!(write.resource, "configmaps");
        assert_eq!(write.namespace.as_deref(), Some(ns.as_str()));
        assert_eq!(write.name.as_deref(), Some("probe"));
        assert_eq!(write.user, "admin", "the authenticated user behind the impersonation");
    }
    assert_eq!(writes[0].code, Some(201));
}
