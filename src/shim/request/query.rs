//! The query parameters of a get, list or watch (`labelSelector`, `fieldSelector`, `watch`, `resourceVersion`,
//! `timeoutSeconds`, `allowWatchBookmarks`, `sendInitialEvents`, `includeObject`) parsed into one value.
//! `limit` and `continue` are accepted and ignored: every list is answered whole. Pure functions.

use std::time::Duration;

use super::selector::{FieldSelector, LabelSelector};
use crate::shim::api::table::IncludeObject;

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

fn flag(value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" | "True" => Ok(true),
        "false" | "0" | "False" | "" => Ok(false),
        other => Err(format!("{other:?} is not a boolean")),
    }
}

pub fn parse(query: Option<&str>) -> Result<Query, String> {
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
        let bad = |e: String| format!("query parameter {key}: {e}");
        match key.as_ref() {
            "labelSelector" => labels = LabelSelector::parse(&value)?,
            "fieldSelector" => fields = FieldSelector::parse(&value)?,
            "watch" => parsed.watch = flag(&value).map_err(bad)?,
            "resourceVersion" => parsed.resource_version = Some(value.into_owned()).filter(|v| !v.is_empty()),
            "resourceVersionMatch" => {
                parsed.resource_version_match = Some(value.into_owned()).filter(|v| !v.is_empty())
            }
            "timeoutSeconds" => {
                let seconds: u64 = value.parse().map_err(|_| bad(format!("{value:?} is not a number")))?;
                parsed.timeout = Some(Duration::from_secs(seconds));
            }
            "allowWatchBookmarks" => parsed.allow_bookmarks = flag(&value).map_err(bad)?,
            "sendInitialEvents" => parsed.send_initial_events = Some(flag(&value).map_err(bad)?),
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
}
