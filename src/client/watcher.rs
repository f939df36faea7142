//! A watch that resumes by itself. It is a small state machine:
//!
//! - **Start**: subscribe a fresh inbox, ask the API server to watch after the last revision
//!   seen (none at first: the current objects arrive as ADDED).
//! - **Stream**: events must arrive numbered 1, 2, 3… A jump (a lost message: core NATS is
//!   at-most-once), a silence longer than a few bookmark intervals, or a `CLOSED` event sends
//!   it back to Start from the last revision, so nothing is missed or repeated. Resumes in a
//!   row back off (jittered, doubling), and each silence resume doubles the silence tolerated
//!   (up to 4×) until events flow again. Dropping the old subscription is what ends the
//!   server's side: its next bookmark, sent with a reply subject, draws nats-server's
//!   "no responders". A 429 or 5xx when starting is retried after a back-off, never turned
//!   into an error (which would make an informer relist: the most expensive call).
//! - **Expired**: the server no longer has that revision (410). The watcher yields the error
//!   and ends; the caller relists (the informer does so by itself).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::Api;
use crate::api::codec;
use crate::api::status::reason;
use crate::api::wire::{event_type, ListOptions, Verb, WatchEvent, WatchStarted};
use crate::api::Status;

/// The NATS-only event that ends a stream (see the bridge).
const CLOSED: &str = "CLOSED";

/// How far the tolerated silence may grow, as a multiple of the configured one.
const MAX_SILENCE_FACTOR: u32 = 4;

/// The wait before the `n`th resume in a row: full jitter over 100 ms × 2^(n-1), at most 10 s
/// (the first resume after events flowed waits up to 100 ms), so that a thousand watchers
/// cut off together do not come back together.
fn resume_backoff(n: u32) -> Duration {
    use rand::Rng;
    let cap = Duration::from_millis(100)
        .saturating_mul(1 << n.saturating_sub(1).min(10))
        .min(Duration::from_secs(10));
    cap.mul_f64(rand::rng().random_range(0.0..1.0))
}

/// A resuming watch. See the module docs.
pub struct Watcher {
    /// Where to watch.
    api: Api,
    /// Selectors and the starting revision.
    options: ListOptions,
    /// Silence after which the watch resumes, as configured.
    silence: Duration,
    /// The silence currently tolerated: doubled (up to [`MAX_SILENCE_FACTOR`]×) after each
    /// silence resume, back to `silence` once events flow, so that a server too busy to send
    /// bookmarks on time is not answered with a storm of resumes.
    patience: Duration,
    /// Resumes in a row without an event in between (CLOSED excepted); each waits a jittered,
    /// doubling back-off first.
    unsettled: u32,
    /// The live subscription and the next expected sequence number.
    stream: Option<(async_nats::Subscriber, u64)>,
    /// The revision to resume after; None before anything past the initial snapshot.
    last: Option<String>,
    /// Revision the initial snapshot was taken at, while it is still streaming.
    snapshot_at: Option<u64>,
    /// Resumes so far (gaps, silences, closes), shared so that a test can wait for one while
    /// another task is blocked in `next`.
    resumes: Arc<AtomicU64>,
    /// Set once Expired was yielded.
    done: bool,
    /// Yield bookmarks to the caller too.
    pub yield_bookmarks: bool,
}

fn rv_of(obj: &serde_json::Value) -> Option<String> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(String::from)
}

impl Watcher {
    pub(super) fn new(api: Api, options: ListOptions, silence: Duration) -> Self {
        let last = options
            .resource_version
            .clone()
            .filter(|rv| !rv.is_empty() && rv != "0");
        Watcher {
            api,
            options,
            silence,
            patience: silence,
            unsettled: 0,
            stream: None,
            last,
            snapshot_at: None,
            resumes: Arc::default(),
            done: false,
            yield_bookmarks: false,
        }
    }

    /// Resumes so far (gaps, silences, closes).
    pub fn resumes(&self) -> u64 {
        self.resumes.load(Ordering::Relaxed)
    }

    /// A live view of the resume count, readable while the watcher is awaited elsewhere.
    pub fn resume_counter(&self) -> Arc<AtomicU64> {
        self.resumes.clone()
    }

    /// The revision the watch would resume from.
    pub fn resource_version(&self) -> Option<&str> {
        self.last.as_deref()
    }

    async fn start(&mut self) -> Result<(), Status> {
        let client = self.api.client();
        let inbox = client.new_inbox();
        let sub = client
            .nats()
            .subscribe(inbox.clone())
            .await
            .map_err(|e| Status::unavailable(format!("NATS subscribe: {e}")))?;
        let mut req = self.api.request(None);
        req.list = self.options.clone();
        req.list.resource_version = self.last.clone();
        if self.last.is_some() && self.options.send_initial_events.is_some() {
            // A watch list's initial objects come once: a resume continues from the last
            // revision seen, as client-go's reflector does.
            req.list.send_initial_events = None;
            req.list.resource_version_match = None;
        }
        req.inbox = Some(inbox);
        let bytes = client.call_raw(Verb::Watch, &req).await?;
        let started: WatchStarted =
            codec::decode(&bytes).map_err(|e| Status::internal(e.to_string()))?;
        if self.last.is_none() {
            self.snapshot_at = started.resource_version.parse().ok();
        }
        self.stream = Some((sub, 1));
        Ok(())
    }

    fn resume(&mut self, cause: &'static str) {
        self.stream = None;
        if cause == "silence" {
            self.patience = (self.patience * 2).min(self.silence * MAX_SILENCE_FACTOR);
        }
        if cause != "closed" {
            self.unsettled += 1;
        }
        self.resumes.fetch_add(1, Ordering::Relaxed);
        crate::metrics::counter(
            "skiff_watch_resumes_total",
            "Watches resumed, by resource and cause (gap, silence, closed, error, undecodable).",
            &["resource", "cause"],
        )
        .inc(&[self.api.resource(), cause]);
    }

    /// The next event; None only after an Expired error was yielded.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, Status>> {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.done {
                return None;
            }
            if self.stream.is_none() {
                if self.unsettled > 0 {
                    tokio::time::sleep(resume_backoff(self.unsettled)).await;
                }
                match self.start().await {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(s) if s.is(reason::EXPIRED) || s.code == 410 => {
                        self.done = true;
                        return Some(Err(s));
                    }
                    Err(s) if s.code == 429 || s.code >= 500 => {
                        tracing::debug!(error = %s, "watch start failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                    Err(s) => {
                        self.done = true;
                        return Some(Err(s));
                    }
                }
            }
            let Some((sub, expected)) = self.stream.as_mut() else {
                continue;
            };
            let msg = match tokio::time::timeout(self.patience, sub.next()).await {
                Ok(Some(msg)) => msg,
                _ => {
                    tracing::debug!("watch silent; resuming");
                    self.resume("silence");
                    continue;
                }
            };
            let ev: WatchEvent = match codec::decode(&msg.payload) {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable watch event; resuming");
                    self.resume("undecodable");
                    continue;
                }
            };
            if let Some(ctx) = ev
                .trace
                .as_deref()
                .and_then(crate::trace::TraceContext::parse)
            {
                crate::trace::remember(&ev.object, ctx);
                // The delivery is a message too: from the API server to this component.
                let tracer = self.api.client().tracer();
                let span = crate::trace::Span::start(format!("Watch/{}", ev.event_type), Some(ctx))
                    .message("apiserver", tracer.component(), &msg.subject)
                    .about(
                        "watch",
                        crate::trace::ObjectRef {
                            resource: self.api.resource().into(),
                            namespace: crate::api::meta::namespace(&ev.object).into(),
                            name: crate::api::meta::name(&ev.object).into(),
                        },
                    );
                tracer.finish(&span, &ev.event_type);
            }
            if ev.seq == *expected && ev.event_type != CLOSED {
                // Events flow again: the stream has settled.
                self.unsettled = 0;
                self.patience = self.silence;
            }
            if ev.seq != *expected {
                tracing::debug!(expected = *expected, got = ev.seq, "watch gap; resuming");
                self.resume("gap");
                continue;
            }
            *expected += 1;
            match ev.event_type.as_str() {
                CLOSED => {
                    if self.snapshot_at.is_none() {
                        if let Some(rv) = rv_of(&ev.object) {
                            self.last = Some(rv);
                        }
                    }
                    self.resume("closed");
                    continue;
                }
                event_type::BOOKMARK => {
                    self.snapshot_at = None;
                    if let Some(rv) = rv_of(&ev.object) {
                        self.last = Some(rv);
                    }
                    if self.yield_bookmarks {
                        return Some(Ok(ev));
                    }
                }
                event_type::ERROR => {
                    let status: Status = serde_json::from_value(ev.object)
                        .unwrap_or_else(|e| Status::internal(e.to_string()));
                    if status.code == 410 {
                        self.done = true;
                    } else {
                        self.resume("error");
                    }
                    return Some(Err(status));
                }
                _ => {
                    let rv = rv_of(&ev.object);
                    let rv_num = rv.as_deref().and_then(|r| r.parse::<u64>().ok());
                    match (self.snapshot_at, rv_num) {
                        // Still inside the initial snapshot: a resume must start it over.
                        (Some(at), Some(r)) if r <= at => {}
                        _ => {
                            self.snapshot_at = None;
                            self.last = rv;
                        }
                    }
                    return Some(Ok(ev));
                }
            }
        }
    }
}
