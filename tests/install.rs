//! The install story against the real env: the chart lints, renders both credential forms and refuses bad values
//! with messages that name the key; installed, claimsync runs with exactly its ServiceAccount's rights (and the
//! control plane Role) through a claim's whole life, a contested twin, a wrong token, and the uninstall hook's
//! disconnect; the shim fills in the chart's APIService, which the uninstall removes. Each installed test has a
//! release of its own (`helm_support::Installation`): without the shim they run beside other tests, with it alone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use claimsync::model::naming::remote_claim_name;
use claimsync::model::vocabulary::{ORIGIN_CLUSTER, ORIGIN_CLUSTER_UID, ORIGIN_NAME, ORIGIN_NAMESPACE};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use serde_json::{Value, json};

use crate::claim_support::{apply_claim, condition, is_true};
use crate::helm_support::{
    Installation, RELEASE, chart, claimsync, container_args, example_values, find, helm, render, scratch,
};
use crate::instance::tail;
use crate::shim_support::API_SERVICE;
use crate::support::{self, wait_for, wait_gone};

const TOKEN: &str = "upbound-token-0123456789";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_claimsync_replicates_claims_with_only_its_accounts_rights() {
    let _env = support::env_shared().await;
    let installation = Installation::without_shim().await;
    let process = installation.start().await;
    // Two claims; one goes again, through its twin.
    let ns = installation.ready_claims(&process, &["gone", "kept"]).await;
    let (local, remote) = (installation.local(&ns), installation.remote());
    // Other claim kinds of the app cluster (other tests') are outside this account's rights: --claim-groups, as the
    // chart gives run and the hook, leaves them out.
    let status = claimsync(
        &[
            "status".into(),
            format!("--namespace={}", installation.release_ns),
            "--claim-groups=k8s.starter.org".into(),
        ],
        &process.kubeconfig,
    )
    .await;
    let kept_twin = remote_claim_name("kept", &ns, &installation.id);
    assert!(
        status
            .lines()
            .any(|l| l.contains(" kept ") && l.contains(&kept_twin) && l.contains("Synced")),
        "{status}"
    );
    let gone_twin = remote_claim_name("gone", &ns, &installation.id);
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
    // A namespaced XR (Crossplane v2): its group in claimGroups is all the chart's RBAC needs.
    if support::env().crossplane_v2() {
        let xrs = Api::<DynamicObject>::namespaced_with(installation.app.clone(), &ns, &crate::xrs::web_app_resource());
        crate::xrs::apply_web_app(
            &crate::support::env().app_kubeconfig,
            &crate::xrs::web_app_yaml(&ns, "web", "nginx:1.27", ""),
        )
        .await;
        process
            .wait_claim(&xrs, "web", |xr| {
                condition(xr, "Replicated").is_some_and(|(status, _)| status == "True")
                    && condition(xr, "Ready").is_some_and(|(status, _)| status == "True")
            })
            .await;
        crate::claim_support::wait_secret(&installation.app, &ns, "web-conn").await;
    }
    installation.assert_nothing_refused(process, &[RELEASE], true).await;
    installation.remove_namespaces().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twin_another_cluster_wrote_is_contested_and_left_alone() {
    let _env = support::env_shared().await;
    let installation = Installation::without_shim().await;
    let process = installation.start().await;
    let ns = installation.team_namespace().await;
    let (local, remote) = (installation.local(&ns), installation.remote());
    // A twin written by another app cluster with this cluster id: the claim says NameConflict and claimsync tells
    // the other cluster with an Event on the twin, written with the control plane's Role (deploy/
    // control-plane-rbac.yaml; a refusal would show in the audit check at the end).
    let id = &installation.id;
    let contested_twin = remote_claim_name("contested", &ns, id);
    let foreign: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "k8s.starter.org/v1alpha1", "kind": "KubernetesCluster",
        "metadata": {"name": contested_twin, "namespace": installation.claim_ns, "labels": {
            ORIGIN_CLUSTER: id, ORIGIN_NAMESPACE: ns, ORIGIN_NAME: "contested",
            ORIGIN_CLUSTER_UID: "another-app-cluster"}},
        "spec": {"id": support::unique("kc"), "parameters": {"nodes": {"count": 1, "size": "small"}}}
    }))
    .unwrap();
    remote.create(&Default::default(), &foreign).await.unwrap();
    apply_claim(&ns, "contested").await;
    process
        .wait_claim(&local, "contested", |c| {
            condition(c, "Replicated").is_some_and(|(_, reason)| reason == "NameConflict")
        })
        .await;
    let remote_events = Api::<Event>::namespaced(installation.control_plane.clone(), &installation.claim_ns);
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
    installation.assert_nothing_refused(process, &[RELEASE], true).await;
    installation.remove_namespaces().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_in_the_rendered_secret_is_named_on_the_claim_and_claimsync_runs_on() {
    let _env = support::env_shared().await;
    let installation = Installation::without_shim().await;
    let mut process = installation.start().await;
    let ns = installation.ready_claims(&process, &["kept"]).await;
    // A wrong token, in the Secret the chart renders from Upbound's values: the claim says so, claimsync runs on.
    let host = installation.cp_server.trim_start_matches("https://");
    let connector = example_values(
        "connector-values.yaml",
        &fills(&connector_fills(host, "not-a-valid-token")),
        &installation.dir,
    );
    let rendered = render(&connector, &["spaces.insecureSkipTLSVerify=true"])
        .await
        .unwrap();
    let wrong = find(&rendered, "Secret", "claimsync-control-plane")["stringData"]["kubeconfig"]
        .as_str()
        .unwrap()
        .to_string();
    installation.set_control_plane_kubeconfig(wrong).await;
    // The message says what is wrong: the control plane rejected the credentials (401).
    process
        .wait_claim(&installation.local(&ns), "kept", |claim| {
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
    installation.assert_nothing_refused(process, &[RELEASE], true).await;
    installation.remove_namespaces().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uninstall_hook_lets_go_of_every_claim_and_the_uninstall_leaves_their_twins() {
    let _env = support::env_shared().await;
    let mut installation = Installation::without_shim().await;
    let process = installation.start().await;
    let ns = installation.ready_claims(&process, &["kept"]).await;
    let (local, remote) = (installation.local(&ns), installation.remote());
    let kept_twin = remote_claim_name("kept", &ns, &installation.id);
    let (said, hook_account) = installation.run_uninstall_hook().await;
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
    installation
        .assert_nothing_refused(process, &[RELEASE, &hook_account], true)
        .await;
    // The uninstall itself (the hook was run above): the twin stays.
    installation.uninstall().await;
    assert!(remote.get_opt(&kept_twin).await.unwrap().is_some());
    installation.remove_namespaces().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shim_puts_its_ca_into_the_charts_api_service() {
    let (installation, exclusive) = Installation::with_shim().await;
    let process = installation.start().await;
    let api_services = Api::<APIService>::all(installation.app.clone());
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
    installation.assert_nothing_refused(process, &[RELEASE], false).await;
    installation.uninstall_exclusive(exclusive).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uninstall_removes_the_api_service_and_namespace_deletions_resume() {
    let (installation, exclusive) = Installation::with_shim().await;
    // `uninstall` checks that the APIService and the ServiceAccount are gone and namespace deletions under way.
    installation.uninstall_exclusive(exclusive).await;
}
