//! The controller-ref manager (kube's `ControllerRefManager`): which of the objects in an
//! owner's namespace it controls, which orphans it adopts (they match its selector and no
//! controller holds them), and which it releases (it controls them but they no longer match).
//! It never takes what another controller holds, and an owner being deleted neither adopts
//! nor releases. Pure; [`adopt_patch`] and [`release_patch`] are what the controller sends.

use serde_json::{json, Value};

use crate::api::meta;
use crate::api::selector::LabelSelector;

/// What an owner's controller does with the candidates.
#[derive(Debug, Default)]
pub struct Claim {
    /// Controlled by the owner and still matching: its own.
    pub owned: Vec<Value>,
    /// Orphans that match: to adopt (then its own).
    pub adopt: Vec<Value>,
    /// Controlled by the owner but no longer matching: to release.
    pub release: Vec<Value>,
}

/// The uid of `obj`'s controller, if any.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
}

fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// Sorts `candidates` (objects of the owner's namespace) for `owner` with `selector`.
pub fn claim(owner: &Value, selector: &LabelSelector, candidates: Vec<Value>) -> Claim {
    let uid = meta::uid(owner);
    let owner_deleting = deleting(owner);
    let mut out = Claim::default();
    for obj in candidates {
        let matches = !selector.is_empty() && selector.matches_object(&obj);
        match controller_uid(&obj) {
            Some(c) if c == uid => {
                if matches || owner_deleting {
                    out.owned.push(obj);
                } else if !deleting(&obj) {
                    out.release.push(obj);
                }
            }
            Some(_) => {}
            None => {
                if matches && !owner_deleting && !deleting(&obj) {
                    out.adopt.push(obj);
                }
            }
        }
    }
    out
}

/// The ownerReference a dependent of `owner` carries when `owner` controls it.
pub fn controller_ref(owner: &Value) -> Value {
    json!({"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta::name(owner),
        "uid": meta::uid(owner), "controller": true, "blockOwnerDeletion": true})
}

/// A merge patch adopting `obj` for `owner`, valid only at `obj`'s resourceVersion (a
/// concurrent change makes it fail with 409, and the next reconcile decides again).
pub fn adopt_patch(owner: &Value, obj: &Value) -> Value {
    let mut refs = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    refs.retain(|r| r["uid"] != meta::uid(owner));
    refs.push(controller_ref(owner));
    json!({"metadata": {"ownerReferences": refs, "resourceVersion": meta::resource_version(obj)}})
}

/// A merge patch releasing `obj` from `owner` (its reference to the owner removed), valid
/// only at `obj`'s resourceVersion.
pub fn release_patch(owner: &Value, obj: &Value) -> Value {
    let refs: Vec<Value> = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .filter(|r| r["uid"] != meta::uid(owner))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let refs = if refs.is_empty() {
        Value::Null
    } else {
        json!(refs)
    };
    json!({"metadata": {"ownerReferences": refs, "resourceVersion": meta::resource_version(obj)}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(deleting: bool) -> Value {
        let mut o = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "d", "uid": "rs-1"}});
        if deleting {
            o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        o
    }

    fn pod(name: &str, app: &str, controller: Option<&str>) -> Value {
        let mut p = json!({"metadata": {"name": name, "namespace": "d", "uid": format!("p-{name}"),
            "resourceVersion": "7", "labels": {"app": app}}});
        if let Some(c) = controller {
            p["metadata"]["ownerReferences"] =
                json!([{"kind": "ReplicaSet", "name": "x", "uid": c, "controller": true}]);
        }
        p
    }

    fn names(v: &[Value]) -> Vec<&str> {
        v.iter().map(meta::name).collect()
    }

    #[test]
    fn adopts_matching_orphans_releases_what_no_longer_matches_and_never_steals() {
        let sel = LabelSelector::from_json(&json!({"matchLabels": {"app": "web"}})).unwrap();
        let c = claim(
            &owner(false),
            &sel,
            vec![
                pod("mine", "web", Some("rs-1")),
                pod("relabelled", "db", Some("rs-1")),
                pod("orphan", "web", None),
                pod("stranger", "db", None),
                pod("theirs", "web", Some("rs-2")),
            ],
        );
        assert_eq!(names(&c.owned), ["mine"]);
        assert_eq!(names(&c.adopt), ["orphan"]);
        assert_eq!(names(&c.release), ["relabelled"]);
    }

    #[test]
    fn an_owner_being_deleted_neither_adopts_nor_releases() {
        let sel = LabelSelector::from_json(&json!({"matchLabels": {"app": "web"}})).unwrap();
        let c = claim(
            &owner(true),
            &sel,
            vec![
                pod("relabelled", "db", Some("rs-1")),
                pod("orphan", "web", None),
            ],
        );
        assert_eq!(names(&c.owned), ["relabelled"]);
        assert!(c.adopt.is_empty() && c.release.is_empty());
    }

    #[test]
    fn patches_add_and_remove_the_controller_reference_at_the_seen_version() {
        let o = owner(false);
        let p = pod("orphan", "web", None);
        let a = adopt_patch(&o, &p);
        assert_eq!(a["metadata"]["ownerReferences"][0]["uid"], "rs-1");
        assert_eq!(a["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(a["metadata"]["resourceVersion"], "7");
        let mine = pod("mine", "db", Some("rs-1"));
        let r = release_patch(&o, &mine);
        assert_eq!(r["metadata"]["ownerReferences"], Value::Null);
        assert_eq!(r["metadata"]["resourceVersion"], "7");
    }
}
