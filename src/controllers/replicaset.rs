//! The ReplicaSet controller: keeps `spec.replicas` pods matching each ReplicaSet's selector
//! running, owned by it (adopting matching orphans), and reports status. Expectations (pods
//! it asked for but has not seen yet) keep it from creating twice before its informer catches
//! up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{controller_of, key_of, record, Queue};
use crate::api::meta;
use crate::api::selector::LabelSelector;
use crate::api::wire::{DeleteOptions, ListOptions, PatchType};
use crate::client::{ApiClient, Cache, Informer, Notification};

const COMPONENT: &str = "replicaset-controller";

/// Creations and deletions asked for and not yet observed, per ReplicaSet uid.
#[derive(Debug, Clone, Copy)]
struct Expect {
    adds: i64,
    dels: i64,
    until: Instant,
}

type Expectations = Arc<Mutex<HashMap<String, Expect>>>;

/// The ReplicaSet controller actor.
pub struct ReplicaSetController {
    client: ApiClient,
    leading: watch::Receiver<bool>,
    replica_sets: Cache,
    pods: Cache,
    queue: Queue,
    busy: bool,
    expectations: Expectations,
    keep: Vec<Informer>,
}

#[derive(Message)]
#[rtype(result = "()")]
enum Seen {
    ReplicaSet(Notification),
    Pod(Notification),
    Tick,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Done;

impl ReplicaSetController {
    /// A controller acting while `leading` is true.
    pub fn new(client: ApiClient, leading: watch::Receiver<bool>) -> Self {
        ReplicaSetController {
            client,
            leading,
            replica_sets: Cache::default(),
            pods: Cache::default(),
            queue: Queue::named("replicaset"),
            busy: false,
            expectations: Arc::default(),
            keep: Vec::new(),
        }
    }

    fn owner_key(&self, pod: &Value) -> Option<String> {
        let uid = controller_of(pod, "ReplicaSet")?;
        self.replica_sets
            .list()
            .into_iter()
            .find(|rs| meta::uid(rs) == uid)
            .map(|rs| key_of(&rs))
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.queue.is_empty() || !*self.leading.borrow() {
            return;
        }
        self.busy = true;
        let keys = self.queue.take();
        let (client, rss, pods, exp) = (
            self.client.clone(),
            self.replica_sets.clone(),
            self.pods.clone(),
            self.expectations.clone(),
        );
        let addr = ctx.address();
        actix::spawn(async move {
            for key in keys {
                let (ns, name) = key.split_once('/').unwrap_or(("", key.as_str()));
                if let Some(rs) = rss.get(ns, name) {
                    reconcile(&client, &rs, &pods, &exp).await;
                }
            }
            addr.do_send(Done);
        });
    }
}

/// Subscribes an informer's notifications to an actor as messages.
pub(super) fn forward<A, M, F>(mut informer: Informer, addr: Addr<A>, wrap: F) -> Informer
where
    A: Actor<Context = Context<A>> + Handler<M>,
    M: Message<Result = ()> + Send + 'static,
    F: Fn(Notification) -> M + 'static,
{
    let mut rx = std::mem::replace(
        &mut informer.notifications,
        tokio::sync::mpsc::unbounded_channel().1,
    );
    actix::spawn(async move {
        while let Some(n) = rx.recv().await {
            addr.do_send(wrap(n));
        }
    });
    informer
}

impl Actor for ReplicaSetController {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let rs = Informer::start(
            self.client.api("apps", "replicasets", None),
            ListOptions::default(),
        );
        let pods = Informer::start(self.client.api("", "pods", None), ListOptions::default());
        self.replica_sets = rs.cache.clone();
        self.pods = pods.cache.clone();
        self.keep.push(forward(rs, addr.clone(), Seen::ReplicaSet));
        self.keep.push(forward(pods, addr.clone(), Seen::Pod));
        // Resync now and then (also picks up leadership changes and expired expectations).
        ctx.run_interval(Duration::from_secs(5), |_, ctx| ctx.notify(Seen::Tick));
        let mut leading = self.leading.clone();
        actix::spawn(async move {
            while leading.changed().await.is_ok() {
                addr.do_send(Seen::Tick);
            }
        });
    }
}

impl Handler<Seen> for ReplicaSetController {
    type Result = ();

    fn handle(&mut self, seen: Seen, ctx: &mut Context<Self>) {
        let _span = crate::trace::handler_span(
            "ReplicaSetController",
            "Seen",
            match &seen {
                Seen::ReplicaSet(n) => n.object(),
                Seen::Pod(n) => n.object(),
                _ => None,
            },
        )
        .entered();
        match seen {
            Seen::ReplicaSet(Notification::Added(rs) | Notification::Updated(_, rs)) => {
                self.queue.add(key_of(&rs))
            }
            Seen::ReplicaSet(_) => {}
            Seen::Pod(n) => {
                // (pod, observed an add, observed a delete)
                let (pod, added, deleted) = match &n {
                    Notification::Added(p) => (Some(p), true, false),
                    Notification::Updated(old, p) => (
                        Some(p),
                        false,
                        old.pointer("/metadata/deletionTimestamp").is_none()
                            && p.pointer("/metadata/deletionTimestamp").is_some(),
                    ),
                    Notification::Deleted(p) => (Some(p), false, true),
                    Notification::Synced => (None, false, false),
                };
                if let Some(pod) = pod {
                    if let Some(uid) = controller_of(pod, "ReplicaSet") {
                        if let Ok(mut exp) = self.expectations.lock() {
                            if let Some(e) = exp.get_mut(&uid) {
                                if added {
                                    e.adds -= 1;
                                }
                                if deleted {
                                    e.dels -= 1;
                                }
                            }
                        }
                    }
                    match self.owner_key(pod) {
                        Some(k) => self.queue.add(k),
                        None => {
                            // An orphan: any ReplicaSet of its namespace may adopt it.
                            for rs in self.replica_sets.metas() {
                                if rs.namespace == meta::namespace(pod) {
                                    self.queue.add(format!("{}/{}", rs.namespace, rs.name));
                                }
                            }
                        }
                    }
                }
            }
            Seen::Tick => {
                for rs in self.replica_sets.metas() {
                    self.queue.add(format!("{}/{}", rs.namespace, rs.name));
                }
            }
        }
        self.kick(ctx);
    }
}

impl Handler<Done> for ReplicaSetController {
    type Result = ();

    fn handle(&mut self, _: Done, ctx: &mut Context<Self>) {
        let _span = crate::trace::handler_span("ReplicaSetController", "Done", None).entered();
        self.busy = false;
        self.kick(ctx);
    }
}

fn active(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

fn ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Deletion preference: unscheduled, then not running, then not ready, then newest.
fn deletion_rank(pod: &Value) -> (u8, u8, u8, std::cmp::Reverse<String>) {
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let running = pod.pointer("/status/phase") == Some(&json!("Running"));
    let created = pod
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    (
        scheduled as u8,
        running as u8,
        ready(pod) as u8,
        std::cmp::Reverse(created),
    )
}

/// One reconciliation of one ReplicaSet.
async fn reconcile(client: &ApiClient, rs: &Value, pods: &Cache, exp: &Expectations) {
    if rs.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let ns = meta::namespace(rs).to_string();
    let uid = meta::uid(rs).to_string();
    let Ok(selector) =
        LabelSelector::from_json(rs.pointer("/spec/selector").unwrap_or(&Value::Null))
    else {
        return;
    };
    if selector.is_empty() {
        return;
    }
    let api = client.api("", "pods", Some(&ns));
    let mut owned = Vec::new();
    // Its own pods by the owner index; orphans of the namespace by their metadata, decoded
    // only when they could be adopted.
    let orphans = pods
        .metas()
        .into_iter()
        .filter(|m| m.namespace == ns && !m.deleting && !m.owners.iter().any(|o| o.controller))
        .filter_map(|m| pods.get(&m.namespace, &m.name));
    for pod in pods.owned_by(&uid).into_iter().chain(orphans) {
        match controller_of(&pod, "ReplicaSet") {
            Some(u) if u == uid => owned.push(pod),
            None if selector.matches_object(&pod) && active(&pod) => {
                // Adopt a matching orphan.
                let mut refs = pod
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                refs.push(owner_ref(rs));
                let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": meta::resource_version(&pod)}});
                if let Ok(p) = api
                    .patch(meta::name(&pod), None, PatchType::Merge, &patch)
                    .await
                {
                    owned.push(p);
                }
            }
            _ => {}
        }
    }
    let mut live: Vec<Value> = owned.into_iter().filter(active).collect();
    let want = rs
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let settled = {
        let mut e = exp.lock().unwrap_or_else(|p| p.into_inner());
        match e.get(&uid) {
            Some(x) if (x.adds > 0 || x.dels > 0) && Instant::now() < x.until => false,
            _ => {
                e.remove(&uid);
                true
            }
        }
    };
    if settled {
        let diff = live.len() as i64 - want;
        if diff < 0 {
            let n = -diff;
            set_expect(exp, &uid, n, 0);
            for _ in 0..n {
                match api.create(&pod_from_template(rs)).await {
                    Ok(p) => live.push(p),
                    Err(e) => {
                        tracing::warn!(rs = %meta::name(rs), error = %e, "creating a pod");
                        lower_expect(exp, &uid, true);
                        record(
                            client,
                            rs,
                            COMPONENT,
                            "Warning",
                            "FailedCreate",
                            &format!("Error creating: {}", e.message),
                        )
                        .await;
                    }
                }
            }
            record(
                client,
                rs,
                COMPONENT,
                "Normal",
                "SuccessfulCreate",
                &format!("Created {n} pod(s)"),
            )
            .await;
        } else if diff > 0 {
            live.sort_by_key(deletion_rank);
            let doomed: Vec<Value> = live.drain(..diff as usize).collect();
            set_expect(exp, &uid, 0, diff);
            for pod in &doomed {
                match api.delete(meta::name(pod), &DeleteOptions::default()).await {
                    Ok(_) => {
                        record(
                            client,
                            rs,
                            COMPONENT,
                            "Normal",
                            "SuccessfulDelete",
                            &format!("Deleted pod: {}", meta::name(pod)),
                        )
                        .await
                    }
                    Err(e) => {
                        lower_expect(exp, &uid, false);
                        tracing::debug!(pod = %meta::name(pod), error = %e, "deleting a surplus pod");
                    }
                }
            }
        }
    }
    let ready_n = live.iter().filter(|p| ready(p)).count() as i64;
    let status = json!({
        "replicas": live.len(),
        "fullyLabeledReplicas": live.len(),
        "readyReplicas": ready_n,
        "availableReplicas": ready_n,
        "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
    });
    let current = rs.get("status").cloned().unwrap_or(json!({}));
    let differs = [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "observedGeneration",
        "fullyLabeledReplicas",
    ]
    .iter()
    .any(|k| current.get(*k).unwrap_or(&json!(0)) != &status[*k]);
    if differs {
        let rss = client.api("apps", "replicasets", Some(&ns));
        if let Err(e) = rss
            .patch(
                meta::name(rs),
                Some("status"),
                PatchType::Merge,
                &json!({"status": status}),
            )
            .await
        {
            tracing::debug!(rs = %meta::name(rs), error = %e, "status update");
        }
    }
}

fn set_expect(exp: &Expectations, uid: &str, adds: i64, dels: i64) {
    let mut e = exp.lock().unwrap_or_else(|p| p.into_inner());
    e.insert(
        uid.to_string(),
        Expect {
            adds,
            dels,
            until: Instant::now() + Duration::from_secs(30),
        },
    );
}

fn lower_expect(exp: &Expectations, uid: &str, add: bool) {
    let mut e = exp.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(x) = e.get_mut(uid) {
        if add {
            x.adds -= 1;
        } else {
            x.dels -= 1;
        }
    }
}

/// The ownerReference a dependent of `owner` carries.
pub fn owner_ref(owner: &Value) -> Value {
    json!({"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta::name(owner),
        "uid": meta::uid(owner), "controller": true, "blockOwnerDeletion": true})
}

/// A new pod from a ReplicaSet's template.
fn pod_from_template(rs: &Value) -> Value {
    let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut md = template.get("metadata").cloned().unwrap_or(json!({}));
    if !md.is_object() {
        md = json!({});
    }
    md["generateName"] = json!(format!("{}-", meta::name(rs)));
    md["namespace"] = json!(meta::namespace(rs));
    md["ownerReferences"] = json!([owner_ref(rs)]);
    if let Some(m) = md.as_object_mut() {
        m.remove("name");
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": template.get("spec").cloned().unwrap_or(json!({}))})
}
