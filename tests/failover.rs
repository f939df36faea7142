//! Two `skiff scheduler` processes: exactly one binds (the other's scheduling counters stay at
//! zero); `kill -9` of the leader, and the standby takes the Lease within the lease duration
//! (plus one retry period) and binds what comes next.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::json;
use skiff::metrics;

use common::*;

fn skiff(args: &[&str]) -> SkiffProcess {
    SkiffProcess::start(args, &[])
}

/// `scheduler_schedule_attempts_total{result="scheduled"}` of the scheduler on `port`.
fn scheduled(port: u16) -> Option<f64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let samples = metrics::parse(text.split_once("\r\n\r\n")?.1).ok()?;
    Some(
        metrics::sample_value(
            &samples,
            "scheduler_schedule_attempts_total",
            &[("result", "scheduled")],
        )
        .unwrap_or(0.0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scheduler_process_binds_and_the_standby_takes_over_when_it_is_killed() {
    let nats = NatsServer::start();
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let _api = ApiProcess::start(&url, dir.path(), &[]);
    let ports = [free_port(), free_port()];
    let mut schedulers: Vec<Option<SkiffProcess>> = ["s-a", "s-b"]
        .iter()
        .zip(ports)
        .map(|(id, port)| {
            Some(skiff(&[
                "scheduler",
                "--nats-url",
                &url,
                "--token",
                "scheduler-token",
                "--identity",
                id,
                "--metrics-bind",
                &format!("127.0.0.1:{port}"),
            ]))
        })
        .collect();
    let _kubelet = skiff(&[
        "kubelet",
        "--nats-url",
        &url,
        "--token",
        "bootstrap-token",
        "--node-name",
        "only",
        "--runtime",
        "fake",
        "--metrics-bind",
        "",
    ]);
    let admin = admin_when_ready(&url).await;
    wait_for(Duration::from_secs(20), "node only registered", || {
        let nodes = admin.api("", "nodes", None);
        async move { nodes.get("only").await.ok() }
    })
    .await;
    let leases = admin.api("coordination.k8s.io", "leases", Some("kube-system"));
    let holder = || {
        let leases = leases.clone();
        async move {
            leases.get("skiff-scheduler").await.ok()?["spec"]["holderIdentity"]
                .as_str()
                .map(String::from)
        }
    };
    let leader = wait_for(Duration::from_secs(30), "a scheduler leads", || async {
        holder().await.filter(|h| h == "s-a" || h == "s-b")
    })
    .await;
    let (lead, standby) = if leader == "s-a" { (0, 1) } else { (1, 0) };

    let pods = admin.api("", "pods", Some("default"));
    let run = |names: Vec<String>| {
        let pods = pods.clone();
        async move {
            for n in &names {
                pods.create(&json!({"metadata": {"name": n},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}))
                    .await
                    .unwrap();
            }
            wait_for(Duration::from_secs(60), "the pods Running", || {
                let (pods, names) = (pods.clone(), names.clone());
                async move {
                    for n in &names {
                        if pods.get(n).await.ok()?["status"]["phase"] != "Running" {
                            return None;
                        }
                    }
                    Some(())
                }
            })
            .await;
        }
    };
    run((0..3).map(|i| format!("before-{i}")).collect()).await;
    let counts = |p: u16| scheduled(p).unwrap_or(-1.0);
    assert!(counts(ports[lead]) >= 3.0, "the leader bound them");
    assert_eq!(counts(ports[standby]), 0.0, "the standby bound nothing");

    // Kill the leader without a goodbye: the standby waits out the Lease, then leads.
    let killed = Instant::now();
    drop(schedulers[lead].take());
    let new = if lead == 0 { "s-b" } else { "s-a" };
    wait_for(
        Duration::from_secs(40),
        "the standby takes the Lease",
        || async { holder().await.filter(|h| h == new) },
    )
    .await;
    let took = killed.elapsed();
    // As in client-go, the standby times the Lease from when it saw the last renewal (up to
    // one 2 s retry after it was made), and tries again only every 2 s: the worst case is
    // 15 + 2 + 2 s after the kill, plus a second for this test's polling.
    assert!(
        took <= Duration::from_secs(15 + 2 + 2 + 1),
        "took over in {took:?}: within the 15 s lease duration plus two 2 s retries"
    );
    run((0..2).map(|i| format!("after-{i}")).collect()).await;
    assert!(counts(ports[standby]) >= 2.0, "the new leader binds");
    drop(schedulers);
}
