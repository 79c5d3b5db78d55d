//! The pressure modes of the scale benchmark, each run on its own (not in `--full`): `--churn TOTAL,WAVE` creates
//! and deletes claims in waves and reports memory and claimsync's map sizes after each wave; `--crds N` puts N
//! foreign CRDs of realistic size on the control plane and compares claimsync's memory with and without them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::{Bench, create_all, delete_all, fmt, memory, replicated, requests};
use crate::instance::{in_sync, metric_sum, no_claim_kept, tracked_entries};

fn show_tracked(maps: &BTreeMap<String, f64>) -> String {
    maps.iter()
        .map(|(map, n)| format!("{map} {n:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Bench {
    /// `total` claims in all, in waves of `wave`: each wave created, replicated, deleted (claims and twins gone),
    /// then claimsync's RSS and map sizes read once its maps keyed by claims are empty again.
    pub(super) async fn churn(&mut self, total: usize, wave: usize) {
        let waves = total.div_ceil(wave.max(1));
        let pid = self.instance.pid().expect("claimsync runs");
        let mut first_rss = None;
        let mut requests_before = requests(&self.instance).await;
        for w in 0..waves {
            eprintln!("bench: churn wave {} of {waves} ({wave} claims)", w + 1);
            let names: Vec<String> = (0..wave).map(|i| format!("w{w}-{i}")).collect();
            let started = Instant::now();
            create_all(&self.local, &self.kind.resource, &names).await;
            self.local_mirror
                .until("the wave Replicated", Duration::from_secs(3600), |m| {
                    m.values().filter(|c| replicated(c)).count() >= wave
                })
                .await;
            let replicated_in = started.elapsed();
            delete_all(
                &self.local,
                &[&self.twin_mirror, &self.local_mirror],
                "the wave's claims and twins to go",
            )
            .await;
            let deadline = Instant::now() + Duration::from_secs(300);
            let maps = loop {
                let maps = tracked_entries(&self.instance.ops("/metrics").await.unwrap_or_default());
                if no_claim_kept(&maps) {
                    break maps;
                }
                assert!(
                    Instant::now() < deadline,
                    "bench: claimsync's maps keyed by claims not empty 300 s after the wave went: {maps:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let (peak, rss) = memory(pid);
            let first = *first_rss.get_or_insert(rss);
            // What claimsync read again during the wave (a relist shows as LISTs) and how big its journal is on disk
            // (claimsync's own gauge, taken every 30 s).
            let requests_after = requests(&self.instance).await;
            let reads = ["app", "controlplane"]
                .iter()
                .map(|cluster| {
                    let verb = |verb: &str| {
                        let key = (cluster.to_string(), verb.to_string());
                        requests_after.get(&key).unwrap_or(&0.0) - requests_before.get(&key).unwrap_or(&0.0)
                    };
                    format!("{cluster} {:.0} LIST {:.0} WATCH", verb("LIST"), verb("WATCH"))
                })
                .collect::<Vec<_>>()
                .join(", ");
            requests_before = requests_after;
            let journal = metric_sum(
                &self.instance.ops("/metrics").await.unwrap_or_default(),
                "claimsync_journal_size_bytes",
            );
            eprintln!(
                "bench: wave {}: {reads}; journal {:.1} MiB on disk",
                w + 1,
                journal / 1048576.0
            );
            self.table.add(
                "churn",
                format!("after wave {} ({} claims created and deleted)", w + 1, (w + 1) * wave),
                format!("RSS {rss:.0} MiB (peak {peak:.0}); {}", show_tracked(&maps)),
                "",
                format!("{:.0}% of after wave 1", 100.0 * rss / first),
                "<= 110% after the last wave",
            );
            eprintln!("bench: wave replicated in {:.1} s", replicated_in.as_secs_f64());
        }
    }

    /// claimsync's memory after a fresh start, without and then with `count` foreign CRDs on the control plane
    /// (copies of its largest CRDs under new groups: a large provider's catalog).
    pub(super) async fn foreign_crds(&mut self, control_plane: &Client, count: usize) {
        let without = self.fresh_start_rss().await;
        let (bytes, took) = add_foreign_crds(control_plane, count).await;
        eprintln!(
            "bench: {count} CRDs ({:.1} MiB) established in {:.0} s",
            bytes / 1048576.0,
            took.as_secs_f64()
        );
        let with = self.fresh_start_rss().await;
        let t = &mut self.table;
        t.add(
            "catalog",
            "claimsync RSS after start, control plane's own CRDs only",
            format!("{without:.0} MiB"),
            "",
            "",
            "",
        );
        t.add(
            "catalog",
            format!(
                "claimsync RSS after start, with {count} more CRDs ({:.0} MiB as JSON)",
                bytes / 1048576.0
            ),
            format!("{with:.0} MiB"),
            "",
            format!(
                "+{} MiB ({:.0}% of the CRDs' size)",
                fmt(with - without),
                100.0 * (with - without) * 1048576.0 / bytes
            ),
            "metadata only: far below the CRDs' size",
        );
    }

    /// Restarts claimsync, waits until it is in sync and its CRD watch has listed, and returns its RSS in MiB.
    async fn fresh_start_rss(&mut self) -> f64 {
        self.instance.terminate().await;
        self.instance.start_with(&[]).await;
        let deadline = Instant::now() + Duration::from_secs(600);
        while !in_sync(&self.instance.ops("/metrics").await.unwrap_or_default()) {
            assert!(
                Instant::now() < deadline,
                "bench: claimsync not in sync 600 s after a start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        memory(self.instance.pid().expect("claimsync runs")).1
    }
}

/// Creates `count` CRDs copied from the control plane's largest ones (in turn) under groups of their own, and waits
/// until each is Established; returns their total size as JSON and how long that took.
async fn add_foreign_crds(control_plane: &Client, count: usize) -> (f64, Duration) {
    let crds = Api::<CustomResourceDefinition>::all(control_plane.clone());
    let mut models: Vec<Value> = crds
        .list(&ListParams::default())
        .await
        .expect("bench: list the control plane's CRDs")
        .items
        .into_iter()
        .filter(|crd| !crd.labels().contains_key("claimsync.dev/bench-foreign"))
        .map(|crd| serde_json::to_value(crd).unwrap())
        .collect();
    models.sort_by_key(|m| std::cmp::Reverse(m.to_string().len()));
    models.truncate(4);
    let copies: Vec<Value> = (0..count).map(|i| foreign_copy(&models[i % models.len()], i)).collect();
    let bytes: usize = copies.iter().map(|c| c.to_string().len()).sum();
    let started = Instant::now();
    futures::stream::iter(copies)
        .map(|copy| {
            let crds = crds.clone();
            async move {
                let crd: CustomResourceDefinition = serde_json::from_value(copy).unwrap();
                let name = crd.metadata.name.clone().unwrap_or_default();
                match crds.create(&PostParams::default(), &crd).await {
                    // Made by an earlier run on this env.
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(e) => panic!("bench: create CRD {name}: {e}"),
                }
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        let established = crds
            .list(&ListParams::default().labels("claimsync.dev/bench-foreign"))
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|crd| {
                        crd.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
                    })
                    .count()
            })
            .unwrap_or(0);
        if established >= count {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bench: {established} of {count} foreign CRDs Established"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (bytes as f64, started.elapsed())
}

/// A copy of `model` (a CRD as JSON) under the group `foreign-<i>.<its group>`, with a label to find it by, and
/// without what the API server keeps (status, managed fields) or calls out to (a conversion webhook).
fn foreign_copy(model: &Value, i: usize) -> Value {
    let mut copy = model.clone();
    let group = format!(
        "foreign-{i}.{}",
        model["spec"]["group"].as_str().unwrap_or("example.org")
    );
    let plural = model["spec"]["names"]["plural"]
        .as_str()
        .unwrap_or("things")
        .to_string();
    copy["metadata"] = json!({
        "name": format!("{plural}.{group}"),
        "labels": {"claimsync.dev/bench-foreign": "true"},
    });
    copy["spec"]["group"] = json!(group);
    if let Some(spec) = copy["spec"].as_object_mut() {
        spec.remove("conversion");
    }
    if let Some(object) = copy.as_object_mut() {
        object.remove("status");
    }
    copy
}
