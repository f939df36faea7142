//! The node lifecycle controller: a node whose Lease has not been renewed for the grace period
//! (seen on this controller's own clock) becomes Ready=Unknown and gets the
//! `node.kubernetes.io/unreachable` NoSchedule and NoExecute taints; the pods bound to it are
//! evicted once their toleration of that taint runs out (default: the eviction timeout). A node
//! renewing again loses the taints (its kubelet sets Ready itself).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{json, Value};

use super::forward;
use super::record;
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

/// The node lifecycle controller actor.
pub struct NodeLifecycleController {
    client: ApiClient,
    leading: tokio::sync::watch::Receiver<bool>,
    options: NodeLifecycleOptions,
    nodes: Cache,
    pods: Cache,
    /// Per node: the last renewTime seen and when (our clock) it last changed.
    heartbeats: HashMap<String, (String, Instant)>,
    /// When this controller first saw each node tainted unreachable (our clock).
    tainted_at: HashMap<String, Instant>,
    /// Nodes carrying the unreachable taint, as last seen (kept from the node notifications
    /// so that a tick decodes no node).
    unreachable: std::collections::HashSet<String>,
    busy: bool,
    keep: Vec<Informer>,
}

#[derive(Message)]
#[rtype(result = "()")]
enum Seen {
    Lease(Notification),
    Node(Notification),
    Tick,
    Done,
}

impl NodeLifecycleController {
    /// A controller acting while `leading` is true.
    pub fn new(
        client: ApiClient,
        leading: tokio::sync::watch::Receiver<bool>,
        options: NodeLifecycleOptions,
    ) -> Self {
        NodeLifecycleController {
            client,
            leading,
            options,
            nodes: Cache::default(),
            pods: Cache::default(),
            heartbeats: HashMap::new(),
            tainted_at: HashMap::new(),
            unreachable: Default::default(),
            busy: false,
            keep: Vec::new(),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy || !*self.leading.borrow() {
            return;
        }
        let now = Instant::now();
        let mut work = Vec::new();
        // Names and metadata only: a node is decoded when there is work on it.
        for m in self.nodes.metas() {
            let name = m.name.clone();
            let seen = self
                .heartbeats
                .entry(name.clone())
                .or_insert_with(|| (String::new(), now))
                .1;
            let stale = now.duration_since(seen) > self.options.grace;
            let tainted = self.unreachable.contains(&name);
            if stale != tainted {
                let Some(node) = self.nodes.get("", &name) else {
                    continue;
                };
                if stale {
                    work.push(Work::MarkUnreachable(node));
                } else {
                    self.tainted_at.remove(&name);
                    work.push(Work::Clear(node));
                }
            }
            if stale && tainted {
                let since = *self.tainted_at.entry(name.clone()).or_insert(now);
                for pod in self.pods.on_node(&name) {
                    if pod.pointer("/metadata/deletionTimestamp").is_some() {
                        continue;
                    }
                    let toleration = tolerated_for(&pod).unwrap_or(self.options.eviction_timeout);
                    if now.duration_since(since) >= toleration {
                        work.push(Work::Evict(pod));
                    }
                }
            }
        }
        if work.is_empty() {
            return;
        }
        self.busy = true;
        let client = self.client.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            for w in work {
                w.run(&client).await;
            }
            addr.do_send(Seen::Done);
        });
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

impl Actor for NodeLifecycleController {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let nodes = Informer::start(self.client.api("", "nodes", None), ListOptions::default());
        let pods = Informer::start(self.client.api("", "pods", None), ListOptions::default());
        let leases = Informer::start(
            self.client
                .api("coordination.k8s.io", "leases", Some("kube-node-lease")),
            ListOptions::default(),
        );
        self.nodes = nodes.cache.clone();
        self.pods = pods.cache.clone();
        self.keep.push(forward(nodes, addr.clone(), Seen::Node));
        // Pods are read from the cache only: no notifications wanted.
        let mut pods = pods;
        pods.notifications.close();
        self.keep.push(pods);
        self.keep.push(forward(leases, addr, Seen::Lease));
        ctx.run_interval(Duration::from_millis(500), |_, ctx| ctx.notify(Seen::Tick));
    }
}

impl Handler<Seen> for NodeLifecycleController {
    type Result = ();

    fn handle(&mut self, seen: Seen, ctx: &mut Context<Self>) {
        let _span = crate::trace::handler_span(
            "NodeLifecycleController",
            "Seen",
            match &seen {
                Seen::Lease(n) => n.object(),
                Seen::Node(n) => n.object(),
                _ => None,
            },
        )
        .entered();
        match seen {
            Seen::Lease(Notification::Added(l) | Notification::Updated(_, l)) => {
                let renew = l
                    .pointer("/spec/renewTime")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let entry = self
                    .heartbeats
                    .entry(meta::name(&l).to_string())
                    .or_insert_with(|| (String::new(), Instant::now()));
                if entry.0 != renew {
                    *entry = (renew, Instant::now());
                }
            }
            Seen::Node(Notification::Added(n) | Notification::Updated(_, n)) => {
                let name = meta::name(&n).to_string();
                if taints(&n).iter().any(|t| t["key"] == UNREACHABLE) {
                    self.unreachable.insert(name);
                } else {
                    self.unreachable.remove(&name);
                }
            }
            Seen::Node(Notification::Deleted(n)) => {
                self.unreachable.remove(meta::name(&n));
            }
            Seen::Lease(_) | Seen::Node(_) => {}
            Seen::Tick => self.tick(ctx),
            Seen::Done => self.busy = false,
        }
    }
}
