//! `ApiClient`: the one way the scheduler, controllers and kubelets talk to the API server —
//! even inside `skiff up` — over NATS request/reply, as MessagePack.
//!
//! Every failure comes back as a Kubernetes `Status`: the server's own, or one made here for
//! transport faults (503 when no API server answers, 504 on a timeout).

pub mod identity;
mod informer;
pub mod leader;
pub mod retry;
mod watcher;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde_json::Value;

pub use informer::{Cache, Informer, Meta, Notification, Object, OwnerRef, Transform};
pub use retry::RetryPolicy;
pub use watcher::Watcher;

use crate::api::codec;
use crate::api::subject::{self, HEADER_CODE, HEADER_REQUEST_ID, HEADER_TOKEN, HEADER_TRACEPARENT};
use crate::api::wire::{DeleteOptions, ListOptions, PatchType, Request, Verb};
use crate::api::Status;
use crate::trace::{self, ObjectRef, Span, TraceContext, Tracer};

/// How to reach the API server.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// NATS server URL.
    pub nats_url: String,
    /// The user name the token belongs to (the identity written into subjects).
    pub user: String,
    /// Bearer token.
    pub token: String,
    /// NATS user credentials, when the server requires them.
    pub nats_user: Option<(String, String)>,
    /// The CA that signed the NATS server's certificate: the connection then uses TLS and
    /// verifies the server against it.
    pub nats_ca: Option<std::path::PathBuf>,
    /// Request timeout.
    pub timeout: Duration,
    /// Silence after which a watch resumes (a few bookmark intervals).
    pub watch_silence: Duration,
    /// Rate limit and retries (see [`retry`]).
    pub retry: RetryPolicy,
}

impl ClientOptions {
    /// Options with the defaults for everything but the address and identity.
    pub fn new(nats_url: &str, user: &str, token: &str) -> Self {
        ClientOptions {
            nats_url: nats_url.into(),
            user: user.into(),
            token: token.into(),
            nats_user: None,
            nats_ca: None,
            timeout: Duration::from_secs(10),
            watch_silence: Duration::from_secs(15),
            retry: RetryPolicy::default(),
        }
    }
}

/// The servers of a NATS URL list (`nats://a:4222,nats://b:4222`: a cluster's members, any
/// of which will do; the client moves to another when its server goes).
pub fn nats_servers(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A client of the API server. Cheap to clone: a NATS connection handle and a few strings.
#[derive(Clone)]
pub struct ApiClient {
    /// The connection.
    nats: async_nats::Client,
    /// The identity written into request subjects.
    user: String,
    /// `Bearer <token>`.
    authorization: String,
    /// Request timeout.
    timeout: Duration,
    /// Silence after which a watch resumes.
    watch_silence: Duration,
    /// Records a span for every request this client sends.
    tracer: Tracer,
    /// When a refused request is tried again.
    retry: RetryPolicy,
    /// Paces this client (and its clones) at its QPS; None: unlimited.
    bucket: Option<Arc<retry::TokenBucket>>,
    /// Unique in this process, shared by clones: informers of one client (and the same
    /// resource and selectors) share one cache and one watch.
    id: u64,
    /// Whether the connection is shared with other identities (`from_nats`): its own inbox
    /// prefix is then not this user's, so requests and watches name inboxes of their own
    /// under `_INBOX.<user>.` — the only reply subjects the API server answers.
    shared: bool,
}

/// Why a client could not connect.
#[derive(Debug, thiserror::Error)]
#[error("connecting to NATS at {url}: {why}")]
pub struct ConnectError {
    /// The URL tried.
    pub url: String,
    /// The cause.
    pub why: String,
}

/// A page of a list.
#[derive(Debug, Clone, Default)]
pub struct ObjectList {
    /// The objects.
    pub items: Vec<Value>,
    /// The revision the list was served at.
    pub resource_version: String,
    /// Token for the next page, if any.
    pub continue_token: Option<String>,
}

impl ApiClient {
    /// Connects to NATS and returns a client acting as `options.user`.
    pub async fn connect(options: ClientOptions) -> Result<Self, ConnectError> {
        let mut connect = async_nats::ConnectOptions::new()
            .custom_inbox_prefix(subject::inbox_prefix(&options.user))
            .request_timeout(Some(options.timeout))
            .name(format!("skiff {}", options.user));
        if let Some((u, p)) = &options.nats_user {
            connect = connect.user_and_password(u.clone(), p.clone());
        }
        if let Some(ca) = &options.nats_ca {
            connect = connect.add_root_certificates(ca.clone()).require_tls(true);
        }
        connect = connect.event_callback(nats_events(trace::component_of(&options.user)));
        let nats = connect
            .connect(nats_servers(&options.nats_url))
            .await
            .map_err(|e| ConnectError {
                url: options.nats_url.clone(),
                why: e.to_string(),
            })?;
        Ok(Self {
            shared: false,
            ..Self::from_nats(nats, &options)
        })
    }

    /// Wraps an existing connection, which may carry other identities' requests too (many
    /// simulated kubelets on one connection).
    pub fn from_nats(nats: async_nats::Client, options: &ClientOptions) -> Self {
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        ApiClient {
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            tracer: Tracer::to_nats(
                &trace::component_of(&options.user),
                &options.user,
                nats.clone(),
            ),
            nats,
            user: options.user.clone(),
            authorization: format!("Bearer {}", options.token),
            timeout: options.timeout,
            watch_silence: options.watch_silence,
            retry: options.retry,
            bucket: options
                .retry
                .qps
                .map(|qps| Arc::new(retry::TokenBucket::new(qps, options.retry.burst))),
            shared: true,
        }
    }

    /// A fresh inbox of this client's identity (`_INBOX.<user>.<nuid>`).
    pub fn new_inbox(&self) -> String {
        let fresh = self.nats.new_inbox();
        if !self.shared {
            return fresh;
        }
        let nuid = fresh.rsplit('.').next().unwrap_or(&fresh);
        format!("{}.{nuid}", subject::inbox_prefix(&self.user))
    }

    /// The underlying NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// A handle on one resource (`group` "" for core), in `namespace` if namespaced.
    pub fn api(&self, group: &str, resource: &str, namespace: Option<&str>) -> Api {
        Api {
            client: self.clone(),
            group: group.into(),
            resource: resource.into(),
            namespace: namespace.map(String::from),
            parent: None,
        }
    }

    /// The tracer this client records its spans with (components record their own steps
    /// with it too).
    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// Sends one request and returns the raw reply payload, or the Status of a failure.
    pub async fn call_raw(&self, verb: Verb, request: &Request) -> Result<Bytes, Status> {
        self.call_traced(verb, request, None).await
    }

    /// Sends one request as a step of the trace `parent` (a new trace when None), recording
    /// the message as a span.
    pub async fn call_traced(
        &self,
        verb: Verb,
        request: &Request,
        parent: Option<TraceContext>,
    ) -> Result<Bytes, Status> {
        let payload = codec::encode(request).map_err(|e| Status::bad_request(e.to_string()))?;
        let subject = subject::request(&self.user, verb.as_str());
        let mut span = Span::start(trace::verb_name(trace::Side::Client, verb), parent);
        if trace::enabled() {
            span = span
                .message(self.tracer.component(), "apiserver", &subject)
                .about(verb.as_str(), ObjectRef::of_request(request));
        }
        let payload = Bytes::from(payload);
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            if let Some(bucket) = &self.bucket {
                bucket.take().await;
            }
            let result = self
                .send_to(subject.clone(), payload.clone(), Some(span.ctx))
                .await;
            let Err(status) = &result else {
                break result;
            };
            let Some(wait) = self.retry.retry_after(verb, status, attempt) else {
                break result;
            };
            crate::metrics::counter(
                "rest_client_retries_total",
                "Requests this process sent again after a 429, 503 or (reads) 504, by code.",
                &["code"],
            )
            .inc(&[&status.code.to_string()]);
            tracing::debug!(
                code = status.code,
                ?wait,
                attempt,
                "retrying a refused request"
            );
            tokio::time::sleep(wait).await;
        };
        let outcome = match &result {
            Ok(_) => "200".to_string(),
            Err(s) => s.code.to_string(),
        };
        self.tracer.finish(&span, &outcome);
        self.count(verb, result.as_ref().err().map_or(200, |s| s.code));
        result
    }

    /// Counts a request in `rest_client_requests_total{component, verb, code}`, through
    /// handles cached per thread and keyed by this client's tracer (no allocation and one
    /// atomic add on the hot path). The entry holds the tracer's name, so its address is
    /// never reused for another component.
    fn count(&self, verb: Verb, code: u16) {
        type Entry = (Arc<str>, crate::metrics::Counter);
        thread_local! {
            static HANDLES: std::cell::RefCell<HashMap<(usize, &'static str, u16), Entry>> =
                Default::default();
        }
        let name = self.tracer.component_arc();
        let key = (
            Arc::as_ptr(&name) as *const u8 as usize,
            verb.as_str(),
            code,
        );
        HANDLES.with(|h| {
            h.borrow_mut()
                .entry(key)
                .or_insert_with(|| {
                    let c = crate::metrics::counter(
                        "rest_client_requests_total",
                        "Requests this process sent to the API server, by component, verb and code.",
                        &["component", "verb", "code"],
                    )
                    .with(&[&name, verb.as_str(), &code.to_string()]);
                    (name.clone(), c)
                })
                .1
                .inc();
        });
    }

    /// Sends a payload to a verb's subject: also the way tests send malformed bytes.
    pub async fn send(&self, verb: &str, payload: Bytes) -> Result<Bytes, Status> {
        self.send_to(subject::request(&self.user, verb), payload, None)
            .await
    }

    async fn send_to(
        &self,
        subject: String,
        payload: Bytes,
        trace: Option<TraceContext>,
    ) -> Result<Bytes, Status> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_TOKEN, self.authorization.as_str());
        headers.insert(HEADER_REQUEST_ID, self.nats.new_inbox().as_str());
        if let Some(t) = trace {
            headers.insert(HEADER_TRACEPARENT, t.header().as_str());
        }
        let request = async {
            if self.shared {
                let r = async_nats::Request::new()
                    .headers(headers)
                    .payload(payload)
                    .inbox(self.new_inbox());
                self.nats.send_request(subject, r).await
            } else {
                self.nats
                    .request_with_headers(subject, headers, payload)
                    .await
            }
        };
        let reply = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| Status::timeout("no answer from the API server in time"))?
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    Status::unavailable("no API server is serving requests")
                }
                async_nats::RequestErrorKind::TimedOut => {
                    Status::timeout("no answer from the API server in time")
                }
                _ => Status::unavailable(format!("{}{e}", retry::TRANSPORT_PREFIX)),
            })?;
        let code = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_CODE))
            .and_then(|v| v.as_str().parse::<u16>().ok())
            .unwrap_or(500);
        if code >= 300 {
            let status: Status = codec::decode(&reply.payload).unwrap_or_else(|e| {
                Status::internal(format!("undecodable error reply ({code}): {e}"))
            });
            return Err(status);
        }
        Ok(reply.payload)
    }

    /// Sends one request and decodes the reply as JSON.
    pub async fn call(&self, verb: Verb, request: &Request) -> Result<Value, Status> {
        let bytes = self.call_raw(verb, request).await?;
        codec::msgpack_to_value(&bytes).map_err(|e| Status::internal(format!("reply: {e}")))
    }
}

/// Logs a connection's NATS events and counts its reconnections
/// (`skiff_nats_reconnects_total{component}`).
pub fn nats_events(
    component: String,
) -> impl Fn(
    async_nats::Event,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>
       + Send
       + Sync
       + 'static {
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    move |event| {
        let (component, lost) = (component.clone(), lost.clone());
        Box::pin(async move {
            use std::sync::atomic::Ordering;
            match event {
                async_nats::Event::Disconnected => {
                    lost.store(true, Ordering::Relaxed);
                    tracing::warn!(%component, "NATS connection lost; reconnecting");
                }
                async_nats::Event::Connected => {
                    if lost.swap(false, Ordering::Relaxed) {
                        crate::metrics::counter(
                            "skiff_nats_reconnects_total",
                            "NATS reconnections, by component.",
                            &["component"],
                        )
                        .inc(&[&component]);
                        tracing::info!(%component, "NATS reconnected");
                    }
                }
                async_nats::Event::SlowConsumer(sid) => {
                    crate::metrics::counter(
                        "skiff_nats_slow_consumer_total",
                        "Times a subscription fell behind and the client dropped messages.",
                        &["component"],
                    )
                    .inc(&[&component]);
                    tracing::warn!(%component, sid, "NATS slow consumer: messages dropped");
                }
                async_nats::Event::ServerError(e) => {
                    tracing::warn!(%component, error = %e, "NATS server error")
                }
                other => tracing::debug!(%component, event = %other, "NATS event"),
            }
        })
    }
}

/// Decodes a MessagePack reply as JSON.
fn json_reply(bytes: Bytes) -> Result<Value, Status> {
    codec::msgpack_to_value(&bytes).map_err(|e| Status::internal(format!("reply: {e}")))
}

/// One resource (in one namespace, or all), like kube-rs' `Api<K>` over JSON objects.
#[derive(Clone)]
pub struct Api {
    client: ApiClient,
    group: String,
    resource: String,
    namespace: Option<String>,
    /// The trace this handle's requests continue (None: each starts its own).
    parent: Option<TraceContext>,
}

impl Api {
    /// This handle, with its requests continuing the trace `parent`.
    pub fn with_parent(&self, parent: Option<TraceContext>) -> Api {
        Api {
            parent,
            ..self.clone()
        }
    }

    /// The same resource in `namespace` (for handles over all namespaces that act on one
    /// object they saw).
    pub fn with_namespace(&self, namespace: &str) -> Api {
        Api {
            namespace: Some(namespace.to_string()),
            ..self.clone()
        }
    }

    /// This handle, with its requests continuing the trace that produced this version of
    /// `obj` (as seen on a watch), if known.
    pub fn traced_by(&self, obj: &Value) -> Api {
        self.with_parent(trace::of(obj))
    }

    async fn call(&self, verb: Verb, request: &Request) -> Result<Value, Status> {
        json_reply(self.client.call_traced(verb, request, self.parent).await?)
    }

    pub(crate) fn request(&self, name: Option<&str>) -> Request {
        Request {
            group: self.group.clone(),
            resource: self.resource.clone(),
            namespace: self.namespace.clone(),
            name: name.map(String::from),
            ..Default::default()
        }
    }

    /// The resource this handle is for.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The client behind this handle.
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// GET one object.
    pub async fn get(&self, name: &str) -> Result<Value, Status> {
        self.call(Verb::Get, &self.request(Some(name))).await
    }

    /// GET a subresource (`status`, `scale`).
    pub async fn get_subresource(&self, name: &str, sub: &str) -> Result<Value, Status> {
        let mut r = self.request(Some(name));
        r.subresource = Some(sub.into());
        self.call(Verb::Get, &r).await
    }

    /// One page of a list.
    pub async fn list(&self, options: &ListOptions) -> Result<ObjectList, Status> {
        let mut r = self.request(None);
        r.list = options.clone();
        let v = self.call(Verb::List, &r).await?;
        Ok(ObjectList {
            items: v
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            resource_version: v
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            continue_token: v
                .pointer("/metadata/continue")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(String::from),
        })
    }

    /// Every page of a list, as one consistent snapshot.
    pub async fn list_all(&self, options: &ListOptions) -> Result<ObjectList, Status> {
        let mut opts = options.clone();
        let mut all = self.list(&opts).await?;
        while let Some(token) = all.continue_token.take() {
            opts.continue_token = Some(token);
            let page = self.list(&opts).await?;
            all.items.extend(page.items);
            all.continue_token = page.continue_token;
        }
        Ok(all)
    }

    /// POST a new object.
    pub async fn create(&self, obj: &Value) -> Result<Value, Status> {
        let mut r = self.request(None);
        r.body = Some(obj.clone());
        self.call(Verb::Create, &r).await
    }

    /// POST to a subresource of an object (`binding`).
    pub async fn create_subresource(
        &self,
        name: &str,
        sub: &str,
        obj: &Value,
    ) -> Result<Value, Status> {
        let mut r = self.request(Some(name));
        r.subresource = Some(sub.into());
        r.body = Some(obj.clone());
        self.call(Verb::Create, &r).await
    }

    /// PUT an object (its metadata.resourceVersion, if set, must be current).
    pub async fn update(&self, obj: &Value) -> Result<Value, Status> {
        let name = crate::api::meta::name(obj).to_string();
        let mut r = self.request(Some(&name));
        r.body = Some(obj.clone());
        self.call(Verb::Update, &r).await
    }

    /// PUT a subresource (`status`, `scale`).
    pub async fn update_subresource(
        &self,
        name: &str,
        sub: &str,
        obj: &Value,
    ) -> Result<Value, Status> {
        let mut r = self.request(Some(name));
        r.subresource = Some(sub.into());
        r.body = Some(obj.clone());
        self.call(Verb::Update, &r).await
    }

    /// PATCH an object, or a subresource when `sub` is given.
    pub async fn patch(
        &self,
        name: &str,
        sub: Option<&str>,
        patch_type: PatchType,
        patch: &Value,
    ) -> Result<Value, Status> {
        let mut r = self.request(Some(name));
        r.subresource = sub.map(String::from);
        r.patch_type = Some(patch_type);
        r.body = Some(patch.clone());
        self.call(Verb::Patch, &r).await
    }

    /// DELETE an object; answers the object as deleted, or as it now waits for its
    /// finalizers or grace period.
    pub async fn delete(&self, name: &str, options: &DeleteOptions) -> Result<Value, Status> {
        let mut r = self.request(Some(name));
        r.delete = Some(options.clone());
        self.call(Verb::Delete, &r).await
    }

    /// Deletes every object `list` selects, each with `options`; the objects deleted.
    pub async fn delete_collection(
        &self,
        list: &ListOptions,
        options: &DeleteOptions,
    ) -> Result<Value, Status> {
        let mut r = self.request(None);
        r.list = list.clone();
        r.delete = Some(options.clone());
        self.call(Verb::DeleteCollection, &r).await
    }

    /// Watches from `options.resource_version` ("" for the current objects first, as
    /// ADDED), resuming by itself after gaps, silences and server restarts. Ends with an
    /// Expired error when the revision is no longer in history: relist then.
    pub fn watch(&self, options: &ListOptions) -> Watcher {
        Watcher::new(self.clone(), options.clone(), self.client.watch_silence)
    }
}
