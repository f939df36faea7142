//! The spine's suite (`tests/spine.rs`) again, with every API server's Store on a real etcd
//! (a one-member `etcd` per test): CRUD of every kind, the error Statuses, 100 concurrent
//! updates of which exactly one wins, watch order, resume and 410, the informer's relist,
//! paging, resourceVersion rules and dry runs. `common::store_on_etcd` sees this binary's
//! name and starts each `Cluster` on etcd.

#[path = "spine.rs"]
mod spine;

use spine::common;

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
