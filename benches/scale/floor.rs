//! The replication floor of the scale benchmark: the writes a replicated claim needs (the local finalizer, the
//! twin's create, the local status; a spec edit up, a status change down; the twin's delete and the finalizer's
//! removal), made by a plain kube-rs client driven by two watches, at claimsync's concurrency, on the same API
//! servers, in namespaces claimsync does not replicate. claimsync's figures are set beside it as ratios.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::{Mirror, concurrency};
use crate::platform_support::TestKind;
use crate::support;

const FINALIZER: &str = "bench.claimsync.dev/floor";

/// The floor's replicator and its two namespaces, with mirrors of each.
pub(super) struct Floor {
    pub local: Api<DynamicObject>,
    pub twins: Api<DynamicObject>,
    pub local_mirror: Mirror,
    pub twin_mirror: Mirror,
    task: JoinHandle<()>,
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the floor last wrote for one claim, and whether a pass over it runs (a change meanwhile runs it again).
#[derive(Default)]
struct Written {
    spec: Value,
    status: Value,
    running: bool,
    again: bool,
}

type Ledger = Arc<Mutex<HashMap<String, Written>>>;

impl Floor {
    pub async fn start(app: &Client, control_plane: &Client, kind: &TestKind) -> Floor {
        let local_ns = support::namespace(app, "bench-floor").await;
        let twin_ns = support::namespace(control_plane, "bench-floor").await;
        let local = kind.claims(app, &local_ns);
        let twins = kind.claims(control_plane, &twin_ns);
        let task = tokio::spawn(replicate(local.clone(), twins.clone(), kind.resource.clone()));
        Floor {
            local_mirror: Mirror::start(local.clone()),
            twin_mirror: Mirror::start(twins.clone()),
            local,
            twins,
            task,
        }
    }
}

/// The latest claims and twins, by name, as the watches delivered them (what claimsync's caches give it).
#[derive(Default)]
struct Seen {
    claims: HashMap<String, DynamicObject>,
    twins: HashMap<String, DynamicObject>,
}

/// Each local claim's change and each twin's is handled in a task of its own, at most `concurrency()` at once and
/// one at a time per claim, straight from the watch (no queue in between). Nothing is read but by the two watches.
async fn replicate(local: Api<DynamicObject>, twins: Api<DynamicObject>, resource: ApiResource) {
    let width = Arc::new(Semaphore::new(concurrency()));
    let ledger: Ledger = Ledger::default();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut claims = watcher(local.clone(), watcher::Config::default()).boxed();
    let mut twin_events = watcher(twins.clone(), watcher::Config::default()).boxed();
    loop {
        let name = tokio::select! {
            Some(Ok(event)) = claims.next() => match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                    let name = o.name_any();
                    seen.lock().unwrap().claims.insert(name.clone(), o);
                    name
                }
                watcher::Event::Delete(o) => {
                    let name = o.name_any();
                    seen.lock().unwrap().claims.remove(&name);
                    ledger.lock().unwrap().remove(&name);
                    continue;
                }
                _ => continue,
            },
            Some(Ok(event)) = twin_events.next() => match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                    let name = o.name_any();
                    seen.lock().unwrap().twins.insert(name.clone(), o);
                    name
                }
                watcher::Event::Delete(o) => {
                    seen.lock().unwrap().twins.remove(&o.name_any());
                    continue;
                }
                _ => continue,
            },
            else => return,
        };
        {
            let mut ledger = ledger.lock().unwrap();
            let entry = ledger.entry(name.clone()).or_default();
            if entry.running {
                entry.again = true;
                continue;
            }
            entry.running = true;
        }
        let (local, twins, resource, ledger, width, seen) = (
            local.clone(),
            twins.clone(),
            resource.clone(),
            ledger.clone(),
            width.clone(),
            seen.clone(),
        );
        tokio::spawn(async move {
            let _slot = width.acquire().await.unwrap();
            loop {
                let (claim, twin) = {
                    let seen = seen.lock().unwrap();
                    (seen.claims.get(&name).cloned(), seen.twins.get(&name).cloned())
                };
                if let Some(claim) = claim
                    && let Err(e) = pass(&local, &twins, &resource, &ledger, &claim, twin.as_ref()).await
                {
                    eprintln!("bench: floor: {name}: {e}");
                }
                let mut ledger = ledger.lock().unwrap();
                let Some(entry) = ledger.get_mut(&name) else { break };
                if !entry.again {
                    entry.running = false;
                    break;
                }
                entry.again = false;
            }
        });
    }
}

/// One pass over a claim as last watched (and its twin): the writes claimsync would make, and no other.
async fn pass(
    local: &Api<DynamicObject>,
    twins: &Api<DynamicObject>,
    resource: &ApiResource,
    ledger: &Ledger,
    claim: &DynamicObject,
    twin: Option<&DynamicObject>,
) -> Result<(), kube::Error> {
    let name = &claim.name_any();
    if claim.metadata.deletion_timestamp.is_some() {
        if !claim.finalizers().iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        match twins.delete(name, &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e),
        }
        let finalizers: Vec<String> = claim.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
        local
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})),
            )
            .await?;
        return Ok(());
    }
    let (spec_sent, status_sent) = {
        let ledger = ledger.lock().unwrap();
        let entry = ledger.get(name);
        (
            entry.map(|e| e.spec.clone()).unwrap_or(Value::Null),
            entry.map(|e| e.status.clone()).unwrap_or(Value::Null),
        )
    };
    let spec = claim.data["spec"].clone();
    if !claim.finalizers().iter().any(|f| f == FINALIZER) {
        if !spec_sent.is_null() {
            return Ok(()); // handled already; the watch has not caught up with the finalizer
        }
        // A new claim: the finalizer first, then the twin, then the status.
        local
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": [FINALIZER]}})),
            )
            .await?;
        let twin = json!({
            "apiVersion": resource.api_version, "kind": resource.kind,
            "metadata": {"name": name, "labels": {
                "claimsync.dev/origin-name": name, "claimsync.dev/origin-namespace": claim.namespace(),
                "claimsync.dev/origin-cluster": "floor"}},
            "spec": spec,
        });
        let twin: DynamicObject = serde_json::from_value(twin).unwrap();
        twins.create(&PostParams::default(), &twin).await?;
        let status = replicated_status(&Value::Null);
        local
            .patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
            .await?;
        let mut ledger = ledger.lock().unwrap();
        let entry = ledger.entry(name.to_string()).or_default();
        entry.spec = spec;
        entry.status = status;
        return Ok(());
    }
    if spec != spec_sent && !spec_sent.is_null() {
        twins
            .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": spec})))
            .await?;
        ledger.lock().unwrap().entry(name.to_string()).or_default().spec = spec;
    }
    if let Some(twin) = twin {
        let status = replicated_status(&twin.data["status"]["conditions"]);
        if status != status_sent && !status_sent.is_null() {
            local
                .patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
                .await?;
            ledger.lock().unwrap().entry(name.to_string()).or_default().status = status;
        }
    }
    Ok(())
}

/// The twin's conditions, and Replicated=True.
fn replicated_status(twin_conditions: &Value) -> Value {
    let mut conditions: Vec<Value> = twin_conditions.as_array().cloned().unwrap_or_default();
    conditions.retain(|c| c["type"] != "Replicated");
    conditions.push(json!({"type": "Replicated", "status": "True", "reason": "Replicated",
                           "lastTransitionTime": "2026-01-01T00:00:00Z"}));
    json!({"conditions": conditions})
}

/// One burst through the floor: claims per second until all are Replicated, and the API servers' CPU per 1,000.
pub(super) struct FloorBurst {
    pub rate: f64,
    pub app_cpu: f64,
    pub control_plane_cpu: f64,
}

impl Floor {
    /// `size` claims created at once in the floor's namespace, until all are Replicated; then deleted.
    pub async fn burst(&self, size: usize, run: usize, resource: &ApiResource) -> FloorBurst {
        let names: Vec<String> = (0..size).map(|i| format!("f{run}-{i}")).collect();
        let before = super::cpu_now(0);
        let start = std::time::Instant::now();
        super::create_all(&self.local, resource, &names).await;
        let at = self
            .local_mirror
            .until(
                "every floor claim Replicated",
                std::time::Duration::from_secs(3600),
                |m| m.values().filter(|c| super::replicated(c)).count() >= size,
            )
            .await;
        let after = super::cpu_now(0);
        super::delete_all(
            &self.local,
            &[&self.twin_mirror, &self.local_mirror],
            "the floor's claims and twins to go",
        )
        .await;
        let per = |i: usize| (after[i] - before[i]) * 1000.0 / size as f64;
        FloorBurst {
            rate: size as f64 / (at - start).as_secs_f64(),
            app_cpu: per(1),
            control_plane_cpu: per(2),
        }
    }
}
