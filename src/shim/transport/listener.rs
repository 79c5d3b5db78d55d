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
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tracing::{debug, warn};

use super::body::Body;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one client may hold of the shim: the aggregator keeps a few connections, kubectl one per command, so a
/// connection that sends its request headers slowly or a flood of connections is not a client.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long an HTTP/1.1 request's headers may take to arrive once a request has begun.
    pub header_read: Duration,
    /// How many connections are served at once; more are closed as they come.
    pub connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(10),
            connections: 512,
        }
    }
}

/// The client certificate chain a connection presented (leaf first; empty if none).
pub type Peer = Arc<Vec<CertificateDer<'static>>>;

/// Accepts connections on `listener` for as long as claimsync runs, answering each request with `handle`.
pub async fn listen<H, F>(listener: TcpListener, tls: Arc<ServerConfig>, limits: Limits, handle: H)
where
    H: Fn(Peer, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    let open = Arc::new(Semaphore::new(limits.connections));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Held until the connection ends; none left: the connection is closed at once.
        let Ok(held) = open.clone().try_acquire_owned() else {
            debug!(%remote, limit = limits.connections, "too many connections; closing this one");
            drop(tcp);
            continue;
        };
        let (acceptor, handle) = (acceptor.clone(), handle.clone());
        tokio::spawn(async move {
            let _held = held;
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
            if let Err(e) = serve(tls, Arc::new(peer), limits, handle).await {
                debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Serves HTTP/1.1 or HTTP/2 on one connection until it ends, within `limits`.
async fn serve<I, H, F>(
    io: I,
    peer: Peer,
    limits: Limits,
    handle: H,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Peer, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let service = service_fn(move |request| {
        let (handle, peer) = (handle.clone(), peer.clone());
        async move { Ok::<_, Infallible>(handle(peer, request).await) }
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    builder.serve_connection(TokioIo::new(io), service).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn answer(_: Peer, _: Request<Incoming>) -> Response<Body> {
        Response::new(super::super::body::full(&b"ok"[..]))
    }

    #[tokio::test]
    async fn a_request_whose_headers_do_not_arrive_in_time_is_cut_off() {
        let limits = Limits {
            header_read: Duration::from_millis(200),
            connections: 1,
        };
        let (mut client, server) = tokio::io::duplex(1024);
        let served = tokio::spawn(serve(server, Arc::default(), limits, answer));
        // A request begun and never finished (a slow client, or one that holds connections open on purpose).
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: shim\r\n")
            .await
            .unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), served).await;
        assert!(ended.is_ok(), "the connection was still open after 5 s");
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;

        // A whole request in time is answered.
        let (mut client, server) = tokio::io::duplex(1024);
        tokio::spawn(serve(server, Arc::default(), limits, answer));
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: shim\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        client.read_to_end(&mut response).await.unwrap();
        assert!(
            String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"),
            "{response:?}"
        );
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_as_they_come() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slot = Arc::new(crate::shim::transport::tls::CertSlot::default());
        let tls = crate::shim::transport::tls::server_config(slot).unwrap();
        let limits = Limits {
            header_read: Duration::from_secs(10),
            connections: 2,
        };
        tokio::spawn(listen(listener, tls, limits, answer));
        // Two connections held open (their TLS handshakes never start), then a third.
        let _first = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buffer = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buffer)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the third connection was not closed: {read:?}"
        );
    }
}
