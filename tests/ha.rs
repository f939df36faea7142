//! Several API servers on a three-member etcd (`skiff init` made their shared state once):
//! 1,000 concurrent creates spread over them by NATS while one API server and one etcd member
//! are killed with SIGKILL. Every acknowledged create is in a LIST from every surviving API
//! server, resourceVersions never go back, and an informer whose API server died goes on
//! through another and converges to a fresh LIST.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use skiff::api::wire::ListOptions;
use skiff::client::{ApiClient, ClientOptions, Informer};

use common::*;

/// A client that gives up on a request after 5 s (a request to a killed API server).
async fn client(url: &str) -> ApiClient {
    let mut o = ClientOptions::new(url, ADMIN.0, ADMIN.1);
    o.timeout = Duration::from_secs(5);
    o.watch_silence = Duration::from_secs(3);
    ApiClient::connect(o).await.expect("client connects")
}

/// An API server answering on `nats`, its own NATS connection included (the queue group
/// picks one per request).
fn api_server(nats: &str, dir: &std::path::Path, etcd: &[String]) -> ApiProcess {
    ApiProcess::start(
        nats,
        dir,
        &["--store", "etcd", "--etcd-servers", &etcd.join(",")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_losing_an_api_server_and_an_etcd_member() {
    let mut etcd = EtcdCluster::start(3);
    let endpoints = etcd.endpoints();
    let nats = NatsServer::start();
    // The shared state, made once; every API server then starts on it.
    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(skiff_bin())
        .arg("init")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let mut servers: Vec<ApiProcess> = (0..3)
        .map(|_| api_server(&nats.url(), dir.path(), &endpoints))
        .collect();
    let admin = wait_for(Duration::from_secs(60), "the API servers answer", || {
        let url = nats.url();
        async move {
            let c = client(&url).await;
            c.api("", "namespaces", None).get("default").await.ok()?;
            Some(c)
        }
    })
    .await;
    let cms = admin.api("", "configmaps", Some("default"));
    // An informer from before the failures.
    let informer = Informer::start(cms.clone(), ListOptions::default());

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let max_rv = Arc::new(Mutex::new(0u64));
    let mut tasks = Vec::new();
    for w in 0..50 {
        let (cms, acked, done, max_rv) = (cms.clone(), acked.clone(), done.clone(), max_rv.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let name = format!("c-{w}-{i}");
                for _attempt in 0..20 {
                    match cms.create(&json!({"metadata": {"name": name}})).await {
                        Ok(obj) => {
                            let rv: u64 = obj["metadata"]["resourceVersion"]
                                .as_str()
                                .unwrap()
                                .parse()
                                .unwrap();
                            let mut m = max_rv.lock().unwrap();
                            *m = (*m).max(rv);
                            acked.lock().unwrap().insert(name.clone());
                            break;
                        }
                        // A retry of a create that had landed before its answer was lost.
                        Err(e) if e.code == 409 => {
                            acked.lock().unwrap().insert(name.clone());
                            break;
                        }
                        // Lost with its API server, or etcd electing a leader: try again.
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // A third of the way in: one API server and one etcd member die.
    wait_for(Duration::from_secs(120), "a third of the creates", || {
        let done = done.clone();
        async move { (done.load(Ordering::Relaxed) >= 330).then_some(()) }
    })
    .await;
    servers[0].kill9();
    etcd.kill9(0);
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        1000,
        "every create was acknowledged in the end"
    );
    let max_rv = *max_rv.lock().unwrap();

    // Every surviving API server lists every acknowledged create, at a revision no older
    // than any acknowledged: asked one by one over HTTPS with the real kubectl.
    for server in &servers[1..] {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(dir.path().join("kubeconfig"))
            .args(["--server", &format!("https://{}", server.https)])
            .args(["get", "--raw", "/api/v1/namespaces/default/configmaps"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl via {}: {}",
            server.https,
            String::from_utf8_lossy(&out.stderr)
        );
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let names: BTreeSet<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["metadata"]["name"].as_str())
            .filter(|n| n.starts_with("c-"))
            .map(String::from)
            .collect();
        assert_eq!(names, acked, "{} lacks acknowledged creates", server.https);
        let list_rv: u64 = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            list_rv >= max_rv,
            "list at {list_rv} behind an acknowledged {max_rv}"
        );
    }
    // The informer, whose watch may have been on the dead API server, converges.
    wait_for(Duration::from_secs(60), "the informer converges", || {
        let (cache, n) = (informer.cache.clone(), acked.len());
        async move {
            let have = cache
                .list()
                .iter()
                .filter(|o| {
                    o["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("c-"))
                })
                .count();
            (have == n).then_some(())
        }
    })
    .await;
}
