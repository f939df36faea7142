//! Roles and ClusterRoles (`rbac.authorization.k8s.io/v1`): lists of policy rules, checked
//! as kube's RBAC validation checks them. What a rule grants is `apiserver::rbac`'s; who may
//! write a role without holding its rules is the escalation check there.

use k8s_openapi::api::rbac::v1 as rbac;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta_v1;
use serde_json::{json, Value};

use super::Strategy;
use crate::api::meta;
use crate::api::resource::ResourceInfo;
use crate::apiserver::http::table::{self, col};
use crate::apiserver::validation::*;

/// The `roles` strategy.
pub struct Role;

/// The `clusterroles` strategy.
pub struct ClusterRole;

impl Strategy for Role {
    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate::<rbac::Role>(NameRule::PathSegment, info.namespaced, obj, old)
    }

    fn columns(&self) -> Vec<Value> {
        created_at_columns()
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        created_at_cells(obj)
    }
}

impl Strategy for ClusterRole {
    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate::<rbac::ClusterRole>(NameRule::PathSegment, info.namespaced, obj, old)
    }

    fn columns(&self) -> Vec<Value> {
        created_at_columns()
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        created_at_cells(obj)
    }
}

/// kubectl shows roles with their creation time, not an age.
fn created_at_columns() -> Vec<Value> {
    vec![
        table::name_column(),
        col("Created At", "date", 0, "Time when this role was created."),
    ]
}

fn created_at_cells(obj: &Value) -> Vec<Value> {
    vec![
        json!(meta::name(obj)),
        obj.pointer("/metadata/creationTimestamp")
            .cloned()
            .unwrap_or(Value::Null),
    ]
}

impl Checked for rbac::Role {
    /// Rules are checked on the JSON: kube decodes a rule without verbs and then says
    /// `Required value`, where the typed decoder would stop at the missing field.
    fn precheck(obj: &Value, errs: &mut Errs) {
        check_rules(obj, true, errs);
    }

    fn object_meta(&self) -> &meta_v1::ObjectMeta {
        &self.metadata
    }

    fn check(&self, _obj: &Value, _errs: &mut Errs) {}
}

impl Checked for rbac::ClusterRole {
    fn precheck(obj: &Value, errs: &mut Errs) {
        check_rules(obj, false, errs);
    }

    fn object_meta(&self) -> &meta_v1::ObjectMeta {
        &self.metadata
    }

    fn check(&self, _obj: &Value, errs: &mut Errs) {
        let Some(agg) = &self.aggregation_rule else {
            return;
        };
        let selectors = agg.cluster_role_selectors.as_deref().unwrap_or_default();
        if selectors.is_empty() {
            errs.push(FieldError::required(
                "aggregationRule.clusterRoleSelectors",
                "at least one clusterRoleSelector required if aggregationRule is non-nil",
            ));
        }
        for (i, sel) in selectors.iter().enumerate() {
            validate_label_selector(sel, &index("aggregationRule.clusterRoleSelectors", i), errs);
        }
    }
}

/// The strings of a rule's list field (absent: none).
fn strings<'a>(rule: &'a Value, field: &str) -> Vec<&'a str> {
    rule.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `[]string{"a", "b"}`, as kube renders a list value in an error.
fn go_strings(v: &[&str]) -> String {
    let quoted: Vec<String> = v.iter().map(|s| q(s)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// kube's `ValidatePolicyRule` for each of `rules`: verbs always; non-resource URLs only in
/// cluster roles and never beside resources; otherwise API groups and resources.
fn check_rules(obj: &Value, namespaced: bool, errs: &mut Errs) {
    let Some(rules) = obj.get("rules").and_then(Value::as_array) else {
        return;
    };
    for (i, rule) in rules.iter().enumerate() {
        let path = index("rules", i);
        if !rule.is_object() {
            errs.push(FieldError::type_invalid(
                path,
                rule.to_string(),
                "expected an object",
            ));
            continue;
        }
        for field in [
            "verbs",
            "apiGroups",
            "resources",
            "resourceNames",
            "nonResourceURLs",
        ] {
            match rule.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
                Some(other) => errs.push(FieldError::type_invalid(
                    child(&path, field),
                    other.to_string(),
                    "expected a list of strings",
                )),
            }
        }
        if strings(rule, "verbs").is_empty() {
            errs.push(FieldError::required(
                child(&path, "verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = strings(rule, "nonResourceURLs");
        if !urls.is_empty() {
            if namespaced {
                errs.push(FieldError::invalid(
                    child(&path, "nonResourceURLs"),
                    go_strings(&urls),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            let resources = ["apiGroups", "resources", "resourceNames"]
                .iter()
                .any(|f| !strings(rule, f).is_empty());
            if resources {
                errs.push(FieldError::invalid(
                    child(&path, "nonResourceURLs"),
                    go_strings(&urls),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if strings(rule, "apiGroups").is_empty() {
            errs.push(FieldError::required(
                child(&path, "apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if strings(rule, "resources").is_empty() {
            errs.push(FieldError::required(
                child(&path, "resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}
