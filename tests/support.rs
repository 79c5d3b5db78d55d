//! Test support: finds or starts the env (app clusters and control plane), hands out clients and namespaces of
//! their own to tests, waits for conditions with deadlines, and explains failures with the env's state and logs.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The running env: its kubeconfigs and folder.
pub struct Env {
    pub app_kubeconfig: PathBuf,
    /// The second app cluster, independent of the first.
    pub app2_kubeconfig: PathBuf,
    pub control_plane_kubeconfig: PathBuf,
    /// The control plane through the env's `default` link (see `link`).
    pub control_plane_link_kubeconfig: PathBuf,
    pub dir: PathBuf,
}

static ENV: OnceLock<Env> = OnceLock::new();

/// Every test that touches the env holds this lock: shared by most, exclusively by a test that stops a cluster or
/// counts the API servers' writes (which any other test's work would add to).
static ENV_LOCK: RwLock<()> = RwLock::const_new(());

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The env of this run: the one named by APP_KUBECONFIG/CONTROLPLANE_KUBECONFIG, or one started now that stops
/// when this test binary exits.
pub fn env() -> &'static Env {
    ENV.get_or_init(|| {
        if let (Ok(app), Ok(control_plane)) = (
            std::env::var("APP_KUBECONFIG"),
            std::env::var("CONTROLPLANE_KUBECONFIG"),
        ) {
            let app = PathBuf::from(app);
            let dir = std::env::var("CLAIMSYNC_ENV_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| app.parent().and_then(Path::parent).unwrap().to_path_buf());
            // An env started by an older e2e/env does not export these; its layout names them all the same.
            let or_in_dir = |name: &str, path: &str| std::env::var(name).map(PathBuf::from).unwrap_or(dir.join(path));
            return Env {
                app_kubeconfig: app,
                app2_kubeconfig: or_in_dir("APP2_KUBECONFIG", "app2/kubeconfig"),
                control_plane_kubeconfig: PathBuf::from(control_plane),
                control_plane_link_kubeconfig: or_in_dir("CONTROLPLANE_LINK_KUBECONFIG", "links/default/kubeconfig"),
                dir,
            };
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("env");
        // A previous run's env is stopped by its owner watch; start from clean data.
        let _ = run_env_script(&dir, &["down", "--purge"]);
        let out = run_env_script(&dir, &["up", "--owner-pid", &std::process::id().to_string()])
            .unwrap_or_else(|e| panic!("could not start the test env: {e}"));
        let var = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(|v| PathBuf::from(v.trim_matches('\'')))
                .unwrap_or_else(|| panic!("e2e/env up printed no {name}:\n{out}"))
        };
        Env {
            app_kubeconfig: var("APP_KUBECONFIG"),
            app2_kubeconfig: var("APP2_KUBECONFIG"),
            control_plane_kubeconfig: var("CONTROLPLANE_KUBECONFIG"),
            control_plane_link_kubeconfig: var("CONTROLPLANE_LINK_KUBECONFIG"),
            dir,
        }
    })
}

fn run_env_script(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(repo_root().join("e2e/env"))
        .args(args)
        .env("CLAIMSYNC_ENV_DIR", dir)
        .output()
        .map_err(|e| format!("e2e/env {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "e2e/env {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Env {
    /// Whether the control plane runs Crossplane v2 (the env's default; `CLAIMSYNC_CROSSPLANE=v1.20` runs v1.20),
    /// from the env's own record. Namespaced XRs exist only on v2.
    pub fn crossplane_v2(&self) -> bool {
        let config = std::fs::read_to_string(self.dir.join("env.json")).unwrap_or_default();
        let config: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
        config["crossplaneVersion"] == "v2"
    }

    /// Runs `e2e/env <args>` against this env (e.g. `stop controlplane`).
    pub fn script(&self, args: &[&str]) {
        self.script_output(args);
    }

    /// Runs `e2e/env <args>` against this env and returns what it printed (e.g. `link add NAME`).
    pub fn script_output(&self, args: &[&str]) -> String {
        run_env_script(&self.dir, args).unwrap_or_else(|e| panic!("{e}\n{}", self.diagnose()))
    }

    /// Which of the env's processes are dead, with the last lines of their logs.
    pub fn diagnose(&self) -> String {
        let mut report = String::new();
        for cluster in ["app", "app2", "controlplane"] {
            for process in ["apiserver", "controller-manager", "crossplane"] {
                let pid_file = self.dir.join(cluster).join(format!("{process}.pid"));
                let Ok(pid) = std::fs::read_to_string(&pid_file) else {
                    continue;
                };
                // The pid file holds the pid and the process's start time.
                let pid = pid.split_whitespace().next().unwrap_or_default();
                if Path::new(&format!("/proc/{pid}")).exists() {
                    continue;
                }
                let log = self.dir.join(cluster).join(format!("{process}.log"));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                report.push_str(&format!(
                    "\nthe env's {process} of {cluster} has died; last lines of {}:\n{tail}\n",
                    log.display()
                ));
            }
        }
        if report.is_empty() {
            report.push_str("(every process of the env is alive)");
        }
        report
    }

    /// Runs kubectl against one cluster, the way a user would, without blocking the test's runtime.
    pub async fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
        let out = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .await
            .map_err(|e| format!("kubectl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

pub async fn client_for(kubeconfig: &Path) -> Client {
    let config =
        Kubeconfig::read_from(kubeconfig).unwrap_or_else(|e| panic!("kubeconfig {}: {e}", kubeconfig.display()));
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", kubeconfig.display()));
    Client::try_from(config).expect("kube client")
}

/// A client of the app cluster, for this test's runtime.
pub async fn app() -> Client {
    client_for(&env().app_kubeconfig).await
}

/// A client of the second app cluster, for this test's runtime.
pub async fn app2() -> Client {
    client_for(&env().app2_kubeconfig).await
}

/// A client of the control plane, for this test's runtime.
pub async fn control_plane() -> Client {
    client_for(&env().control_plane_kubeconfig).await
}

/// A link of this test's own to the control plane (`e2e/env link add`), removed when dropped.
pub struct Link {
    /// For `e2e/env link cut NAME` and the like.
    pub name: String,
    /// Reaches the link's cluster through the link.
    pub kubeconfig: PathBuf,
}

pub fn link(prefix: &str) -> Link {
    link_to(prefix, "controlplane")
}

/// A link of the test's own to one of the env's clusters (`app`, `app2` or `controlplane`).
pub fn link_to(prefix: &str, cluster: &str) -> Link {
    let name = unique(prefix);
    let out = env().script_output(&["link", "add", &name, cluster]);
    Link {
        name,
        kubeconfig: PathBuf::from(out.trim()),
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Err(e) = run_env_script(&env().dir, &["link", "remove", &self.name]) {
            eprintln!("{e}");
        }
    }
}

/// Held by every test that uses the env and neither stops a cluster nor counts writes.
pub async fn env_shared() -> RwLockReadGuard<'static, ()> {
    ENV_LOCK.read().await
}

/// Held by a test that stops a cluster or counts the API servers' writes: no other test runs meanwhile.
pub async fn env_exclusive() -> RwLockWriteGuard<'static, ()> {
    ENV_LOCK.write().await
}

/// A name no other test of this run uses: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a namespace of this test's own in the cluster of `client`.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = unique(prefix);
    namespace_named(client, &name).await;
    name
}

/// Creates the namespace `name` (a name of this test's own, e.g. from `unique`) in the cluster of `client`.
pub async fn namespace_named(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"claimsync.dev/test": "true"}}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}\n{}", env().diagnose()));
}

/// Polls `check` until it returns Ok, or panics after `timeout` with its last error and the env's state.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!(
                    "timed out after {timeout:?} waiting for {what}: {last}\n{}",
                    env().diagnose()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until `name` is gone from `api`; `describe` says what is still there while it is not.
pub async fn wait_gone<K>(what: &str, timeout: Duration, api: &Api<K>, name: &str, describe: impl Fn(K) -> String)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(what, timeout, || async {
        match api.get_opt(name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(object) => Err(describe(object)),
        }
    })
    .await
}

/// One write request from a cluster's audit log (`<env>/<cluster>/audit.log`, which records writes only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// create, update, patch, delete or deletecollection.
    pub verb: String,
    /// The resource, with `/<subresource>` if any, e.g. `configmaps` or `claims/status`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The authenticated user; the identity the write is attributed to may be an impersonated one.
    pub user: String,
    pub code: Option<u16>,
}

/// The writes that `username` made on `cluster` (app, app2 or controlplane): requests authenticated as that
/// user, or made by someone impersonating it. Only the current log file is read, not a rotated backup.
pub fn audit_writes(cluster: &str, username: &str) -> Vec<AuditEntry> {
    // The log and its rotated backup (audit-<time>.log), oldest first.
    let dir = env().dir.join(cluster);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit") && n.ends_with(".log"))
        })
        .collect();
    files.sort_by_key(|p| (p.file_name().and_then(|n| n.to_str()) == Some("audit.log"), p.clone()));
    let text: String = files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect::<Vec<_>>()
        .join("\n");
    let quoted = format!("\"{username}\"");
    text.lines()
        .filter(|line| line.contains(&quoted))
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| {
            let identity = event["impersonatedUser"]["username"]
                .as_str()
                .or(event["user"]["username"].as_str());
            identity == Some(username)
        })
        .map(|event| {
            let object = &event["objectRef"];
            let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
            let mut resource = text(&object["resource"]).unwrap_or_default();
            if let Some(sub) = object["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            AuditEntry {
                verb: text(&event["verb"]).unwrap_or_default(),
                resource,
                namespace: text(&object["namespace"]),
                name: text(&object["name"]),
                user: text(&event["user"]["username"]).unwrap_or_default(),
                code: event["responseStatus"]["code"]
                    .as_u64()
                    .and_then(|c| u16::try_from(c).ok()),
            }
        })
        .collect()
}

/// Crossplane paused (SIGSTOP) until dropped (SIGCONT): for a test that must see what claimsync does alone, under
/// `env_exclusive` (every other test needs Crossplane).
pub struct CrossplanePaused(String);

impl CrossplanePaused {
    pub fn now() -> CrossplanePaused {
        let text =
            std::fs::read_to_string(env().dir.join("controlplane/crossplane.pid")).expect("Crossplane's pid file");
        // The file holds the pid and its start time.
        let pid = text.split_whitespace().next().unwrap_or_default().to_string();
        crossplane_signal("-STOP", &pid);
        CrossplanePaused(pid)
    }
}

impl Drop for CrossplanePaused {
    fn drop(&mut self) {
        crossplane_signal("-CONT", &self.0);
    }
}

fn crossplane_signal(signal: &str, pid: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, pid])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid} (Crossplane)");
}
