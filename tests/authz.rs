//! The node authorizer: a kubelet may change only its own Node, its own Lease, and the pods
//! bound to it; the API server refuses anything else with 403.

mod common;

use serde_json::json;
use skiff::api::wire::{DeleteOptions, ListOptions, PatchType};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelets_write_only_their_own_node_lease_and_pods() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let n1 = client_for(&cluster.nats.url(), "system:node:n1", "node1-token").await;

    let nodes = n1.api("", "nodes", None);
    nodes
        .create(&json!({"metadata": {"name": "n1"}}))
        .await
        .expect("own node");
    let e = nodes
        .create(&json!({"metadata": {"name": "n2"}}))
        .await
        .unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"), "{e}");
    let e = nodes
        .create(&json!({"metadata": {"name": "n1.example"}}))
        .await
        .unwrap_err();
    assert_eq!(e.code, 403, "a dotted name is another node");
    // The name authorized is the name written: a create naming n1 with n2 in its body is
    // refused before anything is stored.
    let forged = skiff::api::wire::Request {
        resource: "nodes".into(),
        name: Some("n1".into()),
        body: Some(json!({"metadata": {"name": "n2"}})),
        ..Default::default()
    };
    let e = n1
        .call_raw(skiff::api::wire::Verb::Create, &forged)
        .await
        .unwrap_err();
    assert_eq!(e.code, 400, "{e}");
    assert!(e.message.contains("does not match the name"), "{e}");
    assert_eq!(
        admin
            .api("", "nodes", None)
            .get("n2")
            .await
            .unwrap_err()
            .code,
        404
    );
    nodes
        .patch(
            "n1",
            Some("status"),
            PatchType::Merge,
            &json!({"status": {"phase": "Running"}}),
        )
        .await
        .expect("own node status");

    let leases = n1.api("coordination.k8s.io", "leases", Some("kube-node-lease"));
    leases
        .create(&json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}}))
        .await
        .expect("own lease");
    assert_eq!(
        leases
            .create(&json!({"metadata": {"name": "n2"}}))
            .await
            .unwrap_err()
            .code,
        403
    );
    let other_ns = n1.api("coordination.k8s.io", "leases", Some("default"));
    assert_eq!(
        other_ns
            .create(&json!({"metadata": {"name": "n1"}}))
            .await
            .unwrap_err()
            .code,
        403
    );

    let admin_pods = admin.api("", "pods", Some("default"));
    for (name, node) in [("mine", "n1"), ("theirs", "n2")] {
        admin_pods
            .create(&json!({"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}}))
            .await
            .unwrap();
    }
    let pods = n1.api("", "pods", Some("default"));
    pods.patch(
        "mine",
        Some("status"),
        PatchType::Merge,
        &json!({"status": {"phase": "Running"}}),
    )
    .await
    .expect("status of a pod bound here");
    let e = pods
        .patch(
            "theirs",
            Some("status"),
            PatchType::Merge,
            &json!({"status": {"phase": "Running"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, 403, "{e}");
    let e = pods
        .patch(
            "mine",
            None,
            PatchType::Merge,
            &json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.code, 403,
        "spec and metadata are not the kubelet's to change"
    );
    assert_eq!(pods.create(&json!({"metadata": {"name": "new"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})).await.unwrap_err().code, 403);
    assert_eq!(
        pods.delete("theirs", &DeleteOptions::default())
            .await
            .unwrap_err()
            .code,
        403
    );
    pods.delete(
        "mine",
        &DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("the final delete of its own pod");
    // Reads of what running pods needs are fine (nodes, pods, services); other reads are
    // not (the node authorizer's static rules).
    assert!(n1
        .api("", "pods", None)
        .list(&ListOptions::default())
        .await
        .is_ok());
    assert!(n1.api("", "nodes", None).get("n1").await.is_ok());
    let e = n1
        .api("", "namespaces", None)
        .get("default")
        .await
        .unwrap_err();
    assert_eq!(e.code, 403);
    // Other kinds are not.
    let e = n1
        .api("", "configmaps", Some("default"))
        .create(&json!({"metadata": {"name": "c"}}))
        .await
        .unwrap_err();
    assert_eq!(e.code, 403);
}

/// A shared kubelet credential (`docker compose up --scale kubelet=N`): each holder becomes
/// the node its NATS identity names, and is held to that node like any kubelet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_bootstrap_token_acts_as_the_node_it_names_and_nothing_else() {
    let cluster = Cluster::start();
    let n7 = client_for(&cluster.nats.url(), "system:node:n7", "bootstrap-token").await;
    let nodes = n7.api("", "nodes", None);
    let created = nodes
        .create(&json!({"metadata": {"name": "n7"}}))
        .await
        .expect("its own node");
    assert_eq!(created["metadata"]["name"], "n7");
    let e = nodes
        .create(&json!({"metadata": {"name": "n8"}}))
        .await
        .unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"), "{e}");
    assert!(e.message.contains("system:node:n7"), "{e}");

    // Not an admin, not a scheduler, not the bootstrap user itself beyond reading.
    for identity in ["admin", "system:kube-scheduler", "system:node:"] {
        let c = client_for(&cluster.nats.url(), identity, "bootstrap-token").await;
        let e = c
            .api("", "namespaces", None)
            .create(&json!({"metadata": {"name": "x"}}))
            .await
            .unwrap_err();
        assert_eq!(e.code, 401, "{identity}: {e}");
    }
    let itself = client_for(
        &cluster.nats.url(),
        "system:node-bootstrap",
        "bootstrap-token",
    )
    .await;
    let e = itself
        .api("", "nodes", None)
        .create(&json!({"metadata": {"name": "n9"}}))
        .await
        .unwrap_err();
    assert_eq!(e.code, 403, "{e}");
}

/// The node authorizer's graph: a kubelet reads a Secret or ConfigMap only when a pod bound
/// to it uses it (get, or a list/watch of that one name), and NodeRestriction keeps it off
/// its taints and off labels in the `kubernetes.io` namespaces outside the kubelet's set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_read_only_what_their_pods_use_and_keep_off_their_taints() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let url = cluster.nats.url();
    let n1 = client_for(&url, "system:node:n1", "node1-token").await;
    let secrets = admin.api("", "secrets", Some("default"));
    let cms = admin.api("", "configmaps", Some("default"));
    for name in ["s1", "s2", "lonely"] {
        secrets
            .create(&json!({"metadata": {"name": name}, "stringData": {"k": "v"}}))
            .await
            .unwrap();
    }
    for name in ["c1", "c2"] {
        cms.create(&json!({"metadata": {"name": name}}))
            .await
            .unwrap();
    }
    let pods = admin.api("", "pods", Some("default"));
    let pod = |name: &str, node: &str, secret: &str, cm: &str| {
        json!({"metadata": {"name": name}, "spec": {"nodeName": node,
            "volumes": [{"name": "s", "secret": {"secretName": secret}}],
            "containers": [{"name": "c", "image": "busybox",
                "envFrom": [{"configMapRef": {"name": cm}}]}]}})
    };
    pods.create(&pod("p1", "n1", "s1", "c1")).await.unwrap();
    pods.create(&pod("p2", "n2", "s2", "c2")).await.unwrap();

    let mine = n1.api("", "secrets", Some("default"));
    mine.get("s1").await.expect("its own pod's Secret");
    for other in ["s2", "lonely", "nope"] {
        let e = mine.get(other).await.unwrap_err();
        assert_eq!(e.code, 403, "{other}: {e}");
    }
    let e = mine.list(&ListOptions::default()).await.unwrap_err();
    assert_eq!(e.code, 403, "no listing every Secret: {e}");
    let one = ListOptions {
        field_selector: Some("metadata.name=s1".into()),
        ..Default::default()
    };
    assert_eq!(
        mine.list(&one)
            .await
            .expect("a list of its one Secret")
            .items
            .len(),
        1
    );
    let other = ListOptions {
        field_selector: Some("metadata.name=s2".into()),
        ..Default::default()
    };
    assert_eq!(mine.list(&other).await.unwrap_err().code, 403);
    let its_cms = n1.api("", "configmaps", Some("default"));
    its_cms.get("c1").await.expect("its own pod's ConfigMap");
    assert_eq!(its_cms.get("c2").await.unwrap_err().code, 403);
    // Once the pod is gone, so is the node's access.
    pods.delete(
        "p1",
        &DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    wait_for(std::time::Duration::from_secs(10), "p1 gone", || {
        let pods = pods.clone();
        async move { pods.get("p1").await.is_err().then_some(()) }
    })
    .await;
    assert_eq!(mine.get("s1").await.unwrap_err().code, 403);

    // NodeRestriction: its own Node, but not its taints or a role label.
    let nodes = n1.api("", "nodes", None);
    nodes
        .create(
            &json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
            "spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}}),
        )
        .await
        .expect("a node may register itself with taints");
    nodes
        .patch(
            "n1",
            None,
            PatchType::Merge,
            &json!({"metadata": {"labels": {"team": "a", "node.kubernetes.io/pool": "p"}}}),
        )
        .await
        .expect("labels outside kubernetes.io, and node.kubernetes.io ones");
    let e = nodes
        .patch(
            "n1",
            None,
            PatchType::Merge,
            &json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, 403, "{e}");
    assert!(e.message.contains("is not allowed to modify labels"), "{e}");
    let e = nodes
        .patch(
            "n1",
            None,
            PatchType::Merge,
            &json!({"spec": {"taints": null}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, 403, "{e}");
    assert!(e.message.contains("is not allowed to modify taints"), "{e}");
    let node = admin.api("", "nodes", None).get("n1").await.unwrap();
    assert_eq!(
        node["spec"]["taints"][0]["key"], "dedicated",
        "nothing was changed"
    );
    // The admin still may.
    admin
        .api("", "nodes", None)
        .patch(
            "n1",
            None,
            PatchType::Merge,
            &json!({"spec": {"taints": null}}),
        )
        .await
        .unwrap();
}

/// A kubelet records Events only about itself: its own Node or a pod bound to it, on both
/// Event APIs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_records_events_only_about_itself_and_its_pods() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let n1 = client_for(&cluster.nats.url(), "system:node:n1", "node1-token").await;
    let pods = admin.api("", "pods", Some("default"));
    for (name, node) in [("mine", "n1"), ("theirs", "n2")] {
        pods.create(
            &json!({"metadata": {"name": name}, "spec": {"nodeName": node,
            "containers": [{"name": "c", "image": "busybox"}]}}),
        )
        .await
        .unwrap();
    }
    let event = |name: &str, kind: &str, about: &str| {
        let mut involved = json!({"kind": kind, "name": about, "apiVersion": "v1"});
        if kind == "Pod" {
            involved["namespace"] = json!("default");
        }
        json!({"metadata": {"name": name}, "involvedObject": involved,
            "reason": "Checked", "message": "m", "type": "Normal",
            "source": {"component": "kubelet", "host": "n1"}})
    };
    let events = n1.api("", "events", Some("default"));
    events
        .create(&event("e1", "Node", "n1"))
        .await
        .expect("about its Node");
    events
        .create(&event("e2", "Pod", "mine"))
        .await
        .expect("about its pod");
    for (name, kind, about) in [
        ("e3", "Node", "n2"),
        ("e4", "Pod", "theirs"),
        ("e5", "Secret", "s"),
    ] {
        let e = events.create(&event(name, kind, about)).await.unwrap_err();
        assert_eq!(e.code, 403, "{kind} {about}: {e}");
        assert!(
            e.message.contains("may only record events about itself"),
            "{e}"
        );
    }
    // The same through events.k8s.io (`regarding`).
    let v1 = n1.api("events.k8s.io", "events", Some("default"));
    let e = v1
        .create(
            &json!({"metadata": {"name": "e6"}, "regarding": {"kind": "Node", "name": "n2"},
            "reason": "Checked", "note": "m", "type": "Normal", "action": "Check",
            "reportingController": "kubelet", "reportingInstance": "n1",
            "eventTime": "2026-12-07T00:00:00.000000Z"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, 403, "{e}");
    assert!(
        e.message.contains("may only record events about itself"),
        "{e}"
    );
    // Nothing refused was stored.
    let stored = admin
        .api("", "events", Some("default"))
        .list(&ListOptions::default())
        .await
        .unwrap();
    let names: Vec<&str> = stored
        .items
        .iter()
        .map(|e| e["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"e1") && names.contains(&"e2"), "{names:?}");
    assert!(
        !names.iter().any(|n| ["e3", "e4", "e5", "e6"].contains(n)),
        "{names:?}"
    );
}
