//! Bad input on the bus: every malformed request gets an error Status, and the server keeps
//! serving the next good one.

mod common;

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use skiff::api::codec;
use skiff::api::subject;
use skiff::api::wire::Request;
use skiff::api::Status;

use common::*;

fn good() -> Request {
    Request {
        resource: "namespaces".into(),
        name: Some("default".into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_get_statuses_and_the_server_keeps_serving() {
    let cluster = Cluster::start();
    let c = cluster.client().await;
    let good_bytes = Bytes::from(codec::encode(&good()).unwrap());

    // 10,000 nested one-element arrays around a nil.
    let mut deep = vec![0x91u8; 10_000];
    deep.push(0xc0);
    let mut deep_map = Vec::new();
    for _ in 0..10_000 {
        deep_map.extend_from_slice(&[0x81, 0xa1, b'k']);
    }
    deep_map.push(0xc0);
    let mut seed = 0x2545F4914F6CDD1Du64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("empty", vec![], 400),
        (
            "truncated",
            good_bytes[..good_bytes.len() / 2].to_vec(),
            400,
        ),
        ("random", random, 400),
        (
            "wrong types",
            codec::encode(&json!({"resource": 5, "name": ["x"]})).unwrap(),
            400,
        ),
        (
            "not a map",
            codec::encode(&json!("just a string")).unwrap(),
            400,
        ),
        ("deep arrays", deep, 400),
        ("deep maps", deep_map, 400),
        (
            "gigabyte string",
            vec![
                0x81, 0xa8, b'r', b'e', b's', b'o', b'u', b'r', b'c', b'e', 0xdb, 0xff, 0xff, 0xff,
                0xf0,
            ],
            400,
        ),
        (
            "gigabyte array",
            vec![0xdd, 0x7f, 0xff, 0xff, 0xff, 0xc0],
            400,
        ),
        (
            "json instead of msgpack",
            br#"{"resource":"pods"}"#.to_vec(),
            400,
        ),
    ];
    for (what, payload, code) in cases {
        let e = c.send("get", Bytes::from(payload)).await.unwrap_err();
        assert_eq!(e.code, code, "{what}: {e}");
        assert_eq!(e.kind, "Status");
        // The next good request is served.
        let ok = c
            .send("get", good_bytes.clone())
            .await
            .unwrap_or_else(|e| panic!("after {what}: {e}"));
        assert_eq!(
            codec::msgpack_to_value(&ok).unwrap()["metadata"]["name"],
            "default"
        );
    }

    let e = c.send("frobnicate", good_bytes.clone()).await.unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (405, "MethodNotAllowed"));
    let e = c
        .send(
            "get",
            Bytes::from(
                codec::encode(&Request {
                    resource: "widgets".into(),
                    name: Some("x".into()),
                    ..Default::default()
                })
                .unwrap(),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, 404);

    // No token at all, and a wrong one.
    let nats = async_nats::ConnectOptions::new()
        .custom_inbox_prefix(subject::inbox_prefix("admin"))
        .connect(cluster.nats.url())
        .await
        .unwrap();
    let reply = nats
        .request(subject::request("admin", "get"), good_bytes.clone())
        .await
        .unwrap();
    let status: Status = codec::decode(&reply.payload).unwrap();
    assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));
    let wrong = client_for(&cluster.nats.url(), "admin", "nope").await;
    let e = wrong.send("get", good_bytes.clone()).await.unwrap_err();
    assert_eq!(e.code, 401);
    // A subject that names no caller, or a reply subject that is not the caller's own inbox:
    // nothing is answered (an answer would land in whichever inbox the sender named).
    let unanswered = |subject: &'static str| {
        let nats = nats.clone();
        let bytes = good_bytes.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(2), nats.request(subject, bytes))
                .await
                .is_err()
        }
    };
    assert!(unanswered("skiff.req.a%zz.get").await);
    assert!(
        unanswered("skiff.req.kubelet.get").await,
        "admin's inbox, kubelet's request"
    );
    // A watch aimed at another component's inbox is refused.
    let forged = Request {
        resource: "configmaps".into(),
        inbox: Some("_INBOX.system%3Akube-scheduler.x".into()),
        ..Default::default()
    };
    let e = c
        .send("watch", Bytes::from(codec::encode(&forged).unwrap()))
        .await
        .unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"), "{e}");

    assert!(c.send("get", good_bytes).await.is_ok(), "still serving");
}

/// JSON patches that fail part-way, among them one that made json-patch's own undo panic
/// ("unable to undo applied patches", found by tests/fuzz.rs): each answers 422, leaves the
/// object as it was, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patches_that_fail_part_way_change_nothing_and_crash_nothing() {
    let cluster = Cluster::start();
    let c = cluster.client().await;
    let cms = c.api("", "configmaps", Some("default"));
    let created = cms
        .create(&serde_json::json!({"metadata": {"name": "p"}, "data": {"k": "v"}}))
        .await
        .unwrap();
    for ops in [
        // Moves a string over the whole document, then fails: json-patch's undo panicked.
        serde_json::json!([{"op": "move", "from": "/data/k", "path": ""},
                           {"op": "add", "path": "/x", "value": null}]),
        // Removes its source, then fails to add at a missing parent.
        serde_json::json!([{"op": "move", "from": "/data", "path": "/nope/deeper"}]),
        serde_json::json!([{"op": "replace", "path": "/data/k", "value": "w"},
                           {"op": "test", "path": "/data/k", "value": "other"}]),
    ] {
        let err = cms
            .patch("p", None, skiff::api::wire::PatchType::Json, &ops)
            .await
            .expect_err("the patch cannot apply");
        assert_eq!(err.code, 422, "{ops}: {err:?}");
        let now = cms.get("p").await.expect("the server still serves");
        assert_eq!(now, created, "{ops} changed nothing");
    }
}

/// A JSON patch of `copy` operations that doubles the object each time (a copy bomb: 40 of
/// them would reach terabytes) is refused with 422 at once and changes nothing; so is one of
/// more than 10,000 operations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_bomb_patch_is_refused_before_it_grows() {
    let cluster = Cluster::start();
    let c = cluster.client().await;
    let cms = c.api("", "configmaps", Some("default"));
    let created = cms
        .create(&serde_json::json!({"metadata": {"name": "bomb", "annotations": {"a": "x".repeat(1000)}}}))
        .await
        .unwrap();
    let bomb: Vec<serde_json::Value> = (0..40)
        .map(|i| serde_json::json!({"op": "copy", "from": "/metadata/annotations", "path": format!("/metadata/annotations/c{i}")}))
        .collect();
    let started = std::time::Instant::now();
    let err = cms
        .patch(
            "bomb",
            None,
            skiff::api::wire::PatchType::Json,
            &serde_json::Value::Array(bomb),
        )
        .await
        .expect_err("refused");
    assert_eq!(err.code, 422, "{err:?}");
    assert!(err.message.contains("copies more than"), "{err:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "refused at once: {:?}",
        started.elapsed()
    );
    let many: Vec<serde_json::Value> = (0..10_001)
        .map(|_| serde_json::json!({"op": "test", "path": "/metadata/name", "value": "bomb"}))
        .collect();
    let err = cms
        .patch(
            "bomb",
            None,
            skiff::api::wire::PatchType::Json,
            &serde_json::Value::Array(many),
        )
        .await
        .expect_err("refused");
    assert_eq!(err.code, 422, "{err:?}");
    assert_eq!(cms.get("bomb").await.unwrap(), created, "nothing changed");
}

/// Over NATS as over HTTP: dryRun in the DeleteOptions deletes nothing, and unknown
/// dryRun values or propagation policies are 422 and delete nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_options_over_nats_are_checked_and_dry_run_deletes_nothing() {
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let cms = client.api("", "configmaps", Some("default"));
    let made = cms
        .create(&serde_json::json!({"metadata": {"name": "keep"}}))
        .await
        .unwrap();
    let dry = skiff::api::wire::DeleteOptions {
        dry_run: Some(vec!["All".into()]),
        ..Default::default()
    };
    let answered = cms.delete("keep", &dry).await.unwrap();
    assert_eq!(answered["metadata"]["name"], "keep");
    let still = cms.get("keep").await.expect("still there");
    assert_eq!(
        still["metadata"]["resourceVersion"],
        made["metadata"]["resourceVersion"]
    );
    for (bad, field) in [
        (
            skiff::api::wire::DeleteOptions {
                dry_run: Some(vec!["Foo".into()]),
                ..Default::default()
            },
            "dryRun",
        ),
        (
            skiff::api::wire::DeleteOptions {
                propagation_policy: Some("Sideways".into()),
                ..Default::default()
            },
            "propagationPolicy",
        ),
    ] {
        let e = cms.delete("keep", &bad).await.unwrap_err();
        assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{e:?}");
        assert!(e.message.contains(field), "{}", e.message);
        cms.get("keep").await.expect("nothing deleted");
    }
}

/// One identity holds at most its quota of watches (429 beyond it, on NATS and HTTP alike):
/// opening watches by the thousand cannot make every commit fan out to thousands of streams,
/// and everyone else is still answered. A watch that ends gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_beyond_a_callers_quota_are_refused_and_others_still_answered() {
    const QUOTA: usize = 50;
    let cluster = Cluster::with(skiff::apiserver::ApiServerOptions {
        max_watches_per_user: QUOTA,
        ..Default::default()
    });
    let c = cluster.client().await;
    let watch = |i: usize, secs: u64| Request {
        resource: "configmaps".into(),
        namespace: Some("default".into()),
        inbox: Some(format!("{}.w{i}", subject::inbox_prefix(ADMIN.0))),
        list: skiff::api::wire::ListOptions {
            timeout_seconds: Some(secs),
            ..Default::default()
        },
        ..Default::default()
    };
    let send = |r: Request| {
        let c = c.clone();
        async move {
            c.send("watch", Bytes::from(codec::encode(&r).unwrap()))
                .await
        }
    };
    for i in 0..QUOTA {
        send(watch(i, 3)).await.expect("within the quota");
    }
    let e = send(watch(QUOTA, 3)).await.unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (429, "TooManyRequests"), "{e}");
    // Others are answered meanwhile, watches included (the scheduler's identity, allowed
    // to read ConfigMaps here).
    grant(&c, "default", "view", &[("User", "system:kube-scheduler")]).await;
    let other = client_for(
        &cluster.nats.url(),
        "system:kube-scheduler",
        "scheduler-token",
    )
    .await;
    other
        .api("", "configmaps", Some("default"))
        .list(&Default::default())
        .await
        .expect("another identity is served");
    let mut theirs = watch(0, 1);
    theirs.inbox = Some(format!(
        "{}.w",
        subject::inbox_prefix("system:kube-scheduler")
    ));
    other
        .send("watch", Bytes::from(codec::encode(&theirs).unwrap()))
        .await
        .expect("another identity may watch");
    // Once the watches time out, their places are free again.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match send(watch(QUOTA + 1, 1)).await {
            Ok(_) => break,
            Err(e) if e.code == 429 && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("the quota never freed: {e}"),
        }
    }
}

/// A call that takes longer than the request timeout (kube-apiserver's `--request-timeout`,
/// 60 s; 50 ms here) answers 504 Timeout, and the server goes on answering; a watch is not a
/// call that times out: it streams on past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_the_request_timeout_is_504_and_watches_are_not_cut() {
    let cluster = Cluster::with(skiff::apiserver::ApiServerOptions {
        request_timeout: Duration::from_millis(50),
        ..Default::default()
    });
    let c = cluster.client().await;
    let cms = c.api("", "configmaps", Some("default"));
    // A watch read all along, counting what it sees, for far longer than 50 ms.
    let added = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = {
        let (mut watch, added) = (cms.watch(&Default::default()), added.clone());
        tokio::spawn(async move {
            while let Some(ev) = watch.next().await {
                if ev.expect("no error").event_type == "ADDED" {
                    added.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if added.load(std::sync::atomic::Ordering::Relaxed) >= 1500 {
                    break;
                }
            }
            watch.resumes()
        })
    };
    for i in 0..1500 {
        cms.create(
            &serde_json::json!({"metadata": {"name": format!("c{i}"), "labels": {"bulk": "y"}}}),
        )
        .await
        .unwrap();
    }
    let bulk = skiff::api::wire::ListOptions {
        label_selector: Some("bulk=y".into()),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let e = cms
        .delete_collection(&bulk, &Default::default())
        .await
        .unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (504, "Timeout"), "{e}");
    assert!(
        e.message
            .contains("did not complete within the allotted timeout"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at the timeout"
    );
    // The server still answers, and the watch opened before delivered every create
    // without being cut and resumed.
    c.api("", "namespaces", None)
        .get("default")
        .await
        .expect("served");
    let resumes = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the watch saw every create")
        .unwrap();
    assert_eq!(resumes, 0, "one watch, never cut and resumed");
}
