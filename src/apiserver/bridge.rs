//! The NATS bridge: the NatsBridge actor subscribes `skiff.req.>` in the API servers' queue
//! group, turns each message into a `Call` on the ApiServer, and publishes the answer to the
//! message's reply subject. Watches answer with `WatchStarted`, then stream numbered events to
//! the caller's inbox until they end, closing with a `CLOSED` event so the caller resumes at
//! once.
//!
//! Nothing a caller sends can stop it: every malformed payload gets a 400 Status.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::watch;

use super::{intake, ApiHandle, Call, Credentials, Reply, WatchItem, WatchStream};
use crate::api::codec::{self, MapWriter};
use crate::api::subject::{self, HEADER_CODE, HEADER_REQUEST_ID, HEADER_TOKEN, HEADER_TRACEPARENT};
use crate::api::wire::{event_type, Request, Verb, WatchStarted};
use crate::api::Status;
use crate::trace::TraceContext;

/// How long the connection may take to drain at shutdown when the grace period is spent.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Room left in a NATS message for the list envelope and headers.
const ENVELOPE_MARGIN: usize = 64 * 1024;

/// The NatsBridge actor. See the module docs.
pub struct NatsBridge {
    /// The API server it feeds.
    api: ApiHandle,
    /// The NATS connection replies and events go out on.
    client: async_nats::Client,
    /// Requests being served, so shutdown can wait for them.
    in_flight: Arc<AtomicUsize>,
    /// Asks the intake to drain the request subscription; taken by Shutdown.
    drain: Option<tokio::sync::oneshot::Sender<()>>,
    /// Becomes true once the drained subscription has delivered its last message.
    drained: watch::Sender<bool>,
    /// Tells running watches to close.
    closing: watch::Sender<bool>,
    /// Largest list page one reply can carry (the server's max_payload less the envelope),
    /// read once: `server_info()` clones the whole INFO block.
    max_bytes: usize,
    /// Requests in progress past which callers outside the system's own identities are
    /// refused with 429 at once.
    max_backlog: usize,
    /// Where the bridge reports how long the requests it takes waited (see `intake`).
    delay: intake::Delay,
}

/// Whether a request comes from the control plane itself or an exempt admin (its token says
/// so): those are never shed by the transport, only by their own priority levels.
fn is_system(api: &ApiHandle, msg: &Message) -> bool {
    let Some((user, _)) = subject::parse_request(&msg.subject) else {
        return false;
    };
    let credentials = Credentials {
        token: header(msg, HEADER_TOKEN).map(str::to_string),
        identity: Some(user),
        certificate: None,
        impersonate: None,
    };
    api.authenticate(&credentials).is_ok_and(|u| {
        u.groups
            .iter()
            .any(|g| g == "system:masters" || g == "system:nodes")
            || u.name == "system:kube-scheduler"
            || u.name == "system:kube-controller-manager"
    })
}

impl Actor for NatsBridge {
    type Context = Context<Self>;
}

/// Subscribes the request subjects and starts the bridge, its requests read by the intake
/// (see [`super::intake`]).
pub async fn serve_nats(
    api: ApiHandle,
    client: async_nats::Client,
) -> Result<Addr<NatsBridge>, async_nats::SubscribeError> {
    let sub = client
        .queue_subscribe(subject::REQUEST_WILDCARD, subject::APISERVER_QUEUE.into())
        .await?;
    client.flush().await.ok();
    let (closing, _) = watch::channel(false);
    let max_bytes = client
        .server_info()
        .max_payload
        .saturating_sub(ENVELOPE_MARGIN)
        .max(1024);
    let (drain, drain_rx) = tokio::sync::oneshot::channel();
    let (drained, _) = watch::channel(false);
    let delay = intake::Delay::default();
    let system_api = api.clone();
    let requests = intake::start(
        sub,
        drain_rx,
        client.clone(),
        Arc::new(move |msg: &Message| is_system(&system_api, msg)),
        delay.clone(),
    );
    let requests = futures::stream::unfold(requests, |mut rx| async move {
        rx.recv().await.map(|arrived| (arrived, rx))
    });
    Ok(NatsBridge::create(move |ctx| {
        ctx.add_stream(requests);
        NatsBridge {
            max_backlog: api.max_backlog(),
            api,
            client,
            in_flight: Arc::new(AtomicUsize::new(0)),
            drain: Some(drain),
            drained,
            closing,
            max_bytes,
            delay,
        }
    }))
}

impl StreamHandler<intake::Arrived> for NatsBridge {
    fn handle(&mut self, arrived: intake::Arrived, _: &mut Context<Self>) {
        let intake::Arrived { msg, at } = arrived;
        self.delay.taken(at);
        let _span = tracing::debug_span!("handle", actor = "NatsBridge", message = "Request", subject = %msg.subject).entered();
        let Some(reply) = msg.reply.clone() else {
            return; // the intake passes only requests with a reply subject
        };
        if self.in_flight.load(Ordering::Relaxed) >= self.max_backlog && !is_system(&self.api, &msg)
        {
            // Too many in progress (slow store, slow watchers' first pages): refuse before
            // the request costs a task, decoding and a place in the flow-control queues.
            let client = self.client.clone();
            actix::spawn(async move {
                intake::refuse(&client, &msg, reply.to_string(), "backlog").await;
            });
            return;
        }
        let api = self.api.clone();
        let client = self.client.clone();
        let in_flight = self.in_flight.clone();
        let closing = self.closing.subscribe();
        let max_bytes = self.max_bytes;
        in_flight.fetch_add(1, Ordering::SeqCst);
        // A task of its own, not an item of this actor's context: actix polls every item of
        // a context each time the context wakes, so a thousand open watches pumping inside it
        // made every request cost a thousand polls (a pod event took 3.4× longer with 1,000
        // node watches open than with 10, even when none of them was concerned).
        actix::spawn(async move {
            serve_one(api, client, msg, reply.to_string(), closing, max_bytes).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The subscription ended (drained at shutdown, or the connection closed): keep the
        // actor alive so in-flight work can finish; Shutdown stops it.
        tracing::debug!("request subscription ended");
        self.drained.send_replace(true);
    }
}

/// Stop taking requests, finish those in flight (within `grace`), close watches, flush.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    /// How long in-flight requests may take.
    pub grace: Duration,
}

impl Handler<Shutdown> for NatsBridge {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        let _span = crate::trace::handler_span("NatsBridge", "Shutdown", None).entered();
        if let Some(drain) = self.drain.take() {
            let _ = drain.send(());
        }
        self.closing.send_replace(true);
        let in_flight = self.in_flight.clone();
        let client = self.client.clone();
        let mut drained = self.drained.subscribe();
        Box::pin(
            async move {
                let deadline = tokio::time::Instant::now() + msg.grace;
                // Every request nats-server delivered before the unsubscribe is taken…
                let _ = tokio::time::timeout_at(deadline, drained.wait_for(|d| *d)).await;
                // …and answered.
                while in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // The answers are published; the connection closes once nats-server has read
                // them (it answers the drain's PING after them). A process exiting sooner
                // loses the last answers with its write buffer.
                let flush_by = deadline.max(tokio::time::Instant::now() + DRAIN_GRACE);
                match tokio::time::timeout_at(flush_by, client.drain()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "draining NATS"),
                    Err(_) => tracing::warn!("NATS did not drain in time"),
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}

fn header<'a>(msg: &'a Message, name: &str) -> Option<&'a str> {
    msg.headers.as_ref()?.get(name).map(|v| v.as_str())
}

/// Serves one request message end to end.
async fn serve_one(
    api: ApiHandle,
    client: async_nats::Client,
    msg: Message,
    reply: String,
    closing: watch::Receiver<bool>,
    max_bytes: usize,
) {
    // Answers go to the caller's own inbox only (`_INBOX.<identity>.…`, the only one it may
    // subscribe): a request naming another's inbox as its reply subject would have the API
    // server write into that component's stream. It is dropped unanswered.
    let own_inbox = subject::parse_request(&msg.subject)
        .map(|(user, _)| format!("{}.", subject::inbox_prefix(&user)));
    if !own_inbox.as_deref().is_some_and(|p| reply.starts_with(p)) {
        tracing::warn!(subject = %msg.subject, %reply, "request not answered: its reply subject is not the caller's inbox");
        return;
    }
    let own_inbox = own_inbox.unwrap_or_default();
    let request_id = header(&msg, HEADER_REQUEST_ID).map(str::to_string);
    let traceparent = header(&msg, HEADER_TRACEPARENT).map(str::to_string);
    let answer = async {
        let (user, verb) = subject::parse_request(&msg.subject).ok_or_else(|| {
            Status::bad_request(format!("malformed request subject {}", msg.subject))
        })?;
        let verb = Verb::parse(verb)
            .ok_or_else(|| Status::method_not_allowed(format!("unknown verb {verb:?}")))?;
        let request: Request =
            codec::decode(&msg.payload).map_err(|e| Status::bad_request(e.to_string()))?;
        let inbox = request.inbox.clone();
        if verb == Verb::Watch && inbox.as_deref().is_none_or(str::is_empty) {
            return Err(Status::bad_request("a watch needs an inbox"));
        }
        if let Some(i) = inbox.as_deref().filter(|i| !i.starts_with(&own_inbox)) {
            return Err(Status::forbidden(format!(
                "a watch streams to its caller's own inbox ({own_inbox}…), not {i:?}"
            )));
        }
        let call = Call {
            credentials: Credentials {
                token: header(&msg, HEADER_TOKEN).map(str::to_string),
                identity: Some(user),
                certificate: None,
                impersonate: None,
            },
            verb,
            request,
            max_bytes,
            trace: traceparent.as_deref().and_then(TraceContext::parse),
            origin: None,
        };
        Ok((api.call(call).await?, inbox))
    }
    .await;
    let mut headers = HeaderMap::new();
    if let Some(id) = &request_id {
        headers.insert(HEADER_REQUEST_ID, id.as_str());
    }
    let answer = match answer {
        // NATS callers get warnings as headers too.
        Ok((Reply::Warned(reply, warnings), inbox)) => {
            for w in &warnings {
                headers.append("Warning", format!("299 - {w:?}").as_str());
            }
            Ok((*reply, inbox))
        }
        other => other,
    };
    match answer {
        Ok((Reply::Object(bytes), _)) => {
            headers.insert(HEADER_CODE, "200");
            publish(&client, reply, headers, bytes).await;
        }
        Ok((Reply::Text(bytes), _)) | Ok((Reply::TextStream(bytes, _), _)) => {
            headers.insert(HEADER_CODE, "200");
            headers.insert("Content-Type", "text/plain");
            publish(&client, reply, headers, bytes).await;
        }
        Ok((Reply::Watch(stream), inbox)) => {
            let id = api.next_watch_id();
            let started = WatchStarted {
                id,
                resource_version: stream.revision().to_string(),
            };
            headers.insert(HEADER_CODE, "200");
            let body = codec::encode(&started).map(Bytes::from).unwrap_or_default();
            publish(&client, reply, headers, body).await;
            if let Some(inbox) = inbox {
                pump(client, *stream, inbox, closing).await;
            }
        }
        Ok((Reply::Warned(..), _)) | Err(_) => {
            let status = match answer {
                Err(status) => status,
                _ => Status::internal("warnings nested in warnings"),
            };
            headers.insert(HEADER_CODE, status.code.to_string().as_str());
            let body = codec::encode(&status).map(Bytes::from).unwrap_or_default();
            publish(&client, reply, headers, body).await;
        }
    }
}

async fn publish(client: &async_nats::Client, subject: String, headers: HeaderMap, body: Bytes) {
    if let Err(e) = client.publish_with_headers(subject, headers, body).await {
        tracing::warn!(error = %e, "publishing a reply");
    }
}

/// Encodes one watch event: `{seq, type, object}` with the object spliced in as stored.
fn event(seq: u64, kind: &str, object: &[u8]) -> Bytes {
    traced_event(seq, kind, object, None)
}

/// Encodes one watch event carrying the `traceparent` of the write behind it, if any.
fn traced_event(seq: u64, kind: &str, object: &[u8], trace: Option<&str>) -> Bytes {
    let mut w = MapWriter::new(if trace.is_some() { 4 } else { 3 });
    w.u64("seq", seq).str("type", kind).raw("object", object);
    if let Some(t) = trace {
        w.str("trace", t);
    }
    Bytes::from(w.finish())
}

/// Streams a watch to the caller's inbox until it ends, the server shuts down, or nobody
/// subscribes the inbox any more.
///
/// Core NATS publishes to a subject nobody subscribes without complaint, so a watch whose
/// caller resumed elsewhere or went away would stream to nobody until its timeout, and every
/// commit would keep fanning out to it: under load, clients that resume after a silence
/// multiplied the open watches (1,006 → 3,757 for the same 1,000 kubelets) and made the
/// server slower still. So each bookmark goes out with a reply subject of the pump's own:
/// nats-server answers a message with a reply subject "no responders" (a 503 status) at once
/// when nobody subscribes its subject, and the watch ends there (under steady traffic, which
/// sends no bookmarks, an event carries the reply subject once per bookmark interval). The
/// probe is published in line with the events, so it keeps its place in the stream. A watcher
/// that is merely slow is still subscribed and is left alone.
async fn pump(
    client: async_nats::Client,
    mut stream: WatchStream,
    inbox: String,
    mut closing: watch::Receiver<bool>,
) {
    let mut seq = 0u64;
    let info = stream.shown_as();
    // Where nats-server's "no responders" answers to this watch's probes arrive.
    let probe_inbox = client.new_inbox();
    let mut probe_answers = match client.subscribe(probe_inbox.clone()).await {
        Ok(sub) => Some(sub),
        Err(e) => {
            tracing::warn!(error = %e, "subscribing a watch's probe inbox; it goes unprobed");
            None
        }
    };
    // Under steady traffic a watch sends no bookmarks, so an event goes out as the probe
    // when none was sent for a bookmark interval.
    let every = stream.bookmark_interval();
    let mut probe_due = tokio::time::Instant::now() + every;
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = closing.wait_for(|c| *c) => None,
            Some(answer) = next_answer(&mut probe_answers) => {
                if answer.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                    tracing::debug!(%inbox, "watch inbox has no subscriber; ending the watch");
                    watch_ended("abandoned");
                    return;
                }
                continue;
            }
        };
        seq += 1;
        let payload = match item {
            Some(WatchItem::Object {
                event_type,
                object,
                trace,
                ..
            }) => traced_event(seq, event_type, &object, trace.as_deref()),
            Some(item @ (WatchItem::Bookmark(_) | WatchItem::InitialEventsEnd(_))) => {
                let obj = item.bookmark(info).unwrap_or_default();
                let bytes = codec::value_to_msgpack(&obj).unwrap_or_default();
                probe_due = tokio::time::Instant::now(); // every bookmark is a probe
                event(seq, event_type::BOOKMARK, &bytes)
            }
            Some(WatchItem::Error(status)) => {
                let bytes = codec::encode(&status).unwrap_or_default();
                event(seq, event_type::ERROR, &bytes)
            }
            None => {
                let obj = json!({"metadata": {"resourceVersion": stream.revision().to_string()}});
                let bytes = codec::value_to_msgpack(&obj).unwrap_or_default();
                let _ = client
                    .publish(inbox.clone(), event(seq, CLOSED, &bytes))
                    .await;
                watch_ended("closed");
                return;
            }
        };
        let sent = if probe_answers.is_some() && tokio::time::Instant::now() >= probe_due {
            probe_due = tokio::time::Instant::now() + every;
            client
                .publish_with_reply(inbox.clone(), probe_inbox.clone(), payload)
                .await
        } else {
            client.publish(inbox.clone(), payload).await
        };
        if sent.is_err() {
            watch_ended("disconnected");
            return;
        }
    }
}

/// The next answer to a watch's probes (never, without a probe subscription).
async fn next_answer(answers: &mut Option<async_nats::Subscriber>) -> Option<Message> {
    use futures::StreamExt;
    match answers {
        Some(sub) => sub.next().await,
        None => std::future::pending().await,
    }
}

/// Counts a NATS watch that ended, by why: its timeout or a shutdown (`closed`), its inbox
/// found without a subscriber (`abandoned`), or a lost connection (`disconnected`).
fn watch_ended(why: &'static str) {
    crate::metrics::counter(
        "apiserver_nats_watches_ended_total",
        "NATS watches ended, by cause (closed, abandoned, disconnected).",
        &["cause"],
    )
    .inc(&[why]);
}

/// The NATS-only event that ends a watch stream (the client resumes from its last revision).
pub const CLOSED: &str = "CLOSED";
