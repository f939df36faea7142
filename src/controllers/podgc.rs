//! The pod garbage collector, on the controller runtime (kube's `PodGC`):
//!
//! - a pod bound to a node that does not exist (checked live, after a quarantine of
//!   [`QUARANTINE`] so a node being registered is not mistaken for a gone one) is deleted at
//!   once (grace period 0): no kubelet will ever run or stop it;
//! - a pod being deleted that was never scheduled is deleted at once: no kubelet would ever
//!   confirm it;
//! - terminated pods (Succeeded or Failed) beyond [`TERMINATED_THRESHOLD`] are deleted,
//!   oldest first (kube's `--terminated-pod-gc-threshold`).
//!
//! Keys: `pod/<namespace>/<name>`, and `terminated` for the threshold.

use std::time::Duration;

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use serde_json::Value;
use tokio::sync::watch;

use super::key_of;
use super::runtime::{self, Action, Controller, ReconcileError, Reconciler};
use crate::api::meta;
use crate::api::wire::{DeleteOptions, ListOptions, Preconditions};
use crate::client::{ApiClient, Cache, Informer, Notification};

/// How long a pod's node must be missing before the pod is collected.
pub const QUARANTINE: Duration = Duration::from_secs(40);
/// Terminated pods kept (kube-controller-manager's default).
pub const TERMINATED_THRESHOLD: usize = 12_500;

/// The reconciler.
#[derive(Clone)]
pub struct PodGc {
    client: ApiClient,
    pods: Cache,
    nodes: Cache,
    quarantine: Duration,
    threshold: usize,
}

/// The pod garbage collector, running while `leading` is true.
pub type PodGcController = Controller<PodGc>;

fn terminated(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// Starts it (inside an actix System).
pub fn start(client: ApiClient, leading: watch::Receiver<bool>) -> Addr<PodGcController> {
    start_with(client, leading, QUARANTINE, TERMINATED_THRESHOLD)
}

/// Starts it with another quarantine and threshold (tests).
pub fn start_with(
    client: ApiClient,
    leading: watch::Receiver<bool>,
    quarantine: Duration,
    threshold: usize,
) -> Addr<PodGcController> {
    let pods = Informer::start(client.api("", "pods", None), ListOptions::default());
    let nodes = Informer::start(client.api("", "nodes", None), ListOptions::default());
    let reconciler = PodGc {
        client,
        pods: pods.cache.clone(),
        nodes: nodes.cache.clone(),
        quarantine,
        threshold,
    };
    let pod_cache = reconciler.pods.clone();
    Controller::create(move |ctx| {
        let addr = ctx.address();
        let mut c = Controller::new("podgc", reconciler, leading);
        c.keep(runtime::watch(pods, addr.clone(), |n| match n {
            Notification::Added(p) | Notification::Updated(_, p) => {
                let mut keys = vec![format!("pod/{}", key_of(p))];
                if terminated(p) {
                    keys.push("terminated".into());
                }
                keys
            }
            _ => Vec::new(),
        }));
        c.keep(runtime::watch(nodes, addr, move |n| match n {
            Notification::Deleted(node) => pod_cache
                .on_node(meta::name(node))
                .iter()
                .map(|p| format!("pod/{}", key_of(p)))
                .collect(),
            _ => Vec::new(),
        }));
        c
    })
}

impl Reconciler for PodGc {
    fn reconcile(&self, key: String) -> LocalBoxFuture<'static, Result<Action, ReconcileError>> {
        let me = self.clone();
        Box::pin(async move {
            match key.strip_prefix("pod/") {
                Some(rest) => {
                    let (ns, name) = rest.split_once('/').unwrap_or(("", rest));
                    me.pod(ns, name).await
                }
                None if key == "terminated" => me.terminated().await,
                None => Ok(Action::AwaitChange),
            }
        })
    }
}

impl PodGc {
    /// Deletes `pod` now (grace 0, at its uid).
    async fn force_delete(&self, pod: &Value, why: &str) -> Result<(), ReconcileError> {
        let opts = DeleteOptions {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(meta::uid(pod).to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        let api = self.client.api("", "pods", Some(meta::namespace(pod)));
        match api.delete(meta::name(pod), &opts).await {
            Ok(_) => {
                tracing::info!(pod = %meta::name(pod), namespace = %meta::namespace(pod), "PodGC: {why}");
                Ok(())
            }
            Err(e) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn pod(&self, ns: &str, name: &str) -> Result<Action, ReconcileError> {
        let Some(pod) = self.pods.get(ns, name) else {
            return Ok(Action::AwaitChange);
        };
        let pod: Value = pod;
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        let Some(node) = node else {
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                self.force_delete(&pod, "deleting an unscheduled terminating pod")
                    .await?;
            }
            return Ok(Action::AwaitChange);
        };
        if self.nodes.get("", node).is_some() {
            return Ok(Action::AwaitChange);
        }
        // Not in the cache: is it really gone, and has it been for the quarantine?
        match self.client.api("", "nodes", None).get(node).await {
            Ok(_) => return Ok(Action::AwaitChange),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        let created = pod
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(std::time::SystemTime::from)
            .unwrap_or(std::time::UNIX_EPOCH);
        let age = std::time::SystemTime::now()
            .duration_since(created)
            .unwrap_or_default();
        if age < self.quarantine {
            return Ok(Action::requeue(self.quarantine - age));
        }
        self.force_delete(
            &pod,
            &format!("deleting a pod bound to node {node}, which does not exist"),
        )
        .await?;
        Ok(Action::AwaitChange)
    }

    /// Keeps at most `threshold` terminated pods, deleting the oldest.
    async fn terminated(&self) -> Result<Action, ReconcileError> {
        let mut done: Vec<Value> = self.pods.list().into_iter().filter(terminated).collect();
        if done.len() <= self.threshold {
            return Ok(Action::AwaitChange);
        }
        done.sort_by(|a, b| {
            let t = |p: &Value| {
                p.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            t(a).cmp(&t(b))
        });
        let excess = done.len() - self.threshold;
        for pod in &done[..excess] {
            self.force_delete(pod, "over the terminated pod threshold")
                .await?;
        }
        Ok(Action::AwaitChange)
    }
}
