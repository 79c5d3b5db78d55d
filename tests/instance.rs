//! A claimsync process of a test's own: it replicates only the app namespaces the test labels for it, into a
//! claim namespace of its own on the control plane, so tests run side by side without touching each other.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::process::{Child, Command};

use crate::support::{self, env, wait_for};

pub const INSTANCE_LABEL: &str = "claimsync.dev/test-instance";

/// The malloc settings of claimsync's image (deploy/Dockerfile; tests/layout.rs checks the two agree).
pub const IMAGE_MALLOC: [(&str, &str); 3] = [
    ("MALLOC_ARENA_MAX", "1"),
    ("MALLOC_MMAP_THRESHOLD_", "131072"),
    ("MALLOC_TRIM_THRESHOLD_", "131072"),
];

pub struct Instance {
    pub id: String,
    /// The app cluster this claimsync runs for (the env's first one unless made with `new_on`).
    pub app_kubeconfig: PathBuf,
    pub claim_namespace: String,
    /// claimsync's own namespace in the app cluster (`--namespace`), where it records its cluster id.
    pub own_namespace: String,
    pub state_dir: PathBuf,
    pub app: Client,
    pub control_plane: Client,
    /// Read the control plane's kubeconfig from this Secret (`<namespace>/<name>`) instead of a file.
    pub control_plane_secret: Option<String>,
    /// Reach the control plane through this link of the test's own (see `use_link`).
    pub link: Option<support::Link>,
    /// The port of claimsync's ops endpoint (`/healthz`, `/readyz`, `/metrics`) on 127.0.0.1.
    pub ops_port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Instance {
    /// Prepares an instance (its claim namespace on the control plane) without starting it.
    pub async fn new(prefix: &str) -> Instance {
        Self::new_on(prefix, &env().app_kubeconfig, None).await
    }

    /// Prepares an instance for the app cluster of `app_kubeconfig`, in the claim namespace given (which must exist
    /// and may be shared with other instances) or in one of its own.
    pub async fn new_on(prefix: &str, app_kubeconfig: &std::path::Path, claim_namespace: Option<&str>) -> Instance {
        let id = support::unique(prefix);
        let app = support::client_for(app_kubeconfig).await;
        let control_plane = support::control_plane().await;
        let claim_namespace = match claim_namespace {
            Some(shared) => shared.to_string(),
            None => {
                let own = format!("{id}-claims");
                create_namespace(&control_plane, &own, None).await;
                own
            }
        };
        let own_namespace = format!("{id}-system");
        create_namespace(&app, &own_namespace, None).await;
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("instances").join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        Instance {
            state_dir: dir.join("journal"),
            log: dir.join("claimsync.log"),
            app_kubeconfig: app_kubeconfig.to_path_buf(),
            id,
            claim_namespace,
            own_namespace,
            app,
            control_plane,
            control_plane_secret: None,
            link: None,
            ops_port: free_port(),
            child: None,
        }
    }

    /// Another replica of this instance (as a second pod of one Deployment would be): the same clusters,
    /// namespaces and cluster id, its own journal, log and ops port. Not started.
    pub fn replica(&self, name: &str) -> Instance {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("instances")
            .join(format!("{}-{name}", self.id));
        std::fs::create_dir_all(&dir).unwrap();
        Instance {
            id: self.id.clone(),
            app_kubeconfig: self.app_kubeconfig.clone(),
            claim_namespace: self.claim_namespace.clone(),
            own_namespace: self.own_namespace.clone(),
            state_dir: dir.join("journal"),
            app: self.app.clone(),
            control_plane: self.control_plane.clone(),
            control_plane_secret: self.control_plane_secret.clone(),
            link: None,
            ops_port: free_port(),
            log: dir.join("claimsync.log"),
            child: None,
        }
    }

    /// Starts claimsync and waits until it says it is in sync.
    pub async fn start(&mut self) {
        self.start_in_sync(&[]).await;
    }

    /// Starts claimsync with extra arguments and waits until its metrics say the first full sync is done.
    pub async fn start_in_sync(&mut self, extra: &[&str]) {
        self.start_with(extra).await;
        wait_for("claimsync to report it is in sync", Duration::from_secs(90), || async {
            let metrics = self.ops("/metrics").await?;
            if in_sync(&metrics) {
                Ok(())
            } else {
                Err(format!("log so far:\n{}", tail(&self.log(), 15)))
            }
        })
        .await;
    }

    /// GETs a path of claimsync's ops endpoint; the body of a 200 answer.
    pub async fn ops(&self, path: &str) -> Result<String, String> {
        ops_get(self.ops_port, path).await
    }

    /// The `claimsync run` command of this instance: its kubeconfigs, claim namespace, own namespace, namespace
    /// selector, journal and cluster id (unless `extra` names one), then `extra`.
    fn command(&self, extra: &[&str]) -> Command {
        let selector = format!("{INSTANCE_LABEL}={}", self.id);
        // `CLAIMSYNC_BINARY` runs another build (the benchmark compares two side by side on one env).
        let binary = std::env::var_os("CLAIMSYNC_BINARY").unwrap_or_else(|| env!("CARGO_BIN_EXE_claimsync").into());
        let mut command = Command::new(binary);
        command.arg("run").arg("--app-kubeconfig").arg(&self.app_kubeconfig);
        match (&self.control_plane_secret, &self.link) {
            (Some(secret), _) => command.args(["--control-plane-kubeconfig-secret", secret]),
            (None, Some(link)) => command.arg("--control-plane-kubeconfig").arg(&link.kubeconfig),
            (None, None) => command
                .arg("--control-plane-kubeconfig")
                .arg(&env().control_plane_kubeconfig),
        };
        command
            .args(["--claim-namespace", &self.claim_namespace])
            .args(["--namespace", &self.own_namespace])
            .args(["--namespace-selector", &selector])
            .arg("--state-dir")
            .arg(&self.state_dir);
        if !extra
            .iter()
            .any(|a| a.starts_with("--cluster-id") || *a == "--no-cluster-id")
        {
            command.args(["--cluster-id", &self.id]);
        }
        if !extra.iter().any(|a| a.starts_with("--ops-addr")) {
            command.arg("--ops-addr").arg(format!("127.0.0.1:{}", self.ops_port));
        }
        command
            .args(extra.iter().filter(|a| **a != "--no-cluster-id"))
            .env(
                "RUST_LOG",
                std::env::var("CLAIMSYNC_TEST_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            )
            // As claimsync's image runs it (deploy/Dockerfile): one malloc arena, fixed thresholds.
            .envs(IMAGE_MALLOC)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        // A heap profile of each claimsync a test or the benchmark starts: `CLAIMSYNC_HEAPTRACK=/tmp/ht` preloads
        // heaptrack (Debian's package) and each process writes its raw trace to `/tmp/ht.<start in ms>` (see README
        // "Performance" for reading one).
        if let Ok(prefix) = std::env::var("CLAIMSYNC_HEAPTRACK") {
            let started = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            command
                .env("LD_PRELOAD", "/usr/lib/heaptrack/libheaptrack_preload.so")
                .env("DUMP_HEAPTRACK_OUTPUT", format!("{prefix}.{started}"));
        }
        command
    }

    /// Starts claimsync with extra arguments, without waiting. `--no-cluster-id` leaves the cluster id to its
    /// default (the kube-system uid).
    pub async fn start_with(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "instance {} already runs", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self
            .command(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start claimsync");
        self.child = Some(child);
    }

    /// Runs claimsync with extra arguments as this instance would, expecting it to stop by itself within a
    /// minute (bad input); returns its exit code and standard error.
    pub async fn run_to_exit(&self, extra: &[&str]) -> (i32, String) {
        let run = self.command(extra).output();
        let out = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap_or_else(|_| panic!("claimsync {extra:?} did not stop within a minute"))
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `claimsync restore` for this instance as an operator would (with `extra`, e.g. `--dry-run`), expecting
    /// success; returns what it printed.
    pub async fn restore(&self, extra: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_claimsync"))
            .arg("restore")
            .args(extra)
            .arg("--app-kubeconfig")
            .arg(&self.app_kubeconfig)
            .arg("--control-plane-kubeconfig")
            .arg(&env().control_plane_kubeconfig)
            .args(["--claim-namespace", &self.claim_namespace, "--cluster-id", &self.id])
            .args(["--namespace", &self.own_namespace])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "restore failed: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// Makes this instance reach the control plane through a link of its own, which the test can cut, reset,
    /// delay and restore (`link("cut")`); call before starting it.
    pub fn use_link(&mut self) {
        self.link = Some(support::link(&self.id));
    }

    /// `e2e/env link <action> <this instance's link>`, e.g. `cut`, `reset`, `restore`.
    pub fn link(&self, action: &str) {
        let link = self.link.as_ref().expect("the instance uses a link");
        env().script(&["link", action, &link.name]);
    }

    /// The process id of the running claimsync (the scale benchmark reads its memory).
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether claimsync still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Stops claimsync as Kubernetes does in a rollout (SIGTERM), waiting up to 30 s for it to exit.
    pub async fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        }
    }

    /// Stops claimsync (SIGKILL: a crash is the harder case for a restart).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// An app namespace this instance replicates.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = support::unique(prefix);
        create_namespace(&self.app, &name, Some(&self.id)).await;
        name
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

async fn create_namespace(client: &Client, name: &str, instance: Option<&str>) {
    let mut labels = json!({"claimsync.dev/test": "true"});
    if let Some(id) = instance {
        labels[INSTANCE_LABEL] = json!(id);
    }
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}\n{}", env().diagnose()));
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a claimsync's `/metrics` text says its first full sync is done.
pub fn in_sync(metrics: &str) -> bool {
    metrics.lines().any(|l| l == "claimsync_initial_sync_done 1")
}

/// The sum of the samples whose line starts with `name` (a metric and some of its labels) in a `/metrics` text.
pub fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `claimsync_tracked_entries` by map, from a `/metrics` text.
pub fn tracked_entries(metrics: &str) -> std::collections::BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(r#"claimsync_tracked_entries{map=""#))
        .filter_map(|l| {
            let (map, rest) = l.split_once('"')?;
            Some((map.to_string(), rest.rsplit_once(' ')?.1.parse().ok()?))
        })
        .collect()
}

/// The tracked maps that must be empty once every claim is gone (the mirrored Events follow the Events, which
/// outlive their claims by the API server's event TTL).
pub const KEYED_BY_CLAIMS: [&str; 5] = [
    "claim_phases",
    "twin_origins",
    "change_arrivals",
    "claim_backoffs",
    "orphaned_twins",
];

/// Whether every map keyed by claims is empty in the tracked entries.
pub fn no_claim_kept(tracked: &std::collections::BTreeMap<String, f64>) -> bool {
    KEYED_BY_CLAIMS.iter().all(|map| tracked.get(*map) == Some(&0.0))
}

/// A port nothing listens on now, for a claimsync's ops endpoint.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// GETs `path` from an ops endpoint on 127.0.0.1 (plain HTTP/1.0); the body of a 200 answer.
pub async fn ops_get(port: u16, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("ops endpoint :{port}: {e}"))?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.map_err(|e| e.to_string())?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") {
        Ok(body.to_string())
    } else {
        Err(format!("{path}: {}", head.lines().next().unwrap_or_default()))
    }
}
