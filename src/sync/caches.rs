//! Watch caches shared by every claim controller, so that reconciling an in-sync claim costs no API call: the
//! Secrets of the claim namespace (one watch for all kinds, with a signal naming each Secret that changed), the
//! control plane's CRDs and XRDs, and, per running kind, its twins and its local claims. Reads only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::model::kind::KindFamily;
use crate::model::vocabulary::MANAGED_BY;
use crate::sync::store::{Store, Writer};

/// How long a reader waits for a cache's first listing before it asks the API server instead.
pub const CACHE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The caches of one kind: its twins on the control plane and its claims in the app cluster.
#[derive(Clone)]
pub struct KindCaches {
    pub family: KindFamily,
    pub resource: ApiResource,
    pub twins: Cache<DynamicObject>,
    pub claims: Cache<DynamicObject>,
}

/// The control plane's objects claimsync reads often, kept by watches.
#[derive(Clone)]
pub struct RemoteCaches {
    pub secrets: Cache<Secret>,
    /// Names of Secrets of the claim namespace that changed, sent after `secrets` holds the change.
    pub secret_changes: broadcast::Sender<String>,
    /// The control plane's CRDs and XRDs, metadata only: the rules read their deletion and owners, never their
    /// schemas (a large provider brings hundreds of CRDs of up to a megabyte each).
    pub crds: Cache<PartialObjectMeta<CustomResourceDefinition>>,
    pub xrds: Cache<PartialObjectMeta<DynamicObject>>,
    /// Names of XRDs seen being deleted, sent after `xrds` holds them: the catalog withdraws their kinds (Crossplane
    /// v2 leaves a namespaced XR kind's CRD and XRs in place while its XRD waits to go).
    pub xrd_deletions: broadcast::Sender<String>,
    /// The connection Secrets claimsync made in the app cluster (label `claimsync.dev/managed-by`).
    pub local_secrets: Cache<Secret>,
    /// Per kind (`group/Kind`), registered by its controller.
    kinds: Arc<Mutex<HashMap<String, KindCaches>>>,
    claim_namespace: String,
}

/// Keeps of a CRD's or XRD's metadata what the rules read (name, deletion, owners): a CRD's managed fields list
/// every field of its schema, and one applied with kubectl carries its whole text in an annotation.
fn only_what_offers_read<K>(object: &mut PartialObjectMeta<K>) {
    object.metadata.managed_fields = None;
    object.metadata.annotations = None;
    object.metadata.labels = None;
}

pub fn xrd_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.crossplane.io", "v1", "CompositeResourceDefinition"),
        "compositeresourcedefinitions",
    )
}

impl RemoteCaches {
    /// Starts the watches behind the caches; the tasks run until aborted. `buffer`: how many Secret changes a
    /// listener may fall behind before it hears that it missed some.
    pub fn start(
        local: &Client,
        remote: &Client,
        claim_namespace: &str,
        buffer: usize,
    ) -> (RemoteCaches, Vec<JoinHandle<()>>) {
        let (secret_changes, _) = broadcast::channel(buffer.max(1));
        let sender = secret_changes.clone();
        let (secrets, secret_events) = Cache::fill(
            watcher(
                Api::<Secret>::namespaced(remote.clone(), claim_namespace),
                watcher::Config::default(),
            )
            .default_backoff(),
        );
        let secret_events = secret_events.touched_objects();
        let secrets_task = tokio::spawn(async move {
            let mut events = std::pin::pin!(secret_events);
            while let Some(event) = events.next().await {
                if let Ok(secret) = event {
                    let _ = sender.send(secret.name_any());
                }
            }
        });
        let (crds, crd_events) = Cache::fill(
            watcher(
                Api::<PartialObjectMeta<CustomResourceDefinition>>::all(remote.clone()),
                watcher::Config::default(),
            )
            .default_backoff()
            .modify(only_what_offers_read),
        );
        let crds_task = tokio::spawn(crd_events.for_each(|_| futures::future::ready(())));
        let (xrd_deletions, _) = broadcast::channel(256);
        let sender = xrd_deletions.clone();
        let (xrds, xrd_events) = Cache::fill(
            watcher(
                Api::<PartialObjectMeta<DynamicObject>>::all_with(remote.clone(), &xrd_resource()),
                watcher::Config::default(),
            )
            .default_backoff()
            .modify(only_what_offers_read),
        );
        let xrd_events = xrd_events.touched_objects();
        let xrds_task = tokio::spawn(async move {
            let mut events = std::pin::pin!(xrd_events);
            while let Some(event) = events.next().await {
                if let Ok(xrd) = event
                    && xrd.metadata.deletion_timestamp.is_some()
                {
                    let _ = sender.send(xrd.name_any());
                }
            }
        });
        let (local_secrets, local_task) = watched(
            Api::<Secret>::all(local.clone()),
            watcher::Config::default().labels(&format!("{MANAGED_BY}=claimsync")),
        );
        let caches = RemoteCaches {
            secrets,
            secret_changes,
            crds,
            xrds,
            xrd_deletions,
            local_secrets,
            kinds: Arc::default(),
            claim_namespace: claim_namespace.to_string(),
        };
        (caches, vec![secrets_task, crds_task, xrds_task, local_task])
    }

    /// A Secret of the claim namespace, if the cache has been filled (`None`: not listed yet, ask the API server).
    pub async fn secret(&self, name: &str) -> Option<Option<Arc<Secret>>> {
        let key = ObjectRef::new(name).within(&self.claim_namespace);
        let ready = self.secrets.ready_within(CACHE_WAIT).await;
        ready.then(|| self.secrets.store.get(&key))
    }

    /// A connection Secret claimsync made, if the cache holds it (None: not claimsync's, or not listed yet).
    pub fn local_secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.local_secrets.store.get(&ObjectRef::new(name).within(namespace))
    }

    pub fn register(&self, key: &str, caches: KindCaches) {
        self.kinds.lock().expect("kind caches").insert(key.to_string(), caches);
    }

    /// The caches of a kind (`group/Kind`), if its controller runs.
    pub fn kind(&self, key: &str) -> Option<KindCaches> {
        self.kinds.lock().expect("kind caches").get(key).cloned()
    }
}

/// A cache kept by a watch of `api` that a task of its own drives (until aborted).
fn watched<K>(api: Api<K>, config: watcher::Config) -> (Cache<K>, JoinHandle<()>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (cache, events) = Cache::fill(watcher(api, config).default_backoff());
    (cache, tokio::spawn(events.for_each(|_| futures::future::ready(()))))
}

/// A store and whether its first listing has filled it, which any number of tasks may wait for.
#[derive(Clone)]
pub struct Cache<K> {
    pub store: Store<K>,
    filled: watch::Receiver<bool>,
}

impl<K: kube::Resource + Clone + 'static> Cache<K> {
    /// A cache, and the watch stream that fills it (to be driven by its owner).
    pub fn fill<S>(events: S) -> (Self, impl Stream<Item = S::Item> + Send)
    where
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
        K: Send + Sync,
    {
        let (filled, filled_rx) = watch::channel(false);
        let mut writer = Writer::default();
        let cache = Cache {
            store: writer.reader(),
            filled: filled_rx,
        };
        let events = events.inspect(move |event| {
            if let Ok(event) = event {
                writer.apply(event);
                if let watcher::Event::InitDone = event {
                    filled.send_replace(true);
                }
            }
        });
        (cache, events)
    }

    /// A cache no watch fills: empty, and never filled (for a caller that must hand one over but reads none).
    pub fn unwatched() -> Self {
        let (_, filled) = watch::channel(false);
        Cache {
            store: Writer::default().reader(),
            filled,
        }
    }

    /// Whether the first listing has filled it.
    pub fn ready(&self) -> bool {
        *self.filled.borrow()
    }

    /// Whether it is filled, waiting up to `limit` for its first listing (a reconcile that starts while the caches
    /// are still listing waits for them rather than asking the API server about each object).
    pub async fn ready_within(&self, limit: std::time::Duration) -> bool {
        self.ready() || tokio::time::timeout(limit, self.filled()).await.unwrap_or(false)
    }

    /// Waits until the first listing has filled it; `false` if its watch stream was dropped before that. Any number
    /// of tasks may wait.
    pub async fn filled(&self) -> bool {
        self.filled.clone().wait_for(|filled| *filled).await.is_ok()
    }
}

/// The key a kind's caches are registered under.
pub fn kind_key(group: &str, kind: &str) -> String {
    format!("{group}/{kind}")
}
