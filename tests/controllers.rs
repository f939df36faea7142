//! The controller-manager with the scheduler and fake-runtime kubelets, all over NATS:
//! ReplicaSets keep their pods, Deployments roll out, the garbage collector cleans up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use skiff::api::wire::{DeleteOptions, ListOptions, PatchType};
use skiff::client::leader::ElectionTimings;
use skiff::client::Api;
use skiff::controllers::nodelifecycle::NodeLifecycleOptions;
use skiff::controllers::run::start_controllers;
use skiff::kubelet::runtime::fake::FakeRuntime;
use skiff::kubelet::{Kubelet, KubeletOptions};
use skiff::scheduler::run::start_scheduler;

use common::*;

/// The CA the controllers publish as `kube-root-ca.crt` here.
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB (test)\n-----END CERTIFICATE-----\n";

fn fast() -> ElectionTimings {
    ElectionTimings {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
    }
}

/// Scheduler, controllers and 3 fake nodes on one actix thread.
fn control_plane(url: &str) -> ActixThread {
    control_plane_with(url, 1..=3, Default::default())
}

/// Scheduler, controllers (with these node lifecycle timings) and fake nodes n<i>.
fn control_plane_with(
    url: &str,
    nodes: std::ops::RangeInclusive<usize>,
    lifecycle: NodeLifecycleOptions,
) -> ActixThread {
    let url = url.to_string();
    ActixThread::start(move || async move {
        let mut keep = fake_kubelets(&url, nodes).await;
        keep.extend(
            scheduler_and_controllers(&url, "cp", fast(), lifecycle, Some(TEST_CA.to_string()))
                .await,
        );
        keep
    })
}

/// The pods `selector` picks; a failed list is an error, never an empty answer (an empty
/// list is what "collected" means).
async fn pods_of(pods: &Api, selector: &str) -> Result<Vec<Value>, skiff::api::Status> {
    pods.list(&ListOptions {
        label_selector: Some(selector.into()),
        ..Default::default()
    })
    .await
    .map(|l| l.items)
}

async fn wait_running(pods: &Api, selector: &str, n: usize) -> Vec<Value> {
    let (pods, selector) = (pods.clone(), selector.to_string());
    wait_for(
        Duration::from_secs(40),
        &format!("{n} running pods for {selector}"),
        || {
            let (pods, selector) = (pods.clone(), selector.clone());
            async move {
                let live: Vec<Value> = pods_of(&pods, &selector)
                    .await
                    .ok()?
                    .into_iter()
                    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                    .collect();
                let running = live
                    .iter()
                    .filter(|p| p["status"]["phase"] == "Running")
                    .count();
                (live.len() == n && running == n).then_some(live)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicasets_keep_their_pods_and_the_collector_cleans_up() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let _cp = control_plane(&cluster.nats.url());
    let rss = admin.api("apps", "replicasets", Some("default"));
    let pods = admin.api("", "pods", Some("default"));
    rss.create(&json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
        .await
        .unwrap();
    let running = wait_running(&pods, "app=web", 3).await;
    for p in &running {
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
        assert!(p["metadata"]["name"].as_str().unwrap().starts_with("web-"));
    }
    wait_for(Duration::from_secs(20), "RS status", || {
        let rss = rss.clone();
        async move { (rss.get("web").await.ok()?["status"]["readyReplicas"] == 3).then_some(()) }
    })
    .await;
    // A deleted pod is replaced; scaling down removes the surplus.
    pods.delete(
        running[0]["metadata"]["name"].as_str().unwrap(),
        &DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    wait_running(&pods, "app=web", 3).await;
    rss.patch(
        "web",
        Some("scale"),
        PatchType::Merge,
        &json!({"spec": {"replicas": 1}}),
    )
    .await
    .unwrap();
    wait_running(&pods, "app=web", 1).await;
    rss.patch(
        "web",
        Some("scale"),
        PatchType::Merge,
        &json!({"spec": {"replicas": 2}}),
    )
    .await
    .unwrap();
    wait_running(&pods, "app=web", 2).await;
    // A pod that existed before its ReplicaSet and matches the selector is adopted and
    // counted, not duplicated.
    pods.create(&json!({"metadata": {"name": "stray", "labels": {"app": "api"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))
        .await
        .unwrap();
    rss.create(&json!({"metadata": {"name": "api"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
        "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
        .await
        .unwrap();
    let two = wait_running(&pods, "app=api", 2).await;
    let stray = two
        .iter()
        .find(|p| p["metadata"]["name"] == "stray")
        .expect("the orphan is one of the two");
    assert_eq!(
        stray["metadata"]["ownerReferences"][0]["name"], "api",
        "adopted"
    );
    // Deleting the ReplicaSet deletes its pods (background propagation).
    rss.delete(
        "web",
        &DeleteOptions {
            propagation_policy: Some("Background".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    wait_for(Duration::from_secs(30), "pods collected", || {
        let pods = pods.clone();
        async move {
            pods_of(&pods, "app=web")
                .await
                .ok()?
                .is_empty()
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_roll_out_and_are_collected() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let _cp = control_plane(&cluster.nats.url());
    let deploys = admin.api("apps", "deployments", Some("default"));
    let rss = admin.api("apps", "replicasets", Some("default"));
    let pods = admin.api("", "pods", Some("default"));
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}}}});
    deploys.create(&d).await.unwrap();
    wait_running(&pods, "app=web", 3).await;
    let done = |image: &'static str| {
        let (deploys, rss) = (deploys.clone(), rss.clone());
        async move {
            wait_for(
                Duration::from_secs(60),
                &format!("rollout of {image} complete"),
                || {
                    let (deploys, rss) = (deploys.clone(), rss.clone());
                    async move {
                        let d = deploys.get("web").await.ok()?;
                        let s = &d["status"];
                        let want = d["spec"]["replicas"].as_i64()?;
                        let complete = d["metadata"]["generation"].as_i64()?
                            <= s["observedGeneration"].as_i64()?
                            && s["updatedReplicas"].as_i64()? >= want
                            && s["replicas"].as_i64()? <= s["updatedReplicas"].as_i64()?
                            && s["availableReplicas"].as_i64()? >= s["updatedReplicas"].as_i64()?;
                        let list = rss.list(&ListOptions::default()).await.ok()?;
                        let current = list.items.iter().find(|rs| {
                            rs["spec"]["template"]["spec"]["containers"][0]["image"] == image
                        })?;
                        (complete && current["status"]["replicas"] == want).then_some(list.items)
                    }
                },
            )
            .await
        }
    };
    let first = done("v1").await;
    assert_eq!(first.len(), 1);
    let rs1 = first[0]["metadata"]["name"].as_str().unwrap().to_string();
    assert!(rs1.starts_with("web-"));
    assert_eq!(
        first[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    // A new template rolls out to a new ReplicaSet; the old one ends at 0.
    // While the new template rolls out (maxSurge 1, maxUnavailable 0), sample the ready pods:
    // never fewer than 3, never more than 4 pods in all.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (pods, sampling) = (pods.clone(), sampling.clone());
        tokio::spawn(async move {
            let (mut min_ready, mut max_total) = (usize::MAX, 0);
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                let live: Vec<Value> = pods_of(&pods, "app=web")
                    .await
                    .expect("listing pods while sampling")
                    .into_iter()
                    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                    .collect();
                let ready = live
                    .iter()
                    .filter(|p| {
                        p["status"]["conditions"].as_array().is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                    })
                    .count();
                min_ready = min_ready.min(ready);
                max_total = max_total.max(live.len());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (min_ready, max_total)
        })
    };
    deploys
        .patch("web", None, PatchType::Merge, &json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}}))
        .await
        .unwrap();
    let second = done("v2").await;
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let (min_ready, max_total) = sampler.await.unwrap();
    assert!(
        min_ready >= 3,
        "never more than maxUnavailable (0) missing: saw {min_ready} ready"
    );
    assert!(
        max_total <= 4,
        "never more than maxSurge (1) extra: saw {max_total} pods"
    );
    assert_eq!(second.len(), 2);
    let old = second
        .iter()
        .find(|rs| rs["metadata"]["name"] == rs1.as_str())
        .unwrap();
    assert_eq!(old["spec"]["replicas"], 0);
    let running = wait_running(&pods, "app=web", 3).await;
    assert!(running
        .iter()
        .all(|p| p["spec"]["containers"][0]["image"] == "v2"));
    let d = deploys.get("web").await.unwrap();
    let progressing = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(
        progressing["reason"], "NewReplicaSetAvailable",
        "{progressing}"
    );
    // Scaling goes to the current ReplicaSet.
    deploys
        .patch(
            "web",
            Some("scale"),
            PatchType::Merge,
            &json!({"spec": {"replicas": 5}}),
        )
        .await
        .unwrap();
    wait_running(&pods, "app=web", 5).await;
    // Deleting the Deployment removes its ReplicaSets and their pods.
    deploys
        .delete(
            "web",
            &DeleteOptions {
                propagation_policy: Some("Background".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "everything collected", || {
        let (rss, pods) = (rss.clone(), pods.clone());
        async move {
            let r = rss
                .list(&ListOptions::default())
                .await
                .ok()?
                .items
                .is_empty();
            let p = pods_of(&pods, "app=web").await.ok()?.is_empty();
            (r && p).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_goes_not_ready_and_its_pods_move() {
    // Pods get DefaultTolerationSeconds' tolerations at create: 2 s here, as the controller
    // below waits.
    let cluster = Cluster::with(skiff::apiserver::ApiServerOptions {
        admission: skiff::apiserver::kinds::Admission {
            toleration_seconds: 2,
            ..Default::default()
        },
        ..Default::default()
    });
    let admin = cluster.client().await;
    let lifecycle = NodeLifecycleOptions {
        grace: Duration::from_secs(2),
        eviction_timeout: Duration::from_secs(2),
    };
    // n1 and n2 with the control plane; n3 on a thread of its own that the test stops.
    let _cp = control_plane_with(&cluster.nats.url(), 1..=2, lifecycle);
    let url = cluster.nats.url();
    let n3 = ActixThread::start(move || async move {
        let client = client_for(&url, "system:node:n3", "node3-token").await;
        let mut o = KubeletOptions::new("n3");
        o.lease_renew = Duration::from_millis(500);
        actix::Actor::start(Kubelet::new(
            o,
            client,
            Arc::new(FakeRuntime::new("127.0.0.1".into())),
        ))
    });
    let rss = admin.api("apps", "replicasets", Some("default"));
    let pods = admin.api("", "pods", Some("default"));
    rss.create(&json!({"metadata": {"name": "web"}, "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
        .await
        .unwrap();
    let running = wait_running(&pods, "app=web", 6).await;
    assert!(
        running.iter().any(|p| p["spec"]["nodeName"] == "n3"),
        "some pods landed on n3"
    );
    drop(n3);
    let nodes = admin.api("", "nodes", None);
    wait_for(Duration::from_secs(20), "n3 NotReady", || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get("n3").await.ok()?;
            let ready = n["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            let tainted = n["spec"]["taints"]
                .as_array()?
                .iter()
                .any(|t| t["key"] == "node.kubernetes.io/unreachable");
            (ready["status"] == "Unknown" && tainted).then_some(())
        }
    })
    .await;
    // After the (shortened) toleration the pods are evicted and replaced on n1 and n2.
    wait_for(Duration::from_secs(40), "6 running pods off n3", || {
        let pods = pods.clone();
        async move {
            let live: Vec<Value> = pods_of(&pods, "app=web")
                .await
                .ok()?
                .into_iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            let ok = live.len() == 6
                && live
                    .iter()
                    .all(|p| p["status"]["phase"] == "Running" && p["spec"]["nodeName"] != "n3");
            ok.then_some(())
        }
    })
    .await;
}

/// Every namespace has the ServiceAccount `default` and the ConfigMap `kube-root-ca.crt`
/// with the cluster CA: made when the namespace is, made again when deleted, and the CA put
/// back when someone edits it (kube's service account and root CA publisher controllers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_keeps_its_default_account_and_the_root_ca() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let _cp = control_plane(&cluster.nats.url());
    admin
        .api("", "namespaces", None)
        .create(&json!({"metadata": {"name": "fresh"}}))
        .await
        .unwrap();
    let cms = admin.api("", "configmaps", Some("fresh"));
    let accounts = admin.api("", "serviceaccounts", Some("fresh"));
    let ca = wait_for(
        Duration::from_secs(20),
        "kube-root-ca.crt in fresh",
        || async { cms.get("kube-root-ca.crt").await.ok() },
    )
    .await;
    assert_eq!(ca["data"]["ca.crt"], TEST_CA);
    assert!(ca["metadata"]["annotations"]["kubernetes.io/description"]
        .as_str()
        .unwrap()
        .contains("kube-apiserver"));
    wait_for(
        Duration::from_secs(20),
        "default ServiceAccount",
        || async { accounts.get("default").await.ok() },
    )
    .await;
    // Edited: put back. Deleted: made again (both kinds).
    let mut edited = ca.clone();
    edited["data"]["ca.crt"] = json!("not the CA");
    cms.update(&edited).await.unwrap();
    wait_for(Duration::from_secs(20), "the CA restored", || async {
        let now = cms.get("kube-root-ca.crt").await.ok()?;
        (now["data"]["ca.crt"] == TEST_CA).then_some(())
    })
    .await;
    let uid = ca["metadata"]["uid"].clone();
    cms.delete("kube-root-ca.crt", &DeleteOptions::default())
        .await
        .unwrap();
    accounts
        .delete("default", &DeleteOptions::default())
        .await
        .unwrap();
    wait_for(Duration::from_secs(20), "both made again", || async {
        let cm = cms.get("kube-root-ca.crt").await.ok()?;
        accounts.get("default").await.ok()?;
        (cm["metadata"]["uid"] != uid && cm["data"]["ca.crt"] == TEST_CA).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_deletes_what_is_in_it_then_the_namespace() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let _cp = control_plane(&cluster.nats.url());
    let namespaces = admin.api("", "namespaces", None);
    namespaces
        .create(&json!({"metadata": {"name": "team"}}))
        .await
        .unwrap();
    let rss = admin.api("apps", "replicasets", Some("team"));
    rss.create(&json!({"metadata": {"name": "web"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
        .await
        .unwrap();
    admin
        .api("", "configmaps", Some("team"))
        .create(&json!({"metadata": {"name": "cfg"}}))
        .await
        .unwrap();
    // Held back by a finalizer until the test lets it go.
    admin
        .api("", "configmaps", Some("team"))
        .create(&json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}))
        .await
        .unwrap();
    // A custom resource in the namespace goes too: the controller finds its kind from the CRD.
    admin
        .api("apiextensions.k8s.io", "customresourcedefinitions", None)
        .create(&json!({"metadata": {"name": "gadgets.example.com"}, "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "gadgets", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {
                "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}))
        .await
        .unwrap();
    let gadgets = admin.api("example.com", "gadgets", Some("team"));
    gadgets
        .create(
            &json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}),
        )
        .await
        .unwrap();
    let pods = admin.api("", "pods", Some("team"));
    wait_running(&pods, "app=web", 2).await;
    namespaces
        .delete("team", &DeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        namespaces.get("team").await.unwrap()["status"]["phase"],
        "Terminating"
    );
    let e = admin
        .api("", "configmaps", Some("team"))
        .create(&json!({"metadata": {"name": "late"}}))
        .await
        .unwrap_err();
    assert_eq!(e.code, 403, "no new content in a terminating namespace");
    // The namespace controller says what holds the namespace, in kube's conditions.
    let condition = |ns: &serde_json::Value, kind: &str| {
        ns["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned())
    };
    wait_for(Duration::from_secs(30), "the finalizer reported", || {
        let namespaces = namespaces.clone();
        async move {
            let ns = namespaces.get("team").await.ok()?;
            let f = condition(&ns, "NamespaceFinalizersRemaining")?;
            let c = condition(&ns, "NamespaceContentRemaining")?;
            (f["status"] == "True"
                && f["reason"] == "SomeFinalizersRemain"
                && f["message"]
                    == "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
                && c["status"] == "True"
                && c["message"] == "Some resources are remaining: configmaps. has 1 resource instances")
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        condition(
            &namespaces.get("team").await.unwrap(),
            "NamespaceDeletionContentFailure"
        )
        .unwrap()["status"],
        "False"
    );
    admin
        .api("", "configmaps", Some("team"))
        .patch(
            "held",
            None,
            skiff::api::wire::PatchType::Merge,
            &json!({"metadata": {"finalizers": null}}),
        )
        .await
        .unwrap();
    wait_for(Duration::from_secs(40), "namespace gone", || {
        let namespaces = namespaces.clone();
        async move {
            namespaces
                .get("team")
                .await
                .err()
                .filter(|e| e.code == 404)
                .map(|_| ())
        }
    })
    .await;
    assert!(pods_of(&pods, "app=web").await.unwrap().is_empty());
    assert_eq!(gadgets.get("g").await.unwrap_err().code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controller_managers_one_acts_and_the_standby_takes_over() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let url = cluster.nats.url();
    let _nodes = {
        let url = url.clone();
        ActixThread::start(move || async move {
            let client = client_for(&url, "system:node:n1", "node1-token").await;
            let scheduler = start_scheduler(
                client_for(&url, "system:kube-scheduler", "scheduler-token").await,
                "s",
            )
            .await;
            (
                actix::Actor::start(Kubelet::new(
                    KubeletOptions::new("n1"),
                    client,
                    Arc::new(FakeRuntime::new("127.0.0.1".into())),
                )),
                scheduler,
            )
        })
    };
    let manager = |identity: &'static str| {
        let url = url.clone();
        ActixThread::start(move || async move {
            start_controllers(
                client_for(
                    &url,
                    "system:kube-controller-manager",
                    "controller-manager-token",
                )
                .await,
                identity,
                fast(),
                Default::default(),
                None,
            )
        })
    };
    let mut managers = [
        ("cm-a", Some(manager("cm-a"))),
        ("cm-b", Some(manager("cm-b"))),
    ];
    let rss = admin.api("apps", "replicasets", Some("default"));
    let pods = admin.api("", "pods", Some("default"));
    let rs = |name: &str, replicas: i64| {
        json!({"metadata": {"name": name}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    };
    // Both managers watch; only the leader acts, so the count never overshoots. Every pod
    // either manager creates is seen as ADDED by a watch from before the ReplicaSet exists.
    let from = pods
        .list(&ListOptions::default())
        .await
        .unwrap()
        .resource_version;
    let mut watch = pods.watch(&ListOptions {
        label_selector: Some("app=one".into()),
        resource_version: Some(from),
        ..Default::default()
    });
    let (added_tx, mut added) = tokio::sync::watch::channel(0usize);
    let counting = tokio::spawn(async move {
        let mut names = std::collections::BTreeSet::new();
        while let Some(Ok(ev)) = watch.next().await {
            if ev.event_type == "ADDED" {
                names.insert(
                    ev.object["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                );
                added_tx.send_replace(names.len());
            }
        }
    });
    rss.create(&rs("one", 4)).await.unwrap();
    wait_running(&pods, "app=one", 4).await;
    wait_for(
        Duration::from_secs(20),
        "ReplicaSet one reports 4 ready",
        || {
            let rss = rss.clone();
            async move {
                let status = rss.get("one").await.ok()?["status"].clone();
                (status["readyReplicas"] == 4 && status["replicas"] == 4).then_some(())
            }
        },
    )
    .await;
    tokio::time::timeout(Duration::from_secs(10), added.wait_for(|n| *n >= 4))
        .await
        .expect("the watch saw the 4 pods")
        .unwrap();
    assert_eq!(*added.borrow(), 4, "exactly one manager created pods");
    assert_eq!(pods_of(&pods, "app=one").await.unwrap().len(), 4);
    counting.abort();
    let leases = admin.api("coordination.k8s.io", "leases", Some("kube-system"));
    let holder = leases.get("skiff-controller-manager").await.unwrap()["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    for (name, thread) in managers.iter_mut() {
        if *name == holder {
            drop(thread.take());
        }
    }
    let stopped = std::time::Instant::now();
    rss.create(&rs("two", 2)).await.unwrap();
    wait_running(&pods, "app=two", 2).await;
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "standby acted after {:?}",
        stopped.elapsed()
    );
    assert_ne!(
        leases.get("skiff-controller-manager").await.unwrap()["spec"]["holderIdentity"],
        holder.as_str()
    );
}

/// Events expire after the API server's `--event-ttl` from their last change, as kube's do;
/// other objects stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expire_after_the_event_ttl() {
    let cluster = Cluster::with(skiff::apiserver::ApiServerOptions {
        event_ttl: Duration::from_secs(3),
        ..Default::default()
    });
    let admin = cluster.client().await;
    let events = admin.api("", "events", Some("default"));
    let event = |name: &str| {
        json!({"metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Tested", "message": "m", "type": "Normal", "source": {"component": "test"},
            "count": 1})
    };
    events.create(&event("old")).await.unwrap();
    admin
        .api("", "configmaps", Some("default"))
        .create(&json!({"metadata": {"name": "stays"}}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(events.get("old").await.is_ok(), "not expired yet");
    wait_for(Duration::from_secs(15), "the event expired", || {
        let events = events.clone();
        async move {
            events
                .get("old")
                .await
                .err()
                .filter(|e| e.code == 404)
                .map(|_| ())
        }
    })
    .await;
    assert!(admin
        .api("", "configmaps", Some("default"))
        .get("stays")
        .await
        .is_ok());
}

/// PodGC: a pod bound to a node that does not exist is deleted once the quarantine passes
/// (here 1 s; kube's 40 s); a pod on a node that exists is left alone; terminated pods
/// beyond the threshold go, oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podgc_deletes_pods_of_vanished_nodes_and_terminated_pods_over_the_threshold() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let url = cluster.nats.url();
    let _gc = ActixThread::start(move || async move {
        let client = client_for(
            &url,
            "system:kube-controller-manager",
            "controller-manager-token",
        )
        .await;
        let (tx, rx) = tokio::sync::watch::channel(true);
        let gc = skiff::controllers::podgc::start_with(client, rx, Duration::from_secs(1), 2);
        vec![Box::new(gc) as Box<dyn std::any::Any>, Box::new(tx)]
    });
    let nodes = admin.api("", "nodes", None);
    nodes
        .create(&json!({"metadata": {"name": "real"}}))
        .await
        .unwrap();
    let pods = admin.api("", "pods", Some("default"));
    for (name, node) in [("orphan", "ghost"), ("homed", "real")] {
        pods.create(&json!({"metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}}))
            .await
            .unwrap();
    }
    wait_for(
        Duration::from_secs(20),
        "the pod on a missing node deleted",
        || {
            let pods = pods.clone();
            async move {
                pods.get("orphan")
                    .await
                    .err()
                    .filter(|e| e.code == 404)
                    .map(|_| ())
            }
        },
    )
    .await;
    assert!(
        pods.get("homed").await.is_ok(),
        "a pod on a real node stays"
    );

    // Three terminated pods, threshold 2: the oldest goes.
    for i in 0..3 {
        let name = format!("done-{i}");
        pods.create(&json!({"metadata": {"name": name},
            "spec": {"nodeName": "real", "containers": [{"name": "c", "image": "i"}]}}))
            .await
            .unwrap();
        pods.patch(
            &name,
            Some("status"),
            PatchType::Merge,
            &json!({"status": {"phase": "Succeeded"}}),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    wait_for(
        Duration::from_secs(20),
        "the oldest terminated pod deleted",
        || {
            let pods = pods.clone();
            async move {
                pods.get("done-0")
                    .await
                    .err()
                    .filter(|e| e.code == 404)
                    .map(|_| ())
            }
        },
    )
    .await;
    assert!(pods.get("done-1").await.is_ok() && pods.get("done-2").await.is_ok());
}
