//! Leases: positive durations and a preferred holder only with a strategy.

use k8s_openapi::api::coordination::v1 as coordination;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta_v1;
use serde_json::{json, Value};

use super::Strategy;
use crate::api::meta;
use crate::api::resource::ResourceInfo;
use crate::apiserver::http::table::{self, age, col, s};
use crate::apiserver::validation::*;

/// The `leases` strategy.
pub struct Lease;

impl Strategy for Lease {
    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate::<coordination::Lease>(NameRule::Subdomain, info.namespaced, obj, old)
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(),
            col("Holder", "string", 0, "Current holder."),
            table::age_column(),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(meta::name(obj)),
            json!(s(obj, "/spec/holderIdentity")),
            json!(age(obj)),
        ]
    }
}

impl Checked for coordination::Lease {
    fn object_meta(&self) -> &meta_v1::ObjectMeta {
        &self.metadata
    }

    fn check(&self, _obj: &Value, errs: &mut Errs) {
        validate_lease(self, errs);
    }
}

fn validate_lease(lease: &coordination::Lease, errs: &mut Errs) {
    let Some(spec) = &lease.spec else { return };
    if let Some(d) = spec.lease_duration_seconds.filter(|&d| d <= 0) {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            d.to_string(),
            "must be greater than 0",
        ));
    }
    validate_nonnegative(spec.lease_transitions, "spec.leaseTransitions", errs);
    let preferred = spec
        .preferred_holder
        .as_deref()
        .is_some_and(|p| !p.is_empty());
    let strategy = spec.strategy.as_deref().is_some_and(|s| !s.is_empty());
    if preferred && !strategy {
        errs.push(FieldError::forbidden(
            "spec.preferredHolder",
            "may only be specified if `strategy` is defined",
        ));
    }
}
