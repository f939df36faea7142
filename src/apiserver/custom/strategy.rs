//! The strategy of one served version of a custom resource, made from its CRD: the schema
//! prunes, defaults and validates; the status subresource splits spec from status; the
//! printer columns make its Table.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use serde_json::{json, Value};

use super::{cel, schema, Served};
use crate::api::meta;
use crate::api::resource::ResourceInfo;
use crate::apiserver::http::table;
use crate::apiserver::kinds::Strategy;
use crate::apiserver::validation::{self, FieldError, NameRule};

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone)]
pub struct Column {
    name: String,
    kind: String,
    format: String,
    description: String,
    priority: i64,
    path: Vec<Step>,
}

/// A served version of a custom resource. See the module docs.
#[derive(Debug)]
pub struct CustomResource {
    /// The version's `openAPIV3Schema`.
    pub schema: Value,
    columns: Vec<Column>,
    /// `scale` subresource paths (spec replicas, status replicas, label selector), without
    /// the leading dot.
    pub scale: Option<(String, String, Option<String>)>,
    /// The schema's `x-kubernetes-validations`, compiled.
    rules: cel::Rules,
    /// The apiVersion objects are stored in (the CRD's storage version): with conversion
    /// `None`, an object read or written in another served version only changes apiVersion.
    pub storage: &'static str,
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn leak_list(v: Option<&Value>) -> &'static [&'static str] {
    let items: Vec<&'static str> = v
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(leak).collect())
        .unwrap_or_default();
    Box::leak(items.into_boxed_slice())
}

/// The served versions of a CRD's spec, leaked (see the module docs of `custom`).
pub fn rows(spec: &Value) -> Vec<Served> {
    let s = |p: &str| spec.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let (group, plural, kind) = (s("/group"), s("/names/plural"), s("/names/kind"));
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let singular = match s("/names/singular") {
        "" => kind.to_lowercase(),
        x => x.to_string(),
    };
    let group = leak(group);
    let plural = leak(plural);
    let kind = leak(kind);
    let singular = leak(&singular);
    let store = leak(&format!("{group}/{plural}"));
    let short_names = leak_list(spec.pointer("/names/shortNames"));
    let categories = leak_list(spec.pointer("/names/categories"));
    let namespaced = s("/scope") != "Cluster";
    let storage_version = super::storage_version(spec).unwrap_or_default();
    let storage = leak(&format!("{group}/{storage_version}"));
    let mut out = Vec::new();
    for v in spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let Some(name) = v.get("name").and_then(Value::as_str) else {
            continue;
        };
        let has_status = v.pointer("/subresources/status").is_some();
        let scale = v.pointer("/subresources/scale").map(|sc| {
            let p = |k: &str| {
                sc.get(k)
                    .and_then(Value::as_str)
                    .map(|x| x.trim_start_matches('.').to_string())
            };
            (
                p("specReplicasPath").unwrap_or_default(),
                p("statusReplicasPath").unwrap_or_default(),
                p("labelSelectorPath"),
            )
        });
        let info: &'static ResourceInfo = Box::leak(Box::new(ResourceInfo {
            group,
            version: leak(name),
            plural,
            singular,
            kind,
            namespaced,
            short_names,
            has_status,
            has_scale: scale.is_some(),
            extra_fields: &[],
            categories,
            subresources: &[],
            store,
        }));
        let columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| cols.iter().filter_map(column).collect())
            .unwrap_or_default();
        let schema = v
            .pointer("/schema/openAPIV3Schema")
            .cloned()
            .unwrap_or_else(
                || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            );
        let strategy: &'static CustomResource = Box::leak(Box::new(CustomResource {
            rules: cel::Rules::compile(&schema),
            storage,
            schema,
            columns,
            scale,
        }));
        out.push(Served {
            info,
            strategy,
            storage: v.get("storage").and_then(Value::as_bool) == Some(true),
        });
    }
    out
}

fn column(c: &Value) -> Option<Column> {
    let s = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Some(Column {
        name: s("name"),
        kind: s("type"),
        format: s("format"),
        description: s("description"),
        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
        path: parse_path(c.get("jsonPath")?.as_str()?)?,
    })
}

/// Strategies of leaked rows, by the row's address: `kinds::of` finds a custom resource's
/// strategy from its row alone, as it does a built-in kind's.
fn strategies() -> &'static RwLock<HashMap<usize, &'static CustomResource>> {
    static MAP: OnceLock<RwLock<HashMap<usize, &'static CustomResource>>> = OnceLock::new();
    MAP.get_or_init(Default::default)
}

/// Records the strategy of a leaked row.
pub fn remember(info: &'static ResourceInfo, strategy: &'static CustomResource) {
    strategies()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(info as *const ResourceInfo as usize, strategy);
}

/// The strategy of a custom resource's row.
pub fn of(info: &ResourceInfo) -> Option<&'static CustomResource> {
    strategies()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(info as *const ResourceInfo as usize))
        .copied()
}

impl CustomResource {
    /// The fields a write would lose to pruning (for `fieldValidation`).
    pub fn unknown_fields(&self, obj: &Value) -> Vec<String> {
        let mut copy = obj.clone();
        schema::prune(&self.schema, &mut copy, true)
    }
}

impl Strategy for CustomResource {
    /// The garbage collector does not watch these: no finalizer it would have to remove.
    fn owns_dependents(&self) -> bool {
        false
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn takes_strategic_merge(&self) -> bool {
        false
    }

    fn defaults(&self, obj: &mut Value) {
        schema::prune(&self.schema, obj, true);
        schema::default(&self.schema, obj);
    }

    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let api_version = info.api_version();
        if validation::check_generic(
            NameRule::Subdomain,
            info.namespaced,
            obj,
            Some((&api_version, info.kind)),
            &mut errs,
        )
        .is_some()
        {
            let found = schema::validate(&self.schema, obj, true);
            // As in kube, a value of the wrong type stops the rules: they would only fail
            // to evaluate on it.
            if !found.iter().any(|e| e.reason == validation::TYPE_INVALID) {
                errs.extend(self.rules.validate(obj, old, true));
            }
            errs.extend(found);
        }
        if let Some(old) = old {
            validation::check_meta_update(old, obj, &mut errs);
        }
        validation::apimachinery_finalizers(&mut errs);
        errs
    }

    fn columns(&self) -> Vec<Value> {
        if self.columns.is_empty() {
            return vec![table::name_column(), table::age_column()];
        }
        let mut out = vec![table::name_column()];
        for c in &self.columns {
            out.push(json!({
                "name": c.name,
                "type": c.kind,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            }));
        }
        out
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        if self.columns.is_empty() {
            return vec![json!(meta::name(obj)), json!(table::age(obj))];
        }
        let mut out = vec![json!(meta::name(obj))];
        for c in &self.columns {
            out.push(match find(obj, &c.path) {
                Some(v) => cell(&c.kind, v),
                None => Value::Null,
            });
        }
        out
    }
}

/// A cell of a column's type, as kube's CRD table convertor makes it: a date becomes an age,
/// a value of another type than the column's is left empty.
fn cell(kind: &str, v: &Value) -> Value {
    match kind {
        "integer" => v.as_i64().map(Value::from).unwrap_or(Value::Null),
        "number" => v.as_f64().map(Value::from).unwrap_or(Value::Null),
        "boolean" => v.as_bool().map(Value::from).unwrap_or(Value::Null),
        "date" => v
            .as_str()
            .and_then(chrono_age)
            .map(Value::from)
            .unwrap_or(Value::Null),
        _ => match v {
            Value::String(s) => json!(s),
            Value::Null => Value::Null,
            other => json!(other.to_string()),
        },
    }
}

/// The age of an RFC 3339 timestamp, as `kubectl get` prints ages.
fn chrono_age(ts: &str) -> Option<String> {
    let probe = json!({"metadata": {"creationTimestamp": ts}});
    let age = table::age(&probe);
    (!age.is_empty() && age != "<unknown>").then_some(age)
}

/// One step of a printer column's JSONPath.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `.name` or `['name']`
    Field(String),
    /// `[n]`
    Index(usize),
    /// `[*]`
    All,
    /// `[?(@.a.b=="x")]`
    Filter(Vec<String>, Value),
}

/// Parses the JSONPath subset printer columns use: `.a.b`, `[0]`, `[*]`, `['a.b']` and
/// `[?(@.type=="Ready")]`. None for anything else (the CRD is refused on write).
pub fn parse_path(p: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let b = p.trim().trim_start_matches('{').trim_end_matches('}');
    let b = b.strip_prefix('$').unwrap_or(b);
    let chars: Vec<char> = b.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                i = start;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                if i == start {
                    return None;
                }
                steps.push(Step::Field(chars[start..i].iter().collect()));
            }
            '[' => {
                let end = chars[i..].iter().position(|c| *c == ']')? + i;
                let inner: String = chars[i + 1..end].iter().collect();
                let inner = inner.trim();
                if inner == "*" {
                    steps.push(Step::All);
                } else if let Ok(n) = inner.parse::<usize>() {
                    steps.push(Step::Index(n));
                } else if let Some(q) = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\''))
                {
                    steps.push(Step::Field(q.to_string()));
                } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|s| s.strip_suffix(')'))
                {
                    let (lhs, rhs) = f.split_once("==")?;
                    let rhs = rhs.trim();
                    let value = if let Some(s) = rhs
                        .strip_prefix('"')
                        .and_then(|s| s.strip_suffix('"'))
                        .or_else(|| rhs.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
                    {
                        json!(s)
                    } else {
                        serde_json::from_str(rhs).ok()?
                    };
                    let fields = lhs.trim().split('.').map(str::to_string).collect();
                    steps.push(Step::Filter(fields, value));
                } else {
                    return None;
                }
                i = end + 1;
            }
            _ => return None,
        }
    }
    Some(steps)
}

/// The first value a path finds, as kube's table convertor takes the first result.
fn find<'a>(v: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    let Some((step, rest)) = steps.split_first() else {
        return Some(v);
    };
    match step {
        Step::Field(f) => find(v.get(f)?, rest),
        Step::Index(n) => find(v.get(*n)?, rest),
        Step::All => v.as_array()?.iter().find_map(|x| find(x, rest)),
        Step::Filter(fields, want) => v.as_array()?.iter().find_map(|x| {
            let mut cur = x;
            for f in fields {
                cur = cur.get(f)?;
            }
            (cur == want).then(|| find(x, rest)).flatten()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_column_paths_find_what_kube_finds() {
        let obj = json!({"spec": {"size": 3, "a.b": "dot"}, "status": {"conditions": [
            {"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        let get = |p: &str| find(&obj, &parse_path(p).unwrap()).cloned();
        assert_eq!(get(".spec.size"), Some(json!(3)));
        assert_eq!(get(".spec['a.b']"), Some(json!("dot")));
        assert_eq!(get(".status.conditions[1].type"), Some(json!("Ready")));
        assert_eq!(
            get(".status.conditions[?(@.type==\"Ready\")].status"),
            Some(json!("True"))
        );
        assert_eq!(get(".status.conditions[*].type"), Some(json!("Synced")));
        assert_eq!(get(".spec.missing"), None);
        assert!(parse_path("spec.size").is_none());
        assert_eq!(cell("integer", &json!("x")), Value::Null);
        assert_eq!(cell("string", &json!(3)), json!("3"));
    }
}
