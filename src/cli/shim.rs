//! `claimsync run`'s flags for the aggregated API (`--shim-*`), and starting it from them. Off unless
//! `--shim-addr` is given.

use std::net::SocketAddr;

use clap::Args;
use kube::Client;

use super::RunArgs;
use crate::error::Error;
use crate::shim::{CertSource, Shim, ShimSettings};

#[derive(Debug, Args)]
pub struct ShimArgs {
    /// Serve the aggregated API claimsync.dev/v1alpha1 (claimkinds, claimsyncs) over TLS on this address, e.g.
    /// `0.0.0.0:8443` (port 0: any free port, logged). Off when not given.
    #[arg(long, env = "CLAIMSYNC_SHIM_ADDR")]
    pub shim_addr: Option<SocketAddr>,
    /// The serving certificate: a kubernetes.io/tls Secret `<namespace>/<name>` (tls.crt, tls.key, and ca.crt for
    /// the APIService's caBundle). Default: a CA and certificate claimsync generates into the Secret
    /// `<shim-service>-shim-tls` in its own namespace, shared by every replica and renewed when due.
    #[arg(long, env = "CLAIMSYNC_SHIM_CERT_SECRET")]
    pub shim_cert_secret: Option<String>,
    /// The Service (in claimsync's namespace) the APIService points at; a generated certificate names
    /// `<service>.<namespace>.svc`.
    #[arg(long, env = "CLAIMSYNC_SHIM_SERVICE", default_value = "claimsync")]
    pub shim_service: String,
    /// Create the APIService v1alpha1.claimsync.dev if it does not exist (it is patched with the caBundle either
    /// way, when it points at the Service above).
    #[arg(long, env = "CLAIMSYNC_SHIM_CREATE_APISERVICE")]
    pub shim_create_apiservice: bool,
    /// The Service's port, for the APIService claimsync creates.
    #[arg(long, env = "CLAIMSYNC_SHIM_SERVICE_PORT", default_value_t = 443)]
    pub shim_service_port: i32,
}

/// Starts the shim if `--shim-addr` is given. It reads only the app cluster.
pub async fn start(args: &RunArgs, local: &Client) -> Result<Option<Shim>, Error> {
    let Some(addr) = args.shim.shim_addr else {
        return Ok(None);
    };
    let own_namespace = args.clusters.own_namespace();
    let cert = match &args.shim.shim_cert_secret {
        Some(reference) => {
            let (namespace, name) = reference
                .split_once('/')
                .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
                .ok_or_else(|| Error::Setting {
                    setting: format!("--shim-cert-secret {reference:?}"),
                    problem: "want <namespace>/<name>".into(),
                })?;
            CertSource::Given {
                namespace: namespace.to_string(),
                name: name.to_string(),
            }
        }
        None => CertSource::Generated {
            namespace: own_namespace.clone(),
            name: format!("{}-shim-tls", args.shim.shim_service),
        },
    };
    let settings = ShimSettings {
        addr,
        own_namespace,
        service: args.shim.shim_service.clone(),
        service_port: args.shim.shim_service_port,
        create_api_service: args.shim.shim_create_apiservice,
        cert,
        namespace_selector: args.namespace_selector.clone(),
        cluster_id: args.clusters.cluster_id.clone().filter(|id| !id.is_empty()),
        claim_namespace: Some(args.clusters.claim_namespace.clone()),
        claim_groups: args.claim_groups.clone(),
    };
    Shim::start(local.clone(), settings)
        .await
        .map(Some)
        .map_err(|e| Error::Shim(Box::new(e)))
}
