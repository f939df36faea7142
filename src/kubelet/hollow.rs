//! Hollow nodes: many simulated nodes in one actor, as kwok does, for scale tests on one
//! machine. Each node is registered like a kubelet's, its Lease renewed on the kubelet's
//! schedule (the renewals of all nodes spread evenly over the period), its Ready condition
//! re-asserted when something marks it otherwise, and each pod bound to it reported Running
//! (every container running and ready) as soon as it is seen, then removed once it is being
//! deleted. Nothing runs: one watch of bound pods, one of nodes, one renewal loop, and a few
//! bytes per node — where a full kubelet per node costs a watch, a log subscription and a
//! worker task per pod.
//!
//! Every decision is taken from the event alone (a pod not yet Running is reported, a
//! terminating one removed), so a replayed or relisted event changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::api::meta;
use crate::api::wire::{event_type, DeleteOptions, ListOptions, PatchType, Preconditions};
use crate::client::{Api, ApiClient};

use super::KubeletOptions;

/// The label every hollow node carries.
pub const HOLLOW_LABEL: &str = "skiff.dev/hollow";

/// What the hollow nodes need.
#[derive(Clone)]
pub struct HollowOptions {
    /// Node names are this prefix and a number from 0.
    pub prefix: String,
    /// How many nodes.
    pub count: usize,
    /// Lease renewal period (Kubernetes: 10 s).
    pub lease_renew: Duration,
    /// Lease duration written into each Lease (Kubernetes: 40 s).
    pub lease_duration: Duration,
    /// Capacity of each node: cores, bytes, pods.
    pub capacity: (i64, i64, i64),
    /// Requests in flight at once, for registration and for renewals each.
    pub width: usize,
    /// Pod status updates and removals in flight at once (a real node pool has one kubelet
    /// per node, each with its own requests in flight).
    pub pod_width: usize,
}

impl HollowOptions {
    /// `count` nodes named `prefix0`, `prefix1`, … with the kubelet's defaults.
    pub fn new(prefix: &str, count: usize) -> Self {
        HollowOptions {
            prefix: prefix.into(),
            count,
            lease_renew: Duration::from_secs(10),
            lease_duration: Duration::from_secs(40),
            capacity: (32, 64 << 30, 110),
            width: 32,
            pod_width: 256,
        }
    }

    fn name(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    /// The node's number, if `name` is one of ours.
    fn index(&self, name: &str) -> Option<usize> {
        let i: usize = name.strip_prefix(&self.prefix)?.parse().ok()?;
        (i < self.count && self.name(i) == name).then_some(i)
    }

    /// Node `i`'s address: 10.64.0.0/10, one per node.
    fn node_ip(i: usize) -> String {
        format!("10.{}.{}.{}", 64 + (i >> 16) % 64, (i >> 8) & 255, i & 255)
    }

    fn node(&self, i: usize) -> Value {
        let mut o = KubeletOptions::new(&self.name(i));
        o.node_ip = Self::node_ip(i);
        o.capacity = self.capacity;
        let mut node = super::node_object(&o, "hollow://0.1");
        node["metadata"]["labels"][HOLLOW_LABEL] = json!("true");
        node
    }
}

/// The HollowNodes actor. See the module docs.
pub struct HollowNodes {
    options: Arc<HollowOptions>,
    client: ApiClient,
}

impl HollowNodes {
    /// Hollow nodes reaching the API server through `client` (an identity allowed to write
    /// every one of their Nodes, Leases and pods' status).
    pub fn new(options: HollowOptions, client: ApiClient) -> Self {
        HollowNodes {
            options: Arc::new(options),
            client,
        }
    }
}

impl Actor for HollowNodes {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let o = self.options.clone();
        let nodes = self.client.api("", "nodes", None);
        let leases = self
            .client
            .api("coordination.k8s.io", "leases", Some("kube-node-lease"));
        let pods = self.client.api("", "pods", None);
        let run = async move {
            futures::stream::iter(0..o.count)
                .map(|i| {
                    let (nodes, node) = (nodes.clone(), o.node(i));
                    async move { super::register(&nodes, &node).await }
                })
                .buffer_unordered(o.width)
                .collect::<Vec<_>>()
                .await;
            tracing::info!(count = o.count, prefix = %o.prefix, "hollow nodes registered");
            futures::join!(
                renew(leases, o.clone()),
                keep_ready(nodes, o.clone()),
                run_pods(pods, o.clone())
            );
        };
        ctx.spawn(run.into_actor(self));
    }
}

/// Renews every node's Lease once a period, node `i` at `i/count` of it, `width` at a time.
async fn renew(leases: Api, o: Arc<HollowOptions>) {
    let start = tokio::time::Instant::now();
    for round in 0u32.. {
        let base = start + o.lease_renew * round;
        futures::stream::iter(0..o.count)
            .then(|i| {
                let due = base + o.lease_renew.mul_f64(i as f64 / o.count as f64);
                async move {
                    tokio::time::sleep_until(due).await;
                    i
                }
            })
            .map(|i| renew_one(&leases, o.name(i), o.lease_duration))
            .buffer_unordered(o.width)
            .collect::<Vec<_>>()
            .await;
    }
}

async fn renew_one(leases: &Api, name: String, duration: Duration) {
    let spec = json!({"holderIdentity": name, "leaseDurationSeconds": duration.as_secs(),
        "renewTime": meta::now()});
    let renewed = match leases
        .patch(&name, None, PatchType::Merge, &json!({"spec": spec}))
        .await
    {
        Err(e) if e.code == 404 => leases
            .create(
                &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name}, "spec": spec}),
            )
            .await
            .map(|_| ()),
        other => other.map(|_| ()),
    };
    if let Err(e) = renewed {
        tracing::debug!(node = %name, error = %e, "hollow lease renewal failed");
    }
}

/// Follows `api` (nodes or pods) from a fresh list, handing each event's object to `each`;
/// relists after an error (an expired revision) with a short back-off.
async fn follow<F, Fut>(api: Api, options: ListOptions, each: F)
where
    F: Fn(Value) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut failures = 0;
    loop {
        let mut watch = api.watch(&options);
        while let Some(ev) = watch.next().await {
            match ev {
                Ok(ev)
                    if matches!(
                        ev.event_type.as_str(),
                        event_type::ADDED | event_type::MODIFIED
                    ) =>
                {
                    failures = 0;
                    each(ev.object).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "hollow nodes' watch ended; relisting");
                    break;
                }
            }
        }
        failures += 1;
        tokio::time::sleep(crate::client::retry::backoff(
            Duration::from_millis(100),
            Duration::from_secs(5),
            failures,
        ))
        .await;
    }
}

/// Marks a node of ours Ready again when something (the node lifecycle controller) said
/// otherwise, as the kubelet's status loop does.
async fn keep_ready(nodes: Api, o: Arc<HollowOptions>) {
    let options = ListOptions {
        label_selector: Some(format!("{HOLLOW_LABEL}=true")),
        ..Default::default()
    };
    follow(nodes.clone(), options, |node| {
        let (nodes, o) = (nodes.clone(), o.clone());
        async move {
            let Some(i) = o.index(meta::name(&node)) else {
                return;
            };
            let ready = node
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .is_some_and(|c| c["status"] == "True");
            if !ready {
                let conditions = o.node(i)["status"]["conditions"].clone();
                let _ = nodes
                    .patch(
                        &o.name(i),
                        Some("status"),
                        PatchType::Merge,
                        &json!({"status": {"conditions": conditions}}),
                    )
                    .await;
            }
        }
    })
    .await
}

/// Reports each pod bound to one of our nodes Running, and removes it once it is being
/// deleted; `pod_width` updates in flight at once.
async fn run_pods(pods: Api, o: Arc<HollowOptions>) {
    let options = ListOptions {
        field_selector: Some("spec.nodeName!=".into()),
        ..Default::default()
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(o.pod_width));
    // Addresses handed out per node, for pod IPs in the node's /24.
    let next_ip = Arc::new(std::sync::Mutex::new(HashMap::<usize, u8>::new()));
    follow(pods.clone(), options, |pod| {
        let (pods, o, permits, next_ip) =
            (pods.clone(), o.clone(), permits.clone(), next_ip.clone());
        async move {
            let node = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(i) = o.index(node) else {
                return;
            };
            let terminating = pod.pointer("/metadata/deletionTimestamp").is_some();
            let phase = pod
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !terminating && matches!(phase, "Running" | "Succeeded" | "Failed") {
                return;
            }
            let Ok(permit) = permits.acquire_owned().await else {
                return;
            };
            let pod_ip = {
                let mut next = next_ip.lock().unwrap_or_else(|p| p.into_inner());
                let k = next.entry(i).or_insert(1);
                *k = if *k >= 254 { 2 } else { *k + 1 };
                format!("10.{}.{}.{}", (i >> 8) & 255, i & 255, *k)
            };
            tokio::spawn(async move {
                let _permit = permit;
                let (ns, name) = (meta::namespace(&pod), meta::name(&pod));
                let api = pods.with_namespace(ns);
                let result = if terminating {
                    let options = DeleteOptions {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: Some(meta::uid(&pod).to_string()),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    api.delete(name, &options).await.map(|_| ())
                } else {
                    let status = running_status(&pod, &HollowOptions::node_ip(i), &pod_ip);
                    api.patch(
                        name,
                        Some("status"),
                        PatchType::Merge,
                        &json!({"status": status}),
                    )
                    .await
                    .map(|_| ())
                };
                match result {
                    Ok(()) => {}
                    Err(e) if e.code == 404 || e.code == 409 => {}
                    Err(e) => tracing::debug!(pod = %name, error = %e, "hollow pod update failed"),
                }
            });
        }
    })
    .await
}

/// The status a kubelet reports once every container of `pod` runs and is ready.
fn running_status(pod: &Value, host_ip: &str, pod_ip: &str) -> Value {
    let now = meta::now();
    let (ns, name) = (meta::namespace(pod), meta::name(pod));
    let statuses: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let (cname, image) = (c["name"].as_str().unwrap_or(""), c["image"].as_str().unwrap_or(""));
            json!({"name": cname, "image": image, "imageID": format!("hollow://{image}"),
                "containerID": format!("hollow://{ns}_{name}_{cname}"), "ready": true, "started": true,
                "restartCount": 0, "state": {"running": {"startedAt": now}}, "lastState": {}})
        })
        .collect();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    json!({
        "phase": "Running",
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "startTime": now,
        "containerStatuses": statuses,
        "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        let o = HollowOptions::new("h-", 300);
        assert_eq!(o.index("h-0"), Some(0));
        assert_eq!(o.index("h-299"), Some(299));
        assert_eq!(o.index("h-300"), None, "beyond the count");
        assert_eq!(o.index("h-007"), None, "not a name we gave");
        assert_eq!(o.index("x-1"), None);
        assert_eq!(HollowOptions::node_ip(258), "10.64.1.2");
        let node = o.node(5);
        assert_eq!(node["metadata"]["name"], "h-5");
        assert_eq!(node["metadata"]["labels"][HOLLOW_LABEL], "true");
        assert_eq!(node["status"]["addresses"][0]["address"], "10.64.0.5");
    }

    #[test]
    fn running_status_has_every_container_ready() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let s = running_status(&pod, "10.64.0.1", "10.0.1.2");
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["containerStatuses"].as_array().unwrap().len(), 2);
        assert!(s["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ready"] == true));
        assert!(s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "True"));
        assert_eq!(s["podIP"], "10.0.1.2");
    }
}
