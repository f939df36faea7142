//! The scheduler with fake-runtime kubelets, all through NATS: unscheduled pods are bound,
//! spread over the nodes and run; a pod that fits nowhere stays Pending with the reason.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use skiff::api::wire::{ListOptions, PatchType};
use skiff::client::leader::ElectionTimings;
use skiff::kubelet::runtime::fake::FakeRuntime;
use skiff::kubelet::{Kubelet, KubeletOptions};
use skiff::scheduler::{Scheduler, SchedulerOptions};

use common::*;

fn fast_election() -> ElectionTimings {
    ElectionTimings {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
    }
}

fn start_nodes(url: &str, n: usize) -> ActixThread {
    let url = url.to_string();
    ActixThread::start(move || async move {
        let mut kubelets = Vec::new();
        for i in 1..=n {
            let node = format!("n{i}");
            let client = client_for(
                &url,
                &format!("system:node:{node}"),
                &format!("node{i}-token"),
            )
            .await;
            let mut options = KubeletOptions::new(&node);
            options.capacity = (4, 8 << 30, 110);
            kubelets.push(actix::Actor::start(Kubelet::new(
                options,
                client,
                Arc::new(FakeRuntime::new("127.0.0.1".into())),
            )));
        }
        kubelets
    })
}

fn start_scheduler(url: &str, identity: &str) -> ActixThread {
    let (url, identity) = (url.to_string(), identity.to_string());
    ActixThread::start(move || async move {
        let client = client_for(&url, "system:kube-scheduler", "scheduler-token").await;
        let mut options = SchedulerOptions::new(&identity);
        options.election = fast_election();
        actix::Actor::start(Scheduler::new(options, client))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_bound_spread_and_run_and_misfits_say_why() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let _nodes = start_nodes(&cluster.nats.url(), 3);
    let _scheduler = start_scheduler(&cluster.nats.url(), "s1");
    let pods = admin.api("", "pods", Some("default"));
    for i in 0..6 {
        pods.create(&json!({"metadata": {"name": format!("web-{i}"), "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-uid", "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}))
            .await
            .unwrap();
    }
    let placed = wait_for(Duration::from_secs(30), "6 pods Running", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListOptions {
                    label_selector: Some("app=web".into()),
                    ..Default::default()
                })
                .await
                .ok()?;
            let running: Vec<String> = list
                .items
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
                .collect();
            (running.len() == 6).then_some(running)
        }
    })
    .await;
    for n in ["n1", "n2", "n3"] {
        assert_eq!(
            placed.iter().filter(|p| *p == n).count(),
            2,
            "spread evenly: {placed:?}"
        );
    }
    // The Scheduled event is written after the binding, concurrently with the kubelet's work.
    wait_for(
        Duration::from_secs(20),
        "a Scheduled event for web-0",
        || {
            let events = admin.api("", "events", Some("default"));
            async move {
                let list = events
                    .list(&ListOptions {
                        field_selector: Some("involvedObject.name=web-0".into()),
                        ..Default::default()
                    })
                    .await
                    .ok()?;
                list.items
                    .iter()
                    .any(|e| e["reason"] == "Scheduled")
                    .then_some(())
            }
        },
    )
    .await;

    // Too big for any node: Pending, with PodScheduled=False and an event saying why.
    pods.create(
        &json!({"metadata": {"name": "huge"}, "spec": {"containers": [{"name": "c", "image": "i",
        "resources": {"requests": {"cpu": "64"}}}]}}),
    )
    .await
    .unwrap();
    let cond = wait_for(Duration::from_secs(20), "PodScheduled=False", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("huge").await.ok()?;
            p["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
                .cloned()
        }
    })
    .await;
    assert_eq!(cond["reason"], "Unschedulable");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains("0/3 nodes are available: 3 Insufficient cpu"),
        "{cond}"
    );
    // The scheduler writes the condition and then the event: wait for the event, then check
    // that a retry with the same reason did not record a second one.
    let failed_scheduling = || {
        let events = admin.api("", "events", Some("default"));
        async move {
            events
                .list(&ListOptions {
                    field_selector: Some("involvedObject.name=huge,reason=FailedScheduling".into()),
                    ..Default::default()
                })
                .await
                .map(|l| l.items.len())
                .ok()
        }
    };
    wait_for(
        Duration::from_secs(20),
        "a FailedScheduling event",
        || async { failed_scheduling().await.filter(|n| *n > 0) },
    )
    .await;
    // A node change makes the scheduler retry every parked pod: label n1, then park a second
    // misfit after it and wait for that one's event. The retry of `huge` came first, so a
    // duplicate event from it would be there by now.
    admin
        .api("", "nodes", None)
        .patch(
            "n1",
            None,
            PatchType::Merge,
            &json!({"metadata": {"labels": {"retry": "now"}}}),
        )
        .await
        .unwrap();
    pods.create(
        &json!({"metadata": {"name": "huge2"}, "spec": {"containers": [{"name": "c", "image": "i",
        "resources": {"requests": {"cpu": "64"}}}]}}),
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(20),
        "a FailedScheduling event for huge2",
        || {
            let events = admin.api("", "events", Some("default"));
            async move {
                let list = events
                    .list(&ListOptions {
                        field_selector: Some(
                            "involvedObject.name=huge2,reason=FailedScheduling".into(),
                        ),
                        ..Default::default()
                    })
                    .await
                    .ok()?;
                (!list.items.is_empty()).then_some(())
            }
        },
    )
    .await;
    assert_eq!(failed_scheduling().await, Some(1));
    assert_eq!(
        pods.get("huge").await.unwrap()["status"]["phase"],
        "Pending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leading_scheduler_binds_and_a_standby_takes_over() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let _nodes = start_nodes(&cluster.nats.url(), 1);
    let mut schedulers = [
        ("s1", Some(start_scheduler(&cluster.nats.url(), "s1"))),
        ("s2", Some(start_scheduler(&cluster.nats.url(), "s2"))),
    ];
    let leases = admin.api("coordination.k8s.io", "leases", Some("kube-system"));
    let holder = wait_for(Duration::from_secs(10), "a leader", || {
        let leases = leases.clone();
        async move {
            leases.get("skiff-scheduler").await.ok()?["spec"]["holderIdentity"]
                .as_str()
                .map(String::from)
        }
    })
    .await;
    // Six pods, each bound by the leader: a standby that also bound would win some races.
    let pods = admin.api("", "pods", Some("default"));
    for i in 0..6 {
        pods.create(
            &json!({"metadata": {"name": format!("a{i}")}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        )
        .await
        .unwrap();
    }
    for i in 0..6 {
        let name = format!("a{i}");
        wait_for(Duration::from_secs(20), "pod bound", || {
            let (pods, name) = (pods.clone(), name.clone());
            async move {
                pods.get(&name).await.ok()?["spec"]["nodeName"]
                    .as_str()
                    .map(|_| ())
            }
        })
        .await;
        assert_eq!(
            scheduled_by(&admin, &name).await,
            holder,
            "the leader bound {name}"
        );
    }
    // Stop the leader (its actors and connection); the standby takes over within the lease.
    let standby = if holder == "s1" { "s2" } else { "s1" };
    for (name, thread) in schedulers.iter_mut() {
        if *name == holder {
            drop(thread.take());
        }
    }
    let started = std::time::Instant::now();
    pods.create(
        &json!({"metadata": {"name": "b"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(20),
        "pod b bound by the standby",
        || {
            let pods = pods.clone();
            async move {
                pods.get("b").await.ok()?["spec"]["nodeName"]
                    .as_str()
                    .map(|_| ())
            }
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took over in {:?}",
        started.elapsed()
    );
    let now = leases.get("skiff-scheduler").await.unwrap();
    assert_eq!(now["spec"]["holderIdentity"], standby);
    assert_eq!(
        scheduled_by(&admin, "b").await,
        standby,
        "the standby bound pod b"
    );
}

/// The scheduler replica that bound `pod`: the `reportingInstance` of its Scheduled event
/// (written after the binding, so waited for). Exactly one such event may exist.
async fn scheduled_by(admin: &skiff::client::ApiClient, pod: &str) -> String {
    let events = admin.api("", "events", Some("default"));
    let selector = format!("involvedObject.name={pod},reason=Scheduled");
    let list = wait_for(Duration::from_secs(20), "a Scheduled event", || {
        let (events, selector) = (events.clone(), selector.clone());
        async move {
            let list = events
                .list(&ListOptions {
                    field_selector: Some(selector),
                    ..Default::default()
                })
                .await
                .ok()?;
            (!list.items.is_empty()).then_some(list.items)
        }
    })
    .await;
    assert_eq!(list.len(), 1, "one Scheduled event for {pod}: {list:?}");
    list[0]["reportingInstance"]
        .as_str()
        .expect("the event names the scheduler replica")
        .to_string()
}
