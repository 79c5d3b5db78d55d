//! Safety against accidents in the app cluster: a deleted local CRD, a changed cluster id, a namespace leaving the
//! selector, a withdrawn kind, writes from stale reads, failed catalog steps and a claim namespace that is briefly
//! missing. Each test fails on a claimsync that lets the accident destroy, duplicate or strand something.

use std::time::Duration;

use claimsync::model::conditions::{Reason, Replicated};
use claimsync::model::downward::LocalDown;
use claimsync::model::kind::KindFamily;
use claimsync::model::naming::remote_claim_name;
use claimsync::sync::claims::status::{set_replicated, write_down, write_status};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Map, json};

use crate::claim_support::{
    apply_claim, condition, kubectl_apply, ready_instance, wait_event, wait_ready, wait_reason,
};
use crate::instance::{INSTANCE_LABEL, Instance, tail};
use crate::platform_support::{TestKind, wait_claim_crd_gone};
use crate::support::{self, env, wait_for};
use crate::testenv_control_plane::kubernetes_cluster_resource;

/// Creates a claim of a kind whose CRD was just established, retrying while the API server does not serve the
/// resource yet.
async fn create_claim(claims: &Api<DynamicObject>, claim: &DynamicObject) {
    wait_for("the claim to be stored", Duration::from_secs(30), || async {
        match claims.create(&PostParams::default(), claim).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}

/// The uids of a kind's composite resources on the control plane.
async fn composite_uids(kind: &TestKind, control_plane: &Client) -> Vec<String> {
    let mut uids: Vec<String> = kind
        .composites(control_plane)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|c| c.uid())
        .collect();
    uids.sort();
    uids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_local_crd_takes_its_claims_but_not_their_twins() {
    deleted_local_crd(KindFamily::Claim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_local_crd_takes_its_xrs_but_not_their_twins() {
    if support::env().crossplane_v2() {
        deleted_local_crd(KindFamily::NamespacedXr).await;
    }
}

async fn deleted_local_crd(family: KindFamily) {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("crddel").await;
    instance.start().await;
    let ns = instance.namespace("crddel").await;
    let kind = TestKind::offer_of(family, &instance.control_plane, "crddel", "Widget", json!({})).await;
    let first_crd = kind.wait_local(&instance.app).await;
    let claims = kind.claims(&instance.app, &ns);
    // An XR asks for a connection Secret: the copy made for it must not block the XR applied again.
    let w1 = || {
        let mut w1 = kind.claim(&ns, "w1");
        if family == KindFamily::NamespacedXr {
            w1.data["spec"]["writeConnectionSecretToRef"] = json!({"name": "w1-conn"});
        }
        w1
    };
    create_claim(&claims, &w1()).await;
    wait_ready(&claims, "w1", &instance).await;
    if family == KindFamily::NamespacedXr {
        crate::claim_support::wait_secret(&instance.app, &ns, "w1-conn").await;
    }
    let remote = Api::<DynamicObject>::namespaced_with(
        instance.control_plane.clone(),
        &instance.claim_namespace,
        &kind.resource,
    );
    let twin_name = kind.remote_name("w1", &ns, &instance.id);
    let twin = remote.get(&twin_name).await.unwrap();
    let composites = composite_uids(&kind, &instance.control_plane).await;
    assert_eq!(composites.len(), 1, "{composites:?}");

    // Someone deletes the CRD in the app cluster, which deletes every claim of the kind with it.
    env()
        .kubectl(
            &env().app_kubeconfig,
            &["delete", "crd", &kind.crd_name, "--wait=false"],
        )
        .await
        .unwrap();
    let first_uid = first_crd["metadata"]["uid"].as_str().unwrap().to_string();
    wait_for("the local CRD to be put back", Duration::from_secs(120), || async {
        match kind.local_crd(&instance.app).await {
            Some(crd)
                if crd.uid().as_deref() != Some(first_uid.as_str()) && crd.metadata.deletion_timestamp.is_none() =>
            {
                Ok(())
            }
            other => Err(format!(
                "CRD uid {:?}\n{}",
                other.and_then(|c| c.uid()),
                tail(&instance.log(), 8)
            )),
        }
    })
    .await;
    kind.wait_local(&instance.app).await;
    wait_event(&instance.app, &ns, "w1", "LocalCRDDeleted").await;
    let kept = remote.get(&twin_name).await.unwrap();
    assert_eq!(kept.uid(), twin.uid(), "the twin is the same object");
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "the twin is not being deleted"
    );
    assert_eq!(composite_uids(&kind, &instance.control_plane).await, composites);

    // Applying the claim again adopts its twin in place: no second composite; and its connection Secret, made for
    // the claim before, is taken over.
    create_claim(&claims, &w1()).await;
    let again = wait_ready(&claims, "w1", &instance).await;
    if family == KindFamily::NamespacedXr {
        let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(instance.app.clone(), &ns);
        wait_for(
            "the Secret to name the claim applied again",
            Duration::from_secs(60),
            || async {
                let secret = secrets.get("w1-conn").await.map_err(|e| e.to_string())?;
                let owner = secret.owner_references().first().map(|r| r.uid.clone());
                (owner == again.uid())
                    .then_some(())
                    .ok_or(format!("owned by {owner:?}"))
            },
        )
        .await;
    }
    assert_eq!(remote.get(&twin_name).await.unwrap().uid(), twin.uid());
    assert_eq!(composite_uids(&kind, &instance.control_plane).await, composites);
    kind.withdraw(&instance.control_plane).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_id_is_pinned_once_chosen() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("pin").await;
    instance.start().await;
    instance.stop().await;
    let records = Api::<ConfigMap>::namespaced(instance.app.clone(), &instance.own_namespace);
    let record = records.get("claimsync-identity").await.unwrap();
    assert_eq!(record.data.unwrap()["clusterID"], instance.id);

    let id = instance.id.clone();
    let refused = |code: i32, stderr: &str, other: &str| {
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains(other) && stderr.contains(&id), "{stderr}");
        assert!(stderr.contains(&format!("--cluster-id {id}")), "{stderr}");
    };
    // A different --cluster-id, with the journal and without it.
    let (code, stderr) = instance.run_to_exit(&["--cluster-id", "another-id"]).await;
    refused(code, &stderr, "another-id");
    std::fs::remove_dir_all(&instance.state_dir).unwrap();
    let (code, stderr) = instance.run_to_exit(&["--cluster-id", "another-id"]).await;
    refused(code, &stderr, "another-id");
    // The default id, the kube-system uid, is another id too.
    let kube_system = Api::<Namespace>::all(instance.app.clone())
        .get("kube-system")
        .await
        .unwrap();
    let (code, stderr) = instance.run_to_exit(&["--no-cluster-id"]).await;
    refused(code, &stderr, &kube_system.uid().unwrap());
    assert!(stderr.contains("kube-system"), "{stderr}");

    // The same id, given explicitly, is fine; it records itself in the journal again.
    instance.start().await;
    instance.stop().await;
    // The claim namespace is pinned beside it: another one would give every claim a second twin.
    let pinned = instance.claim_namespace.clone();
    assert_eq!(
        records.get("claimsync-identity").await.unwrap().data.unwrap()["claimNamespace"],
        pinned
    );
    let other = support::namespace(&instance.control_plane, "pin-other").await;
    instance.claim_namespace = other.clone();
    let (code, stderr) = instance.run_to_exit(&[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&other) && stderr.contains(&pinned), "{stderr}");
    assert!(stderr.contains(&format!("--claim-namespace {pinned}")), "{stderr}");
    instance.claim_namespace = pinned;
    // The record in the cluster deleted, the journal still knows.
    records
        .delete("claimsync-identity", &DeleteParams::default())
        .await
        .unwrap();
    let (code, stderr) = instance.run_to_exit(&["--cluster-id", "another-id"]).await;
    refused(code, &stderr, "another-id");
    assert!(stderr.contains("journal"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_that_leave_the_selector_are_released_and_joining_ones_synced_at_once() {
    let _env = support::env_shared().await;
    let (instance, ns, local) = ready_instance("sel", "leaver").await;
    let kc = kubernetes_cluster_resource();
    let namespaces = Api::<Namespace>::all(instance.app.clone());
    // On Crossplane v2, a namespaced XR beside the claim goes the same way.
    let v2 = env().crossplane_v2();
    let local_xrs = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &crate::xrs::web_app_resource());
    if v2 {
        crate::xrs::apply_web_app(
            &crate::support::env().app_kubeconfig,
            &crate::xrs::web_app_yaml(&ns, "leaving-xr", "nginx:1.27", ""),
        )
        .await;
        wait_ready(&local_xrs, "leaving-xr", &instance).await;
    }

    // The namespace leaves the selector: the claim is let go, its twin stays.
    let unlabel = json!({"metadata": {"labels": {INSTANCE_LABEL: null}}});
    namespaces
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .unwrap();
    wait_reason(&local, "leaver", "NotSelected", &instance).await;
    wait_for(
        "the claim's finalizer to be released",
        Duration::from_secs(60),
        || async {
            let claim = local.get("leaver").await.map_err(|e| e.to_string())?;
            claim
                .finalizers()
                .is_empty()
                .then_some(())
                .ok_or(format!("finalizers {:?}", claim.finalizers()))
        },
    )
    .await;
    let remote = Api::<DynamicObject>::namespaced_with(instance.control_plane.clone(), &instance.claim_namespace, &kc);
    let twin = remote
        .get(&remote_claim_name("leaver", &ns, &instance.id))
        .await
        .unwrap();
    assert!(twin.metadata.deletion_timestamp.is_none(), "the twin stays");
    if v2 {
        let xr = wait_reason(&local_xrs, "leaving-xr", "NotSelected", &instance).await;
        let released = wait_for("the XR's finalizer to be released", Duration::from_secs(60), || async {
            let xr = local_xrs.get("leaving-xr").await.map_err(|e| e.to_string())?;
            xr.finalizers()
                .is_empty()
                .then_some(xr.clone())
                .ok_or(format!("finalizers {:?}", xr.finalizers()))
        })
        .await;
        assert_eq!(released.uid(), xr.uid());
        let twins = Api::<DynamicObject>::namespaced_with(
            instance.control_plane.clone(),
            &instance.claim_namespace,
            &crate::xrs::web_app_resource(),
        );
        let name = claimsync::model::naming::remote_name(KindFamily::NamespacedXr, "leaving-xr", &ns, &instance.id);
        let xr_twin = twins.get(&name).await.unwrap();
        assert!(xr_twin.metadata.deletion_timestamp.is_none(), "the XR's twin stays");
    }

    // A namespace with a claim joins the selector: its claim is replicated now, not at its next change.
    let joining = support::namespace(&instance.app, "join").await;
    apply_claim(&joining, "joiner").await;
    let label = json!({"metadata": {"labels": {INSTANCE_LABEL: instance.id}}});
    namespaces
        .patch(&joining, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    let joined = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &joining, &kc);
    wait_ready(&joined, "joiner", &instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_of_a_withdrawn_kind_can_still_be_deleted() {
    withdrawn_kind(KindFamily::Claim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xrs_of_a_withdrawn_kind_can_still_be_deleted() {
    if support::env().crossplane_v2() {
        withdrawn_kind(KindFamily::NamespacedXr).await;
    }
}

async fn withdrawn_kind(family: KindFamily) {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("wdel").await;
    instance.start().await;
    // A journal from before the kind existed (that knows another kind), to start from at the end.
    let earlier = TestKind::offer_of(family, &instance.control_plane, "wdel", "Sprocket", json!({})).await;
    earlier.wait_local(&instance.app).await;
    instance.stop().await;
    let old_journal = instance.state_dir.with_extension("before-gizmo");
    copy_dir(&instance.state_dir, &old_journal);
    instance.start().await;
    let ns = instance.namespace("wdel").await;
    let kind = TestKind::offer_of(family, &instance.control_plane, "wdel", "Gizmo", json!({})).await;
    kind.wait_local(&instance.app).await;
    let claims = kind.claims(&instance.app, &ns);
    for name in ["g1", "g2", "g3"] {
        create_claim(&claims, &kind.claim(&ns, name)).await;
    }
    for name in ["g1", "g2", "g3"] {
        wait_ready(&claims, name, &instance).await;
    }
    kind.withdraw(&instance.control_plane).await;
    wait_reason(&claims, "g1", "KindWithdrawn", &instance).await;

    delete_and_wait_gone(&claims, "g1", &instance).await;
    if family == KindFamily::NamespacedXr {
        // Crossplane leaves a withdrawn kind's XRs, so the user's delete went up.
        let twins = kind.claims(&instance.control_plane, &instance.claim_namespace);
        let twin = kind.remote_name("g1", &ns, &instance.id);
        support::wait_gone("the deleted XR's twin", Duration::from_secs(60), &twins, &twin, |t| {
            format!("deleting {:?}", t.metadata.deletion_timestamp)
        })
        .await;
    }
    // Also after a restart, when the kind was withdrawn before this claimsync started.
    instance.stop().await;
    instance.start().await;
    delete_and_wait_gone(&claims, "g2", &instance).await;
    // And with a journal that never heard of the kind (restored from a backup), once the control plane has nothing
    // of the kind left (Crossplane deleted its claims and then its claim CRD): the local CRD claimsync made still
    // brings up the kind's controller.
    instance.stop().await;
    if family == KindFamily::NamespacedXr {
        // Crossplane v2 does not delete a namespaced XR kind's XRs with its XRD (it asks the API server for one
        // cluster-wide delete, which a namespaced kind does not take): the platform team deletes what is left, and
        // then the XRD and its CRD go.
        kind.claims(&instance.control_plane, &instance.claim_namespace)
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .unwrap();
    }
    wait_claim_crd_gone(&instance.control_plane, &kind.crd_name, &kind.xrd_name()).await;
    std::fs::remove_dir_all(&instance.state_dir).unwrap();
    copy_dir(&old_journal, &instance.state_dir);
    instance.start().await;
    delete_and_wait_gone(&claims, "g3", &instance).await;
}

/// Copies a directory (a stopped claimsync's journal) with `cp -a`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cp -a {from:?} {to:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn delete_and_wait_gone(claims: &Api<DynamicObject>, name: &str, instance: &Instance) {
    claims.delete(name, &DeleteParams::default()).await.unwrap();
    support::wait_gone(
        &format!("claim {name} of a withdrawn kind to be deleted"),
        Duration::from_secs(60),
        claims,
        name,
        |c| format!("finalizers {:?}\n{}", c.finalizers(), tail(&instance.log(), 8)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_a_stale_read_never_undo_a_newer_change() {
    let _env = support::env_shared().await;
    let app = support::app().await;
    // No claimsync replicates this namespace: the test plays claimsync's writes itself.
    let ns = support::namespace(&app, "stale").await;
    apply_claim(&ns, "racy").await;
    let claims = Api::<DynamicObject>::namespaced_with(app.clone(), &ns, &kubernetes_cluster_resource());
    let stale = claims.get("racy").await.unwrap();
    let stale_json = serde_json::to_value(&stale).unwrap();

    // After claimsync read the claim, the user chooses a composition.
    let choice = json!({"spec": {"compositionRef": {"name": "users-choice"}}});
    let params = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..PatchParams::default()
    };
    claims.patch("racy", &params, &Patch::Merge(&choice)).await.unwrap();
    // What claimsync computed from its older read would bring Crossplane's choice down.
    let down = LocalDown {
        spec: Map::from_iter([("compositionRef".to_string(), json!({"name": "crossplanes-choice"}))]),
        annotations: Map::new(),
        status: json!({"clusterName": "from-the-old-read"}),
    };
    let refused = write_down(&claims, &stale, &stale_json, &down)
        .await
        .expect_err("a write from a stale read is refused");
    assert!(refused.is_conflict(), "{refused}");
    let now = claims.get("racy").await.unwrap();
    assert_eq!(now.data["spec"]["compositionRef"]["name"], "users-choice");
    assert!(now.data["status"]["clusterName"].is_null(), "{}", now.data["status"]);

    // A newer status is there (written from a fresh read); a status from the stale read does not replace it, and
    // setting the condition from the stale read keeps it.
    write_status(
        &claims,
        &now,
        &now.data["status"],
        &json!({"clusterName": "newer"}),
        "write the newer status",
    )
    .await
    .unwrap();
    let refused = write_status(
        &claims,
        &stale,
        &stale.data["status"],
        &json!({"clusterName": "older"}),
        "write the older status",
    )
    .await
    .expect_err("a status from a stale read is refused");
    assert!(refused.is_conflict(), "{refused}");
    let cond = Replicated::new(Reason::ControlPlaneUnreachable, "the control plane is unreachable");
    set_replicated(&claims, stale, &cond).await.unwrap();
    let now = claims.get("racy").await.unwrap();
    assert_eq!(now.data["status"]["clusterName"], "newer");
    assert_eq!(
        condition(&now, "Replicated"),
        Some(("False".into(), "ControlPlaneUnreachable".into()))
    );
}

/// The sum of one metric's samples on an API server whose labels contain every `label="value"` of `filter`.
async fn metric_sum(client: &Client, metric: &str, filter: &[&str]) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.expect("read /metrics");
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && filter.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_catalog_step_is_retried_without_a_remote_change() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("cretry").await;
    instance.start().await;
    let group = format!("{}.test.starter.org", support::unique("cretry"));
    // The app cluster refuses CRDs of this group for a while (an admission policy, as a platform team might have).
    let policy = support::unique("deny-crds");
    let yaml = format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {policy}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: ["apiextensions.k8s.io"]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["customresourcedefinitions"]
  validations:
  - expression: "object.spec.group != '{group}'"
    message: "CRDs of {group} are refused for now"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {policy}
spec:
  policyName: {policy}
  validationActions: [Deny]
"#
    );
    kubectl_apply(&yaml).await.unwrap();
    let probe = format!(
        r#"{{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {{"name": "probes.{group}"}},
            "spec": {{"group": "{group}", "scope": "Namespaced",
                     "names": {{"kind": "Probe", "plural": "probes"}},
                     "versions": [{{"name": "v1", "served": true, "storage": true,
                                   "schema": {{"openAPIV3Schema": {{"type": "object"}}}}}}]}}}}"#
    );
    let probe_file = std::env::temp_dir().join(format!("{policy}.json"));
    std::fs::write(&probe_file, probe).unwrap();
    let probe_path = probe_file.to_str().unwrap();
    wait_for(
        "the admission policy to refuse CRDs",
        Duration::from_secs(60),
        || async {
            match env()
                .kubectl(&env().app_kubeconfig, &["create", "--dry-run=server", "-f", probe_path])
                .await
            {
                Err(e) if e.contains("refused for now") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let policy_label = format!("policy=\"{policy}\"");
    let metric = "apiserver_validating_admission_policy_check_total";
    let before = metric_sum(&instance.app, metric, &[&policy_label]).await;

    let kind = TestKind::offer_in(&instance.control_plane, &group, "Sprocket", json!({})).await;
    // claimsync is refused, and tries again by itself (no change on the control plane makes it).
    wait_for("claimsync to be refused twice", Duration::from_secs(60), || async {
        let now = metric_sum(&instance.app, metric, &[&policy_label]).await;
        (now >= before + 2.0)
            .then_some(())
            .ok_or(format!("{before} -> {now}\n{}", tail(&instance.log(), 5)))
    })
    .await;
    kubectl_delete(&["validatingadmissionpolicybinding", &policy]).await;
    kind.wait_local(&instance.app).await;
    kubectl_delete(&["validatingadmissionpolicy", &policy]).await;
    kind.withdraw(&instance.control_plane).await;
}

async fn kubectl_delete(what: &[&str]) {
    let mut args = vec!["delete"];
    args.extend(what);
    env().kubectl(&env().app_kubeconfig, &args).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_namespace_that_is_briefly_missing_is_waited_for_not_refused() {
    let _env = support::env_shared().await;
    let mut instance = Instance::new("nsgone").await;
    instance.start().await;
    let ns = instance.namespace("nsgone").await;
    let namespaces = Api::<Namespace>::all(instance.control_plane.clone());
    namespaces
        .delete(&instance.claim_namespace, &DeleteParams::default())
        .await
        .unwrap();
    // The namespace controller walks every resource type of the control plane: slow when it is busy.
    support::wait_gone(
        "the claim namespace to be gone",
        Duration::from_secs(180),
        &namespaces,
        &instance.claim_namespace,
        |_| "still there".into(),
    )
    .await;
    apply_claim(&ns, "early").await;
    let local = Api::<DynamicObject>::namespaced_with(instance.app.clone(), &ns, &kubernetes_cluster_resource());
    let claim = wait_reason(&local, "early", "Error", &instance).await;
    assert!(
        claim.data["status"].to_string().contains("retrying"),
        "{}",
        claim.data["status"]
    );
    let claim_ns: Namespace = serde_json::from_value(json!({"metadata": {"name": instance.claim_namespace}})).unwrap();
    namespaces.create(&PostParams::default(), &claim_ns).await.unwrap();
    wait_ready(&local, "early", &instance).await;
}
