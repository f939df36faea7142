//! Namespaces: the `kubernetes` finalizer and the `kubernetes.io/metadata.name` label they are
//! given, the Active phase they start in, the three that may not be deleted, `spec.finalizers`
//! written only through `finalize`, and deletion that waits for the namespace controller.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta_v1;
use serde_json::{json, Value};

use super::Strategy;
use crate::api::meta;
use crate::api::resource::ResourceInfo;
use crate::api::status::Status;
use crate::apiserver::http::table::{self, age, col, s};
use crate::apiserver::patch::RootKind;
use crate::apiserver::validation::*;

/// Namespaces that may not be deleted (Kubernetes' NamespaceLifecycle keeps the same three).
const IMMORTAL_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// The `namespaces` strategy.
pub struct Namespace;

impl Strategy for Namespace {
    /// The `kubernetes` finalizer while not deleting, and the `kubernetes.io/metadata.name`
    /// label every namespace carries (kube sets it on every write, to the name).
    fn defaults(&self, obj: &mut Value) {
        let name = meta::name(obj).to_string();
        if !name.is_empty() {
            let md = meta::metadata_mut(obj);
            let labels = md.entry("labels").or_insert_with(|| json!({}));
            if !labels.is_object() {
                *labels = json!({});
            }
            labels["kubernetes.io/metadata.name"] = json!(name);
        }
        if obj.pointer("/spec/finalizers").is_none()
            && obj.pointer("/metadata/deletionTimestamp").is_none()
        {
            if !obj.get("spec").is_some_and(Value::is_object) {
                obj["spec"] = json!({});
            }
            obj["spec"]["finalizers"] = json!(["kubernetes"]);
        }
    }

    fn initial_status(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Active"});
    }

    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate::<core::Namespace>(NameRule::Label, info.namespaced, obj, old)
    }

    /// The main resource may change neither status nor `spec.finalizers`; `finalize` changes
    /// `spec.finalizers` and nothing else (kube's namespace and finalize strategies).
    fn prepare_for_update(
        &self,
        info: &ResourceInfo,
        sub: Option<&str>,
        old: &Value,
        new: &mut Value,
    ) -> Result<(), Status> {
        match sub {
            None => {
                super::prepare_for_update(info, sub, old, new)?;
                if new.is_object() {
                    set_spec_finalizers(new, old.pointer("/spec/finalizers").cloned());
                }
                Ok(())
            }
            Some("finalize") => {
                let finalizers = new.pointer("/spec/finalizers").cloned();
                *new = old.clone();
                set_spec_finalizers(new, finalizers);
                Ok(())
            }
            _ => super::prepare_for_update(info, sub, old, new),
        }
    }

    fn admit_delete(&self, info: &ResourceInfo, name: &str) -> Result<(), Status> {
        if IMMORTAL_NAMESPACES.contains(&name) {
            return Err(Status::forbidden_on(
                info.group,
                info.plural,
                name,
                "this namespace may not be deleted",
            ));
        }
        Ok(())
    }

    /// A namespace also waits for its `spec.finalizers` (the namespace controller's).
    fn delete_pending(&self, obj: &Value) -> bool {
        obj.pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    }

    fn on_deleting(&self, obj: &mut Value) {
        if !obj.get("status").is_some_and(Value::is_object) {
            obj["status"] = json!({});
        }
        obj["status"]["phase"] = json!("Terminating");
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(),
            col("Status", "string", 0, "Phase of the namespace."),
            table::age_column(),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(meta::name(obj)),
            json!(s(obj, "/status/phase")),
            json!(age(obj)),
        ]
    }

    fn patch_root(&self) -> RootKind {
        RootKind::Namespace
    }
}

impl Checked for core::Namespace {
    fn object_meta(&self) -> &meta_v1::ObjectMeta {
        &self.metadata
    }

    fn check(&self, _obj: &Value, errs: &mut Errs) {
        validate_namespace(self, errs);
    }
}

/// Sets (or, with None, removes) a namespace's `spec.finalizers`.
fn set_spec_finalizers(ns: &mut Value, finalizers: Option<Value>) {
    if !ns.is_object() {
        return;
    }
    if !ns.get("spec").is_some_and(Value::is_object) {
        ns["spec"] = json!({});
    }
    match finalizers {
        Some(f) => ns["spec"]["finalizers"] = f,
        None => {
            if let Some(spec) = ns["spec"].as_object_mut() {
                spec.remove("finalizers");
            }
        }
    }
}

fn validate_namespace(ns: &core::Namespace, errs: &mut Errs) {
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_deref())
        .unwrap_or_default();
    for (i, f) in finalizers.iter().enumerate() {
        let p = index("spec.finalizers", i);
        for msg in qualified_name_errors(f) {
            errs.push(FieldError::invalid(p.clone(), q(f), &msg));
        }
        if !f.contains('/') && f != "kubernetes" {
            errs.push(FieldError::invalid(
                p,
                q(f),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
}
