//! The work queue of a controller, as client-go's workqueue behaves: a key waits at most
//! once (adding it again while it waits is a no-op), a key being reconciled is never handed
//! out twice at once (added meanwhile, it is marked dirty and waits again when the first run
//! is done), a key may wait until a later instant (requeue-after; the earliest asked for
//! wins), and a failing key backs off exponentially until it is forgotten. Pure: every call
//! takes the current instant, so tests need no clock and no sleep.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// The first retry of a failing key waits this long, doubling per failure…
pub const BACKOFF_BASE: Duration = Duration::from_millis(5);
/// …up to this (client-go's `DefaultControllerRateLimiter` uses 5 ms and 1,000 s; Skiff's
/// controllers heal faster with a 5-minute cap).
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Keys waiting, in progress, and waiting for later.
#[derive(Debug, Default)]
pub struct WorkQueue {
    /// Ready keys in the order they became ready.
    ready: VecDeque<String>,
    /// Every key that is ready or will be when its run finishes (the dedup set).
    dirty: HashSet<String>,
    /// Keys being reconciled now.
    processing: HashSet<String>,
    /// Keys waiting for an instant, by that instant.
    later: BTreeMap<(Instant, u64), String>,
    /// Each delayed key's place in `later`.
    later_at: HashMap<String, (Instant, u64)>,
    /// A tie-breaker for equal instants.
    seq: u64,
    /// Consecutive failures per key.
    failures: HashMap<String, u32>,
}

impl WorkQueue {
    /// An empty queue.
    pub fn new() -> WorkQueue {
        WorkQueue::default()
    }

    /// Asks for `key` to be reconciled as soon as possible.
    pub fn add(&mut self, key: &str) {
        // A delayed run is overtaken by an immediate one.
        if let Some(at) = self.later_at.remove(key) {
            self.later.remove(&at);
        }
        if !self.dirty.insert(key.to_string()) {
            return;
        }
        if !self.processing.contains(key) {
            self.ready.push_back(key.to_string());
        }
    }

    /// Asks for `key` to be reconciled at `at` (or earlier, if already asked for earlier or
    /// now).
    pub fn add_at(&mut self, key: &str, at: Instant, now: Instant) {
        if at <= now {
            return self.add(key);
        }
        if self.dirty.contains(key) {
            return;
        }
        if let Some(&(old, seq)) = self.later_at.get(key) {
            if old <= at {
                return;
            }
            self.later.remove(&(old, seq));
        }
        self.seq += 1;
        self.later.insert((at, self.seq), key.to_string());
        self.later_at.insert(key.to_string(), (at, self.seq));
    }

    /// Moves every key whose instant has come to the ready keys.
    fn promote(&mut self, now: Instant) {
        while let Some((&(at, seq), _)) = self.later.iter().next() {
            if at > now {
                break;
            }
            if let Some(key) = self.later.remove(&(at, seq)) {
                self.later_at.remove(&key);
                self.add(&key);
            }
        }
    }

    /// The next key to reconcile, marked in progress; none when nothing is due.
    pub fn take(&mut self, now: Instant) -> Option<String> {
        self.promote(now);
        let key = self.ready.pop_front()?;
        self.dirty.remove(&key);
        self.processing.insert(key.clone());
        Some(key)
    }

    /// `key`'s run is over: if it was added meanwhile, it is ready again.
    pub fn done(&mut self, key: &str) {
        self.processing.remove(key);
        if self.dirty.contains(key) {
            self.ready.push_back(key.to_string());
        }
    }

    /// Records a failure of `key` and returns how long to wait before its retry.
    pub fn failed(&mut self, key: &str) -> Duration {
        let n = self.failures.entry(key.to_string()).or_insert(0);
        let wait = BACKOFF_BASE
            .checked_mul(1u32.checked_shl(*n).unwrap_or(u32::MAX))
            .unwrap_or(BACKOFF_CAP)
            .min(BACKOFF_CAP);
        *n = n.saturating_add(1);
        wait
    }

    /// `key` succeeded: its back-off starts afresh.
    pub fn forget(&mut self, key: &str) {
        self.failures.remove(key);
    }

    /// Consecutive failures of `key`.
    pub fn failures(&self, key: &str) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }

    /// When the earliest delayed key is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.later.keys().next().map(|(at, _)| *at)
    }

    /// Keys ready now (not counting delayed or in-progress ones).
    pub fn len(&self) -> usize {
        self.ready.len()
    }

    /// Nothing ready.
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// Keys delayed.
    pub fn delayed(&self) -> usize {
        self.later.len()
    }

    /// Keys in progress.
    pub fn in_progress(&self) -> usize {
        self.processing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_key_waits_once() {
        let mut q = WorkQueue::new();
        let now = Instant::now();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.take(now).as_deref(), Some("a"));
        assert_eq!(q.take(now).as_deref(), Some("b"));
        assert_eq!(q.take(now), None);
    }

    #[test]
    fn a_key_in_progress_is_not_handed_out_twice_but_runs_again_after() {
        let mut q = WorkQueue::new();
        let now = Instant::now();
        q.add("a");
        assert_eq!(q.take(now).as_deref(), Some("a"));
        q.add("a");
        q.add("a");
        assert_eq!(q.take(now), None, "a is in progress");
        q.done("a");
        assert_eq!(
            q.take(now).as_deref(),
            Some("a"),
            "added meanwhile: once more"
        );
        q.done("a");
        assert_eq!(q.take(now), None);
    }

    #[test]
    fn requeue_after_waits_for_its_instant_and_the_earliest_wins() {
        let mut q = WorkQueue::new();
        let now = Instant::now();
        q.add_at("a", now + Duration::from_secs(10), now);
        q.add_at("a", now + Duration::from_secs(5), now);
        q.add_at("a", now + Duration::from_secs(20), now);
        assert_eq!(q.delayed(), 1);
        assert_eq!(q.next_due(), Some(now + Duration::from_secs(5)));
        assert_eq!(q.take(now + Duration::from_secs(4)), None);
        assert_eq!(q.take(now + Duration::from_secs(5)).as_deref(), Some("a"));
        assert_eq!(q.delayed(), 0);
    }

    #[test]
    fn an_immediate_add_overtakes_a_delayed_one() {
        let mut q = WorkQueue::new();
        let now = Instant::now();
        q.add_at("a", now + Duration::from_secs(60), now);
        q.add("a");
        assert_eq!(q.delayed(), 0);
        assert_eq!(q.take(now).as_deref(), Some("a"));
        q.done("a");
        assert_eq!(q.take(now + Duration::from_secs(61)), None, "not twice");
        // A key already waiting now is not also delayed.
        q.add("b");
        q.add_at("b", now + Duration::from_secs(1), now);
        assert_eq!(q.delayed(), 0);
    }

    #[test]
    fn failures_back_off_exponentially_to_the_cap_until_forgotten() {
        let mut q = WorkQueue::new();
        assert_eq!(q.failed("a"), Duration::from_millis(5));
        assert_eq!(q.failed("a"), Duration::from_millis(10));
        assert_eq!(q.failed("a"), Duration::from_millis(20));
        assert_eq!(q.failed("b"), Duration::from_millis(5), "per key");
        for _ in 0..40 {
            q.failed("a");
        }
        assert_eq!(q.failed("a"), BACKOFF_CAP);
        q.forget("a");
        assert_eq!(q.failures("a"), 0);
        assert_eq!(q.failed("a"), Duration::from_millis(5));
    }
}
