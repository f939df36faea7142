//! The controller-manager: one actor per controller, each driven by informers and a queue of
//! keys to reconcile, all gated by one leader election (Lease `skiff-controller-manager`).
//! Controllers talk to the API server only through `ApiClient`.

pub mod deployment;
pub mod deployment_plan;
pub mod gc;
pub mod namespace;
pub mod nodelifecycle;
pub mod per_namespace;
pub mod podgc;
pub mod replicaset;
pub mod rootca;
pub mod run;
pub mod runtime;
pub mod serviceaccount;
pub mod taint;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::api::meta;
use crate::client::leader::{elect, Election, ElectionTimings};
use crate::client::{ApiClient, Informer, Notification};

/// `namespace/name` of an object.
pub fn key_of(obj: &Value) -> String {
    format!("{}/{}", meta::namespace(obj), meta::name(obj))
}

/// The uid of an object's controller owner, if it has one of `kind`.
pub fn controller_of(obj: &Value, kind: &str) -> Option<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["controller"] == true && r["kind"] == kind)
        .and_then(|r| r["uid"].as_str())
        .map(String::from)
}

/// A set of keys waiting for reconciliation (each at most once).
pub struct Queue {
    keys: BTreeSet<String>,
    /// `workqueue_depth{name}`: keys waiting.
    depth: crate::metrics::Gauge,
}

impl Queue {
    /// An empty queue, reported as `workqueue_depth{name="<name>"}`.
    pub fn named(name: &str) -> Self {
        Queue {
            keys: BTreeSet::new(),
            depth: crate::metrics::gauge(
                "workqueue_depth",
                "Keys waiting in a controller's queue, by controller.",
                &["name"],
            )
            .with(&[name]),
        }
    }

    /// Adds a key.
    pub fn add(&mut self, key: String) {
        self.keys.insert(key);
        self.depth.set(self.keys.len() as f64);
    }

    /// Takes every queued key.
    pub fn take(&mut self) -> Vec<String> {
        self.depth.set(0.0);
        std::mem::take(&mut self.keys).into_iter().collect()
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// An Event about `obj` from `component`.
pub fn event(obj: &Value, component: &str, kind: &str, reason: &str, message: &str) -> Value {
    let now = meta::now();
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", meta::name(obj)), "namespace": meta::namespace(obj)},
        "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta::name(obj),
            "namespace": meta::namespace(obj), "uid": meta::uid(obj), "resourceVersion": meta::resource_version(obj)},
        "reason": reason, "message": message, "type": kind,
        "source": {"component": component}, "reportingComponent": component,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    })
}

/// Records an event, ignoring failures (events are best effort).
pub async fn record(
    client: &ApiClient,
    obj: &Value,
    component: &str,
    kind: &str,
    reason: &str,
    message: &str,
) {
    let events = client.api("", "events", Some(meta::namespace(obj)));
    if let Err(e) = events
        .create(&event(obj, component, kind, reason, message))
        .await
    {
        tracing::debug!(error = %e, "recording an event");
    }
}

/// Starts the controller-manager's election; controllers act only while it says so.
pub fn leader(
    client: &ApiClient,
    identity: &str,
    timings: ElectionTimings,
) -> (Election, watch::Receiver<bool>) {
    let election = elect(
        client.api("coordination.k8s.io", "leases", Some("kube-system")),
        "skiff-controller-manager",
        identity,
        timings,
    );
    let rx = election.is_leader.clone();
    (election, rx)
}

/// Subscribes an informer's notifications to an actor as messages.
pub(crate) fn forward<A, M, F>(mut informer: Informer, addr: actix::Addr<A>, wrap: F) -> Informer
where
    A: actix::Actor<Context = actix::Context<A>> + actix::Handler<M>,
    M: actix::Message<Result = ()> + Send + 'static,
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
