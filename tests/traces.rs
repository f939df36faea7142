//! Message traces, end to end with real processes: `skiff up` (every component, each with its
//! own NATS client), a Deployment created with the real kubectl over HTTPS, then
//! - `skiff trace pod/<name> -o json`: one pod's trace holds, under one trace id and in causal
//!   order, the API server's create, the store commit, the scheduler's decision and binding,
//!   the kubelet's start (and runtime call), and the status update that made it Running;
//! - `skiff trace --follow -o json`, run meanwhile, shows the messages between every pair of
//!   components the flow involves.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::*;

/// `skiff trace <args>` against `up`'s bus, with its admin token.
fn trace(up: &SkiffUp, args: &[&str]) -> Command {
    let mut c = Command::new(skiff_bin());
    c.arg("trace")
        .args(args)
        .args(["--nats-url", &up.nats_url, "--data-dir"])
        .arg(up.dir.path());
    c
}

fn spans(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

#[test]
fn one_pods_trace_runs_from_the_create_to_running_and_follow_shows_every_hop() {
    let up = SkiffUp::start(2);

    // The live view, running while the Deployment is created and rolled out.
    let mut follow = trace(&up, &["--follow", "-o", "json", "--duration", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut live = Lines::new(follow.stdout.take().unwrap());
    // The first span (leases renew all the time) shows the live view is subscribed.
    live.wait_for_line("the live view's first span", Duration::from_secs(20), |l| {
        serde_json::from_str::<Value>(l).is_ok()
    });
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/deployment.yaml");
    up.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    up.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let pod = up.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    assert_eq!(
        up.ok(&["get", "pod", &pod, "-o", "jsonpath={.status.phase}"]),
        "Running"
    );

    // The pod's timeline.
    let out = trace(&up, &[&format!("pod/{pod}"), "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let all = spans(&String::from_utf8_lossy(&out.stdout));
    let about_pod = |v: &Value| s(v, "object") == pod;
    // The trace of the pod's creation: the one whose store commit first wrote the pod.
    let commit = all
        .iter()
        .find(|v| s(v, "name") == "Store/commit" && about_pod(v))
        .expect("the pod's create committed");
    let trace_id = s(commit, "trace_id").to_string();
    let steps: Vec<&Value> = all
        .iter()
        .filter(|v| s(v, "trace_id") == trace_id)
        .collect();
    let by_id = |id: &str| steps.iter().copied().find(|v| s(v, "span_id") == id);
    let parent_of = |v: &Value| v["parent_id"].as_str().and_then(by_id);
    let find = |what: &str, pred: &dyn Fn(&Value) -> bool| -> &Value {
        steps
            .iter()
            .copied()
            .find(|v| pred(v))
            .unwrap_or_else(|| panic!("{what} in the trace: {steps:#?}"))
    };
    let create = parent_of(commit).expect("the commit's parent");
    assert_eq!(
        (
            s(create, "name"),
            s(create, "resource"),
            s(create, "component")
        ),
        ("ApiServer/create", "pods", "apiserver")
    );
    let schedule = find("the scheduler's decision", &|v| {
        s(v, "name") == "Scheduler/schedule" && about_pod(v)
    });
    assert_eq!(s(schedule, "component"), "scheduler");
    assert_eq!(
        schedule["parent_id"], create["span_id"],
        "the decision continues the create"
    );
    let binding = find("the binding", &|v| {
        s(v, "name") == "ApiServer/create" && s(v, "resource") == "pods/binding" && about_pod(v)
    });
    let bind_call = parent_of(binding).expect("the scheduler's binding request");
    assert_eq!(
        (s(bind_call, "from"), s(bind_call, "to")),
        ("scheduler", "apiserver")
    );
    assert_eq!(bind_call["parent_id"], schedule["span_id"]);
    let start = find("the kubelet's start", &|v| {
        s(v, "name") == "Kubelet/start" && about_pod(v)
    });
    assert!(s(start, "component").starts_with("kubelet:"), "{start}");
    assert_eq!(
        start["parent_id"], binding["span_id"],
        "the kubelet acts on the binding's event"
    );
    let runtime = find("the runtime call", &|v| s(v, "name") == "Runtime/start");
    assert_eq!(runtime["parent_id"], start["span_id"]);
    let status = find("the status update", &|v| {
        s(v, "name") == "ApiServer/patch" && s(v, "resource") == "pods/status" && about_pod(v)
    });
    let status_call = parent_of(status).expect("the kubelet's status request");
    assert_eq!(status_call["parent_id"], start["span_id"]);
    assert_eq!(s(status, "outcome"), "200");
    // Causal order in time.
    let at = |v: &Value| v["start_unix_nanos"].as_u64().unwrap();
    let order = [create, commit, schedule, binding, start, runtime, status];
    for w in order.windows(2) {
        assert!(at(w[0]) <= at(w[1]), "{} before {}", w[0], w[1]);
    }
    // The text timeline names each step with its duration.
    let text = trace(&up, &[&format!("pod/{pod}")]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    for step in [
        "ApiServer/create",
        "Store/commit",
        "Scheduler/schedule",
        "Kubelet/start",
        "Runtime/start",
        "ApiServer/patch",
    ] {
        assert!(text.contains(step), "{step} in\n{text}");
    }

    // Every pair of components the flow involves, in the live view: read until all are seen.
    let pairs = [
        ("kubectl", "apiserver"),
        ("controller-manager", "apiserver"),
        ("apiserver", "controller-manager"),
        ("scheduler", "apiserver"),
        ("apiserver", "scheduler"),
        ("kubelet", "apiserver"),
        ("apiserver", "kubelet"),
        ("kubelet", "runtime"),
    ];
    let seen = |lines: &[String]| -> BTreeSet<(String, String)> {
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["from"].is_string())
            .map(|v| {
                let short = |x: &str| x.split(':').next().unwrap_or(x).to_string();
                (short(s(&v, "from")), short(s(&v, "to")))
            })
            .collect()
    };
    live.wait_until(
        "every hop of the flow in the live view",
        Duration::from_secs(60),
        |lines| {
            let seen = seen(lines);
            pairs
                .iter()
                .all(|(f, t)| seen.contains(&(f.to_string(), t.to_string())))
        },
    );
    let _ = follow.kill();
    let _ = follow.wait();
}
