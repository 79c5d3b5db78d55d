//! The write-cost mode of the scale benchmark (`--steps N`, a mode of its own): each write a replicated claim needs,
//! made by server-side apply and the way the floor does, N objects at claimsync's concurrency, alternately,
//! with the API server's CPU per 1,000 writes and the rate. It answers "is server-side apply dearer than a create or
//! a merge patch for this step?" on these servers, in one run.

use std::time::Instant;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use claimsync::model::vocabulary::{MANAGER_DOWN, MANAGER_UP};

/// A resource version no object can have (etcd's first revision is the cluster's own first write): as the
/// precondition of an apply it fails (409) on any object that exists, and is not checked when the apply creates one.
const NO_OBJECT_HAS_IT: &str = "1";

use super::{Bench, Runs, at_concurrency, concurrency, cpu_seconds, env_pid, fmt};
use crate::support;

/// One way of making a step's writes.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    /// By server-side apply (the twin only if absent), as claimsync wrote every step before this measurement moved
    /// them to a create and merge patches.
    Apply,
    /// As the floor writes: a create, a merge patch.
    Floor,
}

/// CPU seconds per 1,000 writes and writes per second, per way, over the rounds.
#[derive(Default)]
struct Cost {
    cpu: [Runs; 2],
    rate: [Runs; 2],
}

impl Cost {
    fn push(&mut self, way: Way, cpu_per_1000: f64, rate: f64) {
        let i = usize::from(way == Way::Floor);
        self.cpu[i].push(cpu_per_1000);
        self.rate[i].push(rate);
    }
}

/// Ways to create a twin.
#[derive(Clone, Copy)]
enum Create {
    /// An apply whose resource version no object has (claimsync's only-if-absent create before this measurement).
    ApplyVersion,
    /// An apply with no precondition.
    ApplyPlain,
    /// A POST.
    Post,
}

fn way_create(way: Way) -> Create {
    match way {
        Way::Apply => Create::ApplyVersion,
        Way::Floor => Create::Post,
    }
}

/// Creates a twin for each of `names` the way `how` says; returns as [`timed`] does.
async fn create_twins(
    twins: &Api<DynamicObject>,
    names: &[String],
    api_version: &str,
    kind: &str,
    how: Create,
) -> (f64, f64) {
    timed("controlplane/apiserver", names, |name| {
        let (twins, mut body) = (twins.clone(), twin_body(&name, api_version, kind, 1));
        async move {
            if let Create::ApplyVersion = how {
                body["metadata"]["resourceVersion"] = json!(NO_OBJECT_HAS_IT);
            }
            match how {
                Create::Post => {
                    let object: DynamicObject = serde_json::from_value(body).expect("object");
                    twins.create(&PostParams::default(), &object).await
                }
                Create::ApplyVersion | Create::ApplyPlain => {
                    let params = PatchParams::apply(MANAGER_UP).force();
                    twins.patch(&name, &params, &Patch::Apply(&body)).await
                }
            }
            .unwrap_or_else(|e| panic!("bench: create twin {name}: {e}"));
        }
    })
    .await
}

/// A twin as claimsync writes one, with its labels (the same body both ways: only the write differs).
fn twin_body(name: &str, api_version: &str, kind: &str, size: i64) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "labels": {
            "claimsync.dev/origin-cluster": "bench",
            "claimsync.dev/origin-cluster-uid": "13321e7e-3f55-4d06-a6ff-710f89854276",
            "claimsync.dev/origin-name": name,
            "claimsync.dev/origin-namespace": "bench",
            "claimsync.dev/origin-uid": "d930d1d8-4af1-426d-9bab-ddfa32dcb093"}},
        "spec": {"size": size},
    })
}

fn status_body(name: &str) -> Value {
    json!({"conditions": [{"type": "Replicated", "status": "True", "reason": "Synced",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "message": format!("replicated to claims/claim-{name} on the control plane")}]})
}

/// Runs `write` for each of `names` at claimsync's concurrency and returns (CPU s per 1,000 of the API server
/// `server`, writes per second).
async fn timed<F, Fut>(server: &str, names: &[String], write: F) -> (f64, f64)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let pid = env_pid(server);
    let (cpu_before, started) = (cpu_seconds(pid), Instant::now());
    at_concurrency(names.iter().cloned(), write).await;
    let (cpu, took) = (cpu_seconds(pid) - cpu_before, started.elapsed().as_secs_f64());
    (cpu * 1000.0 / names.len() as f64, names.len() as f64 / took)
}

/// Deletes every object of `api` and waits until a LIST finds none.
async fn clear(api: &Api<DynamicObject>) {
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("bench: clear the step's objects");
    let deadline = Instant::now() + std::time::Duration::from_secs(300);
    while !api
        .list(&ListParams::default().limit(1))
        .await
        .expect("bench: list the step's objects")
        .items
        .is_empty()
    {
        assert!(Instant::now() < deadline, "bench: the step's objects not gone in 300 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

impl Bench {
    /// `count` writes per step and way, `self.sizes.runs` rounds, the ways' order flipped each round.
    pub(super) async fn steps(&mut self, app: &kube::Client, control_plane: &kube::Client, count: usize) {
        let resource = self.kind.resource.clone();
        let (api_version, kind) = (resource.api_version.clone(), resource.kind.clone());
        let twins = self
            .kind
            .claims(control_plane, &support::namespace(control_plane, "bench-steps").await);
        let claims = self.kind.claims(app, &support::namespace(app, "bench-steps").await);
        let (mut create, mut edit, mut status) = (Cost::default(), Cost::default(), Cost::default());
        let mut plain_create = Runs::default();
        for round in 0..self.sizes.runs {
            let ways = if round % 2 == 0 {
                [Way::Apply, Way::Floor]
            } else {
                [Way::Floor, Way::Apply]
            };
            for way in ways {
                eprintln!("bench: steps, round {} of {}", round + 1, self.sizes.runs);
                let names: Vec<String> = (0..count).map(|i| format!("s{round}-{i}")).collect();
                // The twin's create: an apply that fails on any existing object, or a POST.
                let (cpu, rate) = create_twins(&twins, &names, &api_version, &kind, way_create(way)).await;
                create.push(way, cpu, rate);
                // A spec edit up: the whole intent applied again, or a merge patch of the spec.
                let (cpu, rate) = timed("controlplane/apiserver", &names, |name| {
                    let (twins, body) = (twins.clone(), twin_body(&name, &api_version, &kind, 2));
                    async move {
                        match way {
                            Way::Apply => {
                                let params = PatchParams::apply(MANAGER_UP).force();
                                twins.patch(&name, &params, &Patch::Apply(&body)).await
                            }
                            Way::Floor => {
                                let patch = json!({"spec": body["spec"]});
                                twins.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await
                            }
                        }
                        .unwrap_or_else(|e| panic!("bench: edit twin {name}: {e}"));
                    }
                })
                .await;
                edit.push(way, cpu, rate);
                // The local status: claims made as a user makes them (not timed), then their status written.
                super::create_all(&claims, &resource, &names).await;
                let (cpu, rate) = timed("app/apiserver", &names, |name| {
                    let (claims, (api_version, kind)) = (claims.clone(), (api_version.clone(), kind.clone()));
                    async move {
                        let status = status_body(&name);
                        match way {
                            Way::Apply => {
                                // claimsync also names the version its cache holds (a precondition); no cache
                                // here, and a GET would be counted, so the apply goes without it.
                                let body = json!({"apiVersion": api_version, "kind": kind,
                                    "metadata": {"name": name}, "status": status});
                                let params = PatchParams::apply(MANAGER_DOWN).force();
                                claims.patch_status(&name, &params, &Patch::Apply(&body)).await
                            }
                            Way::Floor => {
                                let patch = json!({"status": status});
                                claims
                                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                                    .await
                            }
                        }
                        .unwrap_or_else(|e| panic!("bench: status of {name}: {e}"));
                    }
                })
                .await;
                status.push(way, cpu, rate);
                clear(&twins).await;
                clear(&claims).await;
            }
            // An apply with no precondition beside them: what the only-if-absent precondition costs. (A uid no
            // object has is not another such precondition: the API server refuses that create, "uid mismatch".)
            let names: Vec<String> = (0..count).map(|n| format!("x{round}-{n}")).collect();
            let (cpu, _) = create_twins(&twins, &names, &api_version, &kind, Create::ApplyPlain).await;
            plain_create.push(cpu);
            clear(&twins).await;
        }
        let t = &mut self.table;
        t.add(
            "steps",
            "twin create, apply with no precondition (would change a taken name's object): control plane API \
             server CPU per 1,000 writes",
            plain_create.show(" s"),
            create.cpu[1].show(" s"),
            format!("{}x", fmt(plain_create.median() / create.cpu[1].median())),
            "",
        );
        for (what, server, cost) in [
            ("twin create (apply only-if-absent vs POST)", "control plane", &create),
            ("spec edit up (apply vs merge patch)", "control plane", &edit),
            ("local status (apply vs merge patch)", "app", &status),
        ] {
            t.add(
                "steps",
                format!("{what}: {server} API server CPU per 1,000 writes"),
                cost.cpu[0].show(" s"),
                cost.cpu[1].show(" s"),
                format!("{}x", fmt(cost.cpu[0].median() / cost.cpu[1].median())),
                "keep the cheaper",
            );
            t.add(
                "steps",
                format!("{what}: writes per second at concurrency {}", concurrency()),
                cost.rate[0].show("/s"),
                cost.rate[1].show("/s"),
                format!("{}x", fmt(cost.rate[0].median() / cost.rate[1].median())),
                "",
            );
        }
    }
}
