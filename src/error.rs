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

/// Any error a lower layer hands up, kept whole as the source of one of claimsync's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    /// A flag, environment variable or reference claimsync was given that it cannot use as it is.
    #[error("{setting}: {problem}")]
    Setting { setting: String, problem: String },
    /// What a setting names (a kubeconfig, a Secret, a listen address) could not be read or used.
    #[error("failed to {action} {setting}: {source}")]
    Load {
        setting: String,
        action: &'static str,
        #[source]
        source: BoxError,
    },
    /// An API server that must answer at start did not.
    #[error("the {side} did not answer: {source}")]
    NotReached {
        side: Side,
        #[source]
        source: BoxError,
    },
    /// claimsync refuses to start or go on: what it found contradicts what it was told, and going on would lose
    /// or duplicate something. The message says what to do.
    #[error("refusing to go on: {why}")]
    Refused { why: String },
    /// An object claimsync cannot work with as it is.
    #[error("{object}: {problem}")]
    Object { object: String, problem: String },
    /// An object that could not be read as the JSON the rules take.
    #[error("failed to read {object} as JSON: {source}")]
    Json {
        object: String,
        #[source]
        source: serde_json::Error,
    },
    /// A pass over an object that took longer than its deadline.
    #[error("{object}: no answer within {}s ({while_}); retrying", after.as_secs())]
    Timeout {
        object: String,
        after: std::time::Duration,
        while_: &'static str,
    },
    /// The aggregated API could not start; the source says why.
    #[error("failed to start the aggregated API claimsync.dev: {}", with_causes(.0.as_ref()))]
    Shim(#[source] BoxError),
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

/// An error and its causes on one line, `: `-separated, for a log field or a message shown to a client. Some
/// errors say their cause in their own words already (claimsync's own variants do, so that a log line of `%e` is
/// whole); a cause already said is not said again.
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !line.contains(&said) {
            line.push_str(": ");
            line.push_str(&said);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_said_once_whether_or_not_the_error_says_it_itself() {
        let io = || std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let says_its_cause = Error::Load {
            setting: "--ops-addr 127.0.0.1:1".into(),
            action: "listen on",
            source: io().into(),
        };
        assert_eq!(
            with_causes(&says_its_cause),
            "failed to listen on --ops-addr 127.0.0.1:1: address in use"
        );
        let wrapped = Error::Shim(Box::new(says_its_cause));
        assert_eq!(
            with_causes(&wrapped),
            "failed to start the aggregated API claimsync.dev: failed to listen on --ops-addr 127.0.0.1:1: address \
             in use"
        );
    }
}
