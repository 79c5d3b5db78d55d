//! The table behind each watch cache: the last state a watch reported of each object, keyed by namespace and name,
//! and the rule by which every long-lived map keyed by objects gives its memory back once most of them have gone.
//! Holds no logic about what the objects mean; `caches.rs` decides what is watched.
//!
//! Why not kube-runtime's reflector store: its table never shrinks, and its key carries the kind's `ApiResource`
//! (five strings) plus a resource version and uid for every object. After a wave of deletions its hash table is
//! left full of tombstones; the next wave of creations then doubles it (hashbrown grows rather than rehashing in
//! place once more than half its capacity is live), for good. `e2e/bench --churn` showed that as a step of about
//! 1.8 MiB per cache at the ninth wave of 5,000 claims.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::reflector::{Lookup, ObjectRef};
use kube::runtime::watcher;

/// Below this capacity a table is never shrunk: the saving would not pay for the rehash.
const SMALLEST_SHRUNK: usize = 64;

/// Where an object is: its namespace (none for a cluster-scoped object) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    namespace: Option<String>,
    name: String,
}

impl Key {
    fn of<K: Resource>(object: &K) -> Key {
        let meta = object.meta();
        Key {
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

type Table<K> = HashMap<Key, Arc<K>>;

/// The reading side: cheap to clone, shared by every task that looks objects up.
pub struct Store<K> {
    table: Arc<RwLock<Table<K>>>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            table: self.table.clone(),
        }
    }
}

impl<K> Store<K> {
    /// The object at `key`'s namespace and name (or, if none is there, the cluster-scoped object of that name, as
    /// kube-runtime's store answers).
    pub fn get(&self, key: &ObjectRef<K>) -> Option<Arc<K>>
    where
        K: Lookup,
    {
        let table = self.table.read().expect("store table");
        let at = Key {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        };
        table
            .get(&at)
            .or_else(|| {
                at.namespace.as_ref()?;
                table.get(&Key {
                    namespace: None,
                    name: at.name,
                })
            })
            .cloned()
    }

    /// Every object it holds, in no order.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.table.read().expect("store table").values().cloned().collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.read().expect("store table").len()
    }

    /// How many objects its table has room for (without growing).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.table.read().expect("store table").capacity()
    }
}

/// The writing side, owned by the one stream that applies a watch's events.
pub struct Writer<K> {
    table: Arc<RwLock<Table<K>>>,
    /// A relist in progress: what it has listed so far, swapped in whole when it is done.
    listing: Option<Table<K>>,
}

impl<K> Default for Writer<K> {
    fn default() -> Self {
        Writer {
            table: Arc::new(RwLock::new(Table::new())),
            listing: None,
        }
    }
}

impl<K: Resource + Clone> Writer<K> {
    pub fn reader(&self) -> Store<K> {
        Store {
            table: self.table.clone(),
        }
    }

    /// Applies one watch event. A relist builds a new table and replaces the old one when it is done, so objects
    /// deleted while the watch was down leave the store then.
    pub fn apply(&mut self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(object) => {
                let mut table = self.table.write().expect("store table");
                table.insert(Key::of(object), Arc::new(object.clone()));
            }
            watcher::Event::Delete(object) => {
                let mut table = self.table.write().expect("store table");
                table.remove(&Key::of(object));
                shrink_map_when_sparse(&mut table);
            }
            watcher::Event::Init => self.listing = Some(Table::new()),
            watcher::Event::InitApply(object) => {
                self.listing
                    .get_or_insert_with(Table::new)
                    .insert(Key::of(object), Arc::new(object.clone()));
            }
            watcher::Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                *self.table.write().expect("store table") = listed;
            }
        }
    }
}

/// Whether a table of `len` entries and room for `capacity` should be shrunk: when three quarters of it are
/// unused. Shrinking to twice what it holds leaves room to grow again without a rehash at the next insert, and
/// the rehash clears the tombstones that would otherwise make hashbrown double the table on its next growth.
fn sparse(len: usize, capacity: usize) -> bool {
    capacity > SMALLEST_SHRUNK && len.saturating_mul(4) <= capacity
}

/// Gives back a map's unused room after removals (see `sparse`). Call it after each removal; it costs nothing
/// unless the map is mostly empty.
pub fn shrink_map_when_sparse<Q: Eq + Hash, V>(map: &mut HashMap<Q, V>) {
    if sparse(map.len(), map.capacity()) {
        map.shrink_to(map.len() * 2);
    }
}

/// The same for a set.
pub fn shrink_set_when_sparse<Q: Eq + Hash>(set: &mut HashSet<Q>) {
    if sparse(set.len(), set.capacity()) {
        set.shrink_to(set.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn map(namespace: Option<&str>, name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: namespace.map(Into::into),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn answers_by_namespace_and_name_and_falls_back_to_cluster_scope() {
        let mut writer = Writer::<ConfigMap>::default();
        let store = writer.reader();
        writer.apply(&watcher::Event::Apply(map(Some("a"), "x")));
        writer.apply(&watcher::Event::Apply(map(None, "c")));
        assert!(store.get(&ObjectRef::new("x").within("a")).is_some());
        assert!(store.get(&ObjectRef::new("x").within("b")).is_none());
        assert!(
            store.get(&ObjectRef::new("c").within("a")).is_some(),
            "cluster-scoped, asked with a namespace"
        );
        writer.apply(&watcher::Event::Delete(map(Some("a"), "x")));
        assert!(store.get(&ObjectRef::new("x").within("a")).is_none());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_relist_replaces_the_table_when_it_is_done() {
        let mut writer = Writer::<ConfigMap>::default();
        let store = writer.reader();
        writer.apply(&watcher::Event::Apply(map(Some("a"), "gone")));
        writer.apply(&watcher::Event::Init);
        writer.apply(&watcher::Event::InitApply(map(Some("a"), "kept")));
        assert!(
            store.get(&ObjectRef::new("gone").within("a")).is_some(),
            "the old state is served until the relist is done"
        );
        writer.apply(&watcher::Event::InitDone);
        assert!(store.get(&ObjectRef::new("gone").within("a")).is_none());
        assert!(store.get(&ObjectRef::new("kept").within("a")).is_some());
    }

    #[test]
    fn waves_of_creations_and_deletions_leave_the_table_no_larger_than_one_wave_needs() {
        let mut writer = Writer::<ConfigMap>::default();
        let store = writer.reader();
        let mut after_first = 0;
        for wave in 0..12 {
            for i in 0..5_000 {
                writer.apply(&watcher::Event::Apply(map(Some("ns"), &format!("w{wave}-{i}"))));
            }
            let peak = store.capacity();
            if wave == 0 {
                after_first = peak;
            }
            assert!(
                peak <= after_first,
                "wave {wave}: room for {peak}, the first wave needed {after_first}"
            );
            for i in 0..5_000 {
                writer.apply(&watcher::Event::Delete(map(Some("ns"), &format!("w{wave}-{i}"))));
            }
            assert!(
                store.capacity() <= SMALLEST_SHRUNK,
                "wave {wave}: {} left",
                store.capacity()
            );
        }
    }

    #[test]
    fn a_map_is_shrunk_only_when_mostly_empty() {
        let table = [
            // (len, capacity, shrink)
            (0, 64, false),
            (0, 65, true),
            (10, 100, true),
            (25, 100, true),
            (26, 100, false),
            (5_000, 7_168, false),
        ];
        for (len, capacity, shrink) in table {
            assert_eq!(sparse(len, capacity), shrink, "len {len}, capacity {capacity}");
        }
        let mut map: HashMap<u32, u32> = (0..1_000).map(|i| (i, i)).collect();
        for i in 0..1_000 {
            map.remove(&i);
            shrink_map_when_sparse(&mut map);
        }
        assert!(map.capacity() <= SMALLEST_SHRUNK);
    }
}
