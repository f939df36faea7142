//! Spine benchmarks, both sides of every comparison in the same run:
//!
//! 1. GET of one pod over NATS through the API server vs a bare async-nats request/reply
//!    echo of the same payload sizes: p50, p99 and their ratios; and the same GET with span
//!    recording off, so the cost of tracing (client and server spans, batched onto the bus
//!    and kept by the collector) is measured in the same run.
//! 2. Durable creates per second through the API server with 1 and with 64 concurrent
//!    writers (embedded store: fsynced before acknowledged), next to the fdatasync latency of
//!    the same disk.
//! 3. The same at the Store alone (no NATS, no validation), the 1- and 64-writer runs
//!    interleaved so both see the same disk, with group commit off and with no disk as the
//!    baselines.
//!
//! `cargo bench --bench spine` (needs nats-server on PATH: `scripts/test` installs it);
//! `SKIFF_BENCH_ONLY=get`, `=creates` (through the API server) or `=store` runs one part.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use skiff::api::codec;
use skiff::api::wire::{Request, Verb};
use skiff::apiserver::ApiServerOptions;

use common::*;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A bare echo responder on its own current-thread runtime (as the API server runs on its
/// actix System thread): replies `reply` to every request.
fn start_echo(url: String, reply: Bytes) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let nats = async_nats::connect(url).await.unwrap();
            let mut sub = nats.subscribe("bench.echo").await.unwrap();
            nats.flush().await.unwrap();
            tx.send(()).unwrap();
            while let Some(msg) = sub.next().await {
                if let Some(r) = msg.reply {
                    let _ = nats.publish(r, reply.clone()).await;
                }
            }
        });
    });
    rx.recv().unwrap();
    t
}

async fn get_vs_echo(rounds: usize) {
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let pods = client.api("", "pods", Some("default"));
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "labels": {"app": "web", "tier": "front"}},
        "spec": {"containers": [{"name": "main", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}});
    pods.create(&pod).await.unwrap();
    let req = Request {
        resource: "pods".into(),
        namespace: Some("default".into()),
        name: Some("web-0".into()),
        ..Default::default()
    };
    let req_bytes = codec::encode(&req).unwrap();
    let reply_size = client.call_raw(Verb::Get, &req).await.unwrap().len();
    let _echo = start_echo(cluster.nats.url(), Bytes::from(vec![0x2a; reply_size]));
    let nats = client.nats().clone();
    // The echo request carries the same headers as an API request.
    let echo_payload = Bytes::from(vec![0x2a; req_bytes.len()]);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", "Bearer admin-token");
    headers.insert("Skiff-Request-Id", nats.new_inbox().as_str());
    headers.insert(
        "traceparent",
        skiff::trace::TraceContext::root().header().as_str(),
    );

    let (mut api, mut echo) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    let mut untraced = Vec::with_capacity(rounds);
    // Warm up both paths, then alternate blocks so drift hits both sides alike. A block is
    // long (~0.2 s of GETs) against the tracer's 100 ms batching, so the batches a traced
    // block leaves behind are sent during the echo block that follows it, not the untraced one.
    const BLOCK: usize = 1_000;
    // The spans the collector keeps meanwhile, counted: tracing that silently recorded
    // nothing would read as free.
    let collected = || {
        skiff::metrics::sample_value(
            &skiff::metrics::parse(&skiff::metrics::render()).unwrap_or_default(),
            "skiff_trace_spans_collected_total",
            &[],
        )
        .unwrap_or(0.0)
    };
    let collected_before = collected();
    for _ in 0..500 {
        client.call_raw(Verb::Get, &req).await.unwrap();
        nats.request_with_headers("bench.echo", headers.clone(), echo_payload.clone())
            .await
            .unwrap();
    }
    for _ in 0..(rounds / BLOCK).max(1) {
        for _ in 0..BLOCK {
            let t = Instant::now();
            let b = client.call_raw(Verb::Get, &req).await.unwrap();
            api.push(t.elapsed());
            assert_eq!(b.len(), reply_size);
        }
        for _ in 0..BLOCK {
            let t = Instant::now();
            let m = nats
                .request_with_headers("bench.echo", headers.clone(), echo_payload.clone())
                .await
                .unwrap();
            echo.push(t.elapsed());
            assert_eq!(m.payload.len(), reply_size);
        }
        skiff::trace::set_enabled(false);
        for _ in 0..BLOCK {
            let t = Instant::now();
            let b = client.call_raw(Verb::Get, &req).await.unwrap();
            untraced.push(t.elapsed());
            assert_eq!(b.len(), reply_size);
        }
        skiff::trace::set_enabled(true);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = collected() - collected_before;
    assert!(
        spans >= api.len() as f64,
        "tracing on: the collector kept {spans} spans for {} GETs",
        api.len()
    );
    let mean = |v: &[Duration]| v.iter().map(|d| d.as_secs_f64()).sum::<f64>() / v.len() as f64;
    let (traced_mean, untraced_mean) = (mean(&api), mean(&untraced));
    api.sort();
    echo.sort();
    let (a50, a99, e50, e99) = (
        percentile(&api, 0.5),
        percentile(&api, 0.99),
        percentile(&echo, 0.5),
        percentile(&echo, 0.99),
    );
    println!("## GET one pod over NATS vs bare request/reply echo ({rounds} requests each; request {} B, reply {reply_size} B)", req_bytes.len());
    println!("| path | p50 µs | p99 µs |");
    println!("|---|---|---|");
    println!(
        "| skiff GET (bridge → ApiServer → Store) | {:.1} | {:.1} |",
        micros(a50),
        micros(a99)
    );
    println!(
        "| bare async-nats echo | {:.1} | {:.1} |",
        micros(e50),
        micros(e99)
    );
    println!(
        "| ratio | {:.2}× (target ≤ 1.3×) | {:.2}× (target ≤ 2×) |",
        micros(a50) / micros(e50),
        micros(a99) / micros(e99)
    );
    println!();
    untraced.sort();
    let (u50, u99) = (percentile(&untraced, 0.5), percentile(&untraced, 0.99));
    println!("## The same GET with tracing on vs off ({rounds} requests each, interleaved)");
    println!("| tracing | mean µs | p50 µs | p99 µs |");
    println!("|---|---|---|---|");
    println!(
        "| on (client + server spans → bus → collector) | {:.1} | {:.1} | {:.1} |",
        traced_mean * 1e6,
        micros(a50),
        micros(a99)
    );
    println!(
        "| off | {:.1} | {:.1} | {:.1} |",
        untraced_mean * 1e6,
        micros(u50),
        micros(u99)
    );
    println!(
        "| spans collected while on | {:.1} a GET | | |",
        spans / api.len() as f64
    );
    println!(
        "| cost of tracing | {:+.1}% (target < 10%) | {:+.1}% | {:+.1}% |",
        (traced_mean / untraced_mean - 1.0) * 100.0,
        (micros(a50) / micros(u50) - 1.0) * 100.0,
        (micros(a99) / micros(u99) - 1.0) * 100.0
    );
    println!();
}

fn fdatasync_latency(dir: &std::path::Path, rounds: usize) -> (Duration, Duration) {
    let mut f = std::fs::File::create(dir.join("fsync-probe")).unwrap();
    let block = vec![7u8; 4096];
    let mut lat = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        f.write_all(&block).unwrap();
        let t = Instant::now();
        f.sync_data().unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

async fn creates(
    writers: usize,
    per_writer: usize,
    client: &skiff::client::ApiClient,
    tag: &str,
) -> f64 {
    let cms = client.api("", "configmaps", Some("default"));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let cms = cms.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                cms.create(
                    &json!({"metadata": {"name": format!("{tag}-{w}-{i}")}, "data": {"k": "v"}}),
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (writers * per_writer) as f64 / start.elapsed().as_secs_f64()
}

/// One run of the create load against a fresh API server: creates/s, and the store's
/// commits and writes during the measured part.
async fn create_run(
    options: ApiServerOptions,
    writers: usize,
    per_writer: usize,
) -> (f64, u64, u64) {
    let cluster = Cluster::with(options);
    let client = cluster.client().await;
    creates(4, 50, &client, "warm").await;
    let before = cluster.api.handle.store_stats().await.unwrap();
    let rate = creates(writers, per_writer, &client, "run").await;
    let after = cluster.api.handle.store_stats().await.unwrap();
    (
        rate,
        after.commits - before.commits,
        after.writes - before.writes,
    )
}

async fn durable_creates() {
    let base = std::env::var("SKIFF_BENCH_DIR").unwrap_or_else(|_| ".".into());
    let disk = |max_batch: usize| {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let options = ApiServerOptions {
            data_dir: Some(dir.path().to_path_buf()),
            max_batch,
            ..Default::default()
        };
        (dir, options)
    };
    let probe = tempfile::tempdir_in(&base).unwrap();
    let (f50, f99) = fdatasync_latency(probe.path(), 300);
    let (_d1, o1) = disk(4096);
    let (one, one_commits, one_writes) = create_run(o1, 1, 400).await;
    let (_d2, o2) = disk(4096);
    let (many, commits, writes) = create_run(o2, 64, 150).await;
    let (_d3, o3) = disk(1);
    let (nogc, nogc_commits, _) = create_run(o3, 64, 60).await;
    let (mone, _, _) = create_run(ApiServerOptions::default(), 1, 400).await;
    let (mmany, _, _) = create_run(ApiServerOptions::default(), 64, 150).await;
    println!(
        "## Durable creates through the API server (embedded store: log + redb checkpoint, acknowledged after fdatasync)"
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| fdatasync of 4 KiB on the same disk, p50 / p99 | {:.0} µs / {:.0} µs (≈ {:.0} syncs/s) |", micros(f50), micros(f99), 1e6 / micros(f50));
    println!("| creates/s, 1 writer | {one:.0} ({one_writes} writes in {one_commits} commits) |");
    println!("| creates/s, 64 writers (group commit) | {many:.0} ({writes} writes in {commits} commits, {:.1} per commit) |", writes as f64 / commits.max(1) as f64);
    println!(
        "| 64 writers ÷ 1 writer | {:.1}× (target ≥ 20×) |",
        many / one
    );
    println!("| baseline: creates/s, 64 writers, group commit off (one write per commit) | {nogc:.0} ({nogc_commits} commits) |");
    println!(
        "| group commit on ÷ off, 64 writers | {:.1}× |",
        many / nogc
    );
    println!("| ceiling without a disk (in-memory store), creates/s 1 / 64 writers | {mone:.0} / {mmany:.0} |");
    println!();
}

/// The Store alone (no NATS, no validation): where group commit shows.
fn store_level() {
    let base = std::env::var("SKIFF_BENCH_DIR").unwrap_or_else(|_| ".".into());
    let system = actix::System::new();
    system.block_on(async move {
        let run = |writers: usize, per: usize, max_batch: usize, pipeline: usize| {
            let base = base.clone();
            async move {
                let dir = tempfile::tempdir_in(&base).unwrap();
                skiff::apiserver::bench::store_creates(Some(dir.path()), writers, per, 600, max_batch, pipeline)
                    .await
                    .unwrap()
            }
        };
        let probe = tempfile::tempdir_in(&base).unwrap();
        let (sync_p50, sync_p99) = fdatasync_latency(probe.path(), 2000);
        // The disk's speed drifts on a virtual machine: the 1-writer and 64-writer runs are
        // interleaved, ROUNDS times each, and their rates added up over the same stretch.
        const ROUNDS: usize = 4;
        let pipelines = [1usize, 2];
        let mut one = Vec::new();
        let mut deep: Vec<Vec<skiff::apiserver::bench::CreateRun>> = vec![Vec::new(); pipelines.len()];
        for _ in 0..ROUNDS {
            one.push(run(1, 500, 4096, 1).await);
            for (i, p) in pipelines.iter().enumerate() {
                deep[i].push(run(64, 150, 4096, *p).await);
            }
        }
        let total = |runs: &[skiff::apiserver::bench::CreateRun]| {
            let secs: f64 = runs.iter().map(|r| r.seconds).sum();
            let writes: u64 = runs.iter().map(|r| r.created).sum();
            let commits: u64 = runs.iter().map(|r| r.commits).sum();
            (writes as f64 / secs, commits, writes as f64 / commits.max(1) as f64)
        };
        let (one_rate, one_commits, _) = total(&one);
        let off = run(64, 60, 1, 1).await;
        let mem = skiff::apiserver::bench::store_creates(None, 64, 600, 600, 4096, 1).await.unwrap();
        println!("## Durable creates at the Store (600-byte values, embedded backend, acknowledged after fdatasync)");
        println!("| measure | value |");
        println!("|---|---|");
        println!("| fdatasync of 4 KiB in the same directory, p50 / p99 | {:.0} µs / {:.0} µs |", micros(sync_p50), micros(sync_p99));
        println!("| creates/s, 1 writer | {one_rate:.0} ({one_commits} commits) |");
        for (i, p) in pipelines.iter().enumerate() {
            let (rate, commits, per) = total(&deep[i]);
            println!("| creates/s, 64 writers, up to {p} batches with the writer | {rate:.0} ({commits} commits, {per:.1} writes per commit): **{:.1}×** one writer |", rate / one_rate);
        }
        println!("| baseline: 64 writers, group commit off | {:.0} ({} commits) |", off.per_second, off.commits);
        println!("| in-memory backend, 64 writers | {:.0} |", mem.per_second);
        println!();
    });
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` / test harness probing: nothing to list.
        return;
    }
    // The GETs come in blocks of 1,000 (longer than the tracer's batching): 30 blocks a side
    // by default, so that one disturbance of a few milliseconds does not make a p99.
    let get_rounds: usize = std::env::var("SKIFF_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // SKIFF_BENCH_ONLY=get runs only the GET comparisons.
    // SKIFF_BENCH_ONLY=store runs only the Store-level create figures.
    let only = std::env::var("SKIFF_BENCH_ONLY").unwrap_or_default();
    let only_get = only == "get";
    let only_store = only == "store";
    let only_creates = only == "creates";
    if !only_store {
        rt.block_on(async {
            if !only_creates {
                get_vs_echo(get_rounds).await;
            }
            if !only_get {
                durable_creates().await;
            }
        });
    }
    if !only_get && !only_creates {
        store_level();
    }
    let _ = Arc::new(());
}
