//! Helpers for tests of the install story: helm (built by `e2e/tools`, with a config home of the tests' own), the
//! chart and its example values, kubeconfigs that authenticate as a ServiceAccount (a token from `kubectl create
//! token`), and a claimsync process run with the arguments the chart renders.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use kube::config::Kubeconfig;
use serde_json::Value;
use tokio::process::Command;

use crate::support::{env, repo_root};

/// The chart's directory.
pub fn chart() -> PathBuf {
    repo_root().join("deploy/helm/claimsync")
}

/// helm's path (`e2e/tools helm`, which builds it once into the cache).
fn helm_binary() -> &'static Path {
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
