//! The listener: accepts TCP connections, completes TLS (with the client certificate, if any, kept for the
//! requests of that connection) and serves HTTP/1.1 or HTTP/2 on each, handing every request to the handler it is
//! given (`answer::handler`). Knows nothing of what a request asks.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tracing::{debug, warn};

use super::body::Body;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client certificate chain a connection presented (leaf first; empty if none).
pub type Peer = Arc<Vec<CertificateDer<'static>>>;

/// Accepts connections on `listener` for as long as claimsync runs, answering each request with `handle`.
pub async fn listen<H, F>(listener: TcpListener, tls: Arc<ServerConfig>, handle: H)
where
    H: Fn(Peer, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, handle) = (acceptor.clone(), handle.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(%remote, error = %e, "TLS handshake failed"),
                Err(_) => return debug!(%remote, "TLS handshake timed out"),
            };
            let peer: Vec<CertificateDer<'static>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            let peer = Arc::new(peer);
            let service = service_fn(move |request| {
                let (handle, peer) = (handle.clone(), peer.clone());
                async move { Ok::<_, Infallible>(handle(peer, request).await) }
            });
            if let Err(e) = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
}
