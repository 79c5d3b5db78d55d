//! Watches: newline-delimited `{"type","object"}` events, each sent on its own: ADDED from now or the replay of
//! a resumed watch, BOOKMARKs when asked, an ERROR (410 Expired) when it cannot resume or falls behind, the end at
//! `timeoutSeconds`. Encoding is pure; `stream` is the one task per watch that sends. Reads only the index.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tracing::debug;

use crate::shim::api::api_error::ApiError;
use crate::shim::api::resources::{GROUP_VERSION, Resource};
use crate::shim::api::table::IncludeObject;
use crate::shim::api::table::{partial, table};
use crate::shim::index::store::{Change, Changes, Served};
use crate::shim::request::scope::Scope;
use crate::shim::transport::negotiate::Representation;

/// How long a watch without `timeoutSeconds` lasts (the API server's minimum request timeout).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often a watch that allows them gets a BOOKMARK.
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(15);
/// The annotation on the BOOKMARK that ends the initial events of a `sendInitialEvents` watch.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    Error,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
            EventType::Error => "ERROR",
        }
    }
}

/// What a change is to a watcher of `scope`: an object entering the scope is ADDED, leaving it DELETED (as the
/// API server does for label selectors), changing inside it MODIFIED; `None` if the watcher never sees it.
pub fn classify(change: &Change, scope: &Scope) -> Option<(EventType, Arc<Served>)> {
    let old = change.old.as_ref().filter(|o| scope.sees(o));
    let new = change.new.as_ref().filter(|n| scope.sees(n));
    match (old, new, &change.new) {
        (None, Some(new), _) => Some((EventType::Added, new.clone())),
        (Some(_), Some(new), _) => Some((EventType::Modified, new.clone())),
        // Gone, or out of scope: the last state, at the version of the change.
        (Some(_), None, Some(now)) => Some((EventType::Deleted, now.clone())),
        (Some(old), None, None) => Some((
            EventType::Deleted,
            Arc::new(Served {
                key: old.key.clone(),
                rv: change.rv,
                content: old.content.clone(),
                labels: old.labels.clone(),
            }),
        )),
        (None, None, _) => None,
    }
}

/// Encodes events as the request asked: objects, Tables of one row (headers on the first only), or metadata.
pub struct Encoder {
    pub resource: Resource,
    pub representation: Representation,
    pub include: IncludeObject,
    headers_sent: bool,
}

impl Encoder {
    pub fn new(resource: Resource, representation: Representation, include: IncludeObject) -> Encoder {
        Encoder {
            resource,
            representation,
            include,
            headers_sent: false,
        }
    }

    fn line(type_: EventType, object: Value) -> Bytes {
        let mut line = serde_json::to_vec(&json!({"type": type_.as_str(), "object": object})).expect("JSON");
        line.push(b'\n');
        Bytes::from(line)
    }

    pub fn event(&mut self, type_: EventType, served: &Served, now: Timestamp) -> Bytes {
        let object = served.object();
        let object = match self.representation {
            Representation::Json => object,
            Representation::Metadata { version } => partial(&object, version),
            Representation::Table { version } => {
                let headers = !std::mem::replace(&mut self.headers_sent, true);
                table(self.resource, &[object], served.rv, self.include, version, headers, now)
            }
        };
        Self::line(type_, object)
    }

    pub fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({INITIAL_EVENTS_END: "true"});
        }
        let object = match self.representation {
            Representation::Table { version } => {
                json!({"kind": "Table", "apiVersion": format!("meta.k8s.io/{version}"), "metadata": metadata, "rows": []})
            }
            Representation::Metadata { version } => {
                json!({"kind": "PartialObjectMetadata", "apiVersion": format!("meta.k8s.io/{version}"), "metadata": metadata})
            }
            Representation::Json => {
                json!({"kind": self.resource.kind(), "apiVersion": GROUP_VERSION, "metadata": metadata})
            }
        };
        Self::line(EventType::Bookmark, object)
    }

    pub fn error(error: &ApiError) -> Bytes {
        Self::line(EventType::Error, error.to_status())
    }
}

/// Where a watch starts.
pub enum Start {
    /// From now: the objects in scope as ADDED (none if `initial` is false), then a BOOKMARK ending them if
    /// `end_bookmark`.
    Now {
        objects: Vec<Arc<Served>>,
        end_bookmark: bool,
    },
    /// Resuming: the changes since the requested version.
    Resume(Vec<Arc<Change>>),
    /// Cannot resume.
    Expired(ApiError),
}

pub struct Watch {
    pub scope: Scope,
    pub encoder: Encoder,
    pub start: Start,
    /// The index's version when the watch subscribed: every change up to it is in `start`.
    pub rv: u64,
    pub changes: Changes,
    pub timeout: Duration,
    pub bookmarks: bool,
}

/// Sends the watch's events into `out` until the timeout, the client leaving, or an error.
pub async fn stream(mut watch: Watch, out: mpsc::Sender<Bytes>) {
    let deadline = tokio::time::sleep(watch.timeout);
    tokio::pin!(deadline);
    let mut last_rv = watch.rv;
    let first: Vec<Bytes> = match std::mem::replace(&mut watch.start, Start::Resume(Vec::new())) {
        Start::Expired(error) => {
            let _ = out.send(Encoder::error(&error)).await;
            return;
        }
        Start::Now { objects, end_bookmark } => {
            let now = Timestamp::now();
            let mut lines: Vec<Bytes> = objects
                .iter()
                .map(|o| watch.encoder.event(EventType::Added, o, now))
                .collect();
            if end_bookmark {
                lines.push(watch.encoder.bookmark(last_rv, true));
            }
            lines
        }
        Start::Resume(changes) => {
            let now = Timestamp::now();
            changes
                .iter()
                .filter_map(|c| classify(c, &watch.scope))
                .map(|(t, s)| watch.encoder.event(t, &s, now))
                .collect()
        }
    };
    for line in first {
        if out.send(line).await.is_err() {
            return;
        }
    }
    let mut bookmarks = tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
    loop {
        let line = tokio::select! {
            _ = &mut deadline => return,
            _ = bookmarks.tick(), if watch.bookmarks => watch.encoder.bookmark(last_rv, false),
            change = watch.changes.recv() => match change {
                Ok(change) => {
                    last_rv = change.rv;
                    match classify(&change, &watch.scope) {
                        Some((type_, served)) => watch.encoder.event(type_, &served, Timestamp::now()),
                        None => continue,
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    debug!(missed, "a watch fell behind; it ends with 410 Expired");
                    let error = ApiError::expired(format!("the watch fell {missed} changes behind; list again"));
                    let _ = out.send(Encoder::error(&error)).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if out.send(line).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::index::store::{Index, ObjectKey};
    use crate::shim::request::query::parse;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            resource: Resource::ClaimSyncs,
            namespace: "a".into(),
            name: name.into(),
            group: "g".into(),
            kind: "K".into(),
        }
    }

    fn content(name: &str, phase: &str) -> Value {
        json!({"apiVersion": GROUP_VERSION, "kind": "ClaimSync",
               "metadata": {"name": name, "namespace": "a", "labels": {"claimsync.dev/phase": phase}},
               "status": {"phase": phase}})
    }

    #[test]
    fn changes_become_events_as_the_scope_sees_them() {
        let mut index = Index::new(0);
        let mut rx = index.subscribe();
        index.set(key("db"), Some(content("db", "Pending")));
        index.set(key("db"), Some(content("db", "Synced")));
        index.set(key("db"), Some(content("db", "Conflict")));
        index.set(key("db"), None);
        let changes: Vec<Arc<Change>> = (0..4).map(|_| rx.try_recv().unwrap()).collect();
        let synced_only = Scope::new(
            Resource::ClaimSyncs,
            Some("a"),
            &parse(Some("labelSelector=claimsync.dev%2Fphase%3DSynced")).unwrap(),
        );
        let everything = Scope::new(Resource::ClaimSyncs, None, &parse(None).unwrap());
        let types = |scope: &Scope| {
            changes
                .iter()
                .map(|c| classify(c, scope).map(|(t, s)| (t, s.rv)))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            types(&everything),
            [
                Some((EventType::Added, 1)),
                Some((EventType::Modified, 2)),
                Some((EventType::Modified, 3)),
                Some((EventType::Deleted, 4))
            ]
        );
        assert_eq!(
            types(&synced_only),
            [None, Some((EventType::Added, 2)), Some((EventType::Deleted, 3)), None]
        );
    }

    #[test]
    fn events_are_lines_in_the_asked_form() {
        let mut index = Index::new(0);
        index.set(key("db"), Some(content("db", "Synced")));
        let served = index.objects(Resource::ClaimSyncs).next().unwrap().clone();
        let now = Timestamp::now();
        let parse_line = |b: Bytes| -> Value {
            assert!(b.ends_with(b"\n"));
            serde_json::from_slice(&b).unwrap()
        };

        let mut json_encoder = Encoder::new(Resource::ClaimSyncs, Representation::Json, IncludeObject::Metadata);
        let event = parse_line(json_encoder.event(EventType::Added, &served, now));
        assert_eq!(event["type"], "ADDED");
        assert_eq!(event["object"]["metadata"]["resourceVersion"], "1");

        let mut tables = Encoder::new(
            Resource::ClaimSyncs,
            Representation::Table { version: "v1" },
            IncludeObject::Metadata,
        );
        let first = parse_line(tables.event(EventType::Added, &served, now));
        let second = parse_line(tables.event(EventType::Modified, &served, now));
        assert_eq!(first["object"]["kind"], "Table");
        assert!(first["object"]["columnDefinitions"].is_array());
        assert!(second["object"].get("columnDefinitions").is_none());
        assert_eq!(second["object"]["rows"][0]["object"]["metadata"]["namespace"], "a");

        let bookmark = parse_line(json_encoder.bookmark(9, true));
        assert_eq!(bookmark["type"], "BOOKMARK");
        assert_eq!(bookmark["object"]["kind"], "ClaimSync");
        assert_eq!(bookmark["object"]["metadata"]["resourceVersion"], "9");
        assert_eq!(
            bookmark["object"]["metadata"]["annotations"][INITIAL_EVENTS_END],
            "true"
        );

        let error = parse_line(Encoder::error(&ApiError::expired("too old")));
        assert_eq!(error["type"], "ERROR");
        assert_eq!(error["object"]["code"], 410);
    }

    #[tokio::test]
    async fn a_watch_sends_its_start_then_changes_and_ends_at_its_timeout() {
        let mut index = Index::new(0);
        index.set(key("db"), Some(content("db", "Pending")));
        let scope = Scope::new(Resource::ClaimSyncs, Some("a"), &parse(None).unwrap());
        let objects = index.objects(Resource::ClaimSyncs).cloned().collect();
        let watch = Watch {
            scope,
            encoder: Encoder::new(Resource::ClaimSyncs, Representation::Json, IncludeObject::Metadata),
            start: Start::Now {
                objects,
                end_bookmark: false,
            },
            rv: index.rv(),
            changes: index.subscribe(),
            timeout: Duration::from_millis(300),
            bookmarks: false,
        };
        let (tx, mut rx) = mpsc::channel(8);
        let task = tokio::spawn(stream(watch, tx));
        index.set(key("db"), Some(content("db", "Synced")));
        let mut types = Vec::new();
        while let Some(line) = rx.recv().await {
            let event: Value = serde_json::from_slice(&line).unwrap();
            types.push(event["type"].as_str().unwrap().to_string());
        }
        task.await.unwrap();
        assert_eq!(types, ["ADDED", "MODIFIED"]);
    }
}
