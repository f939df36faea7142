//! Structural OpenAPI v3 schemas of custom resources, as kube-apiextensions-apiserver applies
//! them to every write: unknown fields are pruned, nulls dropped where not `nullable`,
//! defaults filled in, then the object is validated (types, `required`, `enum`, bounds,
//! lengths, `pattern`, item counts, `int-or-string`, embedded resources).
//!
//! A schema is the CRD's `openAPIV3Schema` as JSON; nothing is compiled ahead but the
//! `pattern`s, which are cached by text.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};

use crate::apiserver::validation::{child, index, key, render_json, FieldError};

/// Fields every object keeps at its root (and an embedded resource at its own).
const OBJECT_ROOT: &[&str] = &["apiVersion", "kind", "metadata"];

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn embedded(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn int_or_string(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn nullable(schema: &Value) -> bool {
    schema
        .get("nullable")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

/// The schema of a map's values: `additionalProperties` when it is a schema.
fn additional(schema: &Value) -> Option<&Value> {
    schema.get("additionalProperties").filter(|a| a.is_object())
}

/// Removes what the schema does not know (kube's pruning), returning the pruned paths for
/// `fieldValidation=Strict|Warn` (`spec.foo`, `spec.items[0].bar`). `root` says the value is
/// a whole object, whose apiVersion, kind and metadata are always kept.
pub fn prune(schema: &Value, obj: &mut Value, root: bool) -> Vec<String> {
    let mut pruned = Vec::new();
    prune_at(schema, obj, "", root, &mut pruned);
    pruned
}

fn prune_at(schema: &Value, v: &mut Value, path: &str, root: bool, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let keep_root = root || embedded(schema);
            let props = properties(schema);
            let extra = additional(schema);
            let preserve = preserves_unknown(schema)
                || schema.get("additionalProperties") == Some(&Value::Bool(true));
            let names: Vec<String> = m.keys().cloned().collect();
            for name in names {
                // apiVersion and kind are the object's; ObjectMeta is validated as such.
                if keep_root && OBJECT_ROOT.contains(&name.as_str()) {
                    continue;
                }
                let (sub, here) = match props.and_then(|p| p.get(&name)) {
                    Some(s) => (Some(s), child(path, &name)),
                    None if extra.is_some() => (extra, key(path, &name)),
                    None => (None, child(path, &name)),
                };
                match sub {
                    Some(s) => {
                        if let Some(val) = m.get_mut(&name) {
                            prune_at(s, val, &here, false, out);
                        }
                    }
                    None if preserve => {}
                    None => {
                        m.remove(&name);
                        out.push(here);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_at(s, item, &index(path, i), false, out);
                }
            }
        }
        _ => {}
    }
}

/// Drops nulls the schema does not allow (kube does so before defaulting, so a default
/// replaces them) and fills in `default`s, depth first.
pub fn default(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(props) = properties(schema) {
                for (name, s) in props {
                    if m.get(name).is_some_and(Value::is_null) && !nullable(s) {
                        m.remove(name);
                    }
                    if !m.contains_key(name) {
                        if let Some(d) = s.get("default") {
                            m.insert(name.clone(), d.clone());
                        }
                    }
                    if let Some(val) = m.get_mut(name) {
                        default(s, val);
                    }
                }
            }
            if let (Some(s), None) = (additional(schema), properties(schema)) {
                for val in m.values_mut() {
                    default(s, val);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for item in items.iter_mut() {
                    default(s, item);
                }
            }
        }
        _ => {}
    }
}

/// Validates `v` against `schema`; `root` as in [`prune`].
pub fn validate(schema: &Value, v: &Value, root: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_at(schema, v, "", root, &mut errs);
    errs
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(want: &str, v: &Value) -> bool {
    match want {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.as_i64().is_some() || v.as_u64().is_some(),
        "number" => v.is_number(),
        _ => true,
    }
}

fn validate_at(schema: &Value, v: &Value, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    let shown = if path.is_empty() { "body" } else { path };
    if v.is_null() {
        if !nullable(schema) && schema.get("type").is_some() {
            let want = schema["type"].as_str().unwrap_or("object");
            errs.push(FieldError::type_invalid(
                path,
                "\"null\"".into(),
                &format!("{shown} in body must be of type {want}: \"null\""),
            ));
        }
        return;
    }
    if int_or_string(schema) {
        if !(v.is_string() || v.as_i64().is_some()) {
            errs.push(FieldError::type_invalid(
                path,
                render_json(v),
                &format!(
                    "{shown} in body must be of type integer,string: {:?}",
                    type_name(v)
                ),
            ));
            return;
        }
    } else if let Some(want) = schema.get("type").and_then(Value::as_str) {
        if !type_ok(want, v) {
            errs.push(FieldError::type_invalid(
                path,
                format!("{:?}", type_name(v)),
                &format!("{shown} in body must be of type {want}: {:?}", type_name(v)),
            ));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            let shown: Vec<String> = allowed.iter().map(render_json).collect();
            let detail = format!("supported values: {}", shown.join(", "));
            errs.push(FieldError::new(
                crate::apiserver::validation::NOT_SUPPORTED,
                path,
                format!("Unsupported value: {}: {detail}", render_json(v)),
            ));
        }
    }
    match v {
        Value::Number(n) => check_number(schema, n.as_f64().unwrap_or(0.0), v, path, shown, errs),
        Value::String(s) => check_string(schema, s, v, path, shown, errs),
        Value::Array(items) => {
            check_items(schema, items, path, shown, errs);
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_at(s, item, &index(path, i), false, errs);
                }
            }
        }
        Value::Object(m) => {
            let is_root = root || embedded(schema);
            if embedded(schema) {
                for f in ["apiVersion", "kind"] {
                    if m.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                        errs.push(FieldError::required(child(path, f), "must not be empty"));
                    }
                }
            }
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for r in required.iter().filter_map(Value::as_str) {
                    if !m.contains_key(r) {
                        errs.push(FieldError::required(child(path, r), ""));
                    }
                }
            }
            check_count(schema, "Properties", m.len(), path, shown, errs);
            let props = properties(schema);
            for (name, val) in m {
                if is_root && OBJECT_ROOT.contains(&name.as_str()) {
                    continue;
                }
                if let Some(s) = props.and_then(|p| p.get(name)) {
                    validate_at(s, val, &child(path, name), false, errs);
                } else if let Some(s) = additional(schema) {
                    validate_at(s, val, &key(path, name), false, errs);
                }
            }
        }
        _ => {}
    }
}

fn check_number(
    schema: &Value,
    n: f64,
    v: &Value,
    path: &str,
    shown: &str,
    errs: &mut Vec<FieldError>,
) {
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    let flag = |k: &str| schema.get(k).and_then(Value::as_bool).unwrap_or(false);
    let fmt = |x: f64| {
        if x.fract() == 0.0 && x.abs() < 1e15 {
            format!("{}", x as i64)
        } else {
            x.to_string()
        }
    };
    if let Some(max) = num("maximum") {
        if flag("exclusiveMaximum") && n >= max {
            errs.push(FieldError::invalid(
                path,
                render_json(v),
                &format!("{shown} in body should be less than {}", fmt(max)),
            ));
        } else if n > max {
            errs.push(FieldError::invalid(
                path,
                render_json(v),
                &format!(
                    "{shown} in body should be less than or equal to {}",
                    fmt(max)
                ),
            ));
        }
    }
    if let Some(min) = num("minimum") {
        if flag("exclusiveMinimum") && n <= min {
            errs.push(FieldError::invalid(
                path,
                render_json(v),
                &format!("{shown} in body should be greater than {}", fmt(min)),
            ));
        } else if n < min {
            errs.push(FieldError::invalid(
                path,
                render_json(v),
                &format!(
                    "{shown} in body should be greater than or equal to {}",
                    fmt(min)
                ),
            ));
        }
    }
    if let Some(m) = num("multipleOf").filter(|m| *m > 0.0) {
        if (n / m).fract().abs() > 1e-9 {
            errs.push(FieldError::invalid(
                path,
                render_json(v),
                &format!("{shown} in body should be a multiple of {}", fmt(m)),
            ));
        }
    }
}

fn check_string(
    schema: &Value,
    s: &str,
    v: &Value,
    path: &str,
    shown: &str,
    errs: &mut Vec<FieldError>,
) {
    let chars = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if chars > max {
            errs.push(FieldError::new(
                crate::apiserver::validation::TOO_LONG,
                path,
                format!("Too long: may not be more than {max} bytes"),
            ));
        }
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if chars < min {
            errs.push(FieldError::invalid(
                path,
                render_json(v),
                &format!("{shown} in body should be at least {min} chars long"),
            ));
        }
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        if let Some(re) = pattern(p) {
            if !re.is_match(s) {
                errs.push(FieldError::invalid(
                    path,
                    render_json(v),
                    &format!("{shown} in body should match '{p}'"),
                ));
            }
        }
    }
}

/// `max<what>`/`min<what>` (`Items` or `Properties`) against a count, with kube's messages.
fn check_count(
    schema: &Value,
    what: &str,
    n: usize,
    path: &str,
    shown: &str,
    errs: &mut Vec<FieldError>,
) {
    let bound = |k: String| schema.get(k).and_then(Value::as_u64);
    if let Some(max) = bound(format!("max{what}")) {
        if n as u64 > max {
            errs.push(FieldError::new(
                crate::apiserver::validation::TOO_MANY,
                path,
                format!("Too many: {n}: must have at most {max} items"),
            ));
        }
    }
    if let Some(min) = bound(format!("min{what}")) {
        if (n as u64) < min {
            errs.push(FieldError::invalid(
                path,
                n.to_string(),
                &format!(
                    "{shown} in body should have at least {min} {}",
                    what.to_lowercase()
                ),
            ));
        }
    }
}

fn check_items(
    schema: &Value,
    items: &[Value],
    path: &str,
    shown: &str,
    errs: &mut Vec<FieldError>,
) {
    check_count(schema, "Items", items.len(), path, shown, errs);
    let unique = schema
        .get("uniqueItems")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set");
    if unique {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                errs.push(FieldError::duplicate(index(path, i), render_json(item), ""));
            }
        }
    }
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
        let keys: Vec<&str> = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let key_of = |item: &Value| -> Vec<Value> {
            keys.iter()
                .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
                .collect()
        };
        for (i, item) in items.iter().enumerate() {
            let k = key_of(item);
            if items[..i].iter().any(|o| key_of(o) == k) {
                let shown: Vec<String> = keys
                    .iter()
                    .zip(&k)
                    .map(|(n, v)| format!("{n}:{}", render_json(v)))
                    .collect();
                errs.push(FieldError::duplicate(
                    index(path, i),
                    format!("map[string]interface {{}}{{{}}}", shown.join(", ")),
                    "",
                ));
            }
        }
    }
}

/// A `pattern`, compiled once (ECMA 262 in kube; the common subset is the same here). An
/// invalid one is refused when the CRD is written, so None only for what got past that.
pub fn pattern(p: &str) -> Option<regex::Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if cache.len() > 4096 {
        cache.clear();
    }
    cache
        .entry(p.to_string())
        .or_insert_with(|| regex::Regex::new(p).ok())
        .clone()
}

/// Checks that a CRD's schema is structural enough to serve: every node with properties,
/// items or additionalProperties says its type (or preserves unknown fields / is
/// int-or-string), patterns compile, and defaults are valid. Returns kube's messages under
/// `path` (`spec.versions[0].schema.openAPIV3Schema`).
pub fn check_structural(schema: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    structural_at(schema, path, true, &mut errs);
    errs
}

fn structural_at(s: &Value, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    let Some(m) = s.as_object() else {
        errs.push(FieldError::invalid(
            path,
            render_json(s),
            "must be an object",
        ));
        return;
    };
    let ty = m.get("type").and_then(Value::as_str);
    if let Some(t) = ty {
        if !["object", "array", "string", "integer", "number", "boolean"].contains(&t) {
            errs.push(FieldError::not_supported(
                child(path, "type"),
                render_json(&m["type"]),
                &["array", "boolean", "integer", "number", "object", "string"],
            ));
        }
    } else if !int_or_string(s) && !preserves_unknown(s) && !root {
        errs.push(FieldError::required(
            child(path, "type"),
            "must not be empty for specified object fields",
        ));
    }
    if root && ty != Some("object") {
        errs.push(FieldError::invalid(
            child(path, "type"),
            render_json(m.get("type").unwrap_or(&Value::Null)),
            "must be object at the root",
        ));
    }
    if let Some(p) = m.get("pattern").and_then(Value::as_str) {
        if regex::Regex::new(p).is_err() {
            errs.push(FieldError::invalid(
                child(path, "pattern"),
                render_json(&m["pattern"]),
                "must be a valid regular expression",
            ));
        }
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            structural_at(sub, &format!("{path}.properties[{name}]"), false, errs);
        }
    }
    if let Some(items) = m.get("items") {
        structural_at(items, &child(path, "items"), false, errs);
    } else if ty == Some("array") {
        errs.push(FieldError::required(
            child(path, "items"),
            "must be specified",
        ));
    }
    if let Some(a) = m.get("additionalProperties").filter(|a| a.is_object()) {
        if m.contains_key("properties") {
            errs.push(FieldError::forbidden(
                child(path, "additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            ));
        }
        structural_at(a, &child(path, "additionalProperties"), false, errs);
    }
    if let Some(d) = m.get("default") {
        let mut errors = Vec::new();
        validate_at(s, d, &child(path, "default"), false, &mut errors);
        errs.extend(errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["size"], "properties": {
            "size": {"type": "integer", "minimum": 1, "maximum": 10},
            "port": {"x-kubernetes-int-or-string": true},
            "name": {"type": "string", "maxLength": 3, "pattern": "^[a-z]+$"},
            "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
            "mode": {"type": "string", "default": "fast"},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "inner": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {}}
        }}}})
    }

    #[test]
    fn pruning_keeps_what_the_schema_knows() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "x": 1},
            "extra": 1, "spec": {"size": 1, "bogus": {"a": 1}, "free": {"any": [1]},
            "env": {"A": "1"}, "tags": ["a"],
            "inner": {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {}}}});
        let pruned = prune(&schema(), &mut obj, true);
        assert_eq!(pruned, ["extra", "spec.bogus", "spec.inner.spec"]);
        assert_eq!(obj["metadata"]["x"], 1, "metadata is not the schema's");
        assert_eq!(obj["spec"]["free"]["any"], json!([1]));
        assert_eq!(obj["spec"]["env"]["A"], "1");
        assert_eq!(obj["spec"]["inner"]["kind"], "Pod");
    }

    #[test]
    fn defaults_fill_absent_and_null_fields() {
        let mut obj = json!({"spec": {"size": 1, "mode": null}});
        default(&schema(), &mut obj);
        assert_eq!(obj["spec"]["mode"], "fast");
    }

    #[test]
    fn validation_speaks_kube() {
        let msgs = |spec: Value| -> Vec<String> {
            validate(&schema(), &json!({"spec": spec}), true)
                .iter()
                .map(FieldError::to_string_full)
                .collect()
        };
        assert!(
            msgs(json!({"size": 5, "port": "http", "name": "ab", "tags": ["a", "b"]})).is_empty()
        );
        assert_eq!(msgs(json!({})), ["spec.size: Required value"]);
        assert_eq!(
            msgs(json!({"size": "5"})),
            [
                r#"spec.size: Invalid value: "string": spec.size in body must be of type integer: "string""#
            ]
        );
        assert_eq!(
            msgs(json!({"size": 0})),
            ["spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"]
        );
        assert_eq!(
            msgs(json!({"size": 1, "name": "AB"})),
            [r#"spec.name: Invalid value: "AB": spec.name in body should match '^[a-z]+$'"#]
        );
        assert_eq!(
            msgs(json!({"size": 1, "name": "abcd"})),
            ["spec.name: Too long: may not be more than 3 bytes"]
        );
        assert_eq!(
            msgs(json!({"size": 1, "tags": ["a", "a"]})),
            [r#"spec.tags[1]: Duplicate value: "a""#]
        );
        assert_eq!(msgs(json!({"size": 1, "port": 80})), Vec::<String>::new());
        assert_eq!(msgs(json!({"size": 1, "port": true})).len(), 1);
        assert_eq!(
            msgs(json!({"size": 1, "inner": {"kind": "Pod"}})),
            ["spec.inner.apiVersion: Required value: must not be empty"]
        );
    }

    #[test]
    fn schemas_must_be_structural() {
        assert!(check_structural(&schema(), "s").is_empty());
        let errs = check_structural(
            &json!({"type": "object", "properties": {"a": {"properties": {}},
                "b": {"type": "array"}, "c": {"type": "string", "pattern": "("},
                "d": {"type": "integer", "default": "x"}}}),
            "s",
        );
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "s.properties[a].type",
                "s.properties[b].items",
                "s.properties[c].pattern",
                "s.properties[d].default"
            ]
        );
        assert_eq!(check_structural(&json!({"type": "string"}), "s").len(), 1);
    }
}
