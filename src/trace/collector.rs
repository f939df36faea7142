//! The span collector in the API server: subscribes to the spans every component publishes,
//! keeps the latest in a bounded buffer (so `skiff trace pod/<name>` works after the fact,
//! with no external collector), answers timeline queries on [`QUERY_SUBJECT`] for callers in
//! `system:masters`, and, when an OTLP endpoint is configured, exports each span there
//! (OTLP/HTTP JSON, e.g. Jaeger 2.x on :4318). Without an endpoint nothing is sent anywhere.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{SpanRecord, QUERY_SUBJECT, SPANS_WILDCARD};
use crate::api::subject::HEADER_TOKEN;

/// Spans kept by default.
pub const DEFAULT_CAPACITY: usize = 200_000;

/// A timeline query: every trace that touched this object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TraceQuery {
    /// Resource (`pods`); a `/subresource` suffix in spans also matches.
    pub resource: String,
    /// Namespace ("" for cluster-scoped).
    #[serde(default)]
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// The answer to a [`TraceQuery`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TraceAnswer {
    /// The spans, by start time; empty with `error` set when refused.
    pub spans: Vec<SpanRecord>,
    /// Why the query was refused.
    #[serde(default)]
    pub error: Option<String>,
}

/// Decides whether a bearer token may read traces.
pub type Gate = Arc<dyn Fn(Option<&str>) -> bool + Send + Sync>;

/// A span as the buffer keeps it: ids as numbers, and its texts (component, verb, subject,
/// object…) as one shared [`Texts`]: the 1,000 Lease renewals a second of 10,000 nodes are
/// 10,000 distinct sets of texts, each held once however often it recurs. ~50 B a span
/// plus its share of the texts, against ~750 B as a [`SpanRecord`] of owned strings.
struct Kept {
    trace_id: u128,
    span_id: u64,
    /// 0 for none (an all-zero span id is not a valid one).
    parent_id: u64,
    texts: Arc<Texts>,
    start_unix_nanos: u64,
    duration_nanos: u64,
}

/// The texts of a span, each interned in turn.
#[derive(PartialEq, Eq, Hash)]
struct Texts {
    name: Arc<str>,
    component: Arc<str>,
    from: Option<Arc<str>>,
    to: Option<Arc<str>>,
    subject: Option<Arc<str>>,
    verb: Option<Arc<str>>,
    resource: Option<Arc<str>>,
    namespace: Option<Arc<str>>,
    object: Option<Arc<str>>,
    outcome: Arc<str>,
}

impl Kept {
    fn record(&self) -> SpanRecord {
        let t = &*self.texts;
        let text = |s: &Option<Arc<str>>| s.as_deref().map(String::from);
        SpanRecord {
            trace_id: format!("{:032x}", self.trace_id),
            span_id: format!("{:016x}", self.span_id),
            parent_id: (self.parent_id != 0).then(|| format!("{:016x}", self.parent_id)),
            name: t.name.to_string(),
            component: t.component.to_string(),
            from: text(&t.from),
            to: text(&t.to),
            subject: text(&t.subject),
            verb: text(&t.verb),
            resource: text(&t.resource),
            namespace: text(&t.namespace),
            object: text(&t.object),
            outcome: t.outcome.to_string(),
            start_unix_nanos: self.start_unix_nanos,
            duration_nanos: self.duration_nanos,
        }
    }
}

/// A W3C id of `digits` lowercase hex digits, not all zero, as a number.
fn hex_id(s: &str, digits: usize) -> Option<u128> {
    let ok = s.len() == digits && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
        .filter(|&v| v != 0)
}

/// Texts and sets of texts seen recently, each held once. Forgotten wholesale when either
/// grows past [`Interned::LIMIT`]: spans keep what they hold, later spans start sharing
/// afresh, so a stream of unique texts costs no more than it would uninterned.
#[derive(Default)]
struct Interned {
    texts: HashSet<Arc<str>>,
    sets: HashSet<Arc<Texts>>,
}

impl Interned {
    const LIMIT: usize = 1 << 17;

    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.texts.get(s) {
            return a.clone();
        }
        if self.texts.len() >= Self::LIMIT {
            self.texts.clear();
        }
        let a: Arc<str> = Arc::from(s);
        self.texts.insert(a.clone());
        a
    }

    fn maybe(&mut self, s: Option<String>) -> Option<Arc<str>> {
        s.map(|s| self.get(&s))
    }

    /// The span as kept; None when its ids are not W3C ids (no tracer of ours sends such a
    /// span, and no OTLP collector would take it).
    fn keep(&mut self, s: SpanRecord) -> Option<Kept> {
        let trace_id = hex_id(&s.trace_id, 32)?;
        let span_id = hex_id(&s.span_id, 16)? as u64;
        let parent_id = match &s.parent_id {
            Some(p) => hex_id(p, 16)? as u64,
            None => 0,
        };
        let texts = Texts {
            name: self.get(&s.name),
            component: self.get(&s.component),
            from: self.maybe(s.from),
            to: self.maybe(s.to),
            subject: self.maybe(s.subject),
            verb: self.maybe(s.verb),
            resource: self.maybe(s.resource),
            namespace: self.maybe(s.namespace),
            object: self.maybe(s.object),
            outcome: self.get(&s.outcome),
        };
        let texts = match self.sets.get(&texts) {
            Some(t) => t.clone(),
            None => {
                if self.sets.len() >= Self::LIMIT {
                    self.sets.clear();
                }
                let t = Arc::new(texts);
                self.sets.insert(t.clone());
                t
            }
        };
        Some(Kept {
            trace_id,
            span_id,
            parent_id,
            texts,
            start_unix_nanos: s.start_unix_nanos,
            duration_nanos: s.duration_nanos,
        })
    }
}

/// The spans held, oldest first, and the texts they share.
#[derive(Default)]
struct Buffer {
    spans: VecDeque<Kept>,
    texts: Interned,
}

/// The bounded span buffer. Cheap to clone.
#[derive(Clone)]
pub struct Collector {
    spans: Arc<Mutex<Buffer>>,
    capacity: usize,
    export: Option<mpsc::Sender<SpanRecord>>,
}

impl Collector {
    /// A collector keeping `capacity` spans, exporting to `otlp` (an `http://host:port`
    /// base URL) when given.
    pub fn new(capacity: usize, otlp: Option<String>) -> Collector {
        let export = otlp.map(|url| {
            let (tx, rx) = mpsc::channel(10_000);
            tokio::spawn(export_loop(url, rx));
            tx
        });
        Collector {
            spans: Arc::new(Mutex::new(Buffer::default())),
            capacity: capacity.max(1),
            export,
        }
    }

    /// Adds spans, dropping the oldest beyond the capacity.
    pub fn add(&self, batch: Vec<SpanRecord>) {
        if let Some(tx) = &self.export {
            for s in &batch {
                let _ = tx.try_send(s.clone());
            }
        }
        let mut buffer = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        let Buffer { spans, texts } = &mut *buffer;
        let before = spans.len();
        spans.extend(batch.into_iter().filter_map(|s| texts.keep(s)));
        crate::metrics::counter(
            "skiff_trace_spans_collected_total",
            "Spans the trace collector has kept (it holds the latest of them).",
            &[],
        )
        .with(&[])
        .add((spans.len() - before) as u64);
        while spans.len() > self.capacity {
            spans.pop_front();
        }
    }

    /// Spans held.
    pub fn len(&self) -> usize {
        self.spans.lock().map(|b| b.spans.len()).unwrap_or(0)
    }

    /// No spans held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every span of every trace that touched the object, by start time.
    pub fn timeline(&self, q: &TraceQuery) -> Vec<SpanRecord> {
        let buffer = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        let matches = |s: &Kept| {
            let t = &*s.texts;
            t.object.as_deref() == Some(q.name.as_str())
                && t.namespace.as_deref().unwrap_or("") == q.namespace
                && t.resource.as_deref().is_some_and(|r| {
                    r == q.resource || r.split('/').next() == Some(q.resource.as_str())
                })
        };
        let traces: BTreeSet<u128> = buffer
            .spans
            .iter()
            .filter(|s| matches(s))
            .map(|s| s.trace_id)
            .collect();
        let mut out: Vec<SpanRecord> = buffer
            .spans
            .iter()
            .filter(|s| traces.contains(&s.trace_id))
            .map(Kept::record)
            .collect();
        out.sort_by_key(|s| s.start_unix_nanos);
        out
    }

    /// Subscribes to the spans on the bus and answers queries until the connection closes.
    pub async fn serve(self, nats: async_nats::Client, gate: Gate) {
        let spans = match nats.subscribe(SPANS_WILDCARD).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "trace collector: cannot subscribe to spans");
                return;
            }
        };
        let queries = match nats.subscribe(QUERY_SUBJECT).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "trace collector: cannot subscribe to queries");
                return;
            }
        };
        let me = self.clone();
        let ingest = async move {
            let mut spans = spans;
            while let Some(msg) = spans.next().await {
                // A malformed batch is dropped whole: spans are best effort.
                if let Ok(mut batch) = rmp_serde::from_slice::<Vec<SpanRecord>>(&msg.payload) {
                    super::attribute(&mut batch, &msg.subject);
                    me.add(batch);
                }
            }
        };
        let answer = async move {
            let mut queries = queries;
            while let Some(msg) = queries.next().await {
                let Some(reply) = msg.reply.clone() else {
                    continue;
                };
                let token = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(HEADER_TOKEN))
                    .map(|v| v.as_str().to_string());
                let answer = if !gate(token.as_deref()) {
                    TraceAnswer {
                        spans: Vec::new(),
                        error: Some("traces are readable by system:masters only".into()),
                    }
                } else {
                    match rmp_serde::from_slice::<TraceQuery>(&msg.payload) {
                        Ok(q) => TraceAnswer {
                            spans: self.timeline(&q),
                            error: None,
                        },
                        Err(e) => TraceAnswer {
                            spans: Vec::new(),
                            error: Some(format!("malformed query: {e}")),
                        },
                    }
                };
                if let Ok(bytes) = rmp_serde::to_vec_named(&answer) {
                    let _ = nats.publish(reply, bytes.into()).await;
                }
            }
        };
        futures::join!(ingest, answer);
    }
}

/// The OTLP/HTTP JSON body for some spans, grouped by component (`service.name`).
pub fn otlp_body(spans: &[SpanRecord]) -> serde_json::Value {
    let mut by_component: std::collections::BTreeMap<&str, Vec<serde_json::Value>> =
        Default::default();
    for s in spans {
        let mut attributes = Vec::new();
        let mut attr = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                attributes.push(json!({"key": k, "value": {"stringValue": v}}));
            }
        };
        attr("skiff.from", &s.from);
        attr("skiff.to", &s.to);
        attr("messaging.destination.name", &s.subject);
        attr("skiff.verb", &s.verb);
        attr("k8s.resource", &s.resource);
        attr("k8s.namespace.name", &s.namespace);
        attr("k8s.object.name", &s.object);
        attr("skiff.outcome", &Some(s.outcome.clone()));
        let failed = s.outcome.parse::<u16>().is_ok_and(|c| c >= 400)
            || !(s.outcome == "ok" || s.outcome.parse::<u16>().is_ok());
        let mut span = json!({
            "traceId": s.trace_id, "spanId": s.span_id, "name": s.name,
            "kind": if s.from.is_some() { 3 } else { 1 },
            "startTimeUnixNano": s.start_unix_nanos.to_string(),
            "endTimeUnixNano": (s.start_unix_nanos + s.duration_nanos).to_string(),
            "attributes": attributes,
            "status": {"code": if failed { 2 } else { 1 }},
        });
        if let Some(p) = &s.parent_id {
            span["parentSpanId"] = json!(p);
        }
        by_component.entry(&s.component).or_default().push(span);
    }
    json!({"resourceSpans": by_component.into_iter().map(|(c, spans)| json!({
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": format!("skiff-{c}")}}]},
        "scopeSpans": [{"scope": {"name": "skiff"}, "spans": spans}],
    })).collect::<Vec<_>>()})
}

/// Batches spans and POSTs them to `<url>/v1/traces`; failures are logged and the batch
/// dropped (an exporter must never hold the control plane back).
async fn export_loop(url: String, mut rx: mpsc::Receiver<SpanRecord>) {
    let Some((host, port)) = http_host_port(&url) else {
        tracing::warn!(%url, "OTLP endpoint must be http://host:port; not exporting");
        return;
    };
    let mut batch = Vec::new();
    loop {
        match rx.recv().await {
            Some(s) => batch.push(s),
            None => return,
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while batch.len() < 512 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                _ => break,
            }
        }
        let body = otlp_body(&batch).to_string();
        batch.clear();
        let post = post_json(&host, port, "/v1/traces", &body);
        match tokio::time::timeout(Duration::from_secs(5), post).await {
            Ok(Ok(code)) if (200..300).contains(&code) => {}
            Ok(Ok(code)) => tracing::debug!(code, "OTLP export refused"),
            Ok(Err(e)) => tracing::debug!(error = %e, "OTLP export failed"),
            Err(_) => tracing::debug!("OTLP export timed out"),
        }
    }
}

fn http_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), 4318)),
    }
}

/// One HTTP/1.1 POST; returns the status code.
async fn post_json(host: &str, port: u16, path: &str, body: &str) -> std::io::Result<u16> {
    let mut s = tokio::net::TcpStream::connect((host, port)).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: &str, name: &str, object: &str, start: u64) -> SpanRecord {
        SpanRecord {
            trace_id: format!("{trace:0>32}"),
            span_id: format!("{:016x}", start + 1),
            name: name.into(),
            component: "apiserver".into(),
            resource: Some("pods".into()),
            namespace: Some("default".into()),
            object: Some(object.into()),
            outcome: "200".into(),
            start_unix_nanos: start,
            ..Default::default()
        }
    }

    #[test]
    fn a_timeline_is_every_span_of_the_traces_that_touched_the_object() {
        let c = Collector::new(3, None);
        c.add(vec![span("a0", "old", "web", 0)]);
        c.add(vec![
            span("a1", "ApiServer/create", "web", 2),
            SpanRecord {
                object: None,
                ..span("a1", "Runtime/start", "", 3)
            },
            span("a2", "ApiServer/create", "db", 1),
        ]);
        assert_eq!(c.len(), 3, "bounded");
        let t = c.timeline(&TraceQuery {
            resource: "pods".into(),
            namespace: "default".into(),
            name: "web".into(),
        });
        let names: Vec<&str> = t.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ApiServer/create", "Runtime/start"]);
    }

    #[test]
    fn a_kept_span_reads_back_as_it_came() {
        let mut s = span(
            "0af7651916cd43dd8448eb211c80319c",
            "ApiServer/create",
            "web",
            7,
        );
        s.parent_id = Some("b7ad6b7169203331".into());
        s.from = Some("scheduler".into());
        s.subject = Some("skiff.req.pods.create".into());
        s.verb = Some("create".into());
        s.duration_nanos = 42;
        let mut texts = Interned::default();
        let a = texts.keep(s.clone()).unwrap();
        let mut other = s.clone();
        other.span_id = "00000000000000ff".into();
        other.parent_id = None;
        let b = texts.keep(other.clone()).unwrap();
        assert_eq!(a.record(), s);
        assert_eq!(b.record(), other);
        assert!(
            Arc::ptr_eq(&a.texts, &b.texts),
            "shared texts are held once"
        );
        for bad in [
            "",
            "0AF7651916CD43DD8448EB211C80319C",
            "00000000000000000000000000000000",
            "xyz",
        ] {
            let mut s = s.clone();
            s.trace_id = bad.into();
            assert!(texts.keep(s).is_none(), "{bad:?} is no trace id");
        }
        for i in 0..Interned::LIMIT + 10 {
            texts.get(&i.to_string());
        }
        assert!(
            texts.texts.len() <= Interned::LIMIT,
            "the interner stays bounded"
        );
    }

    #[test]
    fn otlp_groups_by_component() {
        let mut s = span("0af7651916cd43dd8448eb211c80319c", "x", "web", 5);
        s.parent_id = Some("b7ad6b7169203331".into());
        let body = otlp_body(&[s]);
        let rs = &body["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0]["value"]["stringValue"],
            "skiff-apiserver"
        );
        assert_eq!(
            rs["scopeSpans"][0]["spans"][0]["parentSpanId"],
            "b7ad6b7169203331"
        );
        assert_eq!(
            http_host_port("http://jaeger:4318"),
            Some(("jaeger".into(), 4318))
        );
    }
}
