//! The install story against the real env: the chart lints, renders both credential forms and refuses bad values
//! with messages that name the key (one test for each); installed, claimsync runs with exactly its ServiceAccount's
//! rights (and the control plane Role) through a claim's whole life, a wrong token, and the uninstall hook's
//! disconnect.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use claimsync::model::naming::remote_claim_name;
use claimsync::model::vocabulary::{ORIGIN_CLUSTER, ORIGIN_CLUSTER_UID, ORIGIN_NAME, ORIGIN_NAMESPACE};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::claim_support::{cluster_claim_yaml, condition, is_true, kubectl_apply};
use crate::helm_support::{
    Release, chart, container_args, documents, example_values, find, helm, render, server_and_ca,
    service_account_kubeconfig, service_account_token, token_kubeconfig,
};
use crate::instance::{INSTANCE_LABEL, free_port, in_sync, ops_get, tail};
use crate::shim_support::{API_SERVICE, Registration};
use crate::support::{self, audit_writes, env, wait_for, wait_gone};
use crate::testenv_control_plane::kubernetes_cluster_resource;

const TOKEN: &str = "upbound-token-0123456789";

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("install").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn connector_fills(host: &str, token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("<ORG_ACCOUNT>", "acme".into()),
        ("<TOKEN>", token.into()),
        ("<SPACE_HOST>", host.into()),
        ("<CONTROL_PLANE_NAME>", "ctp1".into()),
        ("<CONTROL_PLANE_GROUP>", "default".into()),
        ("<CLAIM_NAMESPACE>", "app-claims".into()),
        ("<CLAIM_API_GROUP>", "k8s.starter.org".into()),
    ]
}

fn fills<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The repo's two example values files, filled in, in a directory of the test's own: Upbound's (a token for a
/// Spaces endpoint) and the form with a kubeconfig Secret of one's own.
struct Examples {
    connector: PathBuf,
    secret_form: PathBuf,
}

fn examples() -> Examples {
    let dir = scratch(&support::unique("values"));
    let connector = example_values(
        "connector-values.yaml",
        &fills(&connector_fills("upbound-aws-us-east-1.spaces.upbound.io", TOKEN)),
        &dir,
    );
    let secret_form = example_values(
        "kubeconfig-values.yaml",
        &[
            ("<CLAIM_NAMESPACE>", "app-claims"),
            ("<CLAIM_API_GROUP>", "k8s.starter.org"),
        ],
        &dir,
    );
    Examples { connector, secret_form }
}

/// The chart rendered with Upbound's example values.
async fn rendered_connector() -> Vec<Value> {
    render(&examples().connector, &[]).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_lints_with_both_example_values() {
    let _env = support::env_shared().await;
    let Examples { connector, secret_form } = examples();
    let chart_dir = chart();
    for values in [&connector, &secret_form] {
        let linted = helm(&[
            "lint",
            "--strict",
            chart_dir.to_str().unwrap(),
            "-f",
            values.to_str().unwrap(),
        ])
        .await;
        assert!(linted.is_ok(), "helm lint {}: {linted:?}", values.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upbound_values_render_a_kubeconfig_secret_that_alone_holds_the_token() {
    let _env = support::env_shared().await;
    let docs = rendered_connector().await;
    let secret = find(&docs, "Secret", "claimsync-control-plane");
    assert_eq!(secret["metadata"]["namespace"], "claimsync-system");
    let kubeconfig = secret["stringData"]["kubeconfig"].as_str().unwrap();
    assert!(
        kubeconfig.contains(
            "server: \"https://upbound-aws-us-east-1.spaces.upbound.io/apis/spaces.upbound.io/v1beta1/namespaces/default/controlplanes/ctp1/k8s\""
        ),
        "{kubeconfig}"
    );
    assert!(kubeconfig.contains(&format!("token: \"{TOKEN}\"")), "{kubeconfig}");
    let holding_token: Vec<&Value> = docs.iter().filter(|d| d.to_string().contains(TOKEN)).collect();
    assert_eq!(
        holding_token.len(),
        1,
        "the token is in more than its Secret: {holding_token:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployment_runs_claimsync_with_the_values_as_arguments_in_a_locked_down_pod() {
    let _env = support::env_shared().await;
    let docs = rendered_connector().await;
    let args = container_args(find(&docs, "Deployment", "claimsync"));
    for expected in [
        "run",
        "--claim-namespace=app-claims",
        "--control-plane-kubeconfig-secret=claimsync-system/claimsync-control-plane:kubeconfig",
        "--leader-elect",
        "--claim-groups=k8s.starter.org",
        "--shim-addr=0.0.0.0:8443",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} not in {args:?}");
    }
    let deployment = find(&docs, "Deployment", "claimsync");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["containers"][0]["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(pod["containers"][0]["readinessProbe"]["httpGet"]["path"], "/readyz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_api_service_leaves_its_ca_bundle_to_claimsync() {
    let _env = support::env_shared().await;
    let docs = rendered_connector().await;
    let api_service = find(&docs, "APIService", API_SERVICE);
    assert!(
        api_service["spec"].get("caBundle").is_none(),
        "claimsync owns the caBundle"
    );
    assert_eq!(
        api_service["spec"]["service"],
        json!({"namespace": "claimsync-system", "name": "claimsync", "port": 443})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_uninstall_hook_is_a_pre_delete_disconnect() {
    let _env = support::env_shared().await;
    let docs = rendered_connector().await;
    let hook = find(&docs, "Job", "claimsync-uninstall");
    assert_eq!(hook["metadata"]["annotations"]["helm.sh/hook"], "pre-delete");
    assert_eq!(
        container_args(hook),
        [
            "disconnect",
            "--namespace=claimsync-system",
            "--claim-groups=k8s.starter.org"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_secret_of_ones_own_is_named_in_the_flag_and_nothing_is_rendered_from_a_token() {
    let _env = support::env_shared().await;
    let docs = render(&examples().secret_form, &[]).await.unwrap();
    assert!(!docs.iter().any(|d| d["kind"] == "Secret"), "no Secret is rendered");
    let args = container_args(find(&docs, "Deployment", "claimsync"));
    assert!(
        args.contains(&"--control-plane-kubeconfig-secret=claimsync-system/control-plane-kubeconfig:kubeconfig".into()),
        "{args:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_volume_per_replica_and_a_service_monitor_render_on_request() {
    let _env = support::env_shared().await;
    let docs = render(
        &examples().secret_form,
        &["persistence.enabled=true", "serviceMonitor.enabled=true"],
    )
    .await
    .unwrap();
    let statefulset = find(&docs, "StatefulSet", "claimsync");
    assert_eq!(
        statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "journal"
    );
    find(&docs, "ServiceMonitor", "claimsync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_refused_with_a_message_that_names_the_key() {
    let _env = support::env_shared().await;
    let Examples { connector, secret_form } = examples();
    let refusals: [(&Path, &[&str], &str); 6] = [
        (
            &secret_form,
            &["controlPlane.claimNamespace="],
            "at '/controlPlane/claimNamespace': minLength: got 0, want 1",
        ),
        (
            &connector,
            &["spaces.controlPlane.claimNamspace=x"],
            "at '/spaces/controlPlane': additional properties 'claimNamspace' not allowed",
        ),
        (&connector, &["spaces.host="], "spaces.host required with upbound.token"),
        (
            &connector,
            &["controlPlane.kubeconfigSecret.name=mine"],
            "both credential forms are set: upbound.token and a kubeconfig Secret",
        ),
        (&secret_form, &["claimGroups=null"], "claimGroups is required"),
        (
            &secret_form,
            &["claimGroups={*.starter.org}"],
            "'*.starter.org' does not match pattern",
        ),
    ];
    for (values, sets, message) in refusals {
        let refused = render(values, sets).await.expect_err(message);
        assert!(refused.contains(message), "{sets:?}: want {message:?} in:\n{refused}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_refused_at_install_before_anything_is_created() {
    let _env = support::env_shared().await;
    let connector = examples().connector;
    let release = support::unique("refused");
    let chart_dir = chart();
    let refused = helm(&[
        "install",
        &release,
        chart_dir.to_str().unwrap(),
        "-n",
        "default",
        "-f",
        connector.to_str().unwrap(),
        "--set",
        "spaces.controlPlane.claimNamspace=x",
    ])
    .await
    .expect_err("a misspelt key is refused");
    assert!(
        refused.contains("additional properties 'claimNamspace' not allowed"),
        "{refused}"
    );
    assert!(helm(&["status", &release, "-n", "default"]).await.is_err());
}

/// claimsync run as the chart's Deployment would run it (its arguments and environment), as its ServiceAccount.
struct Process {
    child: Child,
    log: PathBuf,
    ops_port: u16,
}

impl Process {
    async fn start(deployment: &Value, kubeconfig: &Path, dir: &Path) -> Process {
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
        Process { child, log, ops_port }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

async fn wait_claim(api: &Api<DynamicObject>, name: &str, process: &Process, want: impl Fn(&DynamicObject) -> bool) {
    wait_for(&format!("claim {name}"), Duration::from_secs(120), || async {
        let claim = api.get(name).await.map_err(|e| e.to_string())?;
        if want(&claim) {
            Ok(())
        } else {
            Err(format!(
                "status {}\nclaimsync log:\n{}",
                claim.data["status"],
                tail(&process.log(), 10)
            ))
        }
    })
    .await;
}

fn ready(claim: &DynamicObject) -> bool {
    is_true(claim, "Synced") && is_true(claim, "Ready") && is_true(claim, "Replicated")
}

/// Runs a claimsync subcommand to its end; its standard output.
async fn claimsync(args: &[String], kubeconfig: &Path) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_installs_and_claimsync_runs_with_only_its_rights_then_uninstalls_cleanly() {
    let shared = support::env_shared().await;
    let (app, control_plane) = (support::app().await, support::control_plane().await);
    let id = support::unique("inst");
    let dir = scratch(&id);
    let (release_ns, claim_ns) = (format!("{id}-system"), format!("{id}-claims"));

    // The platform team's part, on the control plane: the claim namespace, an account, deploy/control-plane-rbac.yaml.
    support::namespace_named(&control_plane, &claim_ns).await;
    let rbac = std::fs::read_to_string(support::repo_root().join("deploy/control-plane-rbac.yaml"))
        .unwrap()
        .replace("${CLAIM_NAMESPACE}", &claim_ns)
        .replace("${SERVICE_ACCOUNT_NAMESPACE}", &claim_ns)
        .replace("${SERVICE_ACCOUNT}", "claimsync")
        .replace("${CLAIM_GROUP}", "k8s.starter.org");
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
    let secrets = Api::<Secret>::namespaced(app.clone(), &release_ns);
    let kubeconfig_secret = |text: String| {
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "control-plane-kubeconfig"}, "stringData": {"kubeconfig": text}})
    };
    let apply = PatchParams::apply("claimsync-tests").force();
    secrets
        .patch(
            "control-plane-kubeconfig",
            &apply,
            &Patch::Apply(kubeconfig_secret(token_kubeconfig(&cp_server, &cp_ca, &cp_token))),
        )
        .await
        .unwrap();
    let values = dir.join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "controlPlane:\n  claimNamespace: {claim_ns}\n  kubeconfigSecret:\n    name: control-plane-kubeconfig\n\
             claimGroups: [k8s.starter.org]\nclusterID: {id}\nnamespaceSelector: {INSTANCE_LABEL}={id}\nlogLevel: info,claimsync=debug,kube_runtime::controller=debug\n"
        ),
    )
    .unwrap();

    // Only one APIService v1alpha1.claimsync.dev can exist, and while it is unavailable every namespace deletion
    // in the app cluster waits: no other test runs meanwhile.
    drop(shared);
    let exclusive = support::env_exclusive().await;
    let started = std::time::Instant::now();
    Registration::remove_stale(&app).await;
    let release = "claimsync";
    let chart_dir = chart();
    let installed = helm(&[
        "install",
        release,
        chart_dir.to_str().unwrap(),
        "-n",
        &release_ns,
        "-f",
        values.to_str().unwrap(),
    ])
    .await
    .unwrap_or_else(|e| panic!("helm install: {e}"));
    let _release = Release {
        name: release.into(),
        namespace: release_ns.clone(),
    };
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    assert!(
        installed.contains("claimsync disconnect"),
        "NOTES say how it leaves:\n{installed}"
    );
    let deployment: Value = serde_json::from_str(
        &env()
            .kubectl(
                &env().app_kubeconfig,
                &["get", "deployment", release, "-n", &release_ns, "-o", "json"],
            )
            .await
            .unwrap(),
    )
    .unwrap();

    // claimsync as its ServiceAccount, with the Deployment's arguments.
    let sa_kubeconfig =
        service_account_kubeconfig(&env().app_kubeconfig, &release_ns, release, &dir.join("sa.kubeconfig")).await;
    let mut process = Process::start(&deployment, &sa_kubeconfig, &dir).await;
    wait_for("claimsync to sync", Duration::from_secs(90), || async {
        let metrics = ops_get(process.ops_port, "/metrics").await?;
        (in_sync(&metrics) && metrics.contains("claimsync_leader 1"))
            .then_some(())
            .ok_or_else(|| tail(&process.log(), 15))
    })
    .await;

    // Two claims; one goes again, through its twin.
    let ns = support::unique("team");
    let labels = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {INSTANCE_LABEL: id, "claimsync.dev/test": "true"}}});
    Api::<Namespace>::all(app.clone())
        .patch(&ns, &apply, &Patch::Apply(&labels))
        .await
        .unwrap();
    for name in ["gone", "kept"] {
        let yaml = cluster_claim_yaml(&ns, name, &support::unique("kc"), &format!("{name}-conn"), "");
        kubectl_apply(&yaml)
            .await
            .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
    }
    let kc = kubernetes_cluster_resource();
    let local = Api::<DynamicObject>::namespaced_with(app.clone(), &ns, &kc);
    let remote = Api::<DynamicObject>::namespaced_with(control_plane.clone(), &claim_ns, &kc);
    for name in ["gone", "kept"] {
        wait_claim(&local, name, &process, ready).await;
        crate::claim_support::wait_secret(&app, &ns, &format!("{name}-conn")).await;
    }
    // A twin written by another app cluster with this cluster id: the claim says NameConflict and claimsync tells
    // the other cluster with an Event on the twin, written with the control plane's Role (deploy/
    // control-plane-rbac.yaml; a refusal would show in the audit check at the end).
    let contested_twin = remote_claim_name("contested", &ns, &id);
    let foreign: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "k8s.starter.org/v1alpha1", "kind": "KubernetesCluster",
        "metadata": {"name": contested_twin, "namespace": claim_ns, "labels": {
            ORIGIN_CLUSTER: id, ORIGIN_NAMESPACE: ns, ORIGIN_NAME: "contested",
            ORIGIN_CLUSTER_UID: "another-app-cluster"}},
        "spec": {"id": support::unique("kc"), "parameters": {"nodes": {"count": 1, "size": "small"}}}
    }))
    .unwrap();
    remote.create(&Default::default(), &foreign).await.unwrap();
    let yaml = cluster_claim_yaml(&ns, "contested", &support::unique("kc"), "contested-conn", "");
    kubectl_apply(&yaml)
        .await
        .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
    wait_claim(&local, "contested", &process, |c| {
        condition(c, "Replicated").is_some_and(|(_, reason)| reason == "NameConflict")
    })
    .await;
    let remote_events = Api::<Event>::namespaced(control_plane.clone(), &claim_ns);
    wait_for(
        "the TwinContested Event on the twin",
        Duration::from_secs(60),
        || async {
            let events = remote_events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            events
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("TwinContested")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(contested_twin.as_str())
                })
                .then_some(())
                .ok_or_else(|| tail(&process.log(), 10))
        },
    )
    .await;
    // Deleting that claim lets go of it and leaves the other cluster's twin alone.
    local.delete("contested", &DeleteParams::default()).await.unwrap();
    wait_gone(
        "the contested claim",
        Duration::from_secs(60),
        &local,
        "contested",
        |c| format!("{:?}", c.finalizers()),
    )
    .await;
    let untouched = remote.get(&contested_twin).await.unwrap();
    assert!(
        untouched.metadata.deletion_timestamp.is_none(),
        "the other cluster's twin was deleted"
    );
    // Other claim kinds of the app cluster (other tests') are outside this account's rights: --claim-groups, as the
    // chart gives run and the hook, leaves them out.
    let status = claimsync(
        &[
            "status".into(),
            format!("--namespace={release_ns}"),
            "--claim-groups=k8s.starter.org".into(),
        ],
        &sa_kubeconfig,
    )
    .await;
    let kept_twin = remote_claim_name("kept", &ns, &id);
    assert!(
        status
            .lines()
            .any(|l| l.contains(" kept ") && l.contains(&kept_twin) && l.contains("Synced")),
        "{status}"
    );
    let gone_twin = remote_claim_name("gone", &ns, &id);
    local.delete("gone", &DeleteParams::default()).await.unwrap();
    wait_gone(
        "the deleted claim's twin",
        Duration::from_secs(60),
        &remote,
        &gone_twin,
        |c| format!("{:?}", c.metadata.deletion_timestamp),
    )
    .await;
    wait_gone("the deleted claim", Duration::from_secs(60), &local, "gone", |c| {
        format!("{:?}", c.finalizers())
    })
    .await;
    // The shim, on the chart's Service, put its CA into the chart's APIService.
    let api_services = Api::<APIService>::all(app.clone());
    wait_for("the APIService's caBundle", Duration::from_secs(30), || async {
        let api_service = api_services.get(API_SERVICE).await.map_err(|e| e.to_string())?;
        let bundle = api_service
            .spec
            .and_then(|s| s.ca_bundle)
            .map(|b| b.0.len())
            .unwrap_or(0);
        (bundle > 0).then_some(()).ok_or_else(|| tail(&process.log(), 10))
    })
    .await;

    // A wrong token, in the Secret the chart renders from Upbound's values: the claim says so, claimsync runs on.
    let host = cp_server.trim_start_matches("https://");
    let connector = example_values(
        "connector-values.yaml",
        &fills(&connector_fills(host, "not-a-valid-token")),
        &dir,
    );
    let rendered = render(&connector, &["spaces.insecureSkipTLSVerify=true"])
        .await
        .unwrap();
    let wrong = find(&rendered, "Secret", "claimsync-control-plane")["stringData"]["kubeconfig"]
        .as_str()
        .unwrap()
        .to_string();
    secrets
        .patch(
            "control-plane-kubeconfig",
            &apply,
            &Patch::Apply(kubeconfig_secret(wrong)),
        )
        .await
        .unwrap();
    // The message says what is wrong: the control plane rejected the credentials (401).
    wait_claim(&local, "kept", &process, |claim| {
        let rejected = condition(claim, "Replicated")
            .is_some_and(|(status, reason)| status == "False" && reason == "CredentialsRejected");
        let message = claim.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Replicated")
            .and_then(|c| c["message"].as_str())
            .unwrap_or_default()
            .to_string();
        rejected && message.contains("rejected claimsync's credentials (401)")
    })
    .await;
    assert!(process.running(), "claimsync stopped:\n{}", tail(&process.log(), 20));

    // The uninstall hook's command, as the hook's ServiceAccount (the Job itself needs a kubelet).
    let hooks = documents(&helm(&["get", "hooks", release, "-n", &release_ns]).await.unwrap());
    let job = find(&hooks, "Job", "claimsync-uninstall");
    let hook_account = job["spec"]["template"]["spec"]["serviceAccountName"].as_str().unwrap();
    let hook_kubeconfig = service_account_kubeconfig(
        &env().app_kubeconfig,
        &release_ns,
        hook_account,
        &dir.join("hook.kubeconfig"),
    )
    .await;
    let said = claimsync(&container_args(job), &hook_kubeconfig).await;
    assert!(said.contains("released 1 KubernetesCluster claim(s)"), "{said}");
    let claim = local.get("kept").await.unwrap();
    assert!(
        !claim.finalizers().iter().any(|f| f.starts_with("claimsync.dev/")),
        "{:?}",
        claim.finalizers()
    );
    let twin = remote.get(&kept_twin).await.unwrap();
    assert!(is_true(&twin, "Ready") && twin.metadata.deletion_timestamp.is_none());
    wait_for("claimsync to stop writing", Duration::from_secs(30), || async {
        let log = process.log();
        log.contains("disconnected (claimsync disconnect)")
            .then_some(())
            .ok_or_else(|| tail(&log, 10))
    })
    .await;

    // Nothing was refused: not in claimsync's log, not in either API server's audit log.
    let log = process.log();
    assert!(!log.to_lowercase().contains("forbidden"), "{log}");
    let _ = process.child.kill().await;
    assert_no_forbidden_writes("app", &format!("system:serviceaccount:{release_ns}:{release}"));
    assert_no_forbidden_writes("app", &format!("system:serviceaccount:{release_ns}:{hook_account}"));
    assert_no_forbidden_writes("controlplane", &format!("system:serviceaccount:{claim_ns}:claimsync"));

    // The uninstall itself (the hook was run above): the APIService goes with the chart.
    helm(&["uninstall", release, "-n", &release_ns, "--no-hooks", "--wait"])
        .await
        .unwrap_or_else(|e| panic!("helm uninstall: {e}"));
    wait_gone(
        "the APIService",
        Duration::from_secs(30),
        &api_services,
        API_SERVICE,
        |a| format!("{:?}", a.metadata.deletion_timestamp),
    )
    .await;
    // While it was there and unavailable, namespace deletions failed their discovery and backed off: they must be
    // under way again before another test (one that counts writes) runs.
    wait_for(
        "namespace deletions past discovery again",
        Duration::from_secs(120),
        || async {
            let namespaces = Api::<Namespace>::all(app.clone())
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
    let accounts = Api::<ServiceAccount>::namespaced(app.clone(), &release_ns);
    assert!(accounts.get_opt(release).await.unwrap().is_none());
    eprintln!(
        "install test: install to uninstall took {:?} (exclusive)",
        started.elapsed()
    );
    drop(exclusive);

    // The twin stays; this test's objects go.
    let _shared = support::env_shared().await;
    assert!(remote.get_opt(&kept_twin).await.unwrap().is_some());
    for (client, namespace) in [(&app, &ns), (&app, &release_ns), (&control_plane, &claim_ns)] {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(namespace, &DeleteParams::default())
            .await;
    }
}
