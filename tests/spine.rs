//! Acceptance tests of the spine against a real nats-server: CRUD for every kind, the error
//! Statuses, optimistic concurrency, watches that resume, and the informer's relist.

// Shared with tests/spine_etcd.rs, which runs this suite on etcd.
pub(crate) mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use skiff::api::wire::{DeleteOptions, ListOptions, PatchType};
use skiff::apiserver::ApiServerOptions;
use skiff::client::{ApiClient, Notification};

use common::*;

/// (group, resource, namespaced, a valid object, a merge patch for it)
fn samples() -> Vec<(&'static str, &'static str, bool, Value)> {
    vec![
        (
            "",
            "namespaces",
            false,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}),
        ),
        (
            "",
            "nodes",
            false,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1.example"}, "spec": {}}),
        ),
        (
            "",
            "pods",
            true,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "main", "image": "busybox:1", "command": ["sleep", "3600"]}]}}),
        ),
        (
            "apps",
            "replicasets",
            true,
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-rs"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "main", "image": "busybox:1"}]}}}}),
        ),
        (
            "apps",
            "deployments",
            true,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "main", "image": "busybox:1"}]}}}}),
        ),
        (
            "",
            "events",
            true,
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web-0.1"},
            "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "default"}, "reason": "Scheduled", "message": "assigned", "type": "Normal"}),
        ),
        (
            "coordination.k8s.io",
            "leases",
            true,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"},
            "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}}),
        ),
        (
            "",
            "configmaps",
            true,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}}),
        ),
        (
            "",
            "secrets",
            true,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "data": {"password": "aHVudGVyMg=="}}),
        ),
    ]
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_round_trip_for_every_kind() {
    let cluster = Cluster::start();
    let c = cluster.client().await;
    for (group, resource, namespaced, obj) in samples() {
        let ns = namespaced.then_some("default");
        let api = c.api(group, resource, ns);
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let created = api
            .create(&obj)
            .await
            .unwrap_or_else(|e| panic!("create {resource}: {e}"));
        assert!(
            !created["metadata"]["uid"].as_str().unwrap().is_empty(),
            "{resource} uid"
        );
        assert!(
            created["metadata"]["creationTimestamp"].is_string(),
            "{resource} timestamp"
        );
        let got = api.get(&name).await.unwrap();
        assert_eq!(got, created, "{resource}: get returns what create answered");

        let dup = api.create(&obj).await.unwrap_err();
        assert_eq!(
            (dup.code, dup.reason.as_str()),
            (409, "AlreadyExists"),
            "{resource}"
        );

        let list = api.list(&ListOptions::default()).await.unwrap();
        assert!(
            list.items
                .iter()
                .any(|i| i["metadata"]["name"] == name.as_str()),
            "{resource} listed"
        );
        assert!(rv(&created) <= list.resource_version.parse::<u64>().unwrap());

        // Update with the current resourceVersion succeeds; the same again is stale.
        let mut changed = got.clone();
        changed["metadata"]["labels"] = json!({"touched": "yes"});
        let updated = api
            .update(&changed)
            .await
            .unwrap_or_else(|e| panic!("update {resource}: {e}"));
        assert!(rv(&updated) > rv(&got));
        assert_eq!(updated["metadata"]["labels"]["touched"], "yes");
        let stale = api.update(&changed).await.unwrap_err();
        assert_eq!(
            (stale.code, stale.reason.as_str()),
            (409, "Conflict"),
            "{resource}"
        );

        // Merge patch and JSON patch.
        let patched = api
            .patch(
                &name,
                None,
                PatchType::Merge,
                &json!({"metadata": {"annotations": {"note": "merge"}}}),
            )
            .await
            .unwrap();
        assert_eq!(patched["metadata"]["annotations"]["note"], "merge");
        let patched = api
            .patch(
                &name,
                None,
                PatchType::Json,
                &json!([{"op": "add", "path": "/metadata/labels/json", "value": "patch"}]),
            )
            .await
            .unwrap();
        assert_eq!(patched["metadata"]["labels"]["json"], "patch");
        assert_eq!(patched["metadata"]["labels"]["touched"], "yes");

        // Delete; then NotFound.
        api.delete(&name, &DeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("delete {resource}: {e}"));
        if resource != "namespaces" {
            let gone = api.get(&name).await.unwrap_err();
            assert_eq!(
                (gone.code, gone.reason.as_str()),
                (404, "NotFound"),
                "{resource}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_back_as_statuses() {
    let cluster = Cluster::start();
    let c = cluster.client().await;
    let pods = c.api("", "pods", Some("default"));

    let e = pods.get("missing").await.unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "pods \"missing\" not found");

    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"},
        "spec": {"containers": [{"name": "c"}]}});
    let e = pods.create(&bad).await.unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let causes = e.details.as_ref().unwrap().causes.clone();
    assert!(
        causes.iter().any(|c| c.field == "metadata.name"),
        "{causes:?}"
    );
    assert!(
        causes.iter().any(|c| c.field == "spec.containers[0].image"),
        "{causes:?}"
    );
    assert!(e.message.contains("is invalid"), "{}", e.message);

    let e = c
        .api("", "pods", Some("nope"))
        .create(&json!({"metadata": {"name": "x"},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}))
        .await
        .unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"), "{e}");

    let stranger = client_for(&cluster.nats.url(), "admin", "wrong-token").await;
    let e = stranger
        .api("", "pods", Some("default"))
        .get("x")
        .await
        .unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));
    // A valid token used under someone else's identity is refused too.
    let impostor = client_for(&cluster.nats.url(), "system:node:n1", "admin-token").await;
    let e = impostor
        .api("", "pods", Some("default"))
        .get("x")
        .await
        .unwrap_err();
    assert_eq!(e.code, 401);

    // Graceful pod delete: a scheduled pod waits for its kubelet; an unscheduled one goes.
    let pod = json!({"metadata": {"name": "p1"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}});
    pods.create(&pod).await.unwrap();
    let deleting = pods.delete("p1", &DeleteOptions::default()).await.unwrap();
    assert!(deleting["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(deleting["metadata"]["deletionGracePeriodSeconds"], 30);
    pods.delete(
        "p1",
        &DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(pods.get("p1").await.unwrap_err().code, 404);

    // Finalizers hold a delete until they are removed.
    let cms = c.api("", "configmaps", Some("default"));
    cms.create(&json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}))
        .await
        .unwrap();
    let held = cms.delete("held", &DeleteOptions::default()).await.unwrap();
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    assert!(cms.get("held").await.is_ok());
    cms.patch(
        "held",
        None,
        PatchType::Merge,
        &json!({"metadata": {"finalizers": null}}),
    )
    .await
    .unwrap();
    assert_eq!(cms.get("held").await.unwrap_err().code, 404);

    // Binding sets the node once; status and scale subresources.
    pods.create(
        &json!({"metadata": {"name": "p2"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .await
    .unwrap();
    pods.create_subresource("p2", "binding", &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p2"}, "target": {"kind": "Node", "name": "n1"}})).await.unwrap();
    let bound = pods.get("p2").await.unwrap();
    assert_eq!(bound["spec"]["nodeName"], "n1");
    let again = pods
        .create_subresource("p2", "binding", &json!({"target": {"name": "n2"}}))
        .await
        .unwrap_err();
    assert_eq!(again.code, 409);
    let mut st = bound.clone();
    st["status"]["phase"] = json!("Running");
    st["spec"]["activeDeadlineSeconds"] = json!(5);
    let after = pods.update_subresource("p2", "status", &st).await.unwrap();
    assert_eq!(after["status"]["phase"], "Running");
    assert!(
        after["spec"].get("activeDeadlineSeconds").is_none(),
        "status writes leave spec alone"
    );
    let deploys = c.api("apps", "deployments", Some("default"));
    let d = samples()
        .into_iter()
        .find(|s| s.1 == "deployments")
        .unwrap()
        .3;
    deploys.create(&d).await.unwrap();
    let scale = deploys
        .patch(
            "web",
            Some("scale"),
            PatchType::Merge,
            &json!({"spec": {"replicas": 5}}),
        )
        .await
        .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["selector"], "app=web");
    let d = deploys.get("web").await.unwrap();
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2);

    // Label and field selectors, generateName.
    for i in 0..3 {
        pods.create(&json!({"metadata": {"generateName": "gen-", "labels": {"tier": if i == 0 {"front"} else {"back"}}},
            "spec": {"nodeName": format!("n{i}"), "containers": [{"name": "c", "image": "i"}]}})).await.unwrap();
    }
    let front = pods
        .list(&ListOptions {
            label_selector: Some("tier=front".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(front.items.len(), 1);
    assert!(front.items[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .starts_with("gen-"));
    let on_n2 = pods
        .list(&ListOptions {
            field_selector: Some("spec.nodeName=n2".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(on_n2.items.len(), 1);
    let e = pods
        .list(&ListOptions {
            field_selector: Some("spec.bogus=x".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_updates_one_wins() {
    let cluster = Cluster::start();
    let c = cluster.client().await;
    let cms = c.api("", "configmaps", Some("default"));
    let base = cms
        .create(&json!({"metadata": {"name": "race"}, "data": {"v": "0"}}))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let cms = cms.clone();
        let mut obj = base.clone();
        obj["data"]["v"] = json!(format!("writer-{i}"));
        tasks.push(tokio::spawn(async move { cms.update(&obj).await }));
    }
    let (mut ok, mut conflicts) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) if e.code == 409 && e.reason == "Conflict" => conflicts += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, conflicts), (1, 99));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_without_a_version_all_apply() {
    let cluster = Cluster::start();
    let c = cluster.client().await;
    let cms = c.api("", "configmaps", Some("default"));
    cms.create(&json!({"metadata": {"name": "shared"}}))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let cms = cms.clone();
        tasks.push(tokio::spawn(async move {
            cms.patch(
                "shared",
                None,
                PatchType::Merge,
                &json!({"data": {format!("k{i}"): "v"}}),
            )
            .await
        }));
    }
    for t in tasks {
        t.await
            .unwrap()
            .expect("an unconditional patch retries until it applies");
    }
    let data = cms.get("shared").await.unwrap()["data"]
        .as_object()
        .unwrap()
        .len();
    assert_eq!(data, 50, "no patch was lost");
}

/// Collects watch events until `n` object events arrived.
async fn collect(w: &mut skiff::client::Watcher, n: usize) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(30), w.next())
            .await
            .expect("watch keeps delivering")
            .expect("watch open")
            .expect("no watch error");
        out.push((
            ev.event_type.clone(),
            rv(&ev.object),
            ev.object["metadata"]["name"].as_str().unwrap().to_string(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_is_ordered_complete_and_resumes_after_a_cut() {
    let cluster = Cluster::start();
    let writer = cluster.client().await;
    let proxy = proxy::Proxy::start(cluster.nats.port).await;
    let watcher_client: ApiClient = client_for(&proxy.url(), ADMIN.0, ADMIN.1).await;
    let cms = writer.api("", "configmaps", Some("default"));
    let start = cms
        .list(&ListOptions::default())
        .await
        .unwrap()
        .resource_version;
    let mut w = watcher_client
        .api("", "configmaps", Some("default"))
        .watch(&ListOptions {
            resource_version: Some(start.clone()),
            ..Default::default()
        });
    let mut expected = Vec::new();
    for i in 0..20 {
        expected.push(rv(&cms
            .create(&json!({"metadata": {"name": format!("a{i}")}}))
            .await
            .unwrap()));
    }
    let mut seen = collect(&mut w, 20).await;
    // Cut the watcher off NATS: whatever is published meanwhile is lost to it.
    proxy.cut();
    for i in 0..20 {
        expected.push(rv(&cms
            .patch(
                &format!("a{i}"),
                None,
                PatchType::Merge,
                &json!({"data": {"x": "y"}}),
            )
            .await
            .unwrap()));
    }
    for i in 0..5 {
        expected.push(rv(&cms
            .delete(&format!("a{i}"), &DeleteOptions::default())
            .await
            .unwrap()));
    }
    proxy.heal();
    for i in 20..30 {
        expected.push(rv(&cms
            .create(&json!({"metadata": {"name": format!("a{i}")}}))
            .await
            .unwrap()));
    }
    seen.extend(collect(&mut w, 35).await);
    let revs: Vec<u64> = seen.iter().map(|s| s.1).collect();
    assert_eq!(
        revs, expected,
        "every change exactly once, in revision order"
    );
    assert!(w.resumes() >= 1, "the watcher resumed after the cut");
    assert_eq!(seen[20].0, "MODIFIED");
    assert_eq!(seen[40].0, "DELETED");
    assert_eq!(seen[45].0, "ADDED");
    // A watch's own timeout ends it; the client resumes without losing anything either.
    let mut short = writer
        .api("", "configmaps", Some("default"))
        .watch(&ListOptions {
            resource_version: Some(expected.last().unwrap().to_string()),
            timeout_seconds: Some(1),
            ..Default::default()
        });
    let resumed = short.resume_counter();
    let reader = tokio::spawn(async move {
        let got: Vec<u64> = collect(&mut short, 6).await.iter().map(|s| s.1).collect();
        (got, short.resumes())
    });
    // Three changes before the server ends the 1 s watch, three after the client resumed.
    let mut more = Vec::new();
    for i in 0..6 {
        if i == 3 {
            wait_for(
                Duration::from_secs(10),
                "the 1 s watch to end and resume",
                || {
                    let n = resumed.load(std::sync::atomic::Ordering::Relaxed);
                    async move { (n >= 1).then_some(()) }
                },
            )
            .await;
        }
        more.push(rv(&cms
            .create(&json!({"metadata": {"name": format!("b{i}")}}))
            .await
            .unwrap()));
    }
    let (got, resumes) = reader.await.unwrap();
    assert_eq!(got, more);
    assert!(
        resumes >= 1,
        "the server ended the 1 s watch and the client resumed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_watch_gets_410_and_informer_relists() {
    let cluster = Cluster::with(ApiServerOptions {
        history: 20,
        ..Default::default()
    });
    let writer = cluster.client().await;
    let cms = writer.api("", "configmaps", Some("default"));
    for i in 0..5 {
        cms.create(&json!({"metadata": {"name": format!("old{i}")}}))
            .await
            .unwrap();
    }
    let old = cms
        .list(&ListOptions::default())
        .await
        .unwrap()
        .resource_version;
    for i in 0..30 {
        cms.create(&json!({"metadata": {"name": format!("fill{i}")}}))
            .await
            .unwrap();
    }
    let mut w = cms.watch(&ListOptions {
        resource_version: Some(old.clone()),
        ..Default::default()
    });
    let e = w.next().await.unwrap().unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
    assert!(w.next().await.is_none());
    // A list at exactly a revision that fell out of history is Expired too; without
    // `Exact` a revision means "not older than", and the current state answers.
    let e = cms
        .list(&ListOptions {
            resource_version: Some(old.clone()),
            resource_version_match: Some("Exact".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, 410);
    let now = cms
        .list(&ListOptions {
            resource_version: Some(old),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        now.items.len() >= 30,
        "the current state: {}",
        now.items.len()
    );

    // The informer, cut off while more than the history window changes, relists.
    let proxy = proxy::Proxy::start(cluster.nats.port).await;
    let ic = client_for(&proxy.url(), ADMIN.0, ADMIN.1).await;
    let mut inf = skiff::client::Informer::start(
        ic.api("", "configmaps", Some("default")),
        ListOptions::default(),
    );
    loop {
        match tokio::time::timeout(Duration::from_secs(20), inf.notifications.recv())
            .await
            .unwrap()
        {
            Some(Notification::Synced) => break,
            Some(_) => {}
            None => panic!("informer stopped"),
        }
    }
    assert_eq!(inf.cache.len(), 35);
    proxy.cut();
    for i in 0..5 {
        cms.delete(&format!("old{i}"), &DeleteOptions::default())
            .await
            .unwrap();
    }
    for i in 0..40 {
        cms.create(&json!({"metadata": {"name": format!("new{i}")}}))
            .await
            .unwrap();
    }
    cms.patch(
        "fill0",
        None,
        PatchType::Merge,
        &json!({"data": {"k": "v"}}),
    )
    .await
    .unwrap();
    proxy.heal();
    let mut deleted = BTreeSet::new();
    let mut updated = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), inf.notifications.recv())
            .await
            .unwrap()
        {
            Some(Notification::Synced) => break,
            Some(Notification::Deleted(o)) => {
                deleted.insert(o["metadata"]["name"].as_str().unwrap().to_string());
            }
            Some(Notification::Updated(_, n)) => updated |= n["metadata"]["name"] == "fill0",
            Some(_) => {}
            None => panic!("informer stopped"),
        }
    }
    assert_eq!(
        deleted.len(),
        5,
        "relist reports the deletions it missed: {deleted:?}"
    );
    assert!(updated, "relist reports the update it missed");
    let fresh = cms.list_all(&ListOptions::default()).await.unwrap();
    let want: BTreeSet<(String, String)> = fresh
        .items
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().into(),
                o["metadata"]["resourceVersion"].as_str().unwrap().into(),
            )
        })
        .collect();
    let have: BTreeSet<(String, String)> = inf
        .cache
        .list()
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().into(),
                o["metadata"]["resourceVersion"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(have, want, "the informer converged to a fresh LIST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_lists_are_paged_consistently() {
    let cluster = Cluster::start();
    let c = cluster.client().await;
    let cms = c.api("", "configmaps", Some("default"));
    // ~40 KiB each: 60 of them exceed one 1 MiB NATS message.
    let blob = "x".repeat(40 * 1024);
    for i in 0..60 {
        cms.create(&json!({"metadata": {"name": format!("big{i:02}")}, "data": {"blob": blob}}))
            .await
            .unwrap();
    }
    let first = cms.list(&ListOptions::default()).await.unwrap();
    assert!(
        first.continue_token.is_some(),
        "one message cannot hold them all"
    );
    assert!(first.items.len() < 60);
    // Changes after the first page do not leak into the later pages.
    cms.delete("big59", &DeleteOptions::default())
        .await
        .unwrap();
    let all = cms.list_all(&ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), 59);
    let mut paged = first.items.clone();
    let mut token = first.continue_token.clone();
    while let Some(t) = token {
        let page = cms
            .list(&ListOptions {
                continue_token: Some(t),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.resource_version, first.resource_version);
        paged.extend(page.items);
        token = page.continue_token;
    }
    assert_eq!(
        paged.len(),
        60,
        "pages are served at the first page's revision"
    );
    let limited = cms
        .list(&ListOptions {
            limit: 7,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.items.len(), 7);
}

/// resourceVersion rules as kube-apiserver applies them, over NATS: "not older than" by
/// default, `Exact` on request, a revision the Store has not reached is 504 (retry after 1 s)
/// after a short wait, options kube refuses are 422; and a watch list (`sendInitialEvents`)
/// sends the current objects, then the `k8s.io/initial-events-end` BOOKMARK at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_version_rules_and_watch_lists() {
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let cms = client.api("", "configmaps", Some("default"));
    cms.create(&json!({"metadata": {"name": "a"}, "data": {"v": "1"}}))
        .await
        .unwrap();
    let first = cms
        .list(&ListOptions::default())
        .await
        .unwrap()
        .resource_version;
    cms.patch("a", None, PatchType::Merge, &json!({"data": {"v": "2"}}))
        .await
        .unwrap();
    cms.create(&json!({"metadata": {"name": "b"}}))
        .await
        .unwrap();
    let at = |rv: &str, m: Option<&str>| ListOptions {
        resource_version: Some(rv.to_string()),
        resource_version_match: m.map(String::from),
        ..Default::default()
    };
    // Not older than: today's objects. Exact: as they were.
    let now = cms.list(&at(&first, None)).await.unwrap();
    assert_eq!(now.items.len(), 2);
    let then = cms.list(&at(&first, Some("Exact"))).await.unwrap();
    assert_eq!(then.items.len(), 1);
    assert_eq!(then.items[0]["data"]["v"], "1");
    assert_eq!(then.resource_version, first);
    // A revision from the future: 504 after the wait, with a retry hint.
    let future = (now.resource_version.parse::<u64>().unwrap() + 1_000).to_string();
    let started = std::time::Instant::now();
    let e = cms.list(&at(&future, None)).await.unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (504, "Timeout"), "{e:?}");
    assert!(e.message.starts_with("Too large resource version"), "{e:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it waited for the revision"
    );
    // Options kube refuses.
    for (opts, why) in [
        (
            ListOptions {
                resource_version_match: Some("NotOlderThan".into()),
                ..Default::default()
            },
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ),
        (
            at(&first, Some("Sometimes")),
            "Unsupported value: \"Sometimes\"",
        ),
        (
            at("0", Some("Exact")),
            "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        ),
        (
            ListOptions {
                send_initial_events: Some(true),
                ..Default::default()
            },
            "sendInitialEvents is forbidden for list",
        ),
    ] {
        let e = cms.list(&opts).await.unwrap_err();
        assert_eq!(e.code, 422, "{opts:?}: {e:?}");
        assert!(e.message.contains(why), "{opts:?}: {e:?}");
    }
    let mut w = cms.watch(&ListOptions {
        send_initial_events: Some(true),
        ..Default::default()
    });
    let e = w.next().await.unwrap().unwrap_err();
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"),
        "{e:?}"
    );

    // The watch list: both objects, then the annotated bookmark, well before the 5 s
    // bookmark interval.
    let started = std::time::Instant::now();
    let mut w = cms.watch(&ListOptions {
        send_initial_events: Some(true),
        resource_version_match: Some("NotOlderThan".into()),
        allow_watch_bookmarks: true,
        ..Default::default()
    });
    w.yield_bookmarks = true;
    let mut seen = Vec::new();
    let end = loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("events")
            .unwrap()
            .unwrap();
        if ev.event_type == "BOOKMARK" {
            break ev;
        }
        assert_eq!(ev.event_type, "ADDED");
        seen.push(ev.object["metadata"]["name"].as_str().unwrap().to_string());
    };
    seen.sort();
    assert_eq!(seen, ["a", "b"]);
    assert_eq!(
        end.object["metadata"]["annotations"]["k8s.io/initial-events-end"], "true",
        "{end:?}"
    );
    assert_eq!(
        end.object["metadata"]["resourceVersion"],
        json!(now.resource_version)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Then changes, as any watch.
    cms.create(&json!({"metadata": {"name": "c"}}))
        .await
        .unwrap();
    let ev = loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        if ev.event_type != "BOOKMARK" {
            break ev;
        }
    };
    assert_eq!(
        (
            ev.event_type.as_str(),
            ev.object["metadata"]["name"].as_str()
        ),
        ("ADDED", Some("c"))
    );

    // deletecollection over NATS: a dry run in the options deletes nothing, then the
    // selected objects go and the others stay.
    let names = |l: &Value| {
        let mut v: Vec<String> = l["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let by_name = ListOptions {
        field_selector: Some("metadata.name!=c".into()),
        ..Default::default()
    };
    let dry = cms
        .delete_collection(
            &by_name,
            &DeleteOptions {
                dry_run: Some(vec!["All".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(names(&dry), ["a", "b"]);
    assert_eq!(
        cms.list(&ListOptions::default()).await.unwrap().items.len(),
        3
    );
    let gone = cms
        .delete_collection(&by_name, &DeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(gone["kind"], "ConfigMapList");
    assert_eq!(names(&gone), ["a", "b"]);
    let left = cms.list(&ListOptions::default()).await.unwrap().items;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["metadata"]["name"], "c");
}

/// Dry run as a property of the one call path: every verb and subresource, asked for in
/// the request (`?dryRun=All`), in a DeleteOptions body or in an Eviction's deleteOptions,
/// answers success and changes nothing — the Store's revision stays, and no watch sees an
/// event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_changes_nothing_on_any_verb_or_subresource() {
    use skiff::api::wire::{Request, Verb};
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let cms = client.api("", "configmaps", Some("default"));
    let pods = client.api("", "pods", Some("default"));
    let deps = client.api("apps", "deployments", Some("default"));
    for name in ["c1", "c2"] {
        cms.create(&json!({"metadata": {"name": name, "labels": {"x": "y"}}, "data": {"a": "1"}}))
            .await
            .unwrap();
    }
    let container = json!([{"name": "main", "image": "busybox"}]);
    pods.create(&json!({"metadata": {"name": "unbound"}, "spec": {"containers": container}}))
        .await
        .unwrap();
    pods.create(&json!({"metadata": {"name": "bound"}, "spec": {"nodeName": "n1", "containers": container}}))
        .await
        .unwrap();
    deps.create(&json!({"metadata": {"name": "web"}, "spec": {"replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": container}}}}))
        .await
        .unwrap();
    let revision = || async {
        cms.list(&ListOptions::default())
            .await
            .unwrap()
            .resource_version
    };
    let before = revision().await;
    let watch = |api: &skiff::client::Api| {
        api.watch(&ListOptions {
            resource_version: Some(before.clone()),
            ..Default::default()
        })
    };
    let mut watches = [watch(&cms), watch(&pods), watch(&deps)];

    let req = |group: &str, resource: &str, name: Option<&str>, sub: Option<&str>| Request {
        group: group.into(),
        resource: resource.into(),
        namespace: Some("default".into()),
        name: name.map(String::from),
        subresource: sub.map(String::from),
        dry_run: true,
        ..Default::default()
    };
    let body_dry = DeleteOptions {
        dry_run: Some(vec!["All".into()]),
        ..Default::default()
    };
    let cm = cms.get("c1").await.unwrap();
    let mut changed = cm.clone();
    changed["data"]["a"] = json!("2");
    let dep = deps.get("web").await.unwrap();
    let mut calls: Vec<(&str, Verb, Request)> = Vec::new();
    calls.push((
        "create",
        Verb::Create,
        Request {
            body: Some(json!({"metadata": {"name": "new"}})),
            ..req("", "configmaps", None, None)
        },
    ));
    calls.push((
        "update",
        Verb::Update,
        Request {
            body: Some(changed.clone()),
            ..req("", "configmaps", Some("c1"), None)
        },
    ));
    for (ptype, patch) in [
        (PatchType::Merge, json!({"data": {"a": "3"}})),
        (
            PatchType::Json,
            json!([{"op": "replace", "path": "/data/a", "value": "4"}]),
        ),
        (
            PatchType::Strategic,
            json!({"metadata": {"labels": {"z": "w"}}}),
        ),
    ] {
        calls.push((
            "patch",
            Verb::Patch,
            Request {
                body: Some(patch),
                patch_type: Some(ptype),
                ..req("", "configmaps", Some("c1"), None)
            },
        ));
    }
    calls.push((
        "delete (query)",
        Verb::Delete,
        req("", "configmaps", Some("c1"), None),
    ));
    calls.push((
        "delete (body)",
        Verb::Delete,
        Request {
            dry_run: false,
            delete: Some(body_dry.clone()),
            ..req("", "configmaps", Some("c1"), None)
        },
    ));
    calls.push((
        "deletecollection (query)",
        Verb::DeleteCollection,
        Request {
            list: ListOptions {
                label_selector: Some("x=y".into()),
                ..Default::default()
            },
            ..req("", "configmaps", None, None)
        },
    ));
    calls.push((
        "deletecollection (body)",
        Verb::DeleteCollection,
        Request {
            dry_run: false,
            delete: Some(body_dry.clone()),
            list: ListOptions {
                label_selector: Some("x=y".into()),
                ..Default::default()
            },
            ..req("", "configmaps", None, None)
        },
    ));
    let mut status = dep.clone();
    status["status"] = json!({"replicas": 7, "observedGeneration": 9});
    calls.push((
        "status update",
        Verb::Update,
        Request {
            body: Some(status),
            ..req("apps", "deployments", Some("web"), Some("status"))
        },
    ));
    calls.push((
        "status patch",
        Verb::Patch,
        Request {
            body: Some(json!({"status": {"phase": "Running"}})),
            patch_type: Some(PatchType::Merge),
            ..req("", "pods", Some("bound"), Some("status"))
        },
    ));
    calls.push((
        "scale update",
        Verb::Update,
        Request {
            body: Some(json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": 5}})),
            ..req("apps", "deployments", Some("web"), Some("scale"))
        },
    ));
    calls.push((
        "scale patch",
        Verb::Patch,
        Request {
            body: Some(json!({"spec": {"replicas": 6}})),
            patch_type: Some(PatchType::Merge),
            ..req("apps", "deployments", Some("web"), Some("scale"))
        },
    ));
    calls.push((
        "binding",
        Verb::Create,
        Request {
            body: Some(
                json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "unbound"},
            "target": {"kind": "Node", "name": "n1"}}),
            ),
            ..req("", "pods", Some("unbound"), Some("binding"))
        },
    ));
    calls.push(("eviction (query)", Verb::Create, Request {
        body: Some(json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "bound"}})),
        ..req("", "pods", Some("bound"), Some("eviction"))
    }));
    calls.push((
        "eviction (body)",
        Verb::Create,
        Request {
            dry_run: false,
            body: Some(
                json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "bound"},
            "deleteOptions": {"dryRun": ["All"]}}),
            ),
            ..req("", "pods", Some("bound"), Some("eviction"))
        },
    ));
    calls.push((
        "graceful pod delete",
        Verb::Delete,
        req("", "pods", Some("bound"), None),
    ));
    calls.push((
        "foreground delete",
        Verb::Delete,
        Request {
            dry_run: false,
            delete: Some(DeleteOptions {
                propagation_policy: Some("Foreground".into()),
                ..body_dry.clone()
            }),
            ..req("apps", "deployments", Some("web"), None)
        },
    ));
    for (what, verb, r) in &calls {
        if let Err(e) = client.call(*verb, r).await {
            panic!("dry-run {what} failed: {e:?}");
        }
    }
    assert_eq!(revision().await, before, "the Store's revision moved");
    assert_eq!(cms.get("c1").await.unwrap()["data"]["a"], "1");
    assert_eq!(deps.get("web").await.unwrap()["spec"]["replicas"], 2);
    assert!(pods.get("unbound").await.unwrap()["spec"]["nodeName"].is_null());
    assert!(pods.get("bound").await.unwrap()["metadata"]["deletionTimestamp"].is_null());
    for w in watches.iter_mut() {
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(1500), w.next()).await {
            panic!(
                "a watch saw {:?}",
                ev.map(|e| (e.event_type, e.object["metadata"]["name"].clone()))
            );
        }
    }
}

/// events.k8s.io Events over NATS: the same objects as core Events, converted both ways, in
/// answers and in watch events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_k8s_io_over_nats_are_the_core_events() {
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let new = client.api("events.k8s.io", "events", Some("default"));
    let core = client.api("", "events", Some("default"));
    let mut w = new.watch(&ListOptions::default());
    let made = new
        .create(&json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e1"}, "eventTime": "2026-12-07T12:00:00.000000Z",
            "reportingController": "example.com/ctl", "reportingInstance": "i",
            "action": "Act", "reason": "Why", "type": "Normal",
            "regarding": {"kind": "Pod", "name": "web", "namespace": "default"}, "note": "n"}))
        .await
        .unwrap();
    assert_eq!(made["apiVersion"], "events.k8s.io/v1");
    assert_eq!(made["note"], "n");
    let c = core.get("e1").await.unwrap();
    assert_eq!(
        (c["message"].as_str(), c["involvedObject"]["name"].as_str()),
        (Some("n"), Some("web"))
    );
    let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.event_type, "ADDED");
    assert_eq!(ev.object["apiVersion"], "events.k8s.io/v1");
    assert_eq!(ev.object["regarding"]["name"], "web");
    let list = new.list(&ListOptions::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0]["note"], "n");
    let e = new
        .create(&json!({"metadata": {"name": "e2"}, "note": "x", "type": "Normal"}))
        .await
        .unwrap_err();
    assert_eq!(e.code, 422, "{e:?}");
    // A patch is checked as a create is: it may not take away what the version requires.
    let e = new
        .patch(
            "e1",
            None,
            PatchType::Merge,
            &json!({"reportingController": null}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, 422, "{e:?}");
    assert!(
        e.message.contains("reportingController: Required value"),
        "{e:?}"
    );
    let patched = new
        .patch("e1", None, PatchType::Merge, &json!({"note": "m"}))
        .await
        .unwrap();
    assert_eq!(patched["note"], "m");
    assert_eq!(core.get("e1").await.unwrap()["message"], "m");
}
