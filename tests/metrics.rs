//! `/metrics` on every component, each a real process: the API server (HTTPS, read with the
//! real kubectl), the scheduler, the controller-manager and a kubelet (plain HTTP on
//! `--metrics-bind`). Each is scraped, parsed as Prometheus text, and its counts move when
//! work is done.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use skiff::metrics::{self, Sample};

use common::*;

fn component(args: &[&str]) -> SkiffProcess {
    SkiffProcess::start(args, &[])
}

fn scrape_http(port: u16) -> Option<Vec<Sample>> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200"),
        "{head}"
    );
    assert!(
        head.to_lowercase().contains("text/plain; version=0.0.4"),
        "{head}"
    );
    Some(metrics::parse(body).expect("Prometheus text"))
}

fn scrape_api(kubeconfig: &std::path::Path) -> Option<Vec<Sample>> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", "--raw", "/metrics"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| metrics::parse(&String::from_utf8_lossy(&out.stdout)).expect("Prometheus text"))
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics::sample_value(samples, name, labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_serves_metrics_and_they_move() {
    let nats = NatsServer::start();
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let _api = ApiProcess::start(&url, dir.path(), &[]);
    let kubeconfig = dir.path().join("kubeconfig");
    let (sp, cp, kp) = (free_port(), free_port(), free_port());
    let bind = |p: u16| format!("127.0.0.1:{p}");
    let _scheduler = component(&[
        "scheduler",
        "--nats-url",
        &url,
        "--token",
        "scheduler-token",
        "--metrics-bind",
        &bind(sp),
    ]);
    let _cm = component(&[
        "controller-manager",
        "--nats-url",
        &url,
        "--user",
        "admin",
        "--token",
        "admin-token",
        "--metrics-bind",
        &bind(cp),
    ]);
    let _kubelet = component(&[
        "kubelet",
        "--nats-url",
        &url,
        "--token",
        "bootstrap-token",
        "--node-name",
        "m1",
        "--runtime",
        "fake",
        "--metrics-bind",
        &bind(kp),
    ]);

    let before_api = wait_for(Duration::from_secs(30), "the API server's /metrics", || {
        let kc = kubeconfig.clone();
        async move { scrape_api(&kc) }
    })
    .await;
    let mut before = Vec::new();
    for (what, port) in [
        ("scheduler", sp),
        ("controller-manager", cp),
        ("kubelet", kp),
    ] {
        before.push(
            wait_for(
                Duration::from_secs(30),
                &format!("{what}'s /metrics"),
                || async move { scrape_http(port) },
            )
            .await,
        );
    }
    let admin = client_for(&url, "admin", "admin-token").await;
    wait_for(Duration::from_secs(30), "node m1 registered", || {
        let nodes = admin.api("", "nodes", None);
        async move { nodes.get("m1").await.ok() }
    })
    .await;

    // Work: a ReplicaSet of two pods, scheduled onto m1 and started.
    admin
        .api("apps", "replicasets", Some("default"))
        .create(&json!({"metadata": {"name": "m"}, "spec": {"replicas": 2,
            "selector": {"matchLabels": {"app": "m"}},
            "template": {"metadata": {"labels": {"app": "m"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
        .await
        .unwrap();
    let pods = admin.api("", "pods", Some("default"));
    wait_for(Duration::from_secs(30), "two pods Running", || {
        let pods = pods.clone();
        async move {
            let l = pods.list(&Default::default()).await.ok()?;
            (l.items
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .count()
                == 2)
                .then_some(())
        }
    })
    .await;

    let after_api = scrape_api(&kubeconfig).unwrap();
    let grew = |name: &str, labels: &[(&str, &str)], b: &[Sample], a: &[Sample]| {
        let (x, y) = (value(b, name, labels), value(a, name, labels));
        assert!(y > x, "{name}{labels:?}: {x} → {y}");
    };
    grew(
        "apiserver_request_total",
        &[("verb", "create"), ("resource", "pods")],
        &before_api,
        &after_api,
    );
    grew(
        "apiserver_request_duration_seconds_count",
        &[("verb", "create")],
        &before_api,
        &after_api,
    );
    grew("skiff_store_revision", &[], &before_api, &after_api);
    grew(
        "skiff_store_commit_duration_seconds_count",
        &[],
        &before_api,
        &after_api,
    );
    grew(
        "skiff_store_persist_duration_seconds_count",
        &[],
        &before_api,
        &after_api,
    );
    assert!(
        value(
            &after_api,
            "apiserver_watches_open",
            &[("resource", "pods")]
        ) >= 2.0
    );

    let s = scrape_http(sp).unwrap();
    grew(
        "scheduler_schedule_attempts_total",
        &[("result", "scheduled")],
        &before[0],
        &s,
    );
    grew(
        "scheduler_scheduling_attempt_duration_seconds_count",
        &[],
        &before[0],
        &s,
    );
    grew(
        "rest_client_requests_total",
        &[("component", "scheduler"), ("verb", "create")],
        &before[0],
        &s,
    );

    let c = scrape_http(cp).unwrap();
    grew(
        "rest_client_requests_total",
        &[("verb", "create")],
        &before[1],
        &c,
    );
    assert!(
        c.iter().any(|x| x.name == "workqueue_depth"
            && x.labels.get("name").map(String::as_str) == Some("replicaset")),
        "the ReplicaSet controller's queue depth"
    );

    let k = scrape_http(kp).unwrap();
    grew(
        "kubelet_container_starts_total",
        &[("node", "m1")],
        &before[2],
        &k,
    );
    grew(
        "rest_client_requests_total",
        &[("component", "kubelet:m1"), ("verb", "patch")],
        &before[2],
        &k,
    );
}
