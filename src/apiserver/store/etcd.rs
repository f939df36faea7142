//! The Store's link to an etcd cluster (`--store etcd`): kube-apiserver's storage layer and
//! the feed of its watch cache. In this mode etcd decides every revision: a create is a Txn
//! on `create_revision == 0`, an update or delete a Txn on `mod_revision`, and the Store's
//! memory — state, history, watchers — is a cache fed by one etcd watch over `/registry/`
//! (with `prev_kv`). Keys are laid out as kube-apiserver lays them out, so
//! `etcdctl get --prefix /registry/pods` shows what it shows there.
//!
//! Objects are stored with resourceVersion "0"; the cache stamps each with its
//! `mod_revision` once, as it arrives (reads then cost nothing more). Encrypted resources are
//! sealed before they leave and opened as they arrive.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};

use super::backend::{BackendError, Loaded};
use super::encryption::Encryption;
use super::{KeyValue, Revision, StoreError};

/// How long one etcd call may take before the write is refused as unavailable (503), well
/// inside the API server's own request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the cache watches: every Kubernetes object.
pub const PREFIX: &str = "/registry/";

/// How to reach etcd (kube-apiserver's `--etcd-servers`, `--etcd-cafile`,
/// `--etcd-certfile`, `--etcd-keyfile`).
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// Client URLs (`http://127.0.0.1:2379`, `https://…` with TLS).
    pub endpoints: Vec<String>,
    /// The CA etcd's serving certificate is checked against.
    pub ca_file: Option<PathBuf>,
    /// The client certificate and key etcd authenticates this API server by.
    pub cert_file: Option<PathBuf>,
    /// Its key.
    pub key_file: Option<PathBuf>,
    /// Old revisions are compacted this often (kube-apiserver: 5 minutes); zero: never.
    pub compaction_interval: Duration,
}

/// A connection to etcd: cheap to clone. Its calls, its watch and the decoding of what the
/// watch brings run on a side thread of their own (`rt::side_thread`), never on the
/// ApiServer's.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    encryption: Option<Arc<Encryption>>,
    runtime: tokio::runtime::Handle,
    /// Whether the cache's watch is live (`/readyz`).
    healthy: Arc<AtomicBool>,
    /// Whether this etcd's progress notifications can be trusted: before 3.4.31 and 3.5.13
    /// one could arrive ahead of events not yet sent to a watcher still catching up (etcd
    /// issue 15220; kube-apiserver makes the same check). Without them the cache advances on
    /// events alone, which is right as long as only Skiff writes under `/registry/`.
    progress_ok: bool,
    /// Consistent reads asking for etcd's revision, answered together (see
    /// [`Etcd::read_revision`]).
    revisions: tokio::sync::mpsc::UnboundedSender<RevisionReply>,
}

/// Where a consistent read's revision goes.
type RevisionReply = tokio::sync::oneshot::Sender<Result<Revision, StoreError>>;

/// How a write ended in etcd, and the revision the answer is good at: the cache must have
/// reached it before the caller hears (a refusal from a newer state than the cache shows,
/// answered at once, would be a read from the future).
pub struct Landed {
    /// A write: its revision. A refusal: the revision of the state it rests on (the key's
    /// current mod_revision; etcd's revision when it answered for a key that is gone).
    pub revision: Revision,
    /// None: written (at `revision`); else why not.
    pub refused: Option<StoreError>,
}

/// One change as the cache takes it: the key's new value (for a delete, the last value) with
/// the change's revision already stamped.
pub struct Change {
    /// Deleted (else put).
    pub deleted: bool,
    /// Key, value, revisions.
    pub kv: KeyValue,
}

/// What the watch feeds the cache.
pub enum Fed {
    /// Changes in order, and the revision everything up to which has been delivered.
    Changes(Vec<Change>, Revision),
    /// The watch could not resume (its revision was compacted away): everything, afresh.
    Reloaded(Loaded),
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("etcd: {e}"))
}

impl Etcd {
    /// Connects to `options.endpoints` (with TLS when a CA or client certificate is given).
    pub async fn connect(
        options: &EtcdOptions,
        encryption: Option<Encryption>,
    ) -> Result<Etcd, BackendError> {
        let bad = |what: String| BackendError(format!("etcd: {what}"));
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| bad(format!("reading {}: {e}", p.display())))
        };
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if options.ca_file.is_some() || options.cert_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &options.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&options.cert_file, &options.key_file) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                (None, None) => {}
                _ => {
                    return Err(bad(
                        "a client certificate needs its key, and a key its certificate".into(),
                    ))
                }
            }
            connect = connect.with_tls(tls);
        }
        if options.endpoints.is_empty() {
            return Err(bad("no endpoints (--etcd-servers)".into()));
        }
        let runtime = crate::rt::side_thread("etcd").map_err(|e| bad(e.to_string()))?;
        let endpoints = options.endpoints.clone();
        let client = runtime
            .spawn(async move { Client::connect(&endpoints, Some(connect)).await })
            .await
            .map_err(|e| bad(e.to_string()))?
            .map_err(|e| bad(e.to_string()))?;
        let mut maintenance = client.maintenance_client();
        let version = runtime
            .spawn(async move { maintenance.status().await.map(|s| s.version().to_string()) })
            .await
            .map_err(|e| bad(e.to_string()))?
            .map_err(|e| bad(format!("reading its version: {e}")))?;
        let progress_ok = progress_fixed(&version);
        if !progress_ok {
            tracing::warn!(%version, "etcd before 3.4.31/3.5.13: the cache ignores its progress notifications (etcd issue 15220) and follows events alone; keep /registry/ to Skiff");
        }
        let (revisions, asked) = tokio::sync::mpsc::unbounded_channel();
        let etcd = Etcd {
            client,
            encryption: encryption.map(Arc::new),
            runtime,
            healthy: Arc::new(AtomicBool::new(true)),
            progress_ok,
            revisions,
        };
        etcd.spawn(etcd.clone().answer_revisions(asked));
        Ok(etcd)
    }

    /// The flag that says whether the cache's watch is live.
    pub fn health(&self) -> Arc<AtomicBool> {
        self.healthy.clone()
    }

    /// Runs `work` on the etcd thread.
    pub fn spawn<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(work);
    }

    /// The value as the cache keeps it: opened, and carrying `revision` as its
    /// resourceVersion.
    fn cached(&self, key: &str, stored: &[u8], revision: Revision) -> Result<Bytes, String> {
        let plain = match &self.encryption {
            Some(e) => e.open(key, stored).map_err(|e| e.to_string())?,
            None => stored.to_vec(),
        };
        stamp(&plain, revision)
    }

    /// The value as etcd keeps it (sealed where the configuration says).
    pub fn sealed(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        match &self.encryption {
            Some(e) => e
                .seal(key, value)
                .map_err(|e| StoreError::Encode(e.to_string())),
            None => Ok(value.to_vec()),
        }
    }

    /// Every key under [`PREFIX`] at one revision, in pages.
    pub async fn load(&self) -> Result<Loaded, BackendError> {
        let mut kv = self.client.kv_client();
        let end = prefix_end(PREFIX);
        let mut from = PREFIX.as_bytes().to_vec();
        let mut revision = 0;
        let mut kvs = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(500);
            if revision > 0 {
                options = options.with_revision(revision as i64);
            }
            let resp = kv
                .get(from.clone(), Some(options))
                .await
                .map_err(|e| BackendError(format!("etcd: listing {PREFIX}: {e}")))?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision()) as Revision;
            }
            for item in resp.kvs() {
                let key = String::from_utf8_lossy(item.key()).into_owned();
                let rev = item.mod_revision() as Revision;
                let value = self
                    .cached(&key, item.value(), rev)
                    .map_err(|e| BackendError(format!("etcd: {key}: {e}")))?;
                kvs.push(KeyValue {
                    key,
                    value,
                    create_revision: item.create_revision() as Revision,
                    mod_revision: rev,
                });
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(Loaded { revision, kvs })
    }

    /// Creates `key` unless it exists.
    pub async fn create(&self, key: String, value: Vec<u8>) -> Result<Landed, StoreError> {
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value, None)])
            .or_else([TxnOp::get(key, None)]);
        self.run(txn, |_| StoreError::AlreadyExists).await
    }

    /// Replaces `key` if it is still at `expect`.
    pub async fn update(
        &self,
        key: String,
        expect: Revision,
        value: Vec<u8>,
    ) -> Result<Landed, StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                expect as i64,
            )])
            .and_then([TxnOp::put(key.clone(), value, None)])
            .or_else([TxnOp::get(key, None)]);
        self.run(txn, cas_refusal).await
    }

    /// Deletes `key` if it is still at `expect`.
    pub async fn delete(&self, key: String, expect: Revision) -> Result<Landed, StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                expect as i64,
            )])
            .and_then([TxnOp::delete(key.clone(), None)])
            .or_else([TxnOp::get(key, None)]);
        self.run(txn, cas_refusal).await
    }

    /// Runs a one-key Txn: written at the answer's revision, or refused as `refusal` says
    /// from what the failure branch read (the key's current mod_revision, 0 when absent).
    async fn run(
        &self,
        txn: Txn,
        refusal: impl Fn(Option<Revision>) -> StoreError,
    ) -> Result<Landed, StoreError> {
        let resp = self
            .unsent_retried(|mut kv| {
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await
            .map_err(unavailable)?;
        let revision = resp.header().map_or(0, |h| h.revision()) as Revision;
        if resp.succeeded() {
            return Ok(Landed {
                revision,
                refused: None,
            });
        }
        let current = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Get(g) => {
                    Some(g.kvs().first().map(|kv| kv.mod_revision() as Revision))
                }
                _ => None,
            })
            .flatten();
        Ok(Landed {
            // The key's version the refusal names is what the cache must show first.
            revision: current.unwrap_or(revision),
            refused: Some(refusal(current)),
        })
    }

    /// etcd's current revision for a consistent read: the reads waiting together share one
    /// request to etcd, started after every one of them asked (so each sees every write
    /// acknowledged before it asked).
    pub async fn read_revision(&self) -> Result<Revision, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.revisions
            .send(tx)
            .map_err(|_| unavailable("the revision reader stopped"))?;
        rx.await
            .unwrap_or_else(|_| Err(unavailable("the revision reader stopped")))
    }

    /// Answers the reads asking for etcd's revision: all those waiting, with one request.
    async fn answer_revisions(
        self,
        mut asked: tokio::sync::mpsc::UnboundedReceiver<RevisionReply>,
    ) {
        while let Some(first) = asked.recv().await {
            let mut waiting = vec![first];
            while let Ok(more) = asked.try_recv() {
                waiting.push(more);
            }
            let answer = self.current_revision().await;
            for w in waiting {
                let _ = w.send(answer.clone());
            }
        }
    }

    /// etcd's current revision (a cheap, linearizable read). A read is safe to repeat: one
    /// that met a member just gone is tried again (the client moves to another), three
    /// times in all.
    pub async fn current_revision(&self) -> Result<Revision, StoreError> {
        let mut last = None;
        for attempt in 0..3u64 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            let options = GetOptions::new().with_count_only().with_limit(1);
            let got = self
                .unsent_retried(|mut kv| {
                    let options = options.clone();
                    async move { kv.get(PREFIX, Some(options)).await }
                })
                .await;
            match got {
                Ok(resp) => return Ok(resp.header().map_or(0, |h| h.revision()) as Revision),
                Err(e) => last = Some(e),
            }
        }
        Err(unavailable(
            last.map_or_else(String::new, |e| e.to_string()),
        ))
    }

    /// Runs `call` again, on whichever member the client picks next, while it fails before
    /// the request left (see [`never_sent`]): the client spreads requests over every
    /// endpoint, and one whose member is gone (its container killed, its name no longer
    /// resolving) fails each request it is given once before the balancer passes it over.
    /// A request that may have reached etcd is never repeated here: a Txn may have landed.
    async fn unsent_retried<T, F, Fut>(&self, call: F) -> Result<T, etcd_client::Error>
    where
        F: Fn(etcd_client::KvClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        const ATTEMPTS: u32 = 10;
        let mut attempt = 0;
        loop {
            match call(self.client.kv_client()).await {
                Err(e) if attempt + 1 < ATTEMPTS && never_sent(&e) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis((10 << attempt.min(4)) as u64)).await;
                }
                other => return other,
            }
        }
    }

    /// Feeds the cache from `after` on until `feed` is gone: one watch over [`PREFIX`] with
    /// `prev_kv`, resumed where it stopped when etcd goes away, reloaded whole when its
    /// revision was compacted. Where etcd's progress notifications can be trusted they are
    /// asked for every second, so the cache's revision follows etcd's even when nothing under
    /// the prefix changes; a watch that was lost backs off up to 5 s between attempts.
    pub async fn feed(self, mut after: Revision, feed: impl Fn(Fed) -> bool) {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.watch_from(after, &feed).await {
                Ok(Resume::Stop) => return,
                Ok(Resume::Reload) => match self.load().await {
                    Ok(loaded) => {
                        after = loaded.revision;
                        if !feed(Fed::Reloaded(loaded)) {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reloading from etcd"),
                },
                Err((rev, e)) => {
                    // A watch that was live starts the back-off afresh.
                    if self.healthy.swap(false, Ordering::Relaxed) {
                        pause = Duration::from_millis(100);
                    }
                    after = rev;
                    tracing::warn!(error = %e, resume_after = after, "etcd watch lost; resuming");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn watch_from(
        &self,
        after: Revision,
        feed: &impl Fn(Fed) -> bool,
    ) -> Result<Resume, (Revision, String)> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_progress_notify()
            .with_start_revision(after as i64 + 1);
        let stream = self
            .client
            .watch_client()
            .watch(PREFIX, Some(options))
            .await
            .map_err(|e| (after, e.to_string()))?;
        let (mut requests, mut responses) = stream.split();
        let mut seen = after;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let resp = tokio::select! {
                r = responses.message() => r,
                _ = tick.tick(), if self.progress_ok => {
                    requests.request_progress().await.map_err(|e| (seen, e.to_string()))?;
                    continue;
                }
            };
            let resp = match resp {
                Ok(Some(r)) => {
                    self.healthy.store(true, Ordering::Relaxed);
                    r
                }
                Ok(None) => return Err((seen, "the watch stream ended".into())),
                Err(e) => return Err((seen, e.to_string())),
            };
            if resp.compact_revision() > 0 {
                return Ok(Resume::Reload);
            }
            if resp.canceled() {
                return Err((seen, format!("watch canceled: {}", resp.cancel_reason())));
            }
            let mut changes = Vec::with_capacity(resp.events().len());
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let rev = kv.mod_revision() as Revision;
                let deleted = event.event_type() == EventType::Delete;
                // A delete's watchers see the last value, at the delete's revision.
                let (stored, create) = match (deleted, event.prev_kv()) {
                    (false, _) => (kv.value(), kv.create_revision()),
                    (true, Some(prev)) => (prev.value(), prev.create_revision()),
                    (true, None) => continue,
                };
                match self.cached(&key, stored, rev) {
                    Ok(value) => changes.push(Change {
                        deleted,
                        kv: KeyValue {
                            key,
                            value,
                            create_revision: create as Revision,
                            mod_revision: rev,
                        },
                    }),
                    Err(e) => {
                        tracing::error!(%key, revision = rev, error = %e, "an etcd value the cache cannot read; skipped")
                    }
                }
                seen = seen.max(rev);
            }
            // Every event up to the header's revision has been sent on this stream (where
            // progress can be trusted).
            let header = match self.progress_ok {
                true => resp.header().map_or(0, |h| h.revision()) as Revision,
                false => 0,
            };
            let through = seen.max(header);
            if changes.is_empty() && through == seen {
                continue;
            }
            seen = through;
            if !feed(Fed::Changes(changes, through)) {
                return Ok(Resume::Stop);
            }
        }
    }

    /// Compacts every `interval`, up to the revision seen one interval before (kube-apiserver
    /// does the same), so the history a watch can resume from always spans an interval.
    pub async fn compact_every(self, interval: Duration) {
        if interval.is_zero() {
            return;
        }
        let mut previous = None;
        loop {
            tokio::time::sleep(interval).await;
            let current = match self.current_revision().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "etcd compaction: reading the revision");
                    continue;
                }
            };
            if let Some(rev) = previous {
                match self.client.kv_client().compact(rev as i64, None).await {
                    Ok(_) => tracing::debug!(revision = rev, "compacted etcd"),
                    // Another API server compacted as far already.
                    Err(e) if e.to_string().contains("compacted") => {}
                    Err(e) => tracing::warn!(error = %e, revision = rev, "etcd compaction"),
                }
            }
            previous = Some(current);
        }
    }
}

/// Whether an etcd of `version` sends progress notifications only once every event up to
/// them was sent (3.4.31+, 3.5.13+, 3.6+).
fn progress_fixed(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    match (major, minor) {
        (3, 4) => patch >= 31,
        (3, 5) => patch >= 13,
        (3, m) => m >= 6,
        (m, _) => m > 3,
    }
}

/// Where a watch goes on.
enum Resume {
    /// The cache is gone.
    Stop,
    /// From a fresh load.
    Reload,
}

/// An update's or delete's refusal from the key's current state.
/// Whether `e` failed before its request left this process: the channel to the member the
/// client picked could not be opened (connection refused, a name that no longer resolves,
/// a connect timeout). tonic reports these as `Unavailable` with a `ConnectError` as the
/// source; anything else (a reset mid-request, a timeout) may have reached etcd.
fn never_sent(e: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return false;
    };
    // gRPC's UNAVAILABLE (tonic is etcd-client's, not a dependency of ours).
    if status.code() as i32 != 14 {
        return false;
    }
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        if format!("{s:?}").starts_with("ConnectError") {
            return true;
        }
        source = s.source();
    }
    false
}

fn cas_refusal(current: Option<Revision>) -> StoreError {
    match current {
        None => StoreError::NotFound,
        Some(current) => StoreError::Conflict { current },
    }
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `value` (a MessagePack object) with `metadata.resourceVersion` set to `revision`. What
/// the Store wrote holds `resourceVersion: "0"`: where that pair occurs exactly once it is
/// spliced in place (a copy, no decode); otherwise the object is decoded and encoded again.
fn stamp(value: &[u8], revision: Revision) -> Result<Bytes, String> {
    // fixstr(15) "resourceVersion", then fixstr(1) "0".
    const PAIR: &[u8] = b"\xafresourceVersion\xa10";
    let mut at = value
        .windows(PAIR.len())
        .enumerate()
        .filter(|(_, w)| *w == PAIR);
    if let (Some((i, _)), None) = (at.next(), at.next()) {
        let digits = revision.to_string();
        let mut out = Vec::with_capacity(value.len() + digits.len());
        out.extend_from_slice(&value[..i + PAIR.len() - 2]);
        out.push(0xa0 | digits.len() as u8); // fixstr: at most 20 digits
        out.extend_from_slice(digits.as_bytes());
        out.extend_from_slice(&value[i + PAIR.len()..]);
        return Ok(Bytes::from(out));
    }
    restamp(value, revision)
}

/// [`stamp`] the long way: decode, set, encode.
fn restamp(value: &[u8], revision: Revision) -> Result<Bytes, String> {
    let mut obj = crate::api::codec::msgpack_to_value(value).map_err(|e| e.to_string())?;
    if let Some(md) = obj.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        md.insert(
            "resourceVersion".into(),
            serde_json::Value::String(revision.to_string()),
        );
    }
    crate::api::codec::value_to_msgpack(&obj)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_trusted_from_the_fixed_releases() {
        assert!(!progress_fixed("3.4.23"));
        assert!(progress_fixed("3.4.31"));
        assert!(!progress_fixed("3.5.12"));
        assert!(progress_fixed("3.5.13"));
        assert!(progress_fixed("3.6.0"));
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/registry/"), b"/registry0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn stamping_sets_the_resource_version() {
        let v = serde_json::json!({"metadata": {"name": "x", "resourceVersion": "0"},
            "data": {"k": "v"}});
        let bytes = crate::api::codec::value_to_msgpack(&v).unwrap();
        let out = crate::api::codec::msgpack_to_value(&stamp(&bytes, 42).unwrap()).unwrap();
        assert_eq!(out["metadata"]["resourceVersion"], "42");
        assert_eq!(out["data"]["k"], "v");
        // The splice and the long way agree, to the byte.
        assert_eq!(
            stamp(&bytes, 123456789).unwrap(),
            restamp(&bytes, 123456789).unwrap()
        );
        // The same pair elsewhere too (a ConfigMap key): decoded, never guessed.
        let v = serde_json::json!({"metadata": {"name": "x", "resourceVersion": "0"},
            "data": {"resourceVersion": "0"}});
        let bytes = crate::api::codec::value_to_msgpack(&v).unwrap();
        let out = crate::api::codec::msgpack_to_value(&stamp(&bytes, 7).unwrap()).unwrap();
        assert_eq!(out["metadata"]["resourceVersion"], "7");
        assert_eq!(out["data"]["resourceVersion"], "0");
    }
}
