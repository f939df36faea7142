//! Events (core/v1, and events.k8s.io/v1 through conversion at the edge): a path-segment
//! name, an `involvedObject` in the Event's namespace, and the columns of `kubectl events`.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta_v1;
use serde_json::{json, Value};

use super::Strategy;
use crate::api::resource::ResourceInfo;
use crate::apiserver::http::table::{col, human, s, since};
use crate::apiserver::validation::*;

/// The `events` strategy.
pub struct Event;

impl Strategy for Event {
    /// The garbage collector does not watch these: no finalizer it would have to remove.
    fn owns_dependents(&self) -> bool {
        false
    }

    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate::<core::Event>(NameRule::PathSegment, info.namespaced, obj, old)
    }

    fn columns(&self) -> Vec<Value> {
        vec![
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
        ]
    }

    /// Reads core fields, or their events.k8s.io names.
    fn cells(&self, obj: &Value) -> Vec<Value> {
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
}

impl Checked for core::Event {
    fn object_meta(&self) -> &meta_v1::ObjectMeta {
        &self.metadata
    }

    fn check(&self, obj: &Value, errs: &mut Errs) {
        validate_event(self, obj, errs);
    }
}

fn validate_event(ev: &core::Event, obj: &Value, errs: &mut Errs) {
    if obj.get("involvedObject").is_none_or(Value::is_null) {
        errs.push(FieldError::required("involvedObject", ""));
        return;
    }
    let ns = ev.metadata.namespace.as_deref().unwrap_or_default();
    let io_ns = ev.involved_object.namespace.as_deref().unwrap_or_default();
    let mismatch = if io_ns.is_empty() {
        if ev.event_time.is_none() {
            !ns.is_empty() && ns != "default"
        } else {
            ns != "default" && ns != "kube-system"
        }
    } else {
        ns != io_ns
    };
    if mismatch {
        errs.push(FieldError::invalid(
            "involvedObject.namespace",
            q(io_ns),
            "does not match event.namespace",
        ));
    }
}
