//! The node authorizer: a kubelet may change only its own Node, its own Lease, and the pods
//! bound to it; the API server refuses anything else with 403.

mod common;

use serde_json::json;
use skiff::api::wire::{DeleteOptions, PatchType};

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
    // Reads are fine.
    assert!(n1.api("", "namespaces", None).get("default").await.is_ok());
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
