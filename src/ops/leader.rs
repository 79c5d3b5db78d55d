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
use crate::ops::deadline::WriteFence;
use crate::ops::server::LeaseReport;

/// How long a lease holds without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(10);
/// How often every replica looks at the lease (and the leader renews it).
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// A leader that has not renewed for this long stops writing; shorter than the lease, so it stops first.
const RENEW_DEADLINE: Duration = Duration::from_secs(7);
/// Writes of a leader land this long before its lease could expire (the standby's clock and ours may run apart a
/// little; the standby counts the lease duration from when it saw the renewal, later than we sent it).
const LANDING_MARGIN: Duration = Duration::from_secs(1);
/// The longest one call about the lease may take (kube's client has no read timeout of its own): a connection
/// that hangs (a partition: nothing answered, nothing closed) must not keep the loop from its renew deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Elector {
    pub leases: Api<Lease>,
    pub name: String,
    pub identity: String,
    /// Where the lease as last read is reported (`/readyz`).
    pub report: LeaseReport,
}

impl Elector {
    pub fn new(local: &Client, namespace: &str, name: &str, identity: &str, report: LeaseReport) -> Self {
        Elector {
            leases: Api::namespaced(local.clone(), namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            report,
        }
    }

    fn report(&self, seen: String) {
        *self.report.lock().expect("lease report") = Some(seen);
    }

    /// Takes part in the election for as long as claimsync runs, saying on `leading` whether this replica leads and
    /// opening `fence` (the controllers' writes) with every renewal. Every call is bounded, and so is every wait of a
    /// leader: it stands down at its renew deadline whatever a call does, well before its lease could expire, and
    /// the fence closes by itself at that deadline even if this loop were late.
    pub async fn run(self, leading: watch::Sender<bool>, fence: WriteFence) {
        let mut observed: Option<(Seen, Instant)> = None;
        let mut last_renewed: Option<Instant> = None;
        loop {
            self.step_down_if_stale(&leading, &fence, last_renewed);
            let budget = call_budget(*leading.borrow(), last_renewed);
            let lease = match bounded(budget, self.leases.get_opt(&self.name)).await {
                Ok(lease) => lease,
                Err(e) => {
                    warn!(error = %e, lease = %self.name, "could not read the leader lease");
                    self.report(format!("unreadable ({e})"));
                    self.step_down_if_stale(&leading, &fence, last_renewed);
                    let wait = pause(*leading.borrow(), last_renewed);
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let holder = lease
                .as_ref()
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.holder_identity.as_deref());
            self.report(match holder {
                Some(holder) if holder == self.identity => format!("held by {holder} (this replica)"),
                Some(holder) => format!("held by {holder}"),
                None => "free".to_string(),
            });
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
            let duration = holders_duration(lease.as_ref());
            let step = next(
                seen.as_ref(),
                &self.identity,
                since.as_millis() as u64,
                duration.as_millis() as u64,
            );
            let budget = call_budget(*leading.borrow(), last_renewed);
            // The renewal counts from when it was sent: the lease's new renew time is no earlier than that.
            let sent = Instant::now();
            let written = match step {
                Step::Wait => None,
                Step::Create => Some(bounded(budget, self.create()).await),
                Step::Renew | Step::TakeOver => {
                    Some(bounded(budget, self.write(lease.expect("a lease to renew"), step)).await)
                }
            };
            match written {
                Some(Ok(())) => {
                    last_renewed = Some(sent);
                    fence.open(sent + RENEW_DEADLINE, sent + LEASE_DURATION - LANDING_MARGIN);
                    if !*leading.borrow() {
                        info!(identity = %self.identity, lease = %self.name, "leading: this replica writes now");
                        let _ = leading.send(true);
                    }
                }
                Some(Err(e)) => {
                    // Another replica won the race (409), or the API server did not answer.
                    info!(error = %e, "did not get or renew the leader lease");
                    self.step_down_if_stale(&leading, &fence, last_renewed);
                }
                None => {
                    fence.close();
                    if *leading.borrow() {
                        warn!("another replica holds the leader lease; standing by");
                        let _ = leading.send(false);
                    }
                }
            }
            let wait = pause(*leading.borrow(), last_renewed);
            tokio::time::sleep(wait).await;
        }
    }

    /// Gives the lease up if this replica holds it (on shutdown, after its writers stopped), so that a standby takes
    /// it at its next look instead of waiting for it to expire: a rollout hands over in seconds.
    pub async fn release(&self) {
        let released = bounded(CALL_TIMEOUT, async {
            let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
                return Ok(false);
            };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.renew_time = Some(Self::now());
            self.leases.replace(&self.name, &PostParams::default(), &lease).await?;
            Ok(true)
        })
        .await;
        match released {
            Ok(true) => info!(lease = %self.name, "released the leader lease"),
            Ok(false) => {}
            Err(e) => warn!(error = %e, lease = %self.name, "could not release the leader lease; it expires"),
        }
    }

    fn step_down_if_stale(&self, leading: &watch::Sender<bool>, fence: &WriteFence, last_renewed: Option<Instant>) {
        if *leading.borrow() && last_renewed.is_none_or(|at| at.elapsed() >= RENEW_DEADLINE) {
            fence.close();
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

/// Why a call about the lease did not succeed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// Runs a call about the lease for at most `budget`.
async fn bounded<T>(
    budget: Duration,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(budget, call).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(CallError::TimedOut(budget)),
    }
}

/// How long the next call may take: [`CALL_TIMEOUT`], and for a leader no longer than until its renew deadline.
fn call_budget(leading: bool, last_renewed: Option<Instant>) -> Duration {
    until_deadline(leading, last_renewed).map_or(CALL_TIMEOUT, |left| left.min(CALL_TIMEOUT))
}

/// How long to wait before the next look: [`RETRY_EVERY`], and for a leader no longer than until its renew deadline
/// (so that it stands down on time even when no call fails).
fn pause(leading: bool, last_renewed: Option<Instant>) -> Duration {
    until_deadline(leading, last_renewed).map_or(RETRY_EVERY, |left| left.min(RETRY_EVERY))
}

/// What is left of a leader's time until its renew deadline (at least a moment, so that a call can still be made).
fn until_deadline(leading: bool, last_renewed: Option<Instant>) -> Option<Duration> {
    let renewed = last_renewed.filter(|_| leading)?;
    Some(
        RENEW_DEADLINE
            .saturating_sub(renewed.elapsed())
            .max(Duration::from_millis(50)),
    )
}

/// The lease duration the holder wrote (another version of claimsync, or another tool, may hold the lease), else
/// claimsync's own.
fn holders_duration(lease: Option<&Lease>) -> Duration {
    lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.lease_duration_seconds)
        .filter(|seconds| *seconds > 0)
        .map_or(LEASE_DURATION, |seconds| Duration::from_secs(seconds as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_never_waits_or_calls_past_its_renew_deadline() {
        let renewed = |ago_ms: u64| Some(Instant::now() - Duration::from_millis(ago_ms));
        // A standby, or a leader just renewed: the usual rhythm.
        assert_eq!(pause(false, renewed(6_500)), RETRY_EVERY);
        assert_eq!(call_budget(false, None), CALL_TIMEOUT);
        assert_eq!(pause(true, renewed(0)), RETRY_EVERY);
        assert_eq!(call_budget(true, renewed(0)), CALL_TIMEOUT);
        // A leader near its deadline: only what is left of it.
        assert!(pause(true, renewed(6_500)) <= Duration::from_millis(500));
        assert!(call_budget(true, renewed(6_500)) <= Duration::from_millis(500));
        // Past it: a moment, after which it stands down.
        assert_eq!(pause(true, renewed(9_000)), Duration::from_millis(50));
    }

    #[test]
    fn the_holders_lease_duration_counts() {
        let lease = |seconds: Option<i32>| Lease {
            spec: Some(LeaseSpec {
                lease_duration_seconds: seconds,
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        assert_eq!(holders_duration(Some(&lease(Some(30)))), Duration::from_secs(30));
        assert_eq!(holders_duration(Some(&lease(Some(0)))), LEASE_DURATION);
        assert_eq!(holders_duration(Some(&lease(None))), LEASE_DURATION);
        assert_eq!(holders_duration(None), LEASE_DURATION);
    }
}
