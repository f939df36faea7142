//! CustomResourceDefinitions: names, scope and versions checked as kube-apiextensions-apiserver
//! checks them, schemas structural, and a status (`NamesAccepted`, `Established`,
//! `acceptedNames`, `storedVersions`) written with every change, since the kind is served
//! from the moment the definition commits (see `apiserver::custom`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta_v1;
use serde_json::{json, Value};

use super::Strategy;
use crate::api::meta;
use crate::api::resource::{self, ResourceInfo};
use crate::api::status::Status;
use crate::apiserver::custom::{schema, strategy};
use crate::apiserver::http::table::{self, col};
use crate::apiserver::validation::*;

/// The `customresourcedefinitions` strategy.
pub struct CustomResourceDefinition;

impl Strategy for CustomResourceDefinition {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn defaults(&self, obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
            let kind = names
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !kind.is_empty() {
                names
                    .entry("singular")
                    .or_insert_with(|| json!(kind.to_lowercase()));
                names
                    .entry("listKind")
                    .or_insert_with(|| json!(format!("{kind}List")));
            }
        }
        spec.entry("conversion")
            .or_insert_with(|| json!({"strategy": "None"}));
    }

    fn initial_status(&self, obj: &mut Value) {
        established(obj);
    }

    fn delete_finalizer(&self) -> Option<&'static str> {
        Some(crate::apiserver::custom::cleanup::FINALIZER)
    }

    fn on_deleting(&self, obj: &mut Value) {
        set_condition(
            obj,
            "Terminating",
            "True",
            "InstanceDeletionPending",
            "CustomResourceDeletion marked as pending",
        );
    }

    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = validate::<ext::CustomResourceDefinition>(
            NameRule::Subdomain,
            info.namespaced,
            obj,
            old,
        );
        apimachinery_finalizers(&mut errs);
        errs
    }

    fn prepare_for_update(
        &self,
        info: &ResourceInfo,
        sub: Option<&str>,
        old: &Value,
        new: &mut Value,
    ) -> Result<(), Status> {
        super::prepare_for_update(info, sub, old, new)?;
        if sub.is_none() {
            established(new);
        }
        Ok(())
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(),
            col("Created At", "date", 0, "The time the object was created."),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(meta::name(obj)),
            obj.pointer("/metadata/creationTimestamp")
                .cloned()
                .unwrap_or(Value::Null),
        ]
    }
}

/// The status kube's naming and establishing controllers write: the names are accepted and
/// the kind served (Skiff serves it as soon as it commits), and the storage version is
/// recorded among the stored ones.
fn established(obj: &mut Value) {
    let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let storage = obj
        .get("spec")
        .and_then(crate::apiserver::custom::storage_version)
        .map(Value::from);
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    let mut stored: Vec<Value> = obj
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(v) = storage {
        if !stored.contains(&v) {
            stored.push(v);
        }
    }
    obj["status"]["acceptedNames"] = names;
    obj["status"]["storedVersions"] = json!(stored);
    set_condition(
        obj,
        "NamesAccepted",
        "True",
        "NoConflicts",
        "no conflicts found",
    );
    set_condition(
        obj,
        "Established",
        "True",
        "InitialNamesAccepted",
        "the initial names have been accepted",
    );
}

/// Sets a CRD condition (its shape has no `lastProbeTime`), keeping the transition time of
/// one already in that status.
pub fn set_condition(obj: &mut Value, kind: &str, status: &str, reason: &str, message: &str) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    let conditions = obj["status"]
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    let Some(list) = conditions.and_then(Value::as_array_mut) else {
        return;
    };
    let fresh = json!({"type": kind, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": meta::now()});
    match list.iter_mut().find(|c| c["type"] == kind) {
        Some(c) if c["status"] == status => {
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        Some(c) => *c = fresh,
        None => list.push(fresh),
    }
}

impl Checked for ext::CustomResourceDefinition {
    fn object_meta(&self) -> &meta_v1::ObjectMeta {
        &self.metadata
    }

    fn check(&self, obj: &Value, errs: &mut Errs) {
        let spec = &self.spec;
        let names = &spec.names;
        let name = self.metadata.name.as_deref().unwrap_or_default();
        let want = format!("{}.{}", names.plural, spec.group);
        if name != want {
            errs.push(FieldError::invalid(
                "metadata.name",
                q(name),
                "must be spec.names.plural+\".\"+spec.group",
            ));
        }
        if spec.group.is_empty() {
            errs.push(FieldError::required("spec.group", ""));
        } else if !is_dns1123_subdomain(&spec.group) || !spec.group.contains('.') {
            errs.push(FieldError::invalid(
                "spec.group",
                q(&spec.group),
                "should be a domain with at least one dot",
            ));
        } else if (spec.group.ends_with(".k8s.io")
            || spec.group.ends_with(".kubernetes.io")
            || spec.group == "k8s.io"
            || spec.group == "kubernetes.io")
            && !self
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("api-approved.kubernetes.io"))
        {
            errs.push(FieldError::required(
                "metadata.annotations[api-approved.kubernetes.io]",
                "protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111",
            ));
        }
        if resource::RESOURCES
            .iter()
            .any(|r| r.group == spec.group && r.plural == names.plural)
        {
            errs.push(FieldError::invalid(
                "spec.names.plural",
                q(&names.plural),
                "is served by the API server itself",
            ));
        }
        for (field, v) in [
            ("spec.names.plural", Some(&names.plural)),
            ("spec.names.singular", names.singular.as_ref()),
            ("spec.names.listKind", names.list_kind.as_ref()),
        ] {
            if let Some(v) = v {
                if field != "spec.names.listKind" && !is_dns1123_label(v) {
                    errs.push(FieldError::invalid(field, q(v), DNS1123_LABEL_ERR));
                }
            }
        }
        if names.plural.is_empty() {
            errs.push(FieldError::required("spec.names.plural", ""));
        }
        if names.kind.is_empty() {
            errs.push(FieldError::required("spec.names.kind", ""));
        } else if !names
            .kind
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            || !names.kind.chars().all(|c| c.is_ascii_alphanumeric())
        {
            errs.push(FieldError::invalid(
                "spec.names.kind",
                q(&names.kind),
                "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?",
            ));
        }
        if !matches!(spec.scope.as_str(), "Namespaced" | "Cluster") {
            errs.push(FieldError::not_supported(
                "spec.scope",
                q(&spec.scope),
                &["Cluster", "Namespaced"],
            ));
        }
        if spec.versions.is_empty() {
            errs.push(FieldError::invalid(
                "spec.versions",
                "null".into(),
                "must have exactly one version marked as storage version",
            ));
        }
        let storage = spec.versions.iter().filter(|v| v.storage).count();
        if !spec.versions.is_empty() && storage != 1 {
            errs.push(FieldError::invalid(
                "spec.versions",
                render_json(obj.pointer("/spec/versions").unwrap_or(&Value::Null)),
                "must have exactly one version marked as storage version",
            ));
        }
        if !spec.versions.iter().any(|v| v.served) && !spec.versions.is_empty() {
            errs.push(FieldError::invalid(
                "spec.versions",
                render_json(obj.pointer("/spec/versions").unwrap_or(&Value::Null)),
                "must have at least one version marked as served",
            ));
        }
        let raw_versions = obj
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, v) in spec.versions.iter().enumerate() {
            let path = format!("spec.versions[{i}]");
            if !is_dns1123_label(&v.name) {
                errs.push(FieldError::invalid(
                    format!("{path}.name"),
                    q(&v.name),
                    DNS1123_LABEL_ERR,
                ));
            }
            if spec.versions[..i].iter().any(|o| o.name == v.name) {
                errs.push(FieldError::duplicate(
                    format!("{path}.name"),
                    q(&v.name),
                    "",
                ));
            }
            let raw = raw_versions.get(i).cloned().unwrap_or(Value::Null);
            match raw.pointer("/schema/openAPIV3Schema") {
                None => errs.push(FieldError::required(
                    format!("{path}.schema.openAPIV3Schema"),
                    "schemas are required",
                )),
                Some(s) => {
                    let at = format!("{path}.schema.openAPIV3Schema");
                    errs.extend(schema::check_structural(s, &at));
                    crate::apiserver::custom::cel::check(s, &at, errs);
                }
            }
            if let Some(scale) = v.subresources.as_ref().and_then(|s| s.scale.as_ref()) {
                for (f, p) in [
                    ("specReplicasPath", Some(&scale.spec_replicas_path)),
                    ("statusReplicasPath", Some(&scale.status_replicas_path)),
                    ("labelSelectorPath", scale.label_selector_path.as_ref()),
                ] {
                    if let Some(p) = p {
                        if !p.starts_with('.') || strategy::parse_path(p).is_none() {
                            errs.push(FieldError::invalid(
                                format!("{path}.subresources.scale.{f}"),
                                q(p),
                                "should be a json path under either .spec or .status",
                            ));
                        }
                    }
                }
            }
            for (j, c) in v.additional_printer_columns.iter().flatten().enumerate() {
                let cpath = format!("{path}.additionalPrinterColumns[{j}]");
                if c.name.is_empty() {
                    errs.push(FieldError::required(format!("{cpath}.name"), ""));
                }
                if !matches!(
                    c.type_.as_str(),
                    "integer" | "number" | "string" | "boolean" | "date"
                ) {
                    errs.push(FieldError::not_supported(
                        format!("{cpath}.type"),
                        q(&c.type_),
                        &["boolean", "date", "integer", "number", "string"],
                    ));
                }
                if strategy::parse_path(&c.json_path).is_none() {
                    errs.push(FieldError::invalid(
                        format!("{cpath}.jsonPath"),
                        q(&c.json_path),
                        "must be a simple json path",
                    ));
                }
            }
        }
    }

    fn check_update(&self, old: &Self, errs: &mut Errs) {
        if self.spec.group != old.spec.group {
            errs.push(FieldError::invalid(
                "spec.group",
                q(&self.spec.group),
                IMMUTABLE,
            ));
        }
        if self.spec.scope != old.spec.scope {
            errs.push(FieldError::invalid(
                "spec.scope",
                q(&self.spec.scope),
                IMMUTABLE,
            ));
        }
        if self.spec.names.plural != old.spec.names.plural {
            errs.push(FieldError::invalid(
                "spec.names.plural",
                q(&self.spec.names.plural),
                IMMUTABLE,
            ));
        }
    }
}
