//! The spine's suite (`tests/spine.rs`) again, with every API server's Store on a real etcd
//! (a one-member `etcd` per test): CRUD of every kind, the error Statuses, 100 concurrent
//! updates of which exactly one wins, watch order, resume and 410, the informer's relist,
//! paging, resourceVersion rules and dry runs. `common::store_on_etcd` sees this binary's
//! name and starts each `Cluster` on etcd.

#[path = "spine.rs"]
mod spine;

use spine::common;

use std::time::Duration;

use serde_json::json;

/// The suite above really ran on etcd: objects are kube's keys in etcd, and a new API server
/// on the same etcd serves them as they were, at the same resourceVersion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_live_in_etcd_under_kubes_keys() {
    assert!(common::store_on_etcd());
    let common::Cluster { api, nats, etcd } = common::Cluster::start();
    let etcd = etcd.expect("a Cluster in this binary runs on etcd");
    let admin = common::client_for(&nats.url(), common::ADMIN.0, common::ADMIN.1).await;
    let cms = admin.api("", "configmaps", Some("default"));
    let made = cms
        .create(&json!({"metadata": {"name": "kept"}, "data": {"k": "v"}}))
        .await
        .unwrap();
    assert!(etcd
        .keys("/registry/configmaps/")
        .contains(&"/registry/configmaps/default/kept".to_string()));
    // Another API server, later, on the same etcd.
    drop(api);
    let _again = common::InProcess::start_with_tokens(
        &nats.url(),
        skiff::apiserver::ApiServerOptions {
            etcd: Some(etcd.options()),
            ..Default::default()
        },
        common::TOKENS,
    );
    let admin = common::client_for(&nats.url(), common::ADMIN.0, common::ADMIN.1).await;
    let got = admin
        .api("", "configmaps", Some("default"))
        .get("kept")
        .await
        .unwrap();
    assert_eq!(got["data"]["k"], "v");
    assert_eq!(
        got["metadata"]["resourceVersion"],
        made["metadata"]["resourceVersion"]
    );
}

/// etcd goes away: writes and reads of the latest state answer 503 (never hang), the API
/// server says it is not ready, reads at resourceVersion=0 are served from the cache; etcd comes back: the watch resumes where it stopped, a
/// client's watch opened before the outage gets what is written after it, and nothing is
/// lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_answers_503_then_everything_resumes() {
    let mut cluster = common::Cluster::start();
    let admin = cluster.client().await;
    let cms = admin.api("", "configmaps", Some("default"));
    cms.create(&json!({"metadata": {"name": "before"}}))
        .await
        .unwrap();
    let mut watch = cms.watch(&skiff::api::wire::ListOptions {
        resource_version: Some(
            cms.get("before").await.unwrap()["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string(),
        ),
        ..Default::default()
    });
    let handle = cluster.api.handle.clone();
    assert!(handle.store_ready());

    cluster.etcd.as_mut().unwrap().kill9();
    common::wait_for(Duration::from_secs(20), "the store reported down", || {
        let h = handle.clone();
        async move { (!h.store_ready()).then_some(()) }
    })
    .await;
    let started = std::time::Instant::now();
    let refused = cms
        .create(&json!({"metadata": {"name": "during"}}))
        .await
        .unwrap_err();
    assert_eq!(refused.code, 503, "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // A read of the most recent state needs etcd (503); one that takes any state
    // (resourceVersion=0) is served from the cache.
    assert_eq!(cms.get("before").await.unwrap_err().code, 503);
    let cached = cms
        .list(&skiff::api::wire::ListOptions {
            resource_version: Some("0".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(cached
        .items
        .iter()
        .any(|o| o["metadata"]["name"] == "before"));

    cluster.etcd.as_mut().unwrap().start_again();
    common::wait_for(Duration::from_secs(30), "the store back", || {
        let h = handle.clone();
        async move { h.store_ready().then_some(()) }
    })
    .await;
    let after = common::wait_for(Duration::from_secs(30), "a write accepted again", || {
        let cms = cms.clone();
        async move {
            cms.create(&json!({"metadata": {"name": "after"}}))
                .await
                .ok()
        }
    })
    .await;
    // The watch from before the outage sees exactly the new object, once.
    let ev = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("the watch delivers")
        .expect("open")
        .expect("no error");
    assert_eq!(ev.event_type, "ADDED");
    assert_eq!(ev.object["metadata"]["name"], "after");
    assert_eq!(
        ev.object["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );
    assert!(cms.get("during").await.is_err_and(|e| e.code == 404));
}

/// Two API servers on one etcd, each on a bus of its own so the test picks which one
/// answers: 1,000 times, a write through A then at once a read through B (GET and LIST)
/// sees it — reads without a resourceVersion first catch the cache up with etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_across_api_servers() {
    let a = common::Cluster::start();
    let etcd = a.etcd.as_ref().unwrap();
    let b = common::Cluster::with(skiff::apiserver::ApiServerOptions {
        etcd: Some(etcd.options()),
        ..Default::default()
    });
    let (via_a, via_b) = (a.client().await, b.client().await);
    let (cms_a, cms_b) = (
        via_a.api("", "configmaps", Some("default")),
        via_b.api("", "configmaps", Some("default")),
    );
    let made = cms_a
        .create(&json!({"metadata": {"name": "ryw"}, "data": {"n": "0"}}))
        .await
        .unwrap();
    let mut rv = made["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut stale = 0;
    for i in 1..=1000 {
        let mut next = cms_a.get("ryw").await.unwrap();
        next["data"]["n"] = json!(i.to_string());
        let written = cms_a.update(&next).await.unwrap();
        rv = written["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let read = cms_b.get("ryw").await.unwrap();
        if read["metadata"]["resourceVersion"] != rv.as_str() {
            stale += 1;
        }
        if i % 100 == 0 {
            let list = cms_b
                .list(&skiff::api::wire::ListOptions::default())
                .await
                .unwrap();
            let item = list.items.iter().find(|o| o["metadata"]["name"] == "ryw");
            if item.is_none_or(|o| o["metadata"]["resourceVersion"] != rv.as_str()) {
                stale += 1;
            }
        }
    }
    assert_eq!(
        stale, 0,
        "reads through B behind writes through A (last rv {rv})"
    );
}
