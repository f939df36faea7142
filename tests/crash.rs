//! Crash safety: `kill -9` a real `skiff apiserver` during concurrent creates, restart it on
//! the same data dir, and check that every acknowledged create survived and that revisions
//! never go backwards or repeat.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use skiff::api::wire::ListOptions;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_no_acknowledged_create() {
    kill_during_creates(&[]).await;
}

/// The same with checkpoints into redb every 64 KiB of log, so the kill lands among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_during_checkpoints_loses_nothing() {
    kill_during_creates(&["--checkpoint-bytes", "65536"]).await;
}

async fn kill_during_creates(flags: &[&str]) {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut server = ApiProcess::start(&nats.url(), dir.path(), flags);
    let c = client_for(&nats.url(), ADMIN.0, ADMIN.1).await;
    let cms = c.api("", "configmaps", Some("default"));
    wait_for(Duration::from_secs(30), "api server", || {
        let cms = cms.clone();
        async move { cms.list(&ListOptions::default()).await.ok() }
    })
    .await;

    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..64 {
        let (cms, acked) = (cms.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..100 {
                let name = format!("w{w}-{i}");
                match cms
                    .create(&json!({"metadata": {"name": name}, "data": {"i": i.to_string()}}))
                    .await
                {
                    Ok(obj) => {
                        let rv = obj["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        acked.lock().unwrap().insert(name, rv);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill once well over a thousand creates are acknowledged, with the rest in flight.
    wait_for(
        Duration::from_secs(120),
        "1,000 acknowledged creates",
        || {
            let n = acked.lock().unwrap().len();
            async move { (n >= 1000).then_some(()) }
        },
    )
    .await;
    server.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 1000 && acked.len() < 6400,
        "killed mid-flight: {}",
        acked.len()
    );
    let max_acked = *acked.values().max().unwrap();

    let _server = ApiProcess::start(&nats.url(), dir.path(), flags);
    let list = wait_for(Duration::from_secs(30), "restarted api server", || {
        let cms = cms.clone();
        async move { cms.list_all(&ListOptions::default()).await.ok() }
    })
    .await;
    let stored: BTreeMap<String, u64> = list
        .items
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().to_string(),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
            )
        })
        .collect();
    for (name, rv) in &acked {
        assert_eq!(
            stored.get(name),
            Some(rv),
            "acknowledged create {name} survived with its revision"
        );
    }
    let distinct: BTreeSet<u64> = stored.values().copied().collect();
    assert_eq!(
        distinct.len(),
        stored.len(),
        "no revision is shared by two objects"
    );
    let list_rv: u64 = list.resource_version.parse().unwrap();
    assert!(
        list_rv >= max_acked,
        "the store's revision did not go backwards"
    );
    let next = cms
        .create(&json!({"metadata": {"name": "after-restart"}}))
        .await
        .unwrap();
    let next_rv: u64 = next["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        next_rv > list_rv && next_rv > max_acked,
        "no revision is reused: {next_rv}"
    );
}

/// Creates in flight at SIGTERM: enough that a server dropping what it had not yet taken from
/// its socket loses some of them.
const IN_FLIGHT: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_exits() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut server = ApiProcess::start(&nats.url(), dir.path(), &[]);
    let c = client_for(&nats.url(), ADMIN.0, ADMIN.1).await;
    let cms = c.api("", "configmaps", Some("default"));
    wait_for(Duration::from_secs(30), "api server", || {
        let cms = cms.clone();
        async move { cms.list(&ListOptions::default()).await.ok() }
    })
    .await;
    // In flight for certain: the server is stopped (SIGSTOP) while nats-server delivers the
    // 300 creates to it, so each has reached the server and none is answered when SIGTERM
    // comes; SIGCONT lets it see both.
    let pid = server.child.id() as i32;
    let delivered = nats.delivered_to(skiff::api::subject::REQUEST_WILDCARD);
    assert_eq!(signal(pid, libc::SIGSTOP), 0);
    let mut tasks = Vec::new();
    for i in 0..IN_FLIGHT {
        let cms = cms.clone();
        tasks.push(tokio::spawn(async move {
            cms.create(&json!({"metadata": {"name": format!("t{i}")}}))
                .await
        }));
    }
    wait_for(
        Duration::from_secs(10),
        "the creates delivered to the stopped server",
        || {
            let now = nats.delivered_to(skiff::api::subject::REQUEST_WILDCARD);
            async move { (now >= delivered + IN_FLIGHT as u64).then_some(()) }
        },
    )
    .await;
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "no create is answered while the server is stopped"
    );
    assert_eq!(signal(pid, libc::SIGTERM), 0);
    assert_eq!(signal(pid, libc::SIGCONT), 0);
    let status = tokio::task::spawn_blocking(move || server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "graceful exit: {status:?}");
    let mut failed = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if let Err(e) = t.await.unwrap() {
            failed.push(format!("t{i}: {} {}", e.code, e.message));
        }
    }
    assert!(
        failed.is_empty(),
        "every create in flight at SIGTERM is answered: {failed:?}"
    );
    let _server = ApiProcess::start(&nats.url(), dir.path(), &[]);
    let list = wait_for(Duration::from_secs(30), "restarted", || {
        let cms = cms.clone();
        async move { cms.list_all(&ListOptions::default()).await.ok() }
    })
    .await;
    let names: BTreeSet<String> = list
        .items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for i in 0..IN_FLIGHT {
        assert!(
            names.contains(&format!("t{i}")),
            "t{i}, answered before the server exited, is stored"
        );
    }
}

/// Sends a signal with kill(1); 0 on success.
fn signal(pid: i32, sig: i32) -> i32 {
    std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map(|s| if s.success() { 0 } else { 1 })
        .unwrap_or(1)
}
