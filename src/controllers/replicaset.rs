//! The ReplicaSet controller, on the controller runtime: keeps `spec.replicas` pods
//! matching each ReplicaSet's selector running, owned by it (the controller-ref manager
//! adopts matching orphans and releases pods relabelled out of the selector, which are then
//! replaced), and reports status. Pods are created in slow-start batches (1, 2, 4, … as kube's
//! controller does, at most [`BURST`] per sync) and deleted concurrently; expectations (pods
//! asked for and not yet seen) keep it from acting twice before its informer catches up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::{join_all, LocalBoxFuture};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::runtime::refs::{adopt_patch, claim, release_patch};
use super::runtime::{self, Action, Controller, ReconcileError, Reconciler};
use super::{controller_of, key_of, record};
use crate::api::meta;
use crate::api::selector::LabelSelector;
use crate::api::wire::{DeleteOptions, ListOptions, PatchType};
use crate::client::{ApiClient, Cache, Informer, Notification};

const COMPONENT: &str = "replicaset-controller";

/// At most this many pods created or deleted by one sync (kube's `burstReplicas`).
pub const BURST: usize = 500;

/// How long expectations hold before the controller acts anyway (a lost watch event).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(30);

/// Creations and deletions asked for and not yet observed, per ReplicaSet uid.
#[derive(Debug, Clone, Copy)]
struct Expect {
    adds: i64,
    dels: i64,
    until: Instant,
}

type Expectations = Arc<Mutex<HashMap<String, Expect>>>;

/// The ReplicaSet controller's reconciler.
#[derive(Clone)]
pub struct ReplicaSets {
    client: ApiClient,
    replica_sets: Cache,
    pods: Cache,
    expectations: Expectations,
}

/// The ReplicaSet controller, running while `leading` is true.
pub type ReplicaSetController = Controller<ReplicaSets>;

/// Starts the ReplicaSet controller (inside an actix System): its informers feed its queue.
pub fn start(client: ApiClient, leading: watch::Receiver<bool>) -> Addr<ReplicaSetController> {
    let rs = Informer::start(
        client.api("apps", "replicasets", None),
        ListOptions::default(),
    );
    let pods = Informer::start(client.api("", "pods", None), ListOptions::default());
    let reconciler = ReplicaSets {
        client,
        replica_sets: rs.cache.clone(),
        pods: pods.cache.clone(),
        expectations: Arc::default(),
    };
    let (rss, exp) = (
        reconciler.replica_sets.clone(),
        reconciler.expectations.clone(),
    );
    Controller::create(move |ctx| {
        let addr = ctx.address();
        let mut c = Controller::new("replicaset", reconciler, leading).workers(5);
        c.keep(runtime::watch(rs, addr.clone(), |n| match n {
            Notification::Added(rs) | Notification::Updated(_, rs) | Notification::Deleted(rs) => {
                vec![key_of(rs)]
            }
            Notification::Synced => Vec::new(),
        }));
        c.keep(runtime::watch(pods, addr, move |n| pod_keys(&rss, &exp, n)));
        c
    })
}

/// The ReplicaSets a pod notification concerns: its controller (whose expectations it
/// meets), or, for an orphan, every ReplicaSet of its namespace (one may adopt it).
fn pod_keys(rss: &Cache, exp: &Expectations, n: &Notification) -> Vec<String> {
    let (pod, added, deleted) = match n {
        Notification::Added(p) => (p, true, false),
        Notification::Updated(old, p) => (
            p,
            false,
            old.pointer("/metadata/deletionTimestamp").is_none()
                && p.pointer("/metadata/deletionTimestamp").is_some(),
        ),
        Notification::Deleted(p) => (p, false, true),
        Notification::Synced => return Vec::new(),
    };
    let mut keys = Vec::new();
    let owners = [
        controller_of(pod, "ReplicaSet"),
        match n {
            // Released or re-owned: the old controller looks again too.
            Notification::Updated(old, _) => controller_of(old, "ReplicaSet"),
            _ => None,
        },
    ];
    for uid in owners.into_iter().flatten() {
        if let Ok(mut exp) = exp.lock() {
            if let Some(e) = exp.get_mut(&uid) {
                if added {
                    e.adds -= 1;
                }
                if deleted {
                    e.dels -= 1;
                }
            }
        }
        if let Some(rs) = rss.list().into_iter().find(|rs| meta::uid(rs) == uid) {
            keys.push(key_of(&rs));
        }
    }
    if keys.is_empty() && !deleted {
        keys.extend(
            rss.metas()
                .into_iter()
                .filter(|rs| rs.namespace == meta::namespace(pod))
                .map(|rs| format!("{}/{}", rs.namespace, rs.name)),
        );
    }
    keys
}

impl Reconciler for ReplicaSets {
    fn reconcile(&self, key: String) -> LocalBoxFuture<'static, Result<Action, ReconcileError>> {
        let me = self.clone();
        Box::pin(async move { me.sync(&key).await })
    }
}

impl ReplicaSets {
    /// One reconciliation of one ReplicaSet.
    async fn sync(&self, key: &str) -> Result<Action, ReconcileError> {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let Some(rs) = self.replica_sets.get(ns, name) else {
            return Ok(Action::AwaitChange);
        };
        let rs: Value = rs;
        let (client, exp) = (&self.client, &self.expectations);
        let uid = meta::uid(&rs).to_string();
        let Ok(selector) =
            LabelSelector::from_json(rs.pointer("/spec/selector").unwrap_or(&Value::Null))
        else {
            return Ok(Action::AwaitChange);
        };
        if selector.is_empty() {
            return Ok(Action::AwaitChange);
        }
        let api = client.api("", "pods", Some(ns));
        // Its own pods by the owner index; orphans of the namespace by their metadata,
        // decoded only when they could be adopted.
        let orphans = self
            .pods
            .metas()
            .into_iter()
            .filter(|m| m.namespace == ns && !m.deleting && !m.owners.iter().any(|o| o.controller))
            .filter_map(|m| self.pods.get(&m.namespace, &m.name))
            .filter(active);
        let candidates: Vec<Value> = self
            .pods
            .owned_by(&uid)
            .into_iter()
            .chain(orphans)
            .collect();
        let claimed = claim(&rs, &selector, candidates);
        let mut owned = claimed.owned;
        for pod in &claimed.release {
            // Released: it keeps running, no longer ours; a replacement follows below.
            if let Err(e) = api
                .patch(
                    meta::name(pod),
                    None,
                    PatchType::Merge,
                    &release_patch(&rs, pod),
                )
                .await
            {
                tracing::debug!(pod = %meta::name(pod), error = %e, "releasing a pod");
            }
        }
        for pod in &claimed.adopt {
            match api
                .patch(
                    meta::name(pod),
                    None,
                    PatchType::Merge,
                    &adopt_patch(&rs, pod),
                )
                .await
            {
                Ok(p) => owned.push(p),
                Err(e) => tracing::debug!(pod = %meta::name(pod), error = %e, "adopting a pod"),
            }
        }
        if rs.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(Action::AwaitChange);
        }
        let mut live: Vec<Value> = owned.into_iter().filter(active).collect();
        let want = rs
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0);
        let pending = {
            let mut e = exp.lock().unwrap_or_else(|p| p.into_inner());
            match e.get(&uid) {
                Some(x) if (x.adds > 0 || x.dels > 0) && Instant::now() < x.until => {
                    Some(x.until.saturating_duration_since(Instant::now()))
                }
                _ => {
                    e.remove(&uid);
                    None
                }
            }
        };
        let mut failure = None;
        if pending.is_none() {
            let diff = live.len() as i64 - want;
            if diff < 0 {
                let n = ((-diff) as usize).min(BURST);
                let (created, failed) = self.create_pods(&rs, n).await;
                live.extend(created);
                failure = failed;
            } else if diff > 0 {
                live.sort_by_key(deletion_rank);
                let doomed: Vec<Value> = live.drain(..(diff as usize).min(BURST)).collect();
                set_expect(exp, &uid, 0, doomed.len() as i64);
                let options = DeleteOptions::default();
                let results = join_all(
                    doomed
                        .iter()
                        .map(|pod| api.delete(meta::name(pod), &options)),
                )
                .await;
                for (pod, r) in doomed.iter().zip(results) {
                    match r {
                        Ok(_) => {
                            record(
                                client,
                                &rs,
                                COMPONENT,
                                "Normal",
                                "SuccessfulDelete",
                                &format!("Deleted pod: {}", meta::name(pod)),
                            )
                            .await
                        }
                        Err(e) => {
                            lower_expect(exp, &uid, false);
                            if e.code != 404 {
                                failure = Some(ReconcileError::from(e));
                            }
                        }
                    }
                }
            }
        }
        let available_in = self.update_status(&rs, &live).await?;
        if let Some(e) = failure {
            return Err(e);
        }
        // A lost event must not stall it: look again when the expectations lapse; a Ready pod
        // not yet available (minReadySeconds) is counted when its time comes.
        Ok(match [pending, available_in].into_iter().flatten().min() {
            Some(wait) => Action::requeue(wait),
            None => Action::AwaitChange,
        })
    }

    /// Creates `n` pods from `rs`'s template in slow-start batches (1, 2, 4, …): a batch
    /// with a failure ends the sync, so a quota or admission refusal costs one request,
    /// not `n`. Returns the pods made and the first failure.
    async fn create_pods(&self, rs: &Value, n: usize) -> (Vec<Value>, Option<ReconcileError>) {
        let (client, exp) = (&self.client, &self.expectations);
        let uid = meta::uid(rs).to_string();
        let api = client.api("", "pods", Some(meta::namespace(rs)));
        set_expect(exp, &uid, n as i64, 0);
        let template = pod_from_template(rs);
        let mut made = Vec::new();
        let mut failure = None;
        let (mut batch, mut asked) = (1, 0);
        while asked < n && failure.is_none() {
            let size = batch.min(n - asked);
            asked += size;
            let results = join_all((0..size).map(|_| api.create(&template))).await;
            for r in results {
                match r {
                    Ok(p) => made.push(p),
                    Err(e) => {
                        lower_expect(exp, &uid, true);
                        if failure.is_none() {
                            record(
                                client,
                                rs,
                                COMPONENT,
                                "Warning",
                                "FailedCreate",
                                &format!("Error creating: {}", e.message),
                            )
                            .await;
                            failure = Some(ReconcileError::from(e));
                        }
                    }
                }
            }
            batch *= 2;
        }
        // Pods never asked for (the batches after a failure) are not expected either.
        for _ in asked..n {
            lower_expect(exp, &uid, true);
        }
        if !made.is_empty() {
            record(
                client,
                rs,
                COMPONENT,
                "Normal",
                "SuccessfulCreate",
                &format!("Created {} pod(s)", made.len()),
            )
            .await;
        }
        (made, failure)
    }

    /// Writes the status `live` pods give, when it differs.
    /// Returns how long until the next Ready pod becomes available, if one is waiting.
    async fn update_status(
        &self,
        rs: &Value,
        live: &[Value],
    ) -> Result<Option<Duration>, ReconcileError> {
        let ready_n = live.iter().filter(|p| ready(p)).count() as i64;
        // Available: Ready for at least minReadySeconds (kube's podutil.IsPodAvailable).
        let min_ready = rs
            .pointer("/spec/minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .max(0);
        let now = jiff::Timestamp::now().as_second();
        let mut available_n = 0i64;
        let mut next: Option<Duration> = None;
        for pod in live.iter().filter(|p| ready(p)) {
            let since = ready_since(pod).unwrap_or(now);
            let left = since + min_ready - now;
            if min_ready == 0 || left <= 0 {
                available_n += 1;
            } else {
                let d = Duration::from_secs(left as u64);
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        let status = json!({
            "replicas": live.len(),
            "fullyLabeledReplicas": live.len(),
            "readyReplicas": ready_n,
            "availableReplicas": available_n,
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
            let rss = self
                .client
                .api("apps", "replicasets", Some(meta::namespace(rs)));
            match rss
                .patch(
                    meta::name(rs),
                    Some("status"),
                    PatchType::Merge,
                    &json!({"status": status}),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(next)
    }
}

fn active(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

/// When the pod's Ready condition last became True (unix seconds).
fn ready_since(pod: &Value) -> Option<i64> {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")?
        .get("lastTransitionTime")?
        .as_str()?
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
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

fn set_expect(exp: &Expectations, uid: &str, adds: i64, dels: i64) {
    let mut e = exp.lock().unwrap_or_else(|p| p.into_inner());
    e.insert(
        uid.to_string(),
        Expect {
            adds,
            dels,
            until: Instant::now() + EXPECTATIONS_TTL,
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
    super::runtime::refs::controller_ref(owner)
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
