//! The scale benchmark: claimsync measured side by side with the raw API servers it sits between, in one run, and
//! printed as one table of medians, spreads and ratios to the limit. Not part of the test suite; `e2e/bench` runs it
//! (`e2e/bench --help` for the sizes). It reuses the integration tests' env, instance and platform helpers.
#![forbid(unsafe_code)]

#[path = "scale/floor.rs"]
mod floor;
#[allow(dead_code)]
#[path = "../tests/instance.rs"]
mod instance;
#[allow(dead_code)]
#[path = "../tests/platform_support.rs"]
mod platform_support;
#[path = "scale/pressure.rs"]
mod pressure;
#[path = "scale/steps.rs"]
mod steps;
#[allow(dead_code)]
#[path = "../tests/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use instance::{Instance, in_sync, metric_sum};
use platform_support::TestKind;
use support::env;

/// claimsync's `--concurrency` (its default, or `CLAIMSYNC_CONCURRENCY`, which the claimsync under test inherits):
/// the raw client writes at the same width.
fn concurrency() -> usize {
    std::env::var("CLAIMSYNC_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

struct Sizes {
    /// Claims applied at once, per burst (no controller).
    bursts: Vec<usize>,
    /// Claims applied at once under real Crossplane (the seed-like kind of the test platform).
    crossplane_burst: usize,
    /// Changes timed one after another, per direction and run.
    changes: usize,
    /// Repetitions of the latency, limit and read figures, and of bursts up to `repeat_bursts_up_to`.
    runs: usize,
    repeat_bursts_up_to: usize,
    /// `--churn`: claims in all and per wave (a mode of its own).
    churn: Option<(usize, usize)>,
    /// `--crds`: foreign CRDs to add to the control plane (a mode of its own).
    crds: Option<usize>,
    /// `--steps`: writes per step and way, claimsync's against the floor's (a mode of its own).
    steps: Option<usize>,
}

impl Sizes {
    fn parse() -> Sizes {
        let mut sizes = Sizes {
            bursts: vec![200],
            crossplane_burst: 50,
            changes: 100,
            runs: 2,
            repeat_bursts_up_to: 1000,
            churn: None,
            steps: None,
            crds: None,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let value = || args.get(i + 1).cloned().unwrap_or_default();
            let number = |what: &str| {
                value()
                    .parse::<usize>()
                    .unwrap_or_else(|_| panic!("{what} wants a number, got {:?}", value()))
            };
            match args[i].as_str() {
                "--bursts" => {
                    sizes.bursts = value()
                        .split(',')
                        .map(|n| {
                            n.parse()
                                .unwrap_or_else(|_| panic!("--bursts wants numbers, got {n:?}"))
                        })
                        .collect()
                }
                "--crossplane-burst" => sizes.crossplane_burst = number("--crossplane-burst"),
                "--changes" => sizes.changes = number("--changes"),
                "--runs" => sizes.runs = number("--runs").max(1),
                "--repeat-bursts-up-to" => sizes.repeat_bursts_up_to = number("--repeat-bursts-up-to"),
                "--churn" => {
                    // An optional TOTAL,WAVE; 50,000 in waves of 5,000 without.
                    let given = value()
                        .split_once(',')
                        .and_then(|(t, w)| Some((t.parse().ok()?, w.parse().ok()?)));
                    sizes.churn = Some(given.unwrap_or((50_000, 5_000)));
                    i += if given.is_some() { 2 } else { 1 };
                    continue;
                }
                "--crds" => sizes.crds = Some(number("--crds")),
                "--steps" => sizes.steps = Some(number("--steps")),
                "--full" => {
                    sizes.bursts = vec![1000, 5000, 10000];
                    sizes.crossplane_burst = 200;
                    sizes.changes = 1000;
                    sizes.runs = 3;
                    i += 1;
                    continue;
                }
                "--help" | "-h" => {
                    println!(
                        "scale [--full] [--bursts 1000,5000,10000] [--crossplane-burst 200] [--changes 1000] \
                         [--runs 3] [--repeat-bursts-up-to 1000]\n\
                         scale --churn [TOTAL,WAVE] (default 50000,5000) | --crds N | --steps N [--runs R]   \
                         (modes of their own)"
                    );
                    std::process::exit(0);
                }
                // cargo bench passes --bench; other harness flags mean nothing here.
                _ => {
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        sizes
    }
}

/// A figure measured once per run.
#[derive(Default, Clone)]
struct Runs(Vec<f64>);

impl Runs {
    fn push(&mut self, v: f64) {
        self.0.push(v);
    }
    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    fn show(&self, unit: &str) -> String {
        let (lo, hi) = self.0.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
        if self.0.len() < 2 {
            format!("{}{unit} (n=1)", fmt(self.median()))
        } else {
            format!(
                "{}{unit} ({}-{}, n={})",
                fmt(self.median()),
                fmt(lo),
                fmt(hi),
                self.0.len()
            )
        }
    }
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The `q` quantile (0..=1) of samples, nearest rank.
fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One row of the table.
struct Row {
    section: &'static str,
    what: String,
    claimsync: String,
    limit: String,
    ratio: String,
    goal: String,
}

#[derive(Default)]
struct Table(Vec<Row>);

impl Table {
    fn add(
        &mut self,
        section: &'static str,
        what: impl Into<String>,
        claimsync: impl Into<String>,
        limit: impl Into<String>,
        ratio: impl Into<String>,
        goal: &str,
    ) {
        let row = Row {
            section,
            what: what.into(),
            claimsync: claimsync.into(),
            limit: limit.into(),
            ratio: ratio.into(),
            goal: goal.into(),
        };
        eprintln!(
            "  {} | {} | {} | {} | {} | {}",
            row.section, row.what, row.claimsync, row.limit, row.ratio, row.goal
        );
        self.0.push(row);
    }

    fn print(&self) {
        let headers = ["section", "measure", "claimsync", "limit (raw)", "ratio", "goal"];
        let cells: Vec<[String; 6]> = self
            .0
            .iter()
            .map(|r| {
                [
                    r.section.to_string(),
                    r.what.clone(),
                    r.claimsync.clone(),
                    r.limit.clone(),
                    r.ratio.clone(),
                    r.goal.clone(),
                ]
            })
            .collect();
        println!("| {} |", headers.join(" | "));
        println!("|{}|", headers.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
        for row in cells {
            println!("| {} |", row.join(" | "));
        }
    }
}

/// A watch of one collection, kept as the latest objects by name, with a signal on every change.
struct Mirror {
    objects: watch::Receiver<BTreeMap<String, Arc<DynamicObject>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mirror {
    fn start(api: Api<DynamicObject>) -> Mirror {
        let (tx, rx) = watch::channel(BTreeMap::new());
        let task = tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
            let mut pending: Option<BTreeMap<String, Arc<DynamicObject>>> = None;
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(o)) => tx.send_modify(|m| {
                        m.insert(o.name_any(), Arc::new(o));
                    }),
                    Ok(watcher::Event::Delete(o)) => tx.send_modify(|m| {
                        m.remove(&o.name_any());
                    }),
                    Ok(watcher::Event::Init) => pending = Some(BTreeMap::new()),
                    Ok(watcher::Event::InitApply(o)) => {
                        pending.get_or_insert_default().insert(o.name_any(), Arc::new(o));
                    }
                    Ok(watcher::Event::InitDone) => {
                        let _ = tx.send(pending.take().unwrap_or_default());
                    }
                    Err(_) => {}
                }
            }
        });
        Mirror { objects: rx, task }
    }

    /// Waits until `done` holds of the objects; the time it first did.
    async fn until(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&BTreeMap<String, Arc<DynamicObject>>) -> bool,
    ) -> Instant {
        let mut rx = self.objects.clone();
        match tokio::time::timeout(limit, rx.wait_for(|m| done(m))).await {
            Ok(Ok(_)) => Instant::now(),
            _ => panic!("bench: timed out after {limit:?} waiting for {what}"),
        }
    }

    fn count(&self, matching: impl Fn(&DynamicObject) -> bool) -> usize {
        self.objects.borrow().values().filter(|o| matching(o)).count()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn replicated(claim: &DynamicObject) -> bool {
    claim.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Replicated" && c["status"] == "True"))
}

fn claim(name: &str, size: i64) -> DynamicObject {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"size": size}})).unwrap()
}

/// Runs `each` for every one of `names`, `concurrency()` at once, as one client would.
async fn at_concurrency<F, Fut>(names: impl IntoIterator<Item = String>, each: F)
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::iter(names)
        .map(each)
        .buffer_unordered(concurrency())
        .collect::<Vec<_>>()
        .await;
}

/// Creates `names` in `api` at `CONCURRENCY` writes at once, as one client would.
async fn create_all(api: &Api<DynamicObject>, resource: &ApiResource, names: &[String]) {
    at_concurrency(names.iter().cloned(), |name| {
        let api = api.clone();
        let resource = resource.clone();
        async move {
            let mut object = claim(&name, 1);
            object.types = Some(kube::api::TypeMeta {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
            });
            api.create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("bench: create {name}: {e}"));
        }
    })
    .await;
}

/// Deletes every object of `api` (a namespace's claims) and waits until each of `mirrors` holds none.
async fn delete_all(api: &Api<DynamicObject>, mirrors: &[&Mirror], what: &str) {
    // A collection of 10,000 may take the API server longer than the client waits; the deletion goes on, and
    // asking again is harmless.
    for attempt in 1..=3 {
        match api
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
        {
            Ok(_) => break,
            Err(e) if attempt < 3 => eprintln!("bench: delete {what}: {e}; asking again"),
            Err(e) => panic!("bench: delete {what}: {e}"),
        }
    }
    for mirror in mirrors {
        mirror.until(what, Duration::from_secs(1200), |m| m.is_empty()).await;
    }
}

/// Crossplane paused or running (SIGSTOP / SIGCONT of its process): with it paused, a claim kind has no controller,
/// and what is measured is claimsync's own cost.
fn crossplane(signal: &str) {
    let pid = std::fs::read_to_string(env().dir.join("controlplane/crossplane.pid"))
        .expect("bench: the env's Crossplane pid file");
    let status = std::process::Command::new("kill")
        // The file holds the pid and its start time.
        .args([signal, pid.split_whitespace().next().unwrap_or_default()])
        .status()
        .expect("bench: kill");
    assert!(status.success(), "bench: kill {signal} Crossplane");
}

/// The peak and current resident memory of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU seconds (user and system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis start at the third (state); utime and stime are the 14th and
    // 15th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / 100.0
}

/// The pid of one of the env's processes (`app/apiserver`), from its pid file (pid, then start time).
fn env_pid(process: &str) -> u32 {
    let text = std::fs::read_to_string(env().dir.join(format!("{process}.pid"))).unwrap_or_default();
    text.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(0)
}

/// CPU seconds used so far by claimsync, the app cluster's API server and the control plane's (each with its etcd).
fn cpu_now(claimsync: u32) -> [f64; 3] {
    [
        cpu_seconds(claimsync),
        cpu_seconds(env_pid("app/apiserver")),
        cpu_seconds(env_pid("controlplane/apiserver")),
    ]
}

fn show_cpu(before: [f64; 3], after: [f64; 3], claims: usize) -> String {
    let per = |i: usize| (after[i] - before[i]) * 1000.0 / claims as f64;
    format!(
        "claimsync {} s, app API server {} s, control plane API server {} s",
        fmt(per(0)),
        fmt(per(1)),
        fmt(per(2))
    )
}

/// claimsync's own count of API requests by (cluster, verb), from its metrics.
async fn requests(instance: &Instance) -> BTreeMap<(String, String), f64> {
    let metrics = instance.ops("/metrics").await.unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("claimsync_api_requests_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        let value = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        *counts.entry((label("cluster"), label("verb"))).or_default() += value;
    }
    counts
}

/// claimsync's queue wait so far: the sum of the waits in ms, and how many reconciles waited.
async fn queue_wait(instance: &Instance) -> (f64, f64) {
    let metrics = instance.ops("/metrics").await.unwrap_or_default();
    (
        metric_sum(&metrics, "claimsync_queue_wait_seconds_sum") * 1000.0,
        metric_sum(&metrics, "claimsync_queue_wait_seconds_count"),
    )
}

/// The calls made between two counts, per unit of work (`units` edits or claims), by cluster and verb.
fn requests_per(
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
    units: f64,
) -> String {
    let parts: Vec<String> = after
        .iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .map(|((cluster, verb), v)| format!("{cluster} {verb} {}", fmt(v / units)))
        .collect();
    parts.join(", ")
}

fn show_requests(counts: &BTreeMap<(String, String), f64>, writes: bool) -> String {
    let write = |verb: &str| matches!(verb, "POST" | "PUT" | "PATCH" | "DELETE");
    let parts: Vec<String> = counts
        .iter()
        .filter(|((_, verb), _)| write(verb) == writes)
        .map(|((cluster, verb), n)| format!("{cluster} {verb} {n:.0}"))
        .collect();
    if parts.is_empty() { "0".into() } else { parts.join(", ") }
}

/// `n` sequential merge patches of one ConfigMap: the latency of a single write on that API server, in ms.
async fn raw_write_latency(client: &Client, namespace: &str, n: usize) -> Vec<f64> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "bench-latency"}})).unwrap();
    let _ = api.create(&PostParams::default(), &cm).await;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let patch = json!({"data": {"i": i.to_string()}});
        let start = Instant::now();
        api.patch("bench-latency", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("bench: raw write");
        samples.push(ms(start.elapsed()));
    }
    samples
}

/// A claim edited on the control plane with no controller about: per edit, how long the write took and how long
/// until a watcher (`mirror`) saw it. The floor of one hop of replication: spec up is a local edit seen by
/// claimsync's watch, then this on the control plane.
async fn raw_watched_write_latency(
    api: &Api<DynamicObject>,
    resource: &ApiResource,
    mirror: &Mirror,
    n: usize,
) -> (Vec<f64>, Vec<f64>) {
    let name = "bench-floor";
    let _ = api
        .create(&PostParams::default(), &typed(claim(name, 0), resource))
        .await;
    let (mut written, mut seen) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 1..=n as i64 {
        let start = Instant::now();
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": i}})),
        )
        .await
        .expect("bench: raw claim edit");
        written.push(ms(start.elapsed()));
        let at = mirror
            .until("a watcher to see the raw edit", Duration::from_secs(60), move |m| {
                m.get(name).is_some_and(|c| c.data["spec"]["size"] == i)
            })
            .await;
        seen.push(ms(at - start));
    }
    let _ = api.delete(name, &Default::default()).await;
    (written, seen)
}

struct Bench {
    sizes: Sizes,
    table: Table,
    instance: Instance,
    kind: TestKind,
    /// The app namespace of the bench's claims.
    namespace: String,
    local: Api<DynamicObject>,
    twins: Api<DynamicObject>,
    local_mirror: Mirror,
    twin_mirror: Mirror,
    /// Raw create throughput (claims/s) per run, on the control plane, no controller.
    raw_rate: Runs,
    /// Raw single-write latency (ms) per run: p50 and p99 on the control plane and on the app cluster.
    raw_p50: Runs,
    raw_p99: Runs,
    /// The replication floor: the same writes by a plain client, in namespaces of its own.
    floor: floor::Floor,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let sizes = Sizes::parse();
    let started = Instant::now();
    let control_plane = support::control_plane().await;
    let app = support::app().await;
    eprintln!("bench: offering the bench kind");
    let kind = TestKind::offer(&control_plane, "bench", "Bench", json!({})).await;
    let mut instance = Instance::new("bench").await;
    instance.start().await;
    kind.wait_local(&app).await;
    let namespace = instance.namespace("bench").await;
    let local = kind.claims(&app, &namespace);
    let twins = kind.claims(&control_plane, &instance.claim_namespace);
    let floor = floor::Floor::start(&app, &control_plane, &kind).await;
    let mut bench = Bench {
        local_mirror: Mirror::start(local.clone()),
        twin_mirror: Mirror::start(twins.clone()),
        sizes,
        table: Table::default(),
        instance,
        kind,
        namespace,
        local,
        twins,
        raw_rate: Runs::default(),
        raw_p50: Runs::default(),
        raw_p99: Runs::default(),
        floor,
    };
    if let Some(count) = bench.sizes.steps {
        crossplane("-STOP");
        bench.steps(&app, &control_plane, count).await;
        crossplane("-CONT");
        println!();
        println!(
            "claimsync write-cost benchmark, {} ({count} writes per step and way, {} rounds; {:.0} s)",
            std::env::consts::ARCH,
            bench.sizes.runs,
            started.elapsed().as_secs_f64()
        );
        bench.table.print();
        return;
    }
    if bench.sizes.churn.is_some() || bench.sizes.crds.is_some() {
        crossplane("-STOP");
        if let Some((total, wave)) = bench.sizes.churn {
            bench.churn(total, wave).await;
        }
        if let Some(count) = bench.sizes.crds {
            bench.foreign_crds(&control_plane, count).await;
        }
        crossplane("-CONT");
        println!();
        println!(
            "claimsync pressure benchmark, {} (churn {:?}, foreign CRDs {:?}; {:.0} s)",
            std::env::consts::ARCH,
            bench.sizes.churn,
            bench.sizes.crds,
            started.elapsed().as_secs_f64()
        );
        bench.table.print();
        return;
    }
    crossplane("-STOP");
    let outcome = std::panic::AssertUnwindSafe(bench.run(&app, &control_plane));
    let result = futures::FutureExt::catch_unwind(outcome).await;
    crossplane("-CONT");
    if let Err(panic) = result {
        bench.table.print();
        std::panic::resume_unwind(panic);
    }
    bench.crossplane_burst(&app, &control_plane).await;
    bench.xr_burst(&app, &control_plane).await;
    println!();
    println!(
        "claimsync scale benchmark, {} (bursts {:?}, {} changes, {} runs; {:.0} s)",
        std::env::consts::ARCH,
        bench.sizes.bursts,
        bench.sizes.changes,
        bench.sizes.runs,
        started.elapsed().as_secs_f64()
    );
    bench.table.print();
}

impl Bench {
    async fn run(&mut self, app: &Client, control_plane: &Client) {
        self.limits(app, control_plane).await;
        self.latency().await;
        let bursts = self.sizes.bursts.clone();
        // Reads are measured with 1,000 claims (or the burst nearest below), the restart with the largest burst.
        let read_at = bursts
            .iter()
            .copied()
            .filter(|n| *n <= 1000)
            .max()
            .or(bursts.first().copied());
        for (i, size) in bursts.iter().enumerate() {
            self.burst(*size).await;
            if Some(*size) == read_at {
                self.reads(app, *size).await;
            }
            if i + 1 == bursts.len() {
                self.restart(*size).await;
            }
            delete_all(
                &self.local,
                &[&self.twin_mirror, &self.local_mirror],
                "the burst's claims and twins to go",
            )
            .await;
        }
    }

    /// The raw API servers: single-write latency on each, create throughput on the control plane.
    async fn limits(&mut self, app: &Client, control_plane: &Client) {
        eprintln!("bench: limits");
        let scratch = support::namespace(control_plane, "bench-raw").await;
        let app_scratch = support::namespace(app, "bench-raw").await;
        let (mut cp50, mut cp99, mut app50, mut app99) =
            (Runs::default(), Runs::default(), Runs::default(), Runs::default());
        let raw_claims = self.kind.claims(control_plane, &scratch);
        let raw_mirror = Mirror::start(raw_claims.clone());
        let mut raw_cpu = Runs::default();
        let (mut claim50, mut claim99, mut seen50, mut seen99) =
            (Runs::default(), Runs::default(), Runs::default(), Runs::default());
        let size = self.sizes.bursts.iter().copied().min().unwrap_or(200).min(1000);
        for run in 0..self.sizes.runs {
            let samples = raw_write_latency(control_plane, &scratch, self.sizes.changes.max(50)).await;
            cp50.push(quantile(&samples, 0.5));
            cp99.push(quantile(&samples, 0.99));
            let samples = raw_write_latency(app, &app_scratch, self.sizes.changes.max(50)).await;
            app50.push(quantile(&samples, 0.5));
            app99.push(quantile(&samples, 0.99));
            let (written, seen) = raw_watched_write_latency(
                &raw_claims,
                &self.kind.resource,
                &raw_mirror,
                self.sizes.changes.max(50),
            )
            .await;
            claim50.push(quantile(&written, 0.5));
            claim99.push(quantile(&written, 0.99));
            seen50.push(quantile(&seen, 0.5));
            seen99.push(quantile(&seen, 0.99));
            if run == 0 {
                // Warm the client's connections and the API server's caches: the first creates of a kind are slower.
                let warm: Vec<String> = (0..50).map(|i| format!("warm-{i}")).collect();
                create_all(&raw_claims, &self.kind.resource, &warm).await;
                delete_all(&raw_claims, &[&raw_mirror], "the warm-up claims to go").await;
            }
            let names: Vec<String> = (0..size).map(|i| format!("raw-{run}-{i}")).collect();
            let (cpu_before, start) = (cpu_now(0), Instant::now());
            create_all(&raw_claims, &self.kind.resource, &names).await;
            self.raw_rate.push(size as f64 / start.elapsed().as_secs_f64());
            raw_cpu.push((cpu_now(0)[2] - cpu_before[2]) * 1000.0 / size as f64);
            delete_all(&raw_claims, &[&raw_mirror], "the raw claims to go").await;
        }
        self.raw_p50 = cp50.clone();
        self.raw_p99 = cp99.clone();
        let t = &mut self.table;
        t.add("limit", "single write p50, control plane", "", cp50.show(" ms"), "", "");
        t.add("limit", "single write p99, control plane", "", cp99.show(" ms"), "", "");
        t.add("limit", "single write p50, app cluster", "", app50.show(" ms"), "", "");
        t.add("limit", "single write p99, app cluster", "", app99.show(" ms"), "", "");
        t.add(
            "limit",
            "claim edit p50 / p99, control plane",
            "",
            format!("{} / {}", claim50.show(" ms"), claim99.show(" ms")),
            "",
            "",
        );
        t.add(
            "limit",
            "claim edit until a watcher sees it, p50 / p99, control plane",
            "",
            format!("{} / {}", seen50.show(" ms"), seen99.show(" ms")),
            "",
            "one hop: spec up is two",
        );
        t.add(
            "limit",
            format!("create throughput, {size} claims, {} at once", concurrency()),
            "",
            self.raw_rate.show(" /s"),
            "",
            "",
        );
        t.add(
            "limit",
            "CPU per 1000 raw creates, control plane API server",
            "",
            raw_cpu.show(" s"),
            "",
            "",
        );
    }

    /// Spec up (local edit until the twin has it) and status down (twin status until the local claim shows it).
    async fn latency(&mut self) {
        eprintln!("bench: latency");
        let name = "latency";
        self.local
            .create(&PostParams::default(), &typed(claim(name, 0), &self.kind.resource))
            .await
            .expect("bench: the latency claim");
        let twin_name = claimsync::model::naming::remote_claim_name(name, &self.namespace, &self.instance.id);
        let twin_name2 = twin_name.clone();
        self.twin_mirror
            .until("the latency claim's twin", Duration::from_secs(60), |m| {
                m.contains_key(&twin_name2)
            })
            .await;
        let (mut up50, mut up95, mut up99): (Runs, Runs, Runs) = Default::default();
        let (mut down50, mut down95, mut down99): (Runs, Runs, Runs) = Default::default();
        let mut waits = Runs::default();
        let before = requests(&self.instance).await;
        let (mut floor_up50, mut floor_up99, mut floor_down50, mut floor_down99): (Runs, Runs, Runs, Runs) =
            Default::default();
        self.floor
            .local
            .create(&PostParams::default(), &typed(claim(name, 0), &self.kind.resource))
            .await
            .expect("bench: the floor's latency claim");
        self.floor
            .local_mirror
            .until("the floor's latency claim Replicated", Duration::from_secs(60), |m| {
                m.get(name).is_some_and(|c| replicated(c))
            })
            .await;
        for run in 0..self.sizes.runs {
            let (wait_before, waited_before) = queue_wait(&self.instance).await;
            let first = (run * self.sizes.changes) as i64 + 1;
            let sizes = first..first + self.sizes.changes as i64;
            let (up, down) = edit_latencies(
                (&self.local, &self.local_mirror),
                (&self.twins, &self.twin_mirror),
                name,
                &twin_name,
                sizes.clone(),
            )
            .await;
            let (floor_up, floor_down) = edit_latencies(
                (&self.floor.local, &self.floor.local_mirror),
                (&self.floor.twins, &self.floor.twin_mirror),
                name,
                name,
                sizes,
            )
            .await;
            floor_up50.push(quantile(&floor_up, 0.5));
            floor_up99.push(quantile(&floor_up, 0.99));
            floor_down50.push(quantile(&floor_down, 0.5));
            floor_down99.push(quantile(&floor_down, 0.99));
            let (wait_after, waited_after) = queue_wait(&self.instance).await;
            if waited_after > waited_before {
                waits.push((wait_after - wait_before) / (waited_after - waited_before));
            }
            up50.push(quantile(&up, 0.5));
            up95.push(quantile(&up, 0.95));
            up99.push(quantile(&up, 0.99));
            down50.push(quantile(&down, 0.5));
            down95.push(quantile(&down, 0.95));
            down99.push(quantile(&down, 0.99));
        }
        let after = requests(&self.instance).await;
        let per_edit = requests_per(&before, &after, (self.sizes.runs * self.sizes.changes) as f64);
        let raw50 = self.raw_p50.median();
        let t = &mut self.table;
        let n = self.sizes.changes;
        let ratio = |runs: &Runs, raw: f64| format!("{}x", fmt(runs.median() / raw));
        t.add(
            "latency",
            format!("spec up p50 ({n} edits/run)"),
            up50.show(" ms"),
            self.raw_p50.show(" ms"),
            ratio(&up50, raw50),
            "<= 2x raw write",
        );
        t.add("latency", "spec up p95", up95.show(" ms"), "", ratio(&up95, raw50), "");
        t.add(
            "latency",
            "spec up p99",
            up99.show(" ms"),
            self.raw_p99.show(" ms"),
            ratio(&up99, raw50),
            "<= 5x raw write p50",
        );
        t.add(
            "latency",
            format!("status down p50 ({n} patches/run)"),
            down50.show(" ms"),
            self.raw_p50.show(" ms"),
            ratio(&down50, raw50),
            "<= 2x raw write",
        );
        t.add(
            "latency",
            "status down p95",
            down95.show(" ms"),
            "",
            ratio(&down95, raw50),
            "",
        );
        t.add(
            "latency",
            "status down p99",
            down99.show(" ms"),
            self.raw_p99.show(" ms"),
            ratio(&down99, raw50),
            "<= 5x raw write p50",
        );
        let versus = |mine: &Runs, floor: &Runs| format!("{}x", fmt(mine.median() / floor.median()));
        let t = &mut self.table;
        t.add(
            "floor",
            "spec up p50, claimsync vs the floor",
            up50.show(" ms"),
            floor_up50.show(" ms"),
            versus(&up50, &floor_up50),
            "<= 1.25x the floor",
        );
        t.add(
            "floor",
            "spec up p99, claimsync vs the floor",
            up99.show(" ms"),
            floor_up99.show(" ms"),
            versus(&up99, &floor_up99),
            "<= 3x the floor",
        );
        t.add(
            "floor",
            "status down p50, claimsync vs the floor",
            down50.show(" ms"),
            floor_down50.show(" ms"),
            versus(&down50, &floor_down50),
            "<= 1.25x the floor",
        );
        t.add(
            "floor",
            "status down p99, claimsync vs the floor",
            down99.show(" ms"),
            floor_down99.show(" ms"),
            versus(&down99, &floor_down99),
            "<= 3x the floor",
        );
        self.table.add(
            "latency",
            "claimsync's queue wait, mean (watch event until the reconcile starts)",
            waits.show(" ms"),
            "",
            "",
            "in both rows above",
        );
        self.table.add(
            "latency",
            "claimsync's API calls per edit (one spec edit and one status patch)",
            per_edit,
            "",
            "",
            "",
        );
        self.local
            .delete(name, &DeleteParams::default())
            .await
            .expect("bench: delete the latency claim");
        delete_all(
            &self.floor.local,
            &[&self.floor.twin_mirror, &self.floor.local_mirror],
            "the floor's latency claim to go",
        )
        .await;
        let local_name = name.to_string();
        self.local_mirror
            .until("the latency claim to go", Duration::from_secs(60), move |m| {
                !m.contains_key(&local_name)
            })
            .await;
    }

    /// `size` claims applied locally at once: until all exist remotely, and until all are Replicated=True.
    async fn burst(&mut self, size: usize) {
        let runs = if size <= self.sizes.repeat_bursts_up_to {
            self.sizes.runs
        } else {
            1
        };
        let (mut remote, mut replicated_at, mut rss) = (Runs::default(), Runs::default(), Runs::default());
        let (mut cpu, mut calls) = (String::new(), String::new());
        let (mut floor_rate, mut floor_app, mut floor_cp) = (Runs::default(), Runs::default(), Runs::default());
        let (mut app_cpu, mut cp_cpu) = (Runs::default(), Runs::default());
        for run in 0..runs {
            eprintln!("bench: burst of {size} through the floor, run {}", run + 1);
            let floor = self.floor.burst(size, run, &self.kind.resource).await;
            floor_rate.push(floor.rate);
            floor_app.push(floor.app_cpu);
            floor_cp.push(floor.control_plane_cpu);
            eprintln!("bench: burst of {size}, run {}", run + 1);
            if run > 0 {
                delete_all(
                    &self.local,
                    &[&self.twin_mirror, &self.local_mirror],
                    "the burst's claims and twins to go",
                )
                .await;
            }
            let names: Vec<String> = (0..size).map(|i| format!("b{run}-{i}")).collect();
            let pid = self.instance.pid().expect("claimsync runs");
            let cpu_before = cpu_now(pid);
            let calls_before = requests(&self.instance).await;
            let start = Instant::now();
            create_all(&self.local, &self.kind.resource, &names).await;
            let created = start.elapsed();
            let at = self
                .twin_mirror
                .until("every twin", Duration::from_secs(3600), |m| m.len() >= size)
                .await;
            remote.push(size as f64 / (at - start).as_secs_f64());
            let at = self
                .local_mirror
                .until("every claim Replicated", Duration::from_secs(3600), |m| {
                    m.values().filter(|c| replicated(c)).count() >= size
                })
                .await;
            replicated_at.push(size as f64 / (at - start).as_secs_f64());
            let cpu_after = cpu_now(pid);
            cpu = show_cpu(cpu_before, cpu_after, size);
            app_cpu.push((cpu_after[1] - cpu_before[1]) * 1000.0 / size as f64);
            cp_cpu.push((cpu_after[2] - cpu_before[2]) * 1000.0 / size as f64);
            calls = requests_per(&calls_before, &requests(&self.instance).await, size as f64);
            rss.push(memory(self.instance.pid().expect("claimsync runs")).1);
            eprintln!("bench: applying {size} locally took {:.1} s", created.as_secs_f64());
        }
        let raw = self.raw_rate.median();
        let t = &mut self.table;
        let ratio = |runs: &Runs| format!("{:.0}%", 100.0 * runs.median() / raw);
        t.add(
            "burst",
            format!("{size} claims: all twins exist"),
            remote.show(" /s"),
            self.raw_rate.show(" /s"),
            ratio(&remote),
            ">= 80% of raw",
        );
        t.add(
            "burst",
            format!("{size} claims: all Replicated=True"),
            replicated_at.show(" /s"),
            self.raw_rate.show(" /s"),
            ratio(&replicated_at),
            ">= 80% of raw",
        );
        let of_floor = |mine: &Runs, floor: &Runs| format!("{:.0}%", 100.0 * mine.median() / floor.median());
        let times_floor = |mine: &Runs, floor: &Runs| format!("{}x", fmt(mine.median() / floor.median()));
        t.add(
            "floor",
            format!("{size} claims: all Replicated=True, claimsync vs the floor"),
            replicated_at.show(" /s"),
            floor_rate.show(" /s"),
            of_floor(&replicated_at, &floor_rate),
            ">= 80% of the floor",
        );
        t.add(
            "floor",
            format!("{size} claims: app API server CPU per 1000 claims, claimsync vs the floor"),
            app_cpu.show(" s"),
            floor_app.show(" s"),
            times_floor(&app_cpu, &floor_app),
            "<= 1.25x the floor",
        );
        t.add(
            "floor",
            format!("{size} claims: control plane API server CPU per 1000 claims, claimsync vs the floor"),
            cp_cpu.show(" s"),
            floor_cp.show(" s"),
            times_floor(&cp_cpu, &floor_cp),
            "<= 1.25x the floor",
        );
        t.add(
            "burst",
            format!("{size} claims: CPU per 1000 claims (last run)"),
            cpu,
            "",
            "",
            "where the time goes",
        );
        t.add(
            "burst",
            format!("{size} claims: claimsync's API calls per claim (last run)"),
            calls,
            "",
            "",
            "where the calls go",
        );
        t.add(
            "memory",
            format!("claimsync RSS with {size} claims"),
            rss.show(" MiB"),
            "",
            format!("{} KiB/claim", fmt(rss.median() * 1024.0 / size as f64)),
            "< 200 MiB at 10,000",
        );
    }

    /// What a reader of `size` claims waits: locally, and through the control plane behind 20 ms (the proxy's
    /// path), then with that path cut.
    async fn reads(&mut self, app: &Client, size: usize) {
        eprintln!("bench: reads of {size} claims");
        let link = support::link("bench-reads");
        env().script(&["link", "delay", "20", &link.name]);
        let proxied = support::client_for(&link.kubeconfig).await;
        let proxied_twins = self.kind.claims(&proxied, &self.instance.claim_namespace);
        let some_claim = self
            .local_mirror
            .objects
            .borrow()
            .keys()
            .next()
            .cloned()
            .expect("claims");
        let some_twin = claimsync::model::naming::remote_claim_name(&some_claim, &self.namespace, &self.instance.id);
        let (mut get_local, mut get_proxy) = (Quantiles::default(), Quantiles::default());
        let (mut list_local, mut list_proxy) = (Quantiles::default(), Quantiles::default());
        let (mut kubectl_local, mut kubectl_proxy) = (Runs::default(), Runs::default());
        let plural = format!("{}.{}", self.kind.resource.plural, self.kind.group);
        for _ in 0..self.sizes.runs {
            get_local.push(&read_times(&self.local, Some(&some_claim), 100).await);
            get_proxy.push(&read_times(&proxied_twins, Some(&some_twin), 100).await);
            list_local.push(&read_times(&self.local, None, 10).await);
            list_proxy.push(&read_times(&proxied_twins, None, 10).await);
            kubectl_local.push(kubectl_get(&env().app_kubeconfig, &plural, &self.namespace).await);
            kubectl_proxy.push(kubectl_get(&link.kubeconfig, &plural, &self.instance.claim_namespace).await);
        }
        // The same LIST once the twins carry what Crossplane writes to every claim it binds (a finalizer, the
        // composite's reference, Synced and Ready) and claimsync has shown it locally: what a proxy's user reads.
        let bare_bytes = [list_bytes(&self.local).await, list_bytes(&proxied_twins).await];
        self.as_crossplane_keeps_them().await;
        let bound_bytes = [list_bytes(&self.local).await, list_bytes(&proxied_twins).await];
        let (mut bound_local, mut bound_proxy) = (Quantiles::default(), Quantiles::default());
        for _ in 0..self.sizes.runs {
            bound_local.push(&read_times(&self.local, None, 10).await);
            bound_proxy.push(&read_times(&proxied_twins, None, 10).await);
        }
        self.crossplane_lets_go().await;
        // The path cut: the proxy's reads fail; claimsync's answer from the app cluster.
        env().script(&["link", "cut", &link.name]);
        let cut_get = tokio::time::timeout(Duration::from_secs(5), proxied_twins.get(&some_twin)).await;
        let offline_local = {
            let start = Instant::now();
            self.local.get(&some_claim).await.expect("bench: local GET while cut");
            ms(start.elapsed())
        };
        drop(link);
        let _ = app;
        let t = &mut self.table;
        let ratio = |local: &Runs, proxy: &Runs| format!("{}x lower", fmt(proxy.median() / local.median()));
        let rows = [
            ("claim GET", &get_local, &get_proxy),
            (
                &*format!("LIST of {size} claims Crossplane never touched"),
                &list_local,
                &list_proxy,
            ),
            (
                &*format!("LIST of {size} claims as Crossplane keeps them"),
                &bound_local,
                &bound_proxy,
            ),
        ];
        for (what, local, proxy) in rows {
            t.add(
                "reads",
                format!("{what} p50 (local vs control plane +20 ms)"),
                local.p50.show(" ms"),
                proxy.p50.show(" ms"),
                ratio(&local.p50, &proxy.p50),
                ">= 10x lower p50",
            );
            t.add(
                "reads",
                format!("{what} p99"),
                local.p99.show(" ms"),
                proxy.p99.show(" ms"),
                ratio(&local.p99, &proxy.p99),
                "",
            );
        }
        for (what, [local, proxy]) in [("never touched", bare_bytes), ("as Crossplane keeps them", bound_bytes)] {
            t.add(
                "reads",
                format!("LIST of {size} claims {what}: size as JSON"),
                format!("{} KiB", fmt(local / 1024.0)),
                format!("{} KiB", fmt(proxy / 1024.0)),
                format!("{}x", fmt(local / proxy)),
                "",
            );
        }
        t.add(
            "reads",
            format!("kubectl get of {size} claims (whole process)"),
            kubectl_local.show(" ms"),
            kubectl_proxy.show(" ms"),
            ratio(&kubectl_local, &kubectl_proxy),
            "as it is",
        );
        t.add(
            "reads",
            "claim GET with the control plane cut",
            format!("{} ms", fmt(offline_local)),
            match cut_get {
                Err(_) => "no answer in 5 s".into(),
                Ok(Err(e)) => format!("error: {e}"),
                Ok(Ok(_)) => "answered (unexpected)".into(),
            },
            "",
            "claimsync answers",
        );
    }

    /// Writes to every twin what Crossplane writes to a claim it binds (its finalizer and the composite's reference,
    /// then Synced and Ready), as Crossplane's field manager would, and waits until each local claim shows both.
    async fn as_crossplane_keeps_them(&mut self) {
        let count = self.twin_mirror.objects.borrow().len();
        self.as_crossplane_on_each_twin(|twins, params, name| async move {
            let bound = json!({
                "metadata": {"finalizers": ["finalizer.apiextensions.crossplane.io"]},
                "spec": {"resourceRef": {"apiVersion": "bench.example.org/v1", "kind": "XBench",
                                         "name": format!("{name}-x7k2p")}},
            });
            twins
                .patch(&name, &params, &Patch::Merge(&bound))
                .await
                .unwrap_or_else(|e| panic!("bench: bind twin {name}: {e}"));
            let status = json!({"status": {"conditions": [
                {"type": "Synced", "status": "True", "reason": "ReconcileSuccess",
                 "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 2},
                {"type": "Ready", "status": "True", "reason": "Available",
                 "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 2}]}});
            twins
                .patch_status(&name, &params, &Patch::Merge(&status))
                .await
                .unwrap_or_else(|e| panic!("bench: status of twin {name}: {e}"));
        })
        .await;
        let shown = |c: &DynamicObject| {
            !c.data["spec"]["resourceRef"].is_null()
                && c.data["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        };
        self.local_mirror
            .until(
                "the local claims to show Crossplane's writes",
                Duration::from_secs(600),
                |m| m.values().filter(|c| shown(c)).count() >= count,
            )
            .await;
    }

    /// Takes the finalizer [`Bench::as_crossplane_keeps_them`] gave the twins off again (Crossplane is paused:
    /// nothing else would, and the burst's twins must go when its claims do).
    async fn crossplane_lets_go(&mut self) {
        self.as_crossplane_on_each_twin(|twins, params, name| async move {
            let unbound = json!({"metadata": {"finalizers": null}});
            twins
                .patch(&name, &params, &Patch::Merge(&unbound))
                .await
                .unwrap_or_else(|e| panic!("bench: release twin {name}: {e}"));
        })
        .await;
    }

    /// Runs `write` for every twin the mirror holds, at claimsync's concurrency, with Crossplane's field manager.
    async fn as_crossplane_on_each_twin<F, Fut>(&self, write: F)
    where
        F: Fn(Api<DynamicObject>, PatchParams, String) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let names: Vec<String> = self.twin_mirror.objects.borrow().keys().cloned().collect();
        let params = PatchParams {
            field_manager: Some("crossplane".into()),
            ..PatchParams::default()
        };
        at_concurrency(names, |name| write(self.twins.clone(), params.clone(), name)).await;
    }

    /// `size` in-sync claims, claimsync killed and started again, with its journal and without.
    async fn restart(&mut self, size: usize) {
        for journal in ["with", "without"] {
            eprintln!("bench: restart {journal} the journal, {size} claims");
            self.instance.stop().await;
            if journal == "without" {
                let _ = std::fs::remove_dir_all(&self.instance.state_dir);
            }
            let start = Instant::now();
            self.instance.start_with(&[]).await;
            // Polled every 10 ms (the tests' 200 ms would round a restart of a few hundred claims by a third).
            let deadline = start + Duration::from_secs(600);
            loop {
                if in_sync(&self.instance.ops("/metrics").await.unwrap_or_default()) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "bench: claimsync not in sync 600 s after the restart"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let in_sync = start.elapsed();
            // Whatever a restart would still write comes within moments of the in-sync mark; count after a settle.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let counts = requests(&self.instance).await;
            let (peak, _) = memory(self.instance.pid().expect("claimsync runs"));
            let t = &mut self.table;
            t.add(
                "restart",
                format!("{size} claims, {journal} journal: time to in sync"),
                format!("{:.2} s", in_sync.as_secs_f64()),
                "",
                "",
                "< 10 s",
            );
            t.add(
                "restart",
                format!("{size} claims, {journal} journal: writes"),
                show_requests(&counts, true),
                "",
                "",
                "0",
            );
            t.add(
                "restart",
                format!("{size} claims, {journal} journal: reads"),
                show_requests(&counts, false),
                "",
                "",
                "LISTs per kind, no GET per claim",
            );
            t.add(
                "memory",
                format!("claimsync peak RSS, restart with {size} claims ({journal} journal)"),
                format!("{peak:.0} MiB"),
                "",
                format!("{} KiB/claim", fmt(peak * 1024.0 / size as f64)),
                "< 200 MiB at 10,000",
            );
        }
    }

    /// The same burst with Crossplane running: the kind composes a ConfigMap per claim, as a user's would compose
    /// real resources. Twins exist as soon as claimsync writes them; Replicated waits for nothing of Crossplane.
    async fn crossplane_burst(&mut self, _app: &Client, control_plane: &Client) {
        let size = self.sizes.crossplane_burst;
        if size == 0 {
            return;
        }
        eprintln!("bench: burst of {size} under Crossplane");
        self.clear().await;
        let scratch = support::namespace(control_plane, "bench-raw-xp").await;
        let raw_claims = self.kind.claims(control_plane, &scratch);
        let raw_mirror = Mirror::start(raw_claims.clone());
        let names: Vec<String> = (0..size).map(|i| format!("xp-raw-{i}")).collect();
        let start = Instant::now();
        create_all(&raw_claims, &self.kind.resource, &names).await;
        let raw_rate = size as f64 / start.elapsed().as_secs_f64();
        let at = raw_mirror
            .until("Crossplane to bind every raw claim", Duration::from_secs(3600), |m| {
                m.values().filter(|c| c.data["spec"]["resourceRef"].is_object()).count() >= size
            })
            .await;
        let raw_bound = size as f64 / (at - start).as_secs_f64();
        // Gone before claimsync's turn: Crossplane polls every composite each second, and the raw side's would
        // make claimsync's measure them too.
        delete_all(&raw_claims, &[&raw_mirror], "the raw claims to go").await;

        let names: Vec<String> = (0..size).map(|i| format!("xp-{i}")).collect();
        let start = Instant::now();
        create_all(&self.local, &self.kind.resource, &names).await;
        let at = self
            .twin_mirror
            .until("every twin", Duration::from_secs(3600), |m| m.len() >= size)
            .await;
        let remote = size as f64 / (at - start).as_secs_f64();
        let at = self
            .local_mirror
            .until("every claim bound (resourceRef down)", Duration::from_secs(3600), |m| {
                m.values()
                    .filter(|c| c.data["spec"]["resourceRef"].is_object() && replicated(c))
                    .count()
                    >= size
            })
            .await;
        let bound = size as f64 / (at - start).as_secs_f64();
        self.crossplane_rows(
            &format!("{size} claims"),
            (remote, raw_rate),
            ("all bound, resourceRef shown locally", bound, raw_bound),
        );
        let _ = self.twin_mirror.count(|_| true);
    }
}

impl Bench {
    /// Clears the control plane of what earlier parts left for Crossplane to work on: the bench kind's claims (the
    /// bursts', made while Crossplane was paused, and the claims burst's under Crossplane, whose raw claims that
    /// burst deletes itself).
    /// The env's Crossplane polls every composite each second (`--poll-interval=1s`, so that tests are quick), and
    /// on v2 each poll runs the composition function: a few hundred composites left over took most of both cores and
    /// made a burst measure them (10-15% of raw for claims, 434% for XRs whose raw side ran second).
    async fn clear(&self) {
        delete_all(
            &self.local,
            &[&self.twin_mirror, &self.local_mirror],
            "the earlier bursts' claims and twins to go",
        )
        .await;
    }

    /// The two rows of a burst under Crossplane: twins made (per second, against raw creates), and what users wait
    /// for (`done`: what, claimsync's rate, the raw objects' rate).
    fn crossplane_rows(&mut self, what: &str, (remote, raw_rate): (f64, f64), done: (&str, f64, f64)) {
        let (done_what, rate, raw) = done;
        for (measure, mine, theirs) in [("all twins exist", remote, raw_rate), (done_what, rate, raw)] {
            self.table.add(
                "burst+Crossplane",
                format!("{what}: {measure}"),
                format!("{} /s", fmt(mine)),
                format!("{} /s", fmt(theirs)),
                format!("{:.0}%", 100.0 * mine / theirs),
                ">= 80% of raw",
            );
        }
    }

    /// The Crossplane burst for namespaced XRs (Crossplane v2 only): a kind of the bench's own whose composition
    /// makes a ConfigMap per XR; XRs created directly on the control plane until all are Ready, against the same
    /// number created locally until all are Ready and Replicated there.
    async fn xr_burst(&mut self, app: &Client, control_plane: &Client) {
        let size = self.sizes.crossplane_burst;
        if size == 0 || !env().crossplane_v2() {
            return;
        }
        eprintln!("bench: burst of {size} namespaced XRs under Crossplane");
        self.clear().await;
        let kind = TestKind::offer_xr(control_plane, "benchxr", "BenchApp", json!({})).await;
        kind.wait_local(app).await;
        let scratch = support::namespace(control_plane, "bench-raw-xr").await;
        let raw = kind.claims(control_plane, &scratch);
        let raw_mirror = Mirror::start(raw.clone());
        let names: Vec<String> = (0..size).map(|i| format!("xr-raw-{i}")).collect();
        let start = Instant::now();
        create_all(&raw, &kind.resource, &names).await;
        let raw_rate = size as f64 / start.elapsed().as_secs_f64();
        let at = raw_mirror
            .until(
                "Crossplane to make every raw XR Ready",
                Duration::from_secs(3600),
                |m| m.values().filter(|x| ready(x)).count() >= size,
            )
            .await;
        let raw_ready = size as f64 / (at - start).as_secs_f64();
        delete_all(&raw, &[&raw_mirror], "the raw XRs to go").await;

        let local = kind.claims(app, &self.namespace);
        let local_mirror = Mirror::start(local.clone());
        let twin_mirror = Mirror::start(kind.claims(control_plane, &self.instance.claim_namespace));
        let names: Vec<String> = (0..size).map(|i| format!("xr-{i}")).collect();
        let start = Instant::now();
        create_all(&local, &kind.resource, &names).await;
        let at = twin_mirror
            .until("every XR's twin", Duration::from_secs(3600), |m| m.len() >= size)
            .await;
        let remote = size as f64 / (at - start).as_secs_f64();
        let at = local_mirror
            .until("every XR Ready and Replicated", Duration::from_secs(3600), |m| {
                m.values().filter(|x| ready(x) && replicated(x)).count() >= size
            })
            .await;
        let shown = size as f64 / (at - start).as_secs_f64();
        self.crossplane_rows(
            &format!("{size} namespaced XRs"),
            (remote, raw_rate),
            ("all Ready locally", shown, raw_ready),
        );
        kind.withdraw(control_plane).await;
    }
}

/// Whether an object says Ready=True.
/// Edits of claim `name` one after another, each timed from the user's write until the twin `twin_name` has it
/// (spec up), then a status patch of the twin until the claim shows it (status down); on either path, claimsync's
/// or the floor's. The latencies in ms.
async fn edit_latencies(
    (local, local_mirror): (&Api<DynamicObject>, &Mirror),
    (twins, twin_mirror): (&Api<DynamicObject>, &Mirror),
    name: &str,
    twin_name: &str,
    sizes: std::ops::Range<i64>,
) -> (Vec<f64>, Vec<f64>) {
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for size in sizes {
        local
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"size": size}})),
            )
            .await
            .expect("bench: edit the local claim");
        // From the user's write stored (its cost is the raw write) until the twin has it.
        let start = Instant::now();
        let twin = twin_name.to_string();
        let at = twin_mirror
            .until("the twin to have the edit", Duration::from_secs(60), move |m| {
                m.get(&twin).is_some_and(|t| t.data["spec"]["size"] == size)
            })
            .await;
        up.push(ms(at - start));

        let mark = format!("R{size}");
        let status = json!({"status": {"conditions": [{
            "type": "BenchMark", "status": "True", "reason": mark,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        twins
            .patch_status(twin_name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("bench: the twin's status");
        let start = Instant::now();
        let local_name = name.to_string();
        let at = local_mirror
            .until(
                "the local claim to show the status",
                Duration::from_secs(60),
                move |m| {
                    m.get(&local_name).is_some_and(|c| {
                        c.data["status"]["conditions"]
                            .as_array()
                            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "BenchMark" && c["reason"] == mark))
                    })
                },
            )
            .await;
        down.push(ms(at - start));
    }
    (up, down)
}

fn ready(object: &DynamicObject) -> bool {
    object.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn typed(mut object: DynamicObject, resource: &ApiResource) -> DynamicObject {
    object.types = Some(kube::api::TypeMeta {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    });
    object
}

/// The p50 and p99 of each run's samples.
#[derive(Default)]
struct Quantiles {
    p50: Runs,
    p99: Runs,
}

impl Quantiles {
    fn push(&mut self, samples: &[f64]) {
        self.p50.push(quantile(samples, 0.5));
        self.p99.push(quantile(samples, 0.99));
    }
}

/// `n` reads one after another, in ms each: a GET of `name`, or a LIST of the whole collection.
async fn read_times(api: &Api<DynamicObject>, name: Option<&str>, n: usize) -> Vec<f64> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        match name {
            Some(name) => drop(api.get(name).await.expect("bench: GET")),
            None => drop(api.list(&ListParams::default()).await.expect("bench: LIST")),
        }
        samples.push(ms(start.elapsed()));
    }
    samples
}

/// The size of a LIST of `api`'s collection as compact JSON, in bytes (what the API server encodes and the client
/// decodes: a LIST's time goes with it).
async fn list_bytes(api: &Api<DynamicObject>) -> f64 {
    let list = api.list(&ListParams::default()).await.expect("bench: LIST");
    serde_json::to_vec(&list).map(|b| b.len() as f64).unwrap_or(f64::NAN)
}

/// `kubectl get` of a kind in a namespace as a whole process, in ms.
async fn kubectl_get(kubeconfig: &Path, resource: &str, namespace: &str) -> f64 {
    let start = Instant::now();
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", resource, "-n", namespace])
        .output()
        .await
        .expect("bench: kubectl");
    assert!(
        out.status.success(),
        "kubectl get: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ms(start.elapsed())
}
