//! The aggregated API claimsync.dev/v1alpha1 through the app cluster's real aggregator, with kubectl as a user
//! runs it, one test per behaviour: discovery, get/list/tables, watches, explain, RBAC, refusal of anyone but
//! the aggregator, answers while the control plane is down, and what no running replica does to namespace
//! deletion. Each starts its own claimsync; those that register the one APIService take turns (`Turn`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use crate::claim_support::{apply_claim, column};
use crate::instance::Instance;
use crate::shim_support::{
    Identity, SERVICE, apply_alphas, availability, direct_get, kubectl, reader_of, shim_port, start_registered,
    synced_claims, wait_available, wait_phase,
};
use crate::support::{self, env, wait_for};
use claimsync::model::naming::remote_claim_name;

/// `kubectl get -w` running in the background; its lines are read with deadlines.
struct KubectlWatch {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl KubectlWatch {
    fn start(args: &[&str]) -> KubectlWatch {
        let mut child = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&env().app_kubeconfig)
            .args(args)
            .arg("--request-timeout=180s")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        KubectlWatch {
            _child: child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line that satisfies `want`, within `timeout`.
    async fn until(&mut self, what: &str, timeout: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => panic!(
                    "kubectl get -w ended before {what}; it printed:\n{}",
                    self.seen.join("\n")
                ),
                Err(_) => panic!(
                    "timed out waiting for {what}; kubectl get -w printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_the_generated_certificate() {
    let _env = support::env_shared().await;
    let app = support::app().await;
    let mut instance = Instance::new("shim-discovery").await;

    // Start, register, and time how long until discovery answers through the aggregator.
    let served = start_registered(&mut instance).await;
    let discovery = &served.discovery;
    eprintln!(
        "shim figures: listening {:?} after start; discovery through the aggregator {:?} after start",
        served.listening, served.discovered
    );
    assert!(
        discovery.contains("claimkinds") && discovery.contains("ckind"),
        "{discovery}"
    );
    assert!(
        discovery.contains("csync") && discovery.contains("ClaimSync"),
        "{discovery}"
    );

    // The APIService trusts the CA claimsync generated into its Secret, and the aggregator accepted the serving
    // certificate for claimsync.<namespace>.svc (Available=True).
    let secret = Api::<Secret>::namespaced(app.clone(), &instance.own_namespace)
        .get("claimsync-shim-tls")
        .await
        .expect("the generated certificate's Secret");
    let ca = secret.data.unwrap()["ca.crt"].0.clone();
    let api_service = Api::<APIService>::all(app.clone())
        .get(crate::shim_support::API_SERVICE)
        .await
        .unwrap();
    assert_eq!(
        api_service.spec.unwrap().ca_bundle.unwrap().0,
        ca,
        "caBundle patched to the generated CA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_lists_and_tables() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("shim-get").await;
    let ns = instance.namespace("shim-a").await;
    let ns2 = instance.namespace("shim-b").await;
    let _served = start_registered(&mut instance).await;

    // Claims: two kinds share the name "alpha" in one namespace.
    apply_alphas(&ns).await;
    apply_claim(&ns2, "beta").await;
    wait_phase(&ns, &["alpha"], "Synced", &instance).await;
    wait_phase(&ns2, &["beta"], "Synced", &instance).await;

    // The journal adds what only it knows: the twin's resourceVersion and when the claim was last synced.
    let enriched = wait_for(
        "the journal's facts on a claimsync",
        Duration::from_secs(30),
        || async {
            let out = kubectl(&["get", "claimsync", "beta", "-n", &ns2, "-o", "json"]).await?;
            let object: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            let status = &object["status"];
            (status["remoteResourceVersion"].is_string() && status["lastSyncTime"].is_string())
                .then(|| object.clone())
                .ok_or(out)
        },
    )
    .await;
    assert_eq!(
        enriched["spec"]["remoteName"],
        remote_claim_name("beta", &ns2, &instance.id)
    );
    assert_eq!(enriched["spec"]["remoteNamespace"], instance.claim_namespace.as_str());

    let kinds = kubectl(&["get", "claimkinds", "-o", "wide"]).await.unwrap();
    let names = column(&kinds, "NAME");
    let row = names
        .iter()
        .position(|n| n == "kubernetesclusters.k8s.starter.org")
        .unwrap_or_else(|| panic!("{kinds}"));
    assert_eq!(column(&kinds, "ESTABLISHED")[row], "true", "{kinds}");
    assert_eq!(column(&kinds, "FAMILY")[row], "Claim", "{kinds}");
    assert_eq!(column(&kinds, "CLAIMS")[row], "2", "{kinds}");
    assert_eq!(column(&kinds, "REPLICATED")[row], "2", "{kinds}");
    assert_eq!(
        column(&kinds, "XRD")[row],
        "xkubernetesclusters.k8s.starter.org",
        "{kinds}"
    );

    let table = kubectl(&["get", "claimsyncs", "-A"]).await.unwrap();
    eprintln!("shim transcript: kubectl get claimsyncs -A\n{table}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAMESPACE", "NAME", "KIND", "PHASE", "REMOTE", "LAST", "SYNC", "AGE"],
        "{table}"
    );
    let rows: Vec<(String, String, String, String, String)> = (0..column(&table, "NAME").len())
        .map(|i| {
            (
                column(&table, "NAMESPACE")[i].clone(),
                column(&table, "NAME")[i].clone(),
                column(&table, "KIND")[i].clone(),
                column(&table, "PHASE")[i].clone(),
                column(&table, "REMOTE")[i].clone(),
            )
        })
        .collect();
    let remote = |name: &str, namespace: &str| remote_claim_name(name, namespace, &instance.id);
    for want in [
        (&ns, "alpha", "KubernetesCluster"),
        (&ns, "alpha", "PostgreSQLInstance"),
        (&ns2, "beta", "KubernetesCluster"),
    ] {
        let expected = (
            want.0.clone(),
            want.1.to_string(),
            want.2.to_string(),
            "Synced".to_string(),
            remote(want.1, want.0),
        );
        assert!(rows.contains(&expected), "{expected:?} in\n{table}");
    }
    assert_eq!(rows.len(), 3, "only this instance's namespaces:\n{table}");

    // A shared name: the plain GET says which qualified names to use; those and -l tell the kinds apart.
    let ambiguous = kubectl(&["get", "claimsync", "alpha", "-n", &ns]).await.unwrap_err();
    assert!(
        ambiguous.contains("alpha.kubernetescluster.k8s.starter.org")
            && ambiguous.contains("alpha.postgresqlinstance.db.starter.org"),
        "{ambiguous}"
    );
    let one: Value = serde_json::from_str(
        &kubectl(&[
            "get",
            "claimsync",
            "alpha.postgresqlinstance.db.starter.org",
            "-n",
            &ns,
            "-o",
            "json",
        ])
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(one["spec"]["claimRef"]["kind"], "PostgreSQLInstance");
    let labelled = kubectl(&["get", "csync", "-n", &ns, "-l", "claimsync.dev/kind=KubernetesCluster"])
        .await
        .unwrap();
    assert_eq!(column(&labelled, "KIND"), ["KubernetesCluster"], "{labelled}");
    assert_eq!(
        kubectl(&["get", "claimsync", "beta", "-n", &ns2, "-o", "jsonpath={.status.phase}"])
            .await
            .unwrap(),
        "Synced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_show_new_and_changed_claims() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("shim-watch").await;
    let ns2 = instance.namespace("shim-b").await;
    let _served = start_registered(&mut instance).await;
    synced_claims(&ns2, &["beta"], &instance).await;

    // Watches: a new claim appears in `kubectl get -w`; a change to one shows in `kubectl get -w NAME`.
    let mut all = KubectlWatch::start(&["get", "claimsyncs", "-n", &ns2, "-w"]);
    all.until("the existing claimsync", Duration::from_secs(30), |l| {
        l.contains("beta")
    })
    .await;
    apply_claim(&ns2, "gamma").await;
    all.until("the new claimsync to be Synced", Duration::from_secs(90), |l| {
        l.starts_with("gamma ") && l.contains("Synced")
    })
    .await;
    let mut one = KubectlWatch::start(&["get", "claimsync", "gamma", "-n", &ns2, "-w", "-o", "wide"]);
    let before = one
        .until("gamma's row", Duration::from_secs(30), |l| l.starts_with("gamma "))
        .await;
    kubectl(&["label", "kubernetescluster", "gamma", "-n", &ns2, "shim-test=changed"])
        .await
        .unwrap();
    let after = one
        .until(
            "gamma's row with a new local resourceVersion",
            Duration::from_secs(60),
            |l| l.starts_with("gamma ") && l != before,
        )
        .await;
    eprintln!("shim transcript: kubectl get claimsync gamma -w -o wide\n{before}\n{after}");
    drop((all, one));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_reads_the_openapi_document() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("shim-explain").await;
    let _served = start_registered(&mut instance).await;

    // The aggregator merges a new APIService's OpenAPI some moments after it is Available.
    let explain = wait_for(
        "kubectl explain to find claimsyncs",
        Duration::from_secs(60),
        || async { kubectl(&["explain", "claimsyncs.status"]).await },
    )
    .await;
    eprintln!(
        "shim transcript: kubectl explain claimsyncs.status (head)\n{}",
        explain.lines().take(8).collect::<Vec<_>>().join("\n")
    );
    for words in [
        "ClaimSync",
        "claimsync.dev",
        "phase",
        "pendingPatch",
        "lastSyncTime",
        "remoteResourceVersion",
    ] {
        assert!(explain.contains(words), "{words} in\n{explain}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_decides_who_sees_which_namespace() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("shim-rbac").await;
    let ns = instance.namespace("shim-a").await;
    let ns2 = instance.namespace("shim-b").await;
    let _served = start_registered(&mut instance).await;
    apply_alphas(&ns).await;
    wait_phase(&ns, &["alpha"], "Synced", &instance).await;

    // RBAC: no rights, Forbidden; a namespaced Role, that namespace only.
    let reader = reader_of(&ns, &instance).await;
    let nobody = format!("--as={}-nobody", instance.id);
    let as_reader = format!("--as={reader}");
    let refused = kubectl(&["get", "claimsyncs", "-n", &ns, &nobody]).await.unwrap_err();
    assert!(refused.contains("Forbidden"), "{refused}");
    let seen = wait_for("the reader's Role to apply", Duration::from_secs(30), || async {
        kubectl(&["get", "claimsyncs", "-n", &ns, &as_reader]).await
    })
    .await;
    assert_eq!(column(&seen, "NAME"), ["alpha", "alpha"], "{seen}");
    for elsewhere in [vec!["-n", ns2.as_str()], vec!["-A"]] {
        let mut args = vec!["get", "claimsyncs", as_reader.as_str()];
        args.extend(elsewhere);
        let refused = kubectl(&args).await.unwrap_err();
        assert!(refused.contains("Forbidden"), "{args:?}: {refused}");
    }
}

/// Needs no aggregator: the requests go straight to the shim, which asks the app cluster's RBAC itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_requests_need_the_front_proxy() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("shim-direct").await;
    let ns = instance.namespace("shim-a").await;
    let ns2 = instance.namespace("shim-b").await;
    instance.start_with(&["--shim-addr", "127.0.0.1:0"]).await;
    let port = shim_port(&instance).await;
    apply_alphas(&ns).await;
    let reader = reader_of(&ns, &instance).await;
    let proxy_for_wait = Identity::front_proxy();
    wait_for(
        "the reader's Role to apply, and both claims to be served",
        Duration::from_secs(60),
        || async {
            let path = format!("/apis/claimsync.dev/v1alpha1/namespaces/{ns}/claimsyncs");
            let got = direct_get(port, &path, Some(&proxy_for_wait), &[("X-Remote-User", &reader)]).await;
            let listed: Value = serde_json::from_str(&got.body).map_err(|e| format!("{}: {e}", got.status))?;
            let items = listed["items"].as_array().map_or(0, Vec::len);
            (got.status == 200 && items == 2)
                .then_some(())
                .ok_or(format!("{} with {items} items: {}", got.status, got.body))
        },
    )
    .await;

    // Straight to the shim, bypassing the aggregator: no certificate or a foreign one is 401; with the front
    // proxy's certificate the shim's own SubjectAccessReview decides, per namespace.
    let list_ns = format!("/apis/claimsync.dev/v1alpha1/namespaces/{ns}/claimsyncs");
    let list_ns2 = format!("/apis/claimsync.dev/v1alpha1/namespaces/{ns2}/claimsyncs");
    let list_all = "/apis/claimsync.dev/v1alpha1/claimsyncs";
    let proxy = Identity::front_proxy();
    let impostor = Identity::impostor();
    let nobody_user = format!("{}-nobody", instance.id);
    // (path, client certificate, headers, status)
    type Case<'a> = (&'a str, Option<&'a Identity>, Vec<(&'a str, &'a str)>, u16);
    let cases: [Case<'_>; 8] = [
        (
            list_ns.as_str(),
            None,
            vec![("X-Remote-User", "admin"), ("X-Remote-Group", "system:masters")],
            401,
        ),
        (
            list_ns.as_str(),
            Some(&impostor),
            vec![("X-Remote-User", "admin"), ("X-Remote-Group", "system:masters")],
            401,
        ),
        (list_ns.as_str(), Some(&proxy), vec![], 401),
        (list_ns.as_str(), Some(&proxy), vec![("X-Remote-User", &reader)], 200),
        (list_ns2.as_str(), Some(&proxy), vec![("X-Remote-User", &reader)], 403),
        (list_all, Some(&proxy), vec![("X-Remote-User", &reader)], 403),
        (
            list_ns.as_str(),
            Some(&proxy),
            vec![("X-Remote-User", &nobody_user)],
            403,
        ),
        ("/healthz", None, vec![], 200),
    ];
    for (path, identity, headers, want) in cases {
        let got = direct_get(port, path, identity, &headers).await;
        assert_eq!(got.status, want, "{path} {headers:?}: {}", got.body);
    }
    let listed: Value = serde_json::from_str(
        &direct_get(port, &list_ns, Some(&proxy), &[("X-Remote-User", &reader)])
            .await
            .body,
    )
    .unwrap();
    let namespaces: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, [ns.as_str(), ns.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_while_the_control_plane_is_stopped() {
    let _exclusive = support::env_exclusive().await;
    let mut instance = Instance::new("shim-outage").await;
    let ns2 = instance.namespace("shim-b").await;
    let _served = start_registered(&mut instance).await;
    synced_claims(&ns2, &["beta", "gamma"], &instance).await;

    // The control plane stops: everything still answers, and says Offline.
    env().script(&["stop", "controlplane"]);
    let outage = async {
        wait_phase(&ns2, &["beta", "gamma"], "Offline", &instance).await;
        kubectl(&["get", "claimkinds"])
            .await
            .expect("claimkinds while the control plane is down");
        kubectl(&["api-resources", "--api-group=claimsync.dev"])
            .await
            .expect("discovery while the control plane is down");
        let table = kubectl(&["get", "claimsyncs", "-n", &ns2]).await.unwrap();
        eprintln!("shim transcript: control plane stopped: kubectl get claimsyncs -n {ns2}\n{table}");
    };
    outage.await;
    env().script(&["start", "controlplane"]);
    wait_phase(&ns2, &["beta", "gamma"], "Synced", &instance).await;
}

/// While no replica serves the APIService every namespace deletion in the app cluster waits: the env is this
/// test's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_replica_holds_namespace_deletion_until_one_returns() {
    let _exclusive = support::env_exclusive().await;
    let app = support::app().await;
    let mut instance = Instance::new("shim-absent").await;
    let ns = instance.namespace("shim-a").await;
    let served = start_registered(&mut instance).await;
    let port = served.port;
    synced_claims(&ns, &["alpha"], &instance).await;

    // No replica runs: what users see, and what it does to namespace deletion.
    instance.stop().await;
    let stopped = Instant::now();
    let unavailable = kubectl(&["get", "claimsyncs", "-n", &ns]).await.unwrap_err();
    wait_available(&app, "False", Duration::from_secs(90)).await;
    let noticed = stopped.elapsed();
    let api_resources = kubectl(&["api-resources"]).await;
    let get_kinds = kubectl(&["get", "claimkinds"]).await;
    let get_claims = kubectl(&["get", "kubernetesclusters", "-n", &ns]).await;
    eprintln!(
        "shim figures: no replica: get claimsyncs at once -> {unavailable}; APIService Available=False after {noticed:?}; \
         api-resources -> {}; get claimkinds -> {:?}; get kubernetesclusters -> {}",
        match &api_resources {
            Ok(out) if out.contains("claimsync.dev") => "ok, lists claimsync.dev".to_string(),
            Ok(_) => "ok (exit 0), without claimsync.dev".to_string(),
            Err(e) => e.clone(),
        },
        get_kinds.as_ref().map(|_| "ok").map_err(|e| e.trim().to_string()),
        if get_claims.is_ok() { "ok" } else { "error" },
    );
    assert!(get_claims.is_ok(), "claims themselves stay readable: {get_claims:?}");
    assert!(get_kinds.is_err(), "claimkinds cannot be answered without a replica");

    let namespaces = Api::<Namespace>::all(app.clone());
    let doomed = support::namespace(&app, "shim-doomed").await;
    namespaces.delete(&doomed, &DeleteParams::default()).await.unwrap();
    wait_for(
        "namespace deletion to wait for discovery",
        Duration::from_secs(60),
        || async {
            let namespace = namespaces.get(&doomed).await.map_err(|e| e.to_string())?;
            let failing = namespace
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "NamespaceDeletionDiscoveryFailure" && c.status == "True");
            failing
                .map(|c| {
                    eprintln!(
                        "shim figures: no replica: namespace {doomed} stays Terminating: {}",
                        c.message.unwrap_or_default()
                    )
                })
                .ok_or_else(|| "no discovery failure yet".to_string())
        },
    )
    .await;

    let restarted = Instant::now();
    instance
        .start_with(&["--shim-addr", &format!("127.0.0.1:{port}")])
        .await;
    wait_available(&app, "True", Duration::from_secs(90)).await;
    let available = restarted.elapsed();
    support::wait_gone(
        "the Terminating namespace to go",
        Duration::from_secs(180),
        &namespaces,
        &doomed,
        |ns| format!("{:?}", ns.status),
    )
    .await;
    eprintln!(
        "shim figures: restart: APIService Available after {available:?}; the Terminating namespace gone after {:?}",
        restarted.elapsed()
    );
    assert!(availability(&app).await.0 == "True");
}

/// A serving certificate from a given Secret is served, and its replacement is served without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_certificate_rotates_without_a_restart() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("shim-cert").await;
    let secrets = Api::<Secret>::namespaced(instance.app.clone(), &instance.own_namespace);
    let name = format!("{SERVICE}.{}.svc", instance.own_namespace);
    let issue = || {
        let params = rcgen::CertificateParams::new(vec![name.clone()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    };
    let secret = |cert: &str, key: &str| -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": "given-tls"}, "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": cert, "tls.key": key},
        }))
        .unwrap()
    };
    let (cert, key, first) = issue();
    secrets
        .create(&PostParams::default(), &secret(&cert, &key))
        .await
        .unwrap();

    let reference = format!("{}/given-tls", instance.own_namespace);
    instance
        .start_with(&["--shim-addr", "127.0.0.1:0", "--shim-cert-secret", &reference])
        .await;
    let port = shim_port(&instance).await;
    assert_eq!(direct_get(port, "/healthz", None, &[]).await.server_cert, first);

    let (cert, key, second) = issue();
    secrets
        .patch(
            "given-tls",
            &PatchParams::default(),
            &Patch::Merge(&json!({"stringData": {"tls.crt": cert, "tls.key": key}})),
        )
        .await
        .unwrap();
    wait_for("the new certificate to be served", Duration::from_secs(30), || async {
        let served = direct_get(port, "/healthz", None, &[]).await.server_cert;
        (served == second).then_some(()).ok_or("still the old one".to_string())
    })
    .await;
    assert!(
        secrets.get_opt("claimsync-shim-tls").await.unwrap().is_none(),
        "nothing is generated when a certificate is given"
    );
    instance.stop().await;

    let (code, stderr) = instance
        .run_to_exit(&["--shim-addr", "127.0.0.1:0", "--shim-cert-secret", "no-slash"])
        .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--shim-cert-secret \"no-slash\": want <namespace>/<name>"),
        "{stderr}"
    );
    let missing = format!("{}/absent", instance.own_namespace);
    let (code, stderr) = instance
        .run_to_exit(&["--shim-addr", "127.0.0.1:0", "--shim-cert-secret", &missing])
        .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("absent") && stderr.contains("not found"), "{stderr}");
}
