//! The ops endpoint every replica serves over plain HTTP: `/healthz` (the process answers), `/readyz` (it is
//! serving: started and configured; a control plane that is down makes it degraded, not unready) and `/metrics`.
//! It reads state; it changes nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::ops::metrics::Metrics;

/// What the ops endpoint reports.
pub struct OpsState {
    pub metrics: Arc<Metrics>,
    /// Set once start-up has checked the configuration and the controllers (or the standby) run.
    pub ready: AtomicBool,
    /// The leader lease as this replica last read it (with leader election only), for `/readyz`.
    pub lease: LeaseReport,
}

/// What a replica last read of the leader lease: who held it, or why it could not be read.
pub type LeaseReport = Arc<std::sync::Mutex<Option<String>>>;

impl OpsState {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(OpsState {
            metrics,
            ready: AtomicBool::new(false),
            lease: LeaseReport::default(),
        })
    }
}

/// Binds `addr` and serves the ops endpoint in the background; returns the bound address.
pub async fn serve(addr: &str, state: Arc<OpsState>) -> Result<SocketAddr, Error> {
    let listen = |e: std::io::Error| Error::Load {
        setting: format!("--ops-addr {addr}"),
        action: "listen on",
        source: e.into(),
    };
    let listener = TcpListener::bind(addr).await.map_err(listen)?;
    let bound = listener.local_addr().map_err(listen)?;
    info!(addr = %bound, "serving /healthz, /readyz and /metrics");
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "ops endpoint: accept failed");
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(&state, &request)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(error = %e, "ops endpoint: connection");
                }
            });
        }
    });
    Ok(bound)
}

fn answer(state: &OpsState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .expect("a response")
    };
    match request.uri().path() {
        "/healthz" | "/livez" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            if state.ready.load(Ordering::Relaxed) {
                let link = if state.metrics.link_up.get() == 1 {
                    "up"
                } else {
                    "down (degraded)"
                };
                let leader = if state.metrics.leader.get() == 1 { "yes" } else { "no" };
                let lease = match &*state.lease.lock().expect("lease report") {
                    Some(seen) => format!("lease: {seen}\n"),
                    None => String::new(),
                };
                text(
                    StatusCode::OK,
                    format!("ok\ncontrol plane link: {link}\nleader: {leader}\n{lease}"),
                )
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "starting\n".into())
            }
        }
        "/metrics" => Response::builder()
            .status(StatusCode::OK)
            .header(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(state.metrics.encode())))
            .expect("a response"),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}
