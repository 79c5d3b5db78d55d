//! Which app namespaces this claimsync replicates (`--namespace-selector`): a watch of the matching namespaces
//! kept in a store, and a signal, sent after the store is updated, naming each namespace that joined or left the
//! selection so the claim controllers look at its claims at once. Decides nothing about claims itself.

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::broadcast;
use tracing::info;

use crate::error::Error;
use crate::sync::caches::Cache;
use crate::sync::store::Store;

/// The selected namespaces and the signal of changes to the selection.
#[derive(Clone)]
pub struct Selection {
    pub store: Store<Namespace>,
    pub changes: broadcast::Sender<String>,
}

/// Starts watching the namespaces that match `selector`; returns once they are listed. A malformed selector is an
/// error here, at start, rather than a silent empty selection.
pub async fn select(local: &Client, selector: &str, buffer: usize) -> Result<Selection, Error> {
    let namespaces = Api::<Namespace>::all(local.clone());
    namespaces
        .list(&ListParams::default().labels(selector).limit(1))
        .await
        .map_err(|e| Error::Load {
            setting: format!("--namespace-selector {selector:?}"),
            action: "list namespaces with",
            source: e.into(),
        })?;
    let (cache, events) =
        Cache::fill(watcher(namespaces, watcher::Config::default().labels(selector)).default_backoff());
    let (changes, _) = broadcast::channel(buffer.max(1));
    let sender = changes.clone();
    tokio::spawn(async move {
        let mut selected = BTreeSet::<String>::new();
        let mut listing = BTreeSet::<String>::new();
        let mut events = events.boxed();
        while let Some(event) = events.next().await {
            let Ok(event) = event else { continue };
            // The store already holds this event: whoever hears of a change reads the new selection.
            for (namespace, joined) in changed(&mut selected, &mut listing, event) {
                info!(%namespace, joined, "namespace selection changed");
                let _ = sender.send(namespace);
            }
        }
    });
    if !cache.filled().await {
        return Err(Error::Load {
            setting: format!("--namespace-selector {selector:?}"),
            action: "watch namespaces with",
            source: "the namespace watch ended before its first listing".into(),
        });
    }
    Ok(Selection {
        store: cache.store,
        changes,
    })
}

/// Applies one watch event to the set of selected namespaces; returns the namespaces that joined (true) or left
/// (false). A relist (`Init` .. `InitDone`) replaces the set: what it no longer holds has left.
fn changed(
    selected: &mut BTreeSet<String>,
    listing: &mut BTreeSet<String>,
    event: watcher::Event<Namespace>,
) -> Vec<(String, bool)> {
    match event {
        watcher::Event::Apply(ns) => {
            let name = ns.name_any();
            if selected.insert(name.clone()) {
                vec![(name, true)]
            } else {
                vec![]
            }
        }
        watcher::Event::Delete(ns) => {
            let name = ns.name_any();
            if selected.remove(&name) {
                vec![(name, false)]
            } else {
                vec![]
            }
        }
        watcher::Event::Init => {
            listing.clear();
            vec![]
        }
        watcher::Event::InitApply(ns) => {
            listing.insert(ns.name_any());
            vec![]
        }
        watcher::Event::InitDone => {
            let left = selected.difference(listing).map(|n| (n.clone(), false));
            let joined = listing.difference(selected).map(|n| (n.clone(), true));
            let changes = left.chain(joined).collect();
            *selected = std::mem::take(listing);
            changes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str) -> Namespace {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap()
    }

    #[test]
    fn joins_and_leaves_are_reported_once() {
        let (mut selected, mut listing) = (BTreeSet::new(), BTreeSet::new());
        let mut feed = |event| changed(&mut selected, &mut listing, event);
        assert!(feed(watcher::Event::Init).is_empty());
        assert!(feed(watcher::Event::InitApply(ns("a"))).is_empty());
        assert!(feed(watcher::Event::InitApply(ns("b"))).is_empty());
        assert_eq!(feed(watcher::Event::InitDone), [("a".into(), true), ("b".into(), true)]);
        assert_eq!(feed(watcher::Event::Apply(ns("c"))), [("c".into(), true)]);
        assert!(feed(watcher::Event::Apply(ns("c"))).is_empty(), "an update is no join");
        assert_eq!(feed(watcher::Event::Delete(ns("a"))), [("a".into(), false)]);
        // A relist that no longer holds b (it left while the watch was down) and now holds d.
        feed(watcher::Event::Init);
        feed(watcher::Event::InitApply(ns("c")));
        feed(watcher::Event::InitApply(ns("d")));
        assert_eq!(
            feed(watcher::Event::InitDone),
            [("b".into(), false), ("d".into(), true)]
        );
    }
}
