//! Answers get, list and watch from the index, in the representation asked for: objects and lists, Tables, or
//! metadata. Reads the index under its lock only long enough to copy what it needs; no I/O besides the response.

use std::sync::Arc;

use bytes::Bytes;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::watch::{DEFAULT_TIMEOUT, Encoder, Start, Watch, stream};
use crate::shim::api::api_error::ApiError;
use crate::shim::api::names::{Resolved, resolve};
use crate::shim::api::resources::{GROUP_VERSION, Resource};
use crate::shim::api::table::{partial, row, table};
use crate::shim::index::store::{Index, Served};
use crate::shim::request::query::Query;
use crate::shim::request::scope::Scope;
use crate::shim::transport::negotiate::Representation;

/// A JSON answer and its Content-Type.
pub struct Document {
    pub content_type: String,
    pub body: Value,
}

/// The Content-Type of an answer (`list`: of a list), as the API server labels it.
pub fn content_type(representation: Representation, list: bool) -> String {
    match representation {
        Representation::Json => "application/json".into(),
        Representation::Table { version } => format!("application/json;as=Table;v={version};g=meta.k8s.io"),
        Representation::Metadata { version } => {
            let kind = if list {
                "PartialObjectMetadataList"
            } else {
                "PartialObjectMetadata"
            };
            format!("application/json;as={kind};v={version};g=meta.k8s.io")
        }
    }
}

/// The object named `name` (for claimsyncs: plainly if unambiguous, or qualified) in `namespace`.
pub fn get(
    index: &Index,
    resource: Resource,
    namespace: Option<&str>,
    name: &str,
    representation: Representation,
    query: &Query,
) -> Result<Document, ApiError> {
    let candidates: Vec<&Arc<Served>> = index.in_namespace(resource, namespace.unwrap_or_default()).collect();
    let served = match resource {
        Resource::ClaimKinds => candidates.into_iter().find(|s| s.key.name == name),
        Resource::ClaimSyncs => {
            let named: Vec<_> = candidates.iter().map(|s| s.candidate()).collect();
            match resolve(name, &named) {
                Resolved::One(i) => Some(candidates[i]),
                Resolved::NotFound => None,
                Resolved::Ambiguous(qualified) => {
                    return Err(ApiError::ambiguous(name, namespace.unwrap_or_default(), &qualified));
                }
            }
        }
    }
    .ok_or_else(|| ApiError::not_found(resource, name))?;
    let object = served.object();
    let body = match representation {
        Representation::Json => object,
        Representation::Table { version } => table(
            resource,
            &[object],
            index.rv(),
            query.include_object,
            version,
            true,
            Timestamp::now(),
        ),
        Representation::Metadata { version } => partial(&object, version),
    };
    Ok(Document {
        content_type: content_type(representation, false),
        body,
    })
}

/// What a list answers from: the objects a scope sees and the index's version, copied under the index's lock as
/// shared pointers only. The answer is built from it after the lock is released, so a large list holds up no
/// other reader and no change.
pub struct Listed {
    rv: u64,
    objects: Vec<Arc<Served>>,
}

/// The objects the scope sees now (call under the index's lock; cheap).
pub fn listed(index: &Index, scope: &Scope) -> Listed {
    Listed {
        rv: index.rv(),
        objects: index
            .objects(scope.resource)
            .filter(|s| scope.sees(s))
            .cloned()
            .collect(),
    }
}

/// Every object the scope saw, at the index's version of that moment.
pub fn list(listed: Listed, scope: &Scope, representation: Representation, query: &Query) -> Document {
    let objects: Vec<Value> = listed.objects.iter().map(|s| s.object()).collect();
    let rv = listed.rv.to_string();
    let body = match representation {
        Representation::Json => json!({
            "apiVersion": GROUP_VERSION, "kind": scope.resource.list_kind(),
            "metadata": {"resourceVersion": rv}, "items": objects,
        }),
        Representation::Table { version } => {
            let now = Timestamp::now();
            let mut t = table(scope.resource, &[], listed.rv, query.include_object, version, true, now);
            t["rows"] = objects
                .iter()
                .map(|o| row(scope.resource, o, query.include_object, version, now))
                .collect();
            t
        }
        Representation::Metadata { version } => json!({
            "apiVersion": format!("meta.k8s.io/{version}"), "kind": "PartialObjectMetadataList",
            "metadata": {"resourceVersion": rv},
            "items": objects.iter().map(|o| partial(o, version)).collect::<Vec<_>>(),
        }),
    };
    Document {
        content_type: content_type(representation, true),
        body,
    }
}

/// Starts a watch: decides where it starts under the index lock, then streams from a task of its own into the
/// returned channel.
pub fn watch(index: &Index, scope: Scope, representation: Representation, query: &Query) -> mpsc::Receiver<Bytes> {
    let from_now = matches!(query.resource_version.as_deref(), None | Some("0"));
    let initial = query.send_initial_events.unwrap_or(from_now);
    let (start, changes) = if initial || from_now {
        let objects = if initial {
            index
                .objects(scope.resource)
                .filter(|s| scope.sees(s))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let end_bookmark = query.send_initial_events == Some(true) && query.allow_bookmarks;
        (Start::Now { objects, end_bookmark }, index.subscribe())
    } else {
        let requested = query.resource_version.as_deref().unwrap_or_default();
        match index.resume(requested) {
            Ok((replay, changes)) => (Start::Resume(replay), changes),
            Err(expired) => {
                let error = ApiError::expired(format!(
                    "too old resource version: {} ({}): this claimsync replica can resume only from its own recent versions; list again",
                    expired.requested, expired.oldest
                ));
                (Start::Expired(error), index.subscribe())
            }
        }
    };
    let (tx, rx) = mpsc::channel(64);
    let watch = Watch {
        encoder: Encoder::new(scope.resource, representation, query.include_object),
        scope,
        start,
        rv: index.rv(),
        changes,
        timeout: query.timeout.filter(|t| !t.is_zero()).unwrap_or(DEFAULT_TIMEOUT),
        bookmarks: query.allow_bookmarks,
    };
    tokio::spawn(stream(watch, tx));
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::index::store::ObjectKey;
    use crate::shim::request::query::parse;

    fn index() -> Index {
        let mut index = Index::new(100);
        for (name, kind, group) in [
            ("db", "Db", "g.org"),
            ("db", "Cluster", "g.org"),
            ("web", "Cluster", "g.org"),
        ] {
            index.set(
                ObjectKey {
                    resource: Resource::ClaimSyncs,
                    namespace: "a".into(),
                    name: name.into(),
                    group: group.into(),
                    kind: kind.into(),
                },
                Some(json!({"apiVersion": GROUP_VERSION, "kind": "ClaimSync",
                            "metadata": {"name": name, "namespace": "a", "labels": {"claimsync.dev/kind": kind}},
                            "spec": {"claimRef": {"kind": kind}}})),
            );
        }
        index
    }

    #[test]
    fn gets_resolve_names() {
        let index = index();
        let query = parse(None).unwrap();
        let get = |name: &str| {
            get(
                &index,
                Resource::ClaimSyncs,
                Some("a"),
                name,
                Representation::Json,
                &query,
            )
        };
        assert_eq!(get("web").ok().unwrap().body["metadata"]["name"], "web");
        let one = get("db.cluster.g.org").ok().unwrap();
        assert_eq!(one.body["spec"]["claimRef"]["kind"], "Cluster");
        assert_eq!(one.body["metadata"]["resourceVersion"], "102");
        assert_eq!(get("db").err().unwrap().code, 409);
        assert_eq!(get("nope").err().unwrap().code, 404);
        let other = get_in(&index, "b", "web");
        assert_eq!(other, 404);
    }

    fn get_in(index: &Index, namespace: &str, name: &str) -> u16 {
        let query = parse(None).unwrap();
        get(
            index,
            Resource::ClaimSyncs,
            Some(namespace),
            name,
            Representation::Json,
            &query,
        )
        .err()
        .map_or(200, |e| e.code)
    }

    #[test]
    fn lists_in_each_representation() {
        let index = index();
        let query = parse(Some("labelSelector=claimsync.dev%2Fkind%3DCluster")).unwrap();
        let scope = Scope::new(Resource::ClaimSyncs, None, &query);
        let plain = list(listed(&index, &scope), &scope, Representation::Json, &query);
        assert_eq!(plain.body["kind"], "ClaimSyncList");
        assert_eq!(plain.body["metadata"]["resourceVersion"], "103");
        assert_eq!(plain.body["items"].as_array().unwrap().len(), 2);
        let tables = list(
            listed(&index, &scope),
            &scope,
            Representation::Table { version: "v1" },
            &query,
        );
        assert_eq!(tables.body["rows"].as_array().unwrap().len(), 2);
        assert_eq!(tables.body["metadata"]["resourceVersion"], "103");
        assert!(tables.content_type.contains("as=Table"));
        let metadata = list(
            listed(&index, &scope),
            &scope,
            Representation::Metadata { version: "v1" },
            &query,
        );
        assert_eq!(metadata.body["items"][0]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn a_list_answers_from_what_it_saw_not_from_the_index() {
        let mut index = index();
        let query = parse(None).unwrap();
        let scope = Scope::new(Resource::ClaimSyncs, None, &query);
        let seen = listed(&index, &scope);
        // The index changes (its lock is free again) before the answer is built: the answer is of the moment seen.
        index.set(
            ObjectKey {
                resource: Resource::ClaimSyncs,
                namespace: "a".into(),
                name: "late".into(),
                group: "g.org".into(),
                kind: "Cluster".into(),
            },
            Some(json!({"apiVersion": GROUP_VERSION, "kind": "ClaimSync", "metadata": {"name": "late", "namespace": "a"}})),
        );
        assert_eq!(index.rv(), 104);
        let plain = list(seen, &scope, Representation::Json, &query);
        assert_eq!(plain.body["metadata"]["resourceVersion"], "103");
        assert_eq!(plain.body["items"].as_array().unwrap().len(), 3, "{}", plain.body);
    }

    #[tokio::test]
    async fn watches_from_an_unknown_version_get_410() {
        let index = index();
        let query = parse(Some("watch=1&resourceVersion=5")).unwrap();
        let scope = Scope::new(Resource::ClaimSyncs, None, &query);
        let mut rx = watch(&index, scope, Representation::Json, &query);
        let line = rx.recv().await.unwrap();
        let event: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(event["type"], "ERROR");
        assert_eq!(event["object"]["reason"], "Expired");
        assert!(rx.recv().await.is_none(), "the watch ends after the error");

        let query = parse(Some("watch=1&resourceVersion=101&timeoutSeconds=1")).unwrap();
        let scope = Scope::new(Resource::ClaimSyncs, None, &query);
        let mut rx = watch(&index, scope, Representation::Json, &query);
        let mut seen = Vec::new();
        while let Some(line) = rx.recv().await {
            let event: Value = serde_json::from_slice(&line).unwrap();
            seen.push(
                event["object"]["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        assert_eq!(
            seen,
            ["102", "103"],
            "the changes after 101, then the end at the timeout"
        );
    }
}
