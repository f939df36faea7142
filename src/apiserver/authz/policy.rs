//! The bootstrap policy: the ClusterRoles and ClusterRoleBindings every cluster starts with,
//! reconciled at each start as kube-apiserver does (missing ones created, missing rules and
//! subjects added to those whose `rbac.authorization.kubernetes.io/autoupdate` is not
//! `"false"`), and the aggregation that fills `admin`, `edit` and `view` from the
//! ClusterRoles labelled to aggregate into them.
//!
//! The roles are kube's, written for what Skiff serves (the kinds a future Skiff serves are
//! named already, so the roles need no change when they arrive), plus one role per Skiff
//! component for what its controllers do beyond kube's component roles.

use std::time::Duration;

use serde_json::{json, Value};

use super::rbac::{self, PolicyRule};
use super::RBAC_GROUP;
use crate::api::meta;
use crate::api::selector::LabelSelector;
use crate::api::status::{reason, Status};
use crate::api::wire::Request;
use crate::apiserver::registry::Registry;

/// Reads that never change anything.
const READ: &[&str] = &["get", "list", "watch"];
/// Writes, without reads.
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
/// Reads and writes.
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
/// The events a component records.
const EVENT_VERBS: &[&str] = &["create", "patch", "update"];

/// The label every bootstrap object carries.
const BOOTSTRAPPING: &str = "kubernetes.io/bootstrapping";
/// Set to `"false"` to keep a bootstrap object as an admin changed it.
const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A resource rule.
fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(verbs),
        api_groups: strings(groups),
        resources: strings(resources),
        ..Default::default()
    }
}

/// A resource rule limited to named objects.
fn named(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
    PolicyRule {
        resource_names: strings(names),
        ..rule(verbs, groups, resources)
    }
}

/// A non-resource rule.
fn urls(verbs: &[&str], paths: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(verbs),
        non_resource_urls: strings(paths),
        ..Default::default()
    }
}

/// A bootstrap ClusterRole.
struct Role {
    name: &'static str,
    rules: Vec<PolicyRule>,
    /// Labels beyond the bootstrapping one (`aggregate-to-*`).
    labels: &'static [(&'static str, &'static str)],
    /// `aggregate-to-<x>` label values whose roles this one aggregates.
    aggregates: Option<&'static str>,
}

fn role(name: &'static str, rules: Vec<PolicyRule>) -> Role {
    Role {
        name,
        rules,
        labels: &[],
        aggregates: None,
    }
}

const TO_ADMIN: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-admin", "true");
const TO_EDIT: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-edit", "true");
const TO_VIEW: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-view", "true");

/// The bootstrap ClusterRoles.
fn cluster_roles() -> Vec<Role> {
    let events = || rule(EVENT_VERBS, &["", "events.k8s.io"], &["events"]);
    vec![
        role(
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        Role {
            name: "admin",
            rules: vec![],
            labels: &[],
            aggregates: Some("admin"),
        },
        Role {
            name: "edit",
            rules: vec![],
            labels: &[TO_ADMIN],
            aggregates: Some("edit"),
        },
        Role {
            name: "view",
            rules: vec![],
            labels: &[TO_ADMIN, TO_EDIT],
            aggregates: Some("view"),
        },
        Role {
            name: "system:aggregate-to-admin",
            rules: vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                rule(READ_WRITE, &[RBAC_GROUP], &["rolebindings", "roles"]),
            ],
            labels: &[TO_ADMIN],
            aggregates: None,
        },
        Role {
            name: "system:aggregate-to-edit",
            rules: vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], &[""], &["serviceaccounts"]),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                ),
                rule(&["create"], &[""], &["pods/eviction"]),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                rule(&["create"], &[""], &["serviceaccounts/token"]),
                rule(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
                rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
                rule(
                    WRITE,
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                ),
                rule(WRITE, &["coordination.k8s.io"], &["leases"]),
            ],
            labels: &[TO_EDIT],
            aggregates: None,
        },
        Role {
            name: "system:aggregate-to-view",
            rules: vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                rule(
                    READ,
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                rule(READ, &[""], &["namespaces"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                rule(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                rule(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                rule(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
                rule(READ, &["events.k8s.io"], &["events"]),
            ],
            labels: &[TO_VIEW],
            aggregates: None,
        },
        role(
            "system:basic-user",
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        role(
            "system:discovery",
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        role(
            "system:public-info-viewer",
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        role(
            "system:service-account-issuer-discovery",
            vec![urls(
                &["get"],
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
            )],
        ),
        role(
            "system:monitoring",
            vec![urls(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        role(
            "system:kube-scheduler",
            vec![
                events(),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-scheduler"],
                ),
                rule(&["create"], &[""], &["endpoints"]),
                named(
                    &["get", "update"],
                    &[""],
                    &["endpoints"],
                    &["kube-scheduler"],
                ),
                rule(READ, &[""], &["nodes"]),
                rule(&["delete", "get", "list", "watch"], &[""], &["pods"]),
                rule(&["create"], &[""], &["bindings", "pods/binding"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(READ, &[""], &["replicationcontrollers", "services"]),
                rule(READ, &["apps", "extensions"], &["replicasets"]),
                rule(READ, &["apps"], &["statefulsets"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(
                    READ,
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                rule(
                    READ,
                    &["storage.k8s.io"],
                    &[
                        "csinodes",
                        "csidrivers",
                        "csistoragecapacities",
                        "storageclasses",
                    ],
                ),
                rule(READ, &[""], &["namespaces"]),
            ],
        ),
        role(
            "system:kube-controller-manager",
            vec![
                events(),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-controller-manager"],
                ),
                rule(&["create"], &[""], &["secrets", "serviceaccounts"]),
                rule(&["delete"], &[""], &["secrets"]),
                rule(
                    &["get"],
                    &[""],
                    &["configmaps", "namespaces", "secrets", "serviceaccounts"],
                ),
                rule(&["update"], &[""], &["secrets", "serviceaccounts"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                rule(&["list", "watch"], &["*"], &["*"]),
                rule(&["create"], &[""], &["serviceaccounts/token"]),
            ],
        ),
        role(
            "system:node-proxier",
            vec![
                rule(&["list", "watch"], &[""], &["endpoints", "services"]),
                rule(READ, &[""], &["nodes"]),
                events(),
                rule(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        // Skiff's scheduler: its leader Lease.
        role(
            "system:skiff:scheduler",
            vec![named(
                &["get", "update", "patch"],
                &["coordination.k8s.io"],
                &["leases"],
                &["skiff-scheduler"],
            )],
        ),
        // Skiff's controller-manager runs every controller under one identity, so it holds
        // what kube gives its controllers' service accounts together: the garbage collector
        // and namespace controller reach every kind; the workload controllers create and
        // update pods and ReplicaSets; node lifecycle taints nodes and evicts pods; the root
        // CA publisher creates `kube-root-ca.crt` ConfigMaps.
        role(
            "system:skiff:controller-manager",
            vec![
                rule(
                    &[
                        "get",
                        "list",
                        "watch",
                        "patch",
                        "update",
                        "delete",
                        "deletecollection",
                    ],
                    &["*"],
                    &["*"],
                ),
                rule(&["create"], &[""], &["pods", "events", "configmaps"]),
                rule(
                    &["create"],
                    &["apps"],
                    &["replicasets", "controllerrevisions"],
                ),
                rule(
                    &["update", "patch"],
                    &[""],
                    &[
                        "namespaces/finalize",
                        "namespaces/status",
                        "nodes/status",
                        "pods/status",
                    ],
                ),
                rule(
                    &["update", "patch"],
                    &["apps"],
                    &[
                        "deployments/status",
                        "replicasets/status",
                        "deployments/scale",
                        "replicasets/scale",
                    ],
                ),
                named(
                    &["get", "update", "patch"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["skiff-controller-manager"],
                ),
            ],
        ),
    ]
}

/// A bootstrap ClusterRoleBinding: (name, role, subjects as (kind, name)).
type Binding = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
);

/// The bootstrap ClusterRoleBindings.
fn cluster_role_bindings() -> Vec<Binding> {
    vec![
        (
            "cluster-admin",
            "cluster-admin",
            vec![("Group", "system:masters")],
        ),
        (
            "system:basic-user",
            "system:basic-user",
            vec![("Group", "system:authenticated")],
        ),
        (
            "system:discovery",
            "system:discovery",
            vec![("Group", "system:authenticated")],
        ),
        (
            "system:public-info-viewer",
            "system:public-info-viewer",
            vec![
                ("Group", "system:authenticated"),
                ("Group", "system:unauthenticated"),
            ],
        ),
        (
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            vec![("Group", "system:serviceaccounts")],
        ),
        (
            "system:monitoring",
            "system:monitoring",
            vec![("Group", "system:monitoring")],
        ),
        (
            "system:kube-scheduler",
            "system:kube-scheduler",
            vec![("User", "system:kube-scheduler")],
        ),
        (
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            vec![("User", "system:kube-controller-manager")],
        ),
        (
            "system:node-proxier",
            "system:node-proxier",
            vec![("User", "system:kube-proxy")],
        ),
        (
            "system:skiff:scheduler",
            "system:skiff:scheduler",
            vec![("User", "system:kube-scheduler")],
        ),
        (
            "system:skiff:controller-manager",
            "system:skiff:controller-manager",
            vec![("User", "system:kube-controller-manager")],
        ),
    ]
}

fn bootstrap_meta(name: &str, extra: &[(&str, &str)]) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert(BOOTSTRAPPING.into(), json!("rbac-defaults"));
    for (k, v) in extra {
        labels.insert((*k).into(), json!(v));
    }
    json!({"name": name, "labels": labels, "annotations": {AUTOUPDATE: "true"}})
}

fn role_object(r: &Role) -> Value {
    let mut obj = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": bootstrap_meta(r.name, r.labels),
        "rules": r.rules,
    });
    if let Some(to) = r.aggregates {
        obj["aggregationRule"] = json!({"clusterRoleSelectors": [
            {"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"}}
        ]});
    }
    obj
}

fn binding_object(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, name)| json!({"kind": kind, "apiGroup": RBAC_GROUP, "name": name}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": bootstrap_meta(name, &[]),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

fn request(resource: &str, name: Option<&str>, body: Value) -> Request {
    Request {
        group: RBAC_GROUP.into(),
        resource: resource.into(),
        name: name.map(String::from),
        body: Some(body),
        client: "kube-apiserver".into(),
        ..Default::default()
    }
}

/// Creates what is missing and adds what an auto-updated object lacks: a rule it does not
/// cover, a subject it does not name, an aggregation selector.
pub async fn reconcile(registry: &Registry) -> Result<(), Status> {
    let wanted: Vec<(&str, Value)> = cluster_roles()
        .iter()
        .map(|r| ("clusterroles", role_object(r)))
        .chain(
            cluster_role_bindings()
                .iter()
                .map(|(n, r, s)| ("clusterrolebindings", binding_object(n, r, s))),
        )
        .collect();
    for (resource, want) in wanted {
        let name = meta::name(&want).to_string();
        match registry
            .create(&request(resource, None, want.clone()))
            .await
        {
            Ok(_) => continue,
            Err(s) if s.is(reason::ALREADY_EXISTS) => {}
            Err(s) => return Err(s),
        }
        let get = Request {
            group: RBAC_GROUP.into(),
            resource: resource.into(),
            name: Some(name.clone()),
            ..Default::default()
        };
        let mut have = crate::api::codec::msgpack_to_value(&registry.get(&get)?)
            .map_err(|e| Status::internal(e.to_string()))?;
        if have
            .pointer(&format!(
                "/metadata/annotations/{}",
                AUTOUPDATE.replace('/', "~1")
            ))
            .and_then(Value::as_str)
            == Some("false")
        {
            continue;
        }
        if !merge_missing(resource, &mut have, &want) {
            continue;
        }
        tracing::info!(%resource, %name, "reconciling bootstrap RBAC policy");
        registry
            .update(&request(resource, Some(&name), have))
            .await?;
    }
    // Aggregated roles aggregate each other (`view` into `edit` into `admin`): passes until
    // nothing changes, so the API server serves the whole policy from its first request.
    for _ in 0..8 {
        if !aggregate(registry).await? {
            break;
        }
    }
    Ok(())
}

/// Adds to `have` what `want` has and it lacks; whether anything was added.
fn merge_missing(resource: &str, have: &mut Value, want: &Value) -> bool {
    let mut changed = false;
    if resource == "clusterroles" {
        if want.get("aggregationRule").is_some()
            && have.get("aggregationRule") != want.get("aggregationRule")
        {
            have["aggregationRule"] = want["aggregationRule"].clone();
            changed = true;
        }
        let owned = rbac::rules_of(have);
        let missing = rbac::uncovered(&owned, &rbac::rules_of(want));
        if !missing.is_empty() && want.get("aggregationRule").is_none() {
            let mut rules = owned;
            rules.extend(missing);
            have["rules"] = json!(rules);
            changed = true;
        }
    } else {
        let subjects = have["subjects"].as_array().cloned().unwrap_or_default();
        let mut merged = subjects.clone();
        for s in want["subjects"].as_array().into_iter().flatten() {
            if !subjects
                .iter()
                .any(|h| h["kind"] == s["kind"] && h["name"] == s["name"])
            {
                merged.push(s.clone());
            }
        }
        if merged.len() != subjects.len() {
            have["subjects"] = json!(merged);
            changed = true;
        }
    }
    changed
}

/// One pass of the ClusterRole aggregation controller: each ClusterRole with an
/// `aggregationRule` gets the rules of every ClusterRole its selectors match, in name order,
/// each rule once. Whether it changed any.
pub async fn aggregate(registry: &Registry) -> Result<bool, Status> {
    let mut changed = false;
    let roles: Vec<Value> = registry
        .reader()
        .values(rbac::CLUSTER_ROLES)
        .iter()
        .filter_map(|kv| crate::api::codec::msgpack_to_value(&kv.value).ok())
        .collect();
    for target in &roles {
        let Some(selectors) = target
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
        else {
            continue;
        };
        let selectors: Vec<LabelSelector> = selectors
            .iter()
            .filter_map(|s| LabelSelector::from_json(s).ok())
            .collect();
        let name = meta::name(target);
        let mut rules: Vec<PolicyRule> = Vec::new();
        for source in &roles {
            if meta::name(source) == name || !selectors.iter().any(|s| s.matches_object(source)) {
                continue;
            }
            for r in rbac::rules_of(source) {
                if !rules.contains(&r) {
                    rules.push(r);
                }
            }
        }
        if rbac::rules_of(target) == rules {
            continue;
        }
        let mut updated = target.clone();
        updated["rules"] = json!(rules);
        match registry
            .update(&request("clusterroles", Some(name), updated))
            .await
        {
            Ok(_) => changed = true,
            // Changed meanwhile: the next pass sees the change.
            Err(s) if s.code == 409 => changed = true,
            Err(s) => return Err(s),
        }
    }
    Ok(changed)
}

/// Runs [`aggregate`] whenever a ClusterRole changes.
pub async fn run_aggregation(registry: Registry) {
    let mut seen = None;
    loop {
        let epoch = registry.reader().epoch(rbac::CLUSTER_ROLES);
        if seen != Some(epoch) {
            seen = Some(epoch);
            if let Err(e) = aggregate(&registry).await {
                tracing::warn!(error = %e.message, "aggregating ClusterRoles");
                seen = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_objects_pass_validation() {
        use crate::apiserver::kinds;
        let info = |p: &str| crate::api::resource::lookup(RBAC_GROUP, p).unwrap();
        for r in cluster_roles() {
            let obj = role_object(&r);
            let errs = kinds::of(info("clusterroles")).validate(info("clusterroles"), &obj, None);
            assert!(errs.is_empty(), "{}: {errs:?}", r.name);
        }
        for (n, r, s) in cluster_role_bindings() {
            assert!(
                cluster_roles().iter().any(|x| x.name == r),
                "{n} binds a missing role"
            );
            let obj = binding_object(n, r, &s);
            let p = "clusterrolebindings";
            assert!(
                kinds::of(info(p)).validate(info(p), &obj, None).is_empty(),
                "{n}"
            );
        }
    }

    #[test]
    fn reconcile_adds_missing_rules_and_subjects_only() {
        let want = binding_object("b", "r", &[("Group", "g1"), ("Group", "g2")]);
        let mut have = binding_object("b", "r", &[("Group", "g1"), ("User", "extra")]);
        assert!(merge_missing("clusterrolebindings", &mut have, &want));
        assert_eq!(have["subjects"].as_array().unwrap().len(), 3);
        assert!(!merge_missing("clusterrolebindings", &mut have, &want));
        let want = role_object(&role("r", vec![rule(&["get", "list"], &[""], &["pods"])]));
        let mut have = role_object(&role(
            "r",
            vec![
                rule(&["get"], &[""], &["pods"]),
                rule(&["*"], &[""], &["secrets"]),
            ],
        ));
        assert!(merge_missing("clusterroles", &mut have, &want));
        assert_eq!(have["rules"].as_array().unwrap().len(), 3);
        assert!(!merge_missing("clusterroles", &mut have, &want));
    }
}
