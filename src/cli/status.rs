//! `claimsync status`: the sync table (kind, namespace, name, remote name, phase, last sync), read from the app
//! cluster alone: claimsync's CRDs, their claims and each claim's `Replicated` condition, so it answers while the
//! control plane is unreachable. Reads only.

use std::sync::Arc;

use clap::Args;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;

use super::args::{AppArgs, kube_system_uid};
use crate::error::{Error, KubeContext, Side};
use crate::model::kind::{claim_kind, group_allowed};
use crate::model::naming::remote_name;
use crate::model::phase::Phase;
use crate::model::vocabulary::{IDENTITY_CONFIGMAP, MANAGED_BY, REPLICATED};
use crate::ops::metrics::Metrics;
use crate::sync::claims::api_resource;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub app: AppArgs,
    /// Only claims of this namespace.
    #[arg(long, short = 'n')]
    pub claims_namespace: Option<String>,
    /// Only claim kinds of these API groups (comma-separated; `*.example.org` matches every subgroup), as
    /// `claimsync run --claim-groups`; default: every kind claimsync made.
    #[arg(long, env = "CLAIMSYNC_CLAIM_GROUPS", value_delimiter = ',')]
    pub claim_groups: Vec<String>,
}

pub async fn status(args: StatusArgs) -> Result<(), Error> {
    let local = super::clients::app_client(&args.app, &Arc::new(Metrics::new())).await?;
    let own = args.app.own_namespace();
    // The recorded id names the twins; without a record, the default one.
    let recorded = Api::<ConfigMap>::namespaced(local.clone(), &own)
        .get_opt(IDENTITY_CONFIGMAP)
        .await
        .context(Side::App, "get", format!("ConfigMap {own}/{IDENTITY_CONFIGMAP}"))?
        .and_then(|cm| cm.data)
        .and_then(|d| d.get("clusterID").cloned());
    let cluster_id = match recorded {
        Some(id) => id,
        None => kube_system_uid(&local).await?,
    };
    let crds = Api::<CustomResourceDefinition>::all(local.clone())
        .list(&ListParams::default().labels(&format!("{MANAGED_BY}=claimsync")))
        .await
        .context(Side::App, "list", "claimsync's CRDs")?;
    let mut rows = vec![[
        "KIND".to_string(),
        "NAMESPACE".into(),
        "NAME".into(),
        "REMOTE".into(),
        "PHASE".into(),
        "LAST SYNC".into(),
    ]];
    for crd in crds.items {
        let Some(kind) = claim_kind(&serde_json::to_value(&crd).unwrap_or(Value::Null)) else {
            continue;
        };
        if !group_allowed(&kind.group, &args.claim_groups) {
            continue;
        }
        let resource = api_resource(&kind);
        let claims = match &args.claims_namespace {
            Some(ns) => Api::<DynamicObject>::namespaced_with(local.clone(), ns, &resource),
            None => Api::<DynamicObject>::all_with(local.clone(), &resource),
        };
        let list = claims
            .list(&ListParams::default())
            .await
            .context(Side::App, "list", &kind.plural)?;
        for claim in list.items {
            let namespace = claim.namespace().unwrap_or_default();
            let replicated = claim.data["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == REPLICATED))
                .cloned()
                .unwrap_or(Value::Null);
            let phase = Phase::of(
                replicated["reason"].as_str(),
                claim.metadata.deletion_timestamp.is_some(),
            );
            rows.push([
                kind.kind.clone(),
                namespace.clone(),
                claim.name_any(),
                remote_name(kind.family, &claim.name_any(), &namespace, &cluster_id),
                phase.as_str().into(),
                replicated["lastTransitionTime"].as_str().unwrap_or("-").into(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", cells.join("   ").trim_end());
    }
    Ok(())
}
