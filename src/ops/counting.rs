//! Counts every API request a kube client makes, by cluster, verb and response code, into the metrics: a tower
//! layer put under the client. It observes only; it never changes a request or a response.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use crate::ops::metrics::{ApiLabels, Metrics};

/// The layer: one per client, naming its cluster.
#[derive(Clone)]
pub struct CountRequests {
    pub cluster: &'static str,
    pub metrics: Arc<Metrics>,
}

impl<S> Layer<S> for CountRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Counted {
            inner,
            cluster: self.cluster,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    cluster: &'static str,
    metrics: Arc<Metrics>,
}

/// The verb of a request as the API server counts it: the method, or WATCH for a watch.
fn verb<B>(request: &Request<B>) -> String {
    let watch = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    if watch {
        "WATCH".to_string()
    } else {
        request.method().as_str().to_string()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Counted<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let verb = verb(&request);
        tracing::trace!(cluster = self.cluster, %verb, path = %request.uri().path(), "api request");
        let (cluster, metrics) = (self.cluster, self.metrics.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let code = match &response {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            metrics
                .api_requests
                .get_or_create(&ApiLabels {
                    cluster: cluster.to_string(),
                    verb,
                    code,
                })
                .inc();
            response
        })
    }
}

/// A client for `config` whose requests are counted as `cluster`'s.
pub fn counted_client(
    config: kube::Config,
    cluster: &'static str,
    metrics: Arc<Metrics>,
) -> Result<kube::Client, kube::Error> {
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder.with_layer(&CountRequests { cluster, metrics }).build())
}
