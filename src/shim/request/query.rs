//! The query parameters of a get, list or watch (`labelSelector`, `fieldSelector`, `watch`, `resourceVersion`,
//! `timeoutSeconds`, `allowWatchBookmarks`, `sendInitialEvents`, `includeObject`) parsed into one value.
//! `limit` and `continue` are accepted and ignored: every list is answered whole. Pure functions.

use std::num::ParseIntError;
use std::time::Duration;

use super::selector::{FieldSelector, LabelSelector, SelectorError};
use crate::shim::api::table::{IncludeObject, UnknownIncludeObject};

/// A query the API would refuse; shown to the client in a 400 with its causes.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("query parameter {parameter}: {value:?} is not a boolean")]
    NotABoolean { parameter: String, value: String },
    #[error("query parameter {parameter}: {value:?} is not a number")]
    NotANumber {
        parameter: String,
        value: String,
        #[source]
        source: ParseIntError,
    },
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error(transparent)]
    IncludeObject(#[from] UnknownIncludeObject),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub watch: bool,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub timeout: Option<Duration>,
    pub allow_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub include_object: IncludeObject,
}

fn flag(parameter: &str, value: &str) -> Result<bool, QueryError> {
    match value {
        "true" | "1" | "True" => Ok(true),
        "false" | "0" | "False" | "" => Ok(false),
        other => Err(QueryError::NotABoolean {
            parameter: parameter.to_string(),
            value: other.to_string(),
        }),
    }
}

pub fn parse(query: Option<&str>) -> Result<Query, QueryError> {
    let mut labels = LabelSelector::default();
    let mut fields = FieldSelector::default();
    let mut parsed = Query {
        labels: LabelSelector::default(),
        fields: FieldSelector::default(),
        watch: false,
        resource_version: None,
        resource_version_match: None,
        timeout: None,
        allow_bookmarks: false,
        send_initial_events: None,
        include_object: IncludeObject::Metadata,
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "labelSelector" => labels = LabelSelector::parse(&value)?,
            "fieldSelector" => fields = FieldSelector::parse(&value)?,
            "watch" => parsed.watch = flag(&key, &value)?,
            "resourceVersion" => parsed.resource_version = Some(value.into_owned()).filter(|v| !v.is_empty()),
            "resourceVersionMatch" => {
                parsed.resource_version_match = Some(value.into_owned()).filter(|v| !v.is_empty())
            }
            "timeoutSeconds" => {
                let seconds: u64 = value.parse().map_err(|source| QueryError::NotANumber {
                    parameter: key.to_string(),
                    value: value.to_string(),
                    source,
                })?;
                parsed.timeout = Some(Duration::from_secs(seconds));
            }
            "allowWatchBookmarks" => parsed.allow_bookmarks = flag(&key, &value)?,
            "sendInitialEvents" => parsed.send_initial_events = Some(flag(&key, &value)?),
            "includeObject" => parsed.include_object = IncludeObject::parse(Some(&value))?,
            _ => {}
        }
    }
    parsed.labels = labels;
    parsed.fields = fields;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_kubectl_and_client_go_send() {
        let q = parse(Some(
            "fieldSelector=metadata.name%3Ddb&resourceVersion=0&watch=true&timeoutSeconds=30&allowWatchBookmarks=true&limit=500",
        ))
        .unwrap();
        assert!(q.watch && q.allow_bookmarks);
        assert_eq!(q.fields.name(), Some("db"));
        assert_eq!(q.resource_version.as_deref(), Some("0"));
        assert_eq!(q.timeout, Some(Duration::from_secs(30)));

        let q = parse(Some(
            "labelSelector=claimsync.dev%2Fphase+in+%28Synced%29&includeObject=Object",
        ))
        .unwrap();
        assert_eq!(q.include_object, IncludeObject::Object);
        assert!(!q.watch);
        assert_eq!(q.resource_version, None);

        let q = parse(None).unwrap();
        assert_eq!(q.send_initial_events, None);

        for bad in [
            "watch=maybe",
            "timeoutSeconds=-1",
            "labelSelector=a+in+%28x",
            "fieldSelector=spec.x%3D1",
            "includeObject=All",
        ] {
            assert!(parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_name_the_parameter_and_the_cause() {
        let said = |query: &str| crate::error::with_causes(&parse(Some(query)).unwrap_err());
        assert_eq!(
            said("labelSelector=a+b"),
            r#"label selector "a b": "a b" is not a valid label key"#
        );
        assert_eq!(
            said("watch=maybe"),
            r#"query parameter watch: "maybe" is not a boolean"#
        );
        assert_eq!(
            said("timeoutSeconds=-1"),
            r#"query parameter timeoutSeconds: "-1" is not a number: invalid digit found in string"#
        );
        assert_eq!(said("includeObject=All"), r#"unrecognized includeObject value: "All""#);
    }
}
