//! Keeps the front-proxy configuration current: watches `kube-system/extension-apiserver-authentication` and
//! replaces the `FrontProxy` whenever it changes, so a rotated request-header CA is trusted without a restart.
//! Until the ConfigMap is read (or while it is unusable) every request gets 401. Reads only that ConfigMap.

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{info, warn};

use super::front_proxy::{ConfigError, FrontProxy};
use crate::error::with_causes;

pub const NAMESPACE: &str = "kube-system";
pub const CONFIG_MAP: &str = "extension-apiserver-authentication";

/// The front-proxy configuration of the moment, or why there is none.
pub type Trust = Arc<RwLock<Result<Arc<FrontProxy>, Arc<Untrusted>>>>;

/// Why no request is trusted now; every request is answered 401 with this.
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    #[error("{NAMESPACE}/{CONFIG_MAP} has not been read yet")]
    NotRead,
    #[error("{NAMESPACE}/{CONFIG_MAP}")]
    Unusable(#[source] ConfigError),
}

pub fn start(client: Client) -> Trust {
    let trust: Trust = Arc::new(RwLock::new(Err(Arc::new(Untrusted::NotRead))));
    let slot = trust.clone();
    tokio::spawn(async move {
        let config_maps = Api::<ConfigMap>::namespaced(client, NAMESPACE);
        let by_name = watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}"));
        let mut events = watcher(config_maps, by_name)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            let config_map = match event {
                Ok(config_map) => config_map,
                Err(e) => {
                    warn!(error = %e, "watching {NAMESPACE}/{CONFIG_MAP} failed; retrying");
                    continue;
                }
            };
            let parsed = FrontProxy::from_config_map(&config_map.data.unwrap_or_default())
                .map(Arc::new)
                .map_err(|e| Arc::new(Untrusted::Unusable(e)));
            match &parsed {
                Ok(proxy) => info!(?proxy, "front-proxy configuration loaded"),
                Err(e) => warn!(
                    error = %with_causes(e.as_ref()),
                    "the front-proxy configuration is unusable; every request gets 401"
                ),
            }
            *slot.write().expect("trust lock") = parsed;
        }
    });
    trust
}
