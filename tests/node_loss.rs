//! Kill a kubelet process: with every component a real `skiff` process (API server,
//! scheduler, controller-manager with shortened node timings, two kubelets), `kill -9` of one
//! kubelet turns its node NotReady after the grace period, its pods are evicted after the
//! toleration, and replacements run on the other node.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use skiff::api::wire::ListOptions;

use common::*;

/// A component process, without a metrics listener (several run on one host).
fn skiff(args: &[&str], env: &[(&str, &str)]) -> SkiffProcess {
    let mut args = args.to_vec();
    args.extend(["--metrics-bind", ""]);
    SkiffProcess::start(&args, env)
}

fn kubelet(url: &str, node: &str) -> SkiffProcess {
    skiff(
        &[
            "kubelet",
            "--nats-url",
            url,
            "--token",
            "bootstrap-token",
            "--node-name",
            node,
            "--runtime",
            "fake",
            "--node-lease-duration-seconds",
            "4",
        ],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_kubelet_process_loses_its_node_and_its_pods_move() {
    let nats = NatsServer::start();
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    // New pods tolerate the lost node as long as the controller-manager waits (3 s below).
    let _api = ApiProcess::start(&url, dir.path(), &["--default-toleration-seconds", "3"]);
    let _scheduler = skiff(
        &[
            "scheduler",
            "--nats-url",
            &url,
            "--token",
            "scheduler-token",
        ],
        &[],
    );
    let _cm = skiff(
        &[
            "controller-manager",
            "--nats-url",
            &url,
            "--user",
            "admin",
            "--token",
            "admin-token",
        ],
        &[
            ("SKIFF_NODE_MONITOR_GRACE_PERIOD", "4"),
            ("SKIFF_POD_EVICTION_TIMEOUT", "3"),
        ],
    );
    let _keep = kubelet(&url, "keep");
    let mut doomed = kubelet(&url, "doomed");

    let admin = admin_when_ready(&url).await;
    let pods = admin.api("", "pods", Some("default"));
    let live = |pods: skiff::client::Api| async move {
        pods.list(&ListOptions {
            label_selector: Some("app=web".into()),
            ..Default::default()
        })
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect::<Vec<Value>>()
        })
        .unwrap_or_default()
    };
    wait_for(Duration::from_secs(30), "two nodes", || {
        let nodes = admin.api("", "nodes", None);
        async move { (nodes.list(&Default::default()).await.ok()?.items.len() == 2).then_some(()) }
    })
    .await;
    admin
        .api("apps", "replicasets", Some("default"))
        .create(&json!({"metadata": {"name": "web"}, "spec": {"replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "4 pods Running, some on the doomed node",
        || {
            let pods = pods.clone();
            async move {
                let l = live(pods).await;
                let running = l
                    .iter()
                    .filter(|p| p["status"]["phase"] == "Running")
                    .count();
                let doomed = l.iter().any(|p| p["spec"]["nodeName"] == "doomed");
                (running == 4 && doomed).then_some(())
            }
        },
    )
    .await;

    let _ = doomed.0.kill(); // SIGKILL: no goodbye
    let _ = doomed.0.wait();
    let nodes = admin.api("", "nodes", None);
    wait_for(
        Duration::from_secs(30),
        "the doomed node NotReady and tainted",
        || {
            let nodes = nodes.clone();
            async move {
                let n = nodes.get("doomed").await.ok()?;
                let ready = n["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Ready")?
                    .clone();
                let tainted = n["spec"]["taints"].as_array().is_some_and(|t| {
                    t.iter()
                        .any(|t| t["key"] == "node.kubernetes.io/unreachable")
                });
                (ready["status"] == "Unknown" && tainted).then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        nodes.get("keep").await.unwrap()["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()["status"],
        "True",
        "the other node stays Ready"
    );
    wait_for(
        Duration::from_secs(60),
        "4 Running pods, all on the other node",
        || {
            let pods = pods.clone();
            async move {
                let l = live(pods).await;
                let ok = l.len() == 4
                    && l.iter().all(|p| {
                        p["status"]["phase"] == "Running" && p["spec"]["nodeName"] == "keep"
                    });
                ok.then_some(())
            }
        },
    )
    .await;
}
