//! Overload's root causes, each against a real nats-server and API server: a watch whose
//! caller went away ends instead of streaming to nobody (the leak behind the startup
//! collapse), while a live but idle watcher keeps its watch.

mod common;

use std::time::Duration;

use serde_json::json;
use skiff::api::wire::ListOptions;
use skiff::apiserver::ApiServerOptions;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_inbox_is_gone_ends_and_a_live_one_stays() {
    let cluster = Cluster::with(ApiServerOptions {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    });
    let client = cluster.client().await;
    let cms = client.api("", "configmaps", Some("default"));
    let watchers = || async { cluster.api.handle.store_stats().await.unwrap().watchers };
    let base = watchers().await;

    // One watcher that stays subscribed but does not read for a while (a busy client).
    let mut live = cms.watch(&ListOptions::default());
    live.yield_bookmarks = true;
    live.next().await.expect("a bookmark").expect("no error");

    // 50 watchers that go away the way a client that resumed elsewhere leaves them: the
    // inbox unsubscribed, nothing said to the server.
    let gone = futures::future::join_all((0..50).map(|_| {
        let mut w = cms.watch(&ListOptions::default());
        w.yield_bookmarks = true;
        async move {
            w.next().await.expect("a bookmark").expect("no error");
            w
        }
    }))
    .await;
    assert_eq!(watchers().await, base + 51, "51 watches registered");
    drop(gone);

    // Their server-side watches end at their next bookmark (the Store forgets a watcher at
    // the next event for its prefix, so keep writing).
    let mut n = 0;
    wait_for(
        Duration::from_secs(20),
        "the abandoned watches to end",
        || {
            n += 1;
            let (cms, name) = (cms.clone(), format!("tick-{n}"));
            async move {
                cms.create(&json!({"metadata": {"name": name}}))
                    .await
                    .ok()?;
                (watchers().await == base + 1).then_some(())
            }
        },
    )
    .await;

    // The idle watcher was left alone: it reads every change, in order, without resuming.
    let mut seen = Vec::new();
    while seen.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("an event")
            .expect("the watch goes on")
            .expect("no error");
        if ev.event_type == "ADDED" {
            seen.push(ev.object["metadata"]["name"].as_str().unwrap().to_string());
        }
    }
    let expected: Vec<String> = (1..=n).map(|i| format!("tick-{i}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(live.resumes(), 0, "the live watch never had to resume");
}
