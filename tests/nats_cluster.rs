//! A NATS cluster under everything: three nats-servers joined by routes, every component
//! given all three URLs. One server is killed while a Deployment scales from 0 to 50 on fake
//! nodes: the Deployment converges, and every component reconnects to a live server.

mod common;

use std::time::Duration;

use serde_json::json;
use skiff::api::wire::ListOptions;
use skiff::apiserver::ApiServerOptions;
use skiff::client::leader::ElectionTimings;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_converges_while_a_nats_server_dies() {
    let mut bus = NatsCluster::start(3);
    let url = bus.url();
    let _api = InProcess::start(&url, ApiServerOptions::default());
    let u = url.clone();
    let _control_plane = ActixThread::start(move || async move {
        let mut keep = fake_kubelets(&u, 1..=3).await;
        let timings = ElectionTimings {
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_millis(500),
        };
        keep.extend(scheduler_and_controllers(&u, "cp", timings, Default::default(), None).await);
        keep
    });
    let admin = client_for(&url, ADMIN.0, ADMIN.1).await;
    let deploys = admin.api("apps", "deployments", Some("default"));
    let pods = admin.api("", "pods", Some("default"));
    wait_for(Duration::from_secs(30), "three Ready nodes", || {
        let nodes = admin.api("", "nodes", None);
        async move { (nodes.list(&ListOptions::default()).await.ok()?.items.len() == 3).then_some(()) }
    })
    .await;
    deploys
        .create(
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
        )
        .await
        .unwrap();
    deploys
        .patch(
            "web",
            None,
            skiff::api::wire::PatchType::Merge,
            &json!({"spec": {"replicas": 50}}),
        )
        .await
        .unwrap();
    // Some pods in: then the first server (where many connections are) dies.
    wait_for(Duration::from_secs(60), "the scale-up under way", || {
        let pods = pods.clone();
        async move { (pods.list(&ListOptions::default()).await.ok()?.items.len() >= 10).then_some(()) }
    })
    .await;
    bus.kill9(0);
    let running = wait_for(Duration::from_secs(120), "50 Running pods", || {
        let (pods, deploys) = (pods.clone(), deploys.clone());
        async move {
            let list = pods.list(&ListOptions::default()).await.ok()?;
            let running = list
                .items
                .iter()
                .filter(|p| {
                    p["status"]["phase"] == "Running"
                        && p["metadata"]["deletionTimestamp"].is_null()
                })
                .count();
            let d = deploys.get("web").await.ok()?;
            (running == 50 && d["status"]["availableReplicas"] == 50).then_some(running)
        }
    })
    .await;
    assert_eq!(running, 50);
    // Every component is on a live server: the nodes still renew their Leases.
    let leases = admin.api("coordination.k8s.io", "leases", Some("kube-node-lease"));
    let before: Vec<String> = leases
        .list(&ListOptions::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|l| l["spec"]["renewTime"].as_str().unwrap_or("").to_string())
        .collect();
    wait_for(
        Duration::from_secs(30),
        "every node Lease renewed after the loss",
        || {
            let (leases, before) = (leases.clone(), before.clone());
            async move {
                let now: Vec<String> = leases
                    .list(&ListOptions::default())
                    .await
                    .ok()?
                    .items
                    .iter()
                    .map(|l| l["spec"]["renewTime"].as_str().unwrap_or("").to_string())
                    .collect();
                (now.len() == 3 && now.iter().zip(&before).all(|(a, b)| a != b)).then_some(())
            }
        },
    )
    .await;
}
