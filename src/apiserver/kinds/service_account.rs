//! ServiceAccounts: identities for processes in pods. Their tokens are issued by the
//! `token` subresource (`apiserver::serviceaccount`); every namespace gets a `default` one
//! from the controller-manager (`controllers::serviceaccount`).

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta_v1;
use serde_json::{json, Value};

use super::Strategy;
use crate::api::meta;
use crate::api::resource::ResourceInfo;
use crate::apiserver::http::table::{self, age, col};
use crate::apiserver::validation::*;

/// The `serviceaccounts` strategy.
pub struct ServiceAccount;

impl Strategy for ServiceAccount {
    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate::<core::ServiceAccount>(NameRule::Subdomain, info.namespaced, obj, old)
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(),
            col("Secrets", "string", 0, "Number of secrets listed."),
            table::age_column(),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let secrets = obj
            .get("secrets")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        vec![json!(meta::name(obj)), json!(secrets), json!(age(obj))]
    }
}

impl Checked for core::ServiceAccount {
    fn object_meta(&self) -> &meta_v1::ObjectMeta {
        &self.metadata
    }

    fn check(&self, _obj: &Value, _errs: &mut Errs) {}
}
