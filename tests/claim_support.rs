//! Helpers for tests of claims: the seed's claim as YAML, `kubectl apply` as a user runs it, and waits for a
//! claim's conditions, Events and connection Secret, each with a deadline.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use tokio::io::AsyncWriteExt;

use crate::instance::{Instance, tail};
use crate::support::{self, env, wait_for};
use crate::testenv_control_plane::kubernetes_cluster_resource;

pub(crate) fn postgres_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("db.starter.org", version, "PostgreSQLInstance"),
        "postgresqlinstances",
    )
}

pub(crate) fn composite_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.starter.org", "v1alpha1", "XKubernetesCluster"),
        "xkubernetesclusters",
    )
}

pub(crate) fn condition(obj: &DynamicObject, type_: &str) -> Option<(String, String)> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}

pub(crate) fn is_true(obj: &DynamicObject, type_: &str) -> bool {
    condition(obj, type_).is_some_and(|(status, _)| status == "True")
}

/// `kubectl apply -f -` against the app cluster, as a user would.
pub(crate) async fn kubectl_apply(yaml: &str) -> Result<String, String> {
    kubectl_apply_to(&env().app_kubeconfig, yaml).await
}

/// `kubectl apply -f -` against the cluster of `kubeconfig`.
pub(crate) async fn kubectl_apply_to(kubeconfig: &std::path::Path, yaml: &str) -> Result<String, String> {
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

pub(crate) fn cluster_claim_yaml(ns: &str, name: &str, id: &str, secret: &str, extra_annotations: &str) -> String {
    format!(
        r#"apiVersion: k8s.starter.org/v1alpha1
kind: KubernetesCluster
metadata:
  name: {name}
  namespace: {ns}
  labels:
    team: platform-users
  annotations:
    note: from-the-app-cluster{extra_annotations}
spec:
  id: {id}
  parameters:
    nodes:
      count: 3
      size: small
    services:
      operators:
        prometheus:
          version: "34.5.1"
  writeConnectionSecretToRef:
    name: {secret}
"#
    )
}

/// Waits until a local claim is Synced, Ready and Replicated.
pub(crate) async fn wait_ready(api: &Api<DynamicObject>, name: &str, instance: &Instance) -> DynamicObject {
    wait_for(
        &format!("claim {name} to be Synced, Ready and Replicated"),
        Duration::from_secs(120),
        || async {
            let claim = api.get(name).await.map_err(|e| e.to_string())?;
            if is_true(&claim, "Synced") && is_true(&claim, "Ready") && is_true(&claim, "Replicated") {
                Ok(claim)
            } else {
                Err(format!(
                    "status {}\nclaimsync log:\n{}",
                    claim.data["status"],
                    tail(&instance.log(), 10)
                ))
            }
        },
    )
    .await
}

pub(crate) async fn wait_reason(
    api: &Api<DynamicObject>,
    name: &str,
    reason: &str,
    instance: &Instance,
) -> DynamicObject {
    wait_for(
        &format!("claim {name} to be Replicated=False/{reason}"),
        Duration::from_secs(60),
        || async {
            let claim = api.get(name).await.map_err(|e| e.to_string())?;
            match condition(&claim, "Replicated") {
                Some((status, r)) if status == "False" && r == reason => Ok(claim),
                other => Err(format!(
                    "Replicated {other:?}\nclaimsync log:\n{}",
                    tail(&instance.log(), 10)
                )),
            }
        },
    )
    .await
}

pub(crate) async fn wait_event(client: &Client, ns: &str, claim: &str, reason: &str) {
    let events = Api::<Event>::namespaced(client.clone(), ns);
    wait_for(
        &format!("a {reason} Event on {ns}/{claim}"),
        Duration::from_secs(60),
        || async {
            let list = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
            let found = list.items.iter().any(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(claim)
            });
            found.then_some(()).ok_or_else(|| "none yet".to_string())
        },
    )
    .await;
}

pub(crate) async fn wait_secret(client: &Client, ns: &str, name: &str) -> Secret {
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    wait_for(&format!("Secret {ns}/{name}"), Duration::from_secs(60), || async {
        secrets
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not there".to_string())
    })
    .await
}

pub(crate) fn keys(secret: &Secret) -> BTreeSet<String> {
    secret.data.clone().unwrap_or_default().into_keys().collect()
}

/// `kubectl apply`s a KubernetesCluster claim `name` into `ns`, with an id of its own and connection Secret
/// `<name>-conn`.
pub(crate) async fn apply_claim(ns: &str, name: &str) {
    let yaml = cluster_claim_yaml(ns, name, &support::unique("kc"), &format!("{name}-conn"), "");
    kubectl_apply(&yaml)
        .await
        .unwrap_or_else(|e| panic!("kubectl apply {ns}/{name}: {e}"));
}

/// A running instance with a namespace of its own holding a Ready KubernetesCluster claim `name`.
pub(crate) async fn ready_instance(prefix: &str, name: &str) -> (Instance, String, Api<DynamicObject>) {
    let mut instance = Instance::new(prefix).await;
    instance.start().await;
    let ns = instance.namespace(prefix).await;
    apply_claim(&ns, name).await;
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kubernetes_cluster_resource());
    wait_ready(&local, name, &instance).await;
    (instance, ns, local)
}

/// The cells of one column of `kubectl get`'s table, found by the header's position (kubectl aligns its columns).
pub(crate) fn column(table: &str, header: &str) -> Vec<String> {
    let mut lines = table.lines();
    let head = lines.next().unwrap_or_default();
    let whole_word = |at: usize| {
        (at == 0 || head.as_bytes()[at - 1] == b' ')
            && head[at + header.len()..].chars().next().is_none_or(|c| c == ' ')
    };
    let at = head
        .match_indices(header)
        .map(|(at, _)| at)
        .find(|at| whole_word(*at))
        .unwrap_or_else(|| panic!("no column {header} in:\n{table}"));
    lines
        .map(|row| {
            row.get(at..)
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}
