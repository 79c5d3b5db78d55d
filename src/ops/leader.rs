//! Leader election on a Lease in claimsync's namespace: every replica runs this, one holds the lease and writes,
//! the others stand by (they still serve the shim and the ops endpoint). A leader that cannot renew for a while
//! steps down before its lease can expire, so two replicas never write at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::model::lease::{Seen, Step, next};

/// How long a lease holds without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(10);
/// How often every replica looks at the lease (and the leader renews it).
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// A leader that has not renewed for this long stops writing; shorter than the lease, so it stops first.
const RENEW_DEADLINE: Duration = Duration::from_secs(7);

pub struct Elector {
    pub leases: Api<Lease>,
    pub name: String,
    pub identity: String,
}

impl Elector {
    pub fn new(local: &Client, namespace: &str, name: &str, identity: &str) -> Self {
        Elector {
            leases: Api::namespaced(local.clone(), namespace),
            name: name.to_string(),
            identity: identity.to_string(),
        }
    }

    /// Takes part in the election for as long as claimsync runs, saying on `leading` whether this replica leads.
    pub async fn run(self, leading: watch::Sender<bool>) {
        let mut observed: Option<(Seen, Instant)> = None;
        let mut last_renewed: Option<Instant> = None;
        loop {
            let lease = match self.leases.get_opt(&self.name).await {
                Ok(lease) => lease,
                Err(e) => {
                    warn!(error = %e, lease = %self.name, "could not read the leader lease");
                    self.step_down_if_stale(&leading, last_renewed);
                    tokio::time::sleep(RETRY_EVERY).await;
                    continue;
                }
            };
            let seen = lease.as_ref().map(|l| Seen {
                holder: l.spec.as_ref().and_then(|s| s.holder_identity.clone()),
                renewed: l
                    .spec
                    .as_ref()
                    .and_then(|s| s.renew_time.as_ref())
                    .map(|t| t.0.to_string()),
            });
            let since = match (&observed, &seen) {
                (Some((before, at)), Some(now)) if before == now => at.elapsed(),
                _ => {
                    observed = seen.clone().map(|s| (s, Instant::now()));
                    Duration::ZERO
                }
            };
            let step = next(
                seen.as_ref(),
                &self.identity,
                since.as_millis() as u64,
                LEASE_DURATION.as_millis() as u64,
            );
            let written = match step {
                Step::Wait => None,
                Step::Create => Some(self.create().await),
                Step::Renew | Step::TakeOver => Some(self.write(lease.expect("a lease to renew"), step).await),
            };
            match written {
                Some(Ok(())) => {
                    last_renewed = Some(Instant::now());
                    if !*leading.borrow() {
                        info!(identity = %self.identity, lease = %self.name, "leading: this replica writes now");
                        let _ = leading.send(true);
                    }
                }
                Some(Err(e)) => {
                    // Another replica won the race (409), or the API server did not answer.
                    info!(error = %e, "did not get or renew the leader lease");
                    self.step_down_if_stale(&leading, last_renewed);
                }
                None => {
                    if *leading.borrow() {
                        warn!("another replica holds the leader lease; standing by");
                        let _ = leading.send(false);
                    }
                }
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    fn step_down_if_stale(&self, leading: &watch::Sender<bool>, last_renewed: Option<Instant>) {
        if *leading.borrow() && last_renewed.is_none_or(|at| at.elapsed() >= RENEW_DEADLINE) {
            warn!("could not renew the leader lease in time; standing by so that no two replicas write");
            let _ = leading.send(false);
        }
    }

    fn now() -> MicroTime {
        MicroTime(Timestamp::now())
    }

    async fn create(&self) -> Result<(), kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                acquire_time: Some(Self::now()),
                renew_time: Some(Self::now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        self.leases.create(&PostParams::default(), &lease).await.map(drop)
    }

    /// Renews or takes over the lease, on the condition that it is still as read (its resource version).
    async fn write(&self, mut lease: Lease, step: Step) -> Result<(), kube::Error> {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if step == Step::TakeOver {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(Self::now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
        spec.renew_time = Some(Self::now());
        self.leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(drop)
    }
}
