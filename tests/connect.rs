//! `claimsync connect` as an operator runs it: the env's two app clusters joined to one claim namespace of the
//! control plane with connect alone (helm on PATH), each replicating a claim through the chart's exact Deployment;
//! connect again changes nothing; the credential is renewed by claimsync; one disconnects and the other goes on.
//! Also `--dry-run` and the errors an operator meets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use claimsync::model::connection::{CONNECTED_CLUSTER, token_claims};
use claimsync::model::naming::remote_claim_name;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::claim_support::cluster_claim_yaml;
use crate::helm_support::{Process, chart, helm_binary, ready, scratch, service_account_kubeconfig};
use crate::instance::{INSTANCE_LABEL, metric_sum, ops_get, tail};
use crate::support::{self, env, wait_for};
use crate::testenv_control_plane::kubernetes_cluster_resource;

/// One app cluster as connect sees it: its kubeconfig, release namespace and scratch directory.
struct AppCluster {
    name: &'static str,
    kubeconfig: PathBuf,
    client: Client,
    release_ns: String,
    dir: PathBuf,
}

impl AppCluster {
    async fn new(name: &'static str, kubeconfig: &Path, id: &str) -> AppCluster {
        AppCluster {
            name,
            kubeconfig: kubeconfig.to_path_buf(),
            client: support::client_for(kubeconfig).await,
            release_ns: format!("{id}-{name}-system"),
            dir: scratch(&format!("{id}-{name}")),
        }
    }

    /// `claimsync <subcommand>` for this app cluster and its release namespace, with `control_plane` as the
    /// operator's control plane kubeconfig.
    fn command(&self, subcommand: &str, control_plane: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_claimsync"));
        command
            .arg(subcommand)
            .arg("--app-kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--namespace", &self.release_ns])
            .arg("--control-plane-kubeconfig")
            .arg(control_plane);
        command
    }

    /// `claimsync connect` for this app cluster with `extra` arguments; its exit code and output (both streams).
    async fn connect(&self, claim_ns: &str, helm_on_path: bool, extra: &[&str]) -> (bool, String) {
        let mut command = self.command("connect", &env().control_plane_kubeconfig);
        command
            .args(["--claim-namespace", claim_ns])
            .arg("--chart")
            .arg(chart())
            .arg("--values-out")
            .arg(self.dir.join("installed-values.json"))
            .args(extra);
        run_with_helm(command, helm_on_path).await
    }

    /// The installed Deployment, and claimsync started from it as the release's ServiceAccount.
    async fn start(&self) -> Process {
        let deployment: Value = serde_json::from_str(
            &env()
                .kubectl(
                    &self.kubeconfig,
                    &["get", "deployment", "claimsync", "-n", &self.release_ns, "-o", "json"],
                )
                .await
                .unwrap(),
        )
        .unwrap();
        let kubeconfig = service_account_kubeconfig(
            &self.kubeconfig,
            &self.release_ns,
            "claimsync",
            &self.dir.join("sa.kubeconfig"),
        )
        .await;
        let process = Process::start(&deployment, &kubeconfig, &self.dir).await;
        wait_for(
            &format!("claimsync of {} to sync", self.name),
            Duration::from_secs(90),
            || async {
                let metrics = ops_get(process.ops_port, "/metrics").await?;
                (crate::instance::in_sync(&metrics) && metrics.contains("claimsync_leader 1"))
                    .then_some(())
                    .ok_or_else(|| tail(&process.log(), 15))
            },
        )
        .await;
        process
    }

    /// A namespace of this app cluster the installation replicates (its namespace selector), with a claim `name`
    /// applied in it; the namespace.
    async fn claim(&self, id: &str, name: &str) -> String {
        let ns = support::unique(&format!("{}-team", self.name));
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns,
            "labels": {INSTANCE_LABEL: id, "claimsync.dev/test": "true"}}}))
        .unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&Default::default(), &namespace)
            .await
            .unwrap();
        let yaml = cluster_claim_yaml(&ns, name, &support::unique("kc"), &format!("{name}-conn"), "");
        crate::claim_support::kubectl_apply_to(&self.kubeconfig, &yaml)
            .await
            .unwrap_or_else(|e| panic!("apply {ns}/{name} in {}: {e}", self.name));
        ns
    }

    fn claims(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &kubernetes_cluster_resource())
    }

    /// The token in the kubeconfig Secret connect made.
    async fn token(&self) -> String {
        let secret = Api::<Secret>::namespaced(self.client.clone(), &self.release_ns)
            .get("claimsync-control-plane")
            .await
            .unwrap();
        let text = String::from_utf8(secret.data.unwrap()["kubeconfig"].0.clone()).unwrap();
        let kubeconfig: Value = serde_saphyr::from_str(&text).unwrap();
        kubeconfig["users"][0]["user"]["token"].as_str().unwrap().to_string()
    }

    /// Takes the release and its namespace away (without the uninstall hook: nothing runs pods here).
    async fn remove(&self) {
        let _ = std::process::Command::new(helm_binary())
            .args([
                "uninstall",
                "claimsync",
                "-n",
                &self.release_ns,
                "--no-hooks",
                "--ignore-not-found",
            ])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .envs(helm_homes())
            .output();
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.release_ns, &DeleteParams::default())
            .await;
    }
}

/// helm's homes of the tests' own.
fn helm_homes() -> Vec<(&'static str, PathBuf)> {
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    vec![
        ("HELM_CONFIG_HOME", home.join("config")),
        ("HELM_CACHE_HOME", home.join("cache")),
        ("HELM_DATA_HOME", home.join("data")),
    ]
}

/// Runs a claimsync command with `helm` on its PATH (from e2e/tools) or with a PATH that has no helm.
async fn run_with_helm(mut command: Command, helm_on_path: bool) -> (bool, String) {
    let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("helm-on-path");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("helm");
    if !link.exists() {
        let _ = std::os::unix::fs::symlink(helm_binary(), &link);
    }
    let base = std::env::var("PATH").unwrap_or_default();
    let without_helm: Vec<PathBuf> = std::env::split_paths(&base)
        .filter(|dir| !dir.join("helm").exists())
        .collect();
    let path = if helm_on_path {
        std::env::join_paths(std::iter::once(bin).chain(without_helm)).unwrap()
    } else {
        std::env::join_paths(without_helm).unwrap()
    };
    command.env("PATH", path).envs(helm_homes()).env("RUST_LOG", "warn");
    let out = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("connect finished within two minutes")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The MCP Connector's connector-values.yaml as its documentation writes it, plus what the test needs of the
/// chart: only the test's namespaces, no shim (its APIService is the env's one), and a credential renewed within
/// a minute (a 600 s token, renewed 570 s before it expires).
fn connector_values(dir: &Path, claim_ns: &str, id: &str) -> PathBuf {
    let path = dir.join("connector-values.yaml");
    std::fs::write(
        &path,
        format!(
            "upbound:\n  account: acme\n  token: a-token-connect-does-not-use\nspaces:\n  host: spaces.example.org\n  \
             controlPlane:\n    name: ctp\n    group: default\n    claimNamespace: {claim_ns}\n\
             namespaceSelector: {INSTANCE_LABEL}={id}\nshim:\n  enabled: false\nreplicas: 1\n\
             extraArgs: [\"--credential-renew-before=570\"]\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_joins_two_app_clusters_to_one_claim_namespace_and_disconnect_takes_one_away() {
    let _env = support::env_shared().await;
    let id = support::unique("conn");
    let claim_ns = format!("{id}-claims");
    let control_plane = support::control_plane().await;
    let app = AppCluster::new("app", &env().app_kubeconfig, &id).await;
    let app2 = AppCluster::new("app2", &env().app2_kubeconfig, &id).await;
    let values = connector_values(&app.dir, &claim_ns, &id);
    let values = values.to_str().unwrap();
    let groups = "k8s.starter.org,apps.starter.org";

    // One command per app cluster.
    for cluster in [&app, &app2] {
        let (ok, out) = cluster
            .connect(
                &claim_ns,
                true,
                &["-f", values, "--claim-groups", groups, "--credential-seconds", "600"],
            )
            .await;
        assert!(ok, "connect {}:\n{out}", cluster.name);
        assert!(out.contains("upbound.token in") && out.contains("is not used"), "{out}");
        assert!(out.contains("helm release") && out.contains(": created"), "{out}");
    }
    // Each app cluster has an account of its own in the shared claim namespace.
    let accounts = Api::<ServiceAccount>::namespaced(control_plane.clone(), &claim_ns)
        .list(&ListParams::default().labels(CONNECTED_CLUSTER))
        .await
        .unwrap();
    assert_eq!(
        accounts.items.len(),
        2,
        "{:?}",
        accounts.items.iter().map(|a| a.name_any()).collect::<Vec<_>>()
    );

    // Each replicates a claim through the chart's Deployment, as its ServiceAccount.
    let mut processes = Vec::new();
    let mut namespaces = Vec::new();
    for cluster in [&app, &app2] {
        let process = cluster.start().await;
        let ns = cluster.claim(&id, "joined").await;
        process.wait_claim(&cluster.claims(&ns), "joined", ready).await;
        processes.push(process);
        namespaces.push(ns);
    }

    // Connect again: nothing changes.
    let (ok, out) = app
        .connect(
            &claim_ns,
            true,
            &["-f", values, "--claim-groups", groups, "--credential-seconds", "600"],
        )
        .await;
    assert!(ok && out.contains("nothing changed"), "{out}");
    assert!(!out.contains(": created") && !out.contains(": updated"), "{out}");

    // claimsync renews its credential (a 600 s token, due 30 s after it was made) and goes on with the new one.
    let first = app.token().await;
    wait_for(
        "claimsync to renew its credential",
        Duration::from_secs(120),
        || async {
            let now = app.token().await;
            (now != first).then_some(()).ok_or(tail(&processes[0].log(), 5))
        },
    )
    .await;
    let renewed = app.token().await;
    let (old, new) = (token_claims(&first).unwrap(), token_claims(&renewed).unwrap());
    assert_eq!(old.subject, new.subject, "the same account's token");
    assert!(new.expires > old.expires);
    let metrics = ops_get(processes[0].ops_port, "/metrics").await.unwrap();
    assert!(
        metric_sum(&metrics, "claimsync_credential_renewals_total") >= 1.0,
        "{metrics}"
    );
    let after = app.claim(&id, "after-renewal").await;
    processes[0]
        .wait_claim(&app.claims(&after), "after-renewal", ready)
        .await;

    // app2 disconnects, with the control plane's part: its account goes, its twin stays; app goes on.
    let disconnect = app2.command("disconnect", &env().control_plane_kubeconfig);
    let (ok, out) = run_with_helm(disconnect, false).await;
    assert!(ok, "disconnect app2:\n{out}");
    assert!(
        out.contains("removed ServiceAccount") && out.contains("left on the control plane"),
        "{out}"
    );
    let accounts = Api::<ServiceAccount>::namespaced(control_plane.clone(), &claim_ns)
        .list(&ListParams::default().labels(CONNECTED_CLUSTER))
        .await
        .unwrap();
    assert_eq!(accounts.items.len(), 1, "only app's account is left");
    let app2_id = kube_system_uid(&app2.client).await;
    let twins = Api::<DynamicObject>::namespaced_with(control_plane.clone(), &claim_ns, &kubernetes_cluster_resource());
    assert!(
        twins
            .get_opt(&remote_claim_name("joined", &namespaces[1], &app2_id))
            .await
            .unwrap()
            .is_some(),
        "app2's twin stays"
    );
    let edit = json!({"spec": {"parameters": {"nodes": {"count": 4}}}});
    app.claims(&namespaces[0])
        .patch("joined", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    let app_id = kube_system_uid(&app.client).await;
    let app_twin = remote_claim_name("joined", &namespaces[0], &app_id);
    wait_for(
        "app's edit to reach its twin after app2 left",
        Duration::from_secs(60),
        || async {
            let twin = twins.get(&app_twin).await.map_err(|e| e.to_string())?;
            (twin.data["spec"]["parameters"]["nodes"]["count"] == 4)
                .then_some(())
                .ok_or("not yet".to_string())
        },
    )
    .await;

    drop(processes);
    for cluster in [&app, &app2] {
        cluster.remove().await;
    }
}

async fn kube_system_uid(client: &Client) -> String {
    Api::<Namespace>::all(client.clone())
        .get("kube-system")
        .await
        .unwrap()
        .uid()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_dry_run_writes_nothing_and_each_mistake_gets_a_clear_error() {
    let _env = support::env_shared().await;
    let id = support::unique("connerr");
    let claim_ns = format!("{id}-claims");
    let control_plane = support::control_plane().await;
    let app = AppCluster::new("app", &env().app_kubeconfig, &id).await;
    let app2 = AppCluster::new("app2", &env().app2_kubeconfig, &id).await;

    // --dry-run prints every object and the helm command, and writes nothing.
    let (ok, out) = app.connect(&claim_ns, true, &["--dry-run"]).await;
    assert!(ok, "{out}");
    // Without --claim-groups the groups come from the XRDs that offer claims or namespaced XRs.
    assert!(
        out.contains("note: claimGroups: ") && out.contains("k8s.starter.org"),
        "{out}"
    );
    for shown in [
        "\"kind\": \"ServiceAccount\"",
        "\"kind\": \"ClusterRoleBinding\"",
        "\"kind\": \"Secret\"",
        "would run: helm upgrade --install",
    ] {
        assert!(out.contains(shown), "{shown} missing:\n{out}");
    }
    assert!(
        Api::<Namespace>::all(control_plane.clone())
            .get_opt(&claim_ns)
            .await
            .unwrap()
            .is_none(),
        "dry run wrote"
    );
    assert!(
        Api::<Namespace>::all(app.client.clone())
            .get_opt(&app.release_ns)
            .await
            .unwrap()
            .is_none(),
        "dry run wrote"
    );

    // A claim namespace that disagrees with the values file's.
    let values = connector_values(&app.dir, "another-claims", &id);
    let (ok, out) = app.connect(&claim_ns, false, &["-f", values.to_str().unwrap()]).await;
    assert!(
        !ok && out.contains(&format!("--claim-namespace \"{claim_ns}\"")) && out.contains("\"another-claims\""),
        "{out}"
    );

    // A control plane without Crossplane (app2 stands in for one).
    let mut command = app.command("connect", &env().app2_kubeconfig);
    command.args(["--claim-namespace", &claim_ns]);
    let (ok, out) = run_with_helm(command, false).await;
    assert!(!ok && out.contains("has no Crossplane"), "{out}");

    // No rights on the control plane: an account that may do nothing.
    let nobody_ns = format!("{id}-nobody");
    support::namespace_named(&control_plane, &nobody_ns).await;
    env()
        .kubectl(
            &env().control_plane_kubeconfig,
            &["create", "serviceaccount", "nobody", "-n", &nobody_ns],
        )
        .await
        .unwrap();
    let nobody = service_account_kubeconfig(
        &env().control_plane_kubeconfig,
        &nobody_ns,
        "nobody",
        &app.dir.join("nobody"),
    )
    .await;
    let mut command = app.command("connect", &nobody);
    command.args(["--claim-namespace", &claim_ns]);
    let (ok, out) = run_with_helm(command, false).await;
    assert!(!ok && out.contains("may not create namespaces"), "{out}");

    // Connected (without helm on PATH: connect prints the helm command instead) under a cluster id of its choosing...
    let shared_id = format!("{id}-shared");
    let (ok, out) = app
        .connect(
            &claim_ns,
            false,
            &["--cluster-id", &shared_id, "--claim-groups", "k8s.starter.org"],
        )
        .await;
    assert!(
        ok && out.contains("helm is not on PATH") && out.contains("helm upgrade --install"),
        "{out}"
    );
    // ...another app cluster with the same cluster id is refused in that claim namespace...
    let (ok, out) = app2
        .connect(
            &claim_ns,
            false,
            &["--cluster-id", &shared_id, "--claim-groups", "k8s.starter.org"],
        )
        .await;
    assert!(!ok && out.contains("used by another app cluster"), "{out}");
    // ...and the connected app cluster cannot be joined to another control plane (app2 with a Crossplane-less API
    // stands in for it; the record is checked first).
    let mut command = app.command("connect", &env().app2_kubeconfig);
    command.args(["--claim-namespace", &claim_ns, "--cluster-id", &shared_id]);
    let (ok, out) = run_with_helm(command, false).await;
    assert!(
        !ok && out.contains("connected to another control plane already"),
        "{out}"
    );

    // Leave nothing behind: the control plane's part by disconnect, the namespaces.
    let disconnect = app.command("disconnect", &env().control_plane_kubeconfig);
    let (ok, out) = run_with_helm(disconnect, false).await;
    assert!(ok, "{out}");
    app.remove().await;
    for ns in [&claim_ns, &nobody_ns] {
        let _ = Api::<Namespace>::all(control_plane.clone())
            .delete(ns, &DeleteParams::default())
            .await;
    }
}
