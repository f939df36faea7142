//! Field management: who owns which field of an object (`metadata.managedFields`), and
//! server-side apply on top of it, as kube-apiserver's field manager and
//! structured-merge-diff do.
//!
//! Ownership is kept per manager entry (manager, operation, subresource) as a set of field
//! paths in the FieldsV1 form (`f:<field>`, `k:<key fields>` for items of map lists,
//! `v:<value>` for items of sets). Every write updates it: a plain write (create, update,
//! patch) gives its manager the fields it added or changed and takes them from everyone else;
//! an apply makes its manager own exactly the fields of its configuration, merges that
//! configuration into the live object by the kind's list types, removes the fields the
//! manager applied before and no longer applies (unless someone else owns them), and refuses
//! with a 409 listing every field another manager owns and the apply would change, unless
//! forced, which takes them over.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Map, Value};

use super::patch::{ListType, Schema};
use crate::api::meta;
use crate::api::status::{Status, StatusCause};

/// Metadata fields nobody owns: the server sets them (kube's field manager strips the same).
const UNOWNED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "selfLink",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Largest field manager name kube accepts.
const MAX_MANAGER_LEN: usize = 128;

/// A set of field paths, as a tree: a node is a member when it is owned itself; its children
/// are the paths below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// Whether no path is in the set.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    fn child(&mut self, key: String) -> &mut FieldSet {
        self.children.entry(key).or_default()
    }

    /// Reads a FieldsV1 document. Anything that is not an object is an empty set.
    pub fn from_v1(v: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Some(m) = v.as_object() {
            for (k, child) in m {
                if k == "." {
                    set.member = true;
                } else {
                    let mut c = FieldSet::from_v1(child);
                    if c.children.is_empty() {
                        c.member = true;
                    }
                    set.children.insert(k.clone(), c);
                }
            }
        }
        set
    }

    /// Writes the set as a FieldsV1 document.
    pub fn to_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &self.children {
            m.insert(k.clone(), c.to_v1());
        }
        Value::Object(m)
    }

    /// Adds every path of `other`.
    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, c) in &other.children {
            self.child(k.clone()).union(c);
        }
    }

    /// Removes every path of `other`.
    pub fn subtract(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        for (k, c) in &other.children {
            if let Some(mine) = self.children.get_mut(k) {
                mine.subtract(c);
                if mine.is_empty() {
                    self.children.remove(k);
                }
            }
        }
    }

    /// The paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            if let Some(o) = other.children.get(k) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(k.clone(), i);
                }
            }
        }
        out
    }

    /// Whether the set holds `path` or anything below it.
    #[cfg(test)]
    fn has_under(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => !self.is_empty(),
            Some((k, rest)) => self.children.get(k).is_some_and(|c| c.has_under(rest)),
        }
    }

    /// Every member path, parents before children.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    fn insert_leaf(&mut self, key: String) {
        self.child(key).member = true;
    }
}

/// A path written as kube prints it in conflicts: `.spec.containers[name="web"].image`.
pub fn display(path: &[String]) -> String {
    let mut s = String::new();
    for k in path {
        if let Some(f) = k.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(key) = k.strip_prefix("k:") {
            let fields: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = fields.iter().map(|(n, v)| format!("{n}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = k.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = k.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        }
    }
    s
}

/// The path element of a list item: its key fields (sorted by name, as structured-merge-diff
/// writes them) for a map list, its value for a set, else its index.
fn item_key(item: &Value, list: ListType, index: usize) -> String {
    match list {
        ListType::Map(keys) => {
            let mut fields = BTreeMap::new();
            for k in keys {
                match item.get(*k) {
                    Some(v) if !v.is_null() => {
                        fields.insert(*k, v.clone());
                    }
                    // kube's schema defaults a port's protocol, which is one of its keys.
                    _ if *k == "protocol" => {
                        fields.insert(*k, json!("TCP"));
                    }
                    _ => {}
                }
            }
            if fields.is_empty() {
                return format!("i:{index}");
            }
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{}", json!(k), v))
                .collect();
            format!("k:{{{}}}", body.join(","))
        }
        ListType::Set => format!("v:{item}"),
        ListType::Atomic => format!("i:{index}"),
    }
}

/// The fields an applied configuration sets (structured-merge-diff's `ToFieldSet`): every
/// scalar, atomic list, empty or null map, and item of a set or map list.
pub fn fields_of(obj: &Value, schema: Schema) -> FieldSet {
    let mut set = FieldSet::default();
    walk_fields(obj, schema, &mut set);
    set
}

fn walk_fields(obj: &Value, schema: Schema, out: &mut FieldSet) {
    let Some(map) = obj.as_object() else {
        out.member = true;
        return;
    };
    if map.is_empty() {
        out.member = true;
    }
    for (k, v) in map {
        let key = format!("f:{k}");
        let child = schema.field(k);
        match v {
            Value::Object(m) if !m.is_empty() => walk_fields(v, child, out.child(key)),
            Value::Array(items) => match schema.list_type(k) {
                ListType::Atomic => out.insert_leaf(key),
                lt => {
                    let node = out.child(key);
                    if items.is_empty() {
                        node.member = true;
                    }
                    for (i, item) in items.iter().enumerate() {
                        let pe = item_key(item, lt, i);
                        let entry = node.child(pe);
                        if item.as_object().is_some_and(|m| !m.is_empty()) {
                            walk_fields(item, child, entry);
                        }
                        entry.member = true;
                    }
                }
            },
            _ => out.insert_leaf(key),
        }
    }
}

/// What changed from `old` to `new` (structured-merge-diff's `Compare`): the paths added or
/// modified, and the paths removed. A node that appears or disappears is itself a path, as
/// are all its leaves.
pub fn compare(old: &Value, new: &Value, schema: Schema) -> (FieldSet, FieldSet) {
    let (mut changed, mut removed) = (FieldSet::default(), FieldSet::default());
    compare_into(old, new, schema, &mut changed, &mut removed);
    (changed, removed)
}

fn compare_into(
    old: &Value,
    new: &Value,
    schema: Schema,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        if old != new {
            changed.member = true;
        }
        return;
    };
    for (k, nv) in n {
        compare_key(k, o.get(k), Some(nv), schema, changed, removed);
    }
    for (k, ov) in o {
        if !n.contains_key(k) {
            compare_key(k, Some(ov), None, schema, changed, removed);
        }
    }
}

/// Compares field `k` of a map of type `schema`: absent on one side, or on both.
fn compare_key(
    k: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    schema: Schema,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    let key = || format!("f:{k}");
    let child = schema.field(k);
    match (old, new) {
        (None, None) => {}
        (None, Some(nv)) => {
            let mut added = fields_of_node(nv, child, schema.list_type(k));
            added.member = true;
            changed.child(key()).union(&added);
        }
        (Some(ov), None) => {
            let mut gone = fields_of_node(ov, child, schema.list_type(k));
            gone.member = true;
            removed.child(key()).union(&gone);
        }
        (Some(ov), Some(nv)) if ov == nv => {}
        (Some(ov), Some(nv)) => {
            let (mut c, mut r) = (FieldSet::default(), FieldSet::default());
            match (ov, nv) {
                (Value::Object(_), Value::Object(_)) => compare_into(ov, nv, child, &mut c, &mut r),
                (Value::Array(oa), Value::Array(na)) if schema.list_type(k) != ListType::Atomic => {
                    compare_list(oa, na, schema.list_type(k), child, &mut c, &mut r)
                }
                _ => c.member = true,
            }
            if !c.is_empty() {
                changed.child(key()).union(&c);
            }
            if !r.is_empty() {
                removed.child(key()).union(&r);
            }
        }
    }
}

/// What a write changed in the part of the object its writer owns fields in (see
/// [`owns`]), without copying that part out.
fn compare_owned(
    old: &Value,
    new: &Value,
    w: &Writer<'_>,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    let empty = Map::new();
    let (o, n) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let keys = n.keys().chain(o.keys().filter(|k| !n.contains_key(*k)));
    for k in keys {
        if !owns(w, k) {
            continue;
        }
        if k == "metadata" {
            let (om, nm) = (
                o.get(k).and_then(Value::as_object).unwrap_or(&empty),
                n.get(k).and_then(Value::as_object).unwrap_or(&empty),
            );
            let (mut c, mut r) = (FieldSet::default(), FieldSet::default());
            let mk = nm.keys().chain(om.keys().filter(|x| !nm.contains_key(*x)));
            for f in mk.filter(|f| !UNOWNED_METADATA.contains(&f.as_str())) {
                compare_key(f, om.get(f), nm.get(f), w.schema.field(k), &mut c, &mut r);
            }
            if !c.is_empty() {
                changed.child("f:metadata".into()).union(&c);
            }
            if !r.is_empty() {
                removed.child("f:metadata".into()).union(&r);
            }
        } else {
            compare_key(k, o.get(k), n.get(k), w.schema, changed, removed);
        }
    }
}

/// The fields of one value found at a field, as a subtree.
fn fields_of_node(v: &Value, schema: Schema, list: ListType) -> FieldSet {
    match v {
        Value::Object(_) => fields_of(v, schema),
        Value::Array(items) if list != ListType::Atomic => {
            let mut set = FieldSet::default();
            for (i, item) in items.iter().enumerate() {
                let mut entry = fields_of_node(item, schema, ListType::Atomic);
                entry.member = true;
                set.child(item_key(item, list, i)).union(&entry);
            }
            set
        }
        _ => FieldSet::default(),
    }
}

fn compare_list(
    old: &[Value],
    new: &[Value],
    list: ListType,
    schema: Schema,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    let index = |items: &[Value]| -> BTreeMap<String, Value> {
        items
            .iter()
            .enumerate()
            .map(|(i, v)| (item_key(v, list, i), v.clone()))
            .collect()
    };
    let (o, n) = (index(old), index(new));
    for (k, nv) in &n {
        match o.get(k) {
            None => {
                let mut added = fields_of_node(nv, schema, ListType::Atomic);
                added.member = true;
                changed.child(k.clone()).union(&added);
            }
            Some(ov) if ov == nv => {}
            Some(ov) => {
                let (mut c, mut r) = (FieldSet::default(), FieldSet::default());
                compare_into(ov, nv, schema, &mut c, &mut r);
                if !c.is_empty() {
                    changed.child(k.clone()).union(&c);
                }
                if !r.is_empty() {
                    removed.child(k.clone()).union(&r);
                }
            }
        }
    }
    for (k, ov) in &o {
        if !n.contains_key(k) {
            let mut gone = fields_of_node(ov, schema, ListType::Atomic);
            gone.member = true;
            removed.child(k.clone()).union(&gone);
        }
    }
}

/// Merges an applied configuration into the live object: maps field by field, map lists item
/// by item (by their keys), sets as unions, everything else replaced. A null in the
/// configuration removes the field.
pub fn merge(live: &Value, config: &Value, schema: Schema) -> Value {
    let (Some(l), Some(c)) = (live.as_object(), config.as_object()) else {
        return config.clone();
    };
    let mut out = l.clone();
    for (k, cv) in c {
        let child = schema.field(k);
        if cv.is_null() {
            out.remove(k);
            continue;
        }
        let merged = match (l.get(k), cv) {
            (Some(lv @ Value::Object(_)), Value::Object(_)) => merge(lv, cv, child),
            (Some(Value::Array(la)), Value::Array(ca)) => match schema.list_type(k) {
                ListType::Atomic => cv.clone(),
                lt => Value::Array(merge_list(la, ca, lt, child)),
            },
            _ => cv.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Value::Object(out)
}

fn merge_list(live: &[Value], config: &[Value], list: ListType, schema: Schema) -> Vec<Value> {
    let mut out: Vec<Value> = live.to_vec();
    // Each item's key once, not once per comparison: a list of n items costs n lookups.
    let mut at: HashMap<String, usize> = HashMap::new();
    for (j, v) in out.iter().enumerate() {
        at.entry(item_key(v, list, j)).or_insert(j);
    }
    for (i, item) in config.iter().enumerate() {
        let key = item_key(item, list, i);
        match (at.get(&key).copied(), list) {
            (Some(j), ListType::Map(_)) => out[j] = merge(&out[j], item, schema),
            (Some(_), _) => {}
            (None, _) => {
                at.insert(key, out.len());
                out.push(item.clone());
            }
        }
    }
    out
}

/// Removes from `obj` every field of `drop` that `others` own nothing at or under, in one walk
/// (each list indexed once, so dropping n items of an n-item list costs n, not n²).
fn prune(obj: &mut Value, drop: &FieldSet, others: Option<&FieldSet>, schema: Schema) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let owned = |o: Option<&FieldSet>| o.is_some_and(|o| !o.is_empty());
    for (key, sub) in &drop.children {
        let Some(field) = key.strip_prefix("f:") else {
            continue;
        };
        let other = others.and_then(|o| o.children.get(key));
        if sub.member && !owned(other) {
            map.remove(field);
            continue;
        }
        let child = schema.field(field);
        let list = schema.list_type(field);
        match map.get_mut(field) {
            Some(Value::Array(items)) => {
                let mut index: HashMap<String, usize> = HashMap::new();
                for (i, item) in items.iter().enumerate() {
                    index.entry(item_key(item, list, i)).or_insert(i);
                }
                let mut gone = vec![false; items.len()];
                for (pe, item_drop) in &sub.children {
                    let Some(&i) = index.get(pe) else {
                        continue;
                    };
                    let item_other = other.and_then(|o| o.children.get(pe));
                    if item_drop.member && !owned(item_other) {
                        gone[i] = true;
                    } else {
                        prune(&mut items[i], item_drop, item_other, child);
                    }
                }
                let mut i = 0;
                items.retain(|_| {
                    i += 1;
                    !gone[i - 1]
                });
            }
            Some(v @ Value::Object(_)) => prune(v, sub, other, child),
            _ => {}
        }
    }
}

/// One entry of `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub fields: FieldSet,
}

impl Entry {
    fn same_owner(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    /// How kube names the manager in a conflict: `"kubectl" using apps/v1` for an update.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.fields.to_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }
}

/// The entries of an object's `metadata.managedFields`; None when it has none.
pub fn entries(obj: &Value) -> Option<Vec<Entry>> {
    let list = obj.pointer("/metadata/managedFields")?.as_array()?;
    let s = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Some(
        list.iter()
            .map(|e| Entry {
                manager: s(e, "manager"),
                operation: s(e, "operation"),
                api_version: s(e, "apiVersion"),
                time: e.get("time").and_then(Value::as_str).map(String::from),
                subresource: s(e, "subresource"),
                fields: FieldSet::from_v1(e.get("fieldsV1").unwrap_or(&Value::Null)),
            })
            .collect(),
    )
}

/// Writes entries back, without the empty ones, in kube's order (Apply before Update, then
/// by time, then by manager).
fn store_entries(obj: &mut Value, mut list: Vec<Entry>) {
    list.retain(|e| !e.fields.is_empty());
    list.sort_by(|a, b| {
        (a.operation.as_str(), &a.time, &a.manager).cmp(&(
            b.operation.as_str(),
            &b.time,
            &b.manager,
        ))
    });
    let md = meta::metadata_mut(obj);
    if list.is_empty() {
        md.remove("managedFields");
    } else {
        md.insert(
            "managedFields".into(),
            Value::Array(list.iter().map(Entry::to_json).collect()),
        );
    }
}

/// Checks a manager entries list a client wrote (kube: 422 for entries it cannot read).
pub fn check_written(obj: &Value) -> Result<(), String> {
    let Some(v) = obj.pointer("/metadata/managedFields") else {
        return Ok(());
    };
    let Some(list) = v.as_array() else {
        return if v.is_null() {
            Ok(())
        } else {
            Err("metadata.managedFields must be a list".into())
        };
    };
    for (i, e) in list.iter().enumerate() {
        let op = e.get("operation").and_then(Value::as_str).unwrap_or("");
        if !matches!(op, "Apply" | "Update") {
            return Err(format!(
                "metadata.managedFields[{i}].operation: Unsupported value: {op:?}: supported values: \"Apply\", \"Update\""
            ));
        }
        if let Some(t) = e.get("fieldsType").and_then(Value::as_str) {
            if t != "FieldsV1" {
                return Err(format!(
                    "metadata.managedFields[{i}].fieldsType: Unsupported value: {t:?}: supported values: \"FieldsV1\""
                ));
            }
        }
    }
    Ok(())
}

/// Who writes, and to which part of the object.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// `status`, or "" for the main resource.
    pub subresource: &'a str,
    /// Whether the kind has a status subresource (then the main resource owns no status).
    pub has_status: bool,
    /// The object's apiVersion.
    pub api_version: String,
    /// The patch metadata of the kind.
    pub schema: Schema,
}

/// Whether top-level field `k` is in the part of an object its writer owns fields in: no
/// type fields, status only through the status subresource (when the kind has one), and
/// only status there.
fn owns(w: &Writer<'_>, k: &str) -> bool {
    match k {
        "apiVersion" | "kind" => false,
        "status" => !w.has_status || w.subresource == "status",
        _ => !(w.has_status && w.subresource == "status"),
    }
}

/// The part of an object its writer owns fields in (see [`owns`]), without the metadata the
/// server sets.
fn owned_view(obj: &Value, w: &Writer<'_>) -> Value {
    let mut out = Map::new();
    for (k, v) in obj.as_object().into_iter().flatten() {
        if !owns(w, k) {
            continue;
        }
        if k == "metadata" {
            let mut md = v.as_object().cloned().unwrap_or_default();
            for f in UNOWNED_METADATA {
                md.remove(*f);
            }
            if !md.is_empty() {
                out.insert(k.clone(), Value::Object(md));
            }
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// What an object's structs are before anything is written, so that a create does not own the
/// top-level objects themselves (kube compares a create with the type's empty object).
fn empty_like(obj: &Value) -> Value {
    let mut out = Map::new();
    for (k, v) in obj.as_object().into_iter().flatten() {
        if v.is_object() {
            out.insert(k.clone(), json!({}));
        }
    }
    Value::Object(out)
}

/// Checks a field manager name (kube: 422 on PatchOptions/UpdateOptions/CreateOptions).
pub fn check_manager(manager: &str, options_kind: &str) -> Result<(), Status> {
    if manager.chars().count() > MAX_MANAGER_LEN {
        return Err(Status::invalid(
            "meta.k8s.io",
            options_kind,
            "",
            vec![StatusCause {
                reason: "FieldValueTooLong".into(),
                message: format!("Too long: may not be more than {MAX_MANAGER_LEN} bytes"),
                field: "fieldManager".into(),
            }],
        ));
    }
    if manager.chars().any(|c| !(' '..='~').contains(&c)) {
        return Err(Status::invalid(
            "meta.k8s.io",
            options_kind,
            "",
            vec![StatusCause {
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {manager:?}: must only contain printable characters"
                ),
                field: "fieldManager".into(),
            }],
        ));
    }
    Ok(())
}

/// Records a plain write (create, update, patch) of `new` over `old` by `w`: the fields it
/// added or changed become its own (operation `Update`) and no longer anyone else's; removed
/// fields are no one's. A write whose body changed `metadata.managedFields` itself has those
/// entries as the starting point (kubectl's client-side to server-side apply migration does
/// this). `old` is None for a create.
pub fn record_update(old: Option<&Value>, new: &mut Value, w: &Writer<'_>) {
    if !new.is_object() {
        return; // refused by the registry as it is
    }
    let old_written = old.and_then(|o| o.pointer("/metadata/managedFields"));
    let new_written = new.pointer("/metadata/managedFields");
    // Entries the body changed itself are the base; otherwise the stored ones.
    let rewritten = old.is_some() && new_written.is_some() && new_written != old_written;
    let base = match old {
        Some(o) if !rewritten => entries(o).unwrap_or_default(),
        Some(_) => entries(new).unwrap_or_default(),
        None => Vec::new(),
    };
    let (mut changed, mut removed) = (FieldSet::default(), FieldSet::default());
    match old {
        Some(o) => compare_owned(o, new, w, &mut changed, &mut removed),
        None => compare_owned(&empty_like(new), new, w, &mut changed, &mut removed),
    }
    if changed.is_empty() && removed.is_empty() {
        // Nothing owned changed: the entries stay as they were (a body that left them out
        // does not drop them).
        if !rewritten {
            match old_written {
                Some(mf) => {
                    let mf = mf.clone();
                    meta::metadata_mut(new).insert("managedFields".into(), mf);
                }
                None => {
                    meta::metadata_mut(new).remove("managedFields");
                }
            }
        } else {
            store_entries(new, base);
        }
        return;
    }
    let mut list = base;
    let mut gone = changed.clone();
    gone.union(&removed);
    let mut reshaped = rewritten || old_written.is_none();
    for e in &mut list {
        let take = if e.same_owner(w.manager, "Update", w.subresource) {
            &removed
        } else {
            &gone
        };
        if !e.fields.intersection(take).is_empty() {
            e.fields.subtract(take);
            reshaped = true;
        }
    }
    let now = meta::now();
    let mine = list
        .iter()
        .position(|e| e.same_owner(w.manager, "Update", w.subresource));
    match mine {
        Some(i) => {
            let e = &mut list[i];
            let mut grown = e.fields.clone();
            grown.union(&changed);
            if grown != e.fields || e.api_version != w.api_version {
                e.fields = grown;
                e.api_version = w.api_version.clone();
                reshaped = true;
            }
            e.time = Some(now.clone());
        }
        None => {
            list.push(Entry {
                manager: w.manager.to_string(),
                operation: "Update".into(),
                api_version: w.api_version.clone(),
                time: Some(now.clone()),
                subresource: w.subresource.to_string(),
                fields: changed,
            });
            reshaped = true;
        }
    }
    if reshaped {
        store_entries(new, list);
        return;
    }
    // The usual write: the same manager changing fields it already owns. Only its time moves,
    // set in the stored entries as they are.
    let mut mf = old_written.cloned().unwrap_or_default();
    if let Some(entry) = mf.as_array_mut().and_then(|a| {
        a.iter_mut().find(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
            s("manager") == w.manager
                && s("operation") == "Update"
                && s("subresource") == w.subresource
        })
    }) {
        entry["time"] = json!(now);
    }
    meta::metadata_mut(new).insert("managedFields".into(), mf);
}

/// Server-side apply of `config` over `live` (None when the object does not exist yet) by
/// `w`: the merged object, with its managed fields, or a 409 naming every field another
/// manager owns and the apply would change (`force` takes them over instead).
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    w: &Writer<'_>,
    force: bool,
) -> Result<Value, Status> {
    if !config.is_object() || live.is_some_and(|l| !l.is_object()) {
        return Err(Status::bad_request(
            "an apply configuration and the object it applies to must be JSON objects",
        ));
    }
    let config_view = owned_view(config, w);
    let config_set = fields_of(&config_view, w.schema);
    let Some(live) = live else {
        let mut obj = merge(&json!({}), config, w.schema);
        let list = vec![Entry {
            manager: w.manager.to_string(),
            operation: "Apply".into(),
            api_version: w.api_version.to_string(),
            time: Some(meta::now()),
            subresource: w.subresource.to_string(),
            fields: config_set,
        }];
        store_entries(&mut obj, list);
        return Ok(obj);
    };
    let mut list = match entries(live) {
        Some(l) => l,
        // An object nobody has applied to yet: what it holds belongs to the writes before.
        None => {
            let view = owned_view(live, w);
            vec![Entry {
                manager: "before-first-apply".into(),
                operation: "Update".into(),
                api_version: w.api_version.to_string(),
                time: None,
                subresource: w.subresource.to_string(),
                fields: fields_of(&view, w.schema),
            }]
        }
    };
    let live_view = owned_view(live, w);
    let merged_config = merge(&live_view, &config_view, w.schema);
    let (mut changed, removed) = compare(&live_view, &merged_config, w.schema);
    changed.union(&removed);
    // Conflicts: fields another manager owns that this apply changes.
    let mut conflicts: Vec<(String, String)> = Vec::new();
    let mut forced = false;
    for e in &mut list {
        if e.same_owner(w.manager, "Apply", w.subresource) {
            continue;
        }
        let clash = e.fields.intersection(&changed);
        if clash.is_empty() {
            continue;
        }
        if force {
            e.fields.subtract(&clash);
            forced = true;
        } else {
            for p in clash.paths() {
                conflicts.push((e.describe(), display(&p)));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflict_error(&conflicts));
    }
    let previous = list
        .iter()
        .find(|e| e.same_owner(w.manager, "Apply", w.subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    // The merged object: the configuration over the live object in the part this writer owns
    // (a null in the configuration removes its field), server-set metadata kept.
    let mut obj = live.clone();
    let merged = merge(live, config, w.schema);
    let empty = Map::new();
    let merged = merged.as_object().unwrap_or(&empty);
    if let Some(out) = obj.as_object_mut() {
        let keys: BTreeSet<String> = out.keys().chain(merged.keys()).cloned().collect();
        for k in keys.iter().filter(|k| owns(w, k)) {
            if k == "metadata" {
                let new_md = merged.get(k).and_then(Value::as_object).unwrap_or(&empty);
                let md = out.entry("metadata").or_insert_with(|| json!({}));
                if !md.is_object() {
                    *md = json!({});
                }
                let Some(md) = md.as_object_mut() else {
                    continue;
                };
                let md_keys: BTreeSet<String> = md.keys().chain(new_md.keys()).cloned().collect();
                for mk in md_keys
                    .iter()
                    .filter(|f| !UNOWNED_METADATA.contains(&f.as_str()))
                {
                    match new_md.get(mk) {
                        Some(v) => md.insert(mk.clone(), v.clone()),
                        None => md.remove(mk),
                    };
                }
            } else {
                match merged.get(k) {
                    Some(v) => out.insert(k.clone(), v.clone()),
                    None => out.remove(k),
                };
            }
        }
    }
    // Fields this manager applied before and no longer applies go, unless someone else owns
    // them.
    let mut dropped = previous;
    dropped.subtract(&config_set);
    let mut others = FieldSet::default();
    for e in &list {
        if !e.same_owner(w.manager, "Apply", w.subresource) {
            others.union(&e.fields);
        }
    }
    prune(&mut obj, &dropped, Some(&others), w.schema);
    // An apply that changes nothing, the object nor who owns what, writes nothing (a
    // controller applying the same configuration every reconcile must not bump the object).
    let unchanged_owner = list.iter().any(|e| {
        e.same_owner(w.manager, "Apply", w.subresource)
            && e.fields == config_set
            && e.api_version == w.api_version
    });
    if !forced && unchanged_owner && obj == *live {
        return Ok(live.clone());
    }
    let now = meta::now();
    match list
        .iter_mut()
        .find(|e| e.same_owner(w.manager, "Apply", w.subresource))
    {
        Some(e) => {
            e.fields = config_set;
            e.time = Some(now);
            e.api_version = w.api_version.to_string();
        }
        None => list.push(Entry {
            manager: w.manager.to_string(),
            operation: "Apply".into(),
            api_version: w.api_version.to_string(),
            time: Some(now),
            subresource: w.subresource.to_string(),
            fields: config_set,
        }),
    }
    store_entries(&mut obj, list);
    Ok(obj)
}

/// kube's apply conflict: 409 Conflict, one cause per field, the message grouped by manager.
fn conflict_error(conflicts: &[(String, String)]) -> Status {
    let message = if let [(manager, path)] = conflicts {
        format!("Apply failed with 1 conflict: conflict with {manager}: {path}")
    } else {
        let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (m, p) in conflicts {
            by_manager.entry(m).or_default().push(p);
        }
        let mut lines = Vec::new();
        for (m, paths) in by_manager {
            lines.push(format!("conflicts with {m}:"));
            for p in paths {
                lines.push(format!("- {p}"));
            }
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    // kube's NewApplyConflict names no object, only the fields.
    let mut status = Status::failure(409, crate::api::status::reason::CONFLICT, message);
    status.details = Some(crate::api::status::StatusDetails {
        causes: conflicts
            .iter()
            .map(|(m, p)| StatusCause {
                reason: "FieldManagerConflict".into(),
                message: format!("conflict with {m}"),
                field: p.clone(),
            })
            .collect(),
        ..Default::default()
    });
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::patch::RootKind;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            subresource: "",
            has_status: true,
            api_version: "apps/v1".into(),
            schema: Schema::of(RootKind::Workload),
        }
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "default", "labels": {"app": "d"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "web", "image": image, "ports": [{"containerPort": 80}]}]}}}})
    }

    #[test]
    fn field_sets_read_and_write_fields_v1() {
        let v1 = json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}}}}});
        let set = FieldSet::from_v1(&v1);
        assert_eq!(set.to_v1(), v1);
        let paths: Vec<String> = set.paths().iter().map(|p| display(p)).collect();
        assert_eq!(
            paths,
            vec![
                ".metadata.labels",
                ".metadata.labels.app",
                ".spec.containers[name=\"web\"]",
                ".spec.containers[name=\"web\"].image"
            ]
        );
    }

    #[test]
    fn applied_fields_follow_list_types() {
        let set = fields_of(&deployment(2, "nginx"), Schema::of(RootKind::Workload));
        let v1 = set.to_v1();
        let item = &v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!(item["."], json!({}));
        assert_eq!(item["f:image"], json!({}));
        assert_eq!(
            item["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"],
            json!({".": {}, "f:containerPort": {}})
        );
        assert_eq!(v1["f:spec"]["f:replicas"], json!({}));
    }

    #[test]
    fn custom_objects_merge_lists_as_their_schema_says() {
        let schema: &'static Value = Box::leak(Box::new(json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "routes": {"type": "array", "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "port": {"type": "integer"}}}},
                "tags": {"type": "array", "x-kubernetes-list-type": "set",
                    "items": {"type": "string"}},
                "args": {"type": "array", "items": {"type": "string"}}}}}})));
        let w = |manager| Writer {
            manager,
            subresource: "",
            has_status: false,
            api_version: "example.com/v1".into(),
            schema: Schema::CustomRoot(schema),
        };
        let obj = |route: &str, tag: &str, arg: &str| {
            json!({"apiVersion": "example.com/v1", "kind": "Route", "metadata": {"name": "r"},
                "spec": {"routes": [{"name": route, "port": 80}], "tags": [tag], "args": [arg]}})
        };
        let first = apply(None, &obj("a", "x", "1"), &w("one"), false).unwrap();
        // Map items and set members are each their manager's; the atomic list is one field.
        let both = apply(Some(&first), &obj("b", "y", "1"), &w("two"), false).unwrap();
        assert_eq!(
            both["spec"]["routes"],
            json!([{"name": "a", "port": 80}, {"name": "b", "port": 80}])
        );
        assert_eq!(both["spec"]["tags"], json!(["x", "y"]));
        let v1 = entries(&both).unwrap();
        let two = &v1.iter().find(|e| e.manager == "two").unwrap().fields;
        assert!(two.has_under(&[
            "f:spec".into(),
            "f:routes".into(),
            "k:{\"name\":\"b\"}".into()
        ]));
        let err = apply(Some(&first), &obj("b", "y", "2"), &w("two"), false).unwrap_err();
        assert_eq!(err.code, 409);
        assert!(err.message.contains(".spec.args"), "{}", err.message);
    }

    #[test]
    fn two_managers_conflict_and_force_takes_over() {
        let a = writer("a");
        let first = apply(None, &deployment(2, "nginx"), &a, false).expect("creates");
        let b = writer("b");
        let err = apply(Some(&first), &deployment(3, "nginx"), &b, false).unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"
        );
        // The same value is shared, not a conflict.
        let shared = apply(Some(&first), &deployment(2, "nginx"), &b, false)
            .expect("same values do not conflict");
        assert_eq!(entries(&shared).unwrap().len(), 2);
        let forced = apply(Some(&first), &deployment(3, "nginx"), &b, true).expect("force");
        assert_eq!(forced["spec"]["replicas"], 3);
        let owners = entries(&forced).unwrap();
        let a_fields = &owners.iter().find(|e| e.manager == "a").unwrap().fields;
        assert!(!a_fields.has_under(&["f:spec".into(), "f:replicas".into()]));
    }

    #[test]
    fn a_field_no_longer_applied_is_removed_unless_owned_by_another() {
        let a = writer("a");
        let mut config = deployment(2, "nginx");
        config["metadata"]["labels"]["extra"] = json!("x");
        let first = apply(None, &config, &a, false).unwrap();
        let again = apply(Some(&first), &deployment(2, "nginx"), &a, false).unwrap();
        assert!(again.pointer("/metadata/labels/extra").is_none());
        // Owned by an update too: kept.
        let mut updated = first.clone();
        updated["metadata"]["labels"]["extra"] = json!("y");
        record_update(Some(&first), &mut updated, &writer("kubectl-edit"));
        let kept = apply(Some(&updated), &deployment(2, "nginx"), &a, false).unwrap();
        assert_eq!(kept.pointer("/metadata/labels/extra"), Some(&json!("y")));
    }

    #[test]
    fn updates_take_the_fields_they_change() {
        let mut created = deployment(2, "nginx");
        record_update(None, &mut created, &writer("kubectl-create"));
        let e = entries(&created).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].operation, "Update");
        assert!(e[0]
            .fields
            .has_under(&["f:spec".into(), "f:replicas".into()]));
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(Some(&created), &mut scaled, &writer("kubectl-scale"));
        let e = entries(&scaled).unwrap();
        let create = e.iter().find(|e| e.manager == "kubectl-create").unwrap();
        let scale = e.iter().find(|e| e.manager == "kubectl-scale").unwrap();
        assert!(!create
            .fields
            .has_under(&["f:spec".into(), "f:replicas".into()]));
        assert_eq!(display(&scale.fields.paths()[0]), ".spec.replicas");
    }

    #[test]
    fn the_status_subresource_owns_status_only_and_the_main_resource_none_of_it() {
        let mut old = deployment(2, "nginx");
        record_update(None, &mut old, &writer("create"));
        let mut new = old.clone();
        new["status"] = json!({"replicas": 2});
        new["spec"]["replicas"] = json!(9);
        let mut status = writer("controller");
        status.subresource = "status";
        record_update(Some(&old), &mut new, &status);
        let e = entries(&new).unwrap();
        let c = e.iter().find(|e| e.manager == "controller").unwrap();
        assert_eq!(c.subresource, "status");
        let paths: Vec<String> = c.fields.paths().iter().map(|p| display(p)).collect();
        assert_eq!(paths, vec![".status", ".status.replicas"]);
        let created = e.iter().find(|e| e.manager == "create").unwrap();
        assert!(!created.fields.has_under(&["f:status".into()]));
    }

    #[test]
    fn force_takes_fields_from_update_managers() {
        let mut created = deployment(2, "nginx:1");
        record_update(None, &mut created, &writer("create"));
        let err = apply(
            Some(&created),
            &deployment(2, "nginx:0"),
            &writer("a"),
            false,
        )
        .unwrap_err();
        assert_eq!(err.code, 409);
        let forced = apply(
            Some(&created),
            &deployment(2, "nginx:0"),
            &writer("a"),
            true,
        )
        .expect("force wins");
        assert_eq!(
            forced.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("nginx:0"))
        );
    }

    #[test]
    fn an_apply_that_changes_nothing_returns_the_object_as_it_was() {
        let a = writer("a");
        let first = apply(None, &deployment(2, "nginx"), &a, false).unwrap();
        let again = apply(Some(&first), &deployment(2, "nginx"), &a, false).unwrap();
        assert_eq!(again, first, "not even the entry's time moves");
        let changed = apply(Some(&first), &deployment(3, "nginx"), &a, false).unwrap();
        assert_ne!(changed, first);
    }

    #[test]
    fn a_null_in_the_configuration_removes_the_field() {
        let a = writer("a");
        let mut config = deployment(2, "nginx");
        config["spec"]["minReadySeconds"] = json!(5);
        let first = apply(None, &config, &a, false).unwrap();
        config["spec"]["minReadySeconds"] = Value::Null;
        config["metadata"]["labels"] = Value::Null;
        let second = apply(Some(&first), &config, &a, false).unwrap();
        assert!(
            second.pointer("/spec/minReadySeconds").is_none(),
            "{second}"
        );
        assert!(second.pointer("/metadata/labels").is_none(), "{second}");
        assert_eq!(second.pointer("/metadata/name"), Some(&json!("d")));
    }
}
