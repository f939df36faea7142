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

    // Their server-side watches end at their next bookmark.
    let n = write_until_watchers(&cluster, &cms, base + 1, "the abandoned watches to end").await;

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

/// One user floods the server (2,000 requests in flight at once, listing and creating, for
/// 8 s, never retrying) while a node renews its Lease as fast as it can (every 100 ms after
/// the last answer) and the scheduler's identity writes: the flooder is shed with 429s, the
/// node's renewals and the scheduler's writes keep going with p99 ≤ 1 s, no renewal fails,
/// and none is more than 2 s after the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_user_is_shed_while_the_system_keeps_its_share() {
    let tokens = format!("{TOKENS}flood-token,flood,70,\"flooders\"\n");
    let cluster = Cluster::with_tokens(ApiServerOptions::default(), &tokens);
    let url = cluster.nats.url();
    let admin = cluster.client().await;
    let node = client_for(&url, "system:node:n1", "node1-token").await;
    let leases = node.api("coordination.k8s.io", "leases", Some("kube-node-lease"));
    leases
        .create(
            &json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1",
            "leaseDurationSeconds": 40, "renewTime": "2026-01-01T00:00:00.000000Z"}}),
        )
        .await
        .unwrap();
    let scheduler = client_for(&url, "system:kube-scheduler", "scheduler-token").await;
    // The scheduler's identity (workload-high, not exempt) and the flooders may write in
    // `default` for this test: RBAC refuses both otherwise.
    grant(
        &admin,
        "default",
        "edit",
        &[("User", "system:kube-scheduler"), ("Group", "flooders")],
    )
    .await;

    // The flood runs on a thread and runtime of its own, as another process would: the
    // measuring tasks below are not queued behind 2,000 flooding tasks on one runtime.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (shed, served) = (
        std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
        std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
    );
    let flood = {
        let (url, stop, shed, served) = (url.clone(), stop.clone(), shed.clone(), served.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut flooders = Vec::new();
                for _ in 0..20 {
                    let mut o = skiff::client::ClientOptions::new(&url, "flood", "flood-token");
                    o.retry.max_retries = 0; // a flood, not a well-behaved client
                    let c = skiff::client::ApiClient::connect(o).await.unwrap();
                    for t in 0..100u64 {
                        let (c, stop, shed, served) =
                            (c.clone(), stop.clone(), shed.clone(), served.clone());
                        flooders.push(tokio::spawn(async move {
                            let pods = c.api("", "pods", Some("default"));
                            let mut i = 0u64;
                            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                                i += 1;
                                let r = if (t + i).is_multiple_of(2) {
                                    pods.list(&ListOptions::default()).await.map(|_| ())
                                } else {
                                    pods.create(&json!({"metadata": {"generateName": "flood-"}}))
                                        .await
                                        .map(|_| ())
                                };
                                let counter = match r {
                                    Err(s) if s.code == 429 => &shed,
                                    _ => &served,
                                };
                                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }));
                    }
                }
                for f in flooders {
                    f.await.unwrap();
                }
            });
        })
    };
    // Let the flood build up before measuring.
    wait_for(Duration::from_secs(20), "the flood under way", || {
        let n = shed.load(std::sync::atomic::Ordering::Relaxed);
        async move { (n > 100).then_some(()) }
    })
    .await;

    // Meanwhile: the node renews its Lease every 100 ms; the scheduler writes as often.
    let until = std::time::Instant::now() + Duration::from_secs(8);
    let renewing = tokio::spawn(async move {
        let (mut took, mut gap, mut last) = (Vec::new(), Duration::ZERO, std::time::Instant::now());
        while std::time::Instant::now() < until {
            let t = std::time::Instant::now();
            leases
                .patch(
                    "n1",
                    None,
                    skiff::api::wire::PatchType::Merge,
                    &json!({"spec": {"renewTime": skiff::api::meta::now()}}),
                )
                .await
                .expect("every renewal succeeds during the flood");
            took.push(t.elapsed());
            gap = gap.max(last.elapsed());
            last = std::time::Instant::now();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (took, gap)
    });
    let writing = tokio::spawn(async move {
        let (mut took, mut i) = (Vec::new(), 0);
        let cms = scheduler.api("", "configmaps", Some("default"));
        while std::time::Instant::now() < until {
            i += 1;
            let t = std::time::Instant::now();
            cms.create(&json!({"metadata": {"name": format!("sched-{i}")}}))
                .await
                .expect("the scheduler's writes succeed during the flood");
            took.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        took
    });
    let ((mut renewals, gap), mut writes) = (renewing.await.unwrap(), writing.await.unwrap());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
    let p99 = |v: &mut Vec<Duration>| {
        v.sort();
        v[(v.len() - 1) * 99 / 100]
    };
    let (shed, served) = (
        shed.load(std::sync::atomic::Ordering::Relaxed),
        served.load(std::sync::atomic::Ordering::Relaxed),
    );
    eprintln!(
        "flood: {shed} shed, {served} served; {} renewals p99 {:?} (longest gap {gap:?}); {} writes p99 {:?}",
        renewals.len(),
        p99(&mut renewals),
        writes.len(),
        p99(&mut writes)
    );
    assert!(shed > 0, "the flooder got 429s ({served} served)");
    // A node Lease lasts 40 s and is renewed every 10 s; a leader's lasts 15 s.
    assert!(
        gap <= Duration::from_secs(2),
        "the Lease was renewed at least every 2 s: longest gap {gap:?}"
    );
    assert!(
        p99(&mut renewals) <= Duration::from_secs(1),
        "node renewal p99"
    );
    assert!(
        p99(&mut writes) <= Duration::from_secs(1),
        "scheduler write p99"
    );
}
