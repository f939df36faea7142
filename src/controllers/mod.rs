//! The controller-manager: every controller is a `runtime::Controller` running its
//! `Reconciler` over a work queue that informers fill, all gated by one leader election
//! (Lease `skiff-controller-manager`). Controllers talk to the API server only through
//! `ApiClient`.

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

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::api::meta;
use crate::client::leader::{elect, Election, ElectionTimings};
use crate::client::ApiClient;

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
