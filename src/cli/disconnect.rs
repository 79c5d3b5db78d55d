//! `claimsync disconnect`: what uninstall does. Tells any running claimsync of this namespace to stop writing,
//! then releases claimsync's hold on every local claim it holds (its finalizer and annotation), so local claims can
//! go without their twins being deleted; with `--delete-local`, also deletes those local claims and the claim CRDs
//! claimsync made (once no claim of them is left). It never talks to the control plane.

use std::collections::BTreeMap;

use clap::Args;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::args::AppArgs;
use crate::error::{Error, KubeContext, Side};
use crate::model::kind::{claim_kind, group_allowed};
use crate::model::vocabulary::{FINALIZER, IDENTITY_CONFIGMAP, MANAGED_BY, REPLICATED_BY};
use crate::sync::claims::api_resource;
use crate::sync::identity::DISCONNECTED;

#[derive(Debug, Args)]
pub struct DisconnectArgs {
    // The app cluster, and claimsync's namespace there: the claims that claimsync holds are released.
    #[command(flatten)]
    pub app: AppArgs,
    /// Also delete the local claims that are released, and the claim CRDs claimsync made once they hold no claim.
    /// The control plane is never touched: every twin stays.
    #[arg(long)]
    pub delete_local: bool,
    /// Only claim kinds of these API groups (comma-separated; `*.example.org` matches every subgroup), as
    /// `claimsync run --claim-groups`: the only kinds whose claims it can hold; default: every kind claimsync made.
    #[arg(long, env = "CLAIMSYNC_CLAIM_GROUPS", value_delimiter = ',')]
    pub claim_groups: Vec<String>,
    /// A kubeconfig with admin rights on the control plane: also remove what `claimsync connect` made there for
    /// this app cluster (its ServiceAccount and rights; the claim namespace and the twins stay), and the kubeconfig
    /// Secret connect made here.
    #[arg(long)]
    pub control_plane_kubeconfig: Option<std::path::PathBuf>,
}

/// How many passes over the claims are made at most: a claimsync that was still running may put a finalizer back
/// before it sees the disconnect mark.
const PASSES: usize = 10;

/// How long a pass that released claims waits before the next looks again: a running claimsync stops writing as soon
/// as it sees the mark, but a write it had already sent (its finalizer, read before the release) still lands, and
/// only a pass after it can take it off again.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn disconnect(args: DisconnectArgs) -> Result<(), Error> {
    let instance = args.app.own_namespace();
    let local =
        super::clients::app_client(&args.app, &std::sync::Arc::new(crate::ops::metrics::Metrics::new())).await?;
    super::clients::reachable(&local, Side::App).await?;
    mark_disconnected(&local, &instance).await?;

    let mut crds = Api::<CustomResourceDefinition>::all(local.clone())
        .list(&ListParams::default().labels(&format!("{MANAGED_BY}=claimsync")))
        .await
        .context(Side::App, "list", "claimsync's CRDs")?;
    crds.items.retain(|crd| {
        claim_kind(&serde_json::to_value(crd).unwrap_or(Value::Null))
            .is_some_and(|kind| group_allowed(&kind.group, &args.claim_groups))
    });
    let mut released: BTreeMap<String, usize> = BTreeMap::new();
    let mut deleted = 0;
    for pass in 0..PASSES {
        let mut found = 0;
        for crd in &crds.items {
            let crd = serde_json::to_value(crd).unwrap_or(Value::Null);
            let Some(kind) = claim_kind(&crd) else { continue };
            let claims = Api::<DynamicObject>::all_with(local.clone(), &api_resource(&kind));
            let list = claims
                .list(&ListParams::default())
                .await
                .context(Side::App, "list", &kind.plural)?;
            for claim in list.items.iter().filter(|c| held_by(c, &instance)) {
                found += 1;
                release(&local, &kind.kind, &api_resource(&kind), claim).await?;
                *released.entry(kind.kind.clone()).or_default() += usize::from(pass == 0);
            }
        }
        if found == 0 {
            break;
        }
        if pass == PASSES - 1 {
            return Err(Error::Refused {
                why: format!(
                    "claims kept getting claimsync's finalizer back after {PASSES} passes: a claimsync of namespace \
                     {instance} still runs and does not see the disconnect mark; stop it first"
                ),
            });
        }
        tokio::time::sleep(SETTLE).await;
    }
    for (kind, count) in &released {
        println!("released {count} {kind} claim(s); their twins stay on the control plane");
    }
    if released.is_empty() {
        println!("no claim held by the claimsync of namespace {instance}");
    }
    if args.delete_local {
        for crd in &crds.items {
            let crd_json = serde_json::to_value(crd).unwrap_or(Value::Null);
            let Some(kind) = claim_kind(&crd_json) else { continue };
            let claims = Api::<DynamicObject>::all_with(local.clone(), &api_resource(&kind));
            let list = claims
                .list(&ListParams::default())
                .await
                .context(Side::App, "list", &kind.plural)?;
            let mut left = 0;
            for claim in &list.items {
                if claim.annotations().get(REPLICATED_BY).is_some_and(|by| *by != instance)
                    || claim.finalizers().iter().any(|f| f == FINALIZER)
                {
                    left += 1;
                    continue;
                }
                let namespace = claim.namespace().unwrap_or_default();
                Api::<DynamicObject>::namespaced_with(local.clone(), &namespace, &api_resource(&kind))
                    .delete(&claim.name_any(), &DeleteParams::default())
                    .await
                    .context(Side::App, "delete claim", format!("{namespace}/{}", claim.name_any()))?;
                deleted += 1;
            }
            if left == 0 {
                Api::<CustomResourceDefinition>::all(local.clone())
                    .delete(&crd.name_any(), &DeleteParams::default())
                    .await
                    .context(Side::App, "delete CRD", crd.name_any())?;
                println!("deleted the CRD {}", crd.name_any());
            } else {
                println!(
                    "kept the CRD {}: {left} claim(s) of another claimsync remain",
                    crd.name_any()
                );
            }
        }
        println!("deleted {deleted} local claim(s); the control plane was not touched");
    }
    if let Some(kubeconfig) = &args.control_plane_kubeconfig {
        unconnect(&local, &instance, kubeconfig).await?;
    }
    Ok(())
}

/// Removes what `claimsync connect` made for this app cluster: on the control plane its ServiceAccount, Role,
/// RoleBinding, ClusterRole and ClusterRoleBinding (by their label), here the kubeconfig Secret and the record of
/// the control plane. The claim namespace and the twins stay; it says so.
async fn unconnect(local: &Client, instance: &str, kubeconfig: &std::path::Path) -> Result<(), Error> {
    use crate::cli::connect::{CONTROL_PLANE_SERVER, CONTROL_PLANE_UID};
    use crate::model::connection::{CONNECTED_CLUSTER, label_value};
    let setting = format!("--control-plane-kubeconfig {}", kubeconfig.display());
    let config = super::clients::from_file(kubeconfig, "--control-plane-kubeconfig").await?;
    let remote = crate::ops::counting::counted_client(
        config,
        "controlplane",
        std::sync::Arc::new(crate::ops::metrics::Metrics::new()),
    )
    .map_err(|e| Error::Load {
        setting: setting.clone(),
        action: "build a client with",
        source: e.into(),
    })?;
    super::clients::reachable(&remote, Side::ControlPlane).await?;
    let record_object = format!("ConfigMap {instance}/{IDENTITY_CONFIGMAP}");
    let record = Api::<ConfigMap>::namespaced(local.clone(), instance)
        .get_opt(IDENTITY_CONFIGMAP)
        .await
        .context(Side::App, "get", &record_object)?
        .and_then(|cm| cm.data)
        .unwrap_or_default();
    let Some(cluster_id) = record.get("clusterID") else {
        println!("no cluster id recorded in {record_object}: nothing of connect's to remove on the control plane");
        return Ok(());
    };
    if let Some(recorded) = record.get(CONTROL_PLANE_UID) {
        let uid = super::args::kube_system_uid_of(&remote, Side::ControlPlane).await?;
        if &uid != recorded {
            return Err(Error::Refused {
                why: format!(
                    "{setting} is not the control plane this app cluster is connected to: that is {} (kube-system \
                     uid {recorded}), recorded in {record_object}",
                    record.get(CONTROL_PLANE_SERVER).cloned().unwrap_or_default()
                ),
            });
        }
    }
    let selector = format!("{CONNECTED_CLUSTER}={}", label_value(cluster_id));
    let listed = ListParams::default().labels(&selector);
    let mut removed = Vec::new();
    for (group, version, kind, plural) in [
        ("", "v1", "ServiceAccount", "serviceaccounts"),
        ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
        ("rbac.authorization.k8s.io", "v1", "Role", "roles"),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
        ),
        ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles"),
    ] {
        let resource = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(group, version, kind),
            plural,
        );
        let all = Api::<DynamicObject>::all_with(remote.clone(), &resource);
        let found = all.list(&listed).await.context(Side::ControlPlane, "list", plural)?;
        for object in found.items {
            let name = object.name_any();
            let api = match object.namespace() {
                Some(ns) => Api::<DynamicObject>::namespaced_with(remote.clone(), &ns, &resource),
                None => all.clone(),
            };
            let what = match object.namespace() {
                Some(ns) => format!("{kind} {ns}/{name}"),
                None => format!("{kind} {name}"),
            };
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e).context(Side::ControlPlane, "delete", what),
            }
            removed.push(what);
        }
    }
    for what in &removed {
        println!("removed {what} from the control plane");
    }
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(local.clone(), instance);
    for secret in secrets
        .list(&listed)
        .await
        .context(Side::App, "list", format!("Secrets of {instance}"))?
        .items
    {
        let name = secret.name_any();
        secrets.delete(&name, &DeleteParams::default()).await.context(
            Side::App,
            "delete",
            format!("Secret {instance}/{name}"),
        )?;
        println!("removed Secret {instance}/{name} (the control plane credential connect made) from the app cluster");
    }
    // The claim namespace goes with the control plane: a later connect may choose another one (there).
    let forget = json!({"data": {CONTROL_PLANE_SERVER: null, CONTROL_PLANE_UID: null, "claimNamespace": null}});
    Api::<ConfigMap>::namespaced(local.clone(), instance)
        .patch(IDENTITY_CONFIGMAP, &PatchParams::default(), &Patch::Merge(&forget))
        .await
        .context(Side::App, "forget the control plane in", &record_object)?;
    let claim_namespace = record
        .get("claimNamespace")
        .map_or("the claim namespace".to_string(), |ns| format!("namespace {ns}"));
    println!(
        "left on the control plane: {claim_namespace} and every twin in it (their infrastructure runs on); the \
         chart stays installed here (helm uninstall removes it)"
    );
    Ok(())
}

/// Whether this claimsync (by its namespace) holds the claim.
fn held_by(claim: &DynamicObject, instance: &str) -> bool {
    claim.finalizers().iter().any(|f| f == FINALIZER)
        && claim.annotations().get(REPLICATED_BY).map(String::as_str) == Some(instance)
}

/// Removes claimsync's finalizer and annotation from a claim, under its resource version.
async fn release(
    local: &Client,
    kind: &str,
    resource: &kube::api::ApiResource,
    claim: &DynamicObject,
) -> Result<(), Error> {
    let namespace = claim.namespace().unwrap_or_default();
    let finalizers: Vec<&String> = claim.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "annotations": {REPLICATED_BY: null},
        "resourceVersion": claim.resource_version(),
    }});
    let result = Api::<DynamicObject>::namespaced_with(local.clone(), &namespace, resource)
        .patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    match result {
        Ok(_) => Ok(()),
        // Changed meanwhile, or gone: the next pass sees it as it is now.
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(()),
        Err(e) => Err(e).context(
            Side::App,
            "release claim",
            format!("{kind} {namespace}/{}", claim.name_any()),
        ),
    }
}

/// Sets the disconnect mark a running claimsync of this namespace stops writing on.
async fn mark_disconnected(local: &Client, namespace: &str) -> Result<(), Error> {
    let config_maps = Api::<ConfigMap>::namespaced(local.clone(), namespace);
    let object = format!("ConfigMap {namespace}/{IDENTITY_CONFIGMAP}");
    let at = k8s_openapi::jiff::Timestamp::now().to_string();
    let mark = json!({"data": {DISCONNECTED: at}});
    match config_maps
        .patch(IDENTITY_CONFIGMAP, &PatchParams::default(), &Patch::Merge(&mark))
        .await
    {
        Ok(_) => Ok(()),
        // No claimsync ever ran with this namespace: there is nothing to tell.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e).context(Side::App, "mark disconnected", &object),
    }
}
