//! The kubelet: registers its Node, renews its Lease, watches only the pods bound to it and
//! runs each through a pod worker on a `ContainerRuntime`; serves `kubectl logs` on its own
//! NATS subject. It reaches the API server only through `ApiClient`.

pub mod env;
pub mod hollow;
pub mod pod;
pub mod run;
pub mod runtime;
pub mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::api::codec;
use crate::api::subject;
use crate::api::wire::{ListOptions, LogRequest};
use crate::api::Status;
use crate::client::{ApiClient, Informer, Notification};
use runtime::{ContainerId, ContainerRuntime};

/// What a kubelet needs.
#[derive(Clone)]
pub struct KubeletOptions {
    /// The Node's name.
    pub node_name: String,
    /// The address pods and the node are reachable on.
    pub node_ip: String,
    /// Lease renewal period (Kubernetes: 10 s).
    pub lease_renew: Duration,
    /// Lease duration written into the Lease (Kubernetes: 40 s).
    pub lease_duration: Duration,
    /// Back-off of crashing containers.
    pub backoff: pod::Backoff,
    /// Capacity advertised: cores, bytes, pods.
    pub capacity: (i64, i64, i64),
    /// Give each pod its own loopback address `127.<n>.x.y` (pods of one machine then do
    /// not collide on ports); None: pods use the node's address.
    pub pod_subnet: Option<u8>,
    /// Where pods' volumes are written (kube's `<root-dir>/pods/<uid>/volumes`); None: pods
    /// get no volumes (hollow nodes, which make thousands of pods and no files).
    pub volume_root: Option<std::path::PathBuf>,
    /// The API server's HTTPS address as pods reach it (`host`, `port`): their
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`, as the `kubernetes` Service
    /// gives them in a cluster.
    pub api_endpoint: Option<(String, u16)>,
}

impl KubeletOptions {
    /// Defaults for a node of this machine.
    pub fn new(node_name: &str) -> Self {
        KubeletOptions {
            node_name: node_name.into(),
            node_ip: "127.0.0.1".into(),
            lease_renew: Duration::from_secs(10),
            lease_duration: Duration::from_secs(40),
            backoff: pod::Backoff {
                base: Duration::from_secs(10),
                max: Duration::from_secs(300),
            },
            capacity: (
                std::thread::available_parallelism()
                    .map(|n| n.get() as i64)
                    .unwrap_or(2),
                8 << 30,
                110,
            ),
            pod_subnet: None,
            volume_root: None,
            api_endpoint: None,
        }
    }

    /// The variables of the `kubernetes` Service every container gets, pointing at the API
    /// server (the docker-links style ones included, as the kubelet writes them).
    pub fn service_env(&self) -> BTreeMap<String, String> {
        let Some((host, port)) = &self.api_endpoint else {
            return BTreeMap::new();
        };
        let url = format!("tcp://{host}:{port}");
        [
            ("KUBERNETES_SERVICE_HOST", host.clone()),
            ("KUBERNETES_SERVICE_PORT", port.to_string()),
            ("KUBERNETES_SERVICE_PORT_HTTPS", port.to_string()),
            ("KUBERNETES_PORT", url.clone()),
            (&*format!("KUBERNETES_PORT_{port}_TCP"), url),
            (&*format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".into()),
            (
                &*format!("KUBERNETES_PORT_{port}_TCP_PORT"),
                port.to_string(),
            ),
            (&*format!("KUBERNETES_PORT_{port}_TCP_ADDR"), host.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// The Kubelet actor.
pub struct Kubelet {
    /// Configuration.
    options: KubeletOptions,
    /// Its connection to the API server.
    client: ApiClient,
    /// The container runtime.
    runtime: Arc<dyn ContainerRuntime>,
    /// Pod workers by uid: the latest spec goes down the channel.
    workers: HashMap<String, watch::Sender<Value>>,
    /// The informer of this node's pods (kept alive here).
    informer: Option<Informer>,
    /// Pod addresses handed out so far (for `pod_subnet`).
    next_ip: u32,
}

impl Kubelet {
    /// A kubelet for `options.node_name` on `runtime`.
    pub fn new(
        options: KubeletOptions,
        client: ApiClient,
        runtime: Arc<dyn ContainerRuntime>,
    ) -> Self {
        Kubelet {
            options,
            client,
            runtime,
            workers: HashMap::new(),
            informer: None,
            next_ip: 0,
        }
    }
}

/// An architecture as Kubernetes names it (Go's GOARCH): what `kubernetes.io/arch` and
/// `nodeInfo.architecture` say, and what every manifest's nodeSelector expects (`amd64`,
/// not Rust's `x86_64`).
fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The Node object a kubelet with `o` registers, its runtime reporting `runtime_version`.
fn node_object(o: &KubeletOptions, runtime_version: &str) -> Value {
    let (cpu, mem, pods) = o.capacity;
    let resources = json!({"cpu": cpu.to_string(), "memory": format!("{}Ki", mem / 1024), "pods": pods.to_string()});
    let now = crate::api::meta::now();
    let cond = |t: &str, s: &str, reason: &str, msg: &str| json!({"type": t, "status": s, "reason": reason, "message": msg, "lastHeartbeatTime": now, "lastTransitionTime": now});
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": o.node_name, "labels": {
            "kubernetes.io/hostname": o.node_name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": go_arch(std::env::consts::ARCH), "node.kubernetes.io/instance-type": "skiff"}},
        "spec": {},
        "status": {
            "capacity": resources, "allocatable": resources,
            "addresses": [{"type": "InternalIP", "address": o.node_ip}, {"type": "Hostname", "address": o.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": go_arch(std::env::consts::ARCH), "bootID": "", "containerRuntimeVersion": runtime_version,
                "kernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
                "kubeProxyVersion": "", "kubeletVersion": format!("v1.33.0-skiff.{}", env!("CARGO_PKG_VERSION")),
                "machineID": "", "operatingSystem": "linux", "osImage": "Skiff", "systemUUID": ""},
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
        },
    })
}

impl Actor for Kubelet {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let nodes = self.client.api("", "nodes", None);
        let node = node_object(&self.options, &self.runtime.version());
        let name = self.options.node_name.clone();
        // Register (or refresh) the Node, then keep its Lease and Ready status fresh.
        let leases = self
            .client
            .api("coordination.k8s.io", "leases", Some("kube-node-lease"));
        let (renew, duration) = (self.options.lease_renew, self.options.lease_duration);
        actix::spawn(async move {
            register(&nodes, &node).await;
            heartbeat(nodes, leases, node, name, renew, duration).await;
        });
        // Watch only the pods bound here.
        let opts = ListOptions {
            field_selector: Some(format!("spec.nodeName={}", self.options.node_name)),
            ..Default::default()
        };
        let mut informer = Informer::start(self.client.api("", "pods", None), opts);
        let notes = std::mem::replace(
            &mut informer.notifications,
            tokio::sync::mpsc::unbounded_channel().1,
        );
        self.informer = Some(informer);
        ctx.add_stream(futures::stream::unfold(notes, |mut rx| async move {
            rx.recv().await.map(|n| (n, rx))
        }));
        // Serve logs on our own subject.
        let nats = self.client.nats().clone();
        let runtime = self.runtime.clone();
        let subject = subject::node(&self.options.node_name, "log");
        actix::spawn(serve_logs(nats, subject, runtime));
    }
}

impl StreamHandler<Notification> for Kubelet {
    fn handle(&mut self, note: Notification, _: &mut Context<Self>) {
        let _span = crate::trace::handler_span("Kubelet", "Notification", note.object()).entered();
        let pod = match note {
            Notification::Added(p) | Notification::Updated(_, p) => p.into_value(),
            Notification::Deleted(p) => {
                // Gone from the API: stop whatever still runs of it.
                let uid = crate::api::meta::uid(&p).to_string();
                self.workers.remove(&uid);
                let runtime = self.runtime.clone();
                actix::spawn(async move {
                    for c in p
                        .pointer("/spec/containers")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                    {
                        let id = ContainerId {
                            namespace: crate::api::meta::namespace(&p).into(),
                            pod: crate::api::meta::name(&p).into(),
                            uid: uid.clone(),
                            container: c["name"].as_str().unwrap_or("").into(),
                        };
                        let _ = runtime.stop(&id, Duration::from_secs(2)).await;
                        let _ = runtime.remove(&id).await;
                    }
                });
                return;
            }
            Notification::Synced => return,
        };
        let uid = crate::api::meta::uid(&pod).to_string();
        if let Some(tx) = self.workers.get(&uid) {
            tx.send_replace(pod);
            return;
        }
        let ns = crate::api::meta::namespace(&pod).to_string();
        let (tx, rx) = watch::channel(pod);
        self.workers.insert(uid, tx);
        let api = self.client.api("", "pods", Some(&ns));
        let pod_ip = match self.options.pod_subnet {
            Some(n) => {
                // 127.n.0.2 … 127.n.255.254, reused after 64k pods.
                let i = self.next_ip % (256 * 253);
                self.next_ip += 1;
                format!("127.{n}.{}.{}", i / 253, i % 253 + 2)
            }
            None => self.options.node_ip.clone(),
        };
        let placement = pod::Placement {
            host_ip: self.options.node_ip.clone(),
            pod_ip,
            backoff: self.options.backoff,
            volume_root: self.options.volume_root.clone(),
            service_env: self.options.service_env(),
            allocatable: env::Allocatable {
                cpu: self.options.capacity.0,
                memory: self.options.capacity.1,
            },
        };
        actix::spawn(pod::run(api, self.runtime.clone(), rx, placement));
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

async fn register(nodes: &crate::client::Api, node: &Value) {
    let name = crate::api::meta::name(node).to_string();
    let mut delay = Duration::from_millis(200);
    loop {
        let result = match nodes.create(node).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 409 => nodes
                .patch(
                    &name,
                    Some("status"),
                    crate::api::wire::PatchType::Merge,
                    &json!({"status": node["status"]}),
                )
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::info!(node = %name, "node registered");
                return;
            }
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "registering the node; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Renews the node's Lease every `renew` and re-asserts the Ready condition.
async fn heartbeat(
    nodes: crate::client::Api,
    leases: crate::client::Api,
    node: Value,
    name: String,
    renew: Duration,
    duration: Duration,
) {
    use rand::Rng;
    // Jitter, as the kubelet's: a thousand nodes started together must not renew in step.
    let jitter = |d: Duration| d.mul_f64(rand::rng().random_range(0.9..1.1));
    let mut round: u64 = 0;
    loop {
        round += 1;
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": duration.as_secs(), "renewTime": now}});
        let renewed = match leases
            .patch(
                &name,
                None,
                crate::api::wire::PatchType::Merge,
                &json!({"spec": lease["spec"]}),
            )
            .await
        {
            Err(e) if e.code == 404 => leases.create(&lease).await.map(|_| ()),
            other => other.map(|_| ()),
        };
        if let Err(e) = renewed {
            tracing::debug!(node = %name, error = %e, "lease renewal failed");
        }
        // Ready again if something (the node lifecycle controller) marked us otherwise; checked
        // every other renewal to keep reads down.
        let check = round % 2 == 1;
        if let Some(Ok(current)) = if check {
            Some(nodes.get(&name).await)
        } else {
            None
        } {
            let ready = current
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .is_some_and(|c| c["status"] == "True");
            if !ready {
                let _ = nodes
                    .patch(
                        &name,
                        Some("status"),
                        crate::api::wire::PatchType::Merge,
                        &json!({"status": {"conditions": node["status"]["conditions"]}}),
                    )
                    .await;
            }
        }
        // The first renewal comes at once; after it, a random phase, then jittered periods.
        let pause = if round == 1 {
            renew.mul_f64(rand::rng().random_range(0.05..1.0))
        } else {
            jitter(renew)
        };
        tokio::time::sleep(pause).await;
    }
}

/// Streams a container's new output to `inbox` until it exits, an hour passes, or nobody
/// listens any more (the client went away: every few seconds a ping request to the inbox
/// finds out, as NATS answers "no responders" once the API server dropped the subscription).
async fn follow_logs(
    nats: async_nats::Client,
    runtime: Arc<dyn ContainerRuntime>,
    id: ContainerId,
    inbox: String,
    mut sent: usize,
) {
    let open = crate::metrics::gauge(
        "kubelet_log_follows_open",
        "Followed log streams (kubectl logs -f) being served.",
        &[],
    )
    .with(&[]);
    open.inc();
    struct Close(crate::metrics::Gauge);
    impl Drop for Close {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    let _close = Close(open);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    let mut polls = 0u32;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        polls += 1;
        if polls.is_multiple_of(10) {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(subject::HEADER_PING, "1");
            let ping = nats.request_with_headers(inbox.clone(), headers, bytes::Bytes::new());
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_millis(500), ping).await {
                if e.kind() == async_nats::RequestErrorKind::NoResponders {
                    tracing::debug!(container = %id.container, "log follower gone");
                    return;
                }
            }
        }
        let text = runtime.logs(&id, None, false).await.unwrap_or_default();
        if text.len() > sent {
            let chunk = text.as_bytes()[sent..].to_vec();
            sent = text.len();
            if nats.publish(inbox.clone(), chunk.into()).await.is_err() {
                return;
            }
        }
        let running = matches!(
            runtime.state(&id).await,
            runtime::ContainerState::Running { .. }
        );
        if !running || tokio::time::Instant::now() > deadline {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(subject::HEADER_END, "1");
            let _ = nats
                .publish_with_headers(inbox, headers, bytes::Bytes::new())
                .await;
            return;
        }
    }
}

/// Answers `LogRequest`s for this node's containers.
async fn serve_logs(nats: async_nats::Client, subject: String, runtime: Arc<dyn ContainerRuntime>) {
    let mut sub = match nats.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%subject, error = %e, "cannot serve logs");
            return;
        }
    };
    while let Some(msg) = sub.next().await {
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let (code, body) = match codec::decode::<LogRequest>(&msg.payload) {
            Err(e) => (
                400,
                codec::encode(&Status::bad_request(e.to_string())).unwrap_or_default(),
            ),
            Ok(req) => {
                let id = ContainerId {
                    namespace: req.namespace.clone(),
                    pod: req.pod.clone(),
                    uid: req.uid.clone(),
                    container: req.container.clone(),
                };
                match runtime
                    .logs(&id, req.tail_lines.map(|n| n.max(0) as usize), req.previous)
                    .await
                {
                    Ok(text) => {
                        if let (true, Some(inbox)) = (req.follow, req.inbox.clone()) {
                            // Everything so far answers the request; what follows streams.
                            let sent = runtime
                                .logs(&id, None, false)
                                .await
                                .map(|t| t.len())
                                .unwrap_or(0);
                            actix::spawn(follow_logs(
                                nats.clone(),
                                runtime.clone(),
                                id.clone(),
                                inbox,
                                sent,
                            ));
                        }
                        (200, text.into_bytes())
                    }
                    Err(e) => (
                        404,
                        codec::encode(&Status::failure(404, "NotFound", e.to_string()))
                            .unwrap_or_default(),
                    ),
                }
            }
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(subject::HEADER_CODE, code.to_string().as_str());
        let _ = nats.publish_with_headers(reply, headers, body.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_say_their_architecture_as_kubernetes_does() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("s390x"), "s390x");
        let node = node_object(&KubeletOptions::new("n1"), "fake://0");
        let label = node["metadata"]["labels"]["kubernetes.io/arch"]
            .as_str()
            .unwrap();
        assert_eq!(label, go_arch(std::env::consts::ARCH));
        assert_eq!(node["status"]["nodeInfo"]["architecture"], label);
        assert_ne!(
            label, "x86_64",
            "a nodeSelector kubernetes.io/arch: amd64 must match"
        );
    }
}
