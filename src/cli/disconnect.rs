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
