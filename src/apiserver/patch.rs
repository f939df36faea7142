//! Strategic merge patch (`application/strategic-merge-patch+json`), the way kube-apiserver
//! applies it.
//!
//! This module owns the whole of the strategic-merge semantics Skiff applies to stored objects:
//! the patch metadata of the served kinds (which lists merge by which key, which merge as sets
//! of primitives, which are replaced wholesale — Kubernetes' `patchStrategy`/`patchMergeKey`
//! tags), and the `$patch`, `$retainKeys`, `$setElementOrder/<field>` and
//! `$deleteFromPrimitiveList/<field>` directives. It works on `serde_json::Value` only: decoding
//! the request, validating the result and storing it belong to the callers. The behaviour
//! follows `k8s.io/apimachinery/pkg/util/strategicpatch`, including the order of merged lists:
//! items named by the patch (or by its `$setElementOrder`) take the patch's order and come first,
//! and items only the server has are slotted back in by their live order — so a container added
//! by a patch without `$setElementOrder` lands in front, as it does in Kubernetes. It departs
//! from Kubernetes on purpose in three places: `$patch: delete` on a nested map removes its key
//! (Kubernetes leaves `{}`); directives inside values new to the object are applied rather than
//! stored, so no directive key ever survives into the result; and `$retainKeys` prunes the
//! merged map instead of refusing a patch that sets a key it does not list. A patch is applied
//! all or nothing, and nothing here panics, whatever JSON it is given.

use serde_json::{Map, Value};

/// Why a strategic merge patch could not be applied (answered as 400 BadRequest / 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

/// A JSON object.
type Object = Map<String, Value>;

/// The key of the `$patch` directive (`merge`, `replace` or `delete`).
const PATCH: &str = "$patch";
/// The key of the directive listing the only keys a map keeps.
const RETAIN_KEYS: &str = "$retainKeys";
/// Prefix of the directive giving the final order of a merged list.
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
/// Prefix of the directive listing values to remove from a list of primitives.
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
/// How deep a patch may nest before it is refused (far beyond any real object).
const MAX_DEPTH: usize = 256;

/// Most operations one JSON patch may have (kube-apiserver's limit).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Most bytes the `copy` operations of one JSON patch may copy, together (kube-apiserver
/// bounds the accumulated copy size the same way, at a few times its largest request body).
pub const MAX_JSON_PATCH_COPIED_BYTES: usize = 3 * 1_572_864;

/// The size of `v` as JSON, counted only up to `budget` (so a huge value costs no more to
/// measure than the budget).
fn encoded_size(v: &Value, budget: usize) -> usize {
    fn walk(v: &Value, left: &mut usize) {
        let add = |left: &mut usize, n: usize| *left = left.saturating_sub(n);
        match v {
            Value::Null | Value::Bool(_) => add(left, 5),
            Value::Number(_) => add(left, 20),
            Value::String(s) => add(left, s.len() + 2),
            Value::Array(a) => {
                add(left, 2 + a.len());
                for x in a {
                    if *left == 0 {
                        return;
                    }
                    walk(x, left);
                }
            }
            Value::Object(m) => {
                add(left, 2 + m.len());
                for (k, x) in m {
                    if *left == 0 {
                        return;
                    }
                    add(left, k.len() + 3);
                    walk(x, left);
                }
            }
        }
    }
    let mut left = budget;
    walk(v, &mut left);
    budget - left
}

/// Applies a patch of any type Kubernetes defines to `obj` in place: a JSON merge patch
/// (RFC 7386), a JSON patch (RFC 6902), or a strategic merge patch. What a malformed patch
/// gets: 400; a JSON patch whose operations cannot be applied: 422.
pub fn apply(
    root: RootKind,
    obj: &mut Value,
    ptype: crate::api::wire::PatchType,
    patch: &Value,
) -> Result<(), crate::api::Status> {
    use crate::api::wire::PatchType;
    use crate::api::Status;
    match ptype {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(Status::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(obj, patch);
            Ok(())
        }
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| Status::bad_request(format!("invalid JSON patch: {e}")))?;
            // On a copy, without json_patch's undo: its undo of a patch that fails part-way
            // is incomplete (a `move` whose target is missing has already removed its
            // source), and for some patches it panics instead ("unable to undo applied
            // patches": found by tests/fuzz.rs) — a request must never crash the server.
            let invalid = |why: String| Status::failure(422, "Invalid", why);
            if p.0.len() > MAX_JSON_PATCH_OPERATIONS {
                return Err(invalid(format!(
                    "the JSON patch has {} operations; at most {MAX_JSON_PATCH_OPERATIONS} are allowed",
                    p.0.len()
                )));
            }
            let mut patched = obj.clone();
            // One operation at a time, so that what `copy` operations add is counted before
            // it is made: a few dozen copies of a subtree into itself would otherwise double
            // the document each time, to gigabytes, before any size check could run.
            let mut copied = 0usize;
            for (i, op) in p.0.iter().enumerate() {
                if let json_patch::PatchOperation::Copy(c) = op {
                    if let Ok(source) = c.from.resolve(&patched) {
                        copied += encoded_size(source, MAX_JSON_PATCH_COPIED_BYTES - copied + 1);
                        if copied > MAX_JSON_PATCH_COPIED_BYTES {
                            return Err(invalid(format!(
                                "the JSON patch copies more than {MAX_JSON_PATCH_COPIED_BYTES} bytes"
                            )));
                        }
                    }
                }
                // kube's JSON patch (evanphx/json-patch) passes a `test` of null against a
                // member that is absent from an object that exists: kube-rs' finalizer
                // helper sends one before it adds the first finalizer.
                if let json_patch::PatchOperation::Test(t) = op {
                    if t.value.is_null()
                        && t.path.resolve(&patched).is_err()
                        && t.path
                            .parent()
                            .and_then(|p| p.resolve(&patched).ok())
                            .is_some_and(Value::is_object)
                    {
                        continue;
                    }
                }
                json_patch::patch_unsafe(&mut patched, std::slice::from_ref(op)).map_err(|e| {
                    invalid(format!(
                        "the JSON patch could not be applied: operation {i}: {}",
                        e.kind
                    ))
                })?;
            }
            *obj = patched;
            Ok(())
        }
        PatchType::Apply => Err(Status::failure(
            415,
            "UnsupportedMediaType",
            "server-side apply is not supported here; apply the object itself".to_string(),
        )),
        PatchType::Strategic => strategic_merge(root, obj, patch)
            .map_err(|e| Status::bad_request(format!("strategic merge patch: {e}"))),
    }
}

/// Applies `patch` to `original` in place, using the merge keys Kubernetes declares for the
/// built-in kinds Skiff serves (Pod, Deployment, ReplicaSet, Node, Namespace, Event, Lease,
/// ConfigMap, Secret). `kind` is the object's Kind (e.g. "Deployment") — use it where a field
/// name alone is ambiguous.
///
/// On error `original` is left untouched. Kinds without patch metadata here (Event, Lease,
/// ConfigMap, Secret, anything unknown) still merge `metadata` by its rules; their other lists
/// are replaced wholesale.
pub fn strategic_merge(
    root: RootKind,
    original: &mut serde_json::Value,
    patch: &serde_json::Value,
) -> Result<(), PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError(format!(
            "a strategic merge patch must be a JSON object, not {}",
            describe(patch)
        )));
    };
    let base = match original {
        Value::Object(map) => map.clone(),
        _ => Object::new(),
    };
    let merged = merge_map(base, patch, Schema::Root(root), 0)?.unwrap_or_default();
    *original = Value::Object(merged);
    Ok(())
}

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// No patch strategy: the patch's list replaces the original one.
    Replace,
    /// `patchStrategy:"merge"` on a list of primitives: a set union.
    MergePrimitives,
    /// `patchStrategy:"merge"` with a `patchMergeKey`: maps merged element-wise by that key.
    MergeByKey(&'static str),
}

/// The kind of a top-level object, as far as its patch metadata goes (a kind's strategy says
/// which it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    Pod,
    Node,
    Namespace,
    /// Kinds whose `spec.template` is a pod template and whose status has typed conditions.
    Workload,
    PodTemplate,
    /// Everything else: only `metadata` has patch metadata.
    Other,
}

/// How server-side apply treats a list (`x-kubernetes-list-type`), as kube's OpenAPI declares
/// it for the same fields the strategic merge metadata names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole, owned as one field.
    Atomic,
    /// A set of scalars, each owned on its own (`v:<value>`).
    Set,
    /// Items identified by these key fields (`x-kubernetes-list-map-keys`), each owned and
    /// merged on its own (`k:{...}`).
    Map(&'static [&'static str]),
}

/// The Kubernetes type of the map being merged, reduced to what patch metadata needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// A type without merge lists (or one not known here): every list is replaced.
    Unknown,
    Root(RootKind),
    ObjectMeta,
    PodTemplateSpec,
    JobTemplateSpec,
    PodSpec,
    /// Container and EphemeralContainer.
    Container,
    PodStatus,
    NodeSpec,
    NodeStatus,
    /// DeploymentSpec, ReplicaSetSpec and the other workload specs.
    WorkloadSpec,
    /// A status whose only merge list is `conditions` keyed by `type`.
    ConditionsStatus,
    /// A custom object: its CRD version's `openAPIV3Schema` (leaked with its strategy).
    CustomRoot(&'static Value),
    /// A node of a custom object's schema: list types come from `x-kubernetes-list-type` and
    /// `x-kubernetes-list-map-keys`, lists without one being atomic, as kube treats CRDs.
    Custom(&'static Value),
}

/// The schema of field `name` of a custom schema node (of each item, for a list): a
/// property, or the values of a map.
fn custom_field(s: &'static Value, name: &str) -> Option<&'static Value> {
    let p = s
        .get("properties")
        .and_then(|p| p.get(name))
        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))?;
    Some(match p.get("type").and_then(Value::as_str) {
        Some("array") => p.get("items")?,
        _ => p,
    })
}

/// How a custom schema node's list field `name` is merged and owned.
fn custom_list_type(s: &'static Value, name: &str) -> ListType {
    let Some(p) = s
        .get("properties")
        .and_then(|p| p.get(name))
        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
    else {
        return ListType::Atomic;
    };
    match p.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListType::Set,
        Some("map") => ListType::Map(interned_keys(p.get("x-kubernetes-list-map-keys"))),
        _ => ListType::Atomic,
    }
}

/// A map list's keys as `ListType::Map` holds them: each distinct key list leaked once.
fn interned_keys(keys: Option<&Value>) -> &'static [&'static str] {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static KEYS: OnceLock<Mutex<HashMap<Vec<String>, &'static [&'static str]>>> = OnceLock::new();
    let keys: Vec<String> = keys
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let mut map = KEYS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.entry(keys).or_insert_with_key(|k| {
        let leaked: Vec<&'static str> = k
            .iter()
            .map(|s| &*Box::leak(s.clone().into_boxed_str()))
            .collect();
        Box::leak(leaked.into_boxed_slice())
    })
}

impl Schema {
    /// The schema of a top-level object.
    pub fn of(root: RootKind) -> Schema {
        Schema::Root(root)
    }

    /// How server-side apply merges and owns list field `name` of this type. The map keys are
    /// kube's `x-kubernetes-list-map-keys`, which for two lists name more fields than the
    /// strategic merge key.
    pub fn list_type(self, name: &str) -> ListType {
        match (self, name) {
            (Schema::CustomRoot(s) | Schema::Custom(s), _) => custom_list_type(s, name),
            (Schema::PodSpec, "topologySpreadConstraints") => {
                ListType::Map(&["topologyKey", "whenUnsatisfiable"])
            }
            (Schema::Container, "ports") => ListType::Map(&["containerPort", "protocol"]),
            _ => match self.list_strategy(name) {
                ListStrategy::Replace => ListType::Atomic,
                ListStrategy::MergePrimitives => ListType::Set,
                ListStrategy::MergeByKey("name") => ListType::Map(&["name"]),
                ListStrategy::MergeByKey("uid") => ListType::Map(&["uid"]),
                ListStrategy::MergeByKey("ip") => ListType::Map(&["ip"]),
                ListStrategy::MergeByKey("type") => ListType::Map(&["type"]),
                ListStrategy::MergeByKey("mountPath") => ListType::Map(&["mountPath"]),
                ListStrategy::MergeByKey("devicePath") => ListType::Map(&["devicePath"]),
                ListStrategy::MergeByKey(_) => ListType::Atomic,
            },
        }
    }

    /// The OpenAPI extensions of list field `name` of this type, as kube publishes them:
    /// `x-kubernetes-list-type` (and `-list-map-keys`) for server-side apply, and
    /// `x-kubernetes-patch-strategy`/`-patch-merge-key` for strategic merge patches.
    pub fn list_extensions(self, name: &str) -> serde_json::Map<String, Value> {
        let mut ext = serde_json::Map::new();
        match self.list_type(name) {
            ListType::Atomic => {
                ext.insert("x-kubernetes-list-type".into(), "atomic".into());
            }
            ListType::Set => {
                ext.insert("x-kubernetes-list-type".into(), "set".into());
            }
            ListType::Map(keys) => {
                ext.insert("x-kubernetes-list-type".into(), "map".into());
                ext.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(keys));
            }
        }
        match self.list_strategy(name) {
            ListStrategy::Replace => {}
            ListStrategy::MergePrimitives => {
                ext.insert("x-kubernetes-patch-strategy".into(), "merge".into());
            }
            ListStrategy::MergeByKey(key) => {
                ext.insert("x-kubernetes-patch-strategy".into(), "merge".into());
                ext.insert("x-kubernetes-patch-merge-key".into(), key.into());
            }
        }
        ext
    }

    /// The OpenAPI definitions whose list fields carry patch metadata, with their schema here.
    pub fn openapi_definitions() -> &'static [(&'static str, Schema)] {
        &[
            (
                "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                Schema::ObjectMeta,
            ),
            ("io.k8s.api.core.v1.PodSpec", Schema::PodSpec),
            ("io.k8s.api.core.v1.Container", Schema::Container),
            ("io.k8s.api.core.v1.EphemeralContainer", Schema::Container),
            ("io.k8s.api.core.v1.PodStatus", Schema::PodStatus),
            ("io.k8s.api.core.v1.NodeSpec", Schema::NodeSpec),
            ("io.k8s.api.core.v1.NodeStatus", Schema::NodeStatus),
            (
                "io.k8s.api.core.v1.NamespaceStatus",
                Schema::ConditionsStatus,
            ),
            (
                "io.k8s.api.apps.v1.DeploymentStatus",
                Schema::ConditionsStatus,
            ),
            (
                "io.k8s.api.apps.v1.ReplicaSetStatus",
                Schema::ConditionsStatus,
            ),
        ]
    }

    /// The schema of the map held by field `name` (or of the elements of list `name`).
    pub fn field(self, name: &str) -> Schema {
        use RootKind as K;
        match (self, name) {
            (Schema::CustomRoot(_), "metadata") => Schema::ObjectMeta,
            (Schema::CustomRoot(s) | Schema::Custom(s), _) => {
                custom_field(s, name).map_or(Schema::Unknown, Schema::Custom)
            }
            (Schema::Root(_) | Schema::PodTemplateSpec | Schema::JobTemplateSpec, "metadata") => {
                Schema::ObjectMeta
            }
            (Schema::Root(K::Pod) | Schema::PodTemplateSpec, "spec") => Schema::PodSpec,
            (Schema::Root(K::Pod), "status") => Schema::PodStatus,
            (Schema::Root(K::Node), "spec") => Schema::NodeSpec,
            (Schema::Root(K::Node), "status") => Schema::NodeStatus,
            (Schema::Root(K::Namespace | K::Workload), "status") => Schema::ConditionsStatus,
            (Schema::Root(K::Workload) | Schema::JobTemplateSpec, "spec") => Schema::WorkloadSpec,
            (Schema::Root(K::PodTemplate) | Schema::WorkloadSpec, "template") => {
                Schema::PodTemplateSpec
            }
            (Schema::WorkloadSpec, "jobTemplate") => Schema::JobTemplateSpec,
            (Schema::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
                Schema::Container
            }
            _ => Schema::Unknown,
        }
    }

    /// How list field `name` of this type is patched.
    fn list_strategy(self, name: &str) -> ListStrategy {
        use ListStrategy::{MergeByKey, MergePrimitives, Replace};
        match (self, name) {
            (Schema::ObjectMeta, "finalizers") => MergePrimitives,
            (Schema::ObjectMeta, "ownerReferences") => MergeByKey("uid"),
            (
                Schema::PodSpec,
                "containers"
                | "initContainers"
                | "ephemeralContainers"
                | "volumes"
                | "imagePullSecrets"
                | "resourceClaims"
                | "schedulingGates",
            ) => MergeByKey("name"),
            (Schema::PodSpec, "hostAliases") => MergeByKey("ip"),
            (Schema::PodSpec, "topologySpreadConstraints") => MergeByKey("topologyKey"),
            (Schema::Container, "ports") => MergeByKey("containerPort"),
            (Schema::Container, "env") => MergeByKey("name"),
            (Schema::Container, "volumeMounts") => MergeByKey("mountPath"),
            (Schema::Container, "volumeDevices") => MergeByKey("devicePath"),
            (Schema::PodStatus | Schema::NodeStatus | Schema::ConditionsStatus, "conditions") => {
                MergeByKey("type")
            }
            (Schema::PodStatus, "podIPs" | "hostIPs") => MergeByKey("ip"),
            (Schema::PodStatus, "resourceClaimStatuses") => MergeByKey("name"),
            (Schema::NodeSpec, "podCIDRs") => MergePrimitives,
            (Schema::NodeStatus, "addresses") => MergeByKey("type"),
            _ => Replace,
        }
    }
}

/// What a `$patch` directive asks of a list element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementDirective {
    Merge,
    Replace,
    Delete,
}

/// Merges `patch` into `original`; `None` means the patch deleted the whole map.
fn merge_map(
    original: Object,
    patch: &Object,
    schema: Schema,
    depth: usize,
) -> Result<Option<Object>, PatchError> {
    let Some(directive) = patch.get(PATCH) else {
        return merge_fields(original, patch, schema, depth).map(Some);
    };
    match directive.as_str() {
        Some("merge") => merge_fields(original, patch, schema, depth).map(Some),
        Some("replace") => merge_fields(Object::new(), patch, schema, depth).map(Some),
        Some("delete") => Ok(None),
        _ => Err(bad_patch_directive(directive)),
    }
}

/// Merges the fields of `patch` into `original`, applying the map-level directives other
/// than `$patch` (which the caller has handled and which is skipped here).
fn merge_fields(
    mut original: Object,
    patch: &Object,
    schema: Schema,
    depth: usize,
) -> Result<Object, PatchError> {
    if depth > MAX_DEPTH {
        return Err(PatchError("the patch is nested too deeply".to_owned()));
    }
    let mut retain: Option<Vec<&str>> = None;
    let mut orders: Vec<(&str, &[Value])> = Vec::new();
    let mut deletions: Vec<(&str, &[Value])> = Vec::new();
    for (key, value) in patch {
        if key == PATCH {
            continue;
        }
        if key == RETAIN_KEYS {
            retain = Some(retain_keys(value)?);
        } else if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
            orders.push((directive_field(key, field)?, directive_list(key, value)?));
        } else if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            deletions.push((directive_field(key, field)?, directive_list(key, value)?));
        } else if key.starts_with('$') {
            return Err(PatchError(format!(
                "unknown strategic merge patch directive {key:?}"
            )));
        }
    }

    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        let order = orders
            .iter()
            .find(|(field, _)| field == key)
            .map(|&(_, order)| order);
        merge_field(&mut original, key, value, schema, order, depth)?;
    }

    // A `$setElementOrder` without its list in the patch only reorders the live list.
    for &(field, order) in &orders {
        let strategy = schema.list_strategy(field);
        if patch.contains_key(field) || strategy == ListStrategy::Replace {
            continue;
        }
        if let Some(Value::Array(items)) = original.get_mut(field) {
            let live = std::mem::take(items);
            *items = merge_list(
                live,
                &[],
                strategy,
                schema.field(field),
                field,
                Some(order),
                depth + 1,
            )?;
        }
    }

    for &(field, doomed) in &deletions {
        if let Some(Value::Array(items)) = original.get_mut(field) {
            items.retain(|item| !doomed.iter().any(|gone| json_eq(item, gone)));
        }
    }

    if let Some(keep) = retain {
        original.retain(|key, _| keep.contains(&key.as_str()));
    }
    Ok(original)
}

/// Merges the patch value of field `key` into `target`, `order` being the field's
/// `$setElementOrder` list if the patch has one.
fn merge_field(
    target: &mut Object,
    key: &str,
    patch: &Value,
    parent: Schema,
    order: Option<&[Value]>,
    depth: usize,
) -> Result<(), PatchError> {
    let merged = match patch {
        Value::Null => None,
        Value::Object(patch_map) => {
            let base = match target.get_mut(key) {
                Some(Value::Object(map)) => std::mem::take(map),
                _ => Object::new(),
            };
            merge_map(base, patch_map, parent.field(key), depth + 1)?.map(Value::Object)
        }
        Value::Array(patch_items) => {
            let base = match target.get_mut(key) {
                Some(Value::Array(items)) => std::mem::take(items),
                _ => Vec::new(),
            };
            let strategy = parent.list_strategy(key);
            let element = parent.field(key);
            let merged = merge_list(base, patch_items, strategy, element, key, order, depth + 1)?;
            Some(Value::Array(merged))
        }
        scalar => Some(scalar.clone()),
    };
    match merged {
        Some(value) => match target.get_mut(key) {
            Some(slot) => *slot = value,
            None => {
                target.insert(key.to_owned(), value);
            }
        },
        // `retain` rather than `remove`, which would reorder a map kept in insertion order.
        None => target.retain(|existing, _| existing != key),
    }
    Ok(())
}

/// Merges list `patch` into list `original` (the value of field `field`).
fn merge_list(
    original: Vec<Value>,
    patch: &[Value],
    strategy: ListStrategy,
    element: Schema,
    field: &str,
    order: Option<&[Value]>,
    depth: usize,
) -> Result<Vec<Value>, PatchError> {
    if depth > MAX_DEPTH {
        return Err(PatchError("the patch is nested too deeply".to_owned()));
    }
    match strategy {
        ListStrategy::Replace => replacement_list(patch, element, field, depth),
        ListStrategy::MergePrimitives => merge_primitive_list(original, patch, field, order),
        ListStrategy::MergeByKey(key) => {
            merge_keyed_list(original, patch, key, element, field, order, depth)
        }
    }
}

/// The list that replaces a list without merge strategy: the patch's elements, with their
/// directives applied against nothing (`$patch: delete`/`replace` marker elements dropped).
fn replacement_list(
    patch: &[Value],
    element: Schema,
    field: &str,
    depth: usize,
) -> Result<Vec<Value>, PatchError> {
    if depth > MAX_DEPTH {
        return Err(PatchError("the patch is nested too deeply".to_owned()));
    }
    let mut result = Vec::with_capacity(patch.len());
    for item in patch {
        match item {
            Value::Object(map) => {
                if element_directive(map, field)? != ElementDirective::Merge {
                    continue;
                }
                if let Some(merged) = merge_map(Object::new(), map, element, depth + 1)? {
                    result.push(Value::Object(merged));
                }
            }
            Value::Array(inner) => result.push(Value::Array(replacement_list(
                inner,
                Schema::Unknown,
                field,
                depth + 1,
            )?)),
            scalar => result.push(scalar.clone()),
        }
    }
    Ok(result)
}

/// Merges a list of primitives as a set: the union of both, without duplicates.
fn merge_primitive_list(
    original: Vec<Value>,
    patch: &[Value],
    field: &str,
    order: Option<&[Value]>,
) -> Result<Vec<Value>, PatchError> {
    if let Some(item) = original
        .iter()
        .chain(patch)
        .find(|item| item.is_object() || item.is_array())
    {
        return Err(PatchError(format!(
            "list {field:?} is merged as a set of primitive values, but holds {}",
            describe(item)
        )));
    }
    let mut live: Vec<Value> = Vec::with_capacity(original.len());
    for item in original {
        if !live.iter().any(|seen| json_eq(seen, &item)) {
            live.push(item);
        }
    }
    let mut merged = live.clone();
    for item in patch {
        if !merged.iter().any(|seen| json_eq(seen, item)) {
            merged.push(item.clone());
        }
    }
    Ok(reorder(merged, order.unwrap_or(patch), &live, None))
}

/// Merges a list of maps element-wise by merge key `key`.
fn merge_keyed_list(
    mut original: Vec<Value>,
    patch: &[Value],
    key: &str,
    element: Schema,
    field: &str,
    order: Option<&[Value]>,
    depth: usize,
) -> Result<Vec<Value>, PatchError> {
    if let Some(item) = original.iter().find(|item| !item.is_object()) {
        return Err(PatchError(format!(
            "list {field:?} is merged by {key:?}, but the object holds {} in it",
            describe(item)
        )));
    }

    let mut replace = false;
    let mut updates: Vec<(&Value, &Object)> = Vec::with_capacity(patch.len());
    for item in patch {
        let Value::Object(map) = item else {
            return Err(PatchError(format!(
                "list {field:?} is merged by {key:?}, but the patch holds {} in it",
                describe(item)
            )));
        };
        let directive = element_directive(map, field)?;
        if directive == ElementDirective::Replace {
            replace = true;
            continue;
        }
        let Some(wanted) = map.get(key) else {
            return Err(missing_merge_key(field, key));
        };
        if directive == ElementDirective::Delete {
            original.retain(|live| !live.get(key).is_some_and(|have| json_eq(have, wanted)));
        } else {
            updates.push((wanted, map));
        }
    }
    if replace {
        original.clear();
    }

    let live: Vec<Value> = original
        .iter()
        .filter_map(|item| item.get(key).cloned())
        .collect();
    for &(wanted, update) in &updates {
        let found = original
            .iter()
            .position(|live| live.get(key).is_some_and(|have| json_eq(have, wanted)));
        match found {
            Some(index) => {
                let base = match &mut original[index] {
                    Value::Object(map) => std::mem::take(map),
                    _ => Object::new(),
                };
                match merge_map(base, update, element, depth + 1)? {
                    Some(merged) => original[index] = Value::Object(merged),
                    None => {
                        original.remove(index);
                    }
                }
            }
            None => {
                if let Some(merged) = merge_map(Object::new(), update, element, depth + 1)? {
                    original.push(Value::Object(merged));
                }
            }
        }
    }

    let order: Vec<Value> = match order {
        Some(entries) => entries
            .iter()
            .map(|entry| entry.get(key).cloned())
            .collect::<Option<_>>()
            .ok_or_else(|| {
                PatchError(format!(
                    "every entry of {SET_ELEMENT_ORDER}{field} must be an object with merge key {key:?}"
                ))
            })?,
        None => updates.iter().map(|&(wanted, _)| wanted.clone()).collect(),
    };
    Ok(reorder(original, &order, &live, Some(key)))
}

/// Puts a merged list in Kubernetes' order. `order` holds the identities (merge-key values, or
/// the values themselves for primitives) whose order the patch sets, `live` those of the list
/// before the patch. Items named in `order` come in that order; the others keep their relative
/// order and are slotted in before the first named item that follows them in the live list.
fn reorder(merged: Vec<Value>, order: &[Value], live: &[Value], key: Option<&str>) -> Vec<Value> {
    let mut named: Vec<(usize, Value)> = Vec::with_capacity(merged.len());
    let mut server_only: Vec<Value> = Vec::new();
    for item in merged {
        match position_in(order, &item, key) {
            Some(index) => named.push((index, item)),
            None => server_only.push(item),
        }
    }
    named.sort_by_key(|&(index, _)| index);

    let mut result = Vec::with_capacity(named.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = named.into_iter().map(|(_, item)| item).peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (position_in(live, l, key), position_in(live, r, key)),
                (Some(a), Some(b)) if a < b
            ),
        };
        result.extend(if take_left { left.next() } else { right.next() });
    }
    result
}

/// Where the identity of `item` (its merge-key value, or itself without a key) is in `list`.
fn position_in(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    let identity = match key {
        Some(key) => item.get(key)?,
        None => item,
    };
    list.iter().position(|entry| json_eq(entry, identity))
}

/// The `$patch` directive of a list element.
fn element_directive(map: &Object, field: &str) -> Result<ElementDirective, PatchError> {
    match map.get(PATCH) {
        None => Ok(ElementDirective::Merge),
        Some(directive) => match directive.as_str() {
            Some("merge") => Ok(ElementDirective::Merge),
            Some("replace") => Ok(ElementDirective::Replace),
            Some("delete") => Ok(ElementDirective::Delete),
            _ => Err(PatchError(format!(
                "{} in an element of list {field:?}",
                bad_patch_directive(directive)
            ))),
        },
    }
}

/// The keys of a `$retainKeys` directive.
fn retain_keys(value: &Value) -> Result<Vec<&str>, PatchError> {
    let bad = || PatchError(format!("{RETAIN_KEYS} must be a list of field names"));
    value
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|key| key.as_str().ok_or_else(bad))
        .collect()
}

/// The field named after the prefix of a list directive.
fn directive_field<'a>(key: &str, field: &'a str) -> Result<&'a str, PatchError> {
    if field.is_empty() || field.starts_with('$') {
        return Err(PatchError(format!(
            "directive {key:?} does not name a field"
        )));
    }
    Ok(field)
}

/// The list a list directive carries.
fn directive_list<'a>(key: &str, value: &'a Value) -> Result<&'a [Value], PatchError> {
    value.as_array().map(Vec::as_slice).ok_or_else(|| {
        PatchError(format!(
            "directive {key:?} must be a list, not {}",
            describe(value)
        ))
    })
}

fn bad_patch_directive(directive: &Value) -> PatchError {
    PatchError(format!(
        "unknown {PATCH} directive {directive}: expected \"merge\", \"replace\" or \"delete\""
    ))
}

fn missing_merge_key(field: &str, key: &str) -> PatchError {
    PatchError(format!(
        "an element of list {field:?} in the patch lacks its merge key {key:?}"
    ))
}

/// JSON equality where numbers compare by value (`80` equals `80.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if x == y)
            }
        }
        _ => a == b,
    }
}

/// A short description of a JSON value's type, for error messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Applies `patch`, checking that no directive key survives into the result.
    /// The patch metadata of the kinds these tests use, as their strategies give it.
    fn rk(kind: &str) -> RootKind {
        let info = crate::api::resource::RESOURCES
            .iter()
            .find(|r| r.kind == kind)
            .expect("a served kind");
        crate::apiserver::kinds::of(info).patch_root()
    }

    fn apply(kind: &str, original: Value, patch: Value) -> Value {
        let mut object = original;
        strategic_merge(rk(kind), &mut object, &patch).expect("patch applies");
        assert_no_directives(&object);
        object
    }

    fn assert_no_directives(value: &Value) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    assert!(!key.starts_with('$'), "directive {key} left in {value}");
                    assert_no_directives(child);
                }
            }
            Value::Array(items) => items.iter().for_each(assert_no_directives),
            _ => {}
        }
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array()
            .expect("a list")
            .iter()
            .map(|item| item["name"].as_str().expect("a name"))
            .collect()
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "web",
                            "image": "nginx:1.25",
                            "args": ["--port", "80"],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "env": [{"name": "MODE", "value": "prod"}, {"name": "DEBUG", "value": "1"}],
                            "resources": {"limits": {"cpu": "500m"}}
                        }],
                        "tolerations": [{"key": "a", "operator": "Exists"}]
                    }
                }
            },
            "status": {
                "conditions": [
                    {"type": "Available", "status": "True"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
                ]
            }
        })
    }

    fn containers(object: &Value) -> &Value {
        &object["spec"]["template"]["spec"]["containers"]
    }

    fn node() -> Value {
        json!({
            "kind": "Node",
            "metadata": {"name": "n1"},
            "spec": {"podCIDR": "10.0.0.0/24", "podCIDRs": ["10.0.0.0/24"]},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "KubeletNotReady"},
                    {"type": "MemoryPressure", "status": "False"}
                ],
                "addresses": [{"type": "InternalIP", "address": "10.1.1.1"}]
            }
        })
    }

    #[test]
    fn a_json_patch_test_of_null_passes_for_an_absent_member_as_kube_s_does() {
        use crate::api::wire::PatchType;
        // kube-rs' finalizer(): test that finalizers are absent, then add the first one.
        let mut cm = json!({"metadata": {"name": "c"}});
        let patch = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}
        ]);
        super::apply(RootKind::Other, &mut cm, PatchType::Json, &patch).unwrap();
        assert_eq!(cm["metadata"]["finalizers"], json!(["x"]));
        // Present: the test fails; a missing parent fails too; a non-null test of an absent
        // member fails.
        for (path, value) in [
            ("/metadata/finalizers", json!(null)),
            ("/spec/missing", json!(null)),
            ("/metadata/labels", json!({})),
        ] {
            let mut obj = cm.clone();
            let patch = json!([{"op": "test", "path": path, "value": value}]);
            let e = super::apply(RootKind::Other, &mut obj, PatchType::Json, &patch).unwrap_err();
            assert_eq!(e.code, 422, "{path}: {e:?}");
            assert_eq!(obj, cm);
        }
    }

    #[test]
    fn kubectl_apply_image_change_keeps_the_other_container_fields() {
        let patch = json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"web"}],"containers":[{"image":"nginx:1.27","name":"web"}]}}}});
        let result = apply("Deployment", deployment(), patch);
        let mut expected = deployment();
        expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.27");
        assert_eq!(result, expected);
    }

    #[test]
    fn kubectl_apply_adds_a_container_in_the_given_order() {
        let patch = json!({"spec":{"template":{"spec":{
            "$setElementOrder/containers":[{"name":"web"},{"name":"sidecar"}],
            "containers":[{"name":"sidecar","image":"envoy:1"}]
        }}}});
        let result = apply("Deployment", deployment(), patch);
        assert_eq!(names(containers(&result)), ["web", "sidecar"]);
        assert_eq!(
            containers(&result)[1],
            json!({"name":"sidecar","image":"envoy:1"})
        );
        assert_eq!(containers(&result)[0]["image"], "nginx:1.25");
    }

    #[test]
    fn a_container_added_without_element_order_goes_first_as_in_kubernetes() {
        let patch = json!({"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"envoy:1"}]}}}});
        let result = apply("Deployment", deployment(), patch);
        assert_eq!(names(containers(&result)), ["sidecar", "web"]);
    }

    #[test]
    fn kubectl_apply_removes_a_container() {
        let two = apply(
            "Deployment",
            deployment(),
            json!({"spec":{"template":{"spec":{
                "$setElementOrder/containers":[{"name":"web"},{"name":"sidecar"}],
                "containers":[{"name":"sidecar","image":"envoy:1"}]
            }}}}),
        );
        let patch = json!({"spec":{"template":{"spec":{
            "$setElementOrder/containers":[{"name":"web"}],
            "containers":[{"$patch":"delete","name":"sidecar"}]
        }}}});
        let result = apply("Deployment", two, patch);
        assert_eq!(result, deployment());
    }

    #[test]
    fn patch_delete_removes_an_env_var() {
        let patch = json!({"spec":{"template":{"spec":{"containers":[
            {"name":"web","env":[{"$patch":"delete","name":"DEBUG"}]}
        ]}}}});
        let result = apply("Deployment", deployment(), patch);
        assert_eq!(
            containers(&result)[0]["env"],
            json!([{"name":"MODE","value":"prod"}])
        );
        assert_eq!(containers(&result)[0]["image"], "nginx:1.25");
    }

    #[test]
    fn env_vars_merge_by_name() {
        let patch = json!({"spec":{"template":{"spec":{"containers":[
            {"name":"web","env":[{"name":"DEBUG","value":"0"}]}
        ]}}}});
        let result = apply("Deployment", deployment(), patch);
        assert_eq!(
            containers(&result)[0]["env"],
            json!([{"name":"MODE","value":"prod"},{"name":"DEBUG","value":"0"}])
        );
    }

    #[test]
    fn retain_keys_switches_rolling_update_to_recreate() {
        for patch in [
            json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}}),
            json!({"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":null,"type":"Recreate"}}}),
        ] {
            let result = apply("Deployment", deployment(), patch);
            assert_eq!(result["spec"]["strategy"], json!({"type":"Recreate"}));
            assert_eq!(result["spec"]["replicas"], 3);
        }
    }

    #[test]
    fn null_deletes_a_label() {
        let result = apply(
            "Deployment",
            deployment(),
            json!({"metadata":{"labels":{"tier":null,"new":"x"}}}),
        );
        assert_eq!(result["metadata"]["labels"], json!({"app":"web","new":"x"}));
    }

    #[test]
    fn cordon_and_uncordon_a_node() {
        let cordoned = apply("Node", node(), json!({"spec":{"unschedulable":true}}));
        assert_eq!(cordoned["spec"]["unschedulable"], true);
        assert_eq!(cordoned["spec"]["podCIDR"], "10.0.0.0/24");
        let uncordoned = apply("Node", cordoned, json!({"spec":{"unschedulable":null}}));
        assert_eq!(uncordoned, node());
    }

    #[test]
    fn finalizers_merge_as_a_set_and_can_be_removed() {
        let pod = json!({"kind":"Pod","metadata":{"name":"p","finalizers":["a","b"]}});
        let added = apply("Pod", pod, json!({"metadata":{"finalizers":["b","c"]}}));
        assert_eq!(added["metadata"]["finalizers"], json!(["a", "b", "c"]));

        let removed = apply(
            "Pod",
            added,
            json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a","zzz"]}}),
        );
        assert_eq!(removed["metadata"]["finalizers"], json!(["b", "c"]));

        // What kubectl apply sends: the wanted order, the additions and the removals together.
        let applied = apply(
            "Pod",
            removed,
            json!({"metadata":{
                "$setElementOrder/finalizers":["d","b"],
                "finalizers":["d"],
                "$deleteFromPrimitiveList/finalizers":["c"]
            }}),
        );
        assert_eq!(applied["metadata"]["finalizers"], json!(["d", "b"]));
    }

    #[test]
    fn namespace_spec_finalizers_are_replaced_not_merged() {
        let ns = json!({"kind":"Namespace","metadata":{"name":"n","finalizers":["x"]},"spec":{"finalizers":["kubernetes"]}});
        let result = apply(
            "Namespace",
            ns,
            json!({"metadata":{"finalizers":["y"]},"spec":{"finalizers":["other"]}}),
        );
        assert_eq!(result["spec"]["finalizers"], json!(["other"]));
        assert_eq!(result["metadata"]["finalizers"], json!(["y", "x"]));
    }

    #[test]
    fn set_element_order_reorders_a_list() {
        let mut three = deployment();
        three["spec"]["template"]["spec"]["containers"] =
            json!([{"name":"a","image":"1"},{"name":"b","image":"2"},{"name":"c","image":"3"}]);

        let result = apply(
            "Deployment",
            three.clone(),
            json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"c"},{"name":"a"},{"name":"b"}]}}}}),
        );
        assert_eq!(names(containers(&result)), ["c", "a", "b"]);
        assert_eq!(containers(&result)[0]["image"], "3");

        // Items the order does not name follow the live order around the named ones.
        let result = apply(
            "Deployment",
            three,
            json!({"spec":{"template":{"spec":{
                "$setElementOrder/containers":[{"name":"b"},{"name":"a"}],
                "containers":[{"name":"a","image":"9"}]
            }}}}),
        );
        assert_eq!(names(containers(&result)), ["b", "a", "c"]);
        assert_eq!(containers(&result)[1]["image"], "9");
    }

    #[test]
    fn node_conditions_and_addresses_merge_by_type() {
        let patch = json!({"status":{
            "$setElementOrder/conditions":[{"type":"Ready"},{"type":"MemoryPressure"},{"type":"DiskPressure"}],
            "conditions":[
                {"type":"Ready","status":"True","reason":"KubeletReady"},
                {"type":"DiskPressure","status":"False"}
            ],
            "addresses":[{"type":"Hostname","address":"n1"}]
        }});
        let result = apply("Node", node(), patch);
        assert_eq!(
            result["status"]["conditions"],
            json!([
                {"type":"Ready","status":"True","reason":"KubeletReady"},
                {"type":"MemoryPressure","status":"False"},
                {"type":"DiskPressure","status":"False"}
            ])
        );
        assert_eq!(
            result["status"]["addresses"].as_array().map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn deployment_conditions_merge_by_type() {
        let patch = json!({"status":{"conditions":[{"type":"Available","status":"False"}]}});
        let result = apply("Deployment", deployment(), patch);
        assert_eq!(
            result["status"]["conditions"],
            json!([
                {"type":"Available","status":"False"},
                {"type":"Progressing","status":"True","reason":"NewReplicaSetAvailable"}
            ])
        );
    }

    #[test]
    fn a_patch_element_without_its_merge_key_is_an_error() {
        for patch in [
            json!({"spec":{"template":{"spec":{"containers":[{"image":"nginx"}]}}}}),
            json!({"spec":{"template":{"spec":{"containers":[{"$patch":"delete","image":"x"}]}}}}),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"value":"1"}]}]}}}}),
            json!({"spec":{"template":{"spec":{"containers":["web"]}}}}),
        ] {
            let mut object = deployment();
            let error = strategic_merge(rk("Deployment"), &mut object, &patch).unwrap_err();
            assert!(!error.0.is_empty());
            assert_eq!(object, deployment(), "a failed patch changes nothing");
        }
    }

    #[test]
    fn malformed_directives_are_errors() {
        for patch in [
            json!({"metadata":{"$patch":"explode"}}),
            json!({"metadata":{"$retainKeys":"name"}}),
            json!({"metadata":{"$setElementOrder/finalizers":"a"}}),
            json!({"metadata":{"$deleteFromPrimitiveList/":["a"]}}),
            json!({"metadata":{"$unknown":1}}),
            json!({"metadata":{"finalizers":[{"a":1}]}}),
            json!({"spec":{"template":{"spec":{"$setElementOrder/containers":["web"]}}}}),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"web","$patch":7}]}}}}),
        ] {
            let mut object = deployment();
            assert!(
                strategic_merge(rk("Deployment"), &mut object, &patch).is_err(),
                "{patch}"
            );
            assert_eq!(object, deployment());
        }
    }

    #[test]
    fn a_non_object_patch_is_an_error() {
        for patch in [json!(null), json!([1]), json!("x"), json!(3)] {
            let mut object = deployment();
            assert!(strategic_merge(rk("Deployment"), &mut object, &patch).is_err());
        }
    }

    #[test]
    fn patch_replace_and_delete_on_maps() {
        let result = apply(
            "Deployment",
            deployment(),
            json!({"metadata":{"labels":{"$patch":"replace","only":"this"}}}),
        );
        assert_eq!(result["metadata"]["labels"], json!({"only":"this"}));

        let result = apply(
            "Deployment",
            deployment(),
            json!({"spec":{"strategy":{"$patch":"delete"}}}),
        );
        assert!(result["spec"].get("strategy").is_none());

        let result = apply("Deployment", deployment(), json!({"$patch":"delete"}));
        assert_eq!(result, json!({}));
    }

    #[test]
    fn patch_replace_in_a_list_replaces_the_whole_list() {
        let patch = json!({"spec":{"template":{"spec":{"containers":[
            {"name":"only","image":"busybox","env":[{"name":"A","value":"1"},{"$patch":"replace"}]},
            {"$patch":"replace"}
        ]}}}});
        let result = apply("Deployment", deployment(), patch);
        assert_eq!(
            *containers(&result),
            json!([{"name":"only","image":"busybox","env":[{"name":"A","value":"1"}]}])
        );
    }

    #[test]
    fn lists_without_merge_key_are_replaced() {
        let patch = json!({"spec":{"template":{"spec":{
            "tolerations":[{"key":"b","operator":"Exists"}],
            "containers":[{"name":"web","args":["--port","8080"]}]
        }}}});
        let result = apply("Deployment", deployment(), patch);
        assert_eq!(
            result["spec"]["template"]["spec"]["tolerations"],
            json!([{"key":"b","operator":"Exists"}])
        );
        assert_eq!(containers(&result)[0]["args"], json!(["--port", "8080"]));
    }

    #[test]
    fn container_ports_merge_by_number() {
        let patch = json!({"spec":{"template":{"spec":{"containers":[
            {"name":"web","ports":[{"containerPort":80.0,"name":"http"},{"containerPort":443}]}
        ]}}}});
        let result = apply("Deployment", deployment(), patch);
        let ports = &containers(&result)[0]["ports"];
        assert_eq!(ports.as_array().map(Vec::len), Some(2));
        assert_eq!(ports[0]["containerPort"].as_f64(), Some(80.0));
        assert_eq!(ports[0]["protocol"], "TCP");
        assert_eq!(ports[0]["name"], "http");
        assert_eq!(ports[1], json!({"containerPort":443}));
    }

    #[test]
    fn type_mismatches_take_the_patch_value() {
        let result = apply(
            "Deployment",
            deployment(),
            json!({"spec":{"replicas":{"a":null,"b":1},"selector":"x"}}),
        );
        assert_eq!(result["spec"]["replicas"], json!({"b":1}));
        assert_eq!(result["spec"]["selector"], "x");
    }

    #[test]
    fn directives_in_new_subtrees_are_applied_not_kept() {
        let pod = json!({"kind":"Pod","metadata":{"name":"p"},"spec":{}});
        let patch = json!({
            "metadata":{"labels":{"$retainKeys":["a"],"a":"1"},"finalizers":["f"]},
            "spec":{
                "$setElementOrder/containers":[{"name":"x"}],
                "containers":[{"name":"x","env":[{"$patch":"delete","name":"GONE"},{"name":"K","value":"v"}]}],
                "volumes":[{"name":"v","emptyDir":{"$patch":"replace"}}],
                "tolerations":[{"key":"t"},{"$patch":"delete","key":"u"}],
                "affinity":{"$patch":"delete"}
            },
            "status":{"$deleteFromPrimitiveList/x":["y"]}
        });
        let result = apply("Pod", pod, patch);
        assert_eq!(
            result["spec"]["containers"],
            json!([{"name":"x","env":[{"name":"K","value":"v"}]}])
        );
        assert_eq!(
            result["spec"]["volumes"],
            json!([{"name":"v","emptyDir":{}}])
        );
        assert_eq!(result["spec"]["tolerations"], json!([{"key":"t"}]));
        assert!(result["spec"].get("affinity").is_none());
        assert_eq!(result["metadata"]["labels"], json!({"a":"1"}));
    }

    #[test]
    fn a_deeply_nested_patch_is_refused() {
        let mut patch = json!({"leaf": 1});
        for _ in 0..1_000 {
            patch = json!({ "a": patch });
        }
        let mut object = json!({});
        assert!(strategic_merge(rk("ConfigMap"), &mut object, &patch).is_err());
    }

    /// A tiny deterministic generator of awkward patches.
    struct Chaos(u64);

    impl Chaos {
        fn next(&mut self, bound: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) as usize) % bound
        }

        fn value(&mut self, depth: usize) -> Value {
            const KEYS: &[&str] = &[
                "metadata",
                "spec",
                "status",
                "template",
                "containers",
                "name",
                "image",
                "env",
                "value",
                "finalizers",
                "ports",
                "containerPort",
                "conditions",
                "type",
                "labels",
                "strategy",
                "$patch",
                "$retainKeys",
                "$setElementOrder/containers",
                "$setElementOrder/finalizers",
                "$deleteFromPrimitiveList/finalizers",
                "$setElementOrder/env",
                "tolerations",
                "volumes",
            ];
            const WORDS: &[&str] = &["delete", "replace", "merge", "web", "name", "x", "type"];
            let pick = if depth == 0 {
                self.next(4)
            } else {
                self.next(6)
            };
            match pick {
                0 => Value::Null,
                1 => json!(self.next(3)),
                2 => json!(WORDS[self.next(WORDS.len())]),
                3 => json!(self.next(2) == 0),
                4 => (0..self.next(4)).map(|_| self.value(depth - 1)).collect(),
                _ => {
                    let mut map = Object::new();
                    for _ in 0..self.next(5) {
                        let key = KEYS[self.next(KEYS.len())];
                        map.insert(key.to_owned(), self.value(depth - 1));
                    }
                    Value::Object(map)
                }
            }
        }
    }

    #[test]
    fn arbitrary_patches_never_panic_nor_leave_directives() {
        let mut chaos = Chaos(7);
        let pod = json!({"kind":"Pod","metadata":{"name":"p","finalizers":["a"]},"spec":{"containers":[{"name":"web","env":[{"name":"x"}]}]},"status":{"conditions":[{"type":"Ready"}]}});
        for round in 0..4_000 {
            let (kind, original) = match round % 3 {
                0 => ("Deployment", deployment()),
                1 => ("Pod", pod.clone()),
                _ => ("Node", node()),
            };
            let mut patch = chaos.value(6);
            if round % 2 == 0 {
                patch = json!({"spec": {"template": {"spec": patch}}});
            }
            let mut object = original.clone();
            match strategic_merge(rk(kind), &mut object, &patch) {
                Ok(()) => assert_no_directives(&object),
                Err(_) => assert_eq!(object, original),
            }
        }
    }
}
