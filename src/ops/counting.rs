//! Counts every API request a kube client makes, by cluster, verb and response code (or `timeout`, `fenced`), into
//! the metrics: a tower layer put under the client, over the deadlines. It observes only; it never changes a
//! request or a response.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use crate::error::BoxError;
use crate::ops::deadline::{DeadlineError, Deadlines, REQUEST_DEADLINE, WriteFence, is_watch};
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

/// The verb of a request as the API server counts it: WATCH for a watch, LIST for a read of a collection, else
/// the method (GET, POST, PATCH, PUT, DELETE).
fn verb<B>(request: &Request<B>) -> String {
    if is_watch(request) {
        "WATCH".to_string()
    } else if request.method() == http::Method::GET && is_collection(request.uri().path()) {
        "LIST".to_string()
    } else {
        request.method().as_str().to_string()
    }
}

/// Whether an API path names a collection (`/api/v1/namespaces/ns/secrets`), not one object
/// (`/api/v1/namespaces/ns/secrets/name`, `/api/v1/namespaces/ns`). Paths outside `/api` and `/apis` (discovery,
/// `/version`) are not collections.
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return false,
    };
    let rest = match rest {
        ["namespaces", _namespace, resource @ ..] if !resource.is_empty() => resource,
        other => other,
    };
    rest.len() == 1
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Counted<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let verb = verb(&request);
        tracing::trace!(cluster = self.cluster, %verb, path = %request.uri().path(), "api request");
        let (cluster, metrics) = (self.cluster, self.metrics.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await.map_err(Into::into);
            let code = match &response {
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) => match e.downcast_ref::<DeadlineError>() {
                    Some(DeadlineError::TimedOut { .. }) => "timeout".to_string(),
                    Some(DeadlineError::Fenced { .. }) => "fenced".to_string(),
                    None => "error".to_string(),
                },
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

/// A client for `config` whose requests are counted as `cluster`'s and bounded by [`REQUEST_DEADLINE`] (watches
/// excepted).
pub fn counted_client(
    config: kube::Config,
    cluster: &'static str,
    metrics: Arc<Metrics>,
) -> Result<kube::Client, kube::Error> {
    bounded_client(config, cluster, metrics, None)
}

/// A client as [`counted_client`]'s whose writes also pass `fence`: the one the controllers write with.
pub fn fenced_client(
    config: kube::Config,
    cluster: &'static str,
    metrics: Arc<Metrics>,
    fence: WriteFence,
) -> Result<kube::Client, kube::Error> {
    bounded_client(config, cluster, metrics, Some(fence))
}

fn bounded_client(
    config: kube::Config,
    cluster: &'static str,
    metrics: Arc<Metrics>,
    fence: Option<WriteFence>,
) -> Result<kube::Client, kube::Error> {
    let deadlines = Deadlines {
        cluster,
        longest: REQUEST_DEADLINE,
        fence,
    };
    // Counted outside the deadlines, so that a request that timed out or was fenced is counted as such.
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&deadlines)
        .with_layer(&CountRequests { cluster, metrics })
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_as_the_api_server_counts_them() {
        let cases = [
            ("GET", "/api/v1/namespaces/ns/secrets", "LIST"),
            (
                "GET",
                "/api/v1/namespaces/ns/secrets?watch=true&resourceVersion=1",
                "WATCH",
            ),
            ("GET", "/api/v1/namespaces/ns/secrets/name", "GET"),
            ("GET", "/api/v1/namespaces", "LIST"),
            ("GET", "/api/v1/namespaces/ns", "GET"),
            ("GET", "/apis/k8s.starter.org/v1alpha1/kubernetesclusters", "LIST"),
            (
                "GET",
                "/apis/k8s.starter.org/v1alpha1/namespaces/team/kubernetesclusters/one",
                "GET",
            ),
            ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "LIST"),
            (
                "GET",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x.y",
                "GET",
            ),
            ("GET", "/apis", "GET"),
            ("GET", "/version", "GET"),
            (
                "PATCH",
                "/apis/k8s.starter.org/v1alpha1/namespaces/team/kubernetesclusters/one/status",
                "PATCH",
            ),
            ("POST", "/api/v1/namespaces/ns/secrets", "POST"),
        ];
        for (method, uri, want) in cases {
            let request = Request::builder().method(method).uri(uri).body(()).unwrap();
            assert_eq!(verb(&request), want, "{method} {uri}");
        }
    }
}
