//! The one error type of claimsync. Every variant says which cluster, which object and which action failed, so
//! a log line or a condition message is enough to act on.

use std::fmt;

use claimsync_state::JournalError;

/// Which side of the replication an operation touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    App,
    ControlPlane,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::App => "app cluster",
            Side::ControlPlane => "control plane",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{side}: {action} {object}: {}", detail(source))]
    Kube {
        side: Side,
        action: &'static str,
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Config(String),
    #[error("{object}: {message}")]
    Invalid { object: String, message: String },
    /// The aggregated API could not start; the source says why.
    #[error("failed to start the aggregated API claimsync.dev")]
    Shim(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The API server's own message when it answered, else the transport error.
fn detail(source: &kube::Error) -> String {
    match source {
        kube::Error::Api(status) if !status.message.is_empty() => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

impl Error {
    /// Whether the API server could not be reached at all (as opposed to answering with an error).
    pub fn is_unreachable(&self, side: Side) -> bool {
        matches!(self, Error::Kube { side: s, source, .. } if *s == side && !matches!(**source, kube::Error::Api(_)))
    }

    /// Whether the API server refused a write because the object changed since it was read (409).
    pub fn is_conflict(&self) -> bool {
        self.status_code() == Some(409)
    }

    /// The HTTP status the API server answered with, if it answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Error::Kube { source, .. } => match &**source {
                kube::Error::Api(status) => Some(status.code),
                _ => None,
            },
            _ => None,
        }
    }
}

/// An error and its causes on one line, `: `-separated, for a log field or a message shown to a client (the
/// error's own `Display` stops at its own words).
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// A read that found nothing: `None` for any 404, including the bare "404 page not found" an API server answers
/// for a resource it does not serve (a claim kind whose CRD is gone), which `Api::get_opt` reports as an error.
pub fn absent_if_not_found<T>(result: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match result {
        Ok(found) => Ok(Some(found)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Attaches the cluster, action and object to a kube result.
pub trait KubeContext<T> {
    fn context(self, side: Side, action: &'static str, object: impl fmt::Display) -> Result<T, Error>;
}

impl<T> KubeContext<T> for Result<T, kube::Error> {
    fn context(self, side: Side, action: &'static str, object: impl fmt::Display) -> Result<T, Error> {
        self.map_err(|source| Error::Kube {
            side,
            action,
            object: object.to_string(),
            source: Box::new(source),
        })
    }
}
