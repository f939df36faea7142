//! The node lifecycle controller: a node whose Lease has not been renewed for the grace period
//! (seen on this controller's own clock) becomes Ready=Unknown and gets the
//! `node.kubernetes.io/unreachable` NoSchedule and NoExecute taints; the pods bound to it are
//! evicted once their toleration of that taint runs out (default: the eviction timeout). A node
//! renewing again loses the taints (its kubelet sets Ready itself).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use serde_json::{json, Value};

use super::record;
use super::runtime::{self, Action, Controller, ReconcileError, Reconciler};
use crate::api::meta;
use crate::api::wire::{DeleteOptions, ListOptions, PatchType};
use crate::client::{ApiClient, Cache, Informer, Notification};

const COMPONENT: &str = "node-controller";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Timings of the node lifecycle controller.
#[derive(Debug, Clone, Copy)]
pub struct NodeLifecycleOptions {
    /// A node is NotReady after this long without a Lease renewal (Kubernetes: 50 s).
    pub grace: Duration,
    /// Pods without their own toleration are evicted after this long (Kubernetes: 300 s).
    pub eviction_timeout: Duration,
}

impl Default for NodeLifecycleOptions {
    fn default() -> Self {
        NodeLifecycleOptions {
            grace: Duration::from_secs(50),
            eviction_timeout: Duration::from_secs(300),
        }
    }
}

/// The reconciler: one key per node.
#[derive(Clone)]
pub struct NodeLifecycle {
    client: ApiClient,
    options: NodeLifecycleOptions,
    nodes: Cache,
    pods: Cache,
    /// Per node: the last renewTime seen and when (our clock) it last changed.
    heartbeats: Arc<Mutex<HashMap<String, (String, Instant)>>>,
    /// When this controller first saw each node tainted unreachable (our clock).
    tainted_at: Arc<Mutex<HashMap<String, Instant>>>,
}

/// The node lifecycle controller, running while `leading` is true.
pub type NodeLifecycleController = Controller<NodeLifecycle>;

/// Starts it (inside an actix System). Lease renewals are followed while the replica stands
/// by too, so a new leader judges staleness on what it has already seen.
pub fn start(
    client: ApiClient,
    leading: tokio::sync::watch::Receiver<bool>,
    options: NodeLifecycleOptions,
) -> Addr<NodeLifecycleController> {
    let nodes = Informer::start(client.api("", "nodes", None), ListOptions::default());
    let mut pods = Informer::start(client.api("", "pods", None), ListOptions::default());
    // Pods are read from the cache only: no notifications wanted.
    pods.notifications.close();
    let leases = Informer::start(
        client.api("coordination.k8s.io", "leases", Some("kube-node-lease")),
        ListOptions::default(),
    );
    let reconciler = NodeLifecycle {
        client,
        options,
        nodes: nodes.cache.clone(),
        pods: pods.cache.clone(),
        heartbeats: Arc::default(),
        tainted_at: Arc::default(),
    };
    let heartbeats = reconciler.heartbeats.clone();
    Controller::create(move |ctx| {
        let addr = ctx.address();
        let mut c = Controller::new("nodelifecycle", reconciler, leading).workers(2);
        c.keep(pods);
        c.keep(runtime::watch(nodes, addr.clone(), |n| {
            n.object()
                .map(|node| vec![meta::name(node).to_string()])
                .unwrap_or_default()
        }));
        c.keep(runtime::watch(leases, addr, move |n| match n {
            Notification::Added(l) | Notification::Updated(_, l) => {
                let renew = l
                    .pointer("/spec/renewTime")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let name = meta::name(l).to_string();
                let mut beats = heartbeats.lock().unwrap_or_else(|p| p.into_inner());
                let entry = beats
                    .entry(name.clone())
                    .or_insert_with(|| (String::new(), Instant::now()));
                if entry.0 != renew {
                    *entry = (renew, Instant::now());
                    return vec![name];
                }
                Vec::new()
            }
            _ => Vec::new(),
        }));
        c
    })
}

impl Reconciler for NodeLifecycle {
    fn reconcile(&self, name: String) -> LocalBoxFuture<'static, Result<Action, ReconcileError>> {
        let me = self.clone();
        Box::pin(async move { Ok(me.sync(&name).await) })
    }
}

impl NodeLifecycle {
    /// Marks a node whose Lease went quiet for the grace period unreachable, clears a node
    /// renewing again, and evicts the pods of an unreachable node whose toleration ran out;
    /// then looks again when the next of those moments comes.
    async fn sync(&self, name: &str) -> Action {
        let Some(node) = self.nodes.get("", name) else {
            self.heartbeats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
            self.tainted_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
            return Action::AwaitChange;
        };
        let node: Value = node;
        let now = Instant::now();
        let seen = self
            .heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert_with(|| (String::new(), now))
            .1;
        let quiet = now.duration_since(seen);
        let stale = quiet > self.options.grace;
        let tainted = taints(&node).iter().any(|t| t["key"] == UNREACHABLE);
        if !stale {
            if tainted {
                self.tainted_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(name);
                Work::Clear(node).run(&self.client).await;
            }
            // Look again when it would go stale without another renewal.
            return Action::requeue(self.options.grace - quiet + Duration::from_millis(100));
        }
        if !tainted {
            Work::MarkUnreachable(node).run(&self.client).await;
        }
        let since = *self
            .tainted_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert(now);
        let mut next: Option<Duration> = None;
        for pod in self.pods.on_node(name) {
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            let toleration = tolerated_for(&pod).unwrap_or(self.options.eviction_timeout);
            let waited = now.duration_since(since);
            if waited >= toleration {
                Work::Evict(pod).run(&self.client).await;
            } else {
                let left = toleration - waited;
                next = Some(next.map_or(left, |n| n.min(left)));
            }
        }
        // Pods arriving later, and the renewal that clears it, come as changes; a pod's
        // toleration running out is a moment to come back for.
        Action::requeue(
            next.unwrap_or(Duration::from_secs(5))
                .min(Duration::from_secs(5)),
        )
    }
}

fn taints(node: &Value) -> Vec<Value> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// How long the pod tolerates the unreachable NoExecute taint, if it says.
fn tolerated_for(pod: &Value) -> Option<Duration> {
    pod.pointer("/spec/tolerations")
        .and_then(Value::as_array)?
        .iter()
        .find(|t| {
            (t["key"] == UNREACHABLE || (t["key"].is_null() && t["operator"] == "Exists"))
                && (t["effect"].is_null() || t["effect"] == "NoExecute" || t["effect"] == "")
        })
        .map(|t| {
            t["tolerationSeconds"]
                .as_i64()
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or(Duration::MAX)
        })
}

enum Work {
    MarkUnreachable(Value),
    Clear(Value),
    Evict(Value),
}

impl Work {
    async fn run(self, client: &ApiClient) {
        let nodes = client.api("", "nodes", None);
        match self {
            Work::MarkUnreachable(node) => {
                let name = meta::name(&node).to_string();
                let now = meta::now();
                let mut conditions = node
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for c in conditions.iter_mut() {
                    c["status"] = json!("Unknown");
                    c["reason"] = json!("NodeStatusUnknown");
                    c["message"] = json!("Kubelet stopped posting node status.");
                    c["lastTransitionTime"] = json!(now);
                }
                let _ = nodes
                    .patch(
                        &name,
                        Some("status"),
                        PatchType::Merge,
                        &json!({"status": {"conditions": conditions}}),
                    )
                    .await;
                let mut t = taints(&node);
                for effect in ["NoSchedule", "NoExecute"] {
                    t.push(json!({"key": UNREACHABLE, "effect": effect, "timeAdded": now}));
                }
                let _ = nodes
                    .patch(
                        &name,
                        None,
                        PatchType::Merge,
                        &json!({"spec": {"taints": t}}),
                    )
                    .await;
                tracing::warn!(node = %name, "node stopped renewing its lease: NotReady, tainted unreachable");
                record(client, &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "namespace": "default", "uid": meta::uid(&node)}}),
                    COMPONENT, "Normal", "NodeNotReady", &format!("Node {name} status is now: NodeNotReady")).await;
            }
            Work::Clear(node) => {
                let rest: Vec<Value> = taints(&node)
                    .into_iter()
                    .filter(|t| t["key"] != UNREACHABLE)
                    .collect();
                let rest = if rest.is_empty() {
                    Value::Null
                } else {
                    json!(rest)
                };
                let _ = nodes
                    .patch(
                        meta::name(&node),
                        None,
                        PatchType::Merge,
                        &json!({"spec": {"taints": rest}}),
                    )
                    .await;
            }
            Work::Evict(pod) => {
                let pods = client.api("", "pods", Some(meta::namespace(&pod)));
                tracing::info!(pod = %meta::name(&pod), node = ?pod.pointer("/spec/nodeName"), "evicting from an unreachable node");
                record(
                    client,
                    &pod,
                    COMPONENT,
                    "Normal",
                    "TaintManagerEviction",
                    "Marking for deletion Pod",
                )
                .await;
                let _ = pods
                    .delete(meta::name(&pod), &DeleteOptions::default())
                    .await;
            }
        }
    }
}
