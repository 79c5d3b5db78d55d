//! Runs the reconciles of one kind's claims. Every trigger names a claim (or all of them), and its reconcile starts
//! as soon as a slot is free: no delay queue stands between a watch event and its reconcile (kube-runtime's
//! scheduler rounds "now" up to its next millisecond tick). At most `concurrency` run at once; never two of one
//! claim (a trigger during a reconcile runs it again once it ends); a claim triggered many times while it waits
//! runs once; a reconcile's requeue comes after its delay unless a trigger comes first. Knows nothing of claims but
//! their references.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

use crate::sync::store::{shrink_map_when_sparse, shrink_set_when_sparse};

/// When a claim is looked at again without a change: after this long, or only on a change (`None`).
pub(super) type Requeue = Option<Duration>;

/// What wakes claims: one, or every claim of the kind (the link came back).
pub(super) enum Trigger<R> {
    One(R),
    All,
}

/// A reconcile running in a task of its own, aborted if the runner goes first (its pass ended: leadership lost, a
/// new kubeconfig): no reconcile of an old pass goes on beside the new one's.
struct Reconciling(tokio::task::JoinHandle<Requeue>);

impl Drop for Reconciling {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The runner's bookkeeping, apart from the futures it drives.
struct Queue<R> {
    /// Claims waiting for a slot, in the order they were triggered, each once.
    waiting: VecDeque<R>,
    queued: HashSet<R>,
    /// Claims whose reconcile runs, and those of them triggered again meanwhile.
    running: HashSet<R>,
    again: HashSet<R>,
    /// Requeues not yet due, by claim (a trigger cancels its claim's).
    requeues: DelayQueue<R>,
    due: HashMap<R, Key>,
}

impl<R: Hash + Eq + Clone> Queue<R> {
    fn new() -> Self {
        Queue {
            waiting: VecDeque::new(),
            queued: HashSet::new(),
            running: HashSet::new(),
            again: HashSet::new(),
            requeues: DelayQueue::new(),
            due: HashMap::new(),
        }
    }

    /// A claim is triggered: it waits once, or runs again after the reconcile that runs now; a requeue it had is
    /// not needed any more.
    fn trigger(&mut self, claim: R) {
        if let Some(key) = self.due.remove(&claim) {
            self.requeues.remove(&key);
            shrink_map_when_sparse(&mut self.due);
        }
        if self.running.contains(&claim) {
            self.again.insert(claim);
        } else if self.queued.insert(claim.clone()) {
            self.waiting.push_back(claim);
        }
    }

    /// A reconcile ended: the claim runs again if it was triggered meanwhile, else after `requeue` if any.
    fn ended(&mut self, claim: R, requeue: Option<Duration>) {
        // `running` and `again` hold at most `concurrency` claims: they never grow with the claims, so they are
        // not shrunk; the queue and the requeues can hold every claim of a burst, and are.
        self.running.remove(&claim);
        if self.again.remove(&claim) {
            self.trigger(claim);
        } else if let Some(after) = requeue {
            let key = self.requeues.insert(claim.clone(), after);
            self.due.insert(claim, key);
        }
    }

    /// The next claim to start, if one waits and is not running.
    fn next(&mut self) -> Option<R> {
        while let Some(claim) = self.waiting.pop_front() {
            self.queued.remove(&claim);
            shrink_set_when_sparse(&mut self.queued);
            if self.running.contains(&claim) {
                self.again.insert(claim);
                continue;
            }
            self.running.insert(claim.clone());
            return Some(claim);
        }
        None
    }
}

/// Runs until `triggers` ends. No reconcile starts before `ready` (the claims cache's first listing: a claim not
/// found in it before that is not known to be gone); a triggered claim that `lookup` does not find is gone and is
/// skipped. `every` lists every claim of the kind. `reconcile` runs in a task of its own and says when to look again.
pub(super) async fn run<R, O, T, F, Fut>(
    triggers: T,
    ready: impl Future<Output = ()>,
    lookup: impl Fn(&R) -> Option<O>,
    every: impl Fn() -> Vec<R>,
    concurrency: usize,
    reconcile: F,
) where
    R: Hash + Eq + Clone + Send + std::fmt::Debug + 'static,
    T: Stream<Item = Trigger<R>>,
    F: Fn(O) -> Fut,
    Fut: Future<Output = Requeue> + Send + 'static,
{
    let mut triggers = std::pin::pin!(triggers.fuse());
    let mut ready = std::pin::pin!(ready);
    let mut is_ready = false;
    let mut queue = Queue::new();
    let mut running = FuturesUnordered::new();
    let concurrency = concurrency.max(1);
    loop {
        while is_ready && running.len() < concurrency {
            let Some(claim) = queue.next() else { break };
            let found = lookup(&claim);
            tracing::debug!(?claim, found = found.is_some(), "runner: start");
            match found {
                Some(object) => {
                    let mut task = Reconciling(tokio::spawn(reconcile(object)));
                    running.push(async move { (claim, (&mut task.0).await.ok().flatten()) });
                }
                // Gone since it was triggered: nothing to reconcile.
                None => queue.ended(claim, None),
            }
        }
        tokio::select! {
            () = &mut ready, if !is_ready => is_ready = true,
            trigger = triggers.next() => match trigger {
                Some(Trigger::One(claim)) => {
                    tracing::debug!(?claim, "runner: triggered");
                    queue.trigger(claim)
                }
                Some(Trigger::All) => every().into_iter().for_each(|claim| queue.trigger(claim)),
                None => return,
            },
            Some((claim, requeue)) = running.next(), if !running.is_empty() => queue.ended(claim, requeue),
            Some(expired) = queue.requeues.next(), if !queue.due.is_empty() => {
                let claim = expired.into_inner();
                queue.due.remove(&claim);
                shrink_map_when_sparse(&mut queue.due);
                queue.trigger(claim);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::sync::mpsc;

    /// A stream of the triggers sent on the channel.
    fn from_channel(mut rx: mpsc::UnboundedReceiver<Trigger<u32>>) -> impl Stream<Item = Trigger<u32>> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    /// What the fake reconciles did: (claim, started or ended), in order; and the most that ran at once.
    #[derive(Default)]
    struct Log {
        events: Vec<(u32, &'static str)>,
        now: usize,
        most: usize,
    }

    fn start(
        log: Arc<Mutex<Log>>,
        takes: Duration,
        requeue: Option<Duration>,
    ) -> (mpsc::UnboundedSender<Trigger<u32>>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            run(
                from_channel(rx),
                async {},
                |claim: &u32| (*claim < 100).then_some(*claim),
                || vec![1, 2, 3],
                2,
                move |claim: u32| {
                    let log = log.clone();
                    async move {
                        {
                            let mut log = log.lock().unwrap();
                            log.events.push((claim, "start"));
                            log.now += 1;
                            log.most = log.most.max(log.now);
                        }
                        tokio::time::sleep(takes).await;
                        let mut log = log.lock().unwrap();
                        log.events.push((claim, "end"));
                        log.now -= 1;
                        requeue
                    }
                },
            )
            .await
        });
        (tx, task)
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_runs_at_once_and_waiting_triggers_of_one_claim_run_once() {
        let log = Arc::new(Mutex::new(Log::default()));
        let (tx, _task) = start(log.clone(), Duration::from_millis(10), None);
        for claim in [7, 7, 7, 8, 7] {
            tx.send(Trigger::One(claim)).unwrap();
        }
        settle().await;
        // Started at once, with no time passing: no delay queue in between.
        assert_eq!(log.lock().unwrap().events, [(7, "start"), (8, "start")]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        settle().await;
        let events = log.lock().unwrap().events.clone();
        // The triggers of 7 that came while it ran run it once more, after it ended.
        assert_eq!(
            events.iter().filter(|(c, e)| *c == 7 && *e == "start").count(),
            2,
            "{events:?}"
        );
        assert_eq!(
            events.iter().filter(|(c, e)| *c == 8 && *e == "start").count(),
            1,
            "{events:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_claim_never_runs_twice_at_once_and_the_width_is_kept() {
        let log = Arc::new(Mutex::new(Log::default()));
        let (tx, _task) = start(log.clone(), Duration::from_millis(10), None);
        for round in 0..5 {
            for claim in 0..6 {
                tx.send(Trigger::One(claim)).unwrap();
            }
            if round % 2 == 0 {
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        settle().await;
        let log = log.lock().unwrap();
        assert!(log.most <= 2, "at most 2 at once, saw {}", log.most);
        // Per claim: start and end alternate (never two starts in a row), and it ends last.
        for claim in 0..6 {
            let mine: Vec<&str> = log
                .events
                .iter()
                .filter(|(c, _)| *c == claim)
                .map(|(_, e)| *e)
                .collect();
            assert!(
                mine.chunks(2).all(|pair| pair == ["start", "end"]),
                "claim {claim}: {mine:?}"
            );
            assert!(!mine.is_empty());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_requeue_comes_after_its_delay_unless_a_trigger_comes_first_and_gone_claims_are_skipped() {
        let log = Arc::new(Mutex::new(Log::default()));
        let (tx, _task) = start(log.clone(), Duration::from_millis(1), Some(Duration::from_secs(60)));
        tx.send(Trigger::One(5)).unwrap();
        tx.send(Trigger::One(500)).unwrap(); // not found: gone
        settle().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        settle().await;
        assert_eq!(log.lock().unwrap().events, [(5, "start"), (5, "end")]);
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        assert_eq!(log.lock().unwrap().events.len(), 2, "not due yet");
        tokio::time::sleep(Duration::from_secs(31)).await;
        settle().await;
        assert_eq!(
            log.lock().unwrap().events.len(),
            4,
            "the requeue ran: {:?}",
            log.lock().unwrap().events
        );
        // A trigger before the requeue is due replaces it: one run, not two.
        tx.send(Trigger::One(5)).unwrap();
        settle().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        settle().await;
        assert_eq!(log.lock().unwrap().events.len(), 6);
        tokio::time::sleep(Duration::from_secs(59)).await;
        settle().await;
        assert_eq!(log.lock().unwrap().events.len(), 6, "the earlier requeue was cancelled");
        // All: every claim of the kind.
        tx.send(Trigger::All).unwrap();
        settle().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        settle().await;
        let started: HashSet<u32> = log.lock().unwrap().events[6..].iter().map(|(c, _)| *c).collect();
        assert_eq!(started, HashSet::from([1, 2, 3]));
    }

    #[tokio::test(start_paused = true)]
    async fn reconciles_end_with_the_runner() {
        let log = Arc::new(Mutex::new(Log::default()));
        let (tx, task) = start(log.clone(), Duration::from_secs(10), None);
        tx.send(Trigger::One(1)).unwrap();
        settle().await;
        assert_eq!(log.lock().unwrap().events, [(1, "start")]);
        task.abort();
        settle().await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        settle().await;
        assert_eq!(
            log.lock().unwrap().events,
            [(1, "start")],
            "the reconcile went on without its runner"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_starts_before_the_cache_is_ready() {
        let log = Arc::new(Mutex::new(Log::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let logged = log.clone();
        let _task = tokio::spawn(run(
            from_channel(rx),
            async move {
                let _ = ready_rx.await;
            },
            |claim: &u32| Some(*claim),
            Vec::new,
            2,
            move |claim: u32| {
                let log = logged.clone();
                async move {
                    log.lock().unwrap().events.push((claim, "start"));
                    None
                }
            },
        ));
        tx.send(Trigger::One(1)).unwrap();
        settle().await;
        assert!(log.lock().unwrap().events.is_empty());
        ready_tx.send(()).unwrap();
        settle().await;
        assert_eq!(log.lock().unwrap().events, [(1, "start")]);
    }
}
