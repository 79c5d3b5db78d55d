//! The aggregated API `claimsync.dev/v1alpha1`: `claimkinds` and `claimsyncs`, read-only, served over TLS by
//! every claimsync replica to the app cluster's aggregator, from watches of the app cluster and the journal, so
//! it answers before the first sync and while the control plane is unreachable. It reads what `sync` records
//! and never writes to either cluster's claims; it never imports `sync`.
//!
//! Rooms: `api` (the two resources and every document served: objects, tables, discovery, OpenAPI, API
//! errors), `index` (what is served now, and the app-cluster watches and journal that fill it), `request` (what a
//! request asks: route, query, selectors, scope), `answer` (one request start to end, reads and watches),
//! `access` (who may ask: front proxy, RBAC), `certificate` (the serving certificate and the APIService),
//! `transport` (TLS, listener, bodies, content negotiation). Imports point one way: `answer` -> `access` ->
//! `request` -> `index` -> `api`, and `certificate` -> `transport`; `transport` imports no other room.

mod access;
mod answer;
mod api;
mod certificate;
mod index;
mod request;
mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use claimsync_state::Journal;
use kube::Client;
use tokio::net::TcpListener;
use tracing::info;

pub use api::resources;
pub use certificate::keeper::CertSource;

/// Why the shim could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("failed to listen on --shim-addr {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read the address bound for --shim-addr {addr}")]
    LocalAddr {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Certificate(#[from] certificate::keeper::CertError),
    #[error(transparent)]
    Tls(#[from] transport::tls::TlsConfigError),
}

/// What the shim is told at start.
pub struct ShimSettings {
    pub addr: SocketAddr,
    /// claimsync's namespace in the app cluster: the Service's, and the generated certificate's Secret's.
    pub own_namespace: String,
    /// The Service the APIService points at (its names go into a generated certificate).
    pub service: String,
    /// The Service's port, for an APIService claimsync creates.
    pub service_port: i32,
    /// Create the APIService if it does not exist.
    pub create_api_service: bool,
    pub cert: CertSource,
    pub namespace_selector: Option<String>,
    pub cluster_id: Option<String>,
    pub claim_namespace: Option<String>,
    /// `--claim-groups`: the kinds shown are those claimsync replicates.
    pub claim_groups: Vec<String>,
}

/// The running shim.
pub struct Shim {
    source: Arc<index::source::Source>,
    /// Where it listens (the port chosen, when asked for port 0).
    pub addr: SocketAddr,
}

impl Shim {
    /// Binds, loads the serving certificate and starts serving; the index fills from the app cluster meanwhile.
    /// Needs nothing of the control plane.
    pub async fn start(client: Client, settings: ShimSettings) -> Result<Shim, ShimError> {
        let listener = TcpListener::bind(settings.addr)
            .await
            .map_err(|source| ShimError::Bind {
                addr: settings.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ShimError::LocalAddr {
            addr: settings.addr,
            source,
        })?;
        let start_rv = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        let source = index::source::start(
            index::source::SourceSettings {
                client: client.clone(),
                namespace_selector: settings.namespace_selector.clone(),
                cluster_id: settings.cluster_id.clone(),
                own_namespace: settings.own_namespace.clone(),
                remote_namespace: settings.claim_namespace.clone(),
                claim_groups: settings.claim_groups.clone(),
            },
            start_rv,
        );
        let slot = Arc::new(transport::tls::CertSlot::default());
        certificate::keeper::CertKeeper {
            client: client.clone(),
            names: certificate::generated::serving_names(&settings.service, &settings.own_namespace),
            source: settings.cert.clone(),
            target: certificate::api_service::ApiServiceTarget {
                namespace: settings.own_namespace.clone(),
                service: settings.service.clone(),
                port: settings.service_port,
                create: settings.create_api_service,
            },
            slot: slot.clone(),
        }
        .start()
        .await?;
        let tls = transport::tls::server_config(slot)?;
        let shared = Arc::new(answer::handler::Shared {
            source: source.clone(),
            trust: access::trust::start(client.clone()),
            authorizer: access::review::Authorizer::new(client),
        });
        let limits = transport::listener::Limits::default();
        tokio::spawn(transport::listener::listen(
            listener,
            tls,
            limits,
            move |peer, request| answer::handler::handle(shared.clone(), peer, request),
        ));
        info!(%addr, "aggregated API claimsync.dev/v1alpha1 serving on https://{addr}");
        Ok(Shim { source, addr })
    }

    /// Hands over the journal and the cluster id `run` pinned, to enrich what is served.
    pub fn attach(&self, journal: Journal, cluster_id: &str) {
        self.source.attach(journal, cluster_id);
    }
}
