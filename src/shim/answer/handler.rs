//! One request, start to end: health checks pass unauthenticated; everything else must come from the front
//! proxy (401), be allowed by a SubjectAccessReview (403), then is routed to discovery, OpenAPI or the resources.
//! Builds responses; the data comes from the index, the documents from their own files.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::pki_types::CertificateDer;
use tracing::{debug, warn};

use crate::error::with_causes;

use super::reads;
use crate::shim::access::front_proxy::User;
use crate::shim::access::review::{Authorizer, Decision};
use crate::shim::access::trust::Trust;
use crate::shim::api::api_error::ApiError;
use crate::shim::api::discovery;
use crate::shim::api::openapi;
use crate::shim::index::source::Source;
use crate::shim::request::query::{Query, parse};
use crate::shim::request::route::{Attributes, Route, route};
use crate::shim::request::scope::Scope;
use crate::shim::transport::body::{Body, full, streamed};
use crate::shim::transport::negotiate::{discovery_version, representation};

/// How long a request waits for the first listing of everything before it is answered with what is known.
const FIRST_LIST_WAIT: Duration = Duration::from_secs(5);

/// What every request is answered with.
pub struct Shared {
    pub source: Arc<Source>,
    pub trust: Trust,
    pub authorizer: Authorizer,
}

fn json_response(code: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = code;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        code,
        "application/json",
        serde_json::to_vec(&error.to_status()).unwrap_or_default(),
    )
}

/// A discovery or OpenAPI document, with an ETag so the aggregator's refresh costs a 304.
fn document<B: Into<Vec<u8>>>(request_tag: Option<&HeaderValue>, content_type: &str, body: B) -> Response<Body> {
    let body = body.into();
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&body)[..16]));
    if request_tag.and_then(|t| t.to_str().ok()) == Some(etag.as_str()) {
        let mut response = Response::new(full(Vec::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
            .headers_mut()
            .insert(header::ETAG, HeaderValue::from_str(&etag).expect("a hex ETag"));
        return response;
    }
    let mut response = json_response(StatusCode::OK, content_type, body);
    response
        .headers_mut()
        .insert(header::ETAG, HeaderValue::from_str(&etag).expect("a hex ETag"));
    response
}

fn to_vec(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

pub async fn handle<B>(
    shared: Arc<Shared>,
    peer: Arc<Vec<CertificateDer<'static>>>,
    request: Request<B>,
) -> Response<Body> {
    let path = request.uri().path().to_string();
    let route = route(&path);
    if route == Route::Health {
        return json_response(StatusCode::OK, "text/plain", b"ok".to_vec());
    }
    let trust = shared.trust.read().expect("trust lock").clone();
    let authenticated = match trust {
        Ok(proxy) => proxy
            .authenticate(&peer, request.headers())
            .map_err(|e| with_causes(&e)),
        Err(untrusted) => Err(with_causes(untrusted.as_ref())),
    };
    let user = match authenticated {
        Ok(user) => user,
        Err(why) => {
            debug!(%path, %why, "refused: not the front proxy");
            return error_response(&ApiError::unauthorized(&why));
        }
    };
    match answer(&shared, &user, &route, &path, &request).await {
        Ok(response) => response,
        Err(error) => {
            debug!(%path, user = %user.name, code = error.code, message = %error.message, "request failed");
            error_response(&error)
        }
    }
}

async fn answer<B>(
    shared: &Shared,
    user: &User,
    route: &Route,
    path: &str,
    request: &Request<B>,
) -> Result<Response<Body>, ApiError> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::method_not_allowed(request.method().as_str()));
    }
    let query: Query = parse(request.uri().query()).map_err(|e| ApiError::bad_request(with_causes(&e)))?;
    let attributes = match route {
        Route::NotFound => return Err(ApiError::no_route(path)),
        Route::Resource {
            resource,
            namespace,
            name,
        } => Attributes::of_resource(
            *resource,
            namespace.as_deref(),
            name.as_deref(),
            query.watch,
            query.fields.name(),
        ),
        _ => Attributes::NonResource { path: path.to_string() },
    };
    authorize(&shared.authorizer, user, &attributes).await?;

    let accept = request.headers().get(header::ACCEPT).and_then(|a| a.to_str().ok());
    let tag = request.headers().get(header::IF_NONE_MATCH);
    let response = match route {
        Route::Apis => match discovery_version(accept) {
            Some(version) => document(
                tag,
                &discovery::aggregated_content_type(version),
                to_vec(&discovery::aggregated(version)),
            ),
            None => document(tag, "application/json", to_vec(&discovery::group_list())),
        },
        Route::Group => document(tag, "application/json", to_vec(&discovery::api_group())),
        Route::GroupVersion => document(tag, "application/json", to_vec(&discovery::resource_list())),
        Route::OpenApiRoot => document(tag, "application/json", to_vec(&openapi::root())),
        Route::OpenApiGroupVersion => document(tag, "application/json", openapi::group_version_document()),
        Route::Resource {
            resource,
            namespace,
            name,
        } => {
            if !shared.source.wait_complete(FIRST_LIST_WAIT).await {
                warn!("answering before every claim was listed once: the answer may be incomplete");
            }
            let representation = representation(accept);
            let index = shared.source.index.clone();
            match (name, query.watch) {
                (Some(name), _) => {
                    let doc = reads::get(
                        &index.lock().expect("index lock"),
                        *resource,
                        namespace.as_deref(),
                        name,
                        representation,
                        &query,
                    )?;
                    json_response(StatusCode::OK, &doc.content_type, to_vec(&doc.body))
                }
                (None, false) => {
                    let scope = Scope::new(*resource, namespace.as_deref(), &query);
                    let seen = reads::listed(&index.lock().expect("index lock"), &scope);
                    let doc = reads::list(seen, &scope, representation, &query);
                    json_response(StatusCode::OK, &doc.content_type, to_vec(&doc.body))
                }
                (None, true) => {
                    let scope = Scope::new(*resource, namespace.as_deref(), &query);
                    let rx = reads::watch(&index.lock().expect("index lock"), scope, representation, &query);
                    let mut response = Response::new(streamed(rx));
                    if let Ok(value) = HeaderValue::from_str(&reads::content_type(representation, false)) {
                        response.headers_mut().insert(header::CONTENT_TYPE, value);
                    }
                    response
                }
            }
        }
        Route::Health | Route::NotFound => unreachable!("answered above"),
    };
    Ok(response)
}

async fn authorize(authorizer: &Authorizer, user: &User, attributes: &Attributes) -> Result<(), ApiError> {
    match authorizer.authorize(user, attributes).await {
        Ok(Decision::Allowed) => Ok(()),
        Ok(Decision::Denied(why)) => {
            let (resource, name) = match attributes {
                Attributes::Resource { resource, name, .. } => (Some(*resource), name.as_deref()),
                Attributes::NonResource { .. } => (None, None),
            };
            Err(ApiError::forbidden(
                resource,
                name,
                &user.name,
                &attributes.describe(),
                &why,
            ))
        }
        Err(e) => {
            warn!(error = %e, "authorization failed");
            Err(ApiError::internal(format!("authorizing the request: {e}")))
        }
    }
}
