//! API machinery benchmarks, each next to its baseline in the same run:
//!
//! 1. Server-side apply of a Deployment (its whole configuration, one container's image
//!    changed) vs a strategic-merge patch making the same change, over NATS through the API
//!    server: p50, p99 and the p50 ratio (target ≤ 1.5×).
//! 2. Plain updates (PUT of a Deployment, one annotation changed) with `managedFields` kept,
//!    as always, vs an API server with field tracking turned off: p50, mean and their ratios
//!    (target ≤ 1.10×), in steady state (after the Store's event history has filled).
//! 3. A custom resource's create and GET vs a ConfigMap's carrying the same data (the same
//!    keys and values, under `spec.data` for the custom one, whose CRD has a typed schema with
//!    a default and a CEL rule): p50, p99 and the p50 ratios (target ≤ 1.2×).
//! 4. Authorization cost: GETs over NATS by a user RBAC authorizes (a RoleBinding to `view`,
//!    among 1,000 Roles and 1,000 RoleBindings of other users) vs by a `system:masters` admin
//!    (the privileged-group short cut): p50, p99 and the p50 ratio (target ≤ 1.1×).
//! 5. NATS with TLS (the cluster CA's server certificate, verified by every client) vs
//!    without, each a real `skiff apiserver` process with its embedded store: GET p50 over
//!    NATS (target ≤ 1.15×) and durable creates by 64 concurrent writers, per second
//!    (target ≥ 0.9×).
//! 6. Durable creates by 64 writers through a `skiff apiserver --store etcd` vs bare etcd
//!    Txn-CAS and Put at 64 clients with the same value size (target ≥ 0.8× Txn-CAS), and the
//!    embedded store vs Skiff on etcd (target ≥ 5×); consistent GETs vs etcd ranges (target
//!    ≤ 0.5×); 1,000 watches: etcd holds one, commit → delivery p99 ≤ 3× a bare NATS fan-out.
//!
//! The two sides alternate in blocks, so that both see the same machine. `cargo bench --bench
//! machinery` (needs nats-server on PATH: `scripts/test` installs it); `SKIFF_BENCH_ROUNDS`
//! sets the requests per side (default 3,000); `SKIFF_BENCH_ONLY=apply`, `=update`, `=crd`,
//! `=rbac`, `=tls`, `=etcd` or `=etcd-watch` runs one part (etcd: Debian's etcd-server on
//! PATH).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff::api::wire::{PatchType, Request, Verb};
use skiff::apiserver::ApiServerOptions;
use skiff::client::ApiClient;

use common::*;

/// Requests per block before the other side runs.
const BLOCK: usize = 250;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mean(v: &[Duration]) -> Duration {
    v.iter().sum::<Duration>() / v.len().max(1) as u32
}

/// The Deployment both sides write, with container image `image`.
fn deployment(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "front"}},
                "spec": {"containers": [
                    {"name": "web", "image": image,
                     "ports": [{"containerPort": 8080, "name": "http"}],
                     "env": [{"name": "MODE", "value": "prod"}, {"name": "LEVEL", "value": "info"}],
                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                    {"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "infinity"]}
                ]}
            }
        }
    })
}

fn request(body: Value, patch_type: Option<PatchType>, manager: Option<&str>) -> Request {
    Request {
        group: "apps".into(),
        resource: "deployments".into(),
        namespace: Some("default".into()),
        name: Some("web".into()),
        body: Some(body),
        patch_type,
        field_manager: manager.map(String::from),
        ..Default::default()
    }
}

/// Times `n` calls of `make(i)`.
async fn timed(
    client: &ApiClient,
    verb: Verb,
    n: usize,
    offset: usize,
    make: impl Fn(usize) -> Request,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let req = make(offset + i);
        let t = Instant::now();
        client.call_raw(verb, &req).await.expect("write succeeds");
        out.push(t.elapsed());
    }
    out
}

async fn create_deployment(client: &ApiClient) {
    let mut req = request(deployment("nginx:1"), None, Some("bench-create"));
    req.name = None;
    client.call_raw(Verb::Create, &req).await.expect("created");
}

/// Server-side apply vs strategic merge patch of the same image change.
async fn apply_vs_patch(rounds: usize) {
    let cluster = Cluster::start();
    let client = cluster.client().await;
    create_deployment(&client).await;
    // Both managers exist before timing starts.
    let mut first = request(
        deployment("nginx:0"),
        Some(PatchType::Apply),
        Some("bench-apply"),
    );
    first.force = Some(true);
    client
        .call_raw(Verb::Patch, &first)
        .await
        .expect("first apply");
    let (mut apply, mut smp) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < rounds {
        let n = BLOCK.min(rounds - done);
        smp.extend(
            timed(&client, Verb::Patch, n, done, |i| {
                let patch = json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "web", "image": format!("nginx:p{i}")}]}}}});
                request(patch, Some(PatchType::Strategic), Some("bench-patch"))
            })
            .await,
        );
        apply.extend(
            timed(&client, Verb::Patch, n, done, |i| {
                // Forced, as controllers apply: the patch manager took the image just before.
                let mut r = request(
                    deployment(&format!("nginx:a{i}")),
                    Some(PatchType::Apply),
                    Some("bench-apply"),
                );
                r.force = Some(true);
                r
            })
            .await,
        );
        done += n;
    }
    // The runs wrote what they say.
    let got = client
        .call(Verb::Get, &{
            let mut r = request(Value::Null, None, None);
            r.body = None;
            r
        })
        .await
        .unwrap();
    assert_eq!(
        got.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!(format!("nginx:a{}", rounds - 1)))
    );
    apply.sort();
    smp.sort();
    println!(
        "## Server-side apply vs strategic merge patch (Deployment, image change, {rounds} each)"
    );
    println!("| measure | apply | strategic merge patch | ratio |");
    println!("|---|---|---|---|");
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (a, s) = (percentile(&apply, p), percentile(&smp, p));
        println!(
            "| {label} | {:.0} µs | {:.0} µs | {:.2}×{} |",
            micros(a),
            micros(s),
            micros(a) / micros(s),
            if label == "p50" {
                " (target ≤ 1.5×)"
            } else {
                ""
            }
        );
    }
    println!();
}

/// Times `rounds` PUTs on each of two API servers, alternating in blocks, after filling the
/// Store's event history: the Store keeps the last 10,000 events for watch replay, and until
/// that history is full every write also pages in fresh memory (more of it for the bigger
/// tracked objects), which a running server has long stopped doing.
async fn update_pair(
    tracked: &Cluster,
    untracked: &Cluster,
    rounds: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let (ct, cu) = (tracked.client().await, untracked.client().await);
    create_deployment(&ct).await;
    create_deployment(&cu).await;
    let put = |i: usize| {
        let mut d = deployment("nginx:1");
        d["metadata"]["annotations"] = json!({"bench/round": i.to_string()});
        request(d, None, Some("bench-update"))
    };
    let warm = ApiServerOptions::default().history + 1_000;
    timed(&cu, Verb::Update, warm, 0, put).await;
    timed(&ct, Verb::Update, warm, 0, put).await;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < rounds {
        let n = BLOCK.min(rounds - done);
        // SKIFF_BENCH_SIDE=on|off times one side only (for profiling one of them).
        let side = std::env::var("SKIFF_BENCH_SIDE").unwrap_or_default();
        if side != "on" {
            off.extend(timed(&cu, Verb::Update, n, done, put).await);
        }
        if side != "off" {
            on.extend(timed(&ct, Verb::Update, n, done, put).await);
        }
        done += n;
    }
    let kept = ct
        .call(Verb::Get, &{
            let mut r = request(Value::Null, None, None);
            r.body = None;
            r
        })
        .await
        .unwrap();
    assert!(
        kept.pointer("/metadata/managedFields/0/manager").is_some(),
        "the tracked server keeps managedFields"
    );
    (on, off)
}

/// Plain updates with managedFields kept vs not. Two pairs of API servers, started in
/// opposite orders, each time half of the rounds: the first server started runs a few percent
/// slower on this machine whatever it does, which would otherwise count as the cost.
async fn update_cost(rounds: usize) {
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for tracked_first in [true, false] {
        let start = |track: bool| {
            Cluster::with(ApiServerOptions {
                track_managed_fields: track,
                ..Default::default()
            })
        };
        let (tracked, untracked) = if tracked_first {
            let t = start(true);
            (t, start(false))
        } else {
            let u = start(false);
            (start(true), u)
        };
        let (t, u) = update_pair(&tracked, &untracked, rounds / 2).await;
        on.extend(t);
        off.extend(u);
    }
    let (mean_on, mean_off) = (mean(&on), mean(&off));
    on.sort();
    off.sort();
    println!(
        "## Plain updates: managedFields kept vs not kept (PUT of a Deployment, {rounds} each)"
    );
    println!("| measure | managedFields kept | not kept (baseline) | ratio |");
    println!("|---|---|---|---|");
    let (p_on, p_off) = (percentile(&on, 0.5), percentile(&off, 0.5));
    println!(
        "| p50 | {:.0} µs | {:.0} µs | {:.2}× (target ≤ 1.10×) |",
        micros(p_on),
        micros(p_off),
        micros(p_on) / micros(p_off)
    );
    println!(
        "| mean | {:.0} µs | {:.0} µs | {:.2}× |",
        micros(mean_on),
        micros(mean_off),
        micros(mean_on) / micros(mean_off)
    );
    let (q_on, q_off) = (percentile(&on, 0.99), percentile(&off, 0.99));
    println!(
        "| p99 | {:.0} µs | {:.0} µs | {:.2}× |",
        micros(q_on),
        micros(q_off),
        micros(q_on) / micros(q_off)
    );
    println!();
}

/// The data both kinds carry: 20 keys of 40 bytes each.
fn bench_data() -> Value {
    let mut data = serde_json::Map::new();
    for k in 0..20 {
        data.insert(format!("key-{k:02}"), json!(format!("{:040}", k)));
    }
    Value::Object(data)
}

fn named(group: &str, resource: &str, name: Option<String>, body: Option<Value>) -> Request {
    Request {
        group: group.into(),
        resource: resource.into(),
        namespace: Some("default".into()),
        name,
        body,
        ..Default::default()
    }
}

/// Custom resource vs ConfigMap: creates, then GETs, alternating in blocks.
async fn custom_vs_configmap(rounds: usize) {
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "bundles.bench.example.com"},
        "spec": {"group": "bench.example.com", "scope": "Namespaced",
            "names": {"plural": "bundles", "kind": "Bundle"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object",
                        "x-kubernetes-validations": [{"rule": "size(self.data) <= 64",
                            "message": "at most 64 keys"}],
                        "properties": {
                            "owner": {"type": "string", "default": "bench"},
                            "data": {"type": "object", "additionalProperties": {"type": "string"}}}}}}}}]}});
    let mut req = named(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        None,
        Some(crd),
    );
    req.namespace = None;
    client
        .call_raw(Verb::Create, &req)
        .await
        .expect("CRD created");
    let data = bench_data();
    let cm = |i: usize| {
        named(
            "",
            "configmaps",
            None,
            Some(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("c-{i}")}, "data": data})),
        )
    };
    let cr = |i: usize| {
        named(
            "bench.example.com",
            "bundles",
            None,
            Some(
                json!({"apiVersion": "bench.example.com/v1", "kind": "Bundle",
                "metadata": {"name": format!("b-{i}")}, "spec": {"data": data}}),
            ),
        )
    };
    let (mut create_cm, mut create_cr) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < rounds {
        let n = BLOCK.min(rounds - done);
        create_cm.extend(timed(&client, Verb::Create, n, done, cm).await);
        create_cr.extend(timed(&client, Verb::Create, n, done, cr).await);
        done += n;
    }
    let (mut get_cm, mut get_cr) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < rounds {
        let n = BLOCK.min(rounds - done);
        get_cm.extend(
            timed(&client, Verb::Get, n, done, |i| {
                named("", "configmaps", Some(format!("c-{i}")), None)
            })
            .await,
        );
        get_cr.extend(
            timed(&client, Verb::Get, n, done, |i| {
                named("bench.example.com", "bundles", Some(format!("b-{i}")), None)
            })
            .await,
        );
        done += n;
    }
    // The custom objects went through the schema: defaulted, and the same data as the
    // ConfigMaps.
    let got = client
        .call(
            Verb::Get,
            &named("bench.example.com", "bundles", Some("b-0".into()), None),
        )
        .await
        .unwrap();
    assert_eq!(got["spec"]["owner"], "bench");
    assert_eq!(got["spec"]["data"], data);
    println!("## Custom resource vs ConfigMap of the same data ({rounds} each)");
    println!("| measure | custom resource | ConfigMap (baseline) | ratio |");
    println!("|---|---|---|---|");
    for (verb, cr, cm) in [
        ("create", &mut create_cr, &mut create_cm),
        ("get", &mut get_cr, &mut get_cm),
    ] {
        cr.sort();
        cm.sort();
        for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
            let (a, b) = (percentile(cr, p), percentile(cm, p));
            println!(
                "| {verb} {label} | {:.0} µs | {:.0} µs | {:.2}×{} |",
                micros(a),
                micros(b),
                micros(a) / micros(b),
                if label == "p50" {
                    " (target ≤ 1.2×)"
                } else {
                    ""
                }
            );
        }
    }
    println!();
}

/// GETs authorized by RBAC (1,000 Roles and bindings loaded) vs by `system:masters`.
async fn rbac_cost(rounds: usize) {
    let tokens = format!("{TOKENS}reader-token,reader,80\n");
    let cluster = Cluster::with_tokens(ApiServerOptions::default(), &tokens);
    let admin = cluster.client().await;
    let rbac = |resource: &str, body: Value| Request {
        group: "rbac.authorization.k8s.io".into(),
        resource: resource.into(),
        namespace: Some("default".into()),
        body: Some(body),
        ..Default::default()
    };
    for i in 0..1_000 {
        let role = json!({"metadata": {"name": format!("r-{i}")}, "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [format!("c-{i}")], "verbs": ["get", "update"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["get", "list", "watch"]}]});
        admin
            .call_raw(Verb::Create, &rbac("roles", role))
            .await
            .expect("role");
        let binding = json!({"metadata": {"name": format!("b-{i}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("r-{i}")},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": format!("user-{i}")},
                         {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": format!("team-{}", i % 50)}]});
        admin
            .call_raw(Verb::Create, &rbac("rolebindings", binding))
            .await
            .expect("binding");
    }
    let reader_binding = json!({"metadata": {"name": "reader-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "reader"}]});
    admin
        .call_raw(Verb::Create, &rbac("rolebindings", reader_binding))
        .await
        .expect("reader's binding");
    let cm = named(
        "",
        "configmaps",
        None,
        Some(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": bench_data()}),
        ),
    );
    admin.call_raw(Verb::Create, &cm).await.expect("configmap");
    let reader = client_for(&cluster.nats.url(), "reader", "reader-token").await;
    let get = |_| named("", "configmaps", Some("shared".into()), None);
    // The reader may read, and only read: RBAC is what answers.
    reader
        .call_raw(Verb::Get, &get(0))
        .await
        .expect("view reads");
    let mut write = get(0);
    write.body = Some(json!({"metadata": {"name": "shared"}}));
    assert_eq!(
        reader
            .call_raw(Verb::Update, &write)
            .await
            .unwrap_err()
            .code,
        403
    );
    let (mut by_rbac, mut by_admin) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < rounds {
        let n = BLOCK.min(rounds - done);
        by_admin.extend(timed(&admin, Verb::Get, n, done, get).await);
        by_rbac.extend(timed(&reader, Verb::Get, n, done, get).await);
        done += n;
    }
    by_rbac.sort();
    by_admin.sort();
    println!("## Authorization: GET over NATS, RBAC (1,000 Roles and RoleBindings loaded) vs system:masters ({rounds} each)");
    println!("| measure | RBAC (view) | system:masters (baseline) | ratio |");
    println!("|---|---|---|---|");
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (a, b) = (percentile(&by_rbac, p), percentile(&by_admin, p));
        println!(
            "| {label} | {:.0} µs | {:.0} µs | {:.2}×{} |",
            micros(a),
            micros(b),
            micros(a) / micros(b),
            if label == "p50" {
                " (target ≤ 1.1×)"
            } else {
                ""
            }
        );
    }
    println!();
}

/// An admin client of the API server behind `url`, over TLS when `ca` is given.
async fn admin_at(url: &str, ca: Option<std::path::PathBuf>) -> ApiClient {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut o = skiff::client::ClientOptions::new(url, ADMIN.0, ADMIN.1);
        o.nats_ca = ca.clone();
        if let Ok(c) = ApiClient::connect(o).await {
            if c.api("", "namespaces", None).get("default").await.is_ok() {
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "API server at {url} did not answer"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates per second by `writers` concurrent writers, `per_writer` each.
async fn create_rate(client: &ApiClient, tag: &str, writers: usize, per_writer: usize) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let c = client.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let req = named(
                    "",
                    "configmaps",
                    None,
                    Some(json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": format!("{tag}-{w}-{i}")}, "data": {"k": "v"}})),
                );
                c.call_raw(Verb::Create, &req).await.expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (writers * per_writer) as f64 / start.elapsed().as_secs_f64()
}

/// Rounds of durable creates on each side of the TLS comparison.
const CREATE_ROUNDS: usize = 6;

/// NATS with TLS vs without, through real API server processes.
async fn tls_cost(rounds: usize) {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = skiff::apiserver::certs::Pki::ensure(pki_dir.path(), &[]).unwrap();
    let (cert, key, ca) = (
        pki.dir.join("server.crt"),
        pki.dir.join("server.key"),
        pki.dir.join("ca.crt"),
    );
    let plain_nats = NatsServer::start();
    let tls_nats = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        cert.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
    ]);
    let tls_url = format!("tls://127.0.0.1:{}", tls_nats.port);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let _plain_api = ApiProcess::start(&plain_nats.url(), d1.path(), &[]);
    let _tls_api = ApiProcess::start(
        &tls_url,
        d2.path(),
        &["--nats-ca-file", ca.to_str().unwrap()],
    );
    let plain = admin_at(&plain_nats.url(), None).await;
    let tls = admin_at(&tls_url, Some(ca.clone())).await;
    for c in [&plain, &tls] {
        let cm = named(
            "",
            "configmaps",
            None,
            Some(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": bench_data()}),
            ),
        );
        c.call_raw(Verb::Create, &cm).await.expect("configmap");
    }
    let get = |_| named("", "configmaps", Some("shared".into()), None);
    let (mut by_tls, mut by_plain) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < rounds {
        let n = BLOCK.min(rounds - done);
        by_plain.extend(timed(&plain, Verb::Get, n, done, get).await);
        by_tls.extend(timed(&tls, Verb::Get, n, done, get).await);
        done += n;
    }
    by_tls.sort();
    by_plain.sort();
    // Durable creates by 64 writers, in rounds that alternate which side goes first (ABBA),
    // so neither always runs in the other's wake (its WAL flushes and checkpoints).
    let (mut rate_tls, mut rate_plain) = (Vec::new(), Vec::new());
    for round in 0..CREATE_ROUNDS {
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                rate_plain.push(create_rate(&plain, &format!("p{round}"), 64, 30).await);
            } else {
                rate_tls.push(create_rate(&tls, &format!("t{round}"), 64, 30).await);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (rt, rp) = (median(&mut rate_tls), median(&mut rate_plain));
    println!("## NATS with TLS vs without: real API server processes ({rounds} GETs each, {CREATE_ROUNDS} alternating rounds of 64 writers × 30 creates)");
    println!("| measure | TLS | plain (baseline) | ratio |");
    println!("|---|---|---|---|");
    for (label, p) in [("GET p50", 0.5), ("GET p99", 0.99)] {
        let (a, b) = (percentile(&by_tls, p), percentile(&by_plain, p));
        println!(
            "| {label} | {:.0} µs | {:.0} µs | {:.2}×{} |",
            micros(a),
            micros(b),
            micros(a) / micros(b),
            if label == "GET p50" {
                " (target ≤ 1.15×)"
            } else {
                ""
            }
        );
    }
    println!(
        "| durable creates, 64 writers (median of {CREATE_ROUNDS}) | {rt:.0}/s | {rp:.0}/s | {:.2}× (target ≥ 0.9×) |",
        rt / rp
    );
    println!();
}

/// Durable creates by 64 writers through NATS and a real `skiff apiserver --store etcd`, next
/// to the same etcd driven directly (a create as Txn-CAS on `create_revision == 0`, and a
/// plain Put, 64 concurrent clients, the value size Skiff stores) and to an API server on its
/// embedded store; rounds alternate which side goes first.
async fn etcd_cost() {
    let etcd = EtcdServer::start();
    let (n1, n2) = (NatsServer::start(), NatsServer::start());
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let _on_etcd = ApiProcess::start(
        &n1.url(),
        d1.path(),
        &["--store", "etcd", "--etcd-servers", &etcd.url()],
    );
    let _embedded = ApiProcess::start(&n2.url(), d2.path(), &[]);
    let (skiff_etcd, embedded) = (
        admin_at(&n1.url(), None).await,
        admin_at(&n2.url(), None).await,
    );
    let bare = etcd_client::Client::connect([etcd.url()], None)
        .await
        .expect("etcd client");
    // The size of what Skiff stores for one of the ConfigMaps.
    create_rate(&skiff_etcd, "size", 1, 1).await;
    let size = bare
        .kv_client()
        .get("/registry/configmaps/default/size-0-0", None)
        .await
        .unwrap()
        .kvs()
        .first()
        .map_or(300, |kv| kv.value().len());
    // The same on a three-member etcd (all members on this machine).
    let three = EtcdCluster::start(3);
    let n3 = NatsServer::start();
    let d3 = tempfile::tempdir().unwrap();
    let _on_three = ApiProcess::start(
        &n3.url(),
        d3.path(),
        &[
            "--store",
            "etcd",
            "--etcd-servers",
            &three.endpoints().join(","),
        ],
    );
    let skiff_three = admin_at(&n3.url(), None).await;
    let bare_three = etcd_client::Client::connect(three.endpoints(), None)
        .await
        .expect("etcd client");
    let mut rates: [Vec<f64>; 6] = Default::default();
    for round in 0..CREATE_ROUNDS {
        let mut order = [0, 1, 2, 3, 4, 5];
        if round % 2 == 1 {
            order.reverse();
        }
        for side in order {
            let tag = format!("r{round}");
            let rate = match side {
                0 => create_rate(&skiff_etcd, &tag, 64, 30).await,
                1 => create_rate(&embedded, &tag, 64, 30).await,
                2 => bare_rate(&bare, &format!("/bench/cas/{tag}"), size, true).await,
                3 => bare_rate(&bare, &format!("/bench/put/{tag}"), size, false).await,
                4 => create_rate(&skiff_three, &tag, 64, 30).await,
                _ => bare_rate(&bare_three, &format!("/bench/cas/{tag}"), size, true).await,
            };
            rates[side].push(rate);
        }
    }
    let [mut on_etcd, mut on_embedded, mut cas, mut put, mut on_three, mut cas_three] = rates;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (e, m, c, p) = (
        median(&mut on_etcd),
        median(&mut on_embedded),
        median(&mut cas),
        median(&mut put),
    );
    let (e3, c3) = (median(&mut on_three), median(&mut cas_three));
    println!("## Skiff on etcd vs bare etcd (one member, {size}-byte values, 64 writers, median of {CREATE_ROUNDS} alternating rounds of 64 × 30)");
    println!("| durable creates/s | rate | vs bare Txn-CAS |");
    println!("|---|---|---|");
    println!(
        "| Skiff on etcd (NATS, API server, Txn-CAS) | {e:.0}/s | {:.2}× (target ≥ 0.8×) |",
        e / c
    );
    println!("| bare etcd Txn-CAS (baseline) | {c:.0}/s | 1.00× |");
    println!("| bare etcd Put | {p:.0}/s | {:.2}× |", p / c);
    println!(
        "| Skiff on its embedded store | {m:.0}/s | {:.2}× Skiff on etcd (target ≥ 5×) |",
        m / e
    );
    println!(
        "| Skiff on a 3-member etcd | {e3:.0}/s | {:.2}× bare Txn-CAS on the 3 members (target ≥ 0.8×) |",
        e3 / c3
    );
    println!("| bare Txn-CAS, 3 members | {c3:.0}/s | 1.00× |");
    println!();

    // Consistent GETs (no resourceVersion: the cache first catches up with etcd's revision)
    // vs linearizable etcd ranges of the same object, one reader and 16 at once.
    let get = |_| named("", "configmaps", Some("size-0-0".into()), None);
    println!("## Consistent GET from the watch cache vs a linearizable etcd range (same object)");
    println!(
        "| readers | Skiff GET p50 | p99 | etcd range p50 | p99 | p50 ratio (target ≤ 0.5×) |"
    );
    println!("|---|---|---|---|---|---|");
    for readers in [1usize, 16] {
        let per = 2_000 / readers;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            let mut tasks = Vec::new();
            for _ in 0..readers {
                let c = skiff_etcd.clone();
                tasks.push(tokio::spawn(async move {
                    timed(&c, Verb::Get, per / 2, 0, get).await
                }));
            }
            for t in tasks {
                ours.extend(t.await.unwrap());
            }
            let mut tasks = Vec::new();
            for _ in 0..readers {
                let mut kv = bare.kv_client();
                tasks.push(tokio::spawn(async move {
                    let mut times = Vec::with_capacity(per / 2);
                    for _ in 0..per / 2 {
                        let t = Instant::now();
                        kv.get("/registry/configmaps/default/size-0-0", None)
                            .await
                            .expect("range");
                        times.push(t.elapsed());
                    }
                    times
                }));
            }
            for t in tasks {
                theirs.extend(t.await.unwrap());
            }
        }
        ours.sort();
        theirs.sort();
        let (a, b) = (percentile(&ours, 0.5), percentile(&theirs, 0.5));
        println!(
            "| {readers} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.2}× |",
            micros(a),
            micros(percentile(&ours, 0.99)),
            micros(b),
            micros(percentile(&theirs, 0.99)),
            micros(a) / micros(b)
        );
    }
    println!();
}

/// 1,000 watches of ConfigMaps on one API server on etcd: how many watches etcd holds (its
/// `etcd_debugging_mvcc_watcher_total`), and commit → delivery of each event to every watch
/// (the writer stamps the time in an annotation) next to a bare NATS publish to 1,000
/// subscribers in the same run.
async fn etcd_watchers() {
    const WATCHES: usize = 1_000;
    const EVENTS: usize = 100;
    let etcd = EtcdServer::start();
    let before = etcd_watchers_count(etcd.port);
    let cluster = Cluster::with(ApiServerOptions {
        etcd: Some(etcd.options()),
        max_watches_per_user: 2 * WATCHES,
        ..Default::default()
    });
    let admin = cluster.client().await;
    let cms = admin.api("", "configmaps", Some("default"));
    let now_micros = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let mut watchers = Vec::new();
    for _ in 0..WATCHES {
        let mut w = cms.watch(&skiff::api::wire::ListOptions {
            resource_version: Some(
                cms.list(&Default::default())
                    .await
                    .unwrap()
                    .resource_version,
            ),
            ..Default::default()
        });
        let tx = tx.clone();
        watchers.push(tokio::spawn(async move {
            while let Some(Ok(ev)) = w.next().await {
                if let Some(sent) = ev.object["metadata"]["annotations"]["sent"]
                    .as_str()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    let _ = tx.send(now_micros().saturating_sub(sent));
                }
            }
        }));
    }
    wait_for(Duration::from_secs(60), "every watch registered", || {
        let h = cluster.api.handle.clone();
        async move { (h.store_stats().await.ok()?.watchers >= WATCHES).then_some(()) }
    })
    .await;
    let held = etcd_watchers_count(etcd.port) - before;
    let mut ours = Vec::with_capacity(WATCHES * EVENTS);
    for i in 0..EVENTS {
        cms.create(&json!({"metadata": {"name": format!("w{i}"),
            "annotations": {"sent": now_micros().to_string()}}}))
            .await
            .unwrap();
        while ours.len() < (i + 1) * WATCHES {
            let us = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("every watch gets the event")
                .unwrap();
            ours.push(Duration::from_micros(us));
        }
    }
    for w in watchers {
        w.abort();
    }
    // The baseline: the same fan-out as a bare NATS publish.
    let nats = async_nats::connect(cluster.nats.url()).await.unwrap();
    let (btx, mut brx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let mut subs = Vec::new();
    for _ in 0..WATCHES {
        let mut sub = nats.subscribe("bench.fanout").await.unwrap();
        let btx = btx.clone();
        subs.push(tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(m) = sub.next().await {
                let sent: u64 = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
                let _ = btx.send(now_micros().saturating_sub(sent));
            }
        }));
    }
    nats.flush().await.unwrap();
    let mut bare = Vec::with_capacity(WATCHES * EVENTS);
    for i in 0..EVENTS {
        nats.publish("bench.fanout", now_micros().to_string().into())
            .await
            .unwrap();
        while bare.len() < (i + 1) * WATCHES {
            let us = tokio::time::timeout(Duration::from_secs(30), brx.recv())
                .await
                .expect("every subscriber gets the message")
                .unwrap();
            bare.push(Duration::from_micros(us));
        }
    }
    for s in subs {
        s.abort();
    }
    ours.sort();
    bare.sort();
    let (a, b) = (percentile(&ours, 0.99), percentile(&bare, 0.99));
    println!(
        "## {WATCHES} watches on one API server on etcd ({EVENTS} events, each to every watch)"
    );
    println!(
        "| measure | Skiff watch | bare NATS pub → {WATCHES} subscribers (baseline) | ratio |"
    );
    println!("|---|---|---|---|");
    println!("| watches etcd holds | {held} (target 1) | | |");
    println!(
        "| commit → delivery p50 | {:.0} µs | {:.0} µs | {:.2}× |",
        micros(percentile(&ours, 0.5)),
        micros(percentile(&bare, 0.5)),
        micros(percentile(&ours, 0.5)) / micros(percentile(&bare, 0.5))
    );
    println!(
        "| commit → delivery p99 | {:.0} µs | {:.0} µs | {:.2}× (target ≤ 3×) |",
        micros(a),
        micros(b),
        micros(a) / micros(b)
    );
    println!();
}

/// etcd's count of watchers (its Prometheus `etcd_debugging_mvcc_watcher_total`).
fn etcd_watchers_count(port: u16) -> i64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("etcd metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .find(|l| l.starts_with("etcd_debugging_mvcc_watcher_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(-1, |v| v as i64)
}

/// Creates per second by 64 concurrent clients, 30 each, straight to etcd: a Txn that puts
/// only if the key does not exist (`cas`), or a plain Put.
async fn bare_rate(client: &etcd_client::Client, prefix: &str, size: usize, cas: bool) -> f64 {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..64 {
        let mut kv = client.kv_client();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                let key = format!("{prefix}/{w}-{i}");
                let value = vec![b'x'; size];
                if cas {
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key.clone(), value, None)])
                        .or_else([TxnOp::get(key, None)]);
                    assert!(kv.txn(txn).await.expect("txn").succeeded());
                } else {
                    kv.put(key, value, None).await.expect("put");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (64 * 30) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rounds: usize = std::env::var("SKIFF_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("SKIFF_BENCH_ONLY").unwrap_or_default();
    rt.block_on(async {
        if only.is_empty() || only == "apply" {
            apply_vs_patch(rounds).await;
        }
        if only.is_empty() || only == "update" {
            update_cost(rounds).await;
        }
        if only.is_empty() || only == "crd" {
            custom_vs_configmap(rounds).await;
        }
        if only.is_empty() || only == "rbac" {
            rbac_cost(rounds).await;
        }
        if only.is_empty() || only == "tls" {
            tls_cost(rounds).await;
        }
        if only.is_empty() || only == "etcd" {
            etcd_cost().await;
        }
        if only.is_empty() || only == "etcd" || only == "etcd-watch" {
            etcd_watchers().await;
        }
    });
}
