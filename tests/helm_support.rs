//! Helpers for tests of the install story: helm (built by `e2e/tools`, with a config home of the tests' own), the
//! chart and its example values, kubeconfigs that authenticate as a ServiceAccount (a token from `kubectl create
//! token`), a release installed as the README's "Install" says (`Installation`), and a claimsync process run with
//! the arguments the chart renders, as the release's ServiceAccount (`Process`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::Kubeconfig;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::RwLockWriteGuard;

use crate::claim_support::{apply_claim, is_true, wait_secret};
use crate::instance::{INSTANCE_LABEL, free_port, in_sync, ops_get, tail};
use crate::shim_support::{API_SERVICE, Registration};
use crate::support::{self, audit_writes, env, repo_root, wait_for, wait_gone};
use crate::testenv_control_plane::kubernetes_cluster_resource;

/// The chart's directory.
pub fn chart() -> PathBuf {
    repo_root().join("deploy/helm/claimsync")
}

/// helm's path (`e2e/tools helm`, which builds it once into the cache).
pub fn helm_binary() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = std::process::Command::new(repo_root().join("e2e/tools"))
            .arg("helm")
            .stderr(Stdio::inherit())
            .output()
            .expect("e2e/tools helm");
        assert!(out.status.success(), "e2e/tools helm failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// helm with the app cluster's kubeconfig and homes of the tests' own.
fn helm_command(args: &[&str]) -> std::process::Command {
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    let mut command = std::process::Command::new(helm_binary());
    command
        .args(args)
        .arg("--kubeconfig")
        .arg(&env().app_kubeconfig)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::null());
    command
}

/// Runs helm against the app cluster; its standard output, or its standard error as the error.
pub async fn helm(args: &[&str]) -> Result<String, String> {
    let out = Command::from(helm_command(args))
        .output()
        .await
        .map_err(|e| format!("helm: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `helm template` of the chart with a values file and `--set`s, as JSON objects (one per rendered document).
pub async fn render(values: &Path, sets: &[&str]) -> Result<Vec<Value>, String> {
    let chart = chart();
    let mut args = vec![
        "template",
        "claimsync",
        chart.to_str().unwrap(),
        "-n",
        "claimsync-system",
    ];
    args.extend(["-f", values.to_str().unwrap()]);
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = helm(&args).await?;
    Ok(documents(&out))
}

/// The documents of a multi-document YAML text, as JSON (empty ones dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("helm printed YAML that does not parse: {e}\n{yaml}"))
        .into_iter()
        .filter(|d| d.is_object())
        .collect()
}

/// The one document of `kind` named `name`.
pub fn find<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {} documents", documents.len()))
}

/// The first container's arguments of a workload or Job.
pub fn container_args(workload: &Value) -> Vec<String> {
    workload["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap_or_else(|| panic!("no args in {workload}"))
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// An example values file of the repo with its `<PLACEHOLDERS>` filled in, written to `dir`.
pub fn example_values(name: &str, fills: &[(&str, &str)], dir: &Path) -> PathBuf {
    let mut text = std::fs::read_to_string(repo_root().join("deploy/examples").join(name)).unwrap();
    for (placeholder, value) in fills {
        text = text.replace(placeholder, value);
    }
    let left = text
        .lines()
        .any(|l| !l.trim_start().starts_with('#') && l.contains(": <") || l.contains("- <"));
    assert!(!left, "{name}: a placeholder is left:\n{text}");
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The server and CA data of an admin kubeconfig of the env.
pub fn server_and_ca(kubeconfig: &Path) -> (String, String) {
    let config = Kubeconfig::read_from(kubeconfig).unwrap();
    let cluster = config.clusters[0].cluster.clone().unwrap();
    (cluster.server.unwrap(), cluster.certificate_authority_data.unwrap())
}

/// A kubeconfig text for `server` with `token` as bearer.
pub fn token_kubeconfig(server: &str, ca_data: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca_data}\n\
         users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n"
    )
}

/// A token of ServiceAccount `namespace/name` in the cluster of `kubeconfig` (`kubectl create token`).
pub async fn service_account_token(kubeconfig: &Path, namespace: &str, name: &str) -> String {
    env()
        .kubectl(kubeconfig, &["create", "token", name, "-n", namespace, "--duration=2h"])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_string()
}

/// A kubeconfig file that authenticates to the cluster of `admin` as ServiceAccount `namespace/name`.
pub async fn service_account_kubeconfig(admin: &Path, namespace: &str, name: &str, file: &Path) -> PathBuf {
    let (server, ca) = server_and_ca(admin);
    let token = service_account_token(admin, namespace, name).await;
    std::fs::write(file, token_kubeconfig(&server, &ca, &token)).unwrap();
    file.to_path_buf()
}

/// A release of the chart that a test installed: uninstalled (without hooks) when dropped, also when the test
/// panics, so that its cluster-wide objects and the APIService do not outlive it.
pub struct Release {
    pub name: String,
    pub namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        // Synchronous on purpose: it must happen even when the test panics. Gone already is fine.
        let _ = helm_command(&[
            "uninstall",
            &self.name,
            "-n",
            &self.namespace,
            "--no-hooks",
            "--ignore-not-found",
        ])
        .output();
    }
}

/// The release name every installation uses (each in a namespace of its own).
pub const RELEASE: &str = "claimsync";

/// Whether a release serves the aggregated API claimsync.dev (`shim.enabled`, on by default). Only one APIService
/// `v1alpha1.claimsync.dev` can exist, and while it is unavailable (nothing serves the chart's Service without a
/// kubelet) every namespace deletion in the app cluster waits: a release with the shim is installed, run and
/// uninstalled under `support::env_exclusive`. Without it, releases in namespaces of their own run side by side.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shim {
    On,
    Off,
}

/// One installation of the chart with the platform team's part done on the control plane (the claim namespace, an
/// account with deploy/control-plane-rbac.yaml) and the app team's part in the app cluster (the release namespace,
/// the control plane's kubeconfig in a Secret, the values): `prepare` makes both, `install` runs `helm install`.
pub struct Installation {
    pub id: String,
    /// The test's scratch directory (values, kubeconfigs, claimsync's log and journal).
    pub dir: PathBuf,
    pub release_ns: String,
    pub claim_ns: String,
    pub shim: Shim,
    pub app: Client,
    pub control_plane: Client,
    /// The control plane's API server address, as the kubeconfig Secret names it.
    pub cp_server: String,
    /// The installed Deployment (null before `install`).
    pub deployment: Value,
    release: Option<Release>,
    /// When `with_shim` took the env for itself.
    exclusive_since: Option<Instant>,
}

/// A directory of the test's own under the target dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("install").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The Secret holding the control plane's kubeconfig `text`, as the app team makes it.
fn kubeconfig_secret(text: String) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "control-plane-kubeconfig"}, "stringData": {"kubeconfig": text}})
}

impl Installation {
    /// The platform team's part and the app team's part of an installation, not installed yet.
    pub async fn prepare(shim: Shim) -> Installation {
        let (app, control_plane) = (support::app().await, support::control_plane().await);
        let id = support::unique("inst");
        let dir = scratch(&id);
        let (release_ns, claim_ns) = (format!("{id}-system"), format!("{id}-claims"));

        // The platform team's part, on the control plane: the claim namespace, an account, and
        // deploy/control-plane-rbac.yaml.
        support::namespace_named(&control_plane, &claim_ns).await;
        let rbac = std::fs::read_to_string(repo_root().join("deploy/control-plane-rbac.yaml"))
            .unwrap()
            .replace("${CLAIM_NAMESPACE}", &claim_ns)
            .replace("${SERVICE_ACCOUNT_NAMESPACE}", &claim_ns)
            .replace("${SERVICE_ACCOUNT}", "claimsync")
            // Two groups, one a claim kind's and one a namespaced XR kind's (Crossplane v2): the file's line takes a
            // list.
            .replace("${CLAIM_GROUP}", "k8s.starter.org\", \"apps.starter.org");
        std::fs::write(dir.join("control-plane-rbac.yaml"), &rbac).unwrap();
        env()
            .kubectl(
                &env().control_plane_kubeconfig,
                &["apply", "-f", dir.join("control-plane-rbac.yaml").to_str().unwrap()],
            )
            .await
            .unwrap();
        let (cp_server, cp_ca) = server_and_ca(&env().control_plane_kubeconfig);
        let cp_token = service_account_token(&env().control_plane_kubeconfig, &claim_ns, "claimsync").await;

        // The app team's part: the release namespace, the control plane's kubeconfig in a Secret, the values.
        support::namespace_named(&app, &release_ns).await;
        let installation = Installation {
            id,
            dir,
            release_ns,
            claim_ns,
            shim,
            app,
            control_plane,
            cp_server,
            deployment: Value::Null,
            release: None,
            exclusive_since: None,
        };
        installation
            .set_control_plane_kubeconfig(token_kubeconfig(&installation.cp_server, &cp_ca, &cp_token))
            .await;
        let (id, claim_ns) = (&installation.id, &installation.claim_ns);
        let shim_off = if shim == Shim::Off {
            "shim:\n  enabled: false\n"
        } else {
            ""
        };
        std::fs::write(
            installation.values(),
            format!(
                "controlPlane:\n  claimNamespace: {claim_ns}\n  kubeconfigSecret:\n    name: control-plane-kubeconfig\n\
                 claimGroups: [k8s.starter.org, apps.starter.org]\nclusterID: {id}\nnamespaceSelector: {INSTANCE_LABEL}={id}\nlogLevel: info,claimsync=debug,kube_runtime::controller=debug\n{shim_off}"
            ),
        )
        .unwrap();
        installation
    }

    /// `prepare`d and installed without the shim, for a test that holds `support::env_shared`.
    pub async fn without_shim() -> Installation {
        let mut installation = Self::prepare(Shim::Off).await;
        installation.install().await;
        installation
    }

    /// `prepare`d (under `support::env_shared`), then installed with the shim under `support::env_exclusive`
    /// (after removing an APIService an earlier run left), which `uninstall_exclusive` ends.
    pub async fn with_shim() -> (Installation, RwLockWriteGuard<'static, ()>) {
        let shared = support::env_shared().await;
        let mut installation = Self::prepare(Shim::On).await;
        drop(shared);
        let exclusive = support::env_exclusive().await;
        installation.exclusive_since = Some(Instant::now());
        Registration::remove_stale(&installation.app).await;
        installation.install().await;
        (installation, exclusive)
    }

    /// Ends a `with_shim` installation: `uninstall`, then the other tests may run again, then `remove_namespaces`.
    pub async fn uninstall_exclusive(mut self, exclusive: RwLockWriteGuard<'static, ()>) {
        self.uninstall().await;
        if let Some(started) = self.exclusive_since {
            eprintln!(
                "install test: install to uninstall took {:?} (exclusive)",
                started.elapsed()
            );
        }
        drop(exclusive);
        let _shared = support::env_shared().await;
        self.remove_namespaces().await;
    }

    fn values(&self) -> PathBuf {
        self.dir.join("values.yaml")
    }

    /// `helm install`s the chart with the values (uninstalled when this is dropped); reads back the Deployment.
    /// Every install deploys, and its NOTES say how claimsync leaves.
    pub async fn install(&mut self) {
        let chart_dir = chart();
        let installed = helm(&[
            "install",
            RELEASE,
            chart_dir.to_str().unwrap(),
            "-n",
            &self.release_ns,
            "-f",
            self.values().to_str().unwrap(),
        ])
        .await
        .unwrap_or_else(|e| panic!("helm install: {e}"));
        self.release = Some(Release {
            name: RELEASE.into(),
            namespace: self.release_ns.clone(),
        });
        assert!(installed.contains("STATUS: deployed"), "{installed}");
        assert!(
            installed.contains("claimsync disconnect"),
            "NOTES say how it leaves:\n{installed}"
        );
        self.deployment = serde_json::from_str(
            &env()
                .kubectl(
                    &env().app_kubeconfig,
                    &["get", "deployment", RELEASE, "-n", &self.release_ns, "-o", "json"],
                )
                .await
                .unwrap(),
        )
        .unwrap();
    }

    /// Puts kubeconfig `text` into the Secret the values name.
    pub async fn set_control_plane_kubeconfig(&self, text: String) {
        Api::<Secret>::namespaced(self.app.clone(), &self.release_ns)
            .patch(
                "control-plane-kubeconfig",
                &PatchParams::apply("claimsync-tests").force(),
                &Patch::Apply(kubeconfig_secret(text)),
            )
            .await
            .unwrap();
    }

    /// claimsync as the release's ServiceAccount, with the Deployment's arguments, once it is in sync and leads.
    pub async fn start(&self) -> Process {
        let kubeconfig = service_account_kubeconfig(
            &env().app_kubeconfig,
            &self.release_ns,
            RELEASE,
            &self.dir.join("sa.kubeconfig"),
        )
        .await;
        let process = Process::start(&self.deployment, &kubeconfig, &self.dir).await;
        wait_for("claimsync to sync", Duration::from_secs(90), || async {
            let metrics = ops_get(process.ops_port, "/metrics").await?;
            (in_sync(&metrics) && metrics.contains("claimsync_leader 1"))
                .then_some(())
                .ok_or_else(|| tail(&process.log(), 15))
        })
        .await;
        process
    }

    /// An app team's namespace that this installation replicates (its namespace selector).
    pub async fn team_namespace(&self) -> String {
        let ns = support::unique("team");
        let labels = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {INSTANCE_LABEL: self.id, "claimsync.dev/test": "true"}}});
        Api::<Namespace>::all(self.app.clone())
            .patch(
                &ns,
                &PatchParams::apply("claimsync-tests").force(),
                &Patch::Apply(&labels),
            )
            .await
            .unwrap();
        ns
    }

    /// The KubernetesCluster claims of `ns` in the app cluster.
    pub fn local(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.app.clone(), ns, &kubernetes_cluster_resource())
    }

    /// The KubernetesCluster twins in the claim namespace.
    pub fn remote(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.control_plane.clone(),
            &self.claim_ns,
            &kubernetes_cluster_resource(),
        )
    }

    /// KubernetesCluster claims `names` applied in a new team namespace, each Synced, Ready and Replicated with its
    /// connection Secret in the app cluster; the namespace.
    pub async fn ready_claims(&self, process: &Process, names: &[&str]) -> String {
        let ns = self.team_namespace().await;
        for name in names {
            apply_claim(&ns, name).await;
        }
        let local = self.local(&ns);
        for name in names {
            process.wait_claim(&local, name, ready).await;
            wait_secret(&self.app, &ns, &format!("{name}-conn")).await;
        }
        ns
    }

    /// The uninstall hook's command (`claimsync disconnect`), as the hook's ServiceAccount (the Job itself needs a
    /// kubelet); what it printed and the account's name.
    pub async fn run_uninstall_hook(&self) -> (String, String) {
        let hooks = documents(&helm(&["get", "hooks", RELEASE, "-n", &self.release_ns]).await.unwrap());
        let job = find(&hooks, "Job", "claimsync-uninstall");
        let account = job["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .unwrap()
            .to_string();
        let kubeconfig = service_account_kubeconfig(
            &env().app_kubeconfig,
            &self.release_ns,
            &account,
            &self.dir.join("hook.kubeconfig"),
        )
        .await;
        (claimsync(&container_args(job), &kubeconfig).await, account)
    }

    /// Stops claimsync; then nothing was refused: not in its log, not in the app cluster's audit log for the
    /// release namespace's `app_accounts`, and, when claimsync had claims to replicate (`control_plane`), not in the
    /// control plane's for its account there.
    pub async fn assert_nothing_refused(&self, mut process: Process, app_accounts: &[&str], control_plane: bool) {
        let log = process.log();
        assert!(!log.to_lowercase().contains("forbidden"), "{log}");
        let _ = process.child.kill().await;
        for account in app_accounts {
            assert_no_forbidden_writes("app", &format!("system:serviceaccount:{}:{account}", self.release_ns));
        }
        if control_plane {
            assert_no_forbidden_writes(
                "controlplane",
                &format!("system:serviceaccount:{}:claimsync", self.claim_ns),
            );
        }
    }

    /// `helm uninstall` (the hook run by the test, if at all): the chart's ServiceAccount goes, and with the shim
    /// the APIService; while that was there and unavailable, namespace deletions failed their discovery and backed
    /// off, so this waits until they are under way again, before another test (one that counts writes) runs.
    pub async fn uninstall(&mut self) {
        helm(&["uninstall", RELEASE, "-n", &self.release_ns, "--no-hooks", "--wait"])
            .await
            .unwrap_or_else(|e| panic!("helm uninstall: {e}"));
        self.release = None;
        if self.shim == Shim::On {
            let api_services = Api::<APIService>::all(self.app.clone());
            wait_gone(
                "the APIService",
                Duration::from_secs(30),
                &api_services,
                API_SERVICE,
                |a| format!("{:?}", a.metadata.deletion_timestamp),
            )
            .await;
            wait_for(
                "namespace deletions past discovery again",
                Duration::from_secs(120),
                || async {
                    let namespaces = Api::<Namespace>::all(self.app.clone())
                        .list(&ListParams::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    let blocked: Vec<String> = namespaces
                        .items
                        .iter()
                        .filter(|ns| {
                            ns.status
                                .iter()
                                .flat_map(|s| s.conditions.iter().flatten())
                                .any(|c| c.type_ == "NamespaceDeletionDiscoveryFailure" && c.status == "True")
                        })
                        .map(|ns| ns.name_any())
                        .collect();
                    blocked
                        .is_empty()
                        .then_some(())
                        .ok_or(format!("still blocked: {blocked:?}"))
                },
            )
            .await;
        }
        let accounts = Api::<ServiceAccount>::namespaced(self.app.clone(), &self.release_ns);
        assert!(accounts.get_opt(RELEASE).await.unwrap().is_none());
    }

    /// The release's namespace and the claim namespace go (the app team's namespaces stay, as every test's do: a
    /// claim claimsync still holds would keep a deleted one terminating).
    pub async fn remove_namespaces(mut self) {
        drop(self.release.take());
        for (client, namespace) in [(&self.app, &self.release_ns), (&self.control_plane, &self.claim_ns)] {
            let _ = Api::<Namespace>::all(client.clone())
                .delete(namespace, &DeleteParams::default())
                .await;
        }
    }
}

/// Synced, Ready and Replicated.
pub fn ready(claim: &DynamicObject) -> bool {
    is_true(claim, "Synced") && is_true(claim, "Ready") && is_true(claim, "Replicated")
}

/// claimsync run as the chart's Deployment would run it (its arguments and environment), as its ServiceAccount.
pub struct Process {
    child: Child,
    log: PathBuf,
    pub ops_port: u16,
    /// The kubeconfig it runs with: the release's ServiceAccount's.
    pub kubeconfig: PathBuf,
}

impl Process {
    pub async fn start(deployment: &Value, kubeconfig: &Path, dir: &Path) -> Process {
        let ops_port = free_port();
        let args: Vec<String> = container_args(deployment)
            .into_iter()
            .map(|arg| match arg.split_once('=') {
                Some(("--state-dir", _)) => format!("--state-dir={}", dir.join("journal").display()),
                Some(("--ops-addr", _)) => format!("--ops-addr=127.0.0.1:{ops_port}"),
                Some(("--shim-addr", _)) => "--shim-addr=127.0.0.1:0".to_string(),
                _ => arg,
            })
            .collect();
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let namespace = deployment["metadata"]["namespace"].as_str().unwrap();
        let log = dir.join("claimsync.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_claimsync"));
        command.args(&args).arg("--app-kubeconfig").arg(kubeconfig);
        for var in container["env"].as_array().unwrap() {
            let name = var["name"].as_str().unwrap();
            let value = match name {
                "POD_NAME" => format!("{}-0", deployment["metadata"]["name"].as_str().unwrap()),
                "POD_NAMESPACE" => namespace.to_string(),
                _ => var["value"].as_str().unwrap().to_string(),
            };
            command.env(name, value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Process {
            child,
            log,
            ops_port,
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// Waits until the claim `name` is as `want` says, showing its status and claimsync's log meanwhile.
    pub async fn wait_claim(&self, api: &Api<DynamicObject>, name: &str, want: impl Fn(&DynamicObject) -> bool) {
        wait_for(&format!("claim {name}"), Duration::from_secs(120), || async {
            let claim = api.get(name).await.map_err(|e| e.to_string())?;
            if want(&claim) {
                Ok(())
            } else {
                Err(format!(
                    "status {}\nclaimsync log:\n{}",
                    claim.data["status"],
                    tail(&self.log(), 10)
                ))
            }
        })
        .await;
    }
}

/// Runs a claimsync subcommand to its end; its standard output.
pub async fn claimsync(args: &[String], kubeconfig: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_claimsync"))
        .args(args)
        .arg("--app-kubeconfig")
        .arg(kubeconfig)
        .env("RUST_LOG", "info")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "claimsync {args:?}: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        !stderr.to_lowercase().contains("forbidden"),
        "claimsync {args:?}: {stderr}"
    );
    stdout
}

fn assert_no_forbidden_writes(cluster: &str, user: &str) {
    let writes = audit_writes(cluster, user);
    assert!(!writes.is_empty(), "{user} wrote nothing on {cluster}");
    let refused: Vec<_> = writes.iter().filter(|w| w.code == Some(403)).collect();
    assert!(refused.is_empty(), "{user} was refused on {cluster}: {refused:#?}");
}
