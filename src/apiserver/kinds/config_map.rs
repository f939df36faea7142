//! ConfigMaps: keys, base64 binary data, the 1 MiB limit, and `immutable`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta_v1;
use serde_json::{json, Value};

use super::Strategy;
use crate::api::meta;
use crate::api::resource::ResourceInfo;
use crate::apiserver::http::table::{self, age, col};
use crate::apiserver::validation::*;

/// The `configmaps` strategy.
pub struct ConfigMap;

impl Strategy for ConfigMap {
    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate::<core::ConfigMap>(NameRule::Subdomain, info.namespaced, obj, old)
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(),
            col("Data", "integer", 0, "Number of keys."),
            table::age_column(),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let n = ["data", "binaryData"]
            .iter()
            .filter_map(|k| obj.get(*k).and_then(Value::as_object))
            .map(|m| m.len())
            .sum::<usize>();
        vec![json!(meta::name(obj)), json!(n), json!(age(obj))]
    }
}

impl Checked for core::ConfigMap {
    fn precheck(obj: &Value, errs: &mut Errs) {
        precheck_base64(obj, "binaryData", false, errs);
    }

    fn object_meta(&self) -> &meta_v1::ObjectMeta {
        &self.metadata
    }

    fn check(&self, _obj: &Value, errs: &mut Errs) {
        validate_config_map(self, errs);
    }

    /// Once `immutable`, neither the data nor the flag may change.
    fn check_update(&self, o: &Self, errs: &mut Errs) {
        if o.immutable != Some(true) {
            return;
        }
        immutable_flag_kept(self.immutable, errs);
        let norm = |m: &Option<BTreeMap<String, String>>| m.clone().unwrap_or_default();
        if norm(&o.data) != norm(&self.data) {
            errs.push(FieldError::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
        let norm_bin =
            |m: &Option<BTreeMap<String, k8s_openapi::ByteString>>| m.clone().unwrap_or_default();
        if norm_bin(&o.binary_data) != norm_bin(&self.binary_data) {
            errs.push(FieldError::forbidden(
                "binaryData",
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

fn validate_config_map(cm: &core::ConfigMap, errs: &mut Errs) {
    let data = cm.data.as_ref();
    let binary = cm.binary_data.as_ref();
    validate_data_keys(data.into_iter().flat_map(BTreeMap::keys), "data", errs);
    validate_data_keys(
        binary.into_iter().flat_map(BTreeMap::keys),
        "binaryData",
        errs,
    );
    let mut total = 0usize;
    for (k, v) in data.into_iter().flatten() {
        if binary.is_some_and(|b| b.contains_key(k)) {
            errs.push(FieldError::invalid(
                key("data", k),
                q(k),
                "duplicate of key present in binaryData",
            ));
        }
        total = total.saturating_add(v.len());
    }
    for v in binary.into_iter().flat_map(BTreeMap::values) {
        total = total.saturating_add(v.0.len());
    }
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long("data", MAX_DATA_SIZE));
    }
}
