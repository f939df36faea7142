//! The API server: the ApiServer actor (authentication, then the registry), the Store it alone
//! owns, and the NATS bridge that feeds it requests.
//!
//! Module privacy enforces the ownership rule: `store` is a private child of this module, so
//! nothing outside `apiserver` can name the Store, let alone reach it.

pub mod audit;
pub mod auth;
pub mod authz;
#[doc(hidden)]
pub mod bench;
mod bridge;
pub mod certs;
pub mod custom;
pub mod event_ttl;
mod events_v1;
pub mod flowcontrol;
pub mod http;
pub mod intake;
pub mod kinds;
pub mod managed;
pub mod openapi;
pub mod patch;
pub(crate) mod registry;
pub mod run;
pub mod sa_admission;
pub mod serviceaccount;
pub(crate) mod store;
pub use store::etcd::EtcdOptions;
pub mod validation;
mod watch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::metrics;
use crate::trace::collector::Collector;
use crate::trace::{self, ObjectRef, Span, TraceContext, Tracer};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;

pub use auth::{Authenticator, UserInfo};
pub use store::StoreStats;
pub use watch::{WatchItem, WatchStream};

use crate::api::wire::{Request, Verb};
use crate::api::Status;
use registry::Registry;
use store::{EmbeddedBackend, MemoryBackend, Store, StoreConfig};

/// What the API server needs to start.
#[derive(Debug, Clone)]
pub struct ApiServerOptions {
    /// Where the embedded store keeps its file; None keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// The audit log (`--audit-log-path`): a JSON line per mutating request; None: none.
    pub audit_log: Option<PathBuf>,
    /// An EncryptionConfiguration (`--encryption-provider-config`): what is encrypted at
    /// rest, with which keys; None stores everything as it is.
    pub encryption_config: Option<PathBuf>,
    /// Bearer tokens.
    pub authenticator: Authenticator,
    /// Events kept for watch replay and paged lists.
    pub history: usize,
    /// Bookmark cadence of watches (the heartbeat clients use to notice silence).
    pub bookmark_interval: Duration,
    /// Watch duration when the client asks for none.
    pub default_watch_timeout: Duration,
    /// Largest encoded object accepted.
    pub max_object_bytes: usize,
    /// Most writes per durable commit (1: no group commit).
    pub max_batch: usize,
    /// Log bytes after which the embedded store checkpoints into its redb file.
    pub checkpoint_bytes: u64,
    /// The NATS connection requests to kubelets (logs) go out on.
    pub node_nats: Option<async_nats::Client>,
    /// The connection spans travel on: the collector's and the API server's own span sender.
    /// A connection of their own keeps span batches out of the socket that carries requests
    /// and replies (a GET's reply waited behind them); None: `node_nats`.
    pub trace_nats: Option<async_nats::Client>,
    /// Spans the trace collector keeps.
    pub trace_capacity: usize,
    /// Where to export spans over OTLP/HTTP (`http://host:4318`); None: nowhere.
    pub otlp_endpoint: Option<String>,
    /// Calls served at once across the priority levels (see [`flowcontrol`]).
    pub max_requests_inflight: usize,
    /// Longest a call waits for a seat before it is refused with 429.
    pub max_queue_wait: Duration,
    /// How long a call may take before its caller gets 504 (kube-apiserver's
    /// `--request-timeout`, 60 s). Watches and followed logs are answered at once and stream
    /// on outside it.
    pub request_timeout: Duration,
    /// Whether plain writes record their field managers in `metadata.managedFields` (as kube
    /// always does; off only to measure what it costs). Apply records ownership either way.
    pub track_managed_fields: bool,
    /// How create-time admission is configured.
    pub admission: kinds::Admission,
    /// Watches one identity may hold open at once (both transports); the next is 429.
    pub max_watches_per_user: usize,
    /// How long an Event lives after its last change (kube-apiserver's `--event-ttl`).
    pub event_ttl: Duration,
    /// Keep objects in etcd (the Store is then etcd's watch cache); None: the embedded store
    /// in `data_dir`, or memory without one. `data_dir` still holds the API server's keys.
    pub etcd: Option<EtcdOptions>,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        ApiServerOptions {
            data_dir: None,
            audit_log: None,
            encryption_config: None,
            authenticator: Authenticator::default(),
            history: 10_000,
            bookmark_interval: Duration::from_secs(5),
            default_watch_timeout: Duration::from_secs(1800),
            max_object_bytes: 1_572_864,
            max_batch: 4096,
            checkpoint_bytes: store::DEFAULT_CHECKPOINT_BYTES,
            node_nats: None,
            trace_nats: None,
            trace_capacity: trace::collector::DEFAULT_CAPACITY,
            otlp_endpoint: None,
            max_requests_inflight: flowcontrol::DEFAULT_SEATS,
            max_queue_wait: flowcontrol::DEFAULT_MAX_WAIT,
            request_timeout: Duration::from_secs(60),
            track_managed_fields: true,
            admission: kinds::Admission::default(),
            max_watches_per_user: watch::DEFAULT_WATCHES_PER_USER,
            event_ttl: event_ttl::DEFAULT_TTL,
            etcd: None,
        }
    }
}

/// Who a transport says is calling.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The bearer token, if any.
    pub token: Option<String>,
    /// The identity the transport vouches for (the NATS subject's), which must match the
    /// token's user.
    pub identity: Option<String>,
    /// A client certificate the TLS layer verified against Skiff's CA (CN = user, O =
    /// groups); used when there is no token.
    pub certificate: Option<UserInfo>,
    /// Whom the caller asks to act as (`Impersonate-User` / `Impersonate-Group`, kubectl's
    /// `--as` / `--as-group`): allowed to admins only, as Kubernetes allows it to those who
    /// may `impersonate`.
    pub impersonate: Option<Impersonation>,
}

/// The user (and groups) a request asks to be made as.
#[derive(Debug, Clone, Default)]
pub struct Impersonation {
    /// The user name (empty: groups were asked for without a user, which is refused).
    pub user: String,
    /// The groups.
    pub groups: Vec<String>,
}

/// A successful answer.
pub enum Reply {
    /// An object, list or Status, encoded as MessagePack.
    Object(Bytes),
    /// A watch to stream.
    Watch(Box<WatchStream>),
    /// Plain text (pod logs).
    Text(Bytes),
    /// Plain text, then more as it comes (followed pod logs).
    TextStream(Bytes, Box<async_nats::Subscriber>),
    /// A reply with warnings for the caller (HTTP `Warning` headers): unknown fields under
    /// `fieldValidation=Warn`.
    Warned(Box<Reply>, Vec<String>),
}

/// One API call, from any transport.
#[derive(Message)]
#[rtype(result = "Result<Reply, Status>")]
pub struct Call {
    /// Who is calling.
    pub credentials: Credentials,
    /// What to do.
    pub verb: Verb,
    /// To what.
    pub request: Request,
    /// Largest list page the transport can carry (0: no limit).
    pub max_bytes: usize,
    /// The caller's trace context (`traceparent`), if it sent one.
    pub trace: Option<TraceContext>,
    /// For HTTP calls: the client (from its User-Agent) and `METHOD path`, so the span shows
    /// the message; NATS calls are recorded by their sender.
    pub origin: Option<(String, String)>,
}

/// The ApiServer actor: authenticates every call, then runs it through the registry.
pub struct ApiServer {
    /// The registry, holding the Store's address.
    registry: Registry,
    /// Token to user.
    auth: Arc<Authenticator>,
    /// Node, RBAC.
    authz: Arc<authz::Authorizer>,
    /// Service account tokens: issues them, and knows them when they come back.
    issuer: Arc<serviceaccount::Issuer>,
    /// The audit log, when `--audit-log-path` names one.
    audit: Option<audit::Auditor>,
    /// Watch tunables.
    options: Arc<ApiServerOptions>,
    /// Records a span per request served.
    tracer: Tracer,
    /// Open watches per identity.
    watch_quota: Arc<watch::WatchQuota>,
    /// The trace collector's task, stopped with the API server.
    _collector: Option<AbortOnDrop>,
    /// The housekeeping loops (CRD cleanup, Event expiry), stopped with the API server.
    _housekeeping: Vec<AbortOnDrop>,
}

impl Actor for ApiServer {
    type Context = Context<Self>;
}

impl Handler<Call> for ApiServer {
    type Result = Response<Result<Reply, Status>>;

    fn handle(&mut self, mut call: Call, _: &mut Context<Self>) -> Self::Result {
        let mut span = Span::start(trace::verb_name(trace::Side::Server, call.verb), call.trace);
        if trace::enabled() {
            span = span.about(call.verb.as_str(), ObjectRef::of_request(&call.request));
            if let Some((from, subject)) = &call.origin {
                span = span.message(from, "apiserver", subject);
            }
        }
        let tracer = self.tracer.clone();
        let (verb, resource, subresource) = (
            call.verb,
            call.request.resource.clone(),
            call.request.subresource.clone(),
        );
        let audit = self.audit.as_ref().and_then(|a| a.begin(&call));
        // Answers from here, not from the future below: audited, spanned and counted.
        let answered = |answer: Result<Reply, Status>, who: Option<&UserInfo>| {
            if let Some(a) = &audit {
                a.finish(who, answer_code(verb, &answer));
            }
            done(
                &tracer,
                &span,
                verb,
                &resource,
                subresource.as_deref(),
                &answer,
            );
            Response::reply(answer)
        };
        let refuse = |s: Status, who: Option<&UserInfo>| answered(Err(s), who);
        let user = match authenticate(&self.auth, &self.issuer, &self.authz, &call.credentials) {
            Ok(u) => u,
            Err(s) => return refuse(s, None),
        };
        if let Err(s) = self.authz.authorize(&user, call.verb, &call.request) {
            return refuse(s, Some(&user));
        }
        if matches!(call.verb, Verb::Create | Verb::Update | Verb::Patch) {
            call.request.guard = self.authz.guard(&user, &call.request);
        }
        call.request.client = match &call.origin {
            Some((client, _)) => client.clone(),
            None => bus_manager(&user.name),
        };
        if call.verb == Verb::Get
            && call.request.subresource.as_deref() != Some("log")
            && !self.registry.needs_catch_up(&call.request)
        {
            // Reads come from the Store's view: answer inline, no future to spawn.
            let _span = tracing::debug_span!("ApiServer::Get", resource = %call.request.resource, user = %user.name).entered();
            let answer = if events_v1::is_events_v1(&call.request) {
                events_v1::core_request(&call.request)
                    .and_then(|core| self.registry.get(&core))
                    .and_then(events_v1::answer)
            } else {
                self.registry.get(&call.request)
            }
            .map(Reply::Object);
            return answered(answer, Some(&user));
        }
        if call.verb == Verb::Create
            && call.request.group.is_empty()
            && call.request.resource == "serviceaccounts"
            && call.request.subresource.as_deref() == Some("token")
        {
            let answer = self.issuer.request_token(&call.request).and_then(|v| {
                crate::api::codec::value_to_msgpack(&v)
                    .map(|b| Reply::Object(b.into()))
                    .map_err(|e| Status::internal(e.to_string()))
            });
            return answered(answer, Some(&user));
        }
        let warnings = match field_validation(&self.registry, &call.request, call.verb) {
            Ok(w) => w,
            Err(s) => return refuse(s, Some(&user)),
        };
        // A watch counts against its caller's quota from now until its stream is dropped.
        let quota = match call.verb {
            Verb::Watch => match self.watch_quota.acquire(&user.name) {
                Ok(q) => Some(q),
                Err(s) => return refuse(s, Some(&user)),
            },
            _ => None,
        };
        let user = user.clone();
        let registry = self.registry.clone();
        let options = self.options.clone();
        let log_span = tracing::debug_span!("ApiServer::Call", verb = call.verb.as_str(), resource = %call.request.resource, user = %user.name, trace_id = %span.ctx.trace_hex());
        let (ctx, started) = (span.ctx, span.started());
        let serve = tracing::Instrument::instrument(
            async move {
                // events.k8s.io Events are served as the core Events they are.
                let events_v1 = events_v1::is_events_v1(&call.request);
                let core;
                let req = if events_v1 {
                    core = events_v1::core_request(&call.request)?;
                    &core
                } else {
                    &call.request
                };
                let bytes = match call.verb {
                    Verb::Get if req.subresource.as_deref() == Some("log") => {
                        return registry.log(req).await.map(|(text, follow)| match follow {
                            Some(sub) => Reply::TextStream(text, Box::new(sub)),
                            None => Reply::Text(text),
                        });
                    }
                    Verb::Get => registry.get_consistent(req).await,
                    Verb::List => registry.list(req, call.max_bytes).await,
                    Verb::Create => registry.create(req).await,
                    Verb::Update => registry.update(req).await,
                    Verb::Patch if events_v1 => events_v1::patch(&registry, req).await,
                    Verb::Patch => registry.patch(req).await,
                    Verb::Delete => registry.delete(req).await,
                    Verb::DeleteCollection => registry.delete_collection(req).await,
                    Verb::Watch => {
                        let (start, filter, info) = registry.watch(req).await?;
                        let timeout = req
                            .list
                            .timeout_seconds
                            .map(Duration::from_secs)
                            .unwrap_or(options.default_watch_timeout);
                        let mut stream = WatchStream::new(
                            start,
                            filter,
                            info,
                            options.bookmark_interval,
                            timeout,
                        );
                        stream.allow_bookmarks = req.list.allow_watch_bookmarks;
                        stream.quota = quota;
                        if events_v1 {
                            stream.convert = Some(events_v1::watched);
                            stream.served_as =
                                crate::api::resource::lookup(events_v1::GROUP, "events");
                        }
                        if req.list.send_initial_events == Some(true) {
                            stream.announce_initial_events_end();
                        }
                        return Ok(Reply::Watch(Box::new(stream)));
                    }
                };
                let bytes = if events_v1 {
                    bytes.and_then(events_v1::answer)
                } else {
                    bytes
                };
                let reply = bytes.map(Reply::Object)?;
                Ok(if warnings.is_empty() {
                    reply
                } else {
                    Reply::Warned(Box::new(reply), warnings)
                })
            },
            log_span,
        );
        let audited = audit.map(|a| (a, user.clone()));
        Response::fut(async move {
            let answer = trace::serving(ctx, tracer.clone(), started, serve).await;
            if let Some((a, who)) = &audited {
                a.finish(Some(who), answer_code(verb, &answer));
            }
            done(
                &tracer,
                &span,
                verb,
                &resource,
                subresource.as_deref(),
                &answer,
            );
            answer
        })
    }
}

/// The HTTP code an answer goes out with (a create that succeeded is 201).
fn answer_code(verb: Verb, answer: &Result<Reply, Status>) -> u16 {
    match answer {
        Ok(_) if verb == Verb::Create => 201,
        Ok(_) => 200,
        Err(s) => s.code,
    }
}

/// Records a served request: its span, and the request count and latency metrics.
fn done(
    tracer: &Tracer,
    span: &Span,
    verb: Verb,
    resource: &str,
    subresource: Option<&str>,
    answer: &Result<Reply, Status>,
) {
    let code = outcome(answer);
    tracer.finish(span, code);
    // Labels from a bounded set (unknown resources are "other"), and handles cached per
    // thread: the GET path pays two atomic updates, not the registry's locks.
    let resource = crate::api::resource::RESOURCES
        .iter()
        .find(|r| r.plural == resource)
        .map(|r| r.plural)
        .unwrap_or("other");
    let subresource = match subresource {
        None => "",
        Some(s) => ["status", "scale", "binding", "eviction", "log"]
            .into_iter()
            .find(|k| *k == s)
            .unwrap_or("other"),
    };
    type Handles = (metrics::Counter, metrics::Histogram);
    /// (verb, resource, subresource, code).
    type Labels = (&'static str, &'static str, &'static str, &'static str);
    thread_local! {
        static HANDLES: std::cell::RefCell<std::collections::HashMap<Labels, Handles>> =
            Default::default();
    }
    let (count, latency) = HANDLES.with(|h| {
        h.borrow_mut()
            .entry((verb.as_str(), resource, subresource, code))
            .or_insert_with(|| {
                (
                    metrics::counter(
                        "apiserver_request_total",
                        "Requests served, by verb, resource, subresource and HTTP-style code.",
                        &["verb", "resource", "subresource", "code"],
                    )
                    .with(&[verb.as_str(), resource, subresource, code]),
                    metrics::histogram(
                        "apiserver_request_duration_seconds",
                        "Time to serve a request (for watches: to start it), by verb, resource and subresource.",
                        &["verb", "resource", "subresource"],
                        metrics::LATENCY_BUCKETS,
                    )
                    .with(&[verb.as_str(), resource, subresource]),
                )
            })
            .clone()
    });
    count.inc();
    let seconds = span.elapsed().as_secs_f64();
    latency.observe(seconds);
    // The request log (debug level), joinable with its trace; never the caller's credentials.
    tracing::debug!(
        trace_id = %span.ctx.trace_hex(),
        verb = verb.as_str(),
        resource,
        code,
        millis = seconds * 1e3,
        "served"
    );
}

/// A request's outcome as a span records it: the HTTP-style code.
fn outcome(answer: &Result<Reply, Status>) -> &'static str {
    match answer {
        Ok(_) => "200",
        Err(s) => match s.code {
            400 => "400",
            401 => "401",
            403 => "403",
            404 => "404",
            405 => "405",
            409 => "409",
            410 => "410",
            413 => "413",
            422 => "422",
            429 => "429",
            500 => "500",
            503 => "503",
            504 => "504",
            _ => "error",
        },
    }
}

/// Asks the ApiServer for the Store's counters.
#[derive(Message)]
#[rtype(result = "Result<StoreStats, Status>")]
struct GetStats;

impl Handler<GetStats> for ApiServer {
    type Result = ResponseFuture<Result<StoreStats, Status>>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let _span = crate::trace::handler_span("ApiServer", "GetStats", None).entered();
        let registry = self.registry.clone();
        Box::pin(async move { registry.stats().await })
    }
}

/// Who is calling: the token's user (which must match an identity the transport vouches
/// for), else a verified client certificate's; 401 otherwise.
///
/// A member of [`NODE_BOOTSTRAP_GROUP`] is the exception: it becomes the node its transport
/// identity names (`system:node:<name>` in the NATS subject), in `system:nodes`, so identical
/// replicas (`docker compose up --scale kubelet=5`) can share one credential and still each be
/// held to their own Node by the node authorizer.
fn authenticate(
    auth: &Authenticator,
    issuer: &serviceaccount::Issuer,
    authz: &authz::Authorizer,
    c: &Credentials,
) -> Result<UserInfo, Status> {
    let bearer = c
        .token
        .as_deref()
        .map(auth::bearer_token)
        .filter(|t| !t.is_empty());
    let mut user = match (&c.certificate, bearer) {
        (Some(cert), None) => cert.clone(),
        (_, Some(t)) if serviceaccount::looks_like_jwt(t) => {
            issuer.authenticate(t).ok_or_else(Status::unauthorized)?
        }
        _ => auth.authenticate(c.token.as_deref())?.clone(),
    };
    // Every authenticated caller is in `system:authenticated` (what the bootstrap policy
    // grants discovery and self-reviews to).
    if !user.groups.iter().any(|g| g == "system:authenticated") {
        user.groups.push("system:authenticated".into());
    }
    if let Some(id) = &c.identity {
        if *id != user.name {
            let bootstrapper = user.groups.iter().any(|g| g == NODE_BOOTSTRAP_GROUP);
            return match id.strip_prefix("system:node:") {
                Some(node) if bootstrapper && !node.is_empty() => Ok(UserInfo {
                    name: id.clone(),
                    uid: format!("{}:{node}", user.uid),
                    groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
                }),
                _ => Err(Status::unauthorized()),
            };
        }
    }
    match &c.impersonate {
        None => Ok(user),
        Some(imp) if imp.user.is_empty() => Err(Status::bad_request(
            "requested impersonation of groups without impersonating a user",
        )),
        Some(imp) => authz.impersonate(&user, &imp.user, &imp.groups),
    }
}

/// Server-side field validation (`fieldValidation`): fields the kind's schema does not know
/// fail the request under Strict (400), come back as warnings under Warn (the default), and
/// are ignored under Ignore. Patches are checked as the partial objects they are.
fn field_validation(registry: &Registry, req: &Request, verb: Verb) -> Result<Vec<String>, Status> {
    let mode = req.field_validation.as_deref().unwrap_or("Warn");
    if mode == "Ignore" || !matches!(verb, Verb::Create | Verb::Update | Verb::Patch) {
        return Ok(Vec::new());
    }
    if req.subresource.as_deref().is_some_and(|s| s != "status") {
        return Ok(Vec::new());
    }
    if req.patch_type == Some(crate::api::wire::PatchType::Json) {
        return Ok(Vec::new());
    }
    let Some(info) = registry
        .custom()
        .resolve(&req.group, req.version.as_deref(), &req.resource)
    else {
        return Ok(Vec::new());
    };
    let Some(body) = &req.body else {
        return Ok(Vec::new());
    };
    let mut body = body.clone();
    strip_directives(&mut body);
    let unknown = match custom::strategy::of(info) {
        Some(s) => s.unknown_fields(&body),
        None => openapi::unknown_fields(info.kind, &info.api_version(), &body),
    };
    let unknown: Vec<String> = unknown
        .into_iter()
        .map(|p| format!("unknown field \"{}\"", p.trim_start_matches('.')))
        .collect();
    if unknown.is_empty() {
        return Ok(unknown);
    }
    match mode {
        "Strict" => Err(Status::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            info.kind,
            info.api_version(),
            info.kind,
            unknown.join(", ")
        ))),
        _ => Ok(unknown),
    }
}

/// Removes strategic-merge directives (`$patch`, `$setElementOrder/…`) before a patch is
/// checked as a partial object.
fn strip_directives(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// The group whose members may do everything.
pub const ADMIN_GROUP: &str = "system:masters";

/// The group of kubelets; their user names are `system:node:<node name>`.
pub const NODES_GROUP: &str = "system:nodes";

/// The group of a shared kubelet credential: its holder may act as any one node it names in
/// its transport identity (see [`authenticate`]), never as anything else.
pub const NODE_BOOTSTRAP_GROUP: &str = "system:node-bootstrappers";

/// The handle the transports use: a cheap clone around the actor's address.
#[derive(Clone)]
pub struct ApiHandle {
    addr: Addr<ApiServer>,
    /// Token to user, for transports that check credentials before reading a body.
    auth: Arc<Authenticator>,
    /// The authorizer chain, for what transports answer themselves (reviews, paths).
    authz: Arc<authz::Authorizer>,
    /// Service account tokens, for authenticating them.
    issuer: Arc<serviceaccount::Issuer>,
    /// Ids for watches, unique in this process.
    watch_ids: Arc<AtomicU64>,
    /// Seats and queues every call waits in (both transports).
    flow: Arc<flowcontrol::FlowControl>,
    /// The kinds CRDs define, for discovery, OpenAPI and URL parsing.
    custom: Arc<custom::Custom>,
    /// How long a call may take (`ApiServerOptions::request_timeout`).
    request_timeout: Duration,
    /// The Store's committed state, for its health (`/readyz`).
    store: store::Reader,
}

impl ApiHandle {
    /// Whether the store is reachable (`/readyz`, `/healthz`: etcd's watch is live).
    pub fn store_ready(&self) -> bool {
        self.store.healthy()
    }

    /// Every served resource, built-in and custom.
    pub fn resources(&self) -> Vec<&'static crate::api::resource::ResourceInfo> {
        self.custom.resources()
    }

    /// The kinds CRDs define.
    pub fn custom(&self) -> &custom::Custom {
        &self.custom
    }

    /// Checks credentials without running a call (discovery documents need a caller too).
    pub fn authenticate(&self, credentials: &Credentials) -> Result<UserInfo, Status> {
        authenticate(&self.auth, &self.issuer, &self.authz, credentials)
    }

    /// Whether an object of a built-in resource exists now (the node bootstrap service asks
    /// whether a claimed node name is in use).
    pub fn exists(&self, group: &str, plural: &str, namespace: Option<&str>, name: &str) -> bool {
        crate::api::resource::lookup(group, plural).is_some_and(|info| {
            self.authz
                .registry()
                .reader()
                .get(&info.key(namespace, name))
                .is_some()
        })
    }

    /// The authorizer chain the calls go through: for `kubectl auth can-i` and paths
    /// outside the API.
    pub fn authorizer(&self) -> &authz::Authorizer {
        &self.authz
    }

    /// Runs one call, once its priority level has a seat for it (429 when it is saturated).
    /// A caller whose credentials fail is classified as unauthenticated (the lowest level)
    /// and answered by the actor as usual.
    pub async fn call(&self, call: Call) -> Result<Reply, Status> {
        let user = authenticate(&self.auth, &self.issuer, &self.authz, &call.credentials)
            .unwrap_or_else(|_| UserInfo {
                name: "system:anonymous".into(),
                uid: String::new(),
                groups: vec!["system:unauthenticated".into()],
            });
        let seat = self.flow.admit(&user, call.verb, &call.request).await?;
        // A call that has not answered in time is answered 504 (what it does goes on, as in
        // kube-apiserver: a write may still land).
        let answer = match tokio::time::timeout(self.request_timeout, self.addr.send(call)).await {
            Ok(sent) => {
                sent.unwrap_or_else(|e| Err(Status::unavailable(format!("api server: {e}"))))
            }
            Err(_) => Err(Status::timeout(
                "Timeout: request did not complete within the allotted timeout",
            )),
        };
        drop(seat);
        answer
    }

    /// Requests a transport may have in progress before it refuses callers outside the
    /// system's own identities (twice the flow-control seats: room for every seat and as
    /// many queued).
    pub fn max_backlog(&self) -> usize {
        self.flow.total_seats() * 2
    }

    /// The Store's counters (commits, writes, revision, watchers).
    pub async fn store_stats(&self) -> Result<StoreStats, Status> {
        self.addr
            .send(GetStats)
            .await
            .unwrap_or_else(|e| Err(Status::unavailable(format!("api server: {e}"))))
    }

    fn next_watch_id(&self) -> u64 {
        self.watch_ids.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Why the API server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(String),
    /// NATS could not be reached.
    #[error("connecting to NATS at {url}: {why}")]
    Nats {
        /// The URL tried.
        url: String,
        /// The cause.
        why: String,
    },
    /// Seeding failed.
    #[error("seeding: {0}")]
    Seed(Box<Status>),
}

/// Opens the store and starts the ApiServer actor (inside a running actix System).
pub async fn start(options: ApiServerOptions) -> Result<ApiHandle, StartError> {
    let flow = flowcontrol::FlowControl::new(options.max_requests_inflight, options.max_queue_wait);
    let config = StoreConfig {
        history: options.history,
        max_value_bytes: options.max_object_bytes,
        max_batch: options.max_batch,
        ..Default::default()
    };
    let dir = options.data_dir.clone();
    let checkpoint_bytes = options.checkpoint_bytes;
    let encryption = match &options.encryption_config {
        Some(path) => Some(
            store::encryption::Encryption::from_file(path)
                .map_err(|e| StartError::Store(e.to_string()))?,
        ),
        None => None,
    };
    let store = match &options.etcd {
        Some(etcd_options) => {
            let etcd = store::etcd::Etcd::connect(etcd_options, encryption)
                .await
                .map_err(|e| StartError::Store(e.to_string()))?;
            let loaded = etcd
                .load()
                .await
                .map_err(|e| StartError::Store(e.to_string()))?;
            tracing::info!(endpoints = ?etcd_options.endpoints, revision = loaded.revision, keys = loaded.kvs.len(), "store: etcd");
            Store::on_etcd(etcd, loaded, config, etcd_options.compaction_interval)
        }
        None => open_local(dir, checkpoint_bytes, encryption, config).await?,
    };
    let reader = store.reader();
    let store_reader = reader.clone();
    let store = store.start();
    let custom = Arc::new(custom::Custom::new(reader.clone()));
    let registry = Registry::new(
        store,
        reader,
        options.node_nats.clone(),
        options.track_managed_fields,
        options.admission,
        custom.clone(),
    );
    registry
        .ping()
        .await
        .map_err(|s| StartError::Seed(Box::new(s)))?;
    registry
        .seed()
        .await
        .map_err(|s| StartError::Seed(Box::new(s)))?;
    authz::policy::reconcile(&registry)
        .await
        .map_err(|s| StartError::Seed(Box::new(s)))?;
    let authz = Arc::new(authz::Authorizer::new(registry.clone()));
    let audit = match &options.audit_log {
        Some(path) => Some(
            audit::Auditor::open(path)
                .map_err(|e| StartError::Store(format!("audit log {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let issuer = Arc::new(
        serviceaccount::Issuer::open(options.data_dir.as_deref(), registry.reader().clone())
            .map_err(|e| StartError::Store(e.to_string()))?,
    );
    let auth = Arc::new(options.authenticator.clone());
    let mut collector = None;
    let spans_nats = options.trace_nats.as_ref().or(options.node_nats.as_ref());
    let tracer = match (spans_nats, trace::runtime()) {
        (Some(nats), Some(rt)) => {
            // The collector keeps every component's spans for `skiff trace`. It and the API
            // server's span sender run on a thread of their own, off the request path.
            let gate_auth = auth.clone();
            let gate: trace::collector::Gate = Arc::new(move |token: Option<&str>| {
                gate_auth
                    .authenticate(token)
                    .is_ok_and(|u| u.groups.iter().any(|g| g == ADMIN_GROUP))
            });
            let (capacity, otlp, bus) = (
                options.trace_capacity,
                options.otlp_endpoint.clone(),
                nats.clone(),
            );
            let task =
                rt.spawn(async move { Collector::new(capacity, otlp).serve(bus, gate).await });
            collector = Some(AbortOnDrop(task.abort_handle()));
            Tracer::to_nats("apiserver", "apiserver", nats.clone())
        }
        _ => Tracer::disabled("apiserver"),
    };
    let housekeeping = housekeeping(&registry, options.event_ttl);
    let request_timeout = options.request_timeout;
    let addr = ApiServer {
        registry,
        auth: auth.clone(),
        authz: authz.clone(),
        issuer: issuer.clone(),
        audit,
        watch_quota: Arc::new(watch::WatchQuota::new(options.max_watches_per_user)),
        options: Arc::new(options),
        tracer,
        _collector: collector,
        _housekeeping: housekeeping,
    }
    .start();
    Ok(ApiHandle {
        addr,
        auth,
        authz,
        issuer,
        watch_ids: Arc::new(AtomicU64::new(0)),
        flow,
        custom,
        request_timeout,
        store: store_reader,
    })
}

pub use bridge::{serve_nats, NatsBridge, Shutdown};

/// A new EncryptionConfiguration encrypting Secrets with a fresh key (see
/// `store::encryption`).
pub fn store_encryption_config() -> Result<String, store::BackendError> {
    store::encryption::generated_config()
}

/// Starts the loops that finish a CRD's deletion (`custom::cleanup`), expire Events
/// (`event_ttl`) and aggregate ClusterRoles (`authz::policy`) on a thread of their own: their scans of the Store's view would otherwise
/// hold up the ApiServer actor, which answers GETs inline.
fn housekeeping(registry: &Registry, event_ttl: Duration) -> Vec<AbortOnDrop> {
    static RT: std::sync::OnceLock<Option<tokio::runtime::Handle>> = std::sync::OnceLock::new();
    let rt = RT.get_or_init(|| match crate::rt::side_thread("skiff-housekeeping") {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "no housekeeping thread; its loops run beside requests");
            None
        }
    });
    let spawn = |f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
        let task = match rt {
            Some(rt) => rt.spawn(f),
            None => tokio::spawn(f),
        };
        AbortOnDrop(task.abort_handle())
    };
    vec![
        spawn(Box::pin(custom::cleanup::run(registry.clone()))),
        spawn(Box::pin(event_ttl::run(registry.clone(), event_ttl))),
        spawn(Box::pin(authz::policy::run_aggregation(registry.clone()))),
    ]
}

/// Aborts a task when dropped: the collector lives as long as its API server.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The field manager a bus caller's writes are recorded under when it names none: the
/// component, as the User-Agent names it for kube's own components (`kubelet`,
/// `kube-scheduler`, `kube-controller-manager`), else the user.
fn bus_manager(user: &str) -> String {
    if user.starts_with("system:node:") {
        return "kubelet".into();
    }
    user.strip_prefix("system:").unwrap_or(user).to_string()
}

/// The embedded store in `dir` (memory without one), opened off the actor thread: opening
/// reads the whole file.
async fn open_local(
    dir: Option<PathBuf>,
    checkpoint_bytes: u64,
    encryption: Option<store::encryption::Encryption>,
    config: StoreConfig,
) -> Result<Store, StartError> {
    tokio::task::spawn_blocking(move || {
        let backend: Box<dyn store::Backend> = match dir {
            Some(d) => Box::new(
                EmbeddedBackend::open_with(&d, checkpoint_bytes).map_err(|e| e.to_string())?,
            ),
            None => Box::new(MemoryBackend),
        };
        let backend: Box<dyn store::Backend> = match encryption {
            Some(e) => Box::new(store::encryption::Encrypted::new(backend, e)),
            None => backend,
        };
        Store::open(backend, config).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| StartError::Store(e.to_string()))?
    .map_err(StartError::Store)
}
