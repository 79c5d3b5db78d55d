//! When a claim's oldest unhandled change arrived (its watch event, or a twin's, Secret's or namespace's), until
//! its reconcile starts: the wait that `claimsync_queue_wait_seconds` reports (kube-runtime's scheduler, the
//! concurrency limit, a reconcile of the same claim still running). Bookkeeping only: no API calls, no rules.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::store::shrink_map_when_sparse;

/// The arrival of the oldest change not yet handled, per claim (`namespace/name`) of one kind.
#[derive(Default)]
pub(crate) struct Arrivals {
    oldest: Mutex<HashMap<String, Instant>>,
}

impl Arrivals {
    /// A change for `claim` arrived `at`; an older one still waiting keeps its place.
    pub fn note(&self, claim: String, at: Instant) {
        self.oldest.lock().expect("arrivals").entry(claim).or_insert(at);
    }

    /// The claim is gone: no reconcile will take its arrival.
    pub fn forget(&self, claim: &str) {
        let mut oldest = self.oldest.lock().expect("arrivals");
        oldest.remove(claim);
        shrink_map_when_sparse(&mut oldest);
    }

    /// A reconcile of `claim` starts `at`: how long its oldest change waited, if one did (a requeue or a periodic
    /// pass has none). Changes arriving from now on wait for the next reconcile.
    pub fn take(&self, claim: &str, at: Instant) -> Option<Duration> {
        let mut oldest = self.oldest.lock().expect("arrivals");
        let arrived = oldest.remove(claim)?;
        shrink_map_when_sparse(&mut oldest);
        Some(at.saturating_duration_since(arrived))
    }

    /// How many claims have a change waiting.
    pub fn len(&self) -> usize {
        self.oldest.lock().expect("arrivals").len()
    }
}

/// The key a claim's arrivals are kept under.
pub(crate) fn arrival_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// (changes noted at these ms, reconcile starts at this ms, wait it reports in ms)
    #[test]
    fn a_reconcile_reports_the_wait_of_the_oldest_change() {
        let cases: [(&[u64], u64, Option<u64>); 4] = [
            (&[], 5, None),
            (&[2], 5, Some(3)),
            (&[2, 3, 4], 5, Some(3)),
            // A clock read before the change's (another thread) never reports a negative wait.
            (&[7], 5, Some(0)),
        ];
        for (changes, start, want) in cases {
            let base = Instant::now();
            let arrivals = Arrivals::default();
            for at in changes {
                arrivals.note("ns/a".to_string(), base + MS * *at as u32);
            }
            let got = arrivals.take("ns/a", base + MS * start as u32);
            assert_eq!(got, want.map(|w| MS * w as u32), "changes {changes:?}, start {start}");
            assert_eq!(arrivals.len(), 0);
        }
    }

    #[test]
    fn a_change_during_a_reconcile_waits_for_the_next_one_and_claims_do_not_mix() {
        let base = Instant::now();
        let arrivals = Arrivals::default();
        arrivals.note("ns/a".to_string(), base);
        arrivals.note("ns/b".to_string(), base + MS);
        assert_eq!(arrivals.take("ns/a", base + MS * 2), Some(MS * 2));
        arrivals.note("ns/a".to_string(), base + MS * 3);
        assert_eq!(arrivals.take("ns/a", base + MS * 10), Some(MS * 7));
        assert_eq!(arrivals.take("ns/a", base + MS * 11), None, "a requeue has no change");
        assert_eq!(arrivals.take("ns/b", base + MS * 11), Some(MS * 10));
    }

    #[test]
    fn a_deleted_claim_leaves_nothing_behind() {
        let base = Instant::now();
        let arrivals = Arrivals::default();
        arrivals.note(arrival_key("ns", "a"), base);
        arrivals.forget(&arrival_key("ns", "a"));
        assert_eq!(arrivals.len(), 0);
        // A claim made again under the same name reports its own wait, not the deleted one's.
        arrivals.note(arrival_key("ns", "a"), base + MS * 50);
        assert_eq!(arrivals.take("ns/a", base + MS * 51), Some(MS));
    }
}
