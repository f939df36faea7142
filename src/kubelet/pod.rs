//! One pod's worker: keeps the pod's containers running as its spec and restart policy say,
//! with exponential back-off for crashing containers, reports status through the API server,
//! and carries out graceful deletion (stop with the grace period, then the final delete).
//! It talks to the API server only through `ApiClient` and to containers only through the
//! runtime.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::sync::watch;

use super::runtime::{ContainerId, ContainerRuntime, ContainerSpec, ContainerState, RuntimeError};
use super::volumes::PodVolumes;
use crate::api::wire::{DeleteOptions, PatchType, Preconditions};
use crate::client::Api;
use crate::trace::{self, ObjectRef, Span};

/// Back-off of restarts, as the kubelet's: base doubled per crash, capped.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay (Kubernetes: 10 s).
    pub base: Duration,
    /// Cap (Kubernetes: 5 min).
    pub max: Duration,
}

/// Per-container bookkeeping of the worker.
#[derive(Debug, Default, Clone)]
struct Tracked {
    /// Restarts so far.
    restarts: u32,
    /// Not before this instant may it start again (back-off).
    next_start: Option<tokio::time::Instant>,
    /// The last terminated state, for `lastState`.
    last: Option<Value>,
    /// Whether an instance is (or was last seen) running.
    started: bool,
    /// Readiness probe bookkeeping (of the running instance).
    readiness: ProbeState,
    /// Liveness probe bookkeeping (of the running instance).
    liveness: ProbeState,
    /// The instance the probe states belong to (its start time).
    instance: Option<SystemTime>,
    /// Consecutive failed starts (image missing, command not found…), which back off like
    /// crashes, and the waiting (reason, message) shown while backing off.
    start_failures: u32,
    backing_off: Option<(String, String)>,
    /// The waiting reason last recorded as an Event (BackOff, Failed), so a state that lasts
    /// is one Event, not one per pass.
    evented: Option<String>,
}

/// Consecutive results of one probe of one container instance.
#[derive(Debug, Default, Clone)]
struct ProbeState {
    /// When it last ran.
    last: Option<tokio::time::Instant>,
    /// Consecutive successes and failures.
    successes: u32,
    failures: u32,
    /// The current verdict (readiness: ready; liveness: healthy).
    ok: bool,
}

/// A container probe, as the pod spec declares it.
#[derive(Debug, Clone)]
struct Probe {
    action: ProbeAction,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

#[derive(Debug, Clone)]
enum ProbeAction {
    Exec(Vec<String>),
    Http {
        host: Option<String>,
        port: u16,
        path: String,
    },
    Tcp {
        host: Option<String>,
        port: u16,
    },
}

/// Resolves a probe port: a number, or the name of one of the container's ports.
fn probe_port(v: &Value, container: &Value) -> Option<u16> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(name) => name.parse().ok().or_else(|| {
            container
                .get("ports")
                .and_then(Value::as_array)?
                .iter()
                .find(|p| p["name"] == name.as_str())?["containerPort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
        }),
        _ => None,
    }
}

fn parse_probe(v: Option<&Value>, container: &Value) -> Option<Probe> {
    let v = v?;
    let secs = |k: &str, d: u64| Duration::from_secs(v.get(k).and_then(Value::as_u64).unwrap_or(d));
    let action = if let Some(cmd) = v.pointer("/exec/command").and_then(Value::as_array) {
        ProbeAction::Exec(
            cmd.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect(),
        )
    } else if let Some(h) = v.get("httpGet") {
        ProbeAction::Http {
            host: h.get("host").and_then(Value::as_str).map(String::from),
            port: probe_port(h.get("port")?, container)?,
            path: h
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_string(),
        }
    } else if let Some(t) = v.get("tcpSocket") {
        ProbeAction::Tcp {
            host: t.get("host").and_then(Value::as_str).map(String::from),
            port: probe_port(t.get("port")?, container)?,
        }
    } else {
        return None;
    };
    Some(Probe {
        action,
        initial_delay: secs("initialDelaySeconds", 0),
        period: secs("periodSeconds", 10).max(Duration::from_secs(1)),
        timeout: secs("timeoutSeconds", 1).max(Duration::from_secs(1)),
        success_threshold: v
            .get("successThreshold")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1) as u32,
        failure_threshold: v
            .get("failureThreshold")
            .and_then(Value::as_u64)
            .unwrap_or(3)
            .max(1) as u32,
    })
}

/// Runs one probe once: true on success.
async fn run_probe(
    p: &Probe,
    runtime: &Arc<dyn ContainerRuntime>,
    id: &ContainerId,
    pod_ip: &str,
) -> bool {
    let attempt = async {
        match &p.action {
            ProbeAction::Exec(cmd) => runtime
                .exec(id, cmd)
                .await
                .map(|(code, _)| code == 0)
                .unwrap_or(false),
            ProbeAction::Tcp { host, port } => {
                let host = host.clone().unwrap_or_else(|| pod_ip.to_string());
                tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .is_ok()
            }
            ProbeAction::Http { host, port, path } => {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let host = host.clone().unwrap_or_else(|| pod_ip.to_string());
                let Ok(mut s) = tokio::net::TcpStream::connect((host.as_str(), *port)).await else {
                    return false;
                };
                let req = format!(
                    "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: skiff-probe\r\n\r\n"
                );
                if s.write_all(req.as_bytes()).await.is_err() {
                    return false;
                }
                let mut head = [0u8; 32];
                let n = s.read(&mut head).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&head[..n]);
                // "HTTP/1.x NNN": 200–399 is healthy, as in Kubernetes.
                line.split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse::<u16>().ok())
                    .is_some_and(|c| (200..400).contains(&c))
            }
        }
    };
    tokio::time::timeout(p.timeout, attempt)
        .await
        .unwrap_or(false)
}

/// Runs a probe if it is due and updates its state; returns true when it just crossed its
/// failure threshold.
async fn probe_if_due(
    probe: &Probe,
    state: &mut ProbeState,
    started_at: SystemTime,
    runtime: &Arc<dyn ContainerRuntime>,
    id: &ContainerId,
    pod_ip: &str,
) -> bool {
    let age = SystemTime::now()
        .duration_since(started_at)
        .unwrap_or_default();
    if age < probe.initial_delay || state.last.is_some_and(|l| l.elapsed() < probe.period) {
        return false;
    }
    state.last = Some(tokio::time::Instant::now());
    if run_probe(probe, runtime, id, pod_ip).await {
        state.failures = 0;
        state.successes += 1;
        if state.successes >= probe.success_threshold {
            state.ok = true;
        }
        false
    } else {
        state.successes = 0;
        state.failures += 1;
        if state.failures >= probe.failure_threshold {
            let crossed = state.ok;
            state.ok = false;
            return crossed;
        }
        false
    }
}

/// The `terminated` state of an exited container, as containerStatuses carry it.
fn terminated(state: &ContainerState) -> Option<Value> {
    let ContainerState::Exited {
        exit_code,
        signal,
        started_at,
        finished_at,
        reason,
    } = state
    else {
        return None;
    };
    Some(
        json!({"terminated": {"exitCode": exit_code, "signal": signal, "reason": reason,
        "startedAt": rfc3339(*started_at), "finishedAt": rfc3339(*finished_at)}}),
    )
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The value of a downward-API field (`valueFrom.fieldRef.fieldPath`, or a `downwardAPI`
/// volume item's): a whole `metadata.labels` or `metadata.annotations` is one `key="value"`
/// line per entry, sorted, as the kubelet writes them.
pub(crate) fn field_ref(pod: &Value, path: &str, pod_ip: &str, host_ip: &str) -> String {
    let s = |p: &str| {
        pod.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    match path {
        "metadata.name" => s("/metadata/name"),
        "metadata.namespace" => s("/metadata/namespace"),
        "metadata.uid" => s("/metadata/uid"),
        "spec.nodeName" => s("/spec/nodeName"),
        "spec.serviceAccountName" => s("/spec/serviceAccountName"),
        "status.podIP" => pod_ip.to_string(),
        "status.hostIP" => host_ip.to_string(),
        whole @ ("metadata.labels" | "metadata.annotations") => {
            let map = pod.pointer(&format!("/{}", whole.replace('.', "/")));
            let mut lines: Vec<String> = map
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            lines.sort();
            lines.join("\n")
        }
        p => {
            let one = |map: &str| {
                p.strip_prefix(&format!("metadata.{map}['"))
                    .and_then(|r| r.strip_suffix("']"))
                    .map(|k| {
                        pod.pointer(&format!("/metadata/{map}"))
                            .and_then(|l| l.get(k))
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string()
                    })
            };
            one("labels")
                .or_else(|| one("annotations"))
                .unwrap_or_default()
        }
    }
}

/// Expands `$(VAR)` references to the container's environment, as Kubernetes does for
/// command and args: `$$` is a literal `$`, unknown variables stay as written.
pub fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) if env.contains_key(&inner[..end]) => {
                    out.push_str(&env[&inner[..end]]);
                    rest = &inner[end + 1..];
                }
                Some(end) => {
                    out.push_str(&rest[i..i + 2 + end + 1]);
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The containers of a pod spec, as (name, image, runtime spec), with env values resolved
/// (literal values, downward-API field refs) and `$(VAR)` expanded in command and args.
fn containers(
    pod: &Value,
    at: &str,
    pod_ip: &str,
    host_ip: &str,
    service_env: &BTreeMap<String, String>,
) -> Vec<(String, String, ContainerSpec)> {
    pod.pointer(at)
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let strings = |k: &str| -> Vec<String> {
                        c.get(k)
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(|s| s.as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    let mut env = service_env.clone();
                    let own: BTreeMap<String, String> = c
                        .get("env")
                        .and_then(Value::as_array)
                        .map(|e| {
                            e.iter()
                                .filter_map(|v| {
                                    let value = match v
                                        .pointer("/valueFrom/fieldRef/fieldPath")
                                        .and_then(Value::as_str)
                                    {
                                        Some(path) => field_ref(pod, path, pod_ip, host_ip),
                                        None => v
                                            .get("value")
                                            .and_then(Value::as_str)
                                            .unwrap_or("")
                                            .to_string(),
                                    };
                                    Some((v.get("name")?.as_str()?.to_string(), value))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    env.extend(own);
                    let name = c
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let image = c
                        .get("image")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let spec = ContainerSpec {
                        image: image.clone(),
                        command: strings("command").iter().map(|a| expand(a, &env)).collect(),
                        args: strings("args").iter().map(|a| expand(a, &env)).collect(),
                        env,
                        working_dir: c
                            .get("workingDir")
                            .and_then(Value::as_str)
                            .map(String::from),
                        mounts: Vec::new(),
                    };
                    (name, image, spec)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Patches the pod's status when it differs from the last one written (`last`, updated on
/// success); false when the pod is gone. A failure is retried on the worker's next pass.
async fn report(pods: &Api, name: &str, status: Value, last: &mut Value) -> bool {
    if status == *last {
        return true;
    }
    match pods
        .patch(
            name,
            Some("status"),
            PatchType::Merge,
            &json!({"status": status}),
        )
        .await
    {
        Ok(_) => *last = status,
        Err(e) if e.code == 404 => return false,
        Err(e) => tracing::debug!(pod = %name, error = %e, "status update failed; retrying"),
    }
    true
}

/// Records an Event about `pod` (and one of its containers) from this node's kubelet, as the
/// kubelet's recorder does; best effort.
async fn note(
    pods: &Api,
    pod: &Value,
    container: Option<&str>,
    kind: &str,
    reason: &str,
    message: &str,
) {
    let mut event = crate::controllers::event(pod, "kubelet", kind, reason, message);
    event["involvedObject"]["apiVersion"] = json!("v1");
    event["involvedObject"]["kind"] = json!("Pod");
    if let Some(c) = container {
        event["involvedObject"]["fieldPath"] = json!(format!("spec.containers{{{c}}}"));
    }
    let node = host_node(pod);
    event["source"]["host"] = json!(node);
    event["reportingInstance"] = json!(node);
    let events = pods
        .client()
        .api("", "events", Some(crate::api::meta::namespace(pod)));
    if let Err(e) = events.create(&event).await {
        tracing::debug!(error = %e, reason, "recording an event");
    }
}

/// Where a pod's containers are in its spec.
const MAIN: &str = "/spec/containers";
/// Where its init containers are.
const INIT: &str = "/spec/initContainers";

/// The node a pod is bound to (the metrics' `node` label).
fn host_node(pod: &Value) -> String {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The `operation` label of a failed start.
fn runtime_operation(e: &RuntimeError) -> &'static str {
    match e {
        RuntimeError::Image { .. } => "pull_image",
        RuntimeError::Start { .. } => "start_container",
        RuntimeError::Other(_) => "runtime",
    }
}

/// Where and how one pod runs on this node.
pub struct Placement {
    /// The node's address.
    pub host_ip: String,
    /// The pod's address.
    pub pod_ip: String,
    /// Back-off of crashing containers.
    pub backoff: Backoff,
    /// Where the pod's volumes are written (`<dir>/<uid>/<volume>`); None: volumes are not
    /// made (hollow nodes) and containers start without them.
    pub volume_root: Option<std::path::PathBuf>,
    /// Variables every container gets before its own `env` (`KUBERNETES_SERVICE_HOST`…).
    pub service_env: BTreeMap<String, String>,
    /// The node's allocatable resources (`resourceFieldRef` of an unset limit).
    pub allocatable: super::env::Allocatable,
}

/// Runs one pod until it is deleted (or its worker is dropped).
pub async fn run(
    pods: Api,
    runtime: Arc<dyn ContainerRuntime>,
    mut spec: watch::Receiver<Value>,
    placement: Placement,
) {
    let Placement {
        host_ip,
        pod_ip,
        backoff,
        volume_root,
        service_env,
        allocatable,
    } = placement;
    let mut volumes = {
        let pod = spec.borrow();
        volume_root.as_deref().map(|root| {
            PodVolumes::new(
                root,
                crate::api::meta::uid(&pod),
                pods.client().clone(),
                &pod_ip,
                &host_ip,
            )
        })
    };
    // Containers start once every volume has been filled; the last failure, logged once.
    let mut volumes_ready = volumes.is_none();
    let mut mount_failure = String::new();
    let mut tracked: BTreeMap<String, Tracked> = BTreeMap::new();
    let mut last_status = Value::Null;
    // Each pod condition's status and the time it took it.
    let mut transitions: BTreeMap<&'static str, (bool, String)> = BTreeMap::new();
    let start_time = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let started = tokio::time::Instant::now();
    loop {
        let pod = spec.borrow_and_update().clone();
        let ns = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let uid = pod
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let id = |c: &str| ContainerId {
            namespace: ns.clone(),
            pod: name.clone(),
            uid: uid.clone(),
            container: c.to_string(),
        };
        let mut list = containers(&pod, MAIN, &pod_ip, &host_ip, &service_env);
        let mut init_list = containers(&pod, INIT, &pod_ip, &host_ip, &service_env);
        if let Some(v) = volumes.as_mut() {
            if pod.pointer("/metadata/deletionTimestamp").is_none() {
                match v.fill(&pod).await {
                    Ok(()) => volumes_ready = true,
                    Err(e) => {
                        if e.to_string() != mount_failure {
                            mount_failure = e.to_string();
                            tracing::warn!(pod = %name, namespace = %ns, "FailedMount: {e}");
                            note(
                                &pods,
                                &pod,
                                None,
                                "Warning",
                                "FailedMount",
                                &format!("MountVolume.SetUp failed: {e}"),
                            )
                            .await;
                        }
                    }
                }
            }
            for (at, list) in [(MAIN, &mut list), (INIT, &mut init_list)] {
                let raw = pod.pointer(at).and_then(Value::as_array);
                for (c, _, cspec) in list.iter_mut() {
                    if let Some(raw) =
                        raw.and_then(|cs| cs.iter().find(|x| x["name"] == c.as_str()))
                    {
                        cspec.mounts = v.mounts(&pod, raw);
                    }
                }
            }
        }
        // This version of the pod came from some write: the work it causes continues that
        // write's trace, and the status update that follows continues this work.
        let mut parent = trace::of(&pod);
        let tracer = pods.client().tracer().clone();
        let object = ObjectRef {
            resource: "pods".into(),
            namespace: ns.clone(),
            name: name.clone(),
        };
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            let grace = pod
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(30);
            for (c, _, _) in init_list.iter().chain(&list) {
                if matches!(runtime.state(&id(c)).await, ContainerState::Running { .. }) {
                    note(
                        &pods,
                        &pod,
                        Some(c),
                        "Normal",
                        "Killing",
                        &format!("Stopping container {c}"),
                    )
                    .await;
                }
                if let Err(e) = runtime.stop(&id(c), Duration::from_secs(grace)).await {
                    tracing::warn!(pod = %name, container = %c, error = %e, "stopping");
                }
                let _ = runtime.remove(&id(c)).await;
            }
            // The final delete: the API server removes the object now.
            let opts = DeleteOptions {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match pods.delete(&name, &opts).await {
                Ok(_) => {}
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::warn!(pod = %name, error = %e, "final delete"),
            }
            return;
        }
        // activeDeadlineSeconds: past it, every container is stopped and the pod fails with
        // DeadlineExceeded, as the kubelet's active deadline handler does.
        let deadline = pod
            .pointer("/spec/activeDeadlineSeconds")
            .and_then(Value::as_u64)
            .map(Duration::from_secs);
        if deadline.is_some_and(|d| started.elapsed() >= d) {
            let mut statuses = Vec::new();
            for (c, image, _) in init_list.iter().chain(&list) {
                if matches!(runtime.state(&id(c)).await, ContainerState::Running { .. }) {
                    let _ = runtime.stop(&id(c), Duration::from_secs(0)).await;
                }
                let state = terminated(&runtime.state(&id(c)).await)
                    .unwrap_or_else(|| json!({"waiting": {"reason": "ContainerCreating"}}));
                if list.iter().any(|(m, _, _)| m == c) {
                    statuses.push(json!({"name": c, "image": image, "ready": false, "started": false,
                        "restartCount": tracked.get(c).map_or(0, |t| t.restarts), "state": state, "lastState": {}}));
                }
            }
            let status = json!({"phase": "Failed", "reason": "DeadlineExceeded",
                "message": "Pod was active on the node longer than the specified deadline",
                "containerStatuses": statuses});
            if !report(&pods.with_parent(None), &name, status, &mut last_status).await {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), spec.changed()).await;
            if spec.has_changed().is_err() {
                return;
            }
            continue;
        }
        let policy = pod
            .pointer("/spec/restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Always")
            .to_string();
        let mut statuses = Vec::new();
        let (mut running, mut succeeded, mut failed, mut waiting) = (0, 0, 0, 0);
        let mut ready_n = 0;
        // Init containers run one at a time, in order, each to success, before any other
        // container starts (kubectl shows Init:N/M, Init:Error, Init:CrashLoopBackOff).
        let mut init_statuses: Vec<Value> = Vec::new();
        let mut current_init = None;
        for (i, (c, image, _)) in init_list.iter().enumerate() {
            let state = runtime.state(&id(c)).await;
            if let (ContainerState::Exited { exit_code: 0, .. }, Some(done)) =
                (&state, terminated(&state))
            {
                let restarts = tracked.get(c).map_or(0, |t| t.restarts);
                init_statuses.push(json!({
                    "name": c, "image": image, "imageID": format!("skiff://{image}"),
                    "containerID": format!("skiff://{ns}_{name}_{c}"), "ready": true,
                    "started": false, "restartCount": restarts, "lastState": {},
                    "state": done}));
                continue;
            }
            current_init = Some(i);
            break;
        }
        let initializing = current_init.is_some();
        let mut init_failed = false;
        let active: Vec<(bool, &(String, String, ContainerSpec))> = match current_init {
            Some(i) => vec![(true, &init_list[i])],
            None => list.iter().map(|x| (false, x)).collect(),
        };
        for (is_init, (c, image, cspec)) in active {
            let t = tracked.entry(c.clone()).or_default();
            let mut state = runtime.state(&id(c)).await;
            // An init container is restarted only after a failure (never under `Never`).
            let restartable = |exit: i32| match (is_init, policy.as_str()) {
                (_, "Never") => false,
                (true, _) | (false, "OnFailure") => exit != 0,
                _ => true,
            };
            let now = tokio::time::Instant::now();
            let mut waiting_reason: Option<(String, String)> = None;
            // Never started while its volumes are not there: ContainerCreating.
            let mut start = matches!(state, ContainerState::Unknown) && !t.started && volumes_ready;
            if start && t.next_start.is_some_and(|at| now < at) {
                // A failed start is backing off: ErrImagePull becomes ImagePullBackOff.
                start = false;
                waiting_reason = t.backing_off.clone();
            }
            if let (ContainerState::Exited { exit_code, .. }, Some(term)) =
                (&state, terminated(&state))
            {
                if restartable(*exit_code) {
                    // A newly seen exit schedules the restart: base × 2^restarts, capped.
                    if t.last.as_ref() != Some(&term) {
                        let delay = backoff
                            .base
                            .saturating_mul(1 << t.restarts.min(16))
                            .min(backoff.max);
                        t.next_start = Some(now + delay);
                        t.last = Some(term);
                    }
                    if t.next_start.is_none_or(|at| now >= at) {
                        start = true;
                        t.restarts += 1;
                    } else {
                        waiting_reason = Some((
                            "CrashLoopBackOff".into(),
                            format!("back-off restarting failed container {c} in pod {name}"),
                        ));
                    }
                }
            }
            // The environment is read when the container is created, as the kubelet does: a
            // missing ConfigMap or Secret holds it in CreateContainerConfigError (retried with
            // back-off) rather than starting it without.
            let mut spec_now = cspec.clone();
            if start {
                let raw = pod
                    .pointer(if is_init { INIT } else { MAIN })
                    .and_then(Value::as_array)
                    .and_then(|cs| cs.iter().find(|x| x["name"] == c.as_str()))
                    .cloned()
                    .unwrap_or(Value::Null);
                let resolved = super::env::resolve(
                    pods.client(),
                    &pod,
                    &raw,
                    (&pod_ip, &host_ip),
                    &service_env,
                    allocatable,
                )
                .await;
                match resolved {
                    Ok(env) => {
                        let args = |k: &str| -> Vec<String> {
                            raw[k]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|s| s.as_str().map(|a| expand(a, &env)))
                                .collect()
                        };
                        spec_now.command = args("command");
                        spec_now.args = args("args");
                        spec_now.env = env;
                    }
                    Err(message) => {
                        start = false;
                        let delay = backoff
                            .base
                            .saturating_mul(1 << t.start_failures.min(16))
                            .min(backoff.max);
                        t.start_failures += 1;
                        t.next_start = Some(now + delay);
                        let reason = "CreateContainerConfigError".to_string();
                        if t.backing_off.as_ref().map(|b| &b.1) != Some(&message) {
                            tracing::warn!(pod = %name, namespace = %ns, container = %c, "{reason}: {message}");
                        }
                        t.backing_off = Some((reason.clone(), message.clone()));
                        waiting_reason = Some((reason, message));
                    }
                }
            }
            if start {
                let kubelet_span =
                    Span::start("Kubelet/start", parent).about("start", object.clone());
                let runtime_span = Span::start("Runtime/start", Some(kubelet_span.ctx))
                    .message(tracer.component(), "runtime", &runtime.version())
                    .about("start", object.clone());
                let started = runtime.start(&id(c), &spec_now).await;
                let outcome = match &started {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e.to_string(),
                };
                tracer.finish(&runtime_span, &outcome);
                tracer.finish(&kubelet_span, &outcome);
                match &started {
                    Ok(()) => crate::metrics::counter(
                        "kubelet_container_starts_total",
                        "Containers started, by node.",
                        &["node"],
                    )
                    .inc(&[&host_node(&pod)]),
                    Err(e) => crate::metrics::counter(
                        "kubelet_runtime_errors_total",
                        "Runtime operations that failed, by node and operation.",
                        &["node", "operation"],
                    )
                    .inc(&[&host_node(&pod), runtime_operation(e)]),
                }
                parent = Some(kubelet_span.ctx);
                match started {
                    Ok(()) => {
                        note(
                            &pods,
                            &pod,
                            Some(c),
                            "Normal",
                            "Pulled",
                            &format!("Container image \"{image}\" already present on machine"),
                        )
                        .await;
                        note(
                            &pods,
                            &pod,
                            Some(c),
                            "Normal",
                            "Created",
                            &format!("Created container: {c}"),
                        )
                        .await;
                        note(
                            &pods,
                            &pod,
                            Some(c),
                            "Normal",
                            "Started",
                            &format!("Started container {c}"),
                        )
                        .await;
                        t.started = true;
                        t.next_start = None;
                        t.start_failures = 0;
                        t.backing_off = None;
                        t.evented = None;
                        state = runtime.state(&id(c)).await;
                    }
                    Err(e) => {
                        let (now_reason, later) = match &e {
                            RuntimeError::Image { image, .. } => (
                                "ErrImagePull",
                                (
                                    "ImagePullBackOff",
                                    format!("Back-off pulling image \"{image}\""),
                                ),
                            ),
                            _ => (
                                "CreateContainerError",
                                ("CreateContainerError", e.to_string()),
                            ),
                        };
                        let delay = backoff
                            .base
                            .saturating_mul(1 << t.start_failures.min(16))
                            .min(backoff.max);
                        t.start_failures += 1;
                        t.next_start = Some(now + delay);
                        t.backing_off = Some((later.0.into(), later.1));
                        waiting_reason = Some((now_reason.into(), e.to_string()));
                    }
                }
            }
            // A waiting state that begins is one Event (kube's BackOff and Failed).
            if let Some((reason, message)) = &waiting_reason {
                if t.evented.as_deref() != Some(reason.as_str()) {
                    t.evented = Some(reason.clone());
                    let (kind, event_reason, text) = match reason.as_str() {
                        "CrashLoopBackOff" => ("Warning", "BackOff", message.clone()),
                        "ImagePullBackOff" => ("Normal", "BackOff", message.clone()),
                        "ErrImagePull" => (
                            "Warning",
                            "Failed",
                            format!("Failed to pull image \"{image}\": {message}"),
                        ),
                        _ => ("Warning", "Failed", format!("Error: {message}")),
                    };
                    note(&pods, &pod, Some(c), kind, event_reason, &text).await;
                }
            }
            let status_state = match (&state, &waiting_reason) {
                (_, Some((reason, message))) => {
                    waiting += 1;
                    json!({"waiting": {"reason": reason, "message": message}})
                }
                (ContainerState::Running { started_at, .. }, None) => {
                    running += 1;
                    json!({"running": {"startedAt": rfc3339(*started_at)}})
                }
                (ContainerState::Exited { exit_code, .. }, None) => {
                    if *exit_code == 0 {
                        succeeded += 1
                    } else {
                        failed += 1
                    }
                    terminated(&state).unwrap_or_default()
                }
                (ContainerState::Unknown, None) => {
                    waiting += 1;
                    json!({"waiting": {"reason": "ContainerCreating"}})
                }
            };
            // Probes of the running instance: readiness gates Ready, liveness restarts.
            let raw = pod
                .pointer(if is_init { INIT } else { MAIN })
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|x| x["name"] == c.as_str()))
                .cloned()
                .unwrap_or(Value::Null);
            let mut ready = status_state.get("running").is_some();
            if let ContainerState::Running { started_at, .. } = &state {
                if t.instance != Some(*started_at) {
                    t.instance = Some(*started_at);
                    t.readiness = ProbeState::default();
                    t.liveness = ProbeState {
                        ok: true,
                        ..Default::default()
                    };
                }
                if let Some(p) = parse_probe(raw.get("livenessProbe"), &raw) {
                    if probe_if_due(&p, &mut t.liveness, *started_at, &runtime, &id(c), &pod_ip)
                        .await
                    {
                        tracing::info!(pod = %name, container = %c, "liveness probe failed; restarting");
                        note(
                            &pods,
                            &pod,
                            Some(c),
                            "Warning",
                            "Unhealthy",
                            "Liveness probe failed",
                        )
                        .await;
                        note(
                            &pods,
                            &pod,
                            Some(c),
                            "Normal",
                            "Killing",
                            &format!("Container {c} failed liveness probe, will be restarted"),
                        )
                        .await;
                        let grace = pod
                            .pointer("/spec/terminationGracePeriodSeconds")
                            .and_then(Value::as_u64)
                            .unwrap_or(30);
                        let _ = runtime.stop(&id(c), Duration::from_secs(grace)).await;
                        ready = false;
                    }
                }
                if let Some(p) = parse_probe(raw.get("readinessProbe"), &raw) {
                    probe_if_due(&p, &mut t.readiness, *started_at, &runtime, &id(c), &pod_ip)
                        .await;
                    ready = ready && t.readiness.ok;
                }
            }
            if ready {
                ready_n += 1;
            }
            let mut cs = json!({
                "name": c, "image": image, "imageID": format!("skiff://{image}"),
                "containerID": format!("skiff://{ns}_{name}_{c}"),
                "ready": ready, "started": status_state.get("running").is_some(), "restartCount": t.restarts, "state": status_state,
            });
            if let Some(last) = &t.last {
                cs["lastState"] = last.clone();
            } else {
                cs["lastState"] = json!({});
            }
            if is_init {
                // Failed for good (restartPolicy Never): the pod fails, the rest never run.
                init_failed = status_state
                    .pointer("/terminated/exitCode")
                    .and_then(Value::as_i64)
                    .is_some_and(|code| code != 0);
                cs["ready"] = json!(false);
                init_statuses.push(cs);
            } else {
                statuses.push(cs);
            }
        }
        if initializing {
            let waiting_for_init = |c: &str, image: &str| {
                json!({"name": c, "image": image, "imageID": "", "ready": false, "started": false,
                    "restartCount": 0, "lastState": {},
                    "state": {"waiting": {"reason": "PodInitializing"}}})
            };
            for (c, image, _) in init_list.iter().skip(init_statuses.len()) {
                init_statuses.push(waiting_for_init(c, image));
            }
            statuses = list
                .iter()
                .map(|(c, image, _)| waiting_for_init(c, image))
                .collect();
            (running, succeeded, failed, ready_n) = (0, 0, 0, 0);
            waiting = list.len();
        }
        let total = list.len();
        let phase = if init_failed {
            "Failed"
        } else if initializing {
            "Pending"
        } else if total > 0 && succeeded == total {
            "Succeeded"
        } else if failed > 0 && running == 0 && waiting == 0 {
            "Failed"
        } else if running > 0 || succeeded + failed > 0 {
            "Running"
        } else {
            "Pending"
        };
        let all_ready = total > 0 && ready_n == total;
        // Each condition keeps the time its status last changed, as the kubelet reports it;
        // a False one says why, in kube's words.
        let unready: Vec<&str> = statuses
            .iter()
            .filter(|c| c["ready"] != true)
            .filter_map(|c| c["name"].as_str())
            .collect();
        let unfinished: Vec<&str> = init_statuses
            .iter()
            .filter(|c| c.pointer("/state/terminated/exitCode") != Some(&json!(0)))
            .filter_map(|c| c["name"].as_str())
            .collect();
        let mut cond = |t: &'static str, ok: bool| {
            let now = crate::api::meta::now();
            let since = match transitions.get(t) {
                Some((was, at)) if *was == ok => at.clone(),
                _ => {
                    transitions.insert(t, (ok, now.clone()));
                    now
                }
            };
            let mut c = json!({"type": t, "status": if ok { "True" } else { "False" },
                "lastProbeTime": null, "lastTransitionTime": since});
            if !ok {
                let (reason, message) = match t {
                    "Initialized" => (
                        "ContainersNotInitialized",
                        format!(
                            "containers with incomplete status: [{}]",
                            unfinished.join(" ")
                        ),
                    ),
                    _ => (
                        "ContainersNotReady",
                        format!("containers with unready status: [{}]", unready.join(" ")),
                    ),
                };
                c["reason"] = json!(reason);
                c["message"] = json!(message);
            }
            c
        };
        let conditions = vec![
            cond("PodScheduled", true),
            cond("Initialized", !initializing),
            cond("ContainersReady", all_ready),
            cond("Ready", all_ready),
        ];
        let mut status = json!({
            "phase": phase,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": start_time,
            "containerStatuses": statuses,
            "conditions": conditions,
        });
        if !init_list.is_empty() {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        if !report(&pods.with_parent(parent), &name, status, &mut last_status).await {
            return;
        }
        // Wake on a spec change, or poll the runtime.
        let _ = tokio::time::timeout(Duration::from_millis(300), spec.changed()).await;
        if spec.has_changed().is_err() {
            return; // the kubelet dropped this worker
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_kubernetes() {
        let env: BTreeMap<String, String> = [("POD_IP".to_string(), "127.10.0.2".to_string())]
            .into_iter()
            .collect();
        assert_eq!(expand("--bind=$(POD_IP)", &env), "--bind=127.10.0.2");
        assert_eq!(
            expand("$$(POD_IP) $(NOPE) $(", &env),
            "$(POD_IP) $(NOPE) $("
        );
        assert_eq!(expand("cost: $5", &env), "cost: $5");
    }

    #[test]
    fn downward_api_fields() {
        let pod = serde_json::json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}}, "spec": {"nodeName": "n1"}});
        assert_eq!(
            field_ref(&pod, "status.podIP", "127.10.0.2", "127.0.0.1"),
            "127.10.0.2"
        );
        assert_eq!(field_ref(&pod, "spec.nodeName", "", ""), "n1");
        assert_eq!(field_ref(&pod, "metadata.labels['app']", "", ""), "web");
    }
}
