//! Deadlines for every API request a client makes (a tower layer under the client): a request that is not a watch
//! must answer, body included, within its deadline, and a write of a fenced client is refused once the write fence
//! closes and must land before the fence's landing time. It decides nothing about what is written.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Sleep, sleep_until};
use tower::{Layer, Service};

use crate::error::BoxError;

/// How long a request other than a watch may take, answer and body. Watches are bounded by kube's watcher
/// instead (it reconnects a watch that stays silent past the server's own timeout).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(15);

/// When a fenced client may write: writes start only before `start_until` and must land before `land_by`. Leader
/// election opens it with every renewal (so it closes by itself at the renew deadline, whatever any call does)
/// and closes it when the replica stands down.
#[derive(Clone, Debug)]
pub struct WriteFence(Arc<Mutex<Option<Window>>>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    start_until: Instant,
    land_by: Instant,
}

/// Why a request did not answer.
#[derive(Debug, thiserror::Error)]
pub enum DeadlineError {
    #[error("{cluster}: no answer to {verb} {path} within {after:?}")]
    TimedOut {
        cluster: &'static str,
        verb: Method,
        path: String,
        after: Duration,
    },
    #[error("{cluster}: {verb} {path} refused: this replica may not write now (it does not hold the leader lease)")]
    Fenced {
        cluster: &'static str,
        verb: Method,
        path: String,
    },
}

impl WriteFence {
    /// A fence that never closes (one replica, no election).
    pub fn always_open() -> Self {
        let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        WriteFence(Arc::new(Mutex::new(Some(Window {
            start_until: far,
            land_by: far,
        }))))
    }

    /// A fence closed until leadership opens it.
    pub fn closed() -> Self {
        WriteFence(Arc::new(Mutex::new(None)))
    }

    /// Lets writes start until `start_until`, each landing before `land_by`.
    pub fn open(&self, start_until: Instant, land_by: Instant) {
        *self.0.lock().expect("fence lock") = Some(Window { start_until, land_by });
    }

    pub fn close(&self) {
        *self.0.lock().expect("fence lock") = None;
    }

    /// When a write started at `now` must have landed, or None if it may not start.
    pub fn admit(&self, now: Instant) -> Option<Instant> {
        let window = (*self.0.lock().expect("fence lock"))?;
        (now < window.start_until).then_some(window.land_by)
    }
}

/// What a request is bounded by: no deadline (a watch), a deadline, or a refusal (a write of a closed fence).
#[derive(Debug, PartialEq, Eq)]
enum Bound {
    Unbounded,
    By(Instant),
    Refused,
}

fn is_write(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

/// Whether a request is a watch (`watch=true` or `watch=1` in its query).
pub fn is_watch<B>(request: &Request<B>) -> bool {
    request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
}

/// The bound of a request made at `now`, for a client whose requests take at most `longest`.
fn bound<B>(request: &Request<B>, longest: Duration, fence: Option<&WriteFence>, now: Instant) -> Bound {
    if is_watch(request) {
        return Bound::Unbounded;
    }
    let deadline = now + longest;
    match fence {
        Some(fence) if is_write(request.method()) => match fence.admit(now) {
            Some(land_by) => Bound::By(deadline.min(land_by)),
            None => Bound::Refused,
        },
        _ => Bound::By(deadline),
    }
}

/// The layer: one per client, naming its cluster; a fence only on the clients the controllers write with.
#[derive(Clone)]
pub struct Deadlines {
    pub cluster: &'static str,
    /// How long a request may take ([`REQUEST_DEADLINE`] but in tests).
    pub longest: Duration,
    pub fence: Option<WriteFence>,
}

impl<S> Layer<S> for Deadlines {
    type Service = Bounded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bounded {
            inner,
            cluster: self.cluster,
            longest: self.longest,
            fence: self.fence.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Bounded<S> {
    inner: S,
    cluster: &'static str,
    longest: Duration,
    fence: Option<WriteFence>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Bounded<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ResBody: Body + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<BoundedBody<ResBody>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let (cluster, verb, path) = (self.cluster, request.method().clone(), request.uri().path().to_string());
        let deadline = match bound(&request, self.longest, self.fence.as_ref(), started) {
            Bound::Refused => {
                return Box::pin(async move { Err(DeadlineError::Fenced { cluster, verb, path }.into()) });
            }
            Bound::Unbounded => None,
            Bound::By(at) => Some(at),
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let timed_out = |at: Instant| DeadlineError::TimedOut {
                cluster,
                verb: verb.clone(),
                path: path.clone(),
                after: at.saturating_duration_since(started),
            };
            let response = match deadline {
                None => response.await.map_err(Into::into)?,
                Some(at) => match tokio::time::timeout_at(at.into(), response).await {
                    Ok(answered) => answered.map_err(Into::into)?,
                    Err(_) => return Err(timed_out(at).into()),
                },
            };
            let expired = deadline.map(|at| (Box::pin(sleep_until(at.into())), timed_out(at).to_string()));
            Ok(response.map(|body| BoundedBody {
                inner: Box::pin(body),
                expired,
            }))
        })
    }
}

/// A response body that fails once its request's deadline passes.
pub struct BoundedBody<B> {
    inner: Pin<Box<B>>,
    expired: Option<(Pin<Box<Sleep>>, String)>,
}

impl<B> Body for BoundedBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        if let Poll::Ready(frame) = self.inner.as_mut().poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if let Some((sleep, why)) = &mut self.expired
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(why.clone().into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    #[test]
    fn bounds_by_kind_of_request_and_fence() {
        let now = Instant::now();
        let claims = "/apis/k8s.starter.org/v1alpha1/namespaces/team/kubernetesclusters";
        let watch = format!("{claims}?watch=true&resourceVersion=5");
        let closed = WriteFence::closed();
        let open = WriteFence::always_open();
        let near = WriteFence::closed();
        near.open(now + Duration::from_secs(2), now + Duration::from_secs(4));
        let lapsed = WriteFence::closed();
        lapsed.open(now - Duration::from_secs(1), now + Duration::from_secs(2));
        let full = Bound::By(now + REQUEST_DEADLINE);
        let cases: [(&str, Method, &str, Option<&WriteFence>, Bound); 9] = [
            (
                "a watch has no deadline",
                Method::GET,
                &watch,
                Some(&closed),
                Bound::Unbounded,
            ),
            ("a read, unfenced client", Method::GET, claims, None, full),
            (
                "a read is never fenced",
                Method::GET,
                claims,
                Some(&closed),
                Bound::By(now + REQUEST_DEADLINE),
            ),
            (
                "a write, unfenced client",
                Method::PATCH,
                claims,
                None,
                Bound::By(now + REQUEST_DEADLINE),
            ),
            (
                "a write, closed fence",
                Method::PATCH,
                claims,
                Some(&closed),
                Bound::Refused,
            ),
            (
                "a delete, closed fence",
                Method::DELETE,
                claims,
                Some(&closed),
                Bound::Refused,
            ),
            (
                "a write, open fence",
                Method::POST,
                claims,
                Some(&open),
                Bound::By(now + REQUEST_DEADLINE),
            ),
            (
                "a write near the renew deadline lands before the lease could expire",
                Method::PUT,
                claims,
                Some(&near),
                Bound::By(now + Duration::from_secs(4)),
            ),
            (
                "a write past the renew deadline",
                Method::PATCH,
                claims,
                Some(&lapsed),
                Bound::Refused,
            ),
        ];
        for (what, method, uri, fence, want) in cases {
            assert_eq!(
                bound(&request(method, uri), REQUEST_DEADLINE, fence, now),
                want,
                "{what}"
            );
        }
    }

    /// A server that accepts, reads the request, writes `answer` and then holds the connection open.
    async fn stalling_server(answer: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(answer.as_bytes()).await;
                held.push(conn);
            }
        });
        format!("http://{addr}")
    }

    async fn get_through(url: String, fence: Option<WriteFence>, method: &str) -> (Result<String, String>, Duration) {
        let config = kube::Config::new(url.parse().unwrap());
        let deadlines = Deadlines {
            cluster: "app",
            longest: Duration::from_millis(300),
            fence,
        };
        let client = kube::client::ClientBuilder::try_from(config)
            .unwrap()
            .with_layer(&deadlines)
            .build();
        let request = Request::builder()
            .method(method)
            .uri("/api/v1/namespaces/ns/configmaps/one")
            .body(Vec::new())
            .unwrap();
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(5), client.request_text(request))
            .await
            .expect("the deadline did not end the request");
        let described = outcome.map_err(|e| match e {
            kube::Error::Service(source) => source.to_string(),
            other => format!("{other:?}"),
        });
        (described, started.elapsed())
    }

    #[tokio::test]
    async fn a_request_that_never_answers_ends_at_its_deadline() {
        let (outcome, took) = get_through(stalling_server("").await, None, "GET").await;
        let error = outcome.unwrap_err();
        assert!(error.contains("no answer to GET"), "{error}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_body_that_stops_halfway_ends_at_the_deadline() {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"kind\":";
        let (outcome, took) = get_through(stalling_server(head).await, None, "GET").await;
        let error = outcome.unwrap_err();
        assert!(error.contains("no answer to GET"), "{error}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_fenced_write_never_leaves_the_process() {
        let (outcome, _) = get_through("http://127.0.0.1:9".into(), Some(WriteFence::closed()), "PATCH").await;
        let error = outcome.unwrap_err();
        assert!(error.contains("may not write now"), "{error}");
    }

    #[test]
    fn a_closed_fence_stays_closed_until_opened() {
        let fence = WriteFence::closed();
        let now = Instant::now();
        assert_eq!(fence.admit(now), None);
        fence.open(now + Duration::from_secs(7), now + Duration::from_secs(9));
        assert_eq!(fence.admit(now), Some(now + Duration::from_secs(9)));
        assert_eq!(
            fence.admit(now + Duration::from_secs(7)),
            None,
            "the renew deadline closes it by itself"
        );
        fence.close();
        assert_eq!(fence.admit(now), None);
    }
}
