//! Message traces: one trace per change, across every component.
//!
//! A W3C `traceparent` travels on every hop: HTTP and NATS requests carry it, the API server
//! stamps the trace of each write onto the watch event it produces, and a component acting on
//! an object it saw continues that object's trace (`trace::of(&obj)`), so the scheduler's
//! binding, the kubelet's start and its status updates join the trace of the request that
//! created the pod. This module owns the trace context, the span records every component
//! emits, the per-process map from object versions to their traces, and the [`Tracer`] that
//! batches spans onto the bus (`skiff.trace.spans`), where the API server's collector keeps
//! them in a bounded buffer for `skiff trace` and exports them over OTLP when configured.
//!
//! Recording can be switched off (`SKIFF_TRACE=off`, or [`set_enabled`]); the context is
//! still propagated, and nothing else is done.

pub mod collector;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

/// Where components publish their finished spans (MessagePack `Vec<SpanRecord>`).
pub const SPANS_SUBJECT: &str = "skiff.trace.spans";

/// Every publisher's span subject: a tracer publishes on `skiff.trace.spans.<identity>`
/// ([`spans_subject`]), which NATS lets only that identity's user publish on, so a reader
/// knows who sent each batch.
pub const SPANS_WILDCARD: &str = "skiff.trace.spans.>";

/// The subject `identity` publishes its spans on.
pub fn spans_subject(identity: &str) -> String {
    format!("{SPANS_SUBJECT}.{}", crate::api::subject::escape(identity))
}

/// Names the real publisher of a batch read on `subject`: a span whose component is not the
/// publisher's (a kubelet claiming to be the API server) is shown as
/// `<publisher's component> (claimed <component>)`.
pub fn attribute(batch: &mut [SpanRecord], subject: &str) {
    let publisher = subject
        .strip_prefix(SPANS_SUBJECT)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(crate::api::subject::unescape)
        .map(|identity| component_of(&identity))
        .unwrap_or_else(|| "unknown".into());
    for s in batch {
        if s.component != publisher {
            s.component = format!("{publisher} (claimed {})", s.component);
        }
    }
}
/// Where `skiff trace <kind>/<name>` asks the collector for an object's traces.
pub const QUERY_SUBJECT: &str = "skiff.trace.query";

static ENABLED: AtomicBool = AtomicBool::new(true);
static FROM_ENV: std::sync::Once = std::sync::Once::new();

/// Whether spans are recorded (the context always travels).
pub fn enabled() -> bool {
    FROM_ENV.call_once(|| {
        if std::env::var(crate::config::env::TRACE)
            .is_ok_and(|v| v == "off" || v == "0" || v == "false")
        {
            ENABLED.store(false, Ordering::Relaxed);
        }
    });
    ENABLED.load(Ordering::Relaxed)
}

/// Turns span recording on or off for this process (the benchmark compares both).
pub fn set_enabled(on: bool) {
    FROM_ENV.call_once(|| {});
    ENABLED.store(on, Ordering::Relaxed);
}

/// A W3C trace context: which trace, and which span in it is the parent of the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// 16 random bytes, never all zero.
    pub trace_id: u128,
    /// 8 random bytes, never all zero.
    pub span_id: u64,
}

fn nonzero_u64() -> u64 {
    loop {
        let v: u64 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

impl TraceContext {
    /// A new trace.
    pub fn root() -> Self {
        let trace_id = loop {
            let v: u128 = rand::random();
            if v != 0 {
                break v;
            }
        };
        TraceContext {
            trace_id,
            span_id: nonzero_u64(),
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        TraceContext {
            trace_id: self.trace_id,
            span_id: nonzero_u64(),
        }
    }

    /// Parses a `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`); None if malformed.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 {
            return None;
        }
        if flags.len() != 2 || (version == "00" && parts.next().is_some()) {
            return None;
        }
        u8::from_str_radix(flags, 16).ok()?;
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceContext { trace_id, span_id })
    }

    /// The `traceparent` header value (sampled).
    pub fn header(&self) -> String {
        format!("00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }

    /// The trace id as 32 hex digits.
    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as 16 hex digits.
    pub fn span_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

/// One finished span: a step of a trace, with the object it was about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpanRecord {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// The parent span, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// What happened, `Actor/message` style: `ApiServer/create`, `Store/commit`,
    /// `Scheduler/schedule`, `Kubelet/start`, `Runtime/start`.
    pub name: String,
    /// The component that did it (`apiserver`, `scheduler`, `controller-manager`,
    /// `kubelet:<node>`, or a user name for other clients).
    pub component: String,
    /// For a message: who sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// For a message: who it went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The NATS subject (or HTTP path) the message travelled on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The API verb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    /// The resource (`pods`), with `/subresource` when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// `200`, `409`… for requests; `ok` or an error for other steps.
    pub outcome: String,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// How long it took.
    pub duration_nanos: u64,
}

/// A span as tracers send it: positional (a MessagePack array without field names, about
/// half the bytes of the named form) with every field present, nil for none, in
/// [`SpanRecord`]'s order — so `SpanRecord`'s own `Deserialize` reads it, as it reads the
/// named form.
#[derive(Serialize)]
struct WireSpan<'a> {
    trace_id: &'a str,
    span_id: &'a str,
    parent_id: Option<&'a str>,
    name: &'a str,
    component: &'a str,
    from: Option<&'a str>,
    to: Option<&'a str>,
    subject: Option<&'a str>,
    verb: Option<&'a str>,
    resource: Option<&'a str>,
    namespace: Option<&'a str>,
    object: Option<&'a str>,
    outcome: &'a str,
    start_unix_nanos: u64,
    duration_nanos: u64,
}

impl<'a> From<&'a SpanRecord> for WireSpan<'a> {
    fn from(s: &'a SpanRecord) -> Self {
        WireSpan {
            trace_id: &s.trace_id,
            span_id: &s.span_id,
            parent_id: s.parent_id.as_deref(),
            name: &s.name,
            component: &s.component,
            from: s.from.as_deref(),
            to: s.to.as_deref(),
            subject: s.subject.as_deref(),
            verb: s.verb.as_deref(),
            resource: s.resource.as_deref(),
            namespace: s.namespace.as_deref(),
            object: s.object.as_deref(),
            outcome: &s.outcome,
            start_unix_nanos: s.start_unix_nanos,
            duration_nanos: s.duration_nanos,
        }
    }
}

/// A batch of spans as tracers publish it on [`SPANS_SUBJECT`]; read back as
/// `Vec<SpanRecord>`.
pub fn encode_batch(batch: &[SpanRecord]) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let wire: Vec<WireSpan<'_>> = batch.iter().map(WireSpan::from).collect();
    rmp_serde::to_vec(&wire)
}

/// The object a span is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectRef {
    /// Resource (`pods`, `pods/binding`).
    pub resource: String,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// Name ("" for lists and creates with generateName).
    pub name: String,
}

/// Nanoseconds since the Unix epoch.
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A span being timed; [`Tracer::finish`] records it.
#[derive(Debug, Clone)]
pub struct Span {
    /// Its context: pass to the next hop as the parent.
    pub ctx: TraceContext,
    /// Its parent's span id.
    pub parent: Option<u64>,
    /// See [`SpanRecord::name`].
    pub name: Cow<'static, str>,
    /// See [`SpanRecord::from`] and [`SpanRecord::to`].
    pub from_to: Option<(String, String)>,
    /// See [`SpanRecord::subject`].
    pub subject: Option<String>,
    /// See [`SpanRecord::verb`].
    pub verb: Option<String>,
    /// The object.
    pub object: Option<ObjectRef>,
    /// When it started.
    pub started: SystemTime,
    started_at: std::time::Instant,
}

impl Span {
    /// Starts a span: a child of `parent`, or the root of a new trace.
    pub fn start(name: impl Into<Cow<'static, str>>, parent: Option<TraceContext>) -> Span {
        let ctx = parent.map(|p| p.child()).unwrap_or_else(TraceContext::root);
        Span {
            ctx,
            parent: parent.map(|p| p.span_id),
            name: name.into(),
            from_to: None,
            subject: None,
            verb: None,
            object: None,
            started: SystemTime::now(),
            started_at: std::time::Instant::now(),
        }
    }

    /// Marks it as a message from one component to another (only noted while recording:
    /// the context alone travels otherwise).
    pub fn message(mut self, from: &str, to: &str, subject: &str) -> Self {
        if !enabled() {
            return self;
        }
        self.from_to = Some((from.into(), to.into()));
        self.subject = Some(subject.into());
        self
    }

    /// Names the verb and object (only noted while recording).
    pub fn about(mut self, verb: &str, object: ObjectRef) -> Self {
        if !enabled() {
            return self;
        }
        self.verb = Some(verb.into());
        self.object = Some(object);
        self
    }

    /// When it started, by both clocks.
    pub fn started(&self) -> Started {
        (self.started, self.started_at)
    }

    /// How long since it started.
    pub fn elapsed(&self) -> Duration {
        self.started_at.elapsed()
    }

    /// The record of this span, ended now with `outcome`, done by `component`.
    pub fn record(&self, component: &str, outcome: &str) -> SpanRecord {
        let (from, to) = match &self.from_to {
            Some((f, t)) => (Some(f.clone()), Some(t.clone())),
            None => (None, None),
        };
        let object = self.object.clone().unwrap_or_default();
        let opt = |s: String| (!s.is_empty()).then_some(s);
        SpanRecord {
            trace_id: self.ctx.trace_hex(),
            span_id: self.ctx.span_hex(),
            parent_id: self.parent.map(|p| format!("{p:016x}")),
            name: self.name.to_string(),
            component: component.into(),
            from,
            to,
            subject: self.subject.clone(),
            verb: self.verb.clone(),
            resource: opt(object.resource),
            namespace: opt(object.namespace),
            object: opt(object.name),
            outcome: outcome.into(),
            start_unix_nanos: unix_nanos(self.started),
            duration_nanos: self.started_at.elapsed().as_nanos() as u64,
        }
    }
}

impl ObjectRef {
    /// The object a request names (`resource/subresource`, namespace, name).
    pub fn of_request(r: &crate::api::wire::Request) -> ObjectRef {
        ObjectRef {
            resource: match &r.subresource {
                Some(sub) => format!("{}/{sub}", r.resource),
                None => r.resource.clone(),
            },
            namespace: r.namespace.clone().unwrap_or_default(),
            name: r.name.clone().unwrap_or_default(),
        }
    }
}

/// A span name per verb, `<prefix>/<verb>`, without allocating.
pub fn verb_name(prefix: Side, verb: crate::api::wire::Verb) -> &'static str {
    use crate::api::wire::Verb::*;
    match (prefix, verb) {
        (Side::Client, Get) => "ApiClient/get",
        (Side::Client, List) => "ApiClient/list",
        (Side::Client, Create) => "ApiClient/create",
        (Side::Client, Update) => "ApiClient/update",
        (Side::Client, Patch) => "ApiClient/patch",
        (Side::Client, Delete) => "ApiClient/delete",
        (Side::Client, DeleteCollection) => "ApiClient/deletecollection",
        (Side::Client, Watch) => "ApiClient/watch",
        (Side::Server, Get) => "ApiServer/get",
        (Side::Server, List) => "ApiServer/list",
        (Side::Server, Create) => "ApiServer/create",
        (Side::Server, Update) => "ApiServer/update",
        (Side::Server, Patch) => "ApiServer/patch",
        (Side::Server, Delete) => "ApiServer/delete",
        (Side::Server, DeleteCollection) => "ApiServer/deletecollection",
        (Side::Server, Watch) => "ApiServer/watch",
    }
}

/// Which end of a request a span is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The component sending it.
    Client,
    /// The API server serving it.
    Server,
}

/// A `tracing` span for one actor handler — `actor` and `message` — with the object it is
/// about (kind, namespace, name) and the trace that produced that object's version, so log
/// lines inside carry them. Nothing is computed unless debug logging is on.
pub fn handler_span(
    actor: &'static str,
    message: &'static str,
    obj: Option<&Value>,
) -> tracing::Span {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return tracing::Span::none();
    }
    let field = |p: &str| {
        obj.and_then(|o| o.pointer(p))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let trace_id = obj.and_then(of).map(|c| c.trace_hex()).unwrap_or_default();
    tracing::debug_span!(
        "handle",
        actor,
        message,
        kind = %field("/kind"),
        namespace = %field("/metadata/namespace"),
        name = %field("/metadata/name"),
        trace_id = %trace_id,
    )
}

/// The component name a user identity stands for in traces.
pub fn component_of(user: &str) -> String {
    match user {
        "system:kube-scheduler" => "scheduler".into(),
        "system:kube-controller-manager" => "controller-manager".into(),
        u => match u.strip_prefix("system:node:") {
            Some(node) => format!("kubelet:{node}"),
            None => u.to_string(),
        },
    }
}

/// How many spans a tracer sends in one message at most; a full batch is sent at once, so
/// the work of sending and collecting comes in small pieces, not one burst per [`FLUSH`].
const BATCH: usize = 64;
/// How long a span may wait for its batch.
const FLUSH: Duration = Duration::from_millis(100);
/// Spans waiting to be sent beyond this are dropped (a stalled bus must not grow memory).
const QUEUE_LIMIT: usize = 10_000;

/// Records a component's spans: batches them onto the bus. Cheap to clone; a tracer without a
/// bus (or with recording off) drops what it is given.
#[derive(Clone)]
pub struct Tracer {
    component: Arc<str>,
    sink: Option<Sink>,
}

/// Where a tracer's spans wait for their batch.
#[derive(Clone)]
struct Sink {
    tx: mpsc::Sender<SpanRecord>,
    /// Wakes the sender early once a whole batch waits.
    full: Arc<tokio::sync::Notify>,
}

impl Sink {
    fn send(&self, record: SpanRecord) {
        let _ = self.tx.try_send(record);
        if self.tx.max_capacity() - self.tx.capacity() >= BATCH {
            self.full.notify_one();
        }
    }
}

impl Tracer {
    /// A tracer that sends nowhere.
    pub fn disabled(component: &str) -> Tracer {
        Tracer {
            component: component.into(),
            sink: None,
        }
    }

    /// A tracer publishing `component`'s spans on `nats`, on the span subject of
    /// `identity` (the NATS connection's own). Its sender, which batches and encodes, runs on
    /// the process's trace thread ([`runtime`]), off the component's own threads; without
    /// that thread the tracer records nothing.
    pub fn to_nats(component: &str, identity: &str, nats: async_nats::Client) -> Tracer {
        let subject = spans_subject(identity);
        let Some(on) = runtime() else {
            return Tracer::disabled(component);
        };
        let (tx, mut rx) = mpsc::channel::<SpanRecord>(QUEUE_LIMIT);
        let full = Arc::new(tokio::sync::Notify::new());
        let woken = full.clone();
        on.spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                let first = match rx.recv().await {
                    Some(s) => s,
                    None => return,
                };
                batch.push(first);
                // The rest of the batch is collected after the wait, not span by span: a
                // receiver waiting on the channel is woken by every send, a cross-thread
                // wake-up on each request's path (most of what tracing cost a GET).
                tokio::select! {
                    _ = tokio::time::sleep(FLUSH) => {}
                    _ = woken.notified() => {}
                }
                loop {
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(s) => batch.push(s),
                            Err(_) => break,
                        }
                    }
                    let more = batch.len() == BATCH;
                    if let Ok(bytes) = encode_batch(&batch) {
                        let _ = nats.publish(subject.clone(), bytes.into()).await;
                    }
                    batch.clear();
                    if !more {
                        break;
                    }
                }
            }
        });
        Tracer {
            component: component.into(),
            sink: Some(Sink { tx, full }),
        }
    }

    /// The component this tracer speaks for.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// The same, shared.
    pub fn component_arc(&self) -> Arc<str> {
        self.component.clone()
    }

    /// Records a finished span (no-op when recording is off).
    pub fn finish(&self, span: &Span, outcome: &str) {
        if let Some(sink) = &self.sink {
            if enabled() {
                sink.send(span.record(&self.component, outcome));
            }
        }
    }

    /// Records a span that is already a record (e.g. timed elsewhere).
    pub fn emit(&self, record: SpanRecord) {
        if let Some(sink) = &self.sink {
            if enabled() {
                sink.send(record);
            }
        }
    }
}

/// The process's trace thread: a current-thread runtime for the span senders and the API
/// server's collector, so batching, encoding and collecting never run on a component's own
/// threads. None if the thread cannot be started (spans are then not recorded).
pub fn runtime() -> Option<tokio::runtime::Handle> {
    static RT: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    RT.get_or_init(|| match crate::rt::side_thread("skiff-trace") {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "no trace thread: spans are not recorded");
            None
        }
    })
    .clone()
}

/// A NATS connection whose socket is served on the trace thread (so spans' traffic never
/// waits on a component's threads); on the caller's runtime without that thread.
pub async fn connect(
    options: async_nats::ConnectOptions,
    url: String,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    crate::rt::connect_on(runtime().as_ref(), options, url).await
}

/// Object versions (uid, resourceVersion) whose trace this process has seen, oldest first,
/// bounded: a component acting on an object continues the trace that produced its version.
/// Object versions by a 64-bit hash of (uid, resourceVersion): ~60 B an entry, not ~250 B
/// with the two strings twice. Two versions colliding (odds ~1 in 10^9 among 100,000) would
/// at worst hang one reaction under the wrong trace.
struct Versions {
    map: HashMap<u64, TraceContext>,
    order: VecDeque<u64>,
}

/// How many object versions keep their trace per process.
const VERSIONS_KEPT: usize = 100_000;

fn versions() -> &'static Mutex<Versions> {
    static V: OnceLock<Mutex<Versions>> = OnceLock::new();
    V.get_or_init(|| {
        Mutex::new(Versions {
            map: HashMap::new(),
            order: VecDeque::new(),
        })
    })
}

fn version_key(obj: &Value) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = obj.get("metadata")?;
    let uid = meta.get("uid")?.as_str()?;
    let rv = meta.get("resourceVersion")?.as_str()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (uid, rv).hash(&mut h);
    Some(h.finish())
}

/// Remembers the trace that produced this version of `obj` (from its watch event).
pub fn remember(obj: &Value, ctx: TraceContext) {
    let Some(key) = version_key(obj) else {
        return;
    };
    let mut v = versions().lock().unwrap_or_else(|p| p.into_inner());
    if v.map.insert(key, ctx).is_none() {
        v.order.push_back(key);
        while v.order.len() > VERSIONS_KEPT {
            if let Some(old) = v.order.pop_front() {
                v.map.remove(&old);
            }
        }
    }
}

/// The trace that produced this version of `obj`, if this process saw it.
pub fn of(obj: &Value) -> Option<TraceContext> {
    let key = version_key(obj)?;
    versions()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .map
        .get(&key)
        .copied()
}

/// When a served request started, by both clocks.
pub type Started = (SystemTime, std::time::Instant);

tokio::task_local! {
    /// The API server span a request is being served in (read by the registry where it
    /// writes to the store).
    static SERVING: (TraceContext, Tracer, Started);
}

/// Runs `fut` as the work of the API server span `ctx`, which started at `started`.
pub async fn serving<F: std::future::Future>(
    ctx: TraceContext,
    tracer: Tracer,
    started: Started,
    fut: F,
) -> F::Output {
    SERVING.scope((ctx, tracer, started), fut).await
}

/// The API server span being served, the tracer to record its steps with, and its start.
pub fn current() -> Option<(TraceContext, Tracer, Started)> {
    SERVING.try_with(|c| c.clone()).ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_batch_names_its_real_publisher() {
        let span = |component: &str| SpanRecord {
            component: component.into(),
            ..Default::default()
        };
        let mut batch = vec![span("kubelet:n1"), span("apiserver")];
        attribute(&mut batch, &spans_subject("system:node:n1"));
        assert_eq!(batch[0].component, "kubelet:n1");
        assert_eq!(batch[1].component, "kubelet:n1 (claimed apiserver)");
        let mut own = vec![span("apiserver")];
        attribute(&mut own, &spans_subject("apiserver"));
        assert_eq!(own[0].component, "apiserver");
        let mut bare = vec![span("scheduler")];
        attribute(&mut bare, SPANS_SUBJECT);
        assert_eq!(bare[0].component, "unknown (claimed scheduler)");
    }

    use super::*;

    #[test]
    fn a_positional_batch_reads_back_as_the_spans_it_came_from() {
        let full = SpanRecord {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            parent_id: Some("00f067aa0ba902b7".into()),
            name: "ApiServer/get".into(),
            component: "apiserver".into(),
            from: Some("scheduler".into()),
            to: Some("apiserver".into()),
            subject: Some("skiff.req.x.get".into()),
            verb: Some("get".into()),
            resource: Some("pods".into()),
            namespace: Some("default".into()),
            object: Some("web".into()),
            outcome: "200".into(),
            start_unix_nanos: 1,
            duration_nanos: 2,
        };
        let sparse = SpanRecord {
            trace_id: full.trace_id.clone(),
            span_id: "00f067aa0ba902b7".into(),
            name: "Store/commit".into(),
            component: "apiserver".into(),
            outcome: "ok".into(),
            ..Default::default()
        };
        let batch = vec![full, sparse];
        let positional = encode_batch(&batch).unwrap();
        let named = rmp_serde::to_vec_named(&batch).unwrap();
        assert!(
            positional.len() * 10 < named.len() * 7,
            "{} vs {}",
            positional.len(),
            named.len()
        );
        let back: Vec<SpanRecord> = rmp_serde::from_slice(&positional).unwrap();
        assert_eq!(back, batch);
        // The named form (older tracers) still reads.
        let back: Vec<SpanRecord> = rmp_serde::from_slice(&named).unwrap();
        assert_eq!(back, batch);
    }

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let c = TraceContext::root();
        assert_eq!(TraceContext::parse(&c.header()), Some(c));
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = TraceContext::parse(h).unwrap();
        assert_eq!(p.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_hex(), "00f067aa0ba902b7");
        for bad in [
            "",
            "00-0000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
        let child = c.child();
        assert_eq!(child.trace_id, c.trace_id);
        assert_ne!(child.span_id, c.span_id);
    }

    #[test]
    fn object_versions_keep_their_trace() {
        let obj = serde_json::json!({"metadata": {"uid": "u-trace-test", "resourceVersion": "7"}});
        assert_eq!(of(&obj), None);
        let c = TraceContext::root();
        remember(&obj, c);
        assert_eq!(of(&obj), Some(c));
        let next = serde_json::json!({"metadata": {"uid": "u-trace-test", "resourceVersion": "8"}});
        assert_eq!(of(&next), None);
    }

    #[test]
    fn spans_record_their_parent_and_object() {
        let parent = TraceContext::root();
        let s = Span::start("Scheduler/schedule", Some(parent)).about(
            "bind",
            ObjectRef {
                resource: "pods".into(),
                namespace: "default".into(),
                name: "web".into(),
            },
        );
        let r = s.record("scheduler", "ok");
        assert_eq!(r.trace_id, parent.trace_hex());
        assert_eq!(r.parent_id.as_deref(), Some(parent.span_hex().as_str()));
        assert_eq!(r.object.as_deref(), Some("web"));
        assert_eq!(component_of("system:node:n1"), "kubelet:n1");
    }
}
