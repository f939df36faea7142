//! Turning a Store watch into Kubernetes watch events: the initial ADDED snapshot, selector
//! filtering (a change that leaves the selector becomes DELETED, one that enters it ADDED),
//! bookmarks carrying a revision that is safe to resume from, and the watch's timeout.
//! Transports (NATS, later HTTP) only frame what `next` yields.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::registry::{decode, Filter};
use super::store::{Event, EventKind, Revision, Snapshot};
use crate::api::resource::ResourceInfo;
use crate::api::wire::event_type;
use crate::api::Status;

/// One item of a watch stream.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// ADDED, MODIFIED or DELETED with the object as stored (MessagePack).
    Object {
        /// One of the `event_type` constants.
        event_type: &'static str,
        /// The encoded object.
        object: Bytes,
        /// Its revision.
        revision: Revision,
        /// The `traceparent` of the write that produced it (none for snapshot objects).
        trace: Option<std::sync::Arc<str>>,
    },
    /// Every event up to this revision has been delivered.
    Bookmark(Revision),
    /// A watch list's initial objects have all been delivered, as of this revision: a
    /// BOOKMARK annotated `k8s.io/initial-events-end: "true"`.
    InitialEventsEnd(Revision),
    /// The watch failed.
    Error(Box<Status>),
}

impl WatchItem {
    /// The object of the BOOKMARK event this item is (a bookmark, or the end of a watch
    /// list's initial objects, annotated `k8s.io/initial-events-end`), named after `info`.
    pub fn bookmark(&self, info: &ResourceInfo) -> Option<serde_json::Value> {
        let (rev, end) = match self {
            WatchItem::Bookmark(rev) => (rev, false),
            WatchItem::InitialEventsEnd(rev) => (rev, true),
            _ => return None,
        };
        let mut md = serde_json::json!({"resourceVersion": rev.to_string()});
        if end {
            md["annotations"] = serde_json::json!({"k8s.io/initial-events-end": "true"});
        }
        Some(
            serde_json::json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": md}),
        )
    }
}

/// A running watch. See the module docs.
pub struct WatchStream {
    /// Objects to announce as ADDED first (watch without a revision).
    snapshot: Snapshot,
    /// Events from the Store.
    events: mpsc::Receiver<Arc<Event>>,
    /// The Store's durable revision.
    progress: watch::Receiver<Revision>,
    /// Selectors.
    filter: Filter,
    /// Last revision delivered or bookmarked.
    last: Revision,
    /// What is being watched (for bookmarks' kind and apiVersion).
    pub info: &'static ResourceInfo,
    /// Bookmark cadence.
    every: Duration,
    /// When the next bookmark is due.
    next_bookmark: Instant,
    /// When the watch ends.
    deadline: Instant,
    /// The caller asked for BOOKMARK events (HTTP); NATS watches always get them.
    pub allow_bookmarks: bool,
    /// A watch list: the revision its initial objects are at, announced once they are sent.
    initial_events_end: Option<Revision>,
    /// Turns each object into the form the caller asked for (events.k8s.io Events).
    pub convert: Option<fn(Bytes) -> Bytes>,
    /// The resource the caller asked for, when it is served from another's storage (its
    /// kind and apiVersion are what bookmarks carry).
    pub served_as: Option<&'static ResourceInfo>,
    /// Counts this watch in `apiserver_watches_open` while it lives.
    _open: OpenWatch,
    /// Counts this watch against its caller's quota while it lives.
    pub quota: Option<QuotaGuard>,
}

/// Watches one identity may hold open by default: far more than a component's informers or a
/// person's `kubectl get -w`, far fewer than it takes to make every commit fan out to
/// thousands of streams nobody reads.
pub const DEFAULT_WATCHES_PER_USER: usize = 1_000;

/// Open watches per identity, across both transports.
pub struct WatchQuota {
    per_user: usize,
    open: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl WatchQuota {
    pub fn new(per_user: usize) -> Self {
        WatchQuota {
            per_user,
            open: Default::default(),
        }
    }

    /// Counts one more watch of `user`, or refuses it with 429 at the quota.
    pub fn acquire(self: &Arc<Self>, user: &str) -> Result<QuotaGuard, Status> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(user.to_string()).or_insert(0);
        if *n >= self.per_user {
            let mut s = Status::too_many_requests(format!(
                "too many watches open for user {user:?}: at most {} at once",
                self.per_user
            ));
            s.details = Some(crate::api::status::StatusDetails {
                retry_after_seconds: Some(1),
                ..Default::default()
            });
            return Err(s);
        }
        *n += 1;
        Ok(QuotaGuard {
            quota: self.clone(),
            user: user.to_string(),
        })
    }

    /// Watches `user` holds now.
    #[cfg(test)]
    fn open(&self, user: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(user).copied().unwrap_or(0)
    }
}

/// One watch counted against its caller's quota, until dropped.
pub struct QuotaGuard {
    quota: Arc<WatchQuota>,
    user: String,
}

impl Drop for QuotaGuard {
    fn drop(&mut self) {
        let mut open = self.quota.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// One open watch, for the `apiserver_watches_open` gauge.
struct OpenWatch(crate::metrics::Gauge);

impl OpenWatch {
    fn new(resource: &str) -> Self {
        let g = crate::metrics::gauge(
            "apiserver_watches_open",
            "Watches being served, by resource.",
            &["resource"],
        )
        .with(&[resource]);
        g.inc();
        OpenWatch(g)
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl WatchStream {
    pub(super) fn new(
        start: super::store::WatchStart,
        filter: Filter,
        info: &'static ResourceInfo,
        every: Duration,
        timeout: Duration,
    ) -> Self {
        let now = Instant::now();
        WatchStream {
            snapshot: start.snapshot,
            events: start.events,
            progress: start.progress,
            filter,
            last: start.revision,
            info,
            every,
            next_bookmark: now + every,
            deadline: now + timeout,
            allow_bookmarks: false,
            initial_events_end: None,
            convert: None,
            served_as: None,
            _open: OpenWatch::new(info.plural),
            quota: None,
        }
    }

    /// Makes this a watch list (`sendInitialEvents=true`): the end of the initial objects is
    /// announced with [`WatchItem::InitialEventsEnd`].
    pub fn announce_initial_events_end(&mut self) {
        self.initial_events_end = Some(self.last);
    }

    /// How often the stream bookmarks when idle.
    pub fn bookmark_interval(&self) -> Duration {
        self.every
    }

    /// The revision the stream has reached.
    pub fn revision(&self) -> Revision {
        self.last
    }

    /// The next item, or None when the watch ends (timeout, or the Store dropped a watcher
    /// that fell behind: the client resumes from its last revision).
    pub async fn next(&mut self) -> Option<WatchItem> {
        let item = self.next_stored().await;
        match (self.convert, item) {
            (
                Some(convert),
                Some(WatchItem::Object {
                    event_type,
                    object,
                    revision,
                    trace,
                }),
            ) => Some(WatchItem::Object {
                event_type,
                object: convert(object),
                revision,
                trace,
            }),
            (_, item) => item,
        }
    }

    /// The resource bookmarks speak for.
    pub fn shown_as(&self) -> &'static ResourceInfo {
        self.served_as.unwrap_or(self.info)
    }

    /// The next item as stored.
    async fn next_stored(&mut self) -> Option<WatchItem> {
        for kv in self.snapshot.by_ref() {
            match self.filter.matches_bytes(&kv.value) {
                Ok(true) => {
                    return Some(WatchItem::Object {
                        event_type: event_type::ADDED,
                        object: kv.value,
                        revision: kv.mod_revision,
                        trace: None,
                    })
                }
                Ok(false) => {}
                Err(s) => return Some(WatchItem::Error(Box::new(s))),
            }
        }
        if let Some(rev) = self.initial_events_end.take() {
            self.next_bookmark = Instant::now() + self.every;
            return Some(WatchItem::InitialEventsEnd(rev));
        }
        loop {
            tokio::select! {
                ev = self.events.recv() => {
                    let ev = ev?;
                    self.last = self.last.max(ev.revision());
                    match self.classify(&ev) {
                        Ok(Some(t)) => {
                            self.next_bookmark = Instant::now() + self.every;
                            return Some(WatchItem::Object {
                                event_type: t,
                                object: ev.kv.value.clone(),
                                revision: ev.revision(),
                                trace: ev.trace.clone(),
                            });
                        }
                        Ok(None) => {}
                        Err(s) => return Some(WatchItem::Error(Box::new(s))),
                    }
                }
                _ = tokio::time::sleep_until(self.next_bookmark) => {
                    // Read progress before looking at the channel: the Store queues events
                    // before it publishes progress, so an empty channel means every event up
                    // to `p` has been seen.
                    let p = *self.progress.borrow();
                    if self.events.is_empty() {
                        self.last = self.last.max(p);
                    }
                    self.next_bookmark = Instant::now() + self.every;
                    return Some(WatchItem::Bookmark(self.last));
                }
                _ = tokio::time::sleep_until(self.deadline) => return None,
            }
        }
    }

    /// The event type this watcher sees for a change, if any.
    fn classify(&self, ev: &Event) -> Result<Option<&'static str>, Status> {
        if self.filter.is_empty() {
            return Ok(Some(match (ev.kind, &ev.prev) {
                (EventKind::Delete, _) => event_type::DELETED,
                (EventKind::Put, None) => event_type::ADDED,
                (EventKind::Put, Some(_)) => event_type::MODIFIED,
            }));
        }
        let (new, prev) = ev.decoded.get_or_init(|| {
            let fields = self.info.field_labels();
            (
                (ev.kind == EventKind::Put)
                    .then(|| decode(&ev.kv.value).ok().map(|o| selectable(o, &fields)))
                    .flatten(),
                ev.prev
                    .as_ref()
                    .and_then(|p| decode(&p.value).ok().map(|o| selectable(o, &fields))),
            )
        });
        let was = prev.as_ref().is_some_and(|p| self.filter.matches(p));
        let is = new.as_ref().is_some_and(|n| self.filter.matches(n));
        Ok(match (was, is) {
            (false, true) => Some(event_type::ADDED),
            (true, true) => Some(event_type::MODIFIED),
            (true, false) => Some(event_type::DELETED),
            (false, false) => None,
        })
    }
}

/// What selectors can see of an object: its name, namespace and labels, and the fields its
/// resource accepts as field labels (`spec.nodeName`, `status.phase`, `involvedObject.name`,
/// `type`). The event keeps this, not the whole object, for the other filtered watchers to
/// match against: the history holds thousands of events, and a decoded pod is ~16 KB (this
/// keeps ~0.5 KB of it).
fn selectable(obj: Value, fields: &[&str]) -> Value {
    let Value::Object(mut top) = obj else {
        return obj;
    };
    let mut out = serde_json::Map::new();
    if let Some(Value::Object(md)) = top.remove("metadata") {
        let keep: serde_json::Map<String, Value> = md
            .into_iter()
            .filter(|(f, _)| matches!(f.as_str(), "name" | "namespace" | "labels"))
            .collect();
        out.insert("metadata".into(), Value::Object(keep));
    }
    let top = Value::Object(top);
    for path in fields.iter().filter(|p| !p.starts_with("metadata.")) {
        let pointer = format!("/{}", path.replace('.', "/"));
        let Some(v) = top
            .pointer(&pointer)
            .filter(|v| !v.is_object() && !v.is_array())
        else {
            continue;
        };
        let mut at = &mut out;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                at.insert(part.to_string(), v.clone());
                break;
            }
            let next = at
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Default::default()));
            match next {
                Value::Object(m) => at = m,
                _ => break,
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod selectable_tests {
    use super::selectable;
    use serde_json::json;

    #[test]
    fn keeps_what_selectors_read_and_drops_the_rest() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"},
                "annotations": {"big": "x"}, "managedFields": [{"manager": "m"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}], "restartPolicy": "Always"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready"}]},
            "type": "Opaque"});
        let fields = [
            "metadata.name",
            "spec.nodeName",
            "spec.restartPolicy",
            "status.phase",
            "status.podIP",
            "type",
        ];
        assert_eq!(
            selectable(pod.clone(), &fields),
            json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "restartPolicy": "Always"},
                "status": {"phase": "Running"}, "type": "Opaque"})
        );
        // What the selectors read of it is what they read of the whole object.
        let info = crate::api::resource::lookup("", "pods").unwrap();
        let kept = selectable(pod.clone(), &info.field_labels());
        for selector in [
            "spec.nodeName=n1",
            "status.phase!=Running",
            "metadata.name=p,spec.restartPolicy=Always",
            "status.podIP=",
        ] {
            let f = crate::api::selector::FieldSelector::parse(selector).unwrap();
            assert_eq!(f.matches(&kept), f.matches(&pod), "{selector}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_at_most_its_quota_of_watches() {
        let quota = Arc::new(WatchQuota::new(2));
        let a = quota.acquire("ann").unwrap();
        let _b = quota.acquire("ann").unwrap();
        let refused = quota.acquire("ann").err().unwrap();
        assert_eq!(refused.code, 429);
        assert!(
            quota.acquire("bob").is_ok(),
            "another user is not held back"
        );
        drop(a);
        assert_eq!(quota.open("ann"), 1);
        assert!(quota.acquire("ann").is_ok());
    }
}
