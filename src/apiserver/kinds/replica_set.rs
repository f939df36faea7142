//! ReplicaSets: replicas defaulted, the pod template checked, an immutable selector, and the
//! columns of `kubectl get rs`.

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta_v1;
use serde_json::{json, Value};

use super::Strategy;
use crate::api::meta;
use crate::api::resource::ResourceInfo;
use crate::apiserver::http::table::{self, age, col, i};
use crate::apiserver::patch::RootKind;
use crate::apiserver::validation::pod_spec::*;
use crate::apiserver::validation::*;

/// The `replicasets` strategy.
pub struct ReplicaSet;

impl Strategy for ReplicaSet {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn defaults(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.entry("replicas").or_insert(json!(1));
        }
        if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
            super::pod::spec_defaults(spec);
        }
    }

    fn initial_status(&self, obj: &mut Value) {
        obj["status"] = json!({});
    }

    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate::<apps::ReplicaSet>(NameRule::Subdomain, info.namespaced, obj, old)
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(),
            col("Desired", "integer", 0, "Desired replicas."),
            col("Current", "integer", 0, "Observed replicas."),
            col("Ready", "integer", 0, "Ready replicas."),
            table::age_column(),
        ]
        .into_iter()
        .chain(table::workload_wide_columns())
        .collect()
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(meta::name(obj)),
            json!(i(obj, "/spec/replicas")),
            json!(i(obj, "/status/replicas")),
            json!(i(obj, "/status/readyReplicas")),
            json!(age(obj)),
        ]
        .into_iter()
        .chain(table::workload_wide_cells(obj))
        .collect()
    }

    fn patch_root(&self) -> RootKind {
        RootKind::Workload
    }
}

impl Checked for apps::ReplicaSet {
    fn object_meta(&self) -> &meta_v1::ObjectMeta {
        &self.metadata
    }

    fn check(&self, obj: &Value, errs: &mut Errs) {
        validate_replica_set(self, obj, errs);
    }

    /// The selector never changes.
    fn check_update(&self, old: &Self, errs: &mut Errs) {
        let none = apps::ReplicaSetSpec::default();
        let (os, ns) = (
            old.spec.as_ref().unwrap_or(&none),
            self.spec.as_ref().unwrap_or(&none),
        );
        validate_selector_update(&os.selector, &ns.selector, errs);
    }
}

fn validate_replica_set(rs: &apps::ReplicaSet, obj: &Value, errs: &mut Errs) {
    let default = apps::ReplicaSetSpec::default();
    let spec = rs.spec.as_ref().unwrap_or(&default);
    validate_nonnegative(spec.replicas, "spec.replicas", errs);
    validate_nonnegative(spec.min_ready_seconds, "spec.minReadySeconds", errs);
    validate_workload(obj, &spec.selector, spec.template.as_ref(), errs);
}
