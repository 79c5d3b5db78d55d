//! The in-memory index every request is answered from: the objects served now, each with the resourceVersion of
//! its last change, a bounded history of changes for watches to resume from, and a broadcast of new changes.
//! resourceVersions are this replica's own counter (see `Index::new`); nothing here reads a cluster.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::shim::api::names::Candidate;
use crate::shim::api::objects::labels_of;
use crate::shim::api::resources::Resource;

/// How many changes a watch can resume across; older resourceVersions get 410 Expired.
pub const HISTORY: usize = 4096;

/// Identity of a served object. Claimsyncs of two kinds may share namespace and name; group and kind tell them
/// apart. For claimkinds the namespace is empty and the name is the CRD's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub resource: Resource,
    pub namespace: String,
    pub name: String,
    pub group: String,
    pub kind: String,
}

/// An object as served: its content (without resourceVersion), the resourceVersion of its last change, and its
/// labels for selectors.
#[derive(Debug, PartialEq)]
pub struct Served {
    pub key: ObjectKey,
    pub rv: u64,
    pub content: Value,
    pub labels: BTreeMap<String, String>,
}

impl Served {
    /// The object with its resourceVersion, as a client gets it.
    pub fn object(&self) -> Value {
        let mut object = self.content.clone();
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        object
    }

    pub fn candidate(&self) -> Candidate<'_> {
        Candidate {
            name: &self.key.name,
            kind: &self.key.kind,
            group: &self.key.group,
        }
    }
}

/// One change: `old` is what was served before (None: added), `new` what is served now (None: deleted).
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub old: Option<Arc<Served>>,
    pub new: Option<Arc<Served>>,
}

/// A receiver of the changes to come.
pub type Changes = broadcast::Receiver<Arc<Change>>;

/// Why a watch cannot start at a resourceVersion.
#[derive(Debug, PartialEq, Eq)]
pub struct Expired {
    pub requested: String,
    pub oldest: u64,
}

pub struct Index {
    start: u64,
    rv: u64,
    objects: BTreeMap<ObjectKey, Arc<Served>>,
    history: VecDeque<Arc<Change>>,
    changes: broadcast::Sender<Arc<Change>>,
}

impl Index {
    /// An empty index whose resourceVersions start after `start`. Each replica counts on its own; starting at the
    /// process's start time in microseconds makes one replica's versions meaningless to another (and to its own
    /// previous run), so a client that moves gets 410 Expired and lists again rather than a wrong resume.
    pub fn new(start: u64) -> Index {
        Index {
            start,
            rv: start,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            changes: broadcast::channel(HISTORY).0,
        }
    }

    /// The resourceVersion of the latest change (of a list answered now).
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// Serves `content` under `key` (None: serves nothing there). A change only if the content differs.
    pub fn set(&mut self, key: ObjectKey, content: Option<Value>) {
        let old = self.objects.get(&key).cloned();
        if old.as_ref().map(|o| &o.content) == content.as_ref() {
            return;
        }
        self.rv += 1;
        let new = content.map(|content| {
            Arc::new(Served {
                labels: labels_of(&content),
                key: key.clone(),
                rv: self.rv,
                content,
            })
        });
        match &new {
            Some(served) => self.objects.insert(key, served.clone()),
            None => self.objects.remove(&key),
        };
        let change = Arc::new(Change { rv: self.rv, old, new });
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(change.clone());
        // No receiver is fine: nobody watches.
        let _ = self.changes.send(change);
    }

    /// Every object of a resource, by namespace, name, group and kind.
    pub fn objects(&self, resource: Resource) -> impl Iterator<Item = &Arc<Served>> {
        self.objects
            .range(Self::first_of(resource, "")..)
            .take_while(move |(k, _)| k.resource == resource)
            .map(|(_, v)| v)
    }

    /// The objects of a resource in one namespace.
    pub fn in_namespace<'a>(&'a self, resource: Resource, namespace: &'a str) -> impl Iterator<Item = &'a Arc<Served>> {
        self.objects
            .range(Self::first_of(resource, namespace)..)
            .take_while(move |(k, _)| k.resource == resource && k.namespace == namespace)
            .map(|(_, v)| v)
    }

    fn first_of(resource: Resource, namespace: &str) -> ObjectKey {
        ObjectKey {
            resource,
            namespace: namespace.to_string(),
            name: String::new(),
            group: String::new(),
            kind: String::new(),
        }
    }

    /// The changes after `rv` and a receiver of those to come, for a watch that resumes at `rv`; `Expired` if
    /// `rv` is not one of this index's, or older than its history.
    pub fn resume(&self, rv: &str) -> Result<(Vec<Arc<Change>>, Changes), Expired> {
        let oldest = self.history.front().map(|c| c.rv - 1).unwrap_or(self.rv);
        let expired = || Expired {
            requested: rv.to_string(),
            oldest,
        };
        let from: u64 = rv.parse().map_err(|_| expired())?;
        if from < oldest.max(self.start) || from > self.rv {
            return Err(expired());
        }
        let replay = self.history.iter().filter(|c| c.rv > from).cloned().collect();
        Ok((replay, self.changes.subscribe()))
    }

    /// A receiver of the changes after now.
    pub fn subscribe(&self) -> Changes {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, name: &str, kind: &str) -> ObjectKey {
        ObjectKey {
            resource: Resource::ClaimSyncs,
            namespace: namespace.into(),
            name: name.into(),
            group: "g".into(),
            kind: kind.into(),
        }
    }

    fn content(phase: &str) -> Value {
        json!({"metadata": {"labels": {"claimsync.dev/phase": phase}}, "status": {"phase": phase}})
    }

    #[test]
    fn versions_count_changes_only() {
        let mut index = Index::new(1000);
        index.set(key("a", "db", "K"), Some(content("Pending")));
        index.set(key("a", "db", "K"), Some(content("Pending")));
        assert_eq!(index.rv(), 1001, "the same content is no change");
        index.set(key("a", "db", "K"), Some(content("Synced")));
        index.set(key("a", "db", "L"), Some(content("Synced")));
        index.set(key("b", "db", "K"), Some(content("Synced")));
        index.set(key("a", "gone", "K"), None);
        assert_eq!(index.rv(), 1004, "deleting what is not there is no change");

        let in_a: Vec<(&str, &str, u64)> = index
            .in_namespace(Resource::ClaimSyncs, "a")
            .map(|s| (s.key.name.as_str(), s.key.kind.as_str(), s.rv))
            .collect();
        assert_eq!(in_a, [("db", "K", 1002), ("db", "L", 1003)]);
        assert_eq!(index.objects(Resource::ClaimSyncs).count(), 3);
        assert_eq!(index.objects(Resource::ClaimKinds).count(), 0);
        let served = index.in_namespace(Resource::ClaimSyncs, "b").next().unwrap();
        assert_eq!(served.object()["metadata"]["resourceVersion"], "1004");
        assert_eq!(
            served.labels.get("claimsync.dev/phase").map(String::as_str),
            Some("Synced")
        );
    }

    #[test]
    fn watches_resume_within_the_history_and_expire_outside_it() {
        let mut index = Index::new(1000);
        for i in 0..3 {
            index.set(key("a", &format!("c{i}"), "K"), Some(content("Pending")));
        }
        index.set(key("a", "c0", "K"), None);
        // (requested, replayed versions or Err)
        let cases: [(&str, Result<Vec<u64>, ()>); 8] = [
            ("1000", Ok(vec![1001, 1002, 1003, 1004])),
            ("1002", Ok(vec![1003, 1004])),
            ("1004", Ok(vec![])),
            ("1005", Err(())),
            ("999", Err(())),
            ("0", Err(())),
            ("", Err(())),
            ("abc", Err(())),
        ];
        for (rv, want) in cases {
            let got = index
                .resume(rv)
                .map(|(replay, _)| replay.iter().map(|c| c.rv).collect::<Vec<_>>())
                .map_err(|_| ());
            assert_eq!(got, want, "{rv}");
        }
        let (replay, _) = index.resume("1003").unwrap();
        assert!(
            replay[0].new.is_none() && replay[0].old.is_some(),
            "a deletion carries what was served"
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut index = Index::new(0);
        for i in 0..(HISTORY + 10) {
            index.set(key("a", "c", "K"), Some(json!({"n": i})));
        }
        assert!(index.resume("5").is_err());
        let (replay, _) = index.resume("10").unwrap();
        assert_eq!(replay.len(), HISTORY);
    }

    #[tokio::test]
    async fn subscribers_hear_new_changes() {
        let mut index = Index::new(0);
        let (_, mut rx) = index.resume("0").unwrap();
        index.set(key("a", "c", "K"), Some(content("Synced")));
        let change = rx.recv().await.unwrap();
        assert_eq!(change.rv, 1);
        assert_eq!(change.new.as_ref().unwrap().key.resource, Resource::ClaimSyncs);
    }
}
