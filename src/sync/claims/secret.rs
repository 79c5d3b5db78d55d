//! Connection secrets, the I/O: reads the Secret Crossplane wrote for a twin and the local one at the name the
//! user asked for (from the watch caches when they are filled), applies the local copy, lists and deletes the
//! copies claimsync made. Which Secret is whose and what to write is `model::plan`'s decision.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::Value;
use tracing::info;

use crate::error::{Error, KubeContext, Side};
use crate::model::vocabulary::{MANAGED_BY, MANAGER_DOWN};
use crate::sync::caches::RemoteCaches;

/// The Secret at `name` in the claim namespace, from the watch cache once it is filled.
pub async fn read_remote(caches: &RemoteCaches, remote: &Api<Secret>, name: &str) -> Result<Option<Secret>, Error> {
    match caches.secret(name).await {
        Some(cached) => Ok(cached.map(|s| (*s).clone())),
        None => remote
            .get_opt(name)
            .await
            .context(Side::ControlPlane, "get Secret", name),
    }
}

/// The local Secret at `name`: from the cache of Secrets claimsync made, else asked of the API server (a Secret
/// claimsync did not make is not in its cache, and the name may be taken).
pub async fn read_local(
    caches: &RemoteCaches,
    local: &Api<Secret>,
    namespace: &str,
    name: &str,
) -> Result<Option<Secret>, Error> {
    match caches.local_secret(namespace, name) {
        Some(ours) => Ok(Some((*ours).clone())),
        None => local
            .get_opt(name)
            .await
            .context(Side::App, "get Secret", format!("{namespace}/{name}")),
    }
}

/// Server-side applies the local connection Secret as claimsync's down manager.
pub async fn apply(local: &Api<Secret>, namespace: &str, name: &str, secret: &Value) -> Result<(), Error> {
    local
        .patch(name, &PatchParams::apply(MANAGER_DOWN).force(), &Patch::Apply(secret))
        .await
        .context(Side::App, "apply Secret", format!("{namespace}/{name}"))?;
    Ok(())
}

/// The Secrets claimsync made in a namespace.
pub async fn list_made(local: &Api<Secret>, namespace: &str) -> Result<Vec<Secret>, Error> {
    let made = local
        .list(&ListParams::default().labels(&format!("{MANAGED_BY}=claimsync")))
        .await
        .context(Side::App, "list Secrets", namespace)?;
    Ok(made.items)
}

/// Deletes local Secrets a claim no longer asks for.
pub async fn delete(local: &Api<Secret>, namespace: &str, names: &[String]) -> Result<(), Error> {
    for name in names {
        local.delete(name, &DeleteParams::default()).await.context(
            Side::App,
            "delete Secret",
            format!("{namespace}/{name}"),
        )?;
        info!(secret = %name, "removed a connection Secret the claim no longer asks for");
    }
    Ok(())
}
