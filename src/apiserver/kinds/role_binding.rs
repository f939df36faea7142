//! RoleBindings and ClusterRoleBindings: who (subjects) holds which role (`roleRef`, fixed
//! once written), checked and defaulted as kube does. Whether the writer may grant the role
//! is the escalation check in `apiserver::rbac`.

use k8s_openapi::api::rbac::v1 as rbac;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta_v1;
use serde_json::{json, Value};

use super::Strategy;
use crate::api::meta;
use crate::api::resource::ResourceInfo;
use crate::apiserver::authz::RBAC_GROUP;
use crate::apiserver::http::table::{self, col, s};
use crate::apiserver::validation::*;

/// The `rolebindings` strategy.
pub struct RoleBinding;

/// The `clusterrolebindings` strategy.
pub struct ClusterRoleBinding;

impl Strategy for RoleBinding {
    fn defaults(&self, obj: &mut Value) {
        default_subjects(obj);
    }

    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate::<rbac::RoleBinding>(NameRule::PathSegment, info.namespaced, obj, old)
    }

    fn columns(&self) -> Vec<Value> {
        binding_columns()
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        binding_cells(obj)
    }
}

impl Strategy for ClusterRoleBinding {
    fn defaults(&self, obj: &mut Value) {
        default_subjects(obj);
    }

    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate::<rbac::ClusterRoleBinding>(NameRule::PathSegment, info.namespaced, obj, old)
    }

    fn columns(&self) -> Vec<Value> {
        binding_columns()
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        binding_cells(obj)
    }
}

/// kube's `SetDefaults_Subject`: User and Group subjects are in the RBAC group.
fn default_subjects(obj: &mut Value) {
    let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) else {
        return;
    };
    for subject in subjects.iter_mut().filter_map(Value::as_object_mut) {
        let kind = subject.get("kind").and_then(Value::as_str).unwrap_or("");
        let unset = subject
            .get("apiGroup")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if unset && matches!(kind, "User" | "Group") {
            subject.insert("apiGroup".into(), json!(RBAC_GROUP));
        }
    }
}

fn binding_columns() -> Vec<Value> {
    vec![
        table::name_column(),
        col("Role", "string", 0, "The role this binding grants."),
        table::age_column(),
        col("Users", "string", 1, "Users this binding applies to."),
        col("Groups", "string", 1, "Groups this binding applies to."),
        col(
            "ServiceAccounts",
            "string",
            1,
            "ServiceAccounts this binding applies to.",
        ),
    ]
}

fn binding_cells(obj: &Value) -> Vec<Value> {
    let subjects = obj
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let of_kind = |kind: &str| -> String {
        subjects
            .iter()
            .filter(|sub| s(sub, "/kind") == kind)
            .map(|sub| match kind {
                "ServiceAccount" => format!("{}/{}", s(sub, "/namespace"), s(sub, "/name")),
                _ => s(sub, "/name").to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        json!(meta::name(obj)),
        json!(format!(
            "{}/{}",
            s(obj, "/roleRef/kind"),
            s(obj, "/roleRef/name")
        )),
        json!(table::age(obj)),
        json!(of_kind("User")),
        json!(of_kind("Group")),
        json!(of_kind("ServiceAccount")),
    ]
}

impl Checked for rbac::RoleBinding {
    fn object_meta(&self) -> &meta_v1::ObjectMeta {
        &self.metadata
    }

    fn check(&self, _obj: &Value, errs: &mut Errs) {
        check_role_ref(&self.role_ref, &["Role", "ClusterRole"], errs);
        check_subjects(self.subjects.as_deref().unwrap_or_default(), true, errs);
    }

    fn check_update(&self, old: &Self, errs: &mut Errs) {
        role_ref_kept(&self.role_ref, &old.role_ref, errs);
    }
}

impl Checked for rbac::ClusterRoleBinding {
    fn object_meta(&self) -> &meta_v1::ObjectMeta {
        &self.metadata
    }

    fn check(&self, _obj: &Value, errs: &mut Errs) {
        check_role_ref(&self.role_ref, &["ClusterRole"], errs);
        check_subjects(self.subjects.as_deref().unwrap_or_default(), false, errs);
    }

    fn check_update(&self, old: &Self, errs: &mut Errs) {
        role_ref_kept(&self.role_ref, &old.role_ref, errs);
    }
}

/// A binding's role is fixed once it is written (kube: delete and re-create to change it).
fn role_ref_kept(new: &rbac::RoleRef, old: &rbac::RoleRef, errs: &mut Errs) {
    if new != old {
        errs.push(FieldError::invalid(
            "roleRef",
            format!(
                "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
                q(&new.api_group),
                q(&new.kind),
                q(&new.name)
            ),
            "cannot change roleRef",
        ));
    }
}

fn check_role_ref(r: &rbac::RoleRef, kinds: &[&str], errs: &mut Errs) {
    if r.api_group != RBAC_GROUP {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            q(&r.api_group),
            &[RBAC_GROUP],
        ));
    }
    if !kinds.contains(&r.kind.as_str()) {
        errs.push(FieldError::not_supported("roleRef.kind", q(&r.kind), kinds));
    }
    if r.name.is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    } else {
        for msg in path_segment_errors(&r.name) {
            errs.push(FieldError::invalid("roleRef.name", q(&r.name), &msg));
        }
    }
}

/// kube's `ValidateRoleBindingSubject` for each subject.
fn check_subjects(subjects: &[rbac::Subject], namespaced: bool, errs: &mut Errs) {
    for (i, sub) in subjects.iter().enumerate() {
        let path = index("subjects", i);
        if sub.name.is_empty() {
            errs.push(FieldError::required(child(&path, "name"), ""));
        }
        let group = sub.api_group.as_deref().unwrap_or("");
        match sub.kind.as_str() {
            "ServiceAccount" => {
                if !sub.name.is_empty() {
                    for msg in dns1123_subdomain_errors(&sub.name) {
                        errs.push(FieldError::invalid(
                            child(&path, "name"),
                            q(&sub.name),
                            &msg,
                        ));
                    }
                }
                if !group.is_empty() {
                    errs.push(FieldError::not_supported(
                        child(&path, "apiGroup"),
                        q(group),
                        &[""],
                    ));
                }
                if !namespaced && sub.namespace.as_deref().is_none_or(str::is_empty) {
                    errs.push(FieldError::required(child(&path, "namespace"), ""));
                }
            }
            "User" | "Group" => {
                if group != RBAC_GROUP {
                    errs.push(FieldError::not_supported(
                        child(&path, "apiGroup"),
                        q(group),
                        &[RBAC_GROUP],
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                child(&path, "kind"),
                q(other),
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
}
