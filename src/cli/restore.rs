//! `claimsync restore`: gives the app cluster back the claims whose twins are on the control plane but which are
//! missing locally (the app cluster rebuilt with the same cluster id, claims lost with their CRD, a finalizer
//! removed by hand). It creates local claims only; the running claimsync adopts each twin in place. It never writes
//! to the control plane.

use std::collections::BTreeSet;

use clap::Args;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::args::{ClusterArgs, kube_system_uid};
use super::clients::{RemoteSource, app_client, reachable};
use std::sync::Arc;

use crate::error::{Error, KubeContext, Side};
use crate::model::kind::{claim_kind, group_allowed, is_claim_crd};
use crate::model::restore::{Restorer, local_claim};
use crate::ops::metrics::Metrics;
use crate::sync::catalog::{Copied, copy_crd};
use crate::sync::claims::api_resource;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub clusters: ClusterArgs,
    /// Only claim kinds of these API groups (as for `run`).
    #[arg(long, env = "CLAIMSYNC_CLAIM_GROUPS", value_delimiter = ',')]
    pub claim_groups: Vec<String>,
    /// Say what would be restored, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also restore (and let claimsync adopt) the twins written by the app cluster of this kube-system uid: the one
    /// this app cluster replaces, rebuilt with the same cluster id. Without it, another app cluster's twins are
    /// never touched.
    #[arg(long)]
    pub adopt_from_cluster_uid: Option<String>,
}

/// What happened to one twin.
struct Row {
    kind: String,
    namespace: String,
    name: String,
    twin: String,
    result: String,
}

pub async fn restore(args: RestoreArgs) -> Result<(), Error> {
    let clusters = &args.clusters;
    clusters.check()?;
    let local = app_client(&clusters.app, &Arc::new(Metrics::new())).await?;
    reachable(&local, Side::App).await?;
    let (config, _) = RemoteSource::from_args(clusters)?.load(&local).await?;
    let remote = Client::try_from(config).map_err(|e| Error::Load {
        setting: "the control plane's client".into(),
        action: "build",
        source: e.into(),
    })?;
    reachable(&remote, Side::ControlPlane).await?;
    let (cluster_id, _) = clusters.cluster_id(&local).await?;
    let cluster_uid = kube_system_uid(&local).await?;
    let restorer = Restorer {
        cluster_id: &cluster_id,
        cluster_uid: &cluster_uid,
        adopt_from: args.adopt_from_cluster_uid.as_deref(),
    };

    let remote_crds = Api::<CustomResourceDefinition>::all(remote.clone())
        .list(&ListParams::default())
        .await
        .context(Side::ControlPlane, "list", "CustomResourceDefinitions")?;
    let mut rows = Vec::new();
    for crd in remote_crds.items {
        let crd = serde_json::to_value(&crd).unwrap_or(Value::Null);
        let Some(kind) = claim_kind(&crd) else { continue };
        if !is_claim_crd(&crd) || !group_allowed(&kind.group, &args.claim_groups) {
            continue;
        }
        let resource = api_resource(&kind);
        let listed = Api::<DynamicObject>::namespaced_with(remote.clone(), &clusters.claim_namespace, &resource)
            .list(&ListParams::default())
            .await;
        let twins = match listed {
            Ok(twins) => twins,
            // The kind went between the two reads (withdrawn meanwhile): nothing of it to restore.
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(e) => {
                return Err(e).context(
                    Side::ControlPlane,
                    "list",
                    format!("{} in {}", kind.plural, clusters.claim_namespace),
                );
            }
        };
        let missing: Vec<(DynamicObject, Value)> = {
            let mut missing = Vec::new();
            for twin in twins.items {
                let twin_json = serde_json::to_value(&twin).unwrap_or(Value::Null);
                let Some(claim) = local_claim(&twin_json, kind.family, &restorer) else {
                    continue;
                };
                let (namespace, name) = (
                    claim["metadata"]["namespace"].as_str().unwrap_or_default().to_string(),
                    claim["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                );
                let present = Api::<DynamicObject>::namespaced_with(local.clone(), &namespace, &resource)
                    .get_opt(&name)
                    .await
                    .ok()
                    .flatten()
                    .is_some();
                let row = |result: &str| Row {
                    kind: kind.kind.clone(),
                    namespace: namespace.clone(),
                    name: name.clone(),
                    twin: twin.name_any(),
                    result: result.to_string(),
                };
                if present {
                    rows.push(row("present"));
                } else if twin.metadata.deletion_timestamp.is_some() {
                    rows.push(row("skipped: the twin is being deleted"));
                } else {
                    missing.push((twin, claim));
                }
            }
            missing
        };
        if missing.is_empty() || args.dry_run {
            for (twin, claim) in missing {
                rows.push(Row {
                    kind: kind.kind.clone(),
                    namespace: claim["metadata"]["namespace"].as_str().unwrap_or_default().into(),
                    name: claim["metadata"]["name"].as_str().unwrap_or_default().into(),
                    twin: twin.name_any(),
                    result: "would restore".into(),
                });
            }
            continue;
        }
        // The kind must be served locally before its claims can be made.
        if let Copied::NotOwned = copy_crd(&local, &crd).await? {
            return Err(Error::Object {
                object: format!("CRD {}", kind.crd_name),
                problem: "exists in the app cluster and is not claimsync's; its claims cannot be restored".into(),
            });
        }
        let mut namespaces_made = BTreeSet::new();
        for (twin, claim) in missing {
            let namespace = claim["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
            let name = claim["metadata"]["name"].as_str().unwrap_or_default().to_string();
            if namespaces_made.insert(namespace.clone()) {
                ensure_namespace(&local, &namespace).await?;
            }
            let object: DynamicObject = serde_json::from_value(claim).map_err(|e| Error::Json {
                object: format!("{} {namespace}/{name}", kind.kind),
                source: e,
            })?;
            Api::<DynamicObject>::namespaced_with(local.clone(), &namespace, &resource)
                .create(&PostParams::default(), &object)
                .await
                .context(Side::App, "create claim", format!("{namespace}/{name}"))?;
            rows.push(Row {
                kind: kind.kind.clone(),
                namespace,
                name,
                twin: twin.name_any(),
                result: "restored".into(),
            });
        }
    }
    print_rows(&rows);
    Ok(())
}

async fn ensure_namespace(local: &Client, namespace: &str) -> Result<(), Error> {
    let namespaces = Api::<Namespace>::all(local.clone());
    if namespaces
        .get_opt(namespace)
        .await
        .context(Side::App, "get namespace", namespace)?
        .is_none()
    {
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).expect("a namespace object");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .context(Side::App, "create namespace", namespace)?;
    }
    Ok(())
}

fn print_rows(rows: &[Row]) {
    let header = ["KIND", "NAMESPACE", "NAME", "TWIN", "RESULT"];
    let cells: Vec<[&str; 5]> = rows
        .iter()
        .map(|r| [&*r.kind, &*r.namespace, &*r.name, &*r.twin, &*r.result])
        .collect();
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].len())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..5).map(width).collect();
    for line in std::iter::once(header).chain(cells) {
        let text: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", text.join("   ").trim_end());
    }
    if rows.is_empty() {
        println!("(no twins of this cluster's claims on the control plane)");
    }
}
