//! Faults under load, with real nats-server processes: the bus is killed (`kill -9`) and
//! started again while 1,000 fake kubelets run and a Deployment scales up. Every component
//! reconnects, the Deployment converges, an informer's cache equals a fresh LIST, and no
//! acknowledged write is lost.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use skiff::api::wire::{ListOptions, PatchType};
use skiff::apiserver::ApiServerOptions;
use skiff::client::{ApiClient, ClientOptions, Informer};
use skiff::controllers::run::start_controllers;
use skiff::kubelet::runtime::fake::FakeRuntime;
use skiff::kubelet::{Kubelet, KubeletOptions};
use skiff::scheduler::run::start_scheduler;

use common::*;

const NODES: usize = 1_000;
const REPLICAS: i64 = 300;

fn tokens() -> String {
    let mut t = String::from(TOKENS);
    for i in 0..NODES {
        t.push_str(&format!(
            "fnode{i}-token,system:node:f{i},{},\"system:nodes\"\n",
            1_000 + i
        ));
    }
    t
}

/// `name → resourceVersion` of a list of objects.
fn versions(items: &[serde_json::Value]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap_or("").to_string(),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

fn reconnects() -> f64 {
    let m = skiff::metrics::parse(&skiff::metrics::render()).unwrap();
    m.iter()
        .filter(|s| s.name == "skiff_nats_reconnects_total")
        .map(|s| s.value)
        .sum()
}

/// 1,000 fake kubelets (100 per NATS connection, each with its own identity and token), a
/// scheduler and the controllers, on an actix System of their own.
fn start_components(url: &str) -> ActixThread {
    let u = url.to_string();
    ActixThread::start(move || async move {
        let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
        let mut conns = Vec::new();
        for c in 0..NODES.div_ceil(100) {
            conns.push(
                async_nats::ConnectOptions::new()
                    .event_callback(skiff::client::nats_events(format!("fault-kubelets-{c}")))
                    .connect(u.as_str())
                    .await
                    .unwrap(),
            );
        }
        for i in 0..NODES {
            let node = format!("f{i}");
            let o = ClientOptions::new(
                &u,
                &format!("system:node:{node}"),
                &format!("fnode{i}-token"),
            );
            let client = ApiClient::from_nats(conns[i / 100].clone(), &o);
            let mut ko = KubeletOptions::new(&node);
            ko.capacity = (32, 64 << 30, 110);
            keep.push(Box::new(actix::Actor::start(Kubelet::new(
                ko,
                client,
                Arc::new(FakeRuntime::new("127.0.0.1".into())),
            ))));
        }
        keep.push(Box::new(
            start_scheduler(
                client_for(&u, "system:kube-scheduler", "scheduler-token").await,
                "fault",
            )
            .await,
        ));
        keep.push(Box::new(start_controllers(
            client_for(
                &u,
                "system:kube-controller-manager",
                "controller-manager-token",
            )
            .await,
            "fault",
            Default::default(),
            Default::default(),
            None,
        )));
        keep
    })
}

/// Waits until the informer's cache equals a fresh LIST of `api` (names and revisions).
async fn converges(informer: &Informer, api: &skiff::client::Api, secs: u64) {
    wait_for(
        Duration::from_secs(secs),
        "the informer equal to a fresh LIST",
        || {
            let (api, cache) = (api.clone(), informer.cache.clone());
            async move {
                let fresh = api.list_all(&ListOptions::default()).await.ok()?;
                (versions(&fresh.items) == versions(&cache.list())).then_some(())
            }
        },
    )
    .await;
}

async fn all_nodes_registered(admin: &ApiClient) {
    let nodes = admin.api("", "nodes", None);
    wait_for(Duration::from_secs(120), "1,000 nodes registered", || {
        let nodes = nodes.clone();
        async move {
            (nodes
                .list_all(&ListOptions::default())
                .await
                .ok()?
                .items
                .len()
                == NODES)
                .then_some(())
        }
    })
    .await;
}

/// A Deployment of `replicas` pods (created at 0 and scaled, as a rollout would).
async fn scale_up(admin: &ApiClient, replicas: i64) -> skiff::client::Api {
    let deploys = admin.api("apps", "deployments", Some("default"));
    deploys
        .create(&json!({"metadata": {"name": "web"}, "spec": {"replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
        .await
        .unwrap();
    deploys
        .patch(
            "web",
            None,
            PatchType::Merge,
            &json!({"spec": {"replicas": replicas}}),
        )
        .await
        .unwrap();
    deploys
}

async fn ready(deploys: &skiff::client::Api, replicas: i64, secs: u64) {
    wait_for(
        Duration::from_secs(secs),
        &format!("{replicas} ready replicas"),
        || {
            let deploys = deploys.clone();
            async move {
                let d = deploys.get("web").await.ok()?;
                (d["status"]["readyReplicas"] == replicas).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_under_load_loses_nothing_and_everything_converges() {
    let mut cluster = Cluster::with_tokens(
        ApiServerOptions {
            history: 200_000,
            ..Default::default()
        },
        &tokens(),
    );
    let url = cluster.nats.url();
    let admin = cluster.client().await;
    let _components = start_components(&url);
    all_nodes_registered(&admin).await;

    // Our own informer on pods, and a writer whose acknowledged creates are recorded.
    let pods = admin.api("", "pods", Some("default"));
    let informer = Informer::start(pods.clone(), ListOptions::default());
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (cms, acked, stop) = (
            admin.api("", "configmaps", Some("default")),
            acked.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let name = format!("w{i}");
                if cms
                    .create(&json!({"metadata": {"name": name}}))
                    .await
                    .is_ok()
                {
                    acked.lock().unwrap().push(name);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // The Deployment scales 0 → 300; the bus dies once 50 pods exist.
    let deploys = scale_up(&admin, REPLICAS).await;
    wait_for(Duration::from_secs(60), "50 pods created", || {
        let n = informer.cache.len();
        async move { (n >= 50).then_some(()) }
    })
    .await;
    let before = reconnects();
    cluster.nats.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await; // the outage itself
    cluster.nats.start_again();

    // Every connection comes back: 10 kubelet connections, the scheduler's, the
    // controllers', the admin client's and the API server's own (counted where they use
    // `nats_events`: the kubelets' 10 at least).
    wait_for(
        Duration::from_secs(30),
        "the kubelets' connections back",
        || {
            let n = reconnects() - before;
            async move { (n >= 10.0).then_some(()) }
        },
    )
    .await;
    ready(&deploys, REPLICAS, 90).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();

    // The informer converges to a fresh LIST.
    converges(&informer, &pods, 30).await;

    // No acknowledged write is lost.
    let stored = admin
        .api("", "configmaps", Some("default"))
        .list_all(&ListOptions::default())
        .await
        .unwrap();
    let stored = versions(&stored.items);
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "writes went on: {}", acked.len());
    for name in &acked {
        assert!(stored.contains_key(name), "acknowledged {name} is stored");
    }
}

/// Waits until the API server's open watches are within 1 % of `steady`.
async fn watches_back_to(kubeconfig: &std::path::Path, steady: f64, secs: u64, what: &str) {
    wait_for(Duration::from_secs(secs), what, || {
        let now = watches_open(kubeconfig);
        async move {
            now.filter(|n| (n - steady).abs() <= steady * 0.01)
                .map(|_| ())
        }
    })
    .await;
}

/// Watch resumes of every client in this process.
fn resumes() -> f64 {
    let m = skiff::metrics::parse(&skiff::metrics::render()).unwrap();
    m.iter()
        .filter(|s| s.name == "skiff_watch_resumes_total")
        .map(|s| s.value)
        .sum()
}

/// `apiserver_watches_open` of a real API server process, read through `kubectl get --raw`.
fn watches_open(kubeconfig: &std::path::Path) -> Option<f64> {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", "--raw", "/metrics"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let m = skiff::metrics::parse(&String::from_utf8_lossy(&out.stdout)).ok()?;
    Some(
        m.iter()
            .filter(|s| s.name == "apiserver_watches_open")
            .map(|s| s.value)
            .sum(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_paused_for_20_s_recovers_without_leaking_watches() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = ApiProcess::start_with_tokens(&nats.url(), dir.path(), &[], &tokens());
    let admin = admin_when_ready(&nats.url()).await;
    let _components = start_components(&nats.url());
    all_nodes_registered(&admin).await;
    let deploys = scale_up(&admin, 200).await;
    ready(&deploys, 200, 90).await;

    // The steady count: the same twice, a second apart.
    let kubeconfig = dir.path().join("kubeconfig");
    let mut last = -1.0;
    let steady = wait_for(Duration::from_secs(60), "a steady watch count", || {
        let now = watches_open(&kubeconfig);
        let same = now == Some(last);
        last = now.unwrap_or(-1.0);
        async move {
            if !same {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            same.then_some(last)
        }
    })
    .await;
    assert!(steady >= NODES as f64, "every kubelet watches: {steady}");

    // 20 s without the API server: every client's watch falls silent and resumes.
    let resumed_before = resumes();
    let pid = server.child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    tokio::time::sleep(Duration::from_secs(20)).await; // the fault itself
    unsafe { libc::kill(pid, libc::SIGCONT) };

    // The clients noticed (their watches fell silent) and started new ones…
    wait_for(
        Duration::from_secs(60),
        "every kubelet's watch resumed",
        || {
            let n = resumes() - resumed_before;
            async move { (n >= NODES as f64).then_some(()) }
        },
    )
    .await;
    // …so no collapse means: the abandoned watches end, the count comes back to within 1 %
    // of the steady one, and the cluster still works (a scale-up converges).
    watches_back_to(
        &kubeconfig,
        steady,
        90,
        "open watches back to their steady count",
    )
    .await;
    deploys
        .patch(
            "web",
            None,
            PatchType::Merge,
            &json!({"spec": {"replicas": 250}}),
        )
        .await
        .unwrap();
    ready(&deploys, 250, 60).await;
    // A watch that resumes during the scale-up is served twice until its old one's next
    // bookmark finds no subscriber (one interval): steady again once that has passed.
    watches_back_to(
        &kubeconfig,
        steady,
        30,
        "open watches steady after the scale-up",
    )
    .await;
}

/// A client cut off (by a proxy) for longer than the history window: when its link comes
/// back its watch resumes from a revision the server no longer has (410), the informer
/// relists, and its cache converges to a fresh LIST — changes, creations and deletions made
/// while it was away included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_off_past_the_history_window_relists_and_converges() {
    let cluster = Cluster::with(ApiServerOptions {
        history: 20,
        ..Default::default()
    });
    let writer = cluster.client().await;
    let cms = writer.api("", "configmaps", Some("default"));
    for i in 0..10 {
        cms.create(&json!({"metadata": {"name": format!("c{i}")}, "data": {"v": "0"}}))
            .await
            .unwrap();
    }
    let proxy = common::proxy::Proxy::start(cluster.nats.port).await;
    let cut_off = client_for(&proxy.url(), ADMIN.0, ADMIN.1).await;
    let informer = Informer::start(
        cut_off.api("", "configmaps", Some("default")),
        ListOptions::default(),
    );
    wait_for(Duration::from_secs(20), "the informer synced", || {
        let n = informer.cache.len();
        async move { (n == 10).then_some(()) }
    })
    .await;
    let relists_before = resumes();

    proxy.cut();
    // Three times the history window of changes while it is away.
    for round in 0..6 {
        for i in 0..10 {
            let name = format!("c{i}");
            if round == 5 && i % 3 == 0 {
                cms.delete(&name, &Default::default()).await.unwrap();
            } else {
                cms.patch(
                    &name,
                    None,
                    PatchType::Merge,
                    &json!({"data": {"v": round.to_string()}}),
                )
                .await
                .unwrap();
            }
        }
    }
    cms.create(&json!({"metadata": {"name": "new"}}))
        .await
        .unwrap();
    // The link stays down until the server has sent what the client is to miss: a write is
    // answered when it commits, its watch events go out after, and on a loaded machine they
    // could otherwise all arrive after the link is back, in order, with nothing missed. One
    // bookmark interval (5 s) and a second covers the fan-out and a lost heartbeat.
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.heal();

    converges(&informer, &cms, 60).await;
    assert!(resumes() > relists_before, "its watch had to start over");
    assert!(
        informer.cache.get("default", "c0").is_none(),
        "a deletion it missed is seen"
    );
    assert!(
        informer.cache.get("default", "new").is_some(),
        "a creation it missed is seen"
    );
}
