//! Claim replication end to end, against the real env with real Crossplane: catalog down, spec up, status and
//! connection Secrets down, drift, deletion with both policies, conflicts, and restarts that write nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use claimsync::naming::remote_claim_name;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::instance::{Instance, tail};
use crate::support::{self, env, wait_for};
use crate::testenv_control_plane::kubernetes_cluster_resource;

fn postgres_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("db.starter.org", version, "PostgreSQLInstance"),
        "postgresqlinstances",
    )
}

fn composite_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.starter.org", "v1alpha1", "XKubernetesCluster"),
        "xkubernetesclusters",
    )
}

fn condition(obj: &DynamicObject, type_: &str) -> Option<(String, String)> {
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
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&env().app_kubeconfig)
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

async fn wait_event(client: &Client, ns: &str, claim: &str, reason: &str) {
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

async fn wait_secret(client: &Client, ns: &str, name: &str) -> Secret {
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

fn keys(secret: &Secret) -> BTreeSet<String> {
    secret.data.clone().unwrap_or_default().into_keys().collect()
}

/// A running instance with a namespace of its own holding a Ready KubernetesCluster claim `name`.
pub(crate) async fn ready_instance(prefix: &str, name: &str) -> (Instance, String, Api<DynamicObject>) {
    let mut instance = Instance::new(prefix).await;
    instance.start().await;
    let ns = instance.namespace(prefix).await;
    let yaml = cluster_claim_yaml(&ns, name, &support::unique("kc"), &format!("{name}-conn"), "");
    kubectl_apply(&yaml)
        .await
        .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kubernetes_cluster_resource());
    wait_ready(&local, name, &instance).await;
    (instance, ns, local)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_replicate_up_and_status_and_secrets_come_down() {
    let _up = support::control_plane_shared().await;
    let mut instance = Instance::new("rep").await;
    instance.start().await;
    let (ns_a, ns_b) = (instance.namespace("team-a").await, instance.namespace("team-b").await);

    // The same claim name in two namespaces, applied with kubectl.
    for ns in [&ns_a, &ns_b] {
        let yaml = cluster_claim_yaml(ns, "demo", &support::unique("kc"), "demo-conn", "");
        kubectl_apply(&yaml)
            .await
            .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
    }
    // A claim of the two-version kind, written at its older version.
    let db_yaml = format!(
        "apiVersion: db.starter.org/v1alpha1\nkind: PostgreSQLInstance\nmetadata:\n  name: db\n  namespace: {ns_a}\nspec:\n  parameters:\n    storageGB: 20\n  writeConnectionSecretToRef:\n    name: db-conn\n"
    );
    kubectl_apply(&db_yaml)
        .await
        .unwrap_or_else(|e| panic!("kubectl apply: {e}"));

    let kc = kubernetes_cluster_resource();
    let remote_claims =
        Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &kc);
    let mut remote_names = BTreeSet::new();
    for ns in [&ns_a, &ns_b] {
        let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), ns, &kc);
        let claim = wait_ready(&local, "demo", &instance).await;
        let secret = wait_secret(&instance.app, ns, "demo-conn").await;
        assert_eq!(secret.type_.as_deref(), Some("connection.crossplane.io/v1alpha1"));
        assert_eq!(
            keys(&secret),
            BTreeSet::from(["clusterName".into(), "endpoint".into(), "kubeconfig".into()])
        );
        assert_eq!(secret.owner_references()[0].uid, claim.uid().unwrap());

        let remote_name = remote_claim_name("demo", ns, &instance.id);
        let remote = remote_claims.get(&remote_name).await.unwrap();
        assert_eq!(remote.labels()["claimsync.dev/origin-namespace"], *ns);
        assert_eq!(remote.labels()["claimsync.dev/origin-name"], "demo");
        assert_eq!(remote.labels()["team"], "platform-users");
        assert_eq!(remote.annotations()["note"], "from-the-app-cluster");
        assert!(
            !remote
                .annotations()
                .contains_key("kubectl.kubernetes.io/last-applied-configuration")
        );
        assert_eq!(remote.data["spec"]["writeConnectionSecretToRef"]["name"], remote_name);
        // Crossplane's choice came down; the remote generation did not.
        assert_eq!(claim.data["spec"]["resourceRef"], remote.data["spec"]["resourceRef"]);
        assert!(
            claim.data["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c.get("observedGeneration").is_none())
        );
        assert!(remote_names.insert(remote_name));
    }
    // What Crossplane said about the remote claim is told on the local one.
    let events = Api::<Event>::namespaced(instance.app.clone(), &ns_a);
    wait_for(
        "a control plane Event mirrored onto the claim",
        Duration::from_secs(60),
        || async {
            let list = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
            let mirrored = list.items.iter().any(|e| {
                e.note.as_deref().is_some_and(|n| n.starts_with("[control plane] "))
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("demo")
            });
            mirrored.then_some(()).ok_or_else(|| "none yet".to_string())
        },
    )
    .await;
    let pg = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns_a, &postgres_resource("v1beta1"));
    wait_ready(&pg, "db", &instance).await;
    let db_secret = wait_secret(&instance.app, &ns_a, "db-conn").await;
    assert!(keys(&db_secret).contains("password"), "{:?}", keys(&db_secret));

    // kubectl shows claimsync's column.
    let table = env()
        .kubectl(&env().app_kubeconfig, &["get", "kubernetesclusters", "-n", &ns_a])
        .await
        .unwrap();
    assert!(table.lines().next().unwrap().contains("REPLICATED"), "{table}");
    assert!(table.lines().nth(1).unwrap().contains("True"), "{table}");

    // A local edit goes up; Crossplane's resourceRef is never dropped, so no second composite appears.
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns_a, &kc);
    let remote_name = remote_claim_name("demo", &ns_a, &instance.id);
    let before = remote_claims.get(&remote_name).await.unwrap();
    let patch = json!({"spec": {"parameters": {"nodes": {"count": 5}}}});
    local
        .patch("demo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(
        "the edit to reach the control plane",
        Duration::from_secs(60),
        || async {
            let remote = remote_claims.get(&remote_name).await.map_err(|e| e.to_string())?;
            (remote.data["spec"]["parameters"]["nodes"]["count"] == 5)
                .then_some(())
                .ok_or("not yet".to_string())
        },
    )
    .await;
    let after = remote_claims.get(&remote_name).await.unwrap();
    assert_eq!(after.data["spec"]["resourceRef"], before.data["spec"]["resourceRef"]);
    let composites = Api::<DynamicObject>::all_with(instance.control_plane.clone(), &composite_resource())
        .list(&ListParams::default().labels(&format!("crossplane.io/claim-name={remote_name}")))
        .await
        .unwrap();
    assert_eq!(composites.items.len(), 1, "one composite per claim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_edits_are_reverted_and_remote_deletes_recreated() {
    let _up = support::control_plane_shared().await;
    let (instance, ns, local) = ready_instance("drift", "steady").await;
    let kc = kubernetes_cluster_resource();

    let remote_name = remote_claim_name("steady", &ns, &instance.id);
    let remote = Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &kc);
    let edit = json!({"spec": {"parameters": {"nodes": {"count": 9}}}});
    remote
        .patch(&remote_name, &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    wait_for("the remote edit to be reverted", Duration::from_secs(60), || async {
        let r = remote.get(&remote_name).await.map_err(|e| e.to_string())?;
        (r.data["spec"]["parameters"]["nodes"]["count"] == 3)
            .then_some(())
            .ok_or(format!("count {}", r.data["spec"]["parameters"]["nodes"]["count"]))
    })
    .await;
    wait_event(&instance.app, &ns, "steady", "RemoteDriftReverted").await;

    let uid = remote.get(&remote_name).await.unwrap().uid();
    remote.delete(&remote_name, &DeleteParams::default()).await.unwrap();
    wait_for("the remote claim to be recreated", Duration::from_secs(90), || async {
        match remote.get_opt(&remote_name).await.map_err(|e| e.to_string())? {
            Some(r) if r.uid() != uid && r.metadata.deletion_timestamp.is_none() => Ok(()),
            _ => Err("not recreated yet".to_string()),
        }
    })
    .await;
    wait_event(&instance.app, &ns, "steady", "RemoteRecreated").await;
    wait_ready(&local, "steady", &instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_claim_deletes_its_twin_unless_orphaned() {
    let _up = support::control_plane_shared().await;
    let mut instance = Instance::new("del").await;
    instance.start().await;
    let ns = instance.namespace("del").await;
    kubectl_apply(&cluster_claim_yaml(
        &ns,
        "gone",
        &support::unique("kc"),
        "gone-conn",
        "",
    ))
    .await
    .unwrap();
    let orphan = "\n    claimsync.dev/deletion-policy: Orphan";
    kubectl_apply(&cluster_claim_yaml(
        &ns,
        "kept",
        &support::unique("kc"),
        "kept-conn",
        orphan,
    ))
    .await
    .unwrap();
    let kc = kubernetes_cluster_resource();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kc);
    let remote = Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &kc);
    for name in ["gone", "kept"] {
        wait_ready(&local, name, &instance).await;
        local.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["gone", "kept"] {
        let what = format!("local claim {name} to be deleted");
        support::wait_gone(&what, Duration::from_secs(120), &local, name, |c| {
            format!(
                "still there, finalizers {:?}\n{}",
                c.finalizers(),
                tail(&instance.log(), 8)
            )
        })
        .await;
    }
    let gone = remote_claim_name("gone", &ns, &instance.id);
    assert!(
        remote.get_opt(&gone).await.unwrap().is_none(),
        "the remote twin of a deleted claim is gone first"
    );
    // The connection Secret went with its claim (owner reference, garbage collector).
    let secrets = Api::<Secret>::namespaced(instance.app.clone(), &ns);
    support::wait_gone(
        "the deleted claim's Secret to be collected",
        Duration::from_secs(90),
        &secrets,
        "gone-conn",
        |_| "still there".to_string(),
    )
    .await;
    let kept = remote
        .get_opt(&remote_claim_name("kept", &ns, &instance.id))
        .await
        .unwrap();
    assert!(
        kept.is_some_and(|k| k.metadata.deletion_timestamp.is_none()),
        "Orphan keeps the remote claim"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_leave_foreign_objects_alone() {
    let _up = support::control_plane_shared().await;
    let mut instance = Instance::new("clash").await;
    instance.start().await;
    let ns = instance.namespace("clash").await;
    let kc = kubernetes_cluster_resource();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kc);

    // A Secret the user already has under the requested name.
    let taken: Secret = serde_json::from_value(json!({
        "metadata": {"name": "taken"}, "type": "Opaque", "data": {"mine": "MQ=="}
    }))
    .unwrap();
    let secrets = Api::<Secret>::namespaced(instance.app.clone(), &ns);
    secrets.create(&PostParams::default(), &taken).await.unwrap();
    kubectl_apply(&cluster_claim_yaml(&ns, "clash", &support::unique("kc"), "taken", ""))
        .await
        .unwrap();
    let claim = wait_reason(&local, "clash", "SecretConflict", &instance).await;
    assert!(claim.data["status"]["conditions"].to_string().contains("taken"));
    wait_event(&instance.app, &ns, "clash", "SecretConflict").await;
    let still = secrets.get("taken").await.unwrap();
    assert_eq!(keys(&still), BTreeSet::from(["mine".to_string()]));
    assert!(still.owner_references().is_empty());

    // Someone else's claim already sits at the remote name.
    let remote_name = remote_claim_name("squat", &ns, &instance.id);
    let remote = Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &kc);
    let mut squatter = DynamicObject::new(&remote_name, &kc).within(&instance.claim_namespace);
    squatter.data = json!({"spec": {"id": support::unique("sq")}});
    remote.create(&PostParams::default(), &squatter).await.unwrap();
    kubectl_apply(&cluster_claim_yaml(
        &ns,
        "squat",
        &support::unique("kc"),
        "squat-conn",
        "",
    ))
    .await
    .unwrap();
    wait_reason(&local, "squat", "NameConflict", &instance).await;
    let untouched = remote.get(&remote_name).await.unwrap();
    assert_eq!(untouched.data["spec"]["id"], squatter.data["spec"]["id"]);
    assert!(!untouched.labels().contains_key("claimsync.dev/origin-cluster"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_made_by_the_mcp_connector_are_adopted_not_duplicated() {
    let _up = support::control_plane_shared().await;
    let mut instance = Instance::new("adopt").await;
    instance.start().await;
    let ns = instance.namespace("adopt").await;
    let kc = kubernetes_cluster_resource();
    let id = support::unique("kc");

    // A claim the MCP Connector wrote for this app cluster, already provisioned.
    let remote_name = remote_claim_name("legacy", &ns, &instance.id);
    let remote = Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &kc);
    let mut legacy = DynamicObject::new(&remote_name, &kc).within(&instance.claim_namespace);
    legacy.metadata.labels = Some(
        [
            ("mcp-connector.upbound.io/app-cluster".to_string(), instance.id.clone()),
            ("mcp-connector.upbound.io/app-namespace".to_string(), ns.clone()),
            (
                "mcp-connector.upbound.io/app-resource-name".to_string(),
                "legacy".to_string(),
            ),
        ]
        .into(),
    );
    legacy.data = json!({"spec": {"id": id, "parameters": {"nodes": {"count": 3, "size": "small"},
        "services": {"operators": {"prometheus": {"version": "34.5.1"}}}}}});
    let created = remote.create(&PostParams::default(), &legacy).await.unwrap();

    kubectl_apply(&cluster_claim_yaml(&ns, "legacy", &id, "legacy-conn", ""))
        .await
        .unwrap();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kc);
    wait_ready(&local, "legacy", &instance).await;
    let adopted = remote.get(&remote_name).await.unwrap();
    assert_eq!(adopted.uid(), created.uid(), "adopted in place, not recreated");
    assert_eq!(adopted.labels()["claimsync.dev/origin-name"], "legacy");
    let composites = Api::<DynamicObject>::all_with(instance.control_plane.clone(), &composite_resource())
        .list(&ListParams::default().labels(&format!("crossplane.io/claim-name={remote_name}")))
        .await
        .unwrap();
    assert_eq!(composites.items.len(), 1, "one composite for the adopted claim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_kubeconfig_can_come_from_a_secret() {
    let _up = support::control_plane_shared().await;
    let mut instance = Instance::new("kcfg").await;
    let ns = instance.namespace("kcfg").await;
    let kubeconfig = std::fs::read_to_string(&env().control_plane_kubeconfig).unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "controlplane"}, "stringData": {"config": kubeconfig}
    }))
    .unwrap();
    Api::<Secret>::namespaced(instance.app.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    instance.control_plane_secret = Some(format!("{ns}/controlplane:config"));
    instance.start().await;
    kubectl_apply(&cluster_claim_yaml(
        &ns,
        "viasecret",
        &support::unique("kc"),
        "viasecret-conn",
        "",
    ))
    .await
    .unwrap();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kubernetes_cluster_resource());
    wait_ready(&local, "viasecret", &instance).await;
}

/// `apiserver_request_total` by "resource verb", over the given verbs and resources.
async fn requests(client: &Client, verbs: &[&str], resources: &[&str]) -> BTreeMap<String, u64> {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.expect("read /metrics");
    let label = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        Some(line[start..].split('"').next()?.to_string())
    };
    let mut counts = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let (Some(verb), Some(resource)) = (label(line, "verb"), label(line, "resource")) else {
            continue;
        };
        if verbs.contains(&verb.as_str()) && resources.contains(&resource.as_str()) {
            let value = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
            *counts.entry(format!("{resource} {verb}")).or_insert(0) += value;
        }
    }
    counts
}

type Counts = (BTreeMap<String, u64>, BTreeMap<String, u64>);

/// Writes claimsync could make: anything on the app cluster's claims, Secrets and CRDs; on the control plane,
/// applies and deletes of claims (Crossplane itself only updates them). Events are left out: Crossplane may
/// record something new while claimsync is down, and mirroring that is no redundant write; that nothing is
/// mirrored twice is checked on the Events themselves.
async fn writes(instance: &Instance) -> Counts {
    let app_resources = [
        "kubernetesclusters",
        "postgresqlinstances",
        "secrets",
        "customresourcedefinitions",
    ];
    let app = requests(
        &instance.app,
        &["POST", "PUT", "PATCH", "APPLY", "DELETE"],
        &app_resources,
    )
    .await;
    let remote_verbs = ["POST", "PATCH", "APPLY", "DELETE"];
    let remote = requests(
        &instance.control_plane,
        &remote_verbs,
        &["kubernetesclusters", "postgresqlinstances"],
    )
    .await;
    (app, remote)
}

/// Fails if any Event mirrored from the control plane stands twice on the same claim.
async fn assert_events_mirrored_once(instance: &Instance, ns: &str, what: &str) {
    let events = Api::<Event>::namespaced(instance.app.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    for e in events
        .items
        .iter()
        .filter(|e| e.note.as_deref().is_some_and(|n| n.starts_with("[control plane] ")))
    {
        let regarding = e.regarding.as_ref().and_then(|r| r.uid.clone()).unwrap_or_default();
        let key = (
            regarding,
            e.reason.clone().unwrap_or_default(),
            e.note.clone().unwrap_or_default(),
        );
        assert!(seen.insert(key.clone()), "{what}: mirrored twice: {key:?}");
    }
}

async fn assert_no_writes_after_start(instance: &mut Instance, what: &str) {
    let before = writes(instance).await;
    instance.start().await;
    // Watches may still deliver a late event; watch the counters for a while after in-sync.
    let settle = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < settle {
        let now = writes(instance).await;
        assert_eq!(
            now,
            before,
            "{what}: claimsync wrote (app, control plane)\n{}",
            tail(&instance.log(), 20)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_against_in_sync_clusters_writes_nothing() {
    // Exclusive: other tests' writes would show in the API servers' counters.
    let _alone = support::control_plane_exclusive().await;
    let mut instance = Instance::new("restart").await;
    instance.start().await;
    let ns = instance.namespace("restart").await;
    kubectl_apply(&cluster_claim_yaml(&ns, "one", &support::unique("kc"), "one-conn", ""))
        .await
        .unwrap();
    kubectl_apply(&cluster_claim_yaml(&ns, "two", &support::unique("kc"), "two-conn", ""))
        .await
        .unwrap();
    let kc = kubernetes_cluster_resource();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kc);
    for name in ["one", "two"] {
        wait_ready(&local, name, &instance).await;
        wait_secret(&instance.app, &ns, &format!("{name}-conn")).await;
    }
    // Let Crossplane finish its own follow-up work, then restart claimsync.
    wait_for("the clusters to be quiet", Duration::from_secs(60), || async {
        let first = writes(&instance).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let second = writes(&instance).await;
        (first == second)
            .then_some(())
            .ok_or(format!("{first:?} -> {second:?}"))
    })
    .await;
    instance.stop().await;
    assert_no_writes_after_start(&mut instance, "restart with the journal").await;

    assert_events_mirrored_once(&instance, &ns, "restart with the journal").await;
    instance.stop().await;
    std::fs::remove_dir_all(&instance.state_dir).unwrap();
    assert_no_writes_after_start(&mut instance, "restart without the journal").await;
    assert_events_mirrored_once(&instance, &ns, "restart without the journal").await;
    for name in ["one", "two"] {
        wait_ready(&local, name, &instance).await;
    }
}

async fn run_claimsync(args: &[&str]) -> (i32, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_claimsync"))
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("claimsync exits on bad input")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error_that_touches_nothing() {
    let _up = support::control_plane_shared().await;
    let instance = Instance::new("bad").await;
    let ns = instance.namespace("bad").await;

    // A claim the local CRD rejects never exists, locally or remotely.
    let yaml = cluster_claim_yaml(&ns, "huge", "huge", "huge-conn", "").replace("size: small", "size: enormous");
    let rejected = kubectl_apply(&yaml).await.expect_err("the CRD rejects size: enormous");
    assert!(rejected.contains("spec.parameters.nodes.size"), "{rejected}");

    let app = env().app_kubeconfig.to_str().unwrap().to_string();
    let control_plane = env().control_plane_kubeconfig.to_str().unwrap().to_string();
    let state = instance.state_dir.to_str().unwrap().to_string();

    // An unreachable control plane.
    let dead = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("unreachable.kubeconfig");
    let text = std::fs::read_to_string(&env().control_plane_kubeconfig).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string();
    std::fs::write(&dead, text.replace(&server, "https://127.0.0.1:1")).unwrap();
    let (code, stderr) = run_claimsync(&[
        "--app-kubeconfig",
        &app,
        "--control-plane-kubeconfig",
        dead.to_str().unwrap(),
        "--claim-namespace",
        &instance.claim_namespace,
        "--state-dir",
        &state,
    ])
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("control plane is unreachable"), "{stderr}");

    // A claim namespace that does not exist.
    let (code, stderr) = run_claimsync(&[
        "--app-kubeconfig",
        &app,
        "--control-plane-kubeconfig",
        &control_plane,
        "--claim-namespace",
        "no-such-namespace",
        "--state-dir",
        &state,
    ])
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("\"no-such-namespace\" does not exist on the control plane"),
        "{stderr}"
    );

    // No claim namespace at all.
    let (code, stderr) = run_claimsync(&["--app-kubeconfig", &app, "--control-plane-kubeconfig", &control_plane]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--claim-namespace"), "{stderr}");

    // None of it created a claim anywhere, nor a journal.
    let kc = kubernetes_cluster_resource();
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kc);
    assert!(local.list(&ListParams::default()).await.unwrap().items.is_empty());
    assert!(!instance.state_dir.exists());
}
