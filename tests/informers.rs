//! Shared informers and hollow nodes against a real nats-server and an in-process API server.

mod common;

use std::time::Duration;

use serde_json::json;
use skiff::api::wire::{DeleteOptions, ListOptions};
use skiff::client::{Informer, Notification};
use skiff::kubelet::hollow::{HollowNodes, HollowOptions, HOLLOW_LABEL};

use common::*;

/// Two subscribers of one client share one cache and one watch on the server; another
/// client gets its own; a subscriber that joins late is told of what is already cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informers_of_one_client_share_a_watch_and_late_subscribers_catch_up() {
    // Short bookmarks: an abandoned watch is found out at its next one.
    let cluster = Cluster::with(skiff::apiserver::ApiServerOptions {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    });
    let client = cluster.client().await;
    let cms = client.api("", "configmaps", Some("default"));
    cms.create(&json!({"metadata": {"name": "before"}}))
        .await
        .unwrap();
    let watchers = || async { cluster.api.handle.store_stats().await.unwrap().watchers };
    let base = watchers().await;

    let mut first = Informer::start(cms.clone(), ListOptions::default());
    let synced = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<Notification>| {
        let mut names = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(Notification::Added(o)) => names.push(o["metadata"]["name"].to_string()),
                Ok(Notification::Synced) => return Some(names),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    };
    let seen = wait_for(
        Duration::from_secs(10),
        "the first subscriber synced",
        || {
            let r = synced(&mut first.notifications);
            async move { r }
        },
    )
    .await;
    assert_eq!(seen, ["\"before\""]);
    wait_for(Duration::from_secs(10), "its watch open", || async {
        (watchers().await == base + 1).then_some(())
    })
    .await;

    // A second subscriber of the same client: no new watch, told of the cached object first.
    let mut second = Informer::start(cms.clone(), ListOptions::default());
    let seen = synced(&mut second.notifications).expect("replayed at once");
    assert_eq!(seen, ["\"before\""]);
    cms.create(&json!({"metadata": {"name": "after"}}))
        .await
        .unwrap();
    for rx in [&mut first.notifications, &mut second.notifications] {
        let n = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the new object is notified")
            .unwrap();
        assert!(matches!(&n, Notification::Added(o) if o["metadata"]["name"] == "after"));
    }
    assert_eq!(first.cache.len(), 2);
    assert_eq!(second.cache.len(), 2, "one cache");
    assert_eq!(watchers().await, base + 1, "still one watch");

    // Another client's informer is its own.
    let other = cluster.client().await;
    let _third = Informer::start(
        other.api("", "configmaps", Some("default")),
        ListOptions::default(),
    );
    wait_for(
        Duration::from_secs(10),
        "a second watch for the other client",
        || async { (watchers().await == base + 2).then_some(()) },
    )
    .await;

    // The watch ends when the last subscriber of it is gone (found out at its next bookmark).
    drop(first);
    drop(second);
    write_until_watchers(&cluster, &cms, base + 1, "the shared watch ended").await;
}

/// Hollow nodes register, keep their Leases, report a pod bound to one of them Running, and
/// remove it once it is being deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_nodes_register_renew_and_run_pods() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let url = cluster.nats.url();
    let _nodes = ActixThread::start(move || async move {
        let mut o = HollowOptions::new("hollow-", 5);
        o.lease_renew = Duration::from_secs(1);
        actix::Actor::start(HollowNodes::new(
            o,
            client_for(&url, ADMIN.0, ADMIN.1).await,
        ))
    });
    let nodes = admin.api("", "nodes", None);
    let listed = wait_for(Duration::from_secs(20), "5 hollow nodes", || {
        let nodes = nodes.clone();
        async move {
            let l = nodes
                .list(&ListOptions {
                    label_selector: Some(format!("{HOLLOW_LABEL}=true")),
                    ..Default::default()
                })
                .await
                .ok()?;
            (l.items.len() == 5).then_some(l.items)
        }
    })
    .await;
    assert!(listed.iter().all(|n| n["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")));
    // Leases renewed: a renewTime that changes.
    let leases = admin.api("coordination.k8s.io", "leases", Some("kube-node-lease"));
    let first = wait_for(Duration::from_secs(20), "a Lease for hollow-3", || {
        let leases = leases.clone();
        async move { leases.get("hollow-3").await.ok() }
    })
    .await;
    wait_for(Duration::from_secs(20), "the Lease renewed", || {
        let (leases, before) = (leases.clone(), first["spec"]["renewTime"].clone());
        async move {
            let now = leases.get("hollow-3").await.ok()?;
            (now["spec"]["renewTime"] != before).then_some(())
        }
    })
    .await;

    // A pod bound to hollow-2 (no scheduler here: nodeName set at create) runs.
    let pods = admin.api("", "pods", Some("default"));
    pods.create(
        &json!({"metadata": {"name": "p"}, "spec": {"nodeName": "hollow-2",
        "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}),
    )
    .await
    .unwrap();
    let running = wait_for(Duration::from_secs(20), "the pod Running", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("p").await.ok()?;
            (p["status"]["phase"] == "Running").then_some(p)
        }
    })
    .await;
    assert_eq!(running["status"]["hostIP"], "10.64.0.2");
    assert_eq!(
        running["status"]["containerStatuses"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // A pod on a node that is not hollow is left alone.
    pods.create(
        &json!({"metadata": {"name": "elsewhere"}, "spec": {"nodeName": "n1",
        "containers": [{"name": "a", "image": "x"}]}}),
    )
    .await
    .unwrap();
    // A graceful delete: the hollow node finishes it.
    pods.delete("p", &DeleteOptions::default()).await.unwrap();
    wait_for(Duration::from_secs(20), "the pod gone", || {
        let pods = pods.clone();
        async move { pods.get("p").await.err().filter(|e| e.code == 404) }
    })
    .await;
    let other = pods.get("elsewhere").await.unwrap();
    assert!(
        other["status"]["phase"] != "Running",
        "a pod of another node is not touched: {other}"
    );
}
