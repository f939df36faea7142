//! Table output for `kubectl get`: the `meta.k8s.io/v1` Table with the columns kubectl users
//! know for each kind (priority-1 columns show only with `-o wide`).

use serde_json::{json, Value};

use crate::api::resource::ResourceInfo;
use crate::api::selector::LabelSelector;

/// How much of each object rides along in a row (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// Nothing.
    None,
    /// A PartialObjectMetadata (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl Include {
    /// Parses the `includeObject` query parameter.
    pub fn parse(s: Option<&str>) -> Include {
        match s {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

fn col(name: &str, kind: &str, priority: u8, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority})
}

/// Column definitions of a kind.
pub fn columns(info: &ResourceInfo) -> Vec<Value> {
    let name = col(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let age = col("Age", "string", 0, "Time since the object was created.");
    match info.kind {
        "Pod" => vec![
            name,
            col("Ready", "string", 0, "Ready containers / containers."),
            col(
                "Status",
                "string",
                0,
                "The aggregate state of the containers.",
            ),
            col("Restarts", "string", 0, "Container restarts."),
            age,
            col("IP", "string", 1, "The pod's IP address."),
            col("Node", "string", 1, "The node the pod is bound to."),
            col(
                "Nominated Node",
                "string",
                1,
                "The node the pod is nominated for.",
            ),
            col(
                "Readiness Gates",
                "string",
                1,
                "Readiness gates passed / declared.",
            ),
        ],
        "Deployment" => vec![
            name,
            col("Ready", "string", 0, "Ready replicas / desired replicas."),
            col(
                "Up-to-date",
                "integer",
                0,
                "Replicas of the current template.",
            ),
            col("Available", "integer", 0, "Available replicas."),
            age,
            col("Containers", "string", 1, "Container names."),
            col("Images", "string", 1, "Container images."),
            col("Selector", "string", 1, "Label selector of the pods."),
        ],
        "ReplicaSet" => vec![
            name,
            col("Desired", "integer", 0, "Desired replicas."),
            col("Current", "integer", 0, "Observed replicas."),
            col("Ready", "integer", 0, "Ready replicas."),
            age,
            col("Containers", "string", 1, "Container names."),
            col("Images", "string", 1, "Container images."),
            col("Selector", "string", 1, "Label selector of the pods."),
        ],
        "Node" => vec![
            name,
            col(
                "Status",
                "string",
                0,
                "Ready condition and scheduling state.",
            ),
            col("Roles", "string", 0, "Node roles."),
            age,
            col("Version", "string", 0, "Kubelet version."),
            col("Internal-IP", "string", 1, "Internal address."),
            col("External-IP", "string", 1, "External address."),
            col("OS-Image", "string", 1, "Operating system image."),
            col("Kernel-Version", "string", 1, "Kernel version."),
            col("Container-Runtime", "string", 1, "Container runtime."),
        ],
        "Namespace" => vec![
            name,
            col("Status", "string", 0, "Phase of the namespace."),
            age,
        ],
        "Event" => vec![
            col(
                "Last Seen",
                "string",
                0,
                "Time since the event was last seen.",
            ),
            col("Type", "string", 0, "Normal or Warning."),
            col("Reason", "string", 0, "Why the event was emitted."),
            col("Object", "string", 0, "The object the event is about."),
            col("Message", "string", 0, "What happened."),
        ],
        "ConfigMap" => vec![name, col("Data", "integer", 0, "Number of keys."), age],
        "Secret" => vec![
            name,
            col("Type", "string", 0, "Secret type."),
            col("Data", "integer", 0, "Number of keys."),
            age,
        ],
        "Lease" => vec![name, col("Holder", "string", 0, "Current holder."), age],
        _ => vec![name, age],
    }
}

/// Seconds since an RFC 3339 timestamp.
fn since(ts: Option<&str>) -> Option<i64> {
    let t: jiff::Timestamp = ts?.parse().ok()?;
    Some((jiff::Timestamp::now().as_second() - t.as_second()).max(0))
}

/// A duration the way kubectl prints ages (`45s`, `3m12s`, `5h`, `12d`).
pub fn human(secs: i64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        format!("{m}m{}s", secs % 60)
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        format!("{d}d{}h", h % 24)
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y{}d", d / 365, d % 365)
    }
}

fn age(obj: &Value) -> String {
    since(
        obj.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str),
    )
    .map(human)
    .unwrap_or_else(|| "<unknown>".into())
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn i(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(x: &str) -> String {
    if x.is_empty() {
        "<none>".into()
    } else {
        x.into()
    }
}

fn containers(template_spec: Option<&Value>) -> (String, String) {
    let cs = template_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn selector(obj: &Value) -> String {
    obj.pointer("/spec/selector")
        .and_then(|s| LabelSelector::from_json(s).ok())
        .map(|l| l.to_string())
        .unwrap_or_default()
}

/// The pod STATUS column: phase, or the reason a container waits or ended, or Terminating.
fn pod_status(pod: &Value) -> String {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let mut reason = s(pod, "/status/reason").to_string();
    if reason.is_empty() {
        reason = s(pod, "/status/phase").to_string();
    }
    if let Some(cs) = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
    {
        for c in cs.iter().rev() {
            let waiting = s(c, "/state/waiting/reason");
            let terminated = s(c, "/state/terminated/reason");
            if !waiting.is_empty() {
                reason = waiting.into();
            } else if !terminated.is_empty() && c.pointer("/state/running").is_none() {
                reason = terminated.into();
            }
        }
    }
    if reason.is_empty() {
        "Pending".into()
    } else {
        reason
    }
}

/// The cells of one row.
pub fn cells(info: &ResourceInfo, obj: &Value) -> Vec<Value> {
    let name = json!(s(obj, "/metadata/name"));
    match info.kind {
        "Pod" => {
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0);
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = statuses.iter().map(|c| i(c, "/restartCount")).sum();
            let gates = obj
                .pointer("/spec/readinessGates")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0);
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(obj)),
                json!(restarts.to_string()),
                json!(age(obj)),
                json!(or_none(s(obj, "/status/podIP"))),
                json!(or_none(s(obj, "/spec/nodeName"))),
                json!(or_none(s(obj, "/status/nominatedNodeName"))),
                json!(if gates == 0 {
                    "<none>".to_string()
                } else {
                    format!("0/{gates}")
                }),
            ]
        }
        "Deployment" => {
            let (cn, im) = containers(obj.pointer("/spec/template/spec"));
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    i(obj, "/status/readyReplicas"),
                    i(obj, "/spec/replicas")
                )),
                json!(i(obj, "/status/updatedReplicas")),
                json!(i(obj, "/status/availableReplicas")),
                json!(age(obj)),
                json!(cn),
                json!(im),
                json!(selector(obj)),
            ]
        }
        "ReplicaSet" => {
            let (cn, im) = containers(obj.pointer("/spec/template/spec"));
            vec![
                name,
                json!(i(obj, "/spec/replicas")),
                json!(i(obj, "/status/replicas")),
                json!(i(obj, "/status/readyReplicas")),
                json!(age(obj)),
                json!(cn),
                json!(im),
                json!(selector(obj)),
            ]
        }
        "Node" => {
            let ready = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                // As kubectl prints it: a Ready condition that is not True (False, or Unknown
                // once the node stopped reporting) is NotReady; no condition at all, Unknown.
                .map(|c| match s(c, "/status") {
                    "True" => "Ready",
                    _ => "NotReady",
                })
                .unwrap_or("Unknown");
            let mut status = ready.to_string();
            if obj.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let addr = |t: &str| {
                obj.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|x| x["type"] == t))
                    .map(|x| s(x, "/address").to_string())
                    .unwrap_or_default()
            };
            let mut roles: Vec<String> = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            roles.sort();
            vec![
                name,
                json!(status),
                json!(or_none(&roles.join(","))),
                json!(age(obj)),
                json!(s(obj, "/status/nodeInfo/kubeletVersion")),
                json!(or_none(&addr("InternalIP"))),
                json!(or_none(&addr("ExternalIP"))),
                json!(or_none(s(obj, "/status/nodeInfo/osImage"))),
                json!(or_none(s(obj, "/status/nodeInfo/kernelVersion"))),
                json!(or_none(s(obj, "/status/nodeInfo/containerRuntimeVersion"))),
            ]
        }
        "Namespace" => vec![name, json!(s(obj, "/status/phase")), json!(age(obj))],
        "Event" => {
            // Core fields, or their events.k8s.io names.
            let either = |core: &str, v1: &str| {
                let c = s(obj, core);
                if c.is_empty() {
                    s(obj, v1)
                } else {
                    c
                }
            };
            let last = obj
                .pointer("/lastTimestamp")
                .and_then(Value::as_str)
                .or_else(|| {
                    obj.pointer("/deprecatedLastTimestamp")
                        .and_then(Value::as_str)
                })
                .or_else(|| obj.pointer("/eventTime").and_then(Value::as_str))
                .or_else(|| {
                    obj.pointer("/metadata/creationTimestamp")
                        .and_then(Value::as_str)
                });
            vec![
                json!(since(last).map(human).unwrap_or_else(|| "<unknown>".into())),
                json!(s(obj, "/type")),
                json!(s(obj, "/reason")),
                json!(format!(
                    "{}/{}",
                    either("/involvedObject/kind", "/regarding/kind").to_lowercase(),
                    either("/involvedObject/name", "/regarding/name")
                )),
                json!(either("/message", "/note")),
            ]
        }
        "ConfigMap" => {
            let n = ["data", "binaryData"]
                .iter()
                .filter_map(|k| obj.get(*k).and_then(Value::as_object))
                .map(|m| m.len())
                .sum::<usize>();
            vec![name, json!(n), json!(age(obj))]
        }
        "Secret" => {
            let n = obj
                .get("data")
                .and_then(Value::as_object)
                .map(|m| m.len())
                .unwrap_or(0);
            vec![name, json!(s(obj, "/type")), json!(n), json!(age(obj))]
        }
        "Lease" => vec![name, json!(s(obj, "/spec/holderIdentity")), json!(age(obj))],
        _ => vec![name, json!(age(obj))],
    }
}

fn row_object(obj: &Value, include: Include) -> Value {
    match include {
        Include::None => Value::Null,
        Include::Object => obj.clone(),
        Include::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
        }),
    }
}

/// A Table of `objects`; `list_meta` is the list's metadata (resourceVersion, continue).
pub fn table(info: &ResourceInfo, objects: &[Value], list_meta: Value, include: Include) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({"cells": cells(info, o), "object": row_object(o, include)}))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns(info),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resource::lookup;

    #[test]
    fn pod_rows_match_their_columns() {
        let pods = lookup("", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let c = cells(pods, &pod);
        assert_eq!(c.len(), columns(pods).len());
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "3");
        assert_eq!(c[6], "n1");
        for info in crate::api::resource::RESOURCES {
            assert_eq!(
                cells(info, &json!({})).len(),
                columns(info).len(),
                "{}",
                info.kind
            );
        }
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human(45), "45s");
        assert_eq!(human(192), "3m12s");
        assert_eq!(human(1800), "30m");
        assert_eq!(human(5 * 3600 + 120), "5h2m");
        assert_eq!(human(20 * 3600), "20h");
        assert_eq!(human(3 * 86400 + 3600), "3d1h");
        assert_eq!(human(30 * 86400), "30d");
    }
}
