//! The Scheduler actor: watches nodes and pods through informers, keeps a summary of every
//! node (allocatable, what its pods request, ports, owners), and binds each unscheduled pod to
//! the best feasible node through the binding subresource. A pod that fits nowhere gets
//! PodScheduled=False with the reason and a FailedScheduling event, and is retried whenever a
//! node or a pod changes. Several replicas may run; only the Lease holder schedules.

pub mod algorithm;
pub mod run;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Value};

use crate::api::meta;
use crate::api::wire::{ListOptions, PatchType};
use crate::client::leader::{elect, Election, ElectionTimings};
use crate::client::{ApiClient, Cache, Informer, Notification, Transform};
use crate::trace::{self, ObjectRef, Span};
use algorithm::{NodeSummary, PodSummary};

/// The scheduler's name, matched against `spec.schedulerName`.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// What the scheduler's pod cache keeps of each pod: a pod waiting for a node whole, as
/// the decision reads all of its spec; a bound pod only as its node's summary counts it
/// (identity, labels and owners, phase, each container's requests and ports, priority and
/// affinity), about a fifth of a Running pod, whose status is most of the rest. With
/// 100,000 pods this is the difference between ~40 MB and ~230 MB.
pub const KEEP: Transform = Transform {
    name: "scheduler",
    apply: keep,
};

fn keep(mut pod: Value) -> Value {
    let bound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !bound {
        return pod;
    }
    if let Some(md) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
        md.remove("annotations");
        md.remove("managedFields");
    }
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.retain(|k, _| {
            matches!(
                k.as_str(),
                "nodeName"
                    | "schedulerName"
                    | "hostNetwork"
                    | "overhead"
                    | "priority"
                    | "preemptionPolicy"
                    | "affinity"
                    | "containers"
                    | "initContainers"
            )
        });
        for list in ["containers", "initContainers"] {
            for c in spec
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(c) = c.as_object_mut() {
                    c.retain(|k, _| {
                        matches!(k.as_str(), "name" | "resources" | "ports" | "restartPolicy")
                    });
                }
            }
        }
    }
    if let Some(status) = pod.get_mut("status").and_then(Value::as_object_mut) {
        status.retain(|k, _| k == "phase");
    }
    pod
}

/// What the scheduler needs.
#[derive(Clone)]
pub struct SchedulerOptions {
    /// This replica's identity in the election.
    pub identity: String,
    /// Election timings.
    pub election: ElectionTimings,
    /// Pods handled per actor turn (keeps the mailbox responsive).
    pub batch: usize,
}

impl SchedulerOptions {
    /// Defaults for a replica called `identity`.
    pub fn new(identity: &str) -> Self {
        SchedulerOptions {
            identity: identity.into(),
            election: ElectionTimings::default(),
            batch: 256,
        }
    }
}

/// A change seen by one of the informers.
#[derive(Message)]
#[rtype(result = "()")]
enum Seen {
    Node(Notification),
    Pod(Notification),
    Leading(bool),
}

/// Schedule what is queued.
#[derive(Message)]
#[rtype(result = "()")]
struct Drain;

/// A binding failed: forget the assumption and try the pod again.
#[derive(Message)]
#[rtype(result = "()")]
struct BindFailed {
    pod: Value,
    node: String,
}

/// The Scheduler actor.
pub struct Scheduler {
    /// Configuration.
    options: SchedulerOptions,
    /// Its connection to the API server.
    client: ApiClient,
    /// Node summaries, in a vector the algorithm scans, with an index by name.
    nodes: Vec<NodeSummary>,
    /// Index of `nodes` by node name.
    by_name: HashMap<String, usize>,
    /// Pods waiting for a decision, by key.
    queue: VecDeque<String>,
    /// Every unscheduled pod, by `namespace/name` (read from the pod cache when its turn
    /// comes: a queue of keys costs bytes, a queue of decoded pods ~16 KB each).
    unscheduled: HashSet<String>,
    /// The pod informer's cache.
    pods: Cache,
    /// Pods that fit nowhere, retried when the cluster changes.
    parked: HashMap<String, String>,
    /// Whether this replica leads.
    leading: bool,
    /// Rotates ties between equally good nodes.
    tie: usize,
    /// Where the next decision starts filtering nodes (see [`algorithm::select_node`]).
    next_start: usize,
    /// Keeps the informers and the election alive.
    keep: Vec<Box<dyn std::any::Any>>,
    /// A Drain is already queued.
    draining: bool,
}

impl Scheduler {
    /// A scheduler talking to the API server through `client`.
    pub fn new(options: SchedulerOptions, client: ApiClient) -> Self {
        Scheduler {
            options,
            client,
            nodes: Vec::new(),
            by_name: HashMap::new(),
            queue: VecDeque::new(),
            unscheduled: HashSet::new(),
            pods: Cache::default(),
            parked: HashMap::new(),
            leading: false,
            tie: 0,
            next_start: 0,
            keep: Vec::new(),
            draining: false,
        }
    }

    fn key(pod: &Value) -> String {
        format!("{}/{}", meta::namespace(pod), meta::name(pod))
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.leading && !self.draining && !self.queue.is_empty() {
            self.draining = true;
            ctx.notify(Drain);
        }
    }

    /// The cluster changed: give every parked pod another chance.
    fn unpark(&mut self) {
        for (k, _) in self.parked.drain() {
            self.queue.push_back(k);
        }
    }

    fn node_of(&mut self, name: &str) -> Option<&mut NodeSummary> {
        let i = *self.by_name.get(name)?;
        self.nodes.get_mut(i)
    }

    fn on_node(&mut self, n: Notification) {
        match n {
            Notification::Added(node) | Notification::Updated(_, node) => {
                let name = meta::name(&node).to_string();
                match self.by_name.get(&name) {
                    Some(&i) => self.nodes[i].update_node(&node),
                    None => {
                        self.by_name.insert(name, self.nodes.len());
                        self.nodes.push(NodeSummary::new(&node));
                    }
                }
                self.unpark();
            }
            Notification::Deleted(node) => {
                let name = meta::name(&node).to_string();
                if let Some(i) = self.by_name.remove(&name) {
                    self.nodes.swap_remove(i);
                    if let Some(moved) = self.nodes.get(i) {
                        self.by_name.insert(moved.name.clone(), i);
                    }
                }
            }
            Notification::Synced => {}
        }
    }

    fn on_pod(&mut self, n: Notification) {
        match n {
            Notification::Added(pod) | Notification::Updated(_, pod) => {
                let key = Self::key(&pod);
                let node = pod
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if !node.is_empty() {
                    self.unscheduled.remove(&key);
                    self.parked.remove(&key);
                    let terminal = algorithm::is_terminal(&pod);
                    if let Some(summary) = self.node_of(&node) {
                        if terminal {
                            summary.remove_pod(&pod);
                        } else {
                            summary.add_pod(&pod);
                        }
                    }
                    if terminal {
                        self.unpark();
                    }
                    return;
                }
                let ours = pod
                    .pointer("/spec/schedulerName")
                    .and_then(Value::as_str)
                    .is_none_or(|s| s == SCHEDULER_NAME);
                if !ours || pod.pointer("/metadata/deletionTimestamp").is_some() {
                    return;
                }
                let fresh = self.unscheduled.insert(key.clone());
                if fresh && !self.parked.contains_key(&key) {
                    self.queue.push_back(key);
                }
            }
            Notification::Deleted(pod) => {
                let key = Self::key(&pod);
                self.unscheduled.remove(&key);
                self.parked.remove(&key);
                let node = pod
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if let Some(summary) = self.node_of(&node) {
                    summary.remove_pod(&pod);
                }
                self.unpark();
            }
            Notification::Synced => {}
        }
    }

    /// Decides one pod: bind it (assuming it on the node at once), or park it with a reason.
    fn schedule_one(&mut self, key: String, ctx: &mut Context<Self>) {
        if !self.unscheduled.contains(&key) {
            return;
        }
        let (ns, name) = key.split_once('/').unwrap_or(("", &key));
        let Some(pod) = self.pods.get(ns, name) else {
            self.unscheduled.remove(&key);
            return;
        };
        if pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
        {
            self.unscheduled.remove(&key);
            return;
        }
        // The decision continues the trace of the write that made this version of the pod.
        let span = Span::start("Scheduler/schedule", trace::of(&pod)).about(
            "schedule",
            ObjectRef {
                resource: "pods".into(),
                namespace: meta::namespace(&pod).into(),
                name: meta::name(&pod).into(),
            },
        );
        let summary = PodSummary::new(&pod);
        self.tie = self.tie.wrapping_add(1);
        let decision =
            algorithm::select_node(&summary, &self.nodes, self.tie, &mut self.next_start);
        let tracer = self.client.tracer();
        let result = match &decision {
            Ok(i) => {
                tracer.finish(&span, &format!("node {}", self.nodes[*i].name));
                "scheduled"
            }
            Err(_) => {
                tracer.finish(&span, "unschedulable");
                "unschedulable"
            }
        };
        crate::metrics::counter(
            "scheduler_schedule_attempts_total",
            "Scheduling decisions, by result.",
            &["result"],
        )
        .inc(&[result]);
        crate::metrics::histogram(
            "scheduler_scheduling_attempt_duration_seconds",
            "Time to filter and score the nodes for one pod.",
            &["result"],
            crate::metrics::LATENCY_BUCKETS,
        )
        .observe(&[result], span.elapsed().as_secs_f64());
        match decision {
            Ok(i) => {
                let node = self.nodes[i].name.clone();
                let mut assumed = pod.clone();
                assumed["spec"]["nodeName"] = json!(node);
                self.nodes[i].add_pod(&assumed);
                self.unscheduled.remove(&key);
                let pods = self
                    .client
                    .api("", "pods", Some(meta::namespace(&pod)))
                    .with_parent(Some(span.ctx));
                let events = self.client.api("", "events", Some(meta::namespace(&pod)));
                let instance = self.options.identity.clone();
                let addr = ctx.address();
                actix::spawn(async move {
                    let binding = json!({"apiVersion": "v1", "kind": "Binding",
                        "metadata": {"name": meta::name(&pod), "namespace": meta::namespace(&pod)},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                    match pods
                        .create_subresource(meta::name(&pod), "binding", &binding)
                        .await
                    {
                        Ok(_) => {
                            let msg = format!(
                                "Successfully assigned {}/{} to {node}",
                                meta::namespace(&pod),
                                meta::name(&pod)
                            );
                            let _ = events
                                .create(&event(&pod, &instance, "Normal", "Scheduled", &msg))
                                .await;
                        }
                        Err(e) => {
                            tracing::debug!(pod = %meta::name(&pod), error = %e, "binding failed");
                            addr.do_send(BindFailed { pod: assumed, node });
                        }
                    }
                });
            }
            Err(message) => {
                self.parked.insert(key, message.clone());
                let pods = self.client.api("", "pods", Some(meta::namespace(&pod)));
                let events = self.client.api("", "events", Some(meta::namespace(&pod)));
                let instance = self.options.identity.clone();
                actix::spawn(async move {
                    let already = pod
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled"))
                        .is_some_and(|c| {
                            c["status"] == "False" && c["message"] == message.as_str()
                        });
                    if already {
                        return;
                    }
                    let status = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False",
                        "reason": "Unschedulable", "message": message, "lastProbeTime": null,
                        "lastTransitionTime": meta::now()}]}});
                    let _ = pods
                        .patch(meta::name(&pod), Some("status"), PatchType::Merge, &status)
                        .await;
                    let _ = events
                        .create(&event(
                            &pod,
                            &instance,
                            "Warning",
                            "FailedScheduling",
                            &message,
                        ))
                        .await;
                });
            }
        }
    }
}

/// A core/v1 Event about a pod from the scheduler replica `instance` (its election identity,
/// as kube-scheduler names itself in `reportingInstance`), so one can tell which replica acted.
fn event(pod: &Value, instance: &str, kind: &str, reason: &str, message: &str) -> Value {
    let now = meta::now();
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", meta::name(pod)), "namespace": meta::namespace(pod)},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta::name(pod),
            "namespace": meta::namespace(pod), "uid": meta::uid(pod),
            "resourceVersion": meta::resource_version(pod)},
        "reason": reason, "message": message, "type": kind,
        "source": {"component": SCHEDULER_NAME}, "reportingComponent": SCHEDULER_NAME,
        "reportingInstance": instance,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    })
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let mut nodes = Informer::start(self.client.api("", "nodes", None), ListOptions::default());
        let mut pods = Informer::start_with(
            self.client.api("", "pods", None),
            ListOptions::default(),
            Some(KEEP),
        );
        self.pods = pods.cache.clone();
        let (mut node_rx, mut pod_rx) = (
            std::mem::replace(
                &mut nodes.notifications,
                tokio::sync::mpsc::unbounded_channel().1,
            ),
            std::mem::replace(
                &mut pods.notifications,
                tokio::sync::mpsc::unbounded_channel().1,
            ),
        );
        let a = addr.clone();
        actix::spawn(async move {
            while let Some(n) = node_rx.recv().await {
                a.do_send(Seen::Node(n));
            }
        });
        let a = addr.clone();
        actix::spawn(async move {
            while let Some(n) = pod_rx.recv().await {
                a.do_send(Seen::Pod(n));
            }
        });
        let election: Election = elect(
            self.client
                .api("coordination.k8s.io", "leases", Some("kube-system")),
            "skiff-scheduler",
            &self.options.identity,
            self.options.election,
        );
        let mut leading = election.is_leader.clone();
        actix::spawn(async move {
            loop {
                let now = *leading.borrow_and_update();
                addr.do_send(Seen::Leading(now));
                if leading.changed().await.is_err() {
                    return;
                }
            }
        });
        self.keep.push(Box::new(nodes));
        self.keep.push(Box::new(pods));
        self.keep.push(Box::new(election));
        // Retry parked pods now and then too (e.g. a node's taint was lifted elsewhere).
        ctx.run_interval(Duration::from_secs(10), |s, ctx| {
            s.unpark();
            s.kick(ctx);
        });
    }
}

impl Handler<Seen> for Scheduler {
    type Result = ();

    fn handle(&mut self, seen: Seen, ctx: &mut Context<Self>) {
        let _span = crate::trace::handler_span(
            "Scheduler",
            "Seen",
            match &seen {
                Seen::Node(n) | Seen::Pod(n) => n.object(),
                _ => None,
            },
        )
        .entered();
        match seen {
            Seen::Node(n) => self.on_node(n),
            Seen::Pod(n) => self.on_pod(n),
            Seen::Leading(l) => {
                if l != self.leading {
                    tracing::info!(identity = %self.options.identity, leading = l, "scheduler leadership");
                }
                self.leading = l;
            }
        }
        self.kick(ctx);
    }
}

impl Handler<Drain> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) {
        let _span = crate::trace::handler_span("Scheduler", "Drain", None).entered();
        self.draining = false;
        if !self.leading {
            return;
        }
        for _ in 0..self.options.batch {
            let Some(key) = self.queue.pop_front() else {
                break;
            };
            self.schedule_one(key, ctx);
        }
        self.kick(ctx);
    }
}

impl Handler<BindFailed> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: BindFailed, ctx: &mut Context<Self>) {
        let _span = crate::trace::handler_span("Scheduler", "BindFailed", Some(&msg.pod)).entered();
        if let Some(summary) = self.node_of(&msg.node) {
            summary.remove_pod(&msg.pod);
        }
        // The informer will tell whether the pod is bound elsewhere or still waits.
        let key = Self::key(&msg.pod);
        if self.unscheduled.insert(key.clone()) {
            self.queue.push_back(key);
        }
        self.kick(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bound, Running pod as a kubelet reports it: what the node summary counts must be
    /// the same whether it reads the whole pod or what the cache keeps of it.
    #[test]
    fn the_kept_pod_counts_as_the_whole_one() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "a"},
                "annotations": {"note": "x".repeat(500)},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": "rs1", "controller": true}]},
            "spec": {"nodeName": "n1", "schedulerName": "default-scheduler",
                "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}],
                "containers": [{"name": "c", "image": "app:1", "command": ["sleep", "1d"],
                    "env": [{"name": "A", "value": "1"}],
                    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}},
                    "ports": [{"containerPort": 80, "hostPort": 8080}]}],
                "initContainers": [{"name": "i", "image": "init:1",
                    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "hostIP": "10.1.0.1",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-12-07T00:00:00Z"}}}]}
        });
        let kept = keep(pod.clone());
        assert!(kept.to_string().len() * 2 < pod.to_string().len(), "{kept}");
        assert_eq!(algorithm::pod_key(&kept), algorithm::pod_key(&pod));
        assert_eq!(algorithm::owner_key(&kept), algorithm::owner_key(&pod));
        assert_eq!(
            algorithm::pod_requests(&kept),
            algorithm::pod_requests(&pod)
        );
        assert_eq!(
            algorithm::pod_non_zero_requests(&kept),
            algorithm::pod_non_zero_requests(&pod)
        );
        let node = json!({"metadata": {"name": "n1"},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}});
        let (mut whole, mut small) = (NodeSummary::new(&node), NodeSummary::new(&node));
        whole.add_pod(&pod);
        small.add_pod(&kept);
        assert_eq!(whole.requested, small.requested);
        assert_eq!(whole.host_ports, small.host_ports);
        assert_eq!(whole.owner_counts, small.owner_counts);
        let mut done = kept.clone();
        done["status"]["phase"] = json!("Succeeded");
        assert!(algorithm::is_terminal(&keep(done)));
        // A pod still waiting for a node is kept whole.
        let mut waiting = pod.clone();
        waiting["spec"].as_object_mut().unwrap().remove("nodeName");
        assert_eq!(keep(waiting.clone()), waiting);
    }
}
