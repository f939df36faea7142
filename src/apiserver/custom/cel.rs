//! `x-kubernetes-validations`: the CEL rules of a CRD schema, as kube-apiextensions-apiserver
//! evaluates them. A served version compiles its rules once ([`Rules::compile`]), into a tree
//! that mirrors only the parts of the schema holding rules; every write then evaluates each
//! rule with `self` bound to the value at its node (and `oldSelf` to the old value there, for
//! transition rules on updates), and a rule that is not `true` is a field error at that node.
//!
//! The interpreter is cel-rust (`cel`) with its strings, lists and math extensions. It checks
//! no types ahead: a rule that names a variable other than `self`/`oldSelf` is refused when
//! the CRD is written, a rule that is not a boolean fails when it runs.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, MapExpr, StructExpr};
use cel::objects::{Key, Map};
use cel::{Context, Env, IdedExpr, Program};
use serde_json::Value;

use crate::apiserver::validation::{child, index, key, render_json, FieldError};

/// The environment every rule is compiled and run in.
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // The three extensions are fixed code; their declarations cannot clash.
        let _ = env.add_extension(cel::extensions::strings);
        let _ = env.add_extension(cel::extensions::lists);
        let _ = env.add_extension(cel::extensions::math);
        k8s_lists(&mut env);
        Arc::new(env)
    })
}

/// Kubernetes' CEL list library (k8s.io/apiserver's `library.Lists`): `isSorted()`, `sum()`,
/// `min()`, `max()`, `indexOf(x)` and `lastIndexOf(x)` on lists.
fn k8s_lists(env: &mut Env) {
    use cel::common::types::{DYN_TYPE, LIST_TYPE};
    let functions: [(
        &str,
        Vec<cel::common::types::Type>,
        cel::common::functions::Function,
    ); 6] = [
        ("isSorted", vec![], is_sorted),
        ("sum", vec![], sum),
        ("min", vec![], list_min),
        ("max", vec![], list_max),
        ("indexOf", vec![DYN_TYPE], index_of),
        ("lastIndexOf", vec![DYN_TYPE], last_index_of),
    ];
    for (name, args, f) in functions {
        // Fixed declarations on the receiver type list: nothing they could clash with.
        let _ = env.add_member_overload(name, &format!("list.{name}"), LIST_TYPE, args, f);
    }
}

type CowVal<'b, 'v> = cel::common::value::CowVal<'b, 'v>;

/// The list a list function was called on, and its other arguments, as values.
fn list_args(
    args: &[CowVal<'_, '_>],
    function: &str,
) -> Result<Vec<cel::Value>, cel::ExecutionError> {
    let values = args
        .iter()
        .map(|a| cel::Value::try_from(a.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    match values.first() {
        Some(cel::Value::List(_)) => Ok(values),
        _ => Err(cel::ExecutionError::function_error(function, "not a list")),
    }
}

fn items(values: &[cel::Value]) -> &[cel::Value] {
    match values.first() {
        Some(cel::Value::List(l)) => l.as_slice(),
        _ => &[],
    }
}

fn answer<'b, 'v>(v: cel::Value) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    let boxed: Box<dyn cel::common::value::Val> = v.try_into()?;
    Ok(CowVal::Owned(boxed))
}

fn ordered(
    a: &cel::Value,
    b: &cel::Value,
    function: &str,
) -> Result<std::cmp::Ordering, cel::ExecutionError> {
    a.partial_cmp(b).ok_or_else(|| {
        cel::ExecutionError::function_error(function, "list elements must be comparable")
    })
}

fn is_sorted<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    let values = list_args(&args, "isSorted")?;
    let list = items(&values);
    for w in list.windows(2) {
        if ordered(&w[0], &w[1], "isSorted")? == std::cmp::Ordering::Greater {
            return answer(cel::Value::Bool(false));
        }
    }
    answer(cel::Value::Bool(true))
}

fn sum<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    let values = list_args(&args, "sum")?;
    let mut list = items(&values).iter();
    let Some(first) = list.next() else {
        return answer(cel::Value::Int(0));
    };
    let mut total = first.clone();
    for v in list {
        total = (total + v.clone())?;
    }
    answer(total)
}

fn extreme<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
    function: &str,
    keep: std::cmp::Ordering,
) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    let values = list_args(&args, function)?;
    let mut list = items(&values).iter();
    let Some(mut best) = list.next() else {
        return Err(cel::ExecutionError::function_error(
            function,
            format!("{function} called on empty list"),
        ));
    };
    for v in list {
        if ordered(v, best, function)? == keep {
            best = v;
        }
    }
    answer(best.clone())
}

fn list_min<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    extreme(args, "min", std::cmp::Ordering::Less)
}

fn list_max<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    extreme(args, "max", std::cmp::Ordering::Greater)
}

fn position<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
    function: &str,
    last: bool,
) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    let values = list_args(&args, function)?;
    let wanted = values.get(1).cloned().unwrap_or(cel::Value::Null);
    let list = items(&values);
    let found = if last {
        list.iter().rposition(|v| *v == wanted)
    } else {
        list.iter().position(|v| *v == wanted)
    };
    answer(cel::Value::Int(found.map_or(-1, |i| i as i64)))
}

fn index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    position(args, "indexOf", false)
}

fn last_index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    position(args, "lastIndexOf", true)
}

/// One compiled `x-kubernetes-validations` entry.
struct Rule {
    source: String,
    program: Program,
    message: Option<String>,
    message_expression: Option<Program>,
    reason: Option<String>,
    /// `fieldPath`, as a path relative to the rule's node (`spec.replicas` → `replicas`).
    field_path: Vec<String>,
    /// Whether the rule reads `oldSelf`: a transition rule, run on updates only.
    transition: bool,
}

/// The rules of one schema node and of the nodes below it that have any.
#[derive(Default)]
pub struct Rules {
    here: Vec<Rule>,
    /// The node's `type`, shown as the invalid value ("object", "string", …) as kube does.
    type_name: String,
    properties: HashMap<String, Rules>,
    items: Option<Box<Rules>>,
    additional: Option<Box<Rules>>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field(
                "here",
                &self.here.iter().map(|r| &r.source).collect::<Vec<_>>(),
            )
            .field("properties", &self.properties)
            .field("items", &self.items)
            .field("additional", &self.additional)
            .finish()
    }
}

/// Compiles one rule, or says why it cannot be (kube's "compilation failed" detail).
fn compile_one(source: &str) -> Result<(Program, bool), String> {
    let program = env()
        .compile(source)
        .map_err(|e| format!("compilation failed: ERROR: <input>: {e}"))?;
    let mut free = Vec::new();
    free_names(program.expression(), &mut Vec::new(), &mut free);
    if let Some(v) = free.iter().find(|v| !["self", "oldSelf"].contains(v)) {
        return Err(format!(
            "compilation failed: ERROR: <input>: undeclared reference to '{v}' (in container '')"
        ));
    }
    let transition = free.contains(&"oldSelf");
    Ok((program, transition))
}

/// Type names a rule may compare with (`type(self) == int`).
const TYPE_NAMES: &[&str] = &[
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// The identifiers an expression reads that no comprehension (`all`, `exists`, `map`, …)
/// around them binds: what the rule needs from outside.
fn free_names<'e>(e: &'e IdedExpr, bound: &mut Vec<&'e str>, out: &mut Vec<&'e str>) {
    match &e.expr {
        Expr::Ident(name)
            if !name.starts_with('@')
                && !bound.contains(&name.as_str())
                && !TYPE_NAMES.contains(&name.as_str())
                && !out.contains(&name.as_str()) =>
        {
            out.push(name);
        }
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                free_names(t, bound, out);
            }
            for a in &call.args {
                free_names(a, bound, out);
            }
        }
        Expr::Comprehension(c) => {
            free_names(&c.iter_range, bound, out);
            free_names(&c.accu_init, bound, out);
            let depth = bound.len();
            bound.push(&c.iter_var);
            if let Some(v) = &c.iter_var2 {
                bound.push(v);
            }
            bound.push(&c.accu_var);
            for x in [&c.loop_cond, &c.loop_step, &c.result] {
                free_names(x, bound, out);
            }
            bound.truncate(depth);
        }
        Expr::List(l) => {
            for x in &l.elements {
                free_names(x, bound, out);
            }
        }
        Expr::Map(MapExpr { entries }) | Expr::Struct(StructExpr { entries, .. }) => {
            for entry in entries {
                match &entry.expr {
                    EntryExpr::StructField(f) => free_names(&f.value, bound, out),
                    EntryExpr::MapEntry(m) => {
                        free_names(&m.key, bound, out);
                        free_names(&m.value, bound, out);
                    }
                }
            }
        }
        Expr::Select(s) => free_names(&s.operand, bound, out),
        _ => {}
    }
}

/// Splits a rule's `fieldPath` (`.spec.replicas`, `.map['a.b']`) into fields; None when it is
/// not a plain relative path.
fn field_path(p: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for step in super::strategy::parse_path(p)? {
        match step {
            super::strategy::Step::Field(f) => out.push(f),
            _ => return None,
        }
    }
    Some(out)
}

impl Rules {
    /// Compiles every rule under `schema`. Rules that do not compile are left out here: the
    /// CRD's validation ([`check`]) refuses them before they are ever served.
    pub fn compile(schema: &Value) -> Rules {
        let mut rules = Rules {
            type_name: schema
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("object")
                .to_string(),
            ..Rules::default()
        };
        for r in schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(source) = r.get("rule").and_then(Value::as_str) else {
                continue;
            };
            let Ok((program, transition)) = compile_one(source) else {
                continue;
            };
            let s = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
            rules.here.push(Rule {
                source: source.trim().to_string(),
                program,
                message: s("message").filter(|m| !m.is_empty()),
                message_expression: s("messageExpression")
                    .and_then(|m| compile_one(&m).ok())
                    .map(|(p, _)| p),
                reason: s("reason"),
                field_path: s("fieldPath")
                    .and_then(|p| field_path(&p))
                    .unwrap_or_default(),
                transition,
            });
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                let r = Rules::compile(sub);
                if !r.is_empty() {
                    rules.properties.insert(name.clone(), r);
                }
            }
        }
        let boxed = |s: Option<&Value>| {
            s.filter(|s| s.is_object())
                .map(Rules::compile)
                .filter(|r| !r.is_empty())
                .map(Box::new)
        };
        rules.items = boxed(schema.get("items"));
        rules.additional = boxed(schema.get("additionalProperties"));
        rules
    }

    /// Whether no node holds a rule.
    pub fn is_empty(&self) -> bool {
        self.here.is_empty()
            && self.properties.is_empty()
            && self.items.is_none()
            && self.additional.is_none()
    }

    /// Evaluates every rule against the object `v` (and `old`, on an update). `root` says `v`
    /// is the whole object, whose metadata rules see only `name` and `generateName`.
    pub fn validate(&self, v: &Value, old: Option<&Value>, root: bool) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if !self.is_empty() {
            self.validate_at(v, old, "", root, &mut errs);
        }
        errs
    }

    fn validate_at(
        &self,
        v: &Value,
        old: Option<&Value>,
        path: &str,
        root: bool,
        errs: &mut Vec<FieldError>,
    ) {
        if v.is_null() {
            return;
        }
        if !self.here.is_empty() {
            let me = to_cel(v, root);
            let old_me = old.map(|o| to_cel(o, root));
            for rule in &self.here {
                if rule.transition && old_me.is_none() {
                    continue;
                }
                self.run(rule, &me, old_me.as_ref(), path, errs);
            }
        }
        match v {
            Value::Object(m) => {
                for (name, sub) in &self.properties {
                    if let Some(x) = m.get(name) {
                        let o = old.and_then(|o| o.get(name));
                        sub.validate_at(x, o, &child(path, name), false, errs);
                    }
                }
                if let Some(sub) = &self.additional {
                    for (k, x) in m {
                        let o = old.and_then(|o| o.get(k));
                        sub.validate_at(x, o, &key(path, k), false, errs);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(sub) = &self.items {
                    // List items do not correlate with old ones: transition rules under a
                    // list never run, as in kube for lists that are not maps.
                    for (i, x) in items.iter().enumerate() {
                        sub.validate_at(x, None, &index(path, i), false, errs);
                    }
                }
            }
            _ => {}
        }
    }

    fn run(
        &self,
        rule: &Rule,
        me: &cel::Value,
        old: Option<&cel::Value>,
        path: &str,
        errs: &mut Vec<FieldError>,
    ) {
        let mut ctx = Context::with_env(env().clone());
        ctx.add_variable_from_value("self", me.clone());
        if let Some(o) = old {
            ctx.add_variable_from_value("oldSelf", o.clone());
        }
        let shown = render_json(&Value::String(self.type_name.clone()));
        let at = |path: &str| path.to_string();
        match rule.program.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => {
                let mut field = at(path);
                for f in &rule.field_path {
                    field = child(&field, f);
                }
                let detail = rule
                    .message_expression
                    .as_ref()
                    .and_then(|m| match m.execute(&ctx) {
                        Ok(cel::Value::String(s)) if !s.trim().is_empty() => {
                            Some(s.trim().to_string())
                        }
                        _ => None,
                    })
                    .or_else(|| rule.message.clone())
                    .unwrap_or_else(|| format!("failed rule: {}", rule.source));
                errs.push(match rule.reason.as_deref() {
                    Some("FieldValueForbidden") => FieldError::forbidden(field, &detail),
                    Some("FieldValueRequired") => FieldError::required(field, &detail),
                    Some("FieldValueDuplicate") => FieldError::duplicate(field, shown, ""),
                    _ => FieldError::invalid(field, shown, &detail),
                });
            }
            Ok(other) => errs.push(FieldError::invalid(
                at(path),
                shown,
                &format!(
                    "rule evaluation error: rule did not evaluate to a boolean: {}",
                    other.type_of()
                ),
            )),
            Err(e) => errs.push(FieldError::invalid(
                at(path),
                shown,
                &format!("rule evaluation error: {e}"),
            )),
        }
    }
}

/// A JSON value as CEL sees it: integers as `int`, other numbers as `double`, objects as maps
/// with string keys. At an object's root, `metadata` holds only `name` and `generateName`.
fn to_cel(v: &Value, root: bool) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => n
                .as_u64()
                .map(cel::Value::UInt)
                .unwrap_or_else(|| cel::Value::Float(n.as_f64().unwrap_or(0.0))),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(|x| to_cel(x, false)).collect())),
        Value::Object(m) => {
            let mut out = HashMap::with_capacity(m.len());
            for (k, x) in m {
                let value = if root && k == "metadata" {
                    let mut meta = serde_json::Map::new();
                    for f in ["name", "generateName"] {
                        if let Some(s) = x.get(f) {
                            meta.insert(f.to_string(), s.clone());
                        }
                    }
                    to_cel(&Value::Object(meta), false)
                } else {
                    to_cel(x, false)
                };
                out.insert(Key::String(Arc::new(k.clone())), value);
            }
            cel::Value::Map(Map { map: Arc::new(out) })
        }
    }
}

/// Checks the rules under a CRD version's schema as kube does when the CRD is written: each
/// compiles, reads only `self`/`oldSelf`, has a one-line message, and a known reason.
pub fn check(schema: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        let at = child(path, "x-kubernetes-validations");
        for (i, r) in rules.iter().enumerate() {
            let here = index(&at, i);
            let Some(source) = r.get("rule").and_then(Value::as_str) else {
                errs.push(FieldError::required(child(&here, "rule"), ""));
                continue;
            };
            if let Err(e) = compile_one(source) {
                errs.push(FieldError::invalid(
                    child(&here, "rule"),
                    render_json(&Value::String(source.to_string())),
                    &e,
                ));
            }
            if let Some(m) = r.get("messageExpression").and_then(Value::as_str) {
                if let Err(e) = compile_one(m) {
                    errs.push(FieldError::invalid(
                        child(&here, "messageExpression"),
                        render_json(&Value::String(m.to_string())),
                        &format!("messageExpression {e}"),
                    ));
                }
            }
            let message = r.get("message").and_then(Value::as_str).unwrap_or("");
            if message.contains('\n') {
                errs.push(FieldError::invalid(
                    child(&here, "message"),
                    render_json(&Value::String(message.to_string())),
                    "message must not contain line breaks",
                ));
            } else if message.is_empty() && source.contains('\n') {
                errs.push(FieldError::required(
                    child(&here, "message"),
                    "message must be specified if rule contains line breaks",
                ));
            }
            if let Some(reason) = r.get("reason").and_then(Value::as_str) {
                const REASONS: &[&str] = &[
                    "FieldValueDuplicate",
                    "FieldValueForbidden",
                    "FieldValueInvalid",
                    "FieldValueRequired",
                ];
                if !REASONS.contains(&reason) {
                    errs.push(FieldError::not_supported(
                        child(&here, "reason"),
                        render_json(&Value::String(reason.to_string())),
                        REASONS,
                    ));
                }
            }
            if let Some(p) = r.get("fieldPath").and_then(Value::as_str) {
                if field_path(p).is_none() {
                    errs.push(FieldError::invalid(
                        child(&here, "fieldPath"),
                        render_json(&Value::String(p.to_string())),
                        "must be a valid path",
                    ));
                }
            }
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            check(sub, &format!("{path}.properties[{name}]"), errs);
        }
    }
    for k in ["items", "additionalProperties"] {
        if let Some(sub) = schema.get(k).filter(|s| s.is_object()) {
            check(sub, &child(path, k), errs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object",
                "x-kubernetes-validations": [
                    {"rule": "self.minReplicas <= self.maxReplicas",
                     "message": "minReplicas cannot be larger than maxReplicas"},
                    {"rule": "!has(self.mode) || self.mode in ['a', 'b']", "fieldPath": ".mode",
                     "reason": "FieldValueForbidden"},
                    {"rule": "self.name.startsWith('w-')",
                     "messageExpression": "'name ' + self.name + ' must start with w-'"}],
                "properties": {
                    "minReplicas": {"type": "integer"},
                    "maxReplicas": {"type": "integer"},
                    "mode": {"type": "string"},
                    "name": {"type": "string"},
                    "immutable": {"type": "string",
                        "x-kubernetes-validations": [{"rule": "self == oldSelf",
                            "message": "Value is immutable"}]},
                    "tags": {"type": "array", "items": {"type": "string",
                        "x-kubernetes-validations": [{"rule": "self.size() <= 3"}]}}}}}})
    }

    #[test]
    fn rules_fail_with_kube_messages_at_their_nodes() {
        let rules = Rules::compile(&schema());
        let good = json!({"spec": {"minReplicas": 1, "maxReplicas": 3, "name": "w-1",
            "tags": ["ab"], "immutable": "x"}});
        assert!(rules.validate(&good, None, true).is_empty());
        let bad = json!({"spec": {"minReplicas": 5, "maxReplicas": 3, "mode": "c",
            "name": "x", "tags": ["ab", "abcd"]}});
        let errs: Vec<String> = rules
            .validate(&bad, None, true)
            .iter()
            .map(FieldError::to_string_full)
            .collect();
        assert!(
            errs.contains(
                &"spec: Invalid value: \"object\": minReplicas cannot be larger than maxReplicas"
                    .to_string()
            ),
            "{errs:?}"
        );
        assert!(
            errs.contains(
                &"spec.mode: Forbidden: failed rule: !has(self.mode) || self.mode in ['a', 'b']"
                    .to_string()
            ),
            "{errs:?}"
        );
        assert!(
            errs.contains(
                &"spec: Invalid value: \"object\": name x must start with w-".to_string()
            ),
            "{errs:?}"
        );
        assert!(
            errs.contains(
                &"spec.tags[1]: Invalid value: \"string\": failed rule: self.size() <= 3"
                    .to_string()
            ),
            "{errs:?}"
        );
        assert_eq!(errs.len(), 4, "{errs:?}");
    }

    #[test]
    fn transition_rules_run_on_updates_only() {
        let rules = Rules::compile(&schema());
        let old =
            json!({"spec": {"minReplicas": 1, "maxReplicas": 3, "name": "w-1", "immutable": "a"}});
        let new =
            json!({"spec": {"minReplicas": 1, "maxReplicas": 3, "name": "w-1", "immutable": "b"}});
        assert!(rules.validate(&new, None, true).is_empty());
        let errs = rules.validate(&new, Some(&old), true);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            errs[0].to_string_full(),
            "spec.immutable: Invalid value: \"string\": Value is immutable"
        );
        assert!(rules.validate(&old, Some(&old), true).is_empty());
    }

    #[test]
    fn missing_fields_are_evaluation_errors_and_bad_rules_are_refused() {
        let rules = Rules::compile(&schema());
        let errs = rules.validate(&json!({"spec": {"name": "w-1"}}), None, true);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].message.contains("rule evaluation error"),
            "{errs:?}"
        );
        let mut errs = Vec::new();
        check(
            &json!({"type": "object", "x-kubernetes-validations": [
                {"rule": "self.a >"}, {"rule": "other.a == 1"}, {"rule": "true", "reason": "Nope"}]}),
            "schema",
            &mut errs,
        );
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].to_string_full().starts_with("schema.x-kubernetes-validations[0].rule: Invalid value: \"self.a >\": compilation failed"));
        assert!(
            errs[1].message.contains("undeclared reference to 'other'"),
            "{errs:?}"
        );
        assert_eq!(errs[2].reason, crate::apiserver::validation::NOT_SUPPORTED);
    }

    #[test]
    fn metadata_shows_only_name_and_generate_name() {
        let rules = Rules::compile(&json!({"type": "object", "x-kubernetes-validations": [
            {"rule": "self.metadata.name.size() < 10 && !has(self.metadata.labels)"}]}));
        let obj = json!({"metadata": {"name": "short", "labels": {"a": "b"}}});
        assert!(rules.validate(&obj, None, true).is_empty());
    }

    #[test]
    fn kubernetes_list_functions_work_in_rules() {
        let s = json!({"type": "array", "items": {"type": "integer"}, "x-kubernetes-validations": [
            {"rule": "self.isSorted()"},
            {"rule": "self.sum() <= 10"},
            {"rule": "self.min() >= 1 && self.max() <= 6"},
            {"rule": "self.indexOf(2) == 1 && self.lastIndexOf(9) == -1"},
            {"rule": "'abcb'.indexOf('b') == 1"}]});
        let mut errs = Vec::new();
        check(&s, "schema", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let rules = Rules::compile(&s);
        assert!(rules.validate(&json!([1, 2, 3]), None, false).is_empty());
        let errs: Vec<String> = rules
            .validate(&json!([3, 2, 6]), None, false)
            .iter()
            .map(FieldError::to_string_full)
            .collect();
        assert_eq!(
            errs,
            [
                "Invalid value: \"array\": failed rule: self.isSorted()",
                "Invalid value: \"array\": failed rule: self.sum() <= 10",
            ]
        );
        let empty = rules.validate(&json!([]), None, false);
        assert_eq!(empty.len(), 2, "min/max of nothing and indexOf: {empty:?}");
        assert!(
            empty[0].message.contains("called on empty list"),
            "{empty:?}"
        );
    }

    #[test]
    fn macros_and_extensions_work_in_rules() {
        let s = json!({"type": "array", "items": {"type": "string"}, "x-kubernetes-validations": [
            {"rule": "self.all(t, t.size() > 0) && self.exists(t, t == 'a')"},
            {"rule": "self.map(t, t.upperAscii()).exists_one(t, t == 'B')"},
            {"rule": "self.filter(t, t.matches('^[a-z]+$')).size() == size(self)"}]});
        let mut errs = Vec::new();
        check(&s, "schema", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let rules = Rules::compile(&s);
        assert!(rules.validate(&json!(["a", "b"]), None, false).is_empty());
        assert_eq!(
            rules
                .validate(&json!(["a", "b", "b", "C"]), None, false)
                .len(),
            2
        );
    }
}
