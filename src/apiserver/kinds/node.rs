//! Nodes: taints checked, `podCIDR(s)` and `providerID` set once, and the columns of
//! `kubectl get nodes`.

use std::collections::HashSet;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta_v1;
use serde_json::{json, Value};

use super::Strategy;
use crate::api::meta;
use crate::api::resource::ResourceInfo;
use crate::apiserver::http::table::{self, age, col, or_none, s};
use crate::apiserver::patch::RootKind;
use crate::apiserver::validation::pod_spec::TAINT_EFFECTS;
use crate::apiserver::validation::*;

/// The `nodes` strategy.
pub struct Node;

impl Strategy for Node {
    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate::<core::Node>(NameRule::Subdomain, info.namespaced, obj, old)
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(),
            col(
                "Status",
                "string",
                0,
                "Ready condition and scheduling state.",
            ),
            col("Roles", "string", 0, "Node roles."),
            table::age_column(),
            col("Version", "string", 0, "Kubelet version."),
            col("Internal-IP", "string", 1, "Internal address."),
            col("External-IP", "string", 1, "External address."),
            col("OS-Image", "string", 1, "Operating system image."),
            col("Kernel-Version", "string", 1, "Kernel version."),
            col("Container-Runtime", "string", 1, "Container runtime."),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let ready = obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            // As kubectl prints it: a Ready condition that is not True (False, or Unknown
            // once the node stopped reporting) is NotReady; no condition at all, Unknown.
            .map(|c| match s(c, "/status") {
                "True" => "Ready",
                _ => "NotReady",
            })
            .unwrap_or("Unknown");
        let mut status = ready.to_string();
        if obj.pointer("/spec/unschedulable") == Some(&json!(true)) {
            status.push_str(",SchedulingDisabled");
        }
        let addr = |t: &str| {
            obj.pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|x| x["type"] == t))
                .map(|x| s(x, "/address").to_string())
                .unwrap_or_default()
        };
        let mut roles: Vec<String> = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|l| {
                l.keys()
                    .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        roles.sort();
        vec![
            json!(meta::name(obj)),
            json!(status),
            json!(or_none(&roles.join(","))),
            json!(age(obj)),
            json!(s(obj, "/status/nodeInfo/kubeletVersion")),
            json!(or_none(&addr("InternalIP"))),
            json!(or_none(&addr("ExternalIP"))),
            json!(or_none(s(obj, "/status/nodeInfo/osImage"))),
            json!(or_none(s(obj, "/status/nodeInfo/kernelVersion"))),
            json!(or_none(s(obj, "/status/nodeInfo/containerRuntimeVersion"))),
        ]
    }

    fn patch_root(&self) -> RootKind {
        RootKind::Node
    }
}

impl Checked for core::Node {
    fn object_meta(&self) -> &meta_v1::ObjectMeta {
        &self.metadata
    }

    fn check(&self, _obj: &Value, errs: &mut Errs) {
        validate_node(self, errs);
    }

    fn check_update(&self, old: &Self, errs: &mut Errs) {
        validate_node_update(old, self, errs);
    }
}

fn validate_node(node: &core::Node, errs: &mut Errs) {
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    for (i, t) in taints.iter().enumerate() {
        let p = index("spec.taints", i);
        for msg in qualified_name_errors(&t.key) {
            errs.push(FieldError::invalid(child(&p, "key"), q(&t.key), &msg));
        }
        let value = t.value.as_deref().unwrap_or_default();
        let value_errs = label_value_errors(value);
        if !value_errs.is_empty() {
            errs.push(FieldError::invalid(
                child(&p, "value"),
                q(value),
                &value_errs.join(";"),
            ));
        }
        if t.effect.is_empty() {
            errs.push(FieldError::required(child(&p, "effect"), ""));
        } else if !TAINT_EFFECTS.contains(&t.effect.as_str()) {
            errs.push(FieldError::not_supported(
                child(&p, "effect"),
                q(&t.effect),
                &TAINT_EFFECTS,
            ));
        }
        if !seen.insert((t.key.as_str(), t.effect.as_str())) {
            errs.push(FieldError::duplicate(
                p,
                render_ser(t),
                "taints must be unique by key and effect pair",
            ));
        }
    }
}

fn validate_node_update(old: &core::Node, new: &core::Node, errs: &mut Errs) {
    let os = old.spec.clone().unwrap_or_default();
    let ns = new.spec.clone().unwrap_or_default();
    let cidrs = |s: &core::NodeSpec| s.pod_cidrs.clone().unwrap_or_default();
    let cidr_msg = "node updates may not change podCIDR except from \"\" to valid";
    if !cidrs(&os).is_empty() && cidrs(&os) != cidrs(&ns) {
        errs.push(FieldError::forbidden("spec.podCIDRs", cidr_msg));
    }
    let cidr = |s: &core::NodeSpec| s.pod_cidr.clone().unwrap_or_default();
    if !cidr(&os).is_empty() && cidr(&os) != cidr(&ns) {
        errs.push(FieldError::forbidden("spec.podCIDR", cidr_msg));
    }
    let provider = |s: &core::NodeSpec| s.provider_id.clone().unwrap_or_default();
    if !provider(&os).is_empty() && provider(&os) != provider(&ns) {
        errs.push(FieldError::forbidden(
            "spec.providerID",
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
}
