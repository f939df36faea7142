//! The kubelet with the process runtime, against a real API server over a real nats-server:
//! registers its Node and Lease, runs the pods bound to it as real processes, reports status,
//! restarts crashing containers with back-off, serves logs, and terminates pods gracefully.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use skiff::api::wire::{DeleteOptions, Request, Verb};
use skiff::kubelet::runtime::process::ProcessRuntime;
use skiff::kubelet::{pod::Backoff, Kubelet, KubeletOptions};

use common::*;

/// A kubelet on its own actix System thread; stops (and stops every process) on drop.
struct KubeletThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeletThread {
    fn start(url: &str, node: &str, root: std::path::PathBuf) -> KubeletThread {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (url, node) = (url.to_string(), node.to_string());
        let thread = std::thread::spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                let client = client_for(&url, &format!("system:node:{node}"), "node1-token").await;
                let runtime = ProcessRuntime::new(root, "127.0.0.1".into());
                let mut options = KubeletOptions::new(&node);
                options.lease_renew = Duration::from_millis(500);
                options.backoff = Backoff {
                    base: Duration::from_millis(300),
                    max: Duration::from_secs(2),
                };
                let _kubelet =
                    actix::Actor::start(Kubelet::new(options, client, Arc::new(runtime.clone())));
                let _ = stop_rx.await;
                runtime.stop_all(Duration::from_secs(2)).await;
            });
        });
        KubeletThread {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for KubeletThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Pids of processes whose whole command line is `cmdline`.
fn pgrep_exact(cmdline: &str) -> Vec<String> {
    pgrep(&["-x", "-f"], cmdline)
}

async fn pod_status(pods: &skiff::client::Api, name: &str) -> Value {
    pods.get(name)
        .await
        .map(|p| p["status"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_pods_as_processes_reports_status_and_terminates_gracefully() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let root = tempfile::tempdir().unwrap();
    let _kubelet = KubeletThread::start(&cluster.nats.url(), "n1", root.path().to_path_buf());

    // The node registers Ready, and its Lease is renewed.
    let nodes = admin.api("", "nodes", None);
    wait_for(Duration::from_secs(20), "node n1 Ready", || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get("n1").await.ok()?;
            let ready = n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(())
        }
    })
    .await;
    let lease = admin.api("coordination.k8s.io", "leases", Some("kube-node-lease"));
    let first = lease.get("n1").await.expect("lease")["spec"]["renewTime"].clone();
    assert!(first.is_string(), "the lease has a renewTime: {first}");
    wait_for(Duration::from_secs(10), "the lease renewed", || {
        let (lease, first) = (lease.clone(), first.clone());
        async move { (lease.get("n1").await.ok()?["spec"]["renewTime"] != first).then_some(()) }
    })
    .await;

    // A pod bound to n1 runs as a real process.
    let pods = admin.api("", "pods", Some("default"));
    pods.create(&json!({"metadata": {"name": "hello"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 5,
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo hello from $GREETING; exec sleep 3017"],
                        "env": [{"name": "GREETING", "value": "skiff"}]}]}}))
        .await
        .unwrap();
    wait_for(Duration::from_secs(20), "pod Running and Ready", || {
        let pods = pods.clone();
        async move {
            let s = pod_status(&pods, "hello").await;
            (s["phase"] == "Running" && s["containerStatuses"][0]["ready"] == true).then_some(())
        }
    })
    .await;
    let s = pod_status(&pods, "hello").await;
    assert_eq!(s["podIP"], "127.0.0.1");
    // After `exec` the container's process is `sleep 3017` (a number no other test uses).
    wait_for(
        Duration::from_secs(10),
        "the pod's process to run",
        || async { (!pgrep_exact("sleep 3017").is_empty()).then_some(()) },
    )
    .await;
    assert!(s["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());

    // Logs come from the kubelet over NATS, through the API server.
    let logs = wait_for(Duration::from_secs(10), "logs", || {
        let c = admin.clone();
        async move {
            let req = Request {
                resource: "pods".into(),
                namespace: Some("default".into()),
                name: Some("hello".into()),
                subresource: Some("log".into()),
                ..Default::default()
            };
            let bytes = c.call_raw(Verb::Get, &req).await.ok()?;
            let text = String::from_utf8_lossy(&bytes).to_string();
            text.contains("hello from skiff").then_some(text)
        }
    })
    .await;
    assert!(logs.contains("hello from skiff"));

    // A crashing container restarts with back-off and shows CrashLoopBackOff.
    pods.create(&json!({"metadata": {"name": "crash"}, "spec": {"nodeName": "n1",
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo boom; exit 1"]}]}}))
        .await
        .unwrap();
    let status = wait_for(Duration::from_secs(30), "restarts with back-off", || {
        let pods = pods.clone();
        async move {
            let s = pod_status(&pods, "crash").await;
            let restarts = s["containerStatuses"][0]["restartCount"]
                .as_i64()
                .unwrap_or(0);
            (restarts >= 2
                && s["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff")
                .then_some(s)
        }
    })
    .await;
    assert_eq!(
        status["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        1
    );

    // Graceful delete: the kubelet stops the process, then the pod object goes.
    pods.delete("hello", &DeleteOptions::default())
        .await
        .unwrap();
    wait_for(Duration::from_secs(20), "pod gone", || {
        let pods = pods.clone();
        async move {
            pods.get("hello")
                .await
                .err()
                .filter(|e| e.code == 404)
                .map(|_| ())
        }
    })
    .await;
    let left = pgrep_exact("sleep 3017");
    assert!(
        left.is_empty(),
        "no process of the deleted pod is left: {left:?}"
    );
    pods.delete("crash", &DeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_gate_readiness_and_restart_unhealthy_containers() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let root = tempfile::tempdir().unwrap();
    let _kubelet = KubeletThread::start(&cluster.nats.url(), "n1", root.path().to_path_buf());
    let pods = admin.api("", "pods", Some("default"));
    let port = free_port();
    // Ready only once the HTTP server answers (httpGet) and its port accepts (tcpSocket).
    pods.create(&json!({"metadata": {"name": "web"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 2,
        "containers": [{"name": "main", "image": "python",
            "command": ["sh", "-c", format!("sleep 2; exec python3 -m http.server {port} --bind 127.0.0.1")],
            "ports": [{"name": "http", "containerPort": port}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
            "livenessProbe": {"tcpSocket": {"port": port}, "initialDelaySeconds": 5, "periodSeconds": 1}}]}}))
        .await
        .unwrap();
    let early = wait_for(Duration::from_secs(20), "running", || {
        let pods = pods.clone();
        async move {
            let s = pod_status(&pods, "web").await;
            (s["containerStatuses"][0]["state"]["running"].is_object()).then_some(s)
        }
    })
    .await;
    assert_eq!(
        early["containerStatuses"][0]["ready"], false,
        "not ready before the probe passes"
    );
    wait_for(Duration::from_secs(20), "ready through the probe", || {
        let pods = pods.clone();
        async move {
            let s = pod_status(&pods, "web").await;
            let ready = s["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(())
        }
    })
    .await;

    // Liveness: healthy while the file exists; once it is gone the container is restarted.
    pods.create(&json!({"metadata": {"name": "sick"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "touch alive; sleep 2; rm -f alive; exec sleep 300"],
            "livenessProbe": {"exec": {"command": ["test", "-f", "alive"]}, "periodSeconds": 1, "failureThreshold": 1}}]}}))
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(40),
        "restarted by the liveness probe",
        || {
            let pods = pods.clone();
            async move {
                let s = pod_status(&pods, "sick").await;
                (s["containerStatuses"][0]["restartCount"].as_i64()? >= 1).then_some(())
            }
        },
    )
    .await;
    for p in ["web", "sick"] {
        pods.delete(p, &DeleteOptions::default()).await.unwrap();
    }
}
