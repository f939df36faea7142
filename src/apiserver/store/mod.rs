//! The Store actor: a key-value store with etcd semantics, owned by the ApiServer alone.
//!
//! - One global revision; each key keeps `create_revision` and `mod_revision`.
//! - Creates fail when the key exists; updates and deletes compare-and-swap on mod_revision.
//! - Ranges by prefix with a limit, a start key and an optional past revision (served by
//!   undoing the history window), so paged lists are consistent snapshots.
//! - Watches from a revision replay the history window; older revisions get `Expired`.
//! - The committed state (`state.rs`) keeps each value packed against its resource's first
//!   value: at 100,000 pods the Store's share of memory fell several-fold.
//! - Group commit: writes are checked and numbered at once against the committed state plus
//!   the not-yet-durable ones, then handed to a writer thread in batches. While one batch is
//!   being fsynced the next one gathers, so 64 writers share one fsync instead of queueing
//!   for 64. A write is acknowledged, and becomes visible to reads and watches, only after
//!   its batch is durable.
//!
//! This module is private to `apiserver`: nothing else in the crate can name the Store.

mod backend;
mod embedded;
pub mod encryption;
pub mod etcd;
mod memory;
mod state;
mod watchers;

pub use watchers::Trigger;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::metrics;
use actix::prelude::*;
use bytes::Bytes;
pub use state::Snapshot;
use state::State;
use tokio::sync::{mpsc, oneshot};

pub use backend::{Backend, BackendError, Change};
pub use embedded::{EmbeddedBackend, DEFAULT_CHECKPOINT_BYTES};
pub use memory::MemoryBackend;

/// A revision of the store: `resourceVersion` of the objects.
pub type Revision = u64;

/// One live key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, e.g. `/registry/pods/default/web-1`.
    pub key: String,
    /// The encoded object (MessagePack), its resourceVersion already set to mod_revision.
    pub value: Bytes,
    /// Revision that created the key.
    pub create_revision: Revision,
    /// Revision of the last change.
    pub mod_revision: Revision,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created or changed.
    Put,
    /// Removed.
    Delete,
}

/// One change as watchers see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// For a put, the new value; for a delete, the tombstone (last value, re-encoded with the
    /// delete's revision) with mod_revision = the delete's revision.
    pub kv: KeyValue,
    /// The value before the change, if the key existed: lets a filtered watch turn a change
    /// that leaves its selector into a DELETED event, and lets ranges undo history.
    pub prev: Option<KeyValue>,
    /// The (new, previous) values decoded, filled by the first filtered watcher that needs
    /// them, so a thousand watchers with selectors decode each event once, not a thousand
    /// times.
    pub decoded: std::sync::OnceLock<(Option<serde_json::Value>, Option<serde_json::Value>)>,
    /// The `traceparent` of the request that made the change, which its watch event carries.
    pub trace: Option<Arc<str>>,
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist.
    #[error("key not found")]
    NotFound,
    /// Create of a key that exists.
    #[error("key already exists")]
    AlreadyExists,
    /// The key's mod_revision is not the one expected.
    #[error("revision mismatch: key is at {current}")]
    Conflict {
        /// The key's current mod_revision (0 if absent).
        current: Revision,
    },
    /// The requested revision is older than the history kept.
    #[error("revision {requested} has been compacted; oldest available is {oldest}")]
    Expired {
        /// What the caller asked for.
        requested: Revision,
        /// The oldest revision that can still be served.
        oldest: Revision,
    },
    /// The encoded value is larger than the store takes.
    #[error("value of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The value could not be encoded.
    #[error("encode: {0}")]
    Encode(String),
    /// The disk failed; nothing of the batch was committed.
    #[error("{0}")]
    Backend(String),
    /// The store cannot be reached (etcd down or without quorum): nothing was written.
    #[error("{0}")]
    Unavailable(String),
}

/// Produces the bytes to store once the revision is known, so the object can carry its own
/// resourceVersion without a second encode on every read.
pub type Encoder = Box<dyn FnOnce(Revision) -> Result<Vec<u8>, String> + Send>;

/// Tunables of the Store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How many events the watch history keeps; watches and snapshot ranges older than that
    /// answer Expired.
    pub history: usize,
    /// Largest encoded value accepted (etcd's default request limit is 1.5 MiB).
    pub max_value_bytes: usize,
    /// Capacity of each watcher's channel beyond its replay; a watcher that falls this far
    /// behind is dropped and resumes from its last revision.
    pub watch_buffer: usize,
    /// Most writes made durable by one commit (1 turns group commit off: the baseline the
    /// benchmark compares with).
    pub max_batch: usize,
    /// Batches handed to the writer thread at once (it makes everything queued for it durable
    /// with one fsync). With 1, writes that arrive while a batch is being made durable wait
    /// for the next commit and go in one batch; 2 lets the writer start the next fsync
    /// without waiting for the actor. The benchmark measures both; 1 did as well or better.
    pub pipeline: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            history: 10_000,
            max_value_bytes: 1_572_864,
            watch_buffer: 4096,
            max_batch: 4096,
            pipeline: 1,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write waiting for its batch to become durable.
struct Pending {
    change: Change,
    event: Event,
    reply: Reply<KeyValue>,
}

/// The Store actor. See the module docs.
pub struct Store {
    /// Committed, durable, visible state (packed); shared read-only with `Reader`s.
    state: Arc<RwLock<State>>,
    /// Last durable revision: what reads and watches see.
    revision: Revision,
    /// Last revision handed out (>= revision while a batch is in flight).
    assigned: Revision,
    /// Latest not-yet-durable state per key, with the revision that set it: CAS checks look
    /// here first so writes can be numbered before their batch is durable.
    overlay: HashMap<String, (Revision, Option<KeyValue>)>,
    /// Writes gathering for the next batch.
    gathering: Vec<Pending>,
    /// Refusals that rest on a write not yet durable (a conflict with it, a create of a key it
    /// creates, …), with that write's revision: answered only once it is durable, and as a
    /// failure (not a refusal) if it fails. Answering at once would tell the caller of a
    /// write that nobody can read yet, and that may never happen — found by the robustness
    /// checker: a swap refused at t, then a read started after t still returning the version
    /// the swap expected.
    deferred: Vec<(Revision, Reply<KeyValue>, StoreError)>,
    /// A `Flush` is queued behind the messages in the mailbox.
    flush_scheduled: bool,
    /// Batches handed to the writer thread, oldest first, with when they were handed over.
    in_flight: VecDeque<(Vec<Pending>, std::time::Instant)>,
    /// Channel to the writer thread.
    writer: Option<std::sync::mpsc::Sender<Batch>>,
    /// Bumped when a batch fails: the writer fails every later batch of the old epoch
    /// unwritten (they may build on the failed one), and their late answers are ignored.
    epoch: u64,
    /// The backend, until `started` moves it onto the writer thread.
    backend: Option<Box<dyn Backend>>,
    /// Recent events for watch replay and snapshot ranges.
    history: VecDeque<Arc<Event>>,
    /// Events up to this revision are gone from history.
    compacted: Revision,
    /// Registered watchers, indexed by what they select.
    watchers: watchers::Watchers,
    /// Tunables.
    config: StoreConfig,
    /// Latest durable revision, for watchers that want to send bookmarks.
    progress: tokio::sync::watch::Sender<Revision>,
    /// Commit counters.
    stats: StoreStats,
    /// In etcd mode, the link to etcd: writes are etcd Txns and this Store is the cache its
    /// watch feeds (see `etcd`).
    etcd: Option<etcd::Etcd>,
    /// etcd mode: writes etcd has answered, waiting until the cache reaches the revision of
    /// the answer (a write is acknowledged with the cache's event for it; a refusal once the
    /// cache shows the state it rests on).
    parked: BTreeMap<Revision, Vec<Parked>>,
    /// etcd mode: how often old revisions are compacted.
    compaction: std::time::Duration,
    /// etcd mode: the `traceparent` of this API server's writes whose events have not come
    /// back yet, by revision (a write's event is traced as the write was).
    traces: HashMap<Revision, Arc<str>>,
}

/// A write etcd has answered, waiting for the cache to catch up.
struct Parked {
    key: String,
    reply: Reply<KeyValue>,
    refused: Option<StoreError>,
    since: std::time::Instant,
}

/// How long a refusal waits for the cache at most: one resting on a revision of no key under
/// `/registry/` (a key already gone, with only foreign writes after it) has no event to wait
/// for where etcd's progress notifications cannot be trusted.
const REFUSAL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// One batch for the writer thread.
struct Batch {
    epoch: u64,
    changes: Vec<Change>,
    revision: Revision,
}

/// Counters of the Store, for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoreStats {
    /// The durable revision.
    pub revision: Revision,
    /// Durable commits (one fsync each for the embedded backend).
    pub commits: u64,
    /// Writes those commits carried.
    pub writes: u64,
    /// Time spent from handing a batch to the writer until it was durable.
    pub commit_seconds: f64,
    /// Live watchers.
    pub watchers: usize,
}

impl Store {
    /// Opens a Store over `backend`, loading what it holds. Blocking (reads the disk): call it
    /// before the actor system serves requests.
    pub fn open(mut backend: Box<dyn Backend>, config: StoreConfig) -> Result<Self, BackendError> {
        let loaded = backend.load()?;
        let state = State::of(loaded.kvs);
        let (progress, _) = tokio::sync::watch::channel(loaded.revision);
        Ok(Store {
            state: Arc::new(RwLock::new(state)),
            revision: loaded.revision,
            assigned: loaded.revision,
            overlay: HashMap::new(),
            gathering: Vec::new(),
            deferred: Vec::new(),
            flush_scheduled: false,
            in_flight: VecDeque::new(),
            writer: None,
            epoch: 0,
            backend: Some(backend),
            history: VecDeque::new(),
            compacted: loaded.revision,
            watchers: Default::default(),
            config,
            progress,
            stats: StoreStats::default(),
            etcd: None,
            parked: BTreeMap::new(),
            compaction: std::time::Duration::ZERO,
            traces: HashMap::new(),
        })
    }

    /// A Store that is the cache of etcd (`loaded` is what [`etcd::Etcd::load`] read):
    /// writes go to etcd, reads and watches are served from memory as etcd's watch feeds
    /// it. Old revisions are compacted every `compaction`.
    pub fn on_etcd(
        etcd: etcd::Etcd,
        loaded: backend::Loaded,
        config: StoreConfig,
        compaction: std::time::Duration,
    ) -> Self {
        let mut store = Store::open(Box::new(memory::MemoryBackend), config)
            .expect("the memory backend loads nothing");
        *store.state.write().unwrap_or_else(|p| p.into_inner()) = State::of(loaded.kvs);
        store.revision = loaded.revision;
        store.assigned = loaded.revision;
        store.compacted = loaded.revision;
        store.progress.send_replace(loaded.revision);
        store.backend = None;
        store.etcd = Some(etcd);
        store.compaction = compaction;
        store
    }

    /// A cheap reader of the committed state, for the hot GET path: no actor round trip.
    pub fn reader(&self) -> Reader {
        Reader {
            state: self.state.clone(),
            progress: self.progress.subscribe(),
            healthy: match &self.etcd {
                Some(etcd) => etcd.health(),
                None => Arc::new(std::sync::atomic::AtomicBool::new(true)),
            },
            etcd: self.etcd.clone(),
        }
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        // Only the Store writes, and it never panics while holding the lock.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The current value of a key including writes not yet durable (for CAS checks).
    fn latest(&self, key: &str) -> Option<KeyValue> {
        match self.overlay.get(key) {
            Some((_, v)) => v.clone(),
            None => self.read_state().get(key),
        }
    }

    /// Refuses a write to `key`: at once when the refusal rests on durable state, else once
    /// the pending write it rests on is durable (see `deferred`).
    fn refuse<M>(&mut self, key: &str, error: StoreError) -> MessageResult<M>
    where
        M: Message<Result = Ack>,
    {
        match self.overlay.get(key) {
            Some((rev, _)) => {
                let (tx, rx) = oneshot::channel();
                self.deferred.push((*rev, tx, error));
                ack(rx)
            }
            None => refused(error),
        }
    }

    /// Numbers a write, records it in the overlay and queues it for the next batch.
    fn stage(&mut self, ctx: &mut Context<Self>, pending: Pending) {
        let rev = pending.event.kv.mod_revision;
        let entry = match &pending.change {
            Change::Put(kv) => Some(kv.clone()),
            Change::Delete(_) => None,
        };
        self.overlay
            .insert(pending.event.kv.key.clone(), (rev, entry));
        self.gathering.push(pending);
        // Flushed once the writes already in the mailbox are staged too, so one turn of the
        // actor makes one batch instead of one per write.
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }

    /// Hands gathered writes to the writer thread while fewer than `config.pipeline` batches
    /// are there.
    fn flush(&mut self, _ctx: &mut Context<Self>) {
        while self.in_flight.len() < self.config.pipeline.max(1) && !self.gathering.is_empty() {
            let take = self.gathering.len().min(self.config.max_batch.max(1));
            let rest = self.gathering.split_off(take);
            let batch = std::mem::replace(&mut self.gathering, rest);
            let changes = batch.iter().map(|p| p.change.clone()).collect();
            let revision = batch.last().map(|p| p.event.kv.mod_revision).unwrap_or(0);
            self.in_flight.push_back((batch, std::time::Instant::now()));
            let sent = self
                .writer
                .as_ref()
                .map(|w| {
                    w.send(Batch {
                        epoch: self.epoch,
                        changes,
                        revision,
                    })
                    .is_ok()
                })
                .unwrap_or(false);
            if !sent {
                self.fail_all(StoreError::Backend("store writer is gone".into()));
                return;
            }
        }
    }

    /// Fails every write not yet durable and forgets their revisions (none was visible).
    fn fail_all(&mut self, error: StoreError) {
        let in_flight = self.in_flight.drain(..).flat_map(|(b, _)| b);
        for p in in_flight.chain(self.gathering.drain(..)) {
            let _ = p.reply.send(Err(error.clone()));
        }
        // The writes those refusals rested on did not happen: the refusals would be wrong.
        for (_, reply, _) in self.deferred.drain(..) {
            let _ = reply.send(Err(StoreError::Backend(format!(
                "a concurrent write failed ({error}); retry"
            ))));
        }
        self.overlay.clear();
        self.assigned = self.revision;
        self.epoch += 1;
    }

    /// Applies a durable batch: state, history, watchers, then the replies.
    fn commit(&mut self, ctx: &mut Context<Self>) {
        let Some((batch, flushed_at)) = self.in_flight.pop_front() else {
            return;
        };
        self.stats.writes += batch.len() as u64;
        self.stats.commit_seconds += flushed_at.elapsed().as_secs_f64();
        let m = store_metrics();
        m.commit.observe(flushed_at.elapsed().as_secs_f64());
        m.writes.add(batch.len() as u64);
        let mut events = Vec::with_capacity(batch.len());
        {
            let state = self.state.clone();
            let mut state = state.write().unwrap_or_else(|p| p.into_inner());
            for p in batch {
                let key = &p.event.kv.key;
                match p.change {
                    Change::Put(kv) => state.insert(kv),
                    Change::Delete(_) => {
                        state.remove(key);
                    }
                }
                let rev = p.event.kv.mod_revision;
                if self.overlay.get(key).is_some_and(|(r, _)| *r == rev) {
                    self.overlay.remove(key);
                }
                self.revision = rev;
                events.push((Arc::new(p.event), p.reply));
            }
        }
        // The next batch goes to the writer before watchers and writers hear of this one, so
        // its fsync overlaps the work below.
        self.flush(ctx);
        for (event, reply) in events {
            self.notify(&event);
            self.history.push_back(event.clone());
            while self.history.len() > self.config.history {
                if let Some(old) = self.history.pop_front() {
                    self.compacted = old.revision();
                }
            }
            // The put's value, or the delete's tombstone.
            let _ = reply.send(Ok(event.kv.clone()));
        }
        if !self.deferred.is_empty() {
            let durable = self.revision;
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
                .into_iter()
                .partition(|(rev, _, _)| *rev <= durable);
            self.deferred = waiting;
            for (_, reply, error) in ready {
                let _ = reply.send(Err(error));
            }
        }
        m.revision.set(self.revision as f64);
        self.progress.send_replace(self.revision);
    }

    /// Hands an event to the watchers it concerns (see `watchers`).
    fn notify(&mut self, event: &Arc<Event>) {
        self.watchers.notify(event);
    }

    /// The values of the keys in `[from, to)` changed after `at`, as they were at `at`
    /// (None: the key did not exist then).
    fn undo_since(&self, at: Revision) -> BTreeMap<String, Option<KeyValue>> {
        let mut undo = BTreeMap::new();
        for e in self.history.iter().rev() {
            if e.revision() <= at {
                break;
            }
            undo.insert(e.kv.key.clone(), e.prev.clone());
        }
        undo
    }

    fn check_window(&self, at: Revision) -> Result<(), StoreError> {
        if at < self.compacted {
            return Err(StoreError::Expired {
                requested: at,
                oldest: self.compacted,
            });
        }
        Ok(())
    }
}

impl Actor for Store {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(etcd) = &self.etcd {
            let addr = ctx.address();
            let feed = etcd.clone().feed(self.revision, move |fed| {
                addr.do_send(Feed(fed));
                addr.connected()
            });
            etcd.spawn(feed);
            etcd.spawn(etcd.clone().compact_every(self.compaction));
            ctx.run_interval(REFUSAL_WAIT / 4, |store, _| store.expire_refusals());
            return;
        }
        // The writer thread owns the backend: fsync never runs on an actor's thread.
        let Some(mut backend) = self.backend.take() else {
            return;
        };
        let (tx, rx) = std::sync::mpsc::channel::<Batch>();
        let addr = ctx.address();
        let spawned = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let mut failed_epoch = None;
                while let Ok(first) = rx.recv() {
                    // Whatever else is queued is made durable by the same fsync.
                    let mut queued = vec![first];
                    queued.extend(rx.try_iter());
                    let mut queued = queued.into_iter().peekable();
                    while let Some(mut batch) = queued.next() {
                        let mut batches = 1;
                        while let Some(next) = queued.next_if(|b| b.epoch == batch.epoch) {
                            batch.changes.extend(next.changes);
                            batch.revision = next.revision;
                            batches += 1;
                        }
                        let result = if failed_epoch == Some(batch.epoch) {
                            Err("an earlier batch failed".to_string())
                        } else {
                            let t = std::time::Instant::now();
                            let r = backend
                                .persist(&batch.changes, batch.revision)
                                .map_err(|e| e.to_string());
                            store_metrics().persist.observe(t.elapsed().as_secs_f64());
                            r
                        };
                        if result.is_err() {
                            failed_epoch = Some(batch.epoch);
                        }
                        addr.do_send(Persisted {
                            epoch: batch.epoch,
                            batches,
                            result,
                        });
                    }
                }
            });
        match spawned {
            Ok(_) => self.writer = Some(tx),
            Err(e) => tracing::error!(error = %e, "cannot start the store writer thread"),
        }
    }
}

/// Hands the gathered writes to the writer thread (sent by the Store to itself).
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

impl Handler<Flush> for Store {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        self.flush(ctx);
    }
}

/// The writer thread finished one or more batches (merged into one durable write).
#[derive(Message)]
#[rtype(result = "()")]
struct Persisted {
    /// The epoch the batches were sent in.
    epoch: u64,
    /// How many of the oldest in-flight batches this covers.
    batches: usize,
    /// Whether it is durable.
    result: Result<(), String>,
}

impl Handler<Persisted> for Store {
    type Result = ();

    fn handle(&mut self, msg: Persisted, ctx: &mut Context<Self>) {
        let _span =
            tracing::debug_span!("handle", actor = "Store", message = "Persisted").entered();
        if msg.epoch != self.epoch {
            return; // a batch already failed with its epoch
        }
        match msg.result {
            Ok(()) => {
                self.stats.commits += 1;
                for _ in 0..msg.batches {
                    self.commit(ctx);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store batch failed; failing its writes");
                self.fail_all(StoreError::Backend(e));
                self.flush(ctx);
            }
        }
    }
}

/// Reads committed keys without a message to the Store (the Store is their only writer).
#[derive(Clone)]
pub struct Reader {
    state: Arc<RwLock<State>>,
    progress: tokio::sync::watch::Receiver<Revision>,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    /// etcd mode: the etcd this cache follows, for consistent reads.
    etcd: Option<etcd::Etcd>,
}

impl Reader {
    /// Whether reads without a resourceVersion must first catch up with etcd (several API
    /// servers may write there; a local store sees every write itself).
    pub fn follows_etcd(&self) -> bool {
        self.etcd.is_some()
    }

    /// A consistent read from the cache (kube's KEP-2340): etcd's current revision, then a
    /// wait (at most `limit`) until the cache has reached it. Without etcd, at once.
    pub async fn catch_up(&self, limit: std::time::Duration) -> Result<(), StoreError> {
        let Some(etcd) = &self.etcd else {
            return Ok(());
        };
        let rev = etcd.read_revision().await?;
        self.wait_for(rev, limit).await;
        match self.revision() {
            now if now >= rev => Ok(()),
            now => Err(StoreError::Unavailable(format!(
                "the watch cache is at revision {now}, behind etcd's {rev}"
            ))),
        }
    }

    /// Whether the store is reachable (etcd: its watch is live); a local store always is.
    pub fn healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The committed value of a key.
    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
    }

    /// Every committed key under `prefix`, in key order.
    pub fn values(&self, prefix: &str) -> Vec<KeyValue> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .range(std::ops::Bound::Included(prefix.to_string()), prefix)
            .map(|(_, kv)| kv)
            .collect()
    }

    /// A number that changes whenever a key sharing `prefix`'s `/registry/<x>/` is written
    /// or removed: what is derived from those keys is rebuilt only when it moves.
    pub fn epoch(&self, prefix: &str) -> u64 {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .epoch(prefix)
    }

    /// The committed revision.
    pub fn revision(&self) -> Revision {
        *self.progress.borrow()
    }

    /// Waits (up to `limit`) until the committed revision reaches `rev`: a writer that lost a
    /// compare-and-swap to a write still being made durable retries once that write is
    /// visible, instead of spinning on the old value.
    pub async fn wait_for(&self, rev: Revision, limit: std::time::Duration) {
        let mut rx = self.progress.clone();
        let _ = tokio::time::timeout(limit, rx.wait_for(|r| *r >= rev)).await;
    }
}

/// Reads keys under a prefix, in key order.
#[derive(Message)]
#[rtype(result = "Result<RangeResult, StoreError>")]
pub struct Range {
    /// Keys must start with this.
    pub prefix: String,
    /// Start after this key (the continue point of a paged list).
    pub start_after: Option<String>,
    /// At most this many keys (0: no limit).
    pub limit: usize,
    /// Stop adding keys once their values add up to this many bytes (0: no limit); at least
    /// one key is always returned, so one NATS message can carry the page.
    pub max_bytes: usize,
    /// Serve the range as of this revision (None: now).
    pub at: Option<Revision>,
}

/// A page of a range.
#[derive(Debug, Clone)]
pub struct RangeResult {
    /// The keys in order.
    pub kvs: Vec<KeyValue>,
    /// The revision the range was served at.
    pub revision: Revision,
    /// More keys follow the last one.
    pub more: bool,
}

impl Handler<Range> for Store {
    type Result = Result<RangeResult, StoreError>;

    fn handle(&mut self, msg: Range, _: &mut Context<Self>) -> Self::Result {
        let _span = tracing::debug_span!("handle", actor = "Store", message = "Range", prefix = %msg.prefix).entered();
        let at = match msg.at {
            Some(at) if at < self.revision => {
                self.check_window(at)?;
                at
            }
            _ => self.revision,
        };
        let undo = if at < self.revision {
            self.undo_since(at)
        } else {
            BTreeMap::new()
        };
        let start = match &msg.start_after {
            Some(k) if k.as_str() >= msg.prefix.as_str() => Bound::Excluded(k.clone()),
            _ => Bound::Included(msg.prefix.clone()),
        };
        let state = self.read_state();
        let mut current = state.range(start.clone(), &msg.prefix).peekable();
        let mut past = undo
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&msg.prefix))
            .peekable();
        let mut kvs = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        loop {
            // Merge the live keys with the keys as they were at `at`.
            let next = match (current.peek(), past.peek()) {
                (None, None) => break,
                (Some((ck, _)), Some((pk, _))) if pk <= ck => {
                    if pk == ck {
                        current.next();
                    }
                    past.next().and_then(|(_, v)| v.clone())
                }
                (Some(_), _) => current.next().map(|(_, v)| v),
                (None, Some(_)) => past.next().and_then(|(_, v)| v.clone()),
            };
            let Some(kv) = next else { continue };
            let full = (msg.limit > 0 && kvs.len() >= msg.limit)
                || (msg.max_bytes > 0 && !kvs.is_empty() && bytes + kv.value.len() > msg.max_bytes);
            if full {
                more = true;
                break;
            }
            bytes += kv.value.len();
            kvs.push(kv);
        }
        Ok(RangeResult {
            kvs,
            revision: at,
            more,
        })
    }
}

/// Creates a key that must not exist.
#[derive(Message)]
#[rtype(result = "Ack")]
pub struct Create {
    /// The key.
    pub key: String,
    /// Encodes the value once its revision is known.
    pub value: Encoder,
    /// The `traceparent` of the request making the write.
    pub trace: Option<Arc<str>>,
}

/// Replaces a key's value if its mod_revision is still `expect`.
#[derive(Message)]
#[rtype(result = "Ack")]
pub struct Update {
    /// The key.
    pub key: String,
    /// The mod_revision the caller read.
    pub expect: Revision,
    /// Encodes the value once its revision is known.
    pub value: Encoder,
    /// The `traceparent` of the request making the write.
    pub trace: Option<Arc<str>>,
}

/// Removes a key if its mod_revision is still `expect`.
#[derive(Message)]
#[rtype(result = "Ack")]
pub struct Delete {
    /// The key.
    pub key: String,
    /// The mod_revision the caller read.
    pub expect: Revision,
    /// Encodes the tombstone watchers see (the last value, with the delete's revision).
    pub tombstone: Encoder,
    /// The `traceparent` of the request making the write.
    pub trace: Option<Arc<str>>,
}

/// The store's metrics, resolved once (they are updated on the actor's thread per batch).
struct StoreMetrics {
    revision: metrics::Gauge,
    commit: metrics::Histogram,
    persist: metrics::Histogram,
    writes: metrics::Counter,
}

fn store_metrics() -> &'static StoreMetrics {
    static M: std::sync::OnceLock<StoreMetrics> = std::sync::OnceLock::new();
    M.get_or_init(|| StoreMetrics {
        revision: metrics::gauge(
            "skiff_store_revision",
            "The store's committed revision.",
            &[],
        )
        .with(&[]),
        commit: metrics::histogram(
            "skiff_store_commit_duration_seconds",
            "From a batch's flush to its acknowledgment (group commit, durable).",
            &[],
            metrics::LATENCY_BUCKETS,
        )
        .with(&[]),
        persist: metrics::histogram(
            "skiff_store_persist_duration_seconds",
            "Time to make one batch durable (write-ahead log append and fsync).",
            &[],
            metrics::LATENCY_BUCKETS,
        )
        .with(&[]),
        writes: metrics::counter(
            "skiff_store_writes_total",
            "Writes committed to the store.",
            &[],
        )
        .with(&[]),
    })
}

/// A write the registry sends: its key, and the trace it is stamped with.
pub trait Write {
    /// The key written.
    fn key(&self) -> &str;
    /// Stamps the write with the request's `traceparent`.
    fn stamp(&mut self, trace: Arc<str>);
}

macro_rules! write_message {
    ($($t:ty),*) => {$(
        impl Write for $t {
            fn key(&self) -> &str {
                &self.key
            }
            fn stamp(&mut self, trace: Arc<str>) {
                self.trace = Some(trace);
            }
        }
    )*};
}
write_message!(Create, Update, Delete);

impl Store {
    /// Encodes a value at the next revision, or explains why not. Does not consume the
    /// revision unless the value is accepted.
    fn encode(&self, value: Encoder) -> Result<(Revision, Bytes), StoreError> {
        let rev = self.assigned + 1;
        let bytes = value(rev).map_err(StoreError::Encode)?;
        if bytes.len() > self.config.max_value_bytes {
            return Err(StoreError::TooLarge {
                size: bytes.len(),
                limit: self.config.max_value_bytes,
            });
        }
        Ok((rev, Bytes::from(bytes)))
    }

    /// Stages a put (create or update) and returns the receiver of its acknowledgment.
    fn put(
        &mut self,
        ctx: &mut Context<Self>,
        key: String,
        prev: Option<KeyValue>,
        value: Encoder,
        trace: Option<Arc<str>>,
    ) -> oneshot::Receiver<Result<KeyValue, StoreError>> {
        let (tx, rx) = oneshot::channel();
        match self.encode(value) {
            Err(e) => {
                let _ = tx.send(Err(e));
            }
            Ok((rev, value)) => {
                self.assigned = rev;
                let kv = KeyValue {
                    key,
                    value,
                    create_revision: prev.as_ref().map(|p| p.create_revision).unwrap_or(rev),
                    mod_revision: rev,
                };
                let pending = Pending {
                    change: Change::Put(kv.clone()),
                    event: Event {
                        kind: EventKind::Put,
                        kv,
                        prev,
                        decoded: Default::default(),
                        trace,
                    },
                    reply: tx,
                };
                self.stage(ctx, pending);
            }
        }
        rx
    }
}

/// The Store's answer to a write: the refusal at once, or the promise of the acknowledgment
/// once the write's batch is durable. Handing back the receiver instead of a future saves a
/// task per write on the Store's thread; the writer waits on its own.
pub struct Ack(Result<oneshot::Receiver<Result<KeyValue, StoreError>>, StoreError>);

impl Ack {
    /// Waits until the write is durable (its value, or the delete's tombstone) or has failed.
    pub async fn durable(self) -> Result<KeyValue, StoreError> {
        match self.0 {
            Err(e) => Err(e),
            Ok(rx) => rx
                .await
                .unwrap_or_else(|_| Err(StoreError::Backend("store stopped".into()))),
        }
    }
}

fn ack<M>(rx: oneshot::Receiver<Result<KeyValue, StoreError>>) -> MessageResult<M>
where
    M: Message<Result = Ack>,
{
    MessageResult(Ack(Ok(rx)))
}

fn refused<M>(e: StoreError) -> MessageResult<M>
where
    M: Message<Result = Ack>,
{
    MessageResult(Ack(Err(e)))
}

impl Handler<Create> for Store {
    type Result = MessageResult<Create>;

    fn handle(&mut self, msg: Create, ctx: &mut Context<Self>) -> Self::Result {
        let _span =
            tracing::debug_span!("handle", actor = "Store", message = "Create", key = %msg.key)
                .entered();
        if self.etcd.is_some() {
            return self.send_to_etcd(ctx, msg.key, None, Some(msg.value), msg.trace);
        }
        if self.latest(&msg.key).is_some() {
            return self.refuse(&msg.key, StoreError::AlreadyExists);
        }
        ack(self.put(ctx, msg.key, None, msg.value, msg.trace))
    }
}

impl Handler<Update> for Store {
    type Result = MessageResult<Update>;

    fn handle(&mut self, msg: Update, ctx: &mut Context<Self>) -> Self::Result {
        let _span =
            tracing::debug_span!("handle", actor = "Store", message = "Update", key = %msg.key)
                .entered();
        if self.etcd.is_some() {
            return self.send_to_etcd(ctx, msg.key, Some(msg.expect), Some(msg.value), msg.trace);
        }
        let prev = match self.latest(&msg.key) {
            None => return self.refuse(&msg.key, StoreError::NotFound),
            Some(kv) if kv.mod_revision != msg.expect => {
                let current = kv.mod_revision;
                return self.refuse(&msg.key, StoreError::Conflict { current });
            }
            Some(kv) => kv,
        };
        ack(self.put(ctx, msg.key, Some(prev), msg.value, msg.trace))
    }
}

impl Handler<Delete> for Store {
    type Result = MessageResult<Delete>;

    fn handle(&mut self, msg: Delete, ctx: &mut Context<Self>) -> Self::Result {
        let _span =
            tracing::debug_span!("handle", actor = "Store", message = "Delete", key = %msg.key)
                .entered();
        if self.etcd.is_some() {
            // The tombstone watchers see comes from etcd's event (the last value).
            return self.send_to_etcd(ctx, msg.key, Some(msg.expect), None, msg.trace);
        }
        let prev = match self.latest(&msg.key) {
            None => return self.refuse(&msg.key, StoreError::NotFound),
            Some(kv) if kv.mod_revision != msg.expect => {
                let current = kv.mod_revision;
                return self.refuse(&msg.key, StoreError::Conflict { current });
            }
            Some(kv) => kv,
        };
        let (rev, tombstone) = match self.encode(msg.tombstone) {
            Ok(v) => v,
            Err(e) => return refused(e),
        };
        self.assigned = rev;
        let (tx, rx) = oneshot::channel();
        let kv = KeyValue {
            key: msg.key.clone(),
            value: tombstone,
            create_revision: prev.create_revision,
            mod_revision: rev,
        };
        self.stage(
            ctx,
            Pending {
                change: Change::Delete(msg.key),
                event: Event {
                    kind: EventKind::Delete,
                    kv,
                    prev: Some(prev),
                    decoded: Default::default(),
                    trace: msg.trace,
                },
                reply: tx,
            },
        );
        ack(rx)
    }
}

impl Store {
    /// etcd mode: sends a write to etcd (a create when `expect` is None, else an update with
    /// a value or a delete without one) and parks its answer until the cache has caught up.
    fn send_to_etcd<M>(
        &mut self,
        ctx: &mut Context<Self>,
        key: String,
        expect: Option<Revision>,
        value: Option<Encoder>,
        trace: Option<Arc<str>>,
    ) -> MessageResult<M>
    where
        M: Message<Result = Ack>,
    {
        let Some(etcd) = self.etcd.clone() else {
            return refused(StoreError::Backend("not an etcd store".into()));
        };
        // Stored with resourceVersion 0: the cache stamps etcd's revision on it.
        let bytes = match value.map(|v| v(0)) {
            None => None,
            Some(Err(e)) => return refused(StoreError::Encode(e)),
            Some(Ok(b)) if b.len() > self.config.max_value_bytes => {
                return refused(StoreError::TooLarge {
                    size: b.len(),
                    limit: self.config.max_value_bytes,
                })
            }
            Some(Ok(b)) => match etcd.sealed(&key, &b) {
                Ok(sealed) => Some(sealed),
                Err(e) => return refused(e),
            },
        };
        let (tx, rx) = oneshot::channel();
        let addr = ctx.address();
        let task_etcd = etcd.clone();
        etcd.spawn(async move {
            let landed = match (expect, bytes) {
                (None, Some(b)) => task_etcd.create(key.clone(), b).await,
                (Some(e), Some(b)) => task_etcd.update(key.clone(), e, b).await,
                (Some(e), None) => task_etcd.delete(key.clone(), e).await,
                (None, None) => Err(StoreError::Encode("a create needs a value".into())),
            };
            addr.do_send(Answered {
                key,
                landed,
                reply: tx,
                trace,
            });
        });
        ack(rx)
    }

    /// etcd mode: answers the refusals parked longer than [`REFUSAL_WAIT`].
    fn expire_refusals(&mut self) {
        let mut expired = Vec::new();
        for parked in self.parked.values_mut() {
            let (old, keep): (Vec<Parked>, Vec<Parked>) = std::mem::take(parked)
                .into_iter()
                .partition(|p| p.refused.is_some() && p.since.elapsed() > REFUSAL_WAIT);
            *parked = keep;
            expired.extend(old);
        }
        self.parked.retain(|_, v| !v.is_empty());
        for p in expired {
            if let Some(e) = p.refused {
                let _ = p.reply.send(Err(e));
            }
        }
    }

    /// etcd mode: answers the parked writes the cache has now reached.
    fn unpark(&mut self) {
        let later = self.parked.split_off(&(self.revision + 1));
        let ready = std::mem::replace(&mut self.parked, later);
        for (rev, parked) in ready {
            for p in parked {
                self.answer(rev, p);
            }
        }
    }

    /// Answers a write etcd answered at `rev`, which the cache has reached.
    fn answer(&self, rev: Revision, p: Parked) {
        if let Some(e) = p.refused {
            let _ = p.reply.send(Err(e));
            return;
        }
        // The cache's event for it: the value with its revision stamped (a delete's last).
        let i = self.history.partition_point(|e| e.revision() < rev);
        let event = self
            .history
            .get(i)
            .filter(|e| e.revision() == rev && e.kv.key == p.key);
        let kv = match event {
            Some(e) => Ok(e.kv.clone()),
            None => self
                .read_state()
                .get(&p.key)
                .filter(|kv| kv.mod_revision == rev)
                .ok_or_else(|| {
                    StoreError::Backend(format!(
                        "the write at revision {rev} left the cache's window before it was answered"
                    ))
                }),
        };
        let _ = p.reply.send(kv);
    }

    /// etcd mode: applies what the watch brought — state, history, watchers — then answers
    /// the writes it covers.
    fn ingest(&mut self, changes: Vec<etcd::Change>, through: Revision) {
        let m = store_metrics();
        let mut events = Vec::with_capacity(changes.len());
        {
            let state = self.state.clone();
            let mut state = state.write().unwrap_or_else(|p| p.into_inner());
            for c in changes {
                if c.kv.mod_revision <= self.revision {
                    continue; // already seen (a resumed watch repeats nothing, but be sure)
                }
                let prev = state.get(&c.kv.key);
                let kind = if c.deleted {
                    state.remove(&c.kv.key);
                    EventKind::Delete
                } else {
                    state.insert(c.kv.clone());
                    EventKind::Put
                };
                self.revision = c.kv.mod_revision;
                let trace = self.traces.remove(&c.kv.mod_revision);
                events.push(Arc::new(Event {
                    kind,
                    kv: c.kv,
                    prev,
                    decoded: Default::default(),
                    trace,
                }));
            }
        }
        self.stats.writes += events.len() as u64;
        m.writes.add(events.len() as u64);
        for event in events {
            self.notify(&event);
            self.history.push_back(event);
            while self.history.len() > self.config.history {
                if let Some(old) = self.history.pop_front() {
                    self.compacted = old.revision();
                }
            }
        }
        self.revision = self.revision.max(through);
        self.assigned = self.revision;
        m.revision.set(self.revision as f64);
        self.progress.send_replace(self.revision);
        self.unpark();
    }
}

/// What etcd's watch brought (etcd mode).
#[derive(Message)]
#[rtype(result = "()")]
struct Feed(etcd::Fed);

impl Handler<Feed> for Store {
    type Result = ();

    fn handle(&mut self, Feed(fed): Feed, _: &mut Context<Self>) {
        let _span = tracing::debug_span!("handle", actor = "Store", message = "Feed").entered();
        match fed {
            etcd::Fed::Changes(changes, through) => self.ingest(changes, through),
            etcd::Fed::Reloaded(loaded) => {
                // The watch fell behind etcd's compaction: the cache starts again from a
                // fresh copy, and every watcher resumes (from a revision now too old: 410,
                // then a relist), as kube's cacher does.
                tracing::warn!(
                    revision = loaded.revision,
                    "etcd watch compacted away; cache reloaded"
                );
                *self.state.write().unwrap_or_else(|p| p.into_inner()) = State::of(loaded.kvs);
                self.history.clear();
                self.revision = self.revision.max(loaded.revision);
                self.assigned = self.revision;
                self.compacted = self.revision;
                self.watchers = Default::default();
                self.traces.clear();
                self.progress.send_replace(self.revision);
                self.unpark();
            }
        }
    }
}

/// etcd answered a write (etcd mode).
#[derive(Message)]
#[rtype(result = "()")]
struct Answered {
    key: String,
    landed: Result<etcd::Landed, StoreError>,
    reply: Reply<KeyValue>,
    /// The request's `traceparent`, for the event this write becomes.
    trace: Option<Arc<str>>,
}

impl Handler<Answered> for Store {
    type Result = ();

    fn handle(&mut self, msg: Answered, _: &mut Context<Self>) {
        let landed = match msg.landed {
            Ok(l) => l,
            Err(e) => {
                let _ = msg.reply.send(Err(e));
                return;
            }
        };
        let parked = Parked {
            key: msg.key,
            reply: msg.reply,
            refused: landed.refused,
            since: std::time::Instant::now(),
        };
        if landed.revision <= self.revision {
            self.answer(landed.revision, parked);
        } else {
            // Its event is still to come: it will carry the write's trace on.
            if let (None, Some(trace)) = (&parked.refused, msg.trace) {
                self.traces.insert(landed.revision, trace);
            }
            self.parked.entry(landed.revision).or_default().push(parked);
        }
    }
}

/// Starts a watch on a prefix.
#[derive(Message)]
#[rtype(result = "Result<WatchStart, StoreError>")]
pub struct Watch {
    /// Keys must start with this.
    pub prefix: String,
    /// Replay events after this revision. None: send the current keys as the snapshot and
    /// stream what follows.
    pub after: Option<Revision>,
    /// The exact value the watch selects on, if any: only events about it are sent.
    pub trigger: Option<Trigger>,
}

/// A started watch.
pub struct WatchStart {
    /// The keys at `revision`, when the watch asked for a snapshot.
    pub snapshot: Snapshot,
    /// The revision the watch starts after.
    pub revision: Revision,
    /// Events after `revision`, in order. Ends when the watcher falls too far behind.
    pub events: mpsc::Receiver<Arc<Event>>,
    /// The store's durable revision, for bookmarks.
    pub progress: tokio::sync::watch::Receiver<Revision>,
}

impl Handler<Watch> for Store {
    type Result = Result<WatchStart, StoreError>;

    fn handle(&mut self, msg: Watch, _: &mut Context<Self>) -> Self::Result {
        let _span = tracing::debug_span!("handle", actor = "Store", message = "Watch", prefix = %msg.prefix).entered();
        let (snapshot, after) = match msg.after {
            Some(after) => {
                self.check_window(after)?;
                (Snapshot::empty(), after)
            }
            None => (self.read_state().snapshot(&msg.prefix), self.revision),
        };
        let replay: Vec<_> = self
            .history
            .iter()
            .filter(|e| e.revision() > after && e.kv.key.starts_with(&msg.prefix))
            .cloned()
            .collect();
        let (tx, rx) = mpsc::channel(replay.len() + self.config.watch_buffer);
        for e in replay {
            let _ = tx.try_send(e);
        }
        self.watchers.add(msg.prefix, msg.trigger, tx);
        Ok(WatchStart {
            snapshot,
            revision: after.max(if msg.after.is_none() {
                self.revision
            } else {
                after
            }),
            events: rx,
            progress: self.progress.subscribe(),
        })
    }
}

/// The Store's counters.
#[derive(Message)]
#[rtype(result = "StoreStats")]
pub struct Stats;

impl Handler<Stats> for Store {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        let _span = tracing::debug_span!("handle", actor = "Store", message = "Stats").entered();
        MessageResult(StoreStats {
            revision: self.revision,
            watchers: self.watchers.len(),
            ..self.stats
        })
    }
}

/// The current durable revision.
#[derive(Message)]
#[rtype(result = "Revision")]
pub struct CurrentRevision;

impl Handler<CurrentRevision> for Store {
    type Result = Revision;

    fn handle(&mut self, _: CurrentRevision, _: &mut Context<Self>) -> Revision {
        let _span =
            tracing::debug_span!("handle", actor = "Store", message = "CurrentRevision").entered();
        self.revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends a write and waits for it to be durable.
    async fn write<M>(store: &Addr<Store>, msg: M) -> Result<KeyValue, StoreError>
    where
        M: Message<Result = Ack> + Send + 'static,
        Store: Handler<M>,
    {
        store.send(msg).await.unwrap().durable().await
    }
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Fails every persist while `fail` is set.
    struct Flaky {
        fail: Arc<AtomicBool>,
    }

    impl Backend for Flaky {
        fn load(&mut self) -> Result<backend::Loaded, BackendError> {
            Ok(Default::default())
        }
        fn persist(&mut self, _: &[Change], _: Revision) -> Result<(), BackendError> {
            if self.fail.load(Ordering::SeqCst) {
                Err(BackendError("disk on fire".into()))
            } else {
                Ok(())
            }
        }
    }

    fn value(v: &'static str) -> Encoder {
        Box::new(move |_| Ok(v.as_bytes().to_vec()))
    }

    #[actix_rt::test]
    async fn failed_batches_fail_their_writes_and_hide_their_revisions() {
        let fail = Arc::new(AtomicBool::new(false));
        let store = Store::open(
            Box::new(Flaky { fail: fail.clone() }),
            StoreConfig::default(),
        )
        .unwrap();
        let reader = store.reader();
        let store = store.start();
        let a = write(
            &store,
            Create {
                key: "/a".into(),
                value: value("1"),
                trace: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(a.mod_revision, 1);
        fail.store(true, Ordering::SeqCst);
        let mut pending = Vec::new();
        for i in 0..10 {
            pending.push(store.send(Create {
                key: format!("/f{i}"),
                value: value("x"),
                trace: None,
            }));
        }
        for p in pending {
            let result = p.await.unwrap().durable().await;
            assert!(matches!(result, Err(StoreError::Backend(_))));
        }
        fail.store(false, Ordering::SeqCst);
        let b = write(
            &store,
            Create {
                key: "/b".into(),
                value: value("2"),
                trace: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            b.mod_revision, 2,
            "failed writes never consumed a visible revision"
        );
        assert!(
            reader.get("/f0").is_none(),
            "nothing of a failed batch is visible"
        );
    }

    /// Persists only while the gate is open (then fails if told to): lets a test hold a
    /// write pending.
    struct Gated {
        gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
        fail: Arc<AtomicBool>,
    }

    impl Backend for Gated {
        fn load(&mut self) -> Result<backend::Loaded, BackendError> {
            Ok(Default::default())
        }
        fn persist(&mut self, _: &[Change], _: Revision) -> Result<(), BackendError> {
            let (open, cv) = &*self.gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            if self.fail.load(Ordering::SeqCst) {
                Err(BackendError("disk on fire".into()))
            } else {
                Ok(())
            }
        }
    }

    #[actix_rt::test]
    async fn a_refusal_resting_on_a_pending_write_waits_for_it() {
        let gate = Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new()));
        let fail = Arc::new(AtomicBool::new(false));
        let set = |open: bool| {
            *gate.0.lock().unwrap() = open;
            gate.1.notify_all();
        };
        let store = Store::open(
            Box::new(Gated {
                gate: gate.clone(),
                fail: fail.clone(),
            }),
            StoreConfig::default(),
        )
        .unwrap()
        .start();
        let create = |key: &str| Create {
            key: key.into(),
            value: value("v1"),
            trace: None,
        };
        let swap = |key: &str| Update {
            key: key.into(),
            expect: 1,
            value: value("v2"),
            trace: None,
        };
        write(&store, create("/k")).await.unwrap();
        // Two swaps from revision 1 while the disk holds the first: the second's conflict
        // is known at once, but must not be told before the first is durable.
        set(false);
        let first = store.send(swap("/k")).await.unwrap();
        let second = store.send(swap("/k")).await.unwrap();
        let mut second = Box::pin(second.durable());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            futures::poll!(second.as_mut()).is_pending(),
            "refused before the write it conflicts with was durable"
        );
        set(true);
        assert_eq!(first.durable().await.unwrap().mod_revision, 2);
        assert_eq!(second.await, Err(StoreError::Conflict { current: 2 }));

        // If the write it rested on fails, the refusal would be wrong: it fails instead.
        write(&store, create("/j")).await.unwrap();
        set(false);
        fail.store(true, Ordering::SeqCst);
        let first = store
            .send(Update {
                key: "/j".into(),
                expect: 3,
                value: value("v2"),
                trace: None,
            })
            .await
            .unwrap();
        let second = store
            .send(Update {
                key: "/j".into(),
                expect: 3,
                value: value("v3"),
                trace: None,
            })
            .await
            .unwrap();
        set(true);
        assert!(matches!(first.durable().await, Err(StoreError::Backend(_))));
        assert!(
            matches!(second.durable().await, Err(StoreError::Backend(_))),
            "not a conflict with a write that never happened"
        );
    }

    #[actix_rt::test]
    async fn compare_and_swap_and_snapshot_ranges() {
        let store = Store::open(Box::new(MemoryBackend), StoreConfig::default())
            .unwrap()
            .start();
        let a = write(
            &store,
            Create {
                key: "/p/a".into(),
                value: value("a1"),
                trace: None,
            },
        )
        .await
        .unwrap();
        let stale = write(
            &store,
            Update {
                key: "/p/a".into(),
                expect: a.mod_revision + 5,
                value: value("a2"),
                trace: None,
            },
        )
        .await;
        assert_eq!(stale, Err(StoreError::Conflict { current: 1 }));
        write(
            &store,
            Update {
                key: "/p/a".into(),
                expect: 1,
                value: value("a2"),
                trace: None,
            },
        )
        .await
        .unwrap();
        write(
            &store,
            Create {
                key: "/p/b".into(),
                value: value("b1"),
                trace: None,
            },
        )
        .await
        .unwrap();
        let range = |at| Range {
            prefix: "/p/".into(),
            start_after: None,
            limit: 0,
            max_bytes: 0,
            at,
        };
        let now = store.send(range(None)).await.unwrap().unwrap();
        assert_eq!(now.kvs.len(), 2);
        let then = store.send(range(Some(1))).await.unwrap().unwrap();
        assert_eq!(then.revision, 1);
        assert_eq!(then.kvs.len(), 1);
        assert_eq!(
            &then.kvs[0].value[..],
            b"a1",
            "the value as it was at revision 1"
        );
    }
}
