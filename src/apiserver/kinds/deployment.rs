//! Deployments: replicas, strategy and revision defaults, the pod template checked as
//! ReplicaSets check it, an immutable selector, and the columns of `kubectl get deploy`.

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta_v1;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::Strategy;
use crate::api::meta;
use crate::api::resource::ResourceInfo;
use crate::apiserver::http::table::{self, age, col, i};
use crate::apiserver::patch::RootKind;
use crate::apiserver::validation::pod_spec::*;
use crate::apiserver::validation::*;

/// The `deployments` strategy.
pub struct Deployment;

impl Strategy for Deployment {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn defaults(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.entry("replicas").or_insert(json!(1));
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            spec.entry("progressDeadlineSeconds").or_insert(json!(600));
            let strategy = spec
                .entry("strategy")
                .or_insert_with(|| json!({"type": "RollingUpdate"}));
            if strategy.get("type").is_none() {
                strategy["type"] = json!("RollingUpdate");
            }
            if strategy["type"] == "RollingUpdate" && strategy.get("rollingUpdate").is_none() {
                strategy["rollingUpdate"] = json!({"maxSurge": "25%", "maxUnavailable": "25%"});
            }
        }
        if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
            super::pod::spec_defaults(spec);
        }
    }

    fn initial_status(&self, obj: &mut Value) {
        obj["status"] = json!({});
    }

    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate::<apps::Deployment>(NameRule::Subdomain, info.namespaced, obj, old)
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(),
            col("Ready", "string", 0, "Ready replicas / desired replicas."),
            col(
                "Up-to-date",
                "integer",
                0,
                "Replicas of the current template.",
            ),
            col("Available", "integer", 0, "Available replicas."),
            table::age_column(),
        ]
        .into_iter()
        .chain(table::workload_wide_columns())
        .collect()
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(meta::name(obj)),
            json!(format!(
                "{}/{}",
                i(obj, "/status/readyReplicas"),
                i(obj, "/spec/replicas")
            )),
            json!(i(obj, "/status/updatedReplicas")),
            json!(i(obj, "/status/availableReplicas")),
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

impl Checked for apps::Deployment {
    fn object_meta(&self) -> &meta_v1::ObjectMeta {
        &self.metadata
    }

    fn check(&self, obj: &Value, errs: &mut Errs) {
        validate_deployment(self, obj, errs);
    }

    /// The selector never changes.
    fn check_update(&self, old: &Self, errs: &mut Errs) {
        let none = apps::DeploymentSpec::default();
        let (os, ns) = (
            old.spec.as_ref().unwrap_or(&none),
            self.spec.as_ref().unwrap_or(&none),
        );
        validate_selector_update(&os.selector, &ns.selector, errs);
    }
}

fn validate_deployment(d: &apps::Deployment, obj: &Value, errs: &mut Errs) {
    let default = apps::DeploymentSpec::default();
    let spec = d.spec.as_ref().unwrap_or(&default);
    validate_nonnegative(spec.replicas, "spec.replicas", errs);
    validate_workload(obj, &spec.selector, Some(&spec.template), errs);

    let strategy = spec.strategy.clone().unwrap_or_default();
    match strategy.type_.as_deref().unwrap_or("RollingUpdate") {
        "Recreate" => {
            if strategy.rolling_update.is_some() {
                errs.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let ru = strategy.rolling_update.unwrap_or_default();
            let default_pct = IntOrString::String("25%".into());
            let surge = ru.max_surge.unwrap_or_else(|| default_pct.clone());
            let unavailable = ru.max_unavailable.unwrap_or(default_pct);
            let surge_path = "spec.strategy.rollingUpdate.maxSurge";
            let unavailable_path = "spec.strategy.rollingUpdate.maxUnavailable";
            validate_int_or_percent(&unavailable, unavailable_path, errs);
            validate_int_or_percent(&surge, surge_path, errs);
            if int_or_percent_value(&unavailable) == Some(0)
                && int_or_percent_value(&surge) == Some(0)
            {
                errs.push(FieldError::invalid(
                    unavailable_path,
                    render_ser(&unavailable),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            if matches!(&unavailable, IntOrString::String(_))
                && int_or_percent_value(&unavailable).is_some_and(|v| v > 100)
            {
                errs.push(FieldError::invalid(
                    unavailable_path,
                    render_ser(&unavailable),
                    "must not be greater than 100%",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            "spec.strategy.type",
            q(other),
            &["Recreate", "RollingUpdate"],
        )),
    }
    validate_nonnegative(spec.min_ready_seconds, "spec.minReadySeconds", errs);
    validate_nonnegative(
        spec.revision_history_limit,
        "spec.revisionHistoryLimit",
        errs,
    );
    if let Some(pds) = spec.progress_deadline_seconds {
        validate_nonnegative(Some(pds), "spec.progressDeadlineSeconds", errs);
        if pds <= spec.min_ready_seconds.unwrap_or(0) {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                pds.to_string(),
                "must be greater than minReadySeconds",
            ));
        }
    }
}
