//! A robustness checker after etcd's robustness tests: concurrent clients read and
//! compare-and-swap a few keys, and watchers stream every change, while faults are injected
//! into real processes — the API server `kill -9`'d and restarted on its data, nats-server
//! `kill -9`'d and restarted, one client's link cut by a proxy. Every operation's invocation,
//! response and resourceVersion is recorded, then the history is checked:
//!
//! - **linearizable compare-and-swap**: per key, a Wing–Gong search with Lowe's memoisation
//!   (`common/linearizability.rs`, Porcupine's algorithm) finds an order of the reads and
//!   swaps that respects real time and a sequential register, trusting no order the server
//!   reports. Beside it, checks against the store's revision order (as Jepsen's Elle does
//!   with a version order) say more precisely what went wrong: an acknowledged write is in
//!   the store with its revision and value; a swap never overwrites a version it did not read
//!   (no lost update); a write acknowledged before another began has the lower revision; a
//!   read never returns a version older than one acknowledged before it began, nor one
//!   written after it returned;
//! - **watch guarantees** per watcher, per stretch between relists: ordered and unique
//!   (revisions strictly increase), atomic (one event per revision here: every write is one
//!   key), reliable (no gap: every write to the prefix between the stretch's start and its
//!   last event is seen), bookmarkable (no event at or below a bookmark's revision comes after
//!   it), and resumable (a new watch from revisions in the window streams exactly the writes
//!   after them).

mod common;
#[path = "common/linearizability.rs"]
mod linearizability;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff::api::wire::ListOptions;
use skiff::client::{ApiClient, ClientOptions};

use common::proxy::Proxy;
use common::*;

const KEYS: usize = 4;
const CLIENTS: usize = 8;

/// What an operation did.
#[derive(Debug, Clone)]
enum Outcome {
    /// Answered: the object's revision and value.
    Ok { rv: u64, value: u64 },
    /// Refused (a conflict): it did not happen.
    Failed,
    /// No answer (time-out, connection lost): it may or may not have happened.
    Unknown,
}

#[derive(Debug, Clone)]
struct Op {
    key: usize,
    /// None: a read; Some((expected revision, value)): a swap.
    write: Option<(u64, u64)>,
    invoked: Instant,
    returned: Instant,
    outcome: Outcome,
}

/// One watcher's record: stretches, each from the revision it (re)listed at.
#[derive(Debug, Default)]
struct WatchRecord {
    stretches: Vec<Stretch>,
}

#[derive(Debug, Default)]
struct Stretch {
    from: u64,
    events: Vec<(u64, String, u64)>,
    /// Bookmarks, as (position in `events` when it came, revision).
    bookmarks: Vec<(usize, u64)>,
}

fn key_name(k: usize) -> String {
    format!("key-{k}")
}

fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn value_of(obj: &Value) -> u64 {
    obj["data"]["v"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn client(url: &str) -> ApiClient {
    let mut o = ClientOptions::new(url, ADMIN.0, ADMIN.1);
    o.timeout = Duration::from_secs(3);
    o.watch_silence = Duration::from_secs(2);
    ApiClient::connect(o).await.expect("client connects")
}

/// A client's loop: read a key, then swap in a value of its own based on what it read.
async fn run_client(c: ApiClient, id: usize, stop: Arc<std::sync::atomic::AtomicBool>) -> Vec<Op> {
    let cms = c.api("", "configmaps", Some("default"));
    let mut ops = Vec::new();
    let mut seq = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        seq += 1;
        let key = (id + seq as usize) % KEYS;
        let invoked = Instant::now();
        let read = cms.get(&key_name(key)).await;
        let returned = Instant::now();
        let (outcome, seen) = match &read {
            Ok(obj) => (
                Outcome::Ok {
                    rv: rv_of(obj),
                    value: value_of(obj),
                },
                Some(obj.clone()),
            ),
            Err(_) => (Outcome::Unknown, None),
        };
        ops.push(Op {
            key,
            write: None,
            invoked,
            returned,
            outcome,
        });
        let Some(mut obj) = seen else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let expected = rv_of(&obj);
        let value = (id as u64 + 1) * 1_000_000 + seq;
        obj["data"]["v"] = json!(value.to_string());
        let invoked = Instant::now();
        let wrote = cms.update(&obj).await;
        let returned = Instant::now();
        let outcome = match wrote {
            Ok(o) => {
                assert_eq!(value_of(&o), value, "the answer carries the value written");
                Outcome::Ok {
                    rv: rv_of(&o),
                    value,
                }
            }
            Err(s) if s.code == 409 => Outcome::Failed,
            Err(_) => Outcome::Unknown,
        };
        ops.push(Op {
            key,
            write: Some((expected, value)),
            invoked,
            returned,
            outcome,
        });
    }
    ops
}

/// A watcher's loop: list, then watch from the list's revision (bookmarks too); on 410 (the
/// API server restarted with an empty window) a new stretch from a fresh list.
async fn run_watcher(c: ApiClient, record: Arc<Mutex<WatchRecord>>) {
    let cms = c.api("", "configmaps", Some("default"));
    loop {
        let Ok(list) = cms.list(&ListOptions::default()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let from: u64 = list.resource_version.parse().unwrap();
        record.lock().unwrap().stretches.push(Stretch {
            from,
            ..Default::default()
        });
        let mut w = cms.watch(&ListOptions {
            resource_version: Some(from.to_string()),
            allow_watch_bookmarks: true,
            ..Default::default()
        });
        w.yield_bookmarks = true;
        // Never cancelled mid-event: the test aborts this task when it is done.
        while let Some(Ok(ev)) = w.next().await {
            let mut r = record.lock().unwrap();
            let s = r.stretches.last_mut().unwrap();
            if ev.event_type == "BOOKMARK" {
                s.bookmarks.push((s.events.len(), rv_of(&ev.object)));
            } else {
                s.events.push((
                    rv_of(&ev.object),
                    ev.object["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    value_of(&ev.object),
                ));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_faults_are_linearizable_and_watches_keep_their_guarantees() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut server = ApiProcess::start(&nats.url(), dir.path(), &[]);
    let admin = admin_when_ready(&nats.url()).await;
    let cms = admin.api("", "configmaps", Some("default"));
    for k in 0..KEYS {
        cms.create(&json!({"metadata": {"name": key_name(k)}, "data": {"v": "0"}}))
            .await
            .unwrap();
    }
    let proxy = Proxy::start(nats.port).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for id in 0..CLIENTS {
        // Half the clients reach NATS through the proxy the test cuts.
        let url = if id % 2 == 0 { proxy.url() } else { nats.url() };
        let c = client(&url).await;
        clients.push(tokio::spawn(run_client(c, id, stop.clone())));
    }
    let records: Vec<Arc<Mutex<WatchRecord>>> = (0..2).map(|_| Arc::default()).collect();
    let mut watchers = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let url = if i == 0 { proxy.url() } else { nats.url() };
        watchers.push(tokio::spawn(run_watcher(client(&url).await, r.clone())));
    }

    // The faults, with traffic between them.
    let progress = |what: &'static str| {
        let records = records.clone();
        async move {
            // Some changes seen after each fault: the system is working again.
            let seen = || {
                records[1]
                    .lock()
                    .unwrap()
                    .stretches
                    .iter()
                    .map(|s| s.events.len())
                    .sum::<usize>()
            };
            let base = seen();
            wait_for(Duration::from_secs(60), what, || {
                let n = seen();
                async move { (n >= base + 20).then_some(()) }
            })
            .await;
        }
    };
    progress("traffic before the faults").await;
    server.kill9();
    server = ApiProcess::start(&nats.url(), dir.path(), &[]);
    progress("traffic after the API server's restart").await;
    nats.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await; // the outage itself
    nats.start_again();
    progress("traffic after the NATS restart").await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(1500)).await; // the cut itself
    proxy.heal();
    progress("traffic after the proxy cut").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ops = Vec::new();
    for c in clients {
        ops.extend(c.await.unwrap());
    }
    // Let the watchers catch up with the last writes, then stop them.
    let last_write = ops
        .iter()
        .filter_map(|o| match o.outcome {
            Outcome::Ok { rv, .. } if o.write.is_some() => Some(rv),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    for (i, r) in records.iter().enumerate() {
        wait_for(
            Duration::from_secs(30),
            &format!("watcher {i} caught up"),
            || {
                let seen = r
                    .lock()
                    .unwrap()
                    .stretches
                    .last()
                    .and_then(|s| s.events.last().map(|e| e.0).or(Some(s.from)))
                    .unwrap_or(0);
                async move { (seen >= last_write).then_some(()) }
            },
        )
        .await;
    }
    for w in watchers {
        w.abort();
    }
    let _ = &server;

    let count = |f: &dyn Fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
    eprintln!(
        "robustness: {} reads, {} swaps ({} acknowledged, {} refused, {} unknown); watch stretches {:?}",
        count(&|o| o.write.is_none()),
        count(&|o| o.write.is_some()),
        count(&|o| o.write.is_some() && matches!(o.outcome, Outcome::Ok { .. })),
        count(&|o| o.write.is_some() && matches!(o.outcome, Outcome::Failed)),
        count(&|o| o.write.is_some() && matches!(o.outcome, Outcome::Unknown)),
        records.iter().map(|r| r.lock().unwrap().stretches.len()).collect::<Vec<_>>(),
    );
    // Every version known: acknowledged writes, reads and watch events, per key.
    let mut known: Vec<BTreeMap<u64, u64>> = vec![BTreeMap::new(); KEYS];
    fn add(known: &mut [BTreeMap<u64, u64>], k: usize, rv: u64, value: u64, from: &str) {
        if let Some(v) = known[k].insert(rv, value) {
            assert_eq!(v, value, "revision {rv} of key-{k} has one value ({from})");
        }
    }
    for op in &ops {
        if let Outcome::Ok { rv, value } = op.outcome {
            add(&mut known, op.key, rv, value, "an operation");
        }
    }
    for r in &records {
        for s in &r.lock().unwrap().stretches {
            for (rv, name, value) in &s.events {
                let k: usize = name.trim_start_matches("key-").parse().unwrap();
                add(&mut known, k, *rv, *value, "a watch event");
            }
        }
    }
    // The final state holds the latest known version of each key.
    let list = admin_when_ready(&nats.url())
        .await
        .api("", "configmaps", Some("default"))
        .list_all(&ListOptions::default())
        .await
        .unwrap();
    for obj in &list.items {
        let k: usize = obj["metadata"]["name"]
            .as_str()
            .unwrap()
            .trim_start_matches("key-")
            .parse()
            .unwrap();
        add(&mut known, k, rv_of(obj), value_of(obj), "the final list");
        assert_eq!(
            known[k].keys().next_back(),
            Some(&rv_of(obj)),
            "key-{k}: the final version is the latest known"
        );
    }
    // Revisions are global: one revision, one key.
    let mut owner = BTreeMap::new();
    for (k, versions) in known.iter().enumerate() {
        for rv in versions.keys() {
            assert!(
                owner.insert(*rv, k).is_none(),
                "revision {rv} used by two keys"
            );
        }
    }

    let writes: Vec<&Op> = ops.iter().filter(|o| o.write.is_some()).collect();
    let acked = writes
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Ok { .. }))
        .count();
    assert!(
        acked >= 50,
        "enough acknowledged swaps to say something: {acked}"
    );
    for op in &writes {
        let (expected, value) = op.write.unwrap();
        if let Outcome::Ok { rv, value: v } = op.outcome {
            assert_eq!(v, value);
            assert!(rv > expected, "a swap moves the revision on");
            // No lost update: nothing known between the version read and the one written.
            let between: Vec<_> = known[op.key].range(expected + 1..rv).collect();
            assert!(
                between.is_empty(),
                "key-{}: the swap from {expected} to {rv} overwrote {between:?}",
                op.key
            );
            assert!(
                known[op.key].contains_key(&expected),
                "it swapped a version that existed"
            );
        }
    }
    // Linearizable, per key, by the Wing–Gong–Lowe search (which trusts no order the server
    // reports). An unanswered swap took effect exactly when its value was ever seen.
    let far = Instant::now() + Duration::from_secs(86_400);
    for (k, versions) in known.iter().enumerate() {
        let rv_of_value: BTreeMap<u64, u64> = versions.iter().map(|(rv, v)| (*v, *rv)).collect();
        let history: Vec<linearizability::Operation> = ops
            .iter()
            .filter(|o| o.key == k)
            .filter_map(|o| {
                let (returned, action) = match (o.write, &o.outcome) {
                    (None, Outcome::Ok { rv, value }) => {
                        (o.returned, linearizability::Action::Read((*rv, *value)))
                    }
                    (Some((expected, _)), Outcome::Ok { rv, value }) => (
                        o.returned,
                        linearizability::Action::Swapped {
                            expected,
                            new: *rv,
                            value: *value,
                        },
                    ),
                    (Some((expected, _)), Outcome::Failed) => {
                        (o.returned, linearizability::Action::Refused { expected })
                    }
                    (Some((expected, value)), Outcome::Unknown) => {
                        let new = *rv_of_value.get(&value)?;
                        (
                            far,
                            linearizability::Action::Swapped {
                                expected,
                                new,
                                value,
                            },
                        )
                    }
                    _ => return None,
                };
                Some(linearizability::Operation {
                    invoked: o.invoked,
                    returned,
                    action,
                })
            })
            .collect();
        let (first_rv, first_value) = versions.iter().next().map(|(r, v)| (*r, *v)).unwrap();
        if !linearizability::check((first_rv, first_value), &history) {
            let t0 = history.iter().map(|o| o.invoked).min().unwrap();
            let mut sorted = history.clone();
            sorted.sort_by_key(|o| o.invoked);
            for o in &sorted {
                eprintln!(
                    "{:>10.3} {:>10.3} {:?}",
                    o.invoked.duration_since(t0).as_secs_f64() * 1000.0,
                    o.returned.saturating_duration_since(t0).as_secs_f64() * 1000.0,
                    o.action
                );
            }
            panic!(
                "key-{k}: the {} operations have no linearization (from version {first_rv})",
                history.len()
            );
        }
    }
    // Real time agrees with revisions.
    let mut done: Vec<&Op> = ops
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Ok { .. }))
        .collect();
    done.sort_by_key(|o| o.returned);
    for op in &ops {
        let Outcome::Ok { rv, .. } = op.outcome else {
            continue;
        };
        for before in done.iter().take_while(|d| d.returned < op.invoked) {
            let Outcome::Ok { rv: b, .. } = before.outcome else {
                continue;
            };
            if before.write.is_some() && op.write.is_some() {
                assert!(
                    b < rv,
                    "a write acknowledged before another began has the lower revision"
                );
            }
            if before.write.is_some() && op.write.is_none() && before.key == op.key {
                assert!(
                    b <= rv,
                    "key-{}: a read returned {rv}, older than {b} acknowledged before it began",
                    op.key
                );
            }
        }
        if op.write.is_none() {
            // The version read was written by an operation that began before the read returned.
            if let Some(w) = writes
                .iter()
                .find(|w| matches!(w.outcome, Outcome::Ok { rv: r, .. } if r == rv))
            {
                assert!(
                    w.invoked <= op.returned,
                    "key-{}: a read saw the future",
                    op.key
                );
            }
        }
    }

    // Watch guarantees, per watcher and stretch.
    let all: BTreeMap<u64, (usize, u64)> = known
        .iter()
        .enumerate()
        .flat_map(|(k, vs)| vs.iter().map(move |(rv, v)| (*rv, (k, *v))))
        .collect();
    for (i, r) in records.iter().enumerate() {
        let r = r.lock().unwrap();
        assert!(!r.stretches.is_empty());
        for s in &r.stretches {
            let revs: Vec<u64> = s.events.iter().map(|e| e.0).collect();
            assert!(
                revs.windows(2).all(|w| w[0] < w[1]),
                "watcher {i}: ordered and unique: {revs:?}"
            );
            if let Some(last) = revs.last() {
                let expected: Vec<u64> = all.range(s.from + 1..=*last).map(|(rv, _)| *rv).collect();
                assert_eq!(revs, expected, "watcher {i}: reliable from {}", s.from);
            }
            for (at, b) in &s.bookmarks {
                assert!(
                    s.events[*at..].iter().all(|e| e.0 > *b),
                    "watcher {i}: a bookmark at {b} ran ahead of an event"
                );
            }
        }
    }

    // Resumable: new watches from revisions in the window stream exactly what followed.
    let now = admin_when_ready(&nats.url()).await;
    let cms = now.api("", "configmaps", Some("default"));
    let current: u64 = cms
        .list(&ListOptions::default())
        .await
        .unwrap()
        .resource_version
        .parse()
        .unwrap();
    let recent: Vec<u64> = all
        .range(..=current)
        .map(|(rv, _)| *rv)
        .rev()
        .take(30)
        .collect();
    let starts: BTreeSet<u64> = recent.iter().step_by(7).map(|rv| rv - 1).collect();
    for from in starts {
        let expected: Vec<u64> = all.range(from + 1..=current).map(|(rv, _)| *rv).collect();
        let mut w = cms.watch(&ListOptions {
            resource_version: Some(from.to_string()),
            ..Default::default()
        });
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
                .await
                .expect("the replay arrives")
                .unwrap()
                .unwrap();
            got.push(rv_of(&ev.object));
        }
        assert_eq!(got, expected, "a watch from {from} replays what followed");
    }
}
