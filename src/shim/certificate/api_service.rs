//! The APIService `v1alpha1.claimsync.dev` and the CA it trusts: its caBundle set to the shim's CA when it points
//! at claimsync's Service (created if asked and absent). Touches no other APIService and no Secret.

use k8s_openapi::ByteString;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tracing::{info, warn};

use crate::error::{Error, KubeContext, Side};
use crate::model::vocabulary::MANAGED_BY;
use crate::shim::api::resources::{API_SERVICE, GROUP, VERSION};

/// The Service the APIService points at, and whether claimsync may create the APIService.
#[derive(Clone, Debug)]
pub struct ApiServiceTarget {
    pub namespace: String,
    pub service: String,
    pub port: i32,
    pub create: bool,
}

/// Gives the APIService the CA: patched when it points at our Service, created when asked and absent.
pub async fn trust(client: &Client, target: &ApiServiceTarget, ca: &str) -> Result<(), Error> {
    let api_services = Api::<APIService>::all(client.clone());
    let object = format!("APIService {API_SERVICE}");
    let existing = api_services
        .get_opt(API_SERVICE)
        .await
        .context(Side::App, "get", &object)?;
    let Some(existing) = existing else {
        if !target.create {
            return Ok(());
        }
        let created: APIService = serde_json::from_value(json!({
            "metadata": {"name": API_SERVICE, "labels": {MANAGED_BY: "claimsync"}},
            "spec": {
                "group": GROUP, "version": VERSION,
                "service": {"namespace": target.namespace, "name": target.service, "port": target.port},
                "caBundle": ByteString(ca.as_bytes().to_vec()),
                "groupPriorityMinimum": 1000, "versionPriority": 15,
            },
        }))
        .expect("an APIService");
        match api_services.create(&PostParams::default(), &created).await {
            Ok(_) => info!(apiservice = API_SERVICE, "created the APIService"),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(e).context(Side::App, "create", &object),
        }
        return Ok(());
    };
    let spec = existing.spec.unwrap_or_default();
    let service = spec.service.as_ref();
    let ours = service.is_some_and(|s| {
        s.namespace.as_deref() == Some(target.namespace.as_str()) && s.name.as_deref() == Some(target.service.as_str())
    });
    if !ours {
        warn!(apiservice = API_SERVICE, service = ?service, "the APIService points at another Service; its caBundle is left alone");
        return Ok(());
    }
    if spec.ca_bundle.as_ref().map(|b| b.0.as_slice()) == Some(ca.as_bytes()) {
        return Ok(());
    }
    if spec.insecure_skip_tls_verify == Some(true) {
        warn!(
            apiservice = API_SERVICE,
            "the APIService skips TLS verification; its caBundle is left alone"
        );
        return Ok(());
    }
    let patch = json!({"spec": {"caBundle": ByteString(ca.as_bytes().to_vec())}});
    api_services
        .patch(API_SERVICE, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context(Side::App, "patch caBundle of", &object)?;
    info!(
        apiservice = API_SERVICE,
        "set the APIService's caBundle to the shim's CA"
    );
    Ok(())
}
