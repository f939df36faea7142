//! Table output for `kubectl get`: the `meta.k8s.io/v1` Table with the columns kubectl users
//! know for each kind (priority-1 columns show only with `-o wide`).

use serde_json::{json, Value};

use crate::api::resource::ResourceInfo;
use crate::api::selector::LabelSelector;
use crate::apiserver::kinds;

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

pub fn col(name: &str, kind: &str, priority: u8, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority})
}

/// The `Name` column every kind starts with.
pub fn name_column() -> Value {
    col(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    )
}

/// The `Age` column.
pub fn age_column() -> Value {
    col("Age", "string", 0, "Time since the object was created.")
}

/// The `-o wide` columns of kinds that run pods from a template.
pub fn workload_wide_columns() -> Vec<Value> {
    vec![
        col("Containers", "string", 1, "Container names."),
        col("Images", "string", 1, "Container images."),
        col("Selector", "string", 1, "Label selector of the pods."),
    ]
}

/// The cells of [`workload_wide_columns`].
pub fn workload_wide_cells(obj: &Value) -> Vec<Value> {
    let (names, images) = containers(obj.pointer("/spec/template/spec"));
    vec![json!(names), json!(images), json!(selector(obj))]
}

/// Column definitions of a kind (its strategy's).
pub fn columns(info: &ResourceInfo) -> Vec<Value> {
    kinds::of(info).columns()
}

/// Seconds since an RFC 3339 timestamp.
pub fn since(ts: Option<&str>) -> Option<i64> {
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

pub fn age(obj: &Value) -> String {
    since(
        obj.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str),
    )
    .map(human)
    .unwrap_or_else(|| "<unknown>".into())
}

pub fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

pub fn i(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

pub fn or_none(x: &str) -> String {
    if x.is_empty() {
        "<none>".into()
    } else {
        x.into()
    }
}

pub fn containers(template_spec: Option<&Value>) -> (String, String) {
    let cs = template_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

pub fn selector(obj: &Value) -> String {
    obj.pointer("/spec/selector")
        .and_then(|s| LabelSelector::from_json(s).ok())
        .map(|l| l.to_string())
        .unwrap_or_default()
}

/// The cells of one row (its kind's strategy's).
pub fn cells(info: &ResourceInfo, obj: &Value) -> Vec<Value> {
    kinds::of(info).cells(obj)
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
