//! The taint manager and the unschedulable taint, on the controller runtime (kube's
//! `NoExecuteTaintManager` and the node lifecycle controller's `TaintNodesByCondition` for
//! `spec.unschedulable`):
//!
//! - A pod on a node with a `NoExecute` taint it does not tolerate is deleted at once; one
//!   that tolerates it for `tolerationSeconds` is deleted when that much time has passed since
//!   the taint was added (`timeAdded`, or when this controller first saw it); one that
//!   tolerates it without a limit stays. The `unreachable` and `not-ready` taints are left to
//!   the node lifecycle controller, whose eviction timeout applies to them.
//! - A cordoned node (`spec.unschedulable`) carries `node.kubernetes.io/unschedulable:
//!   NoSchedule`, removed when it is uncordoned.
//!
//! Keys: `pod/<namespace>/<name>` and `node/<name>`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::runtime::{self, Action, Controller, ReconcileError, Reconciler};
use super::{key_of, record};
use crate::api::meta;
use crate::api::wire::{DeleteOptions, ListOptions, PatchType};
use crate::client::{ApiClient, Cache, Informer, Notification};

/// The taint a cordoned node carries.
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// Taints the node lifecycle controller evicts for (with its own timeout).
const LIFECYCLE_TAINTS: [&str; 2] = [
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/not-ready",
];

const COMPONENT: &str = "taint-eviction-controller";

/// The reconciler.
#[derive(Clone)]
pub struct Taints {
    client: ApiClient,
    nodes: Cache,
    pods: Cache,
    /// When each (node, taint key) was first seen without a `timeAdded`.
    first_seen: Arc<Mutex<HashMap<(String, String), SystemTime>>>,
}

/// The controller, running while `leading` is true.
pub type TaintController = Controller<Taints>;

/// Starts it (inside an actix System).
pub fn start(client: ApiClient, leading: watch::Receiver<bool>) -> Addr<TaintController> {
    let nodes = Informer::start(client.api("", "nodes", None), ListOptions::default());
    let pods = Informer::start(client.api("", "pods", None), ListOptions::default());
    let reconciler = Taints {
        client,
        nodes: nodes.cache.clone(),
        pods: pods.cache.clone(),
        first_seen: Arc::default(),
    };
    let pod_cache = reconciler.pods.clone();
    Controller::create(move |ctx| {
        let addr = ctx.address();
        let mut c = Controller::new("taint", reconciler, leading).workers(5);
        c.keep(runtime::watch(nodes, addr.clone(), move |n| match n {
            Notification::Added(node) | Notification::Updated(_, node) => {
                let name = meta::name(node);
                let mut keys = vec![format!("node/{name}")];
                // Its pods only when its taints changed (a status update costs no pod).
                let old = match n {
                    Notification::Updated(old, _) => old.pointer("/spec/taints"),
                    _ => None,
                };
                if old == node.pointer("/spec/taints") {
                    return keys;
                }
                keys.extend(
                    pod_cache
                        .on_node(name)
                        .iter()
                        .map(|p| format!("pod/{}", key_of(p))),
                );
                keys
            }
            _ => Vec::new(),
        }));
        c.keep(runtime::watch(pods, addr, |n| match n {
            Notification::Added(p) | Notification::Updated(_, p) => {
                vec![format!("pod/{}", key_of(p))]
            }
            _ => Vec::new(),
        }));
        c
    })
}

impl Reconciler for Taints {
    fn reconcile(&self, key: String) -> LocalBoxFuture<'static, Result<Action, ReconcileError>> {
        let me = self.clone();
        Box::pin(async move {
            if let Some(rest) = key.strip_prefix("pod/") {
                let (ns, name) = rest.split_once('/').unwrap_or(("", rest));
                me.pod(ns, name).await
            } else if let Some(node) = key.strip_prefix("node/") {
                me.node(node).await
            } else {
                Ok(Action::AwaitChange)
            }
        })
    }
}

/// Whether `toleration` tolerates `taint` (kube's `Toleration.ToleratesTaint`).
pub fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let effect = toleration["effect"].as_str().unwrap_or("");
    if !effect.is_empty() && Some(effect) != taint["effect"].as_str() {
        return false;
    }
    let key = toleration["key"].as_str().unwrap_or("");
    let operator = toleration["operator"].as_str().unwrap_or("Equal");
    if key.is_empty() {
        // An empty key with Exists tolerates everything.
        return operator == "Exists";
    }
    if Some(key) != taint["key"].as_str() {
        return false;
    }
    match operator {
        "Exists" => true,
        _ => toleration["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or(""),
    }
}

/// How long `pod` may stay on a node with `taint`: None if no toleration matches (evict now),
/// `Some(None)` forever, `Some(Some(d))` for `d`.
fn tolerated_for(pod: &Value, taint: &Value) -> Option<Option<Duration>> {
    let matching: Vec<&Value> = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| tolerates(t, taint))
        .collect();
    if matching.is_empty() {
        return None;
    }
    // The shortest limit among those that match; any without a limit tolerates it forever
    // only when none has one (kube's getMinTolerationTime).
    let limits: Vec<i64> = matching
        .iter()
        .filter_map(|t| t["tolerationSeconds"].as_i64())
        .collect();
    Some(
        limits
            .into_iter()
            .min()
            .map(|s| Duration::from_secs(s.max(0) as u64)),
    )
}

impl Taints {
    fn added_at(&self, node: &str, taint: &Value) -> SystemTime {
        if let Some(t) = taint["timeAdded"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        {
            return SystemTime::from(t);
        }
        let key = (
            node.to_string(),
            taint["key"].as_str().unwrap_or("").to_string(),
        );
        *self
            .first_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert_with(SystemTime::now)
    }

    async fn pod(&self, ns: &str, name: &str) -> Result<Action, ReconcileError> {
        let Some(pod) = self.pods.get(ns, name) else {
            return Ok(Action::AwaitChange);
        };
        let pod: Value = pod;
        let Some(node_name) = pod.pointer("/spec/nodeName").and_then(Value::as_str) else {
            return Ok(Action::AwaitChange);
        };
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(Action::AwaitChange);
        }
        let Some(node) = self.nodes.get("", node_name) else {
            return Ok(Action::AwaitChange);
        };
        let taints: Vec<Value> = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|t| t["effect"] == "NoExecute")
            .filter(|t| !LIFECYCLE_TAINTS.contains(&t["key"].as_str().unwrap_or("")))
            .cloned()
            .collect();
        let now = SystemTime::now();
        let mut wait: Option<Duration> = None;
        let mut evict = None;
        for taint in &taints {
            match tolerated_for(&pod, taint) {
                None => {
                    evict = Some(taint.clone());
                    break;
                }
                Some(None) => {}
                Some(Some(limit)) => {
                    let until = self.added_at(node_name, taint) + limit;
                    match until.duration_since(now) {
                        Ok(left) if !left.is_zero() => {
                            wait = Some(wait.map_or(left, |w| w.min(left)));
                        }
                        _ => {
                            evict = Some(taint.clone());
                            break;
                        }
                    }
                }
            }
        }
        if let Some(taint) = evict {
            let api = self.client.api("", "pods", Some(ns));
            match api.delete(name, &DeleteOptions::default()).await {
                Ok(_) | Err(crate::api::Status { code: 404, .. }) => {}
                Err(e) => return Err(e.into()),
            }
            tracing::info!(pod = %name, namespace = %ns, node = %node_name, taint = %taint["key"], "evicted for a NoExecute taint");
            record(
                &self.client,
                &pod,
                COMPONENT,
                "Normal",
                "TaintManagerEviction",
                &format!("Marking for deletion Pod {ns}/{name}"),
            )
            .await;
            return Ok(Action::AwaitChange);
        }
        Ok(match wait {
            Some(left) => Action::requeue(left),
            None => Action::AwaitChange,
        })
    }

    /// The unschedulable taint follows `spec.unschedulable`.
    async fn node(&self, name: &str) -> Result<Action, ReconcileError> {
        let Some(node) = self.nodes.get("", name) else {
            return Ok(Action::AwaitChange);
        };
        let cordoned = node.pointer("/spec/unschedulable") == Some(&Value::Bool(true));
        let taints: Vec<Value> = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let has = taints.iter().any(|t| t["key"] == UNSCHEDULABLE);
        if cordoned == has {
            return Ok(Action::AwaitChange);
        }
        let next: Vec<Value> = if cordoned {
            let mut t = taints;
            t.push(json!({"key": UNSCHEDULABLE, "effect": "NoSchedule", "timeAdded": crate::api::meta::now()}));
            t
        } else {
            taints
                .into_iter()
                .filter(|t| t["key"] != UNSCHEDULABLE)
                .collect()
        };
        let next = if next.is_empty() {
            Value::Null
        } else {
            json!(next)
        };
        let patch = json!({"metadata": {"resourceVersion": meta::resource_version(&node)},
            "spec": {"taints": next}});
        match self
            .client
            .api("", "nodes", None)
            .patch(name, None, PatchType::Merge, &patch)
            .await
        {
            Ok(_) | Err(crate::api::Status { code: 404, .. }) => Ok(Action::AwaitChange),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_match_as_kube_matches_them() {
        let taint = json!({"key": "k", "value": "v", "effect": "NoExecute"});
        assert!(tolerates(&json!({"key": "k", "value": "v"}), &taint));
        assert!(tolerates(
            &json!({"key": "k", "operator": "Exists"}),
            &taint
        ));
        assert!(tolerates(&json!({"operator": "Exists"}), &taint));
        assert!(!tolerates(&json!({"key": "k", "value": "w"}), &taint));
        assert!(!tolerates(
            &json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"}),
            &taint
        ));
        assert!(!tolerates(
            &json!({"key": "other", "operator": "Exists"}),
            &taint
        ));
    }

    #[test]
    fn the_shortest_limit_wins_and_no_match_evicts_now() {
        let taint = json!({"key": "k", "value": "v", "effect": "NoExecute"});
        let pod = |ts: Value| json!({"spec": {"tolerations": ts}});
        assert_eq!(tolerated_for(&pod(json!([])), &taint), None);
        assert_eq!(
            tolerated_for(&pod(json!([{"key": "k", "operator": "Exists"}])), &taint),
            Some(None)
        );
        assert_eq!(
            tolerated_for(
                &pod(
                    json!([{"key": "k", "operator": "Exists", "tolerationSeconds": 30},
                    {"operator": "Exists", "tolerationSeconds": 5}])
                ),
                &taint
            ),
            Some(Some(Duration::from_secs(5)))
        );
    }
}
