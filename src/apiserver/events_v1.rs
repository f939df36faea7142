//! `events.k8s.io/v1` Events: the same objects as core `v1` Events, stored once (in the
//! core form) and converted at the edge of a call, as kube-apiserver's conversion does. A
//! request for the new group is turned into a core request (body, field selector), served by
//! the registry like any other, and its answer — object, list, or each event of a watch — is
//! turned back.
//!
//! The field renames (kube's `pkg/apis/events/v1` conversion): `regarding` is
//! `involvedObject`, `note` is `message`, `reportingController` is `reportingComponent`, and
//! the `deprecated*` fields are the core `source`, `firstTimestamp`, `lastTimestamp` and
//! `count`; `eventTime`, `series`, `reportingInstance`, `action`, `reason`, `related` and
//! `type` keep their names.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::registry::Registry;
use crate::api::codec;
use crate::api::selector::{FieldRequirement, FieldSelector};
use crate::api::status::{Status, StatusCause};
use crate::api::wire::{PatchType, Request};

/// The group.
pub const GROUP: &str = "events.k8s.io";
/// Its one version's apiVersion.
const API_VERSION: &str = "events.k8s.io/v1";

/// (events.k8s.io/v1 name, core v1 name) of the top-level fields that differ.
const RENAMES: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Whether a request is for `events.k8s.io` Events.
pub fn is_events_v1(req: &Request) -> bool {
    req.group == GROUP && req.resource == "events"
}

/// Moves each top-level field `from` → `to` (a field already named `to` gives way).
fn rename(map: &mut Map<String, Value>, pairs: impl Iterator<Item = (&'static str, &'static str)>) {
    for (from, to) in pairs {
        map.remove(to);
        if let Some(x) = map.remove(from) {
            map.insert(to.into(), x);
        }
    }
}

/// An events.k8s.io/v1 Event as the core v1 Event it stands for.
pub fn to_core(mut v: Value) -> Value {
    if let Some(map) = v.as_object_mut() {
        rename(map, RENAMES.into_iter());
        map.insert("apiVersion".into(), json!("v1"));
    }
    v
}

/// A core v1 Event as events.k8s.io/v1 serves it.
pub fn from_core(mut v: Value) -> Value {
    if let Some(map) = v.as_object_mut() {
        rename(map, RENAMES.into_iter().map(|(new, old)| (old, new)));
        if map.get("kind").and_then(Value::as_str) == Some("Event") {
            map.insert("apiVersion".into(), json!(API_VERSION));
        }
    }
    v
}

/// A field selector on events.k8s.io names, as the core one (`regarding.name=x` is
/// `involvedObject.name=x`). One that does not parse is passed on as it is, for the
/// registry to refuse in its own words.
fn selector_to_core(selector: &str) -> String {
    let Ok(parsed) = FieldSelector::parse(selector) else {
        return selector.to_string();
    };
    let core_name = |field: &str| {
        for (new, old) in RENAMES {
            if let Some(rest) = field.strip_prefix(new) {
                if rest.is_empty() || rest.starts_with('.') {
                    return format!("{old}{rest}");
                }
            }
        }
        field.to_string()
    };
    FieldSelector::from_requirements(
        parsed
            .requirements()
            .iter()
            .map(|r| FieldRequirement::new(core_name(r.field()), r.operator(), r.value())),
    )
    .to_string()
}

/// 422 unless `event` (in the events.k8s.io form) has what that version requires.
fn check(event: &Value) -> Result<(), Status> {
    let causes = required_causes(event);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(Status::invalid(
            GROUP,
            "Event",
            crate::api::meta::name(event),
            causes,
        ))
    }
}

/// What events.k8s.io/v1 requires of an Event it is given (kube's validation for that
/// version), as 422 causes.
fn required_causes(v: &Value) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    let required = |field: &str| StatusCause {
        reason: "FieldValueRequired".into(),
        message: "Required value".into(),
        field: field.into(),
    };
    for field in [
        "eventTime",
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        if text(field).is_empty() {
            causes.push(required(field));
        }
    }
    match text("type") {
        "Normal" | "Warning" => {}
        other => causes.push(StatusCause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {other:?}: supported values: \"Normal\", \"Warning\""
            ),
            field: "type".into(),
        }),
    }
    if text("note").len() > 1024 {
        causes.push(StatusCause {
            reason: "FieldValueTooLong".into(),
            message: "Too long: may not be more than 1024 bytes".into(),
            field: "note".into(),
        });
    }
    causes
}

/// The core request serving an events.k8s.io one: the core group, the body and field
/// selector renamed; a created or replaced Event is first checked as events.k8s.io/v1 checks
/// it.
pub fn core_request(req: &Request) -> Result<Request, Status> {
    let mut core = req.clone();
    core.group = String::new();
    if let Some(sel) = &req.list.field_selector {
        core.list.field_selector = Some(selector_to_core(sel));
    }
    if req.patch_type.is_none() {
        if let Some(body) = &req.body {
            if req.subresource.is_none() {
                check(body)?;
            }
            let av = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
            if !av.is_empty() && av != API_VERSION {
                return Err(Status::bad_request(format!(
                    "the API version in the data ({av}) does not match the resource events ({API_VERSION}, Event)"
                )));
            }
            core.body = Some(to_core(body.clone()));
        }
    }
    Ok(core)
}

/// An answer of the core registry (one Event, a list of them, or a Status) as events.k8s.io
/// gives it.
pub fn answer(bytes: Bytes) -> Result<Bytes, Status> {
    let mut v =
        codec::msgpack_to_value(&bytes).map_err(|e| Status::internal(format!("answer: {e}")))?;
    match v.get("kind").and_then(Value::as_str) {
        Some("EventList") => {
            if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
                for item in items.iter_mut() {
                    *item = from_core(item.take());
                }
            }
            v["apiVersion"] = json!(API_VERSION);
        }
        Some("Event") => v = from_core(v),
        _ => return Ok(bytes),
    }
    codec::value_to_msgpack(&v)
        .map(Bytes::from)
        .map_err(|e| Status::internal(format!("answer: {e}")))
}

/// A patch of an events.k8s.io Event (`req` is its core request, the patch untouched):
/// applied to the Event in that form, checked as that version checks it, then written as the
/// core Event it is, compare-and-swap on the revision it was read at (retried when another
/// write came between, unless the patch pins a resourceVersion). Answers the core form.
pub async fn patch(registry: &Registry, req: &Request) -> Result<Bytes, Status> {
    let patch = req
        .body
        .as_ref()
        .ok_or_else(|| Status::bad_request("a patch body is required"))?;
    let pinned = patch.pointer("/metadata/resourceVersion").is_some();
    for _ in 0..8 {
        let read = Request {
            body: None,
            patch_type: None,
            ..req.clone()
        };
        let current = codec::msgpack_to_value(&registry.get(&read)?)
            .map_err(|e| Status::internal(e.to_string()))?;
        let revision = current
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or_default();
        let mut event = from_core(current);
        super::patch::apply(
            super::patch::RootKind::Other,
            &mut event,
            req.patch_type.unwrap_or(PatchType::Merge),
            patch,
        )?;
        check(&event)?;
        if !pinned {
            event["metadata"]["resourceVersion"] = revision;
        }
        let write = Request {
            body: Some(to_core(event)),
            patch_type: None,
            ..req.clone()
        };
        match registry.update(&write).await {
            Err(s) if !pinned && s.code == 409 && s.message.contains("has been modified") => {
                continue
            }
            answer => return answer,
        }
    }
    Err(Status::conflict(
        GROUP,
        "events",
        req.name.as_deref().unwrap_or(""),
        "too many concurrent changes; retry",
    ))
}

/// One watch event's object, converted (bytes that are not an Event pass unchanged).
pub fn watched(bytes: Bytes) -> Bytes {
    answer(bytes.clone()).unwrap_or(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_event() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e1", "namespace": "default"},
            "eventTime": "2026-12-07T12:00:00.000000Z",
            "reportingController": "example.com/ctl", "reportingInstance": "ctl-1",
            "action": "Reconcile", "reason": "Done", "type": "Normal",
            "regarding": {"kind": "Pod", "name": "web", "namespace": "default"},
            "note": "all good", "deprecatedCount": 3
        })
    }

    #[test]
    fn events_convert_both_ways_as_kube_converts_them() {
        let core = to_core(v1_event());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["message"], "all good");
        assert_eq!(core["reportingComponent"], "example.com/ctl");
        assert_eq!(core["count"], 3);
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        assert_eq!(from_core(core), v1_event());
    }

    #[test]
    fn selectors_and_requirements_follow_the_new_names() {
        assert_eq!(
            selector_to_core("regarding.name=web,type!=Normal,note=x,reason=y"),
            "involvedObject.name=web,message=x,reason=y,type!=Normal"
        );
        // A value that looks like a field is a value.
        assert_eq!(
            selector_to_core(r"reason=a\,regarding.name=b"),
            r"reason=a\,regarding.name=b"
        );
        assert_eq!(selector_to_core("=broken"), "=broken");
        assert!(required_causes(&v1_event()).is_empty());
        let fields: Vec<String> = required_causes(&json!({"type": "Odd"}))
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            [
                "eventTime",
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
                "type"
            ]
        );
    }
}
