//! The registry: what each verb does to objects, between authentication and the Store.
//! Defaults on create, strategies on update (spec vs status), graceful delete and finalizers,
//! subresources (status, scale, binding), selectors and paging. It holds the Store's address
//! on behalf of the ApiServer actor and is created only by it.

use std::time::Duration;

use actix::Addr;
use bytes::Bytes;
use serde_json::{json, Value};

use super::kinds;
use super::managed;
use super::store::{self, KeyValue, Revision, Store, StoreError};
use super::validation::FieldError;
use crate::api::codec::{self, MapWriter};
use crate::api::meta;
use crate::api::resource::{self, ResourceInfo};
use crate::api::selector::{FieldOperator, FieldSelector, LabelSelector};
use crate::api::status::{Status, StatusCause};
use crate::api::wire::{DeleteOptions, ListOptions, PatchType, Request, WriteGuard};
use crate::trace::{self, ObjectRef, Span};

/// How many times an unconditional update, a patch or a delete is retried on a conflict:
/// each retry waits for the write it lost to, so under contention every round lets one
/// writer through and N contenders need N rounds (Kubernetes' GuaranteedUpdate loops too).
const MAX_RETRIES: usize = 1000;
/// How long a retry waits for the write it lost to become visible.
const CONFLICT_WAIT: Duration = Duration::from_secs(5);

/// The registry. Cheap to clone: an actor address.
#[derive(Clone)]
pub struct Registry {
    /// The Store: reachable only through here.
    store: Addr<Store>,
    /// Its committed state, read without a round trip (GET and read-modify-write).
    reader: store::Reader,
    /// NATS, for requests to kubelets (logs).
    nodes: Option<async_nats::Client>,
    /// Whether plain writes record their field managers.
    track_fields: bool,
    /// How create-time admission is configured.
    admission: kinds::Admission,
    /// The kinds CRDs define.
    custom: std::sync::Arc<super::custom::Custom>,
}

/// How one read-modify-write runs: for real or as a dry run, and with the caller's
/// [`WriteGuard`] (what the API server checks on the final object, such as RBAC
/// escalation), if any.
#[derive(Clone, Copy)]
struct Opts<'a> {
    dry_run: bool,
    guard: Option<&'a WriteGuard>,
}

impl<'a> Opts<'a> {
    fn of(req: &'a Request) -> Self {
        Opts {
            dry_run: req.dry_run,
            guard: req.guard.as_ref(),
        }
    }
}

/// A resolved request target.
struct Target {
    info: &'static ResourceInfo,
    namespace: Option<String>,
}

/// The object a store key names (`/registry/<resource>/[<namespace>/]<name>`), for spans.
fn object_of_key(key: &str) -> ObjectRef {
    let parts: Vec<&str> = key.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        [_, resource, ns, name] => ObjectRef {
            resource: resource.to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
        },
        [_, resource, name] => ObjectRef {
            resource: resource.to_string(),
            namespace: String::new(),
            name: name.to_string(),
        },
        _ => ObjectRef::default(),
    }
}

fn store_down(e: actix::MailboxError) -> Status {
    Status::unavailable(format!("store unavailable: {e}"))
}

impl Registry {
    /// Sends a write to the Store as a step of the request being served: the write carries
    /// the request's trace (its watch event will too), and its commit — up to durable — is
    /// timed as a `Store/commit` span after a `ApiServer/validate` span for what came before.
    async fn write<M>(
        &self,
        mut msg: M,
    ) -> Result<Result<KeyValue, StoreError>, actix::MailboxError>
    where
        M: actix::Message<Result = store::Ack> + store::Write + Send + 'static,
        Store: actix::Handler<M>,
    {
        let Some((ctx, tracer, started)) = trace::current() else {
            return Ok(self.store.send(msg).await?.durable().await);
        };
        msg.stamp(ctx.header().into());
        let object = object_of_key(msg.key());
        let mut validate =
            Span::start("ApiServer/validate", Some(ctx)).about("validate", object.clone());
        validate.started = started.0;
        let commit = Span::start("Store/commit", Some(ctx)).about("commit", object);
        let result = match self.store.send(msg).await {
            Ok(ack) => Ok(ack.durable().await),
            Err(e) => Err(e),
        };
        let mut record = validate.record(tracer.component(), "ok");
        record.start_unix_nanos = trace::unix_nanos(started.0);
        record.duration_nanos = started
            .1
            .elapsed()
            .saturating_sub(commit.elapsed())
            .as_nanos() as u64;
        tracer.emit(record);
        let outcome = match &result {
            Ok(Ok(_)) => "ok".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracer.finish(&commit, &outcome);
        result
    }

    pub(super) fn new(
        store: Addr<Store>,
        reader: store::Reader,
        nodes: Option<async_nats::Client>,
        track_fields: bool,
        admission: kinds::Admission,
        custom: std::sync::Arc<super::custom::Custom>,
    ) -> Self {
        Registry {
            store,
            reader,
            nodes,
            track_fields,
            admission,
            custom,
        }
    }

    /// The kinds CRDs define.
    pub(super) fn custom(&self) -> &super::custom::Custom {
        &self.custom
    }

    /// The node a pod is bound to ("" when unbound), None when there is no such pod: for the
    /// node authorizer.
    pub(super) fn pod_node(&self, namespace: &str, name: &str) -> Option<String> {
        let info = resource::lookup("", "pods")?;
        let kv = self.read(&info.key(Some(namespace), name))?;
        let pod = decode(&kv.value).ok()?;
        Some(
            pod.pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        )
    }

    /// `pods/<name>/log`: asks the kubelet of the pod's node over NATS; 503 when none answers.
    pub async fn log(
        &self,
        req: &Request,
    ) -> Result<(Bytes, Option<async_nats::Subscriber>), Status> {
        let t = self.target(req)?;
        if t.info.plural != "pods" {
            return Err(Status::not_found(
                t.info.group,
                "log",
                req.name.as_deref().unwrap_or(""),
            ));
        }
        let name = Self::name(req)?;
        check_log_options(name, req)?;
        let ns = Self::namespace_of(&t)?.unwrap_or_default().to_string();
        let kv = self
            .read(&t.info.key(Some(&ns), name))
            .ok_or_else(|| Status::not_found("", "pods", name))?;
        let pod = decode(&kv.value)?;
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                Status::bad_request(format!("pod {name} does not have a host assigned"))
            })?;
        let names = |at: &str| -> Vec<&str> {
            pod.pointer(at)
                .and_then(Value::as_array)
                .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
                .unwrap_or_default()
        };
        let containers = names("/spec/containers");
        let init = names("/spec/initContainers");
        let container = match req.container.as_deref().filter(|c| !c.is_empty()) {
            Some(c) if containers.contains(&c) || init.contains(&c) => c.to_string(),
            Some(c) => {
                return Err(Status::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
            None if containers.len() == 1 => containers[0].to_string(),
            None => {
                let more = if init.is_empty() {
                    String::new()
                } else {
                    format!(" or one of the init containers: [{}]", init.join(" "))
                };
                return Err(Status::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]{more}",
                    containers.join(" ")
                )));
            }
        };
        let nats = self
            .nodes
            .as_ref()
            .ok_or_else(|| Status::unavailable("no NATS connection to reach kubelets"))?;
        let ask = crate::api::wire::LogRequest {
            namespace: ns,
            pod: name.to_string(),
            uid: crate::api::meta::uid(&pod).to_string(),
            container,
            tail_lines: req.tail_lines,
            follow: req.follow,
            previous: req.previous,
            timestamps: req.timestamps,
            ..Default::default()
        };
        let mut ask = ask;
        // A followed log streams to an inbox we listen on before asking.
        let follow = if req.follow {
            let inbox = nats.new_inbox();
            let sub = nats
                .subscribe(inbox.clone())
                .await
                .map_err(|e| Status::unavailable(format!("subscribing for logs: {e}")))?;
            ask.inbox = Some(inbox);
            Some(sub)
        } else {
            None
        };
        let payload = codec::encode(&ask).map_err(|e| Status::internal(e.to_string()))?;
        let subject = crate::api::subject::node(node, "log");
        match tokio::time::timeout(
            Duration::from_secs(10),
            nats.request(subject, payload.into()),
        )
        .await
        {
            Ok(Ok(msg)) => {
                let code = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(crate::api::subject::HEADER_CODE))
                    .and_then(|v| v.as_str().parse::<u16>().ok())
                    .unwrap_or(200);
                if code >= 300 {
                    return Err(codec::decode(&msg.payload)
                        .unwrap_or_else(|_| Status::internal("kubelet answered an error")));
                }
                let mut body = msg.payload;
                if let Some(n) = req.limit_bytes {
                    body.truncate(usize::try_from(n).unwrap_or(usize::MAX));
                }
                Ok((body, follow))
            }
            _ => Err(Status::unavailable(format!(
                "the kubelet of node \"{node}\" did not answer for the logs of pod {name}"
            ))),
        }
    }

    /// Maps a Store error on one object to its Status.
    fn status(info: &ResourceInfo, name: &str, e: StoreError) -> Status {
        match e {
            StoreError::NotFound => Status::not_found(info.group, info.plural, name),
            StoreError::AlreadyExists => Status::already_exists(info.group, info.plural, name),
            StoreError::Conflict { .. } => Status::stale(info.group, info.plural, name),
            StoreError::Expired { requested, oldest } => {
                Status::expired(format!("too old resource version: {requested} ({oldest})"))
            }
            StoreError::TooLarge { size, limit } => Status::too_large(format!(
                "Request entity too large: the encoded object is {size} bytes; limit is {limit}"
            )),
            StoreError::Encode(e) => Status::internal(format!("encoding object: {e}")),
            StoreError::Backend(e) => Status::internal(e),
            StoreError::Unavailable(e) => Status::unavailable(e),
        }
    }

    /// The Store's committed state, for the API server's own loops (`custom::cleanup`).
    pub(crate) fn reader(&self) -> &store::Reader {
        &self.reader
    }

    fn target(&self, req: &Request) -> Result<Target, Status> {
        let info = self
            .custom
            .resolve(&req.group, req.version.as_deref(), &req.resource)
            .ok_or_else(|| {
                Status::failure(
                    404,
                    crate::api::status::reason::NOT_FOUND,
                    format!(
                        "the server could not find the requested resource ({}{})",
                        req.resource,
                        if req.group.is_empty() {
                            String::new()
                        } else {
                            format!(".{}", req.group)
                        }
                    ),
                )
            })?;
        let namespace = req.namespace.clone().filter(|n| !n.is_empty());
        Ok(Target { info, namespace })
    }

    fn name(req: &Request) -> Result<&str, Status> {
        match req.name.as_deref() {
            Some(n) if !n.is_empty() => Ok(n),
            _ => Err(Status::bad_request("a resource name is required")),
        }
    }

    fn namespace_of(t: &Target) -> Result<Option<&str>, Status> {
        if t.info.namespaced {
            match t.namespace.as_deref() {
                Some(ns) => Ok(Some(ns)),
                None => Err(Status::bad_request("a namespace is required")),
            }
        } else {
            Ok(None)
        }
    }

    /// The committed value of a key, read directly (no message to the Store).
    fn read(&self, key: &str) -> Option<KeyValue> {
        self.reader.get(key)
    }

    /// GET: the stored bytes, as they are.
    /// Synchronous: served from the Store's read view, so the ApiServer answers it inline.
    pub fn get(&self, req: &Request) -> Result<Bytes, Status> {
        let t = self.target(req)?;
        let name = Self::name(req)?;
        let ns = Self::namespace_of(&t)?;
        let kv = self
            .read(&t.info.key(ns, name))
            .ok_or_else(|| Status::not_found(t.info.group, t.info.plural, name))?;
        match req.subresource.as_deref() {
            None | Some("status") => Ok(kv.value),
            Some("scale") if t.info.has_scale => {
                let obj = decode(&kv.value)?;
                encode_value(&scale_of(t.info, &obj))
            }
            Some(other) => Err(Status::not_found(t.info.group, other, name)),
        }
    }

    /// Whether a GET must first catch up with etcd (no resourceVersion asked, on a store that
    /// follows etcd): then it is not answered inline but by [`Registry::get_consistent`].
    pub fn needs_catch_up(&self, req: &Request) -> bool {
        self.reader.follows_etcd()
            && req
                .list
                .resource_version
                .as_deref()
                .is_none_or(str::is_empty)
    }

    /// A GET that sees every write etcd acknowledged before it (whichever API server made
    /// it), read from the cache once it has caught up.
    pub async fn get_consistent(&self, req: &Request) -> Result<Bytes, Status> {
        self.catch_up().await?;
        self.get(req)
    }

    /// Waits until the cache has every write etcd has acknowledged (etcd mode).
    async fn catch_up(&self) -> Result<(), Status> {
        self.reader
            .catch_up(FRESH_WAIT)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))
    }

    /// LIST: one page, encoded as `<Kind>List` with the raw items spliced in.
    pub async fn list(&self, req: &Request, max_bytes: usize) -> Result<Bytes, Status> {
        let t = self.target(req)?;
        let opts = &req.list;
        check_list_options(opts, false)?;
        let filter = Filter::new(t.info, opts)?;
        let (mut start_after, mut at) = match opts.continue_token.as_deref() {
            Some(tok) if !tok.is_empty() => {
                let (rev, key) = decode_continue(tok)?;
                if !key.starts_with(&t.info.list_prefix(t.namespace.as_deref())) {
                    return Err(Status::bad_request(
                        "continue token does not match the request",
                    ));
                }
                (Some(key), Some(rev))
            }
            _ => (None, None),
        };
        if at.is_none() {
            // A revision is "not older than" unless the caller asks for exactly it: the
            // current state, once the Store has reached it.
            if let Some(rv) = meta::parse_revision(opts.resource_version.as_deref().unwrap_or(""))
                .map_err(Status::bad_request)?
            {
                self.fresh_as(rv).await?;
                if opts.resource_version_match.as_deref() == Some("Exact") {
                    at = Some(rv);
                }
            } else if opts.resource_version.as_deref().is_none_or(str::is_empty) {
                // The most recent state: everything etcd has acknowledged.
                self.catch_up().await?;
            }
        }
        let prefix = t.info.list_prefix(t.namespace.as_deref());
        let limit = opts.limit as usize;
        let mut items: Vec<Bytes> = Vec::new();
        let mut bytes = 0usize;
        let mut revision;
        let mut more;
        loop {
            let page = self
                .store
                .send(store::Range {
                    prefix: prefix.clone(),
                    start_after: start_after.clone(),
                    limit: if limit > 0 { limit - items.len() } else { 0 },
                    max_bytes: if max_bytes > 0 {
                        max_bytes.saturating_sub(bytes).max(1)
                    } else {
                        0
                    },
                    at,
                })
                .await
                .map_err(store_down)?
                .map_err(|e| match e {
                    StoreError::Expired { .. } => Status::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ),
                    e => Self::status(t.info, "", e),
                })?;
            revision = page.revision;
            at = Some(revision);
            more = page.more;
            let fetched = page.kvs.len();
            for kv in page.kvs {
                start_after = Some(kv.key.clone());
                if filter.matches_bytes(&kv.value)? {
                    bytes += kv.value.len();
                    items.push(kv.value);
                }
            }
            let full = (limit > 0 && items.len() >= limit)
                || (max_bytes > 0 && bytes >= max_bytes)
                || (max_bytes > 0 && fetched > 0 && more && items.len() == fetched && bytes > 0);
            if !more || full {
                break;
            }
        }
        let mut md = serde_json::Map::new();
        md.insert("resourceVersion".into(), json!(revision.to_string()));
        if more {
            if let Some(key) = &start_after {
                md.insert("continue".into(), json!(encode_continue(revision, key)));
            }
        }
        list_answer(t.info, &md, &items)
    }

    /// CREATE (and the binding subresource, which Kubernetes serves as a create).
    pub async fn create(&self, req: &Request) -> Result<Bytes, Status> {
        if let Some(m) = &req.field_manager {
            managed::check_manager(m, "CreateOptions")?;
        }
        self.create_with(req, &self.track(req, "")).await
    }

    /// A create, recording field ownership as `track` says (an apply has recorded it).
    async fn create_with(&self, req: &Request, track: &Track) -> Result<Bytes, Status> {
        let t = self.target(req)?;
        if req.subresource.as_deref() == Some("binding") && t.info.plural == "pods" {
            return self.bind(req, &t).await;
        }
        if req.subresource.as_deref() == Some("eviction") && t.info.plural == "pods" {
            return self.evict(req).await;
        }
        if self.custom.terminating(t.info) {
            return Err(Status::method_not_allowed(
                "create not allowed while custom resource definition is terminating",
            ));
        }
        if let Some(sub) = &req.subresource {
            return Err(Status::method_not_allowed(format!(
                "create is not supported on {}/{sub}",
                t.info.plural
            )));
        }
        let mut obj = req
            .body
            .clone()
            .ok_or_else(|| Status::bad_request("a body is required"))?;
        if !obj.is_object() {
            return Err(Status::bad_request("the body must be a JSON object"));
        }
        check_type(t.info, &mut obj)?;
        // A create that names its object (over NATS) must name the one in its body: whoever
        // authorized the request looked at the name it gave.
        if let Some(asked) = req.name.as_deref().filter(|n| !n.is_empty()) {
            let given = meta::name(&obj);
            if given != asked {
                return Err(Status::bad_request(format!(
                    "the name of the object ({given}) does not match the name on the URL ({asked})"
                )));
            }
        }
        let ns = self.check_namespace(&t, &mut obj).await?;
        // generateName
        let md = meta::metadata_mut(&mut obj);
        let has_name = md
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !has_name {
            match md.get("generateName").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => {
                    let name = format!("{g}{}", random_suffix());
                    md.insert("name".into(), json!(name));
                }
                _ => {
                    return Err(invalid(
                        t.info,
                        "",
                        vec![FieldError {
                            reason: "FieldValueRequired",
                            field: "metadata.name".into(),
                            message: "Required value: name or generateName is required".into(),
                        }],
                    ))
                }
            }
        }
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            md.remove(k);
        }
        md.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        md.insert("creationTimestamp".into(), json!(meta::now()));
        let strategy = kinds::of(t.info);
        if strategy.tracks_generation() {
            md.insert("generation".into(), json!(1));
        }
        strategy.normalise(&mut obj)?;
        strategy.defaults(&mut obj);
        strategy.admit_create(&mut obj, &self.admission)?;
        if self.admission.service_account && t.info.group.is_empty() && t.info.plural == "pods" {
            let accounts = resource::lookup("", "serviceaccounts").expect("served");
            let ns = ns.clone().unwrap_or_default();
            let lookup = |name: &str| {
                self.read(&accounts.key(Some(&ns), name))
                    .and_then(|kv| decode(&kv.value).ok())
            };
            super::sa_admission::admit(&mut obj, lookup, random_suffix).await?;
        }
        strategy.initial_status(&mut obj);
        dedup_owner_references(&mut obj);
        let name = meta::name(&obj).to_string();
        match track {
            Track::Update {
                manager,
                subresource,
            } => {
                meta::metadata_mut(&mut obj).remove("managedFields");
                managed::record_update(None, &mut obj, &writer(t.info, manager, subresource));
            }
            Track::Applied => check_managed_fields(t.info, &name, &obj)?,
            Track::Off => {}
        }
        let errs = validate_without_managed_fields(t.info, strategy, &mut obj, None);
        if !errs.is_empty() {
            return Err(invalid(t.info, &name, errs));
        }
        if let Some(guard) = &req.guard {
            guard.check(t.info, &obj, None)?;
        }
        to_storage(t.info, &mut obj);
        let key = t.info.key(ns.as_deref(), &name);
        if req.dry_run {
            // What the write would answer: a name in use is 409 here too.
            if self.read(&key).is_some() {
                return Err(Self::status(t.info, &name, StoreError::AlreadyExists));
            }
            return encode_value(&obj);
        }
        let kv = self
            .write(store::Create {
                key,
                value: encoder(obj),
                trace: None,
            })
            .await
            .map_err(store_down)?
            .map_err(|e| Self::status(t.info, &name, e))?;
        Ok(kv.value)
    }

    /// Namespaced creates need the namespace to exist and not be terminating.
    async fn check_namespace(&self, t: &Target, obj: &mut Value) -> Result<Option<String>, Status> {
        if !t.info.namespaced {
            meta::metadata_mut(obj).remove("namespace");
            return Ok(None);
        }
        let body_ns = meta::namespace(obj).to_string();
        let ns = match (t.namespace.as_deref(), body_ns.as_str()) {
            (Some(r), b) if !b.is_empty() && r != b => {
                return Err(Status::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            (Some(r), _) => r.to_string(),
            (None, b) if !b.is_empty() => b.to_string(),
            (None, _) => return Err(Status::bad_request("a namespace is required")),
        };
        meta::metadata_mut(obj).insert("namespace".into(), json!(ns));
        let nsinfo = resource::lookup("", "namespaces").expect("namespaces are served");
        match self.read(&nsinfo.key(None, &ns)) {
            None => Err(Status::not_found("", "namespaces", &ns)),
            Some(kv) => {
                let nsobj = decode(&kv.value)?;
                if nsobj.pointer("/metadata/deletionTimestamp").is_some() {
                    Err(Status::forbidden(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        t.info.plural,
                        meta::name(obj)
                    )))
                } else {
                    Ok(Some(ns))
                }
            }
        }
    }

    /// Binds a pod to a node: sets spec.nodeName once, and the PodScheduled condition.
    async fn bind(&self, req: &Request, t: &Target) -> Result<Bytes, Status> {
        let name = Self::name(req)?.to_string();
        let body = req.body.clone().unwrap_or(Value::Null);
        let node = body
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                invalid(
                    t.info,
                    &name,
                    vec![FieldError {
                        reason: "FieldValueRequired",
                        field: "target.name".into(),
                        message: "Required value".into(),
                    }],
                )
            })?
            .to_string();
        let info = t.info;
        let pod = name.clone();
        self.modify(
            t,
            &pod,
            None,
            Opts::of(req),
            &self.track(req, "status"),
            move |old| {
                let mut obj = old.clone();
                let obj = &mut obj;
                if obj.pointer("/metadata/deletionTimestamp").is_some() {
                    return Err(Status::conflict(
                        info.group,
                        info.plural,
                        &name,
                        "pod is being deleted, cannot be assigned to a host",
                    ));
                }
                match obj.pointer("/spec/nodeName").and_then(Value::as_str) {
                    Some(n) if !n.is_empty() => {
                        return Err(Status::conflict(
                            info.group,
                            info.plural,
                            &name,
                            &format!("pod {name} is already assigned to node \"{n}\""),
                        ))
                    }
                    _ => {}
                }
                obj["spec"]["nodeName"] = json!(node);
                set_condition(obj, "PodScheduled", "True", None);
                Ok(obj.take())
            },
        )
        .await?;
        let status = Status {
            status: "Success".into(),
            code: 201,
            ..Status::success()
        };
        encode_value(&serde_json::to_value(status).map_err(|e| Status::internal(e.to_string()))?)
    }

    /// Eviction (policy/v1): a delete that disruption budgets could refuse with 429. Skiff
    /// serves no PodDisruptionBudgets yet, so every eviction is allowed.
    async fn evict(&self, req: &Request) -> Result<Bytes, Status> {
        let body = req.body.clone().unwrap_or(Value::Null);
        let kind = body
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("Eviction");
        if kind != "Eviction" {
            return Err(Status::bad_request(format!(
                "expected an Eviction, got {kind}"
            )));
        }
        let options: DeleteOptions = match body.get("deleteOptions") {
            Some(o) if !o.is_null() => serde_json::from_value(o.clone())
                .map_err(|e| Status::bad_request(format!("invalid deleteOptions: {e}")))?,
            _ => DeleteOptions::default(),
        };
        let delete = Request {
            subresource: None,
            body: None,
            delete: Some(options),
            ..req.clone()
        };
        self.delete(&delete).await?;
        let status = Status {
            status: "Success".into(),
            code: 201,
            ..Status::success()
        };
        encode_value(&serde_json::to_value(status).map_err(|e| Status::internal(e.to_string()))?)
    }

    /// UPDATE (PUT): replace, honouring resourceVersion, strategies and subresources.
    pub async fn update(&self, req: &Request) -> Result<Bytes, Status> {
        if let Some(m) = &req.field_manager {
            managed::check_manager(m, "UpdateOptions")?;
        }
        let t = self.target(req)?;
        let name = Self::name(req)?.to_string();
        let mut body = req
            .body
            .clone()
            .ok_or_else(|| Status::bad_request("a body is required"))?;
        if !body.is_object() {
            return Err(Status::bad_request("the body must be a JSON object"));
        }
        let sub = req.subresource.clone();
        if sub.as_deref() == Some("scale") {
            return self
                .update_scale(&t, &name, body, None, Opts::of(req), &self.track(req, ""))
                .await;
        }
        check_type(t.info, &mut body)?;
        let body_name = meta::name(&body);
        if !body_name.is_empty() && body_name != name {
            return Err(Status::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let expect =
            meta::parse_revision(meta::resource_version(&body)).map_err(Status::bad_request)?;
        let info = t.info;
        let uid = meta::uid(&body).to_string();
        let track = self.track(req, req.subresource.as_deref().unwrap_or(""));
        self.modify(
            &t,
            &name,
            expect,
            Opts::of(req),
            &track,
            move |obj: &Value| {
                // The body's uid is a precondition, checked against the stored object (kube's
                // storage preconditions): 409 before anything else is looked at.
                if !uid.is_empty() && uid != meta::uid(obj) {
                    return Err(Status::conflict(
                        info.group,
                        info.plural,
                        &name_of(obj),
                        &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(obj)
                    ),
                    ));
                }
                let mut new = body.clone();
                kinds::of(info).prepare_for_update(info, sub.as_deref(), obj, &mut new)?;
                Ok(new)
            },
        )
        .await
        .map(|(bytes, _)| bytes)
    }

    /// PATCH: apply the patch to the current object, then update; retried on conflict unless
    /// the patch pins a resourceVersion.
    pub async fn patch(&self, req: &Request) -> Result<Bytes, Status> {
        let t = self.target(req)?;
        let name = Self::name(req)?.to_string();
        let patch = req
            .body
            .clone()
            .ok_or_else(|| Status::bad_request("a patch body is required"))?;
        let ptype = req.patch_type.unwrap_or(PatchType::Merge);
        check_patch_options(req, ptype)?;
        if ptype == PatchType::Strategic
            && req.subresource.as_deref() != Some("scale")
            && !kinds::of(t.info).takes_strategic_merge()
        {
            return Err(Status::failure(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types \
                 include: application/json-patch+json, application/merge-patch+json, \
                 application/apply-patch+yaml"
                    .to_string(),
            ));
        }
        if ptype == PatchType::Apply && req.subresource.as_deref() != Some("scale") {
            return self.apply(req, &t, &name, patch).await;
        }
        if ptype == PatchType::Apply && req.subresource.as_deref() == Some("scale") {
            return self.apply_scale(req, &t, &name, patch).await;
        }
        if req.subresource.as_deref() == Some("scale") {
            return self
                .update_scale(
                    &t,
                    &name,
                    Value::Null,
                    Some((ptype, patch)),
                    Opts::of(req),
                    &self.track(req, ""),
                )
                .await;
        }
        let expect = patch
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(meta::parse_revision)
            .transpose()
            .map_err(Status::bad_request)?
            .flatten();
        let info = t.info;
        let sub = req.subresource.clone();
        let track = self.track(req, sub.as_deref().unwrap_or(""));
        self.modify(&t, &name, expect, Opts::of(req), &track, move |old| {
            let mut new = old.clone();
            super::patch::apply(kinds::of(info).patch_root(), &mut new, ptype, &patch)?;
            kinds::of(info).prepare_for_update(info, sub.as_deref(), old, &mut new)?;
            Ok(new)
        })
        .await
        .map(|(b, _)| b)
    }

    /// Server-side apply: the configuration merged into the object by its owners' fields
    /// (`apiserver::managed`), or a new object from it; 409 on conflicts unless forced. Runs
    /// through the same update (or create) path as every write: defaults, validation,
    /// preconditions and dry-run.
    async fn apply(
        &self,
        req: &Request,
        t: &Target,
        name: &str,
        config: Value,
    ) -> Result<Bytes, Status> {
        let info = t.info;
        if !config.is_object() {
            return Err(Status::bad_request(
                "an apply configuration must be an object",
            ));
        }
        let (av, kind) = (
            config
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or(""),
            config.get("kind").and_then(Value::as_str).unwrap_or(""),
        );
        if av.is_empty() || kind.is_empty() {
            return Err(Status::bad_request(format!(
                "invalid object type: {}, Kind={kind}",
                if av.is_empty() { "/" } else { av }
            )));
        }
        check_type(info, &mut config.clone())?;
        if config
            .pointer("/metadata/managedFields")
            .is_some_and(|m| !m.is_null())
        {
            return Err(Status::bad_request("metadata.managedFields must be nil"));
        }
        let given = meta::name(&config);
        if !given.is_empty() && given != name {
            return Err(Status::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
        let manager = req.field_manager.clone().unwrap_or_default();
        let sub = req.subresource.clone().unwrap_or_default();
        let force = req.force == Some(true);
        let expect = pinned_revision(&config)?;
        let key = info.key(Self::namespace_of(t)?, name);
        for _ in 0..2 {
            if self.read(&key).is_none() && sub.is_empty() {
                // Apply creates what is not there.
                let mut obj = managed::apply(None, &config, &writer(info, &manager, ""), force)?;
                let md = meta::metadata_mut(&mut obj);
                md.insert("name".into(), json!(name));
                let mut create = req.clone();
                create.subresource = None;
                create.body = Some(obj);
                match self.create_with(&create, &Track::Applied).await {
                    Err(s) if s.code == 409 && s.reason == "AlreadyExists" => continue,
                    other => return other,
                }
            }
            let config = config.clone();
            let (manager, sub2) = (manager.clone(), sub.clone());
            return self
                .modify(
                    t,
                    name,
                    expect,
                    Opts::of(req),
                    &Track::Applied,
                    move |old| {
                        let w = writer(info, &manager, &sub2);
                        let mut new = managed::apply(Some(old), &config, &w, force)?;
                        let subresource = (!sub2.is_empty()).then_some(sub2.as_str());
                        kinds::of(info).prepare_for_update(info, subresource, old, &mut new)?;
                        Ok(new)
                    },
                )
                .await
                .map(|(b, _)| b);
        }
        Err(Status::conflict(
            info.group,
            info.plural,
            name,
            "the object was created and deleted while it was applied; try again",
        ))
    }

    /// Scale subresource writes: `spec.replicas` from a Scale (given, or patched from the
    /// current one).
    async fn update_scale(
        &self,
        t: &Target,
        name: &str,
        body: Value,
        patch: Option<(PatchType, Value)>,
        opts: Opts<'_>,
        track: &Track,
    ) -> Result<Bytes, Status> {
        if !t.info.has_scale {
            return Err(Status::not_found(t.info.group, "scale", name));
        }
        let info = t.info;
        // The Scale's resourceVersion (given, or pinned by the patch) is the object's: a stale
        // one is 409, as on the object itself.
        let pinned = match &patch {
            None => Some(meta::resource_version(&body).to_string()),
            Some((_, p)) => p
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from),
        };
        let expect =
            meta::parse_revision(pinned.as_deref().unwrap_or("")).map_err(Status::bad_request)?;
        let (bytes, _) = self
            .modify(t, name, expect, opts, track, move |old| {
                let mut obj = old.clone();
                let obj = &mut obj;
                let mut scale = match &patch {
                    None => body.clone(),
                    Some((ptype, p)) => {
                        let mut s = scale_of(info, obj);
                        super::patch::apply(super::patch::RootKind::Other, &mut s, *ptype, p)?;
                        s
                    }
                };
                let replicas = scale
                    .pointer_mut("/spec/replicas")
                    .map(Value::take)
                    .unwrap_or(json!(0));
                if !replicas
                    .as_i64()
                    .is_some_and(|r| (0..=i32::MAX as i64).contains(&r))
                {
                    return Err(invalid(
                        info,
                        meta::name(obj),
                        vec![FieldError {
                            reason: "FieldValueInvalid",
                            field: "spec.replicas".into(),
                            message: format!(
                                "Invalid value: {replicas}: must be greater than or equal to 0"
                            ),
                        }],
                    ));
                }
                set_path(obj, &ScalePaths::of(info).spec, replicas);
                Ok(obj.take())
            })
            .await?;
        // Of what was stored: the answer carries the new resourceVersion.
        encode_value(&scale_of(info, &decode(&bytes)?))
    }

    /// Server-side apply of a Scale, as kube's scale subresource takes it: its `spec.replicas`
    /// is applied to the object's replica path by the field manager `(manager, "scale")`, so
    /// replicas another manager owns conflict (409) unless forced; nothing else changes. The
    /// answer is the new Scale.
    async fn apply_scale(
        &self,
        req: &Request,
        t: &Target,
        name: &str,
        config: Value,
    ) -> Result<Bytes, Status> {
        let info = t.info;
        if !info.has_scale {
            return Err(Status::not_found(info.group, "scale", name));
        }
        let text = |k: &str| config.get(k).and_then(Value::as_str).unwrap_or("");
        let (av, kind) = (text("apiVersion"), text("kind"));
        if av != "autoscaling/v1" || kind != "Scale" {
            return Err(Status::bad_request(format!(
                "the API version in the data ({av}) and kind ({kind}) do not match the \
                 resource scale (autoscaling/v1, Scale)"
            )));
        }
        let given = meta::name(&config);
        if !given.is_empty() && given != name {
            return Err(Status::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
        let spec_path = ScalePaths::of(info).spec;
        let mut parent = json!({"apiVersion": info.api_version(), "kind": info.kind,
            "metadata": {"name": name}});
        if let Some(r) = config.pointer("/spec/replicas") {
            if !r
                .as_i64()
                .is_some_and(|r| (0..=i32::MAX as i64).contains(&r))
            {
                return Err(invalid(
                    info,
                    name,
                    vec![FieldError {
                        reason: "FieldValueInvalid",
                        field: "spec.replicas".into(),
                        message: format!("Invalid value: {r}: must be greater than or equal to 0"),
                    }],
                ));
            }
            set_path(&mut parent, &spec_path, r.clone());
        }
        let expect = pinned_revision(&config)?;
        let manager = req.field_manager.clone().unwrap_or_default();
        let force = req.force == Some(true);
        let (bytes, _) = self
            .modify(
                t,
                name,
                expect,
                Opts::of(req),
                &Track::Applied,
                move |old| {
                    let applied = managed::apply(
                        Some(old),
                        &parent,
                        &writer(info, &manager, "scale"),
                        force,
                    )?;
                    let mut new = old.clone();
                    if let Some(r) = at_path(&applied, &spec_path) {
                        set_path(&mut new, &spec_path, r.clone());
                    }
                    let fields = applied
                        .pointer("/metadata/managedFields")
                        .cloned()
                        .unwrap_or(Value::Null);
                    meta::metadata_mut(&mut new).insert("managedFields".into(), fields);
                    Ok(new)
                },
            )
            .await?;
        encode_value(&scale_of(info, &decode(&bytes)?))
    }

    /// Reads, changes and writes one object with compare-and-swap, retrying conflicts when the
    /// caller did not pin a revision. Applies the update strategy (immutable metadata, spec vs
    /// status, generation) and finalizer completion. Returns the stored bytes and object.
    async fn modify<F>(
        &self,
        t: &Target,
        name: &str,
        expect: Option<Revision>,
        opts: Opts<'_>,
        track: &Track,
        change: F,
    ) -> Result<(Bytes, Value), Status>
    where
        F: Fn(&Value) -> Result<Value, Status>,
    {
        let ns = Self::namespace_of(t)?;
        let key = t.info.key(ns, name);
        let info = t.info;
        for _ in 0..MAX_RETRIES {
            let kv = self
                .read(&key)
                .ok_or_else(|| Status::not_found(info.group, info.plural, name))?;
            if let Some(rv) = expect {
                if rv != kv.mod_revision {
                    return Err(Status::stale(info.group, info.plural, name));
                }
            }
            let mut old = decode(&kv.value)?;
            to_served(info, &mut old);
            let mut new = change(&old)?;
            if !new.is_object() {
                return Err(Status::bad_request("the result must be a JSON object"));
            }
            check_type(info, &mut new)?;
            same_namespace(info, ns, &mut new)?;
            let strategy = kinds::of(info);
            strategy.normalise(&mut new)?;
            strategy.defaults(&mut new);
            keep_system_metadata(&old, &mut new);
            dedup_owner_references(&mut new);
            check_managed_fields(info, name, &new)?;
            if let Track::Update {
                manager,
                subresource,
            } = track
            {
                managed::record_update(Some(&old), &mut new, &writer(info, manager, subresource));
            }
            let errs = validate_without_managed_fields(info, strategy, &mut new, Some(&mut old));
            if !errs.is_empty() {
                return Err(invalid(info, name, errs));
            }
            if let Some(guard) = opts.guard {
                guard.check(info, &new, Some(&old))?;
            }
            if new == old {
                return Ok((kv.value, new));
            }
            to_storage(info, &mut new);
            if opts.dry_run {
                // What the write would store, not what is stored: `kubectl diff` compares it.
                return Ok((encode_value(&new)?, new));
            }
            // A namespace also waits for its spec.finalizers (the namespace controller's).
            let ns_pending = strategy.delete_pending(&new);
            let finished = new.pointer("/metadata/deletionTimestamp").is_some()
                && finalizers_empty(&new)
                && !ns_pending
                && new
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    == 0;
            let result = if finished {
                self.remove(info, &key, kv.mod_revision, new.clone())
                    .await?
            } else {
                self.write(store::Update {
                    key: key.clone(),
                    expect: kv.mod_revision,
                    value: encoder(new.clone()),
                    trace: None,
                })
                .await
                .map_err(store_down)?
            };
            match result {
                Ok(kv) => return Ok((kv.value, new)),
                Err(StoreError::Conflict { current }) if expect.is_none() => {
                    self.reader.wait_for(current, CONFLICT_WAIT).await;
                    continue;
                }
                Err(StoreError::NotFound) if expect.is_none() => continue,
                Err(e) => return Err(Self::status(info, name, e)),
            }
        }
        Err(Status::conflict(
            info.group,
            info.plural,
            name,
            "too many concurrent changes; retry",
        ))
    }

    /// DELETECOLLECTION: every object the list options select, each deleted as by DELETE
    /// with the same options (dry run, preconditions, propagation, grace); one already gone
    /// is skipped. Answers the `<Kind>List` of what was deleted (or now waits), as kube does.
    pub async fn delete_collection(&self, req: &Request) -> Result<Bytes, Status> {
        let t = self.target(req)?;
        let ns = Self::namespace_of(&t)?;
        check_list_options(&req.list, false)?;
        let opts = req.delete.clone().unwrap_or_default();
        // Refused options act on nothing: checked before the first delete.
        opts.validate()?;
        let filter = Filter::new(t.info, &req.list)?;
        let page = self
            .store
            .send(store::Range {
                prefix: t.info.list_prefix(ns),
                start_after: None,
                limit: 0,
                max_bytes: 0,
                at: None,
            })
            .await
            .map_err(store_down)?
            .map_err(|e| Self::status(t.info, "", e))?;
        let mut deleted = Vec::new();
        for kv in page.kvs {
            if !filter.matches_bytes(&kv.value)? {
                continue;
            }
            let mut one = req.clone();
            one.name = Some(meta::name(&decode(&kv.value)?).to_string());
            one.list = Default::default();
            match self.delete(&one).await {
                Ok(bytes) => deleted.push(bytes),
                Err(s) if s.code == 404 => {}
                Err(s) => return Err(s),
            }
        }
        let mut md = serde_json::Map::new();
        md.insert(
            "resourceVersion".into(),
            json!(self.reader.revision().to_string()),
        );
        list_answer(t.info, &md, &deleted)
    }

    /// DELETE: graceful for scheduled pods, deferred while finalizers remain, immediate
    /// otherwise. Answers the object as it was deleted (or as it now waits).
    pub async fn delete(&self, req: &Request) -> Result<Bytes, Status> {
        let t = self.target(req)?;
        let name = Self::name(req)?.to_string();
        let ns = Self::namespace_of(&t)?;
        let key = t.info.key(ns, &name);
        let info = t.info;
        // The namespaces the cluster cannot do without, as Kubernetes' NamespaceLifecycle
        // admission keeps them.
        let strategy = kinds::of(info);
        strategy.admit_delete(info, &name)?;
        let opts = req.delete.clone().unwrap_or_default();
        // `dryRun` may come in the query (the request's flag) or in the DeleteOptions body
        // (kubectl's `--dry-run=server`); either way nothing is deleted.
        let dry_run = opts.validate()? || req.dry_run;
        for _ in 0..MAX_RETRIES {
            let kv = self
                .read(&key)
                .ok_or_else(|| Status::not_found(info.group, info.plural, &name))?;
            let mut obj = decode(&kv.value)?;
            check_preconditions(info, &name, &opts, &obj)?;
            let grace = strategy.grace_period(&obj, &opts);
            let orphan = opts.propagation_policy.as_deref() == Some("Orphan")
                || opts.orphan_dependents == Some(true);
            let foreground = opts.propagation_policy.as_deref() == Some("Foreground");
            let already = obj.pointer("/metadata/deletionTimestamp").is_some();
            // Finalizers the propagation policy asks the garbage collector to honour.
            let mut added = false;
            if !already && (orphan || foreground) && strategy.owns_dependents() {
                let f = if orphan {
                    "orphan"
                } else {
                    "foregroundDeletion"
                };
                let list = meta::metadata_mut(&mut obj)
                    .entry("finalizers")
                    .or_insert_with(|| json!([]));
                if let Some(a) = list.as_array_mut() {
                    if !a.iter().any(|x| x == f) {
                        a.push(json!(f));
                        added = true;
                    }
                }
            }
            // Work the API server itself does before the object goes (a CRD's objects).
            if let (false, Some(f)) = (already, strategy.delete_finalizer()) {
                let list = meta::metadata_mut(&mut obj)
                    .entry("finalizers")
                    .or_insert_with(|| json!([]));
                if let Some(a) = list.as_array_mut() {
                    if !a.iter().any(|x| x == f) {
                        a.push(json!(f));
                        added = true;
                    }
                }
            }
            let ns_finalizers = strategy.delete_pending(&obj);
            let wait = !finalizers_empty(&obj) || ns_finalizers || grace > 0;
            if dry_run {
                return Ok(kv.value);
            }
            let result = if wait {
                let current_grace = obj
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64);
                if already && !added && current_grace.is_none_or(|g| g <= grace) {
                    // Nothing to change: deletion is already under way.
                    return Ok(kv.value);
                }
                let md = meta::metadata_mut(&mut obj);
                if !already {
                    md.insert("deletionTimestamp".into(), json!(meta::now_plus(grace)));
                }
                md.insert("deletionGracePeriodSeconds".into(), json!(grace));
                strategy.on_deleting(&mut obj);
                self.write(store::Update {
                    key: key.clone(),
                    expect: kv.mod_revision,
                    value: encoder(obj),
                    trace: None,
                })
                .await
                .map_err(store_down)?
            } else {
                self.remove(info, &key, kv.mod_revision, obj).await?
            };
            match result {
                Ok(kv) => return Ok(kv.value),
                Err(StoreError::Conflict { current }) => {
                    self.reader.wait_for(current, CONFLICT_WAIT).await;
                    continue;
                }
                Err(e) => return Err(Self::status(info, &name, e)),
            }
        }
        Err(Status::conflict(
            info.group,
            info.plural,
            &name,
            "too many concurrent changes; retry",
        ))
    }

    /// Removes an object whose deletion is complete (a plain delete, or the last finalizer
    /// gone). A CRD takes its objects with it first, as kube's customresourcecleanup
    /// finalizer does, and again after, for what was created while the first sweep ran.
    async fn remove(
        &self,
        info: &ResourceInfo,
        key: &str,
        expect: Revision,
        tombstone: Value,
    ) -> Result<Result<KeyValue, StoreError>, Status> {
        let objects = super::custom::objects_prefix(info, &tombstone);
        if let Some(prefix) = &objects {
            self.delete_all(prefix).await?;
        }
        let result = self
            .write(store::Delete {
                key: key.to_string(),
                expect,
                tombstone: encoder(tombstone),
                trace: None,
            })
            .await
            .map_err(store_down)?;
        if let (Some(prefix), Ok(_)) = (&objects, &result) {
            self.delete_all(prefix).await?;
        }
        Ok(result)
    }

    /// Deletes every object stored under `prefix` (a custom resource's, when its CRD goes),
    /// each with its watch event. Finalizers are not waited for.
    async fn delete_all(&self, prefix: &str) -> Result<(), Status> {
        for _ in 0..MAX_RETRIES {
            let objects = self.reader.values(prefix);
            if objects.is_empty() {
                return Ok(());
            }
            for kv in objects {
                let tombstone = decode(&kv.value)?;
                match self
                    .write(store::Delete {
                        key: kv.key,
                        expect: kv.mod_revision,
                        tombstone: encoder(tombstone),
                        trace: None,
                    })
                    .await
                    .map_err(store_down)?
                {
                    Ok(_) | Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound) => {}
                    Err(e) => return Err(Status::internal(e.to_string())),
                }
            }
        }
        Err(Status::internal(format!(
            "objects under {prefix} kept being created while they were deleted"
        )))
    }

    /// Starts a store watch for a resource request; the caller turns it into a stream.
    pub(super) async fn watch(
        &self,
        req: &Request,
    ) -> Result<(store::WatchStart, Filter, &'static ResourceInfo), Status> {
        let t = self.target(req)?;
        check_list_options(&req.list, true)?;
        let filter = Filter::new(t.info, &req.list)?;
        let rv = meta::parse_revision(req.list.resource_version.as_deref().unwrap_or(""))
            .map_err(Status::bad_request)?;
        if req
            .list
            .resource_version
            .as_deref()
            .is_none_or(str::is_empty)
        {
            // "Most recent" is what etcd has acknowledged, whichever API server wrote it.
            self.catch_up().await?;
        }
        let after = match req.list.send_initial_events {
            // Watch list: the current objects first (at least as fresh as the revision).
            Some(true) => {
                if let Some(rv) = rv {
                    self.fresh_as(rv).await?;
                }
                None
            }
            // No initial objects: from the revision given, or from now.
            Some(false) => Some(rv.unwrap_or_else(|| self.reader.revision())),
            None => rv,
        };
        let start = self
            .store
            .send(store::Watch {
                prefix: t.info.list_prefix(t.namespace.as_deref()),
                after,
                trigger: filter.trigger(),
            })
            .await
            .map_err(store_down)?
            .map_err(|e| Self::status(t.info, "", e))?;
        Ok((start, filter, t.info))
    }

    /// Waits (up to 3 s, as kube's watch cache) for the Store to reach `rv`; a revision it
    /// has not reached by then is "too large" (504, retry after 1 s).
    async fn fresh_as(&self, rv: Revision) -> Result<(), Status> {
        if self.reader.revision() < rv {
            self.reader.wait_for(rv, FRESH_WAIT).await;
        }
        let current = self.reader.revision();
        if current < rv {
            let mut status = Status::timeout(format!(
                "Too large resource version: {rv}, current: {current}"
            ));
            status.details = Some(crate::api::status::StatusDetails {
                causes: vec![crate::api::status::StatusCause {
                    reason: "ResourceVersionTooLarge".into(),
                    message: "Too large resource version".into(),
                    field: String::new(),
                }],
                retry_after_seconds: Some(1),
                ..Default::default()
            });
            return Err(status);
        }
        Ok(())
    }

    /// Seeds the namespaces every cluster has.
    pub(super) async fn seed(&self) -> Result<(), Status> {
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let req = Request {
                resource: "namespaces".into(),
                body: Some(
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                ),
                ..Default::default()
            };
            match self.create(&req).await {
                Ok(_) => {}
                Err(s) if s.is(crate::api::status::reason::ALREADY_EXISTS) => {}
                Err(s) => return Err(s),
            }
        }
        Ok(())
    }

    /// The Store's counters.
    pub(super) async fn stats(&self) -> Result<store::StoreStats, Status> {
        self.store.send(store::Stats).await.map_err(store_down)
    }

    /// Waits briefly for the store to answer (used at start-up).
    pub(super) async fn ping(&self) -> Result<Revision, Status> {
        tokio::time::timeout(
            Duration::from_secs(5),
            self.store.send(store::CurrentRevision),
        )
        .await
        .map_err(|_| Status::unavailable("store did not answer"))?
        .map_err(store_down)
    }
}

/// Label and field selectors of a list or watch.
pub(super) struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn new(info: &ResourceInfo, opts: &ListOptions) -> Result<Self, Status> {
        let labels = LabelSelector::parse(opts.label_selector.as_deref().unwrap_or(""))
            .map_err(|e| Status::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(opts.field_selector.as_deref().unwrap_or(""))
            .map_err(|e| Status::bad_request(e.to_string()))?;
        fields
            .check_supported(&info.field_labels())
            .map_err(|e| Status::bad_request(format!("{e} for {}", info.kind)))?;
        Ok(Filter { labels, fields })
    }

    /// The exact `spec.nodeName` or `metadata.name` this filter requires, which the Store
    /// finds the watch's events by (node name first: a kubelet's watch is the common case).
    pub(super) fn trigger(&self) -> Option<store::Trigger> {
        let exact = |field: &str| {
            self.fields
                .requirements()
                .iter()
                .find(|r| r.field() == field && r.operator() == FieldOperator::Equals)
                .map(|r| r.value().to_string())
        };
        exact("spec.nodeName")
            .map(store::Trigger::NodeName)
            .or_else(|| exact("metadata.name").map(store::Trigger::Name))
    }

    /// True when the filter selects everything.
    pub(super) fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub(super) fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches(obj)
    }

    pub(super) fn matches_bytes(&self, bytes: &[u8]) -> Result<bool, Status> {
        if self.is_empty() {
            return Ok(true);
        }
        Ok(self.matches(&decode(bytes)?))
    }
}

/// Decodes a stored object.
pub(super) fn decode(bytes: &[u8]) -> Result<Value, Status> {
    codec::msgpack_to_value(bytes).map_err(|e| Status::internal(format!("stored object: {e}")))
}

fn encode_value(v: &Value) -> Result<Bytes, Status> {
    codec::value_to_msgpack(v)
        .map(Bytes::from)
        .map_err(|e| Status::internal(e.to_string()))
}

/// The encoder the Store calls with the revision it assigns.
fn encoder(mut obj: Value) -> store::Encoder {
    Box::new(move |rev| {
        meta::metadata_mut(&mut obj).insert("resourceVersion".into(), json!(rev.to_string()));
        codec::value_to_msgpack(&obj).map_err(|e| e.to_string())
    })
}

fn invalid(info: &ResourceInfo, name: &str, errs: Vec<FieldError>) -> Status {
    Status::invalid(
        info.group,
        info.kind,
        name,
        errs.into_iter()
            .map(|e| StatusCause {
                reason: e.reason.into(),
                message: e.message,
                field: e.field,
            })
            .collect(),
    )
}

/// Fills apiVersion/kind and refuses a body of another kind.
fn check_type(info: &ResourceInfo, obj: &mut Value) -> Result<(), Status> {
    let api_version = info.api_version();
    let map = obj
        .as_object_mut()
        .ok_or_else(|| Status::bad_request("the body must be a JSON object"))?;
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
    let av = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if (!kind.is_empty() && kind != info.kind) || (!av.is_empty() && av != api_version) {
        return Err(Status::bad_request(format!(
            "the API version in the data ({av}) and kind ({kind}) do not match the resource {} ({api_version}, {})",
            info.plural, info.kind
        )));
    }
    map.insert("kind".into(), json!(info.kind));
    map.insert("apiVersion".into(), json!(api_version));
    Ok(())
}

/// The resourceVersion an apply configuration pins, if any (a stale one is then 409).
fn pinned_revision(config: &Value) -> Result<Option<Revision>, Status> {
    Ok(config
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(meta::parse_revision)
        .transpose()
        .map_err(Status::bad_request)?
        .flatten())
}

/// A custom object as stored: in its CRD's storage version (conversion `None` changes only
/// apiVersion). Built-in kinds are served in one version and stay as they are.
fn to_storage(info: &ResourceInfo, obj: &mut Value) {
    if let Some(c) = crate::apiserver::custom::strategy::of(info) {
        if info.api_version() != c.storage {
            if let Some(m) = obj.as_object_mut() {
                m.insert("apiVersion".into(), json!(c.storage));
            }
        }
    }
}

/// A stored custom object as the version `info` serves shows it (see [`to_storage`]).
pub(crate) fn to_served(info: &ResourceInfo, obj: &mut Value) {
    if crate::apiserver::custom::strategy::of(info).is_some()
        && obj.get("kind").and_then(Value::as_str) == Some(info.kind)
    {
        if let Some(m) = obj.as_object_mut() {
            m.insert("apiVersion".into(), json!(info.api_version()));
        }
    }
}

fn finalizers_empty(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty())
}

fn check_preconditions(
    info: &ResourceInfo,
    name: &str,
    opts: &DeleteOptions,
    obj: &Value,
) -> Result<(), Status> {
    if let Some(p) = &opts.preconditions {
        if let Some(uid) = p.uid.as_deref().filter(|u| !u.is_empty()) {
            if uid != meta::uid(obj) {
                return Err(Status::conflict(
                    info.group,
                    info.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(obj)
                    ),
                ));
            }
        }
        if let Some(rv) = p.resource_version.as_deref().filter(|u| !u.is_empty()) {
            if rv != meta::resource_version(obj) {
                return Err(Status::conflict(info.group, info.plural, name, &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta::resource_version(obj)
                )));
            }
        }
    }
    Ok(())
}

/// What no write may change in metadata (kube's `rest.BeforeUpdate`), and generation
/// bookkeeping.
fn keep_system_metadata(old: &Value, new: &mut Value) {
    let no_metadata = json!({});
    let old_md = old.get("metadata").unwrap_or(&no_metadata);
    {
        let md = meta::metadata_mut(new);
        // A uid the writer gives is kept, so that validation refuses a changed one (422, as
        // kube's BeforeUpdate); an absent one is the stored one.
        if md
            .get("uid")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            match old_md.get("uid") {
                Some(v) => md.insert("uid".into(), v.clone()),
                None => md.remove("uid"),
            };
        }
        for k in [
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old_md.get(k) {
                Some(v) if k != "name" && k != "namespace" => {
                    md.insert(k.into(), v.clone());
                }
                None if k != "name" && k != "namespace" => {
                    md.remove(k);
                }
                _ => {}
            }
        }
        md.remove("resourceVersion");
        if let Some(rv) = old_md.get("resourceVersion") {
            md.insert("resourceVersion".into(), rv.clone());
        }
    }
    if old.get("spec") != new.get("spec") {
        if let Some(g) = old_md.get("generation").and_then(Value::as_i64) {
            meta::metadata_mut(new).insert("generation".into(), json!(g + 1));
        }
    }
}

/// Where a kind keeps what its Scale shows: `spec.replicas`, `status.replicas` and the
/// `spec.selector` LabelSelector for the built-in kinds, the CRD's `scale` paths for a custom
/// resource (its label selector already a string there).
struct ScalePaths {
    spec: String,
    status: String,
    /// A custom resource's `labelSelectorPath`; None for a built-in kind.
    selector: Option<String>,
}

impl ScalePaths {
    fn of(info: &ResourceInfo) -> ScalePaths {
        match crate::apiserver::custom::strategy::of(info).and_then(|c| c.scale.clone()) {
            Some((spec, status, selector)) => ScalePaths {
                spec,
                status,
                selector: Some(selector.unwrap_or_default()),
            },
            None => ScalePaths {
                spec: "spec.replicas".into(),
                status: "status.replicas".into(),
                selector: None,
            },
        }
    }
}

/// The value at a dotted path (`spec.replicas`).
fn at_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|f| !f.is_empty())
        .try_fold(obj, |v, f| v.get(f))
}

/// Sets the value at a dotted path, making the objects on the way.
fn set_path(obj: &mut Value, path: &str, value: Value) {
    let mut cur = obj;
    for f in path.split('.').filter(|f| !f.is_empty()) {
        if !cur.is_object() {
            *cur = json!({});
        }
        cur = cur
            .as_object_mut()
            .expect("made an object")
            .entry(f.to_string())
            .or_insert(Value::Null);
    }
    *cur = value;
}

/// The autoscaling/v1 Scale of an object whose kind has the scale subresource.
fn scale_of(info: &ResourceInfo, obj: &Value) -> Value {
    let paths = ScalePaths::of(info);
    let selector = match &paths.selector {
        None => obj
            .pointer("/spec/selector")
            .map(|s| {
                LabelSelector::from_json(s)
                    .map(|l| l.to_string())
                    .unwrap_or_default()
            })
            .unwrap_or_default(),
        Some(p) if p.is_empty() => String::new(),
        Some(p) => at_path(obj, p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    };
    let replicas = |p: &str| {
        at_path(obj, p)
            .filter(|v| v.is_i64())
            .cloned()
            .unwrap_or(json!(0))
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta::name(obj),
            "namespace": meta::namespace(obj),
            "uid": meta::uid(obj),
            "resourceVersion": meta::resource_version(obj),
            "creationTimestamp": obj.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null),
        },
        "spec": {"replicas": replicas(&paths.spec)},
        "status": {
            "replicas": replicas(&paths.status),
            "selector": selector,
        },
    })
}

/// Sets or replaces a status condition.
pub(super) fn set_condition(obj: &mut Value, kind: &str, status: &str, reason: Option<&str>) {
    let now = meta::now();
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    let conds = obj["status"]
        .as_object_mut()
        .expect("status is an object")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let list = conds.as_array_mut().expect("conditions is an array");
    let mut c =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    match list.iter_mut().find(|c| c["type"] == kind) {
        Some(existing) => *existing = c,
        None => list.push(c),
    }
}

/// Field defaults, as Kubernetes' defaulters set them on every write (so a replaced
/// template compares equal to the one stored in its ReplicaSet). Idempotent.
/// A `<Kind>List` of encoded items, spliced in as they are.
fn list_answer(
    info: &ResourceInfo,
    md: &serde_json::Map<String, Value>,
    items: &[Bytes],
) -> Result<Bytes, Status> {
    let md = codec::encode(md).map_err(|e| Status::internal(e.to_string()))?;
    let mut w = MapWriter::new(4);
    w.str("kind", &info.list_kind())
        .str("apiVersion", &info.api_version())
        .raw("metadata", &md)
        .array("items", items.len() as u32);
    for item in items {
        w.raw_item(item);
    }
    Ok(Bytes::from(w.finish()))
}

/// How long a read at a revision the Store has not reached waits for it.
const FRESH_WAIT: Duration = Duration::from_secs(3);

/// List and watch options as kube-apiserver checks them: 422 for `ListOptions`.
fn check_list_options(opts: &crate::api::wire::ListOptions, watch: bool) -> Result<(), Status> {
    let causes = crate::api::wire::list_options_causes(opts, watch);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(Status::invalid("meta.k8s.io", "ListOptions", "", causes))
    }
}

fn name_of(obj: &Value) -> String {
    meta::name(obj).to_string()
}

/// An update's object names its namespace as the URL does (kube's `rest.BeforeUpdate`): an
/// absent one is the URL's, another one is 400; a cluster-scoped object has none.
fn same_namespace(info: &ResourceInfo, url: Option<&str>, obj: &mut Value) -> Result<(), Status> {
    if !info.namespaced {
        meta::metadata_mut(obj).remove("namespace");
        return Ok(());
    }
    let Some(url) = url else {
        return Ok(());
    };
    let given = meta::namespace(obj).to_string();
    if given.is_empty() {
        meta::metadata_mut(obj).insert("namespace".into(), json!(url));
    } else if given != url {
        return Err(Status::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// How a write records field ownership (`metadata.managedFields`).
enum Track {
    /// A plain write by this manager, to the main resource ("") or a subresource.
    Update {
        manager: String,
        subresource: String,
    },
    /// An apply, which has recorded ownership itself.
    Applied,
    /// Nothing recorded (field tracking turned off).
    Off,
}

impl Registry {
    /// A plain write of `req` to `subresource`, by its `fieldManager` or, without one, the
    /// client it came from (kube names the manager after the User-Agent the same way).
    fn track(&self, req: &Request, subresource: &str) -> Track {
        if !self.track_fields {
            return Track::Off;
        }
        let manager = match (&req.field_manager, req.client.as_str()) {
            (Some(m), _) if !m.is_empty() => m.clone(),
            (_, "") => "unknown".to_string(),
            (_, c) => c.to_string(),
        };
        Track::Update {
            manager,
            subresource: subresource.to_string(),
        }
    }
}

/// The field manager's view of a write to `info` by `manager`.
fn writer<'a>(
    info: &'a ResourceInfo,
    manager: &'a str,
    subresource: &'a str,
) -> managed::Writer<'a> {
    managed::Writer {
        manager,
        subresource,
        has_status: info.has_status,
        api_version: info.api_version(),
        schema: match crate::apiserver::custom::strategy::of(info) {
            Some(custom) => super::patch::Schema::CustomRoot(&custom.schema),
            None => super::patch::Schema::of(kinds::of(info).patch_root()),
        },
    }
}

/// Validates with `metadata.managedFields` set aside (checked on its own by
/// [`check_managed_fields`]): decoding it into typed entries, twice for an update, would cost
/// more than all the other checks of a small object.
fn validate_without_managed_fields(
    info: &ResourceInfo,
    strategy: &dyn kinds::Strategy,
    new: &mut Value,
    old: Option<&mut Value>,
) -> Vec<FieldError> {
    let take = |v: &mut Value| {
        v.get_mut("metadata")
            .and_then(Value::as_object_mut)
            .and_then(|m| m.remove("managedFields"))
    };
    let put = |v: &mut Value, mf: Option<Value>| {
        if let (Some(mf), Some(m)) = (mf, v.get_mut("metadata").and_then(Value::as_object_mut)) {
            m.insert("managedFields".into(), mf);
        }
    };
    let new_mf = take(new);
    let errs = match old {
        Some(old) => {
            let old_mf = take(old);
            let errs = strategy.validate(info, new, Some(old));
            put(old, old_mf);
            errs
        }
        None => strategy.validate(info, new, None),
    };
    put(new, new_mf);
    errs
}

/// kube's PodLogOptions validation: 422 for a negative `tailLines`, a `limitBytes` or
/// `sinceSeconds` under 1, or both `sinceSeconds` and `sinceTime`.
fn check_log_options(name: &str, req: &Request) -> Result<(), Status> {
    let mut causes = Vec::new();
    let mut bad = |field: &str, value: String, message: &str| {
        causes.push(crate::api::status::StatusCause {
            reason: "FieldValueInvalid".into(),
            field: field.into(),
            message: format!("Invalid value: {value}: {message}"),
        })
    };
    if let Some(n) = req.tail_lines.filter(|n| *n < 0) {
        bad(
            "tailLines",
            n.to_string(),
            "must be greater than or equal to 0",
        );
    }
    if let Some(n) = req.limit_bytes.filter(|n| *n < 1) {
        bad("limitBytes", n.to_string(), "must be greater than 0");
    }
    if let Some(n) = req.since_seconds.filter(|n| *n < 1) {
        bad("sinceSeconds", n.to_string(), "must be greater than 0");
    }
    if req.since_seconds.is_some() && req.since_time.is_some() {
        causes.push(crate::api::status::StatusCause {
            reason: "FieldValueForbidden".into(),
            field: "".into(),
            message: "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
                .into(),
        });
    }
    if causes.is_empty() {
        return Ok(());
    }
    Err(Status::invalid("", "PodLogOptions", name, causes))
}

/// Drops owner references that repeat an earlier one's uid, as kube-apiserver does since 1.20
/// (it adds a warning; the first of each uid is kept).
fn dedup_owner_references(obj: &mut Value) {
    let Some(refs) = obj
        .pointer_mut("/metadata/ownerReferences")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    let mut seen = std::collections::HashSet::new();
    refs.retain(|r| match r.get("uid").and_then(Value::as_str) {
        Some(uid) => seen.insert(uid.to_string()),
        None => true,
    });
}

/// A `metadata.managedFields` a client wrote must be readable (422 otherwise).
fn check_managed_fields(info: &ResourceInfo, name: &str, obj: &Value) -> Result<(), Status> {
    managed::check_written(obj).map_err(|message| {
        invalid(
            info,
            name,
            vec![FieldError {
                reason: "FieldValueInvalid",
                field: "metadata.managedFields".into(),
                message,
            }],
        )
    })
}

/// PatchOptions as kube checks them: `force` only for apply, and apply needs a field
/// manager (422 `PatchOptions.meta.k8s.io`).
fn check_patch_options(req: &Request, ptype: PatchType) -> Result<(), Status> {
    let cause = |reason: &str, field: &str, message: &str| StatusCause {
        reason: reason.into(),
        message: message.into(),
        field: field.into(),
    };
    let mut causes = Vec::new();
    if ptype == PatchType::Apply {
        match req.field_manager.as_deref() {
            None | Some("") => causes.push(cause(
                "FieldValueRequired",
                "fieldManager",
                "Required value: is required for apply patch",
            )),
            Some(m) => managed::check_manager(m, "PatchOptions")?,
        }
    } else {
        if req.force.is_some() {
            causes.push(cause(
                "FieldValueForbidden",
                "force",
                "Forbidden: may not be specified for non-apply patch",
            ));
        }
        if let Some(m) = &req.field_manager {
            managed::check_manager(m, "PatchOptions")?;
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(Status::invalid("meta.k8s.io", "PatchOptions", "", causes))
    }
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn encode_continue(rev: Revision, key: &str) -> String {
    let raw = format!("{rev}/{key}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(tok: &str) -> Result<(Revision, String), Status> {
    let bad = || Status::bad_request("invalid continue token");
    if !tok.len().is_multiple_of(2) || tok.len() > 4096 {
        return Err(bad());
    }
    let bytes = (0..tok.len())
        .step_by(2)
        .map(|i| {
            tok.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let raw = String::from_utf8(bytes).map_err(|_| bad())?;
    let (rev, key) = raw.split_once('/').ok_or_else(bad)?;
    Ok((rev.parse().map_err(|_| bad())?, key.to_string()))
}
