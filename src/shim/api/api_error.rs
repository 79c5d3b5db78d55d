//! The errors the API answers with, as `meta.k8s.io/v1` Status objects worded the way the API server words them,
//! so that kubectl prints them as it prints its own. Pure functions.

use serde_json::{Value, json};

use super::resources::{GROUP, Resource};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn unauthorized(why: &str) -> ApiError {
        ApiError::new(401, "Unauthorized", format!("Unauthorized: {why}"))
    }

    /// `what` is what was asked, e.g. `list resource "claimsyncs" in API group "claimsync.dev" in the namespace "a"`.
    pub fn forbidden(resource: Option<Resource>, name: Option<&str>, user: &str, what: &str, why: &str) -> ApiError {
        let subject = match (resource, name) {
            (Some(r), Some(n)) => format!("{}.{GROUP} {n:?} is forbidden", r.plural()),
            (Some(r), None) => format!("{}.{GROUP} is forbidden", r.plural()),
            _ => "forbidden".to_string(),
        };
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(": {why}")
        };
        let mut error = ApiError::new(403, "Forbidden", format!("{subject}: User {user:?} cannot {what}{why}"));
        if let Some(r) = resource {
            error.details = Some(json!({"name": name, "group": GROUP, "kind": r.plural()}));
        }
        error
    }

    pub fn not_found(resource: Resource, name: &str) -> ApiError {
        let mut error = ApiError::new(
            404,
            "NotFound",
            format!("{}.{GROUP} {name:?} not found", resource.plural()),
        );
        error.details = Some(json!({"name": name, "group": GROUP, "kind": resource.plural()}));
        error
    }

    /// A path this server does not serve.
    pub fn no_route(path: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// A plain name two claims of different kinds bear in one namespace.
    pub fn ambiguous(name: &str, namespace: &str, qualified: &[String]) -> ApiError {
        let mut error = ApiError::new(
            409,
            "Conflict",
            format!(
                "the name {name:?} is shared by {} claims of different kinds in namespace {namespace:?}; ask for one of: {}",
                qualified.len(),
                qualified.join(", ")
            ),
        );
        error.details = Some(json!({"name": name, "group": GROUP, "kind": Resource::ClaimSyncs.plural()}));
        error
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(method: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported: claimsync.dev serves get, list and watch only"),
        )
    }

    /// A watch asked to resume where this replica cannot (410 Gone, reason Expired): list again.
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_like_the_api_servers() {
        let cases = [
            (
                ApiError::not_found(Resource::ClaimSyncs, "db"),
                404,
                "NotFound",
                r#"claimsyncs.claimsync.dev "db" not found"#,
            ),
            (
                ApiError::forbidden(
                    Some(Resource::ClaimSyncs),
                    None,
                    "alice",
                    r#"list resource "claimsyncs" in API group "claimsync.dev" in the namespace "a""#,
                    "",
                ),
                403,
                "Forbidden",
                r#"claimsyncs.claimsync.dev is forbidden: User "alice" cannot list resource "claimsyncs" in API group "claimsync.dev" in the namespace "a""#,
            ),
            (
                ApiError::forbidden(None, None, "bob", r#"get path "/apis""#, "no RBAC policy matched"),
                403,
                "Forbidden",
                r#"forbidden: User "bob" cannot get path "/apis": no RBAC policy matched"#,
            ),
            (
                ApiError::ambiguous("db", "a", &["db.x.g".into(), "db.y.g".into()]),
                409,
                "Conflict",
                r#"the name "db" is shared by 2 claims of different kinds in namespace "a"; ask for one of: db.x.g, db.y.g"#,
            ),
            (ApiError::expired("too old"), 410, "Expired", "too old"),
        ];
        for (error, code, reason, message) in cases {
            let status = error.to_status();
            assert_eq!(status["code"], code);
            assert_eq!(status["reason"], reason);
            assert_eq!(status["message"], message);
            assert_eq!(status["kind"], "Status");
        }
    }
}
