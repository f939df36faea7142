//! Secrets: `stringData` merged into `data` and never stored, the `Opaque` default type, the
//! payload each type requires, `immutable`, and a type that never changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta_v1;
use serde_json::{json, Value};

use super::Strategy;
use crate::api::meta;
use crate::api::resource::ResourceInfo;
use crate::api::status::Status;
use crate::apiserver::http::table::{self, age, col, s};
use crate::apiserver::validation::*;

/// The `secrets` strategy.
pub struct Secret;

impl Strategy for Secret {
    /// What kube's conversion to its internal types does: `stringData` is merged into `data`
    /// (base64, overriding the same keys) and is never stored.
    fn normalise(&self, obj: &mut Value) -> Result<(), Status> {
        let Some(map) = obj.as_object_mut() else {
            return Ok(());
        };
        let string_data = match map.remove("stringData") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(Status::bad_request(format!(
                "Secret in version \"v1\" cannot be handled as a Secret: json: cannot unmarshal {} into Go struct field Secret.stringData of type map[string]string",
                json_kind(&other)
            )))
        }
    };
        let data = map.entry("data").or_insert_with(|| json!({}));
        if data.is_null() {
            *data = json!({});
        }
        let Some(data) = data.as_object_mut() else {
            return Ok(()); // validation refuses a data that is not a map
        };
        for (k, v) in string_data {
            let Some(text) = v.as_str() else {
                return Err(Status::bad_request(format!(
                "Secret in version \"v1\" cannot be handled as a Secret: json: cannot unmarshal {} into Go struct field Secret.stringData of type string",
                json_kind(&v)
            )));
            };
            data.insert(k, json!(crate::apiserver::certs::base64(text.as_bytes())));
        }
        Ok(())
    }

    fn defaults(&self, obj: &mut Value) {
        if obj.get("type").is_none() {
            obj["type"] = json!("Opaque");
        }
    }

    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate::<core::Secret>(NameRule::Subdomain, info.namespaced, obj, old)
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(),
            col("Type", "string", 0, "Secret type."),
            col("Data", "integer", 0, "Number of keys."),
            table::age_column(),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let n = obj
            .get("data")
            .and_then(Value::as_object)
            .map(|m| m.len())
            .unwrap_or(0);
        vec![
            json!(meta::name(obj)),
            json!(s(obj, "/type")),
            json!(n),
            json!(age(obj)),
        ]
    }
}

impl Checked for core::Secret {
    fn precheck(obj: &Value, errs: &mut Errs) {
        precheck_base64(obj, "data", true, errs);
    }

    fn object_meta(&self) -> &meta_v1::ObjectMeta {
        &self.metadata
    }

    fn check(&self, _obj: &Value, errs: &mut Errs) {
        validate_secret(self, errs);
    }

    /// The type never changes; once `immutable`, neither the data nor the flag may.
    fn check_update(&self, o: &Self, errs: &mut Errs) {
        let ty = |s: &core::Secret| match s.type_.as_deref() {
            None | Some("") => "Opaque".to_string(),
            Some(t) => t.to_string(),
        };
        if ty(o) != ty(self) {
            errs.push(FieldError::invalid("type", q(&ty(self)), IMMUTABLE));
        }
        if o.immutable == Some(true) {
            immutable_flag_kept(self.immutable, errs);
            if effective_secret_data(o) != effective_secret_data(self) {
                let field = if self.string_data.as_ref().is_some_and(|m| !m.is_empty()) {
                    "stringData"
                } else {
                    "data"
                };
                errs.push(FieldError::forbidden(
                    field,
                    "field is immutable when `immutable` is set",
                ));
            }
        }
    }
}

/// A Secret's data as the server stores it: `data` with `stringData` merged over it.
fn effective_secret_data(s: &core::Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

fn validate_secret(s: &core::Secret, errs: &mut Errs) {
    validate_data_keys(s.data.iter().flat_map(BTreeMap::keys), "data", errs);
    validate_data_keys(
        s.string_data.iter().flat_map(BTreeMap::keys),
        "stringData",
        errs,
    );
    let data = effective_secret_data(s);
    let total = data
        .values()
        .fold(0usize, |acc, v| acc.saturating_add(v.len()));
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long("data", MAX_DATA_SIZE));
    }
    let required = |k: &str, errs: &mut Errs| {
        if !data.contains_key(k) {
            errs.push(FieldError::required(key("data", k), ""));
        }
    };
    let json_payload = |k: &str, errs: &mut Errs| match data.get(k) {
        None => errs.push(FieldError::required(key("data", k), "")),
        Some(bytes) => {
            if let Err(e) = serde_json::from_slice::<serde_json::Map<String, Value>>(bytes) {
                errs.push(FieldError::invalid(
                    key("data", k),
                    q(REDACTED),
                    &e.to_string(),
                ));
            }
        }
    };
    match s.type_.as_deref().unwrap_or_default() {
        "kubernetes.io/service-account-token" => {
            let name = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"));
            if name.is_none_or(String::is_empty) {
                errs.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" => json_payload(".dockercfg", errs),
        "kubernetes.io/dockerconfigjson" => json_payload(".dockerconfigjson", errs),
        "kubernetes.io/basic-auth"
            if !data.contains_key("username") && !data.contains_key("password") =>
        {
            required("username", errs);
            required("password", errs);
        }
        "kubernetes.io/ssh-auth" if data.get("ssh-privatekey").is_none_or(Vec::is_empty) => {
            errs.push(FieldError::required(key("data", "ssh-privatekey"), ""));
        }
        "kubernetes.io/tls" => {
            required("tls.crt", errs);
            required("tls.key", errs);
        }
        _ => {}
    }
}

/// The JSON type's name as Go's encoding/json words it in an unmarshal error.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
