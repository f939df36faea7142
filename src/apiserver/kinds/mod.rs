//! Per-kind strategies: everything the API server does differently for one kind, in one file
//! per kind, registered in [`STRATEGIES`] next to the kind's row of
//! [`RESOURCES`](crate::api::resource::RESOURCES).
//!
//! A [`Strategy`] is kube-apiserver's `rest.RESTCreateStrategy`/`RESTUpdateStrategy`/
//! `RESTDeleteStrategy` and `TableConvertor` in one trait: the normalisation conversion does,
//! defaults, create-time admission, the status an object starts with, validation of creates
//! and updates, what each write path may change (spec vs status), how a delete waits, the
//! Table columns, and the strategic-merge patch metadata. The registry, patching and the
//! Table code ask the strategy and never match on a kind's name; adding a kind is one file
//! here, one row in `RESOURCES` and one in `STRATEGIES`.

use serde_json::{json, Value};

use super::http::table;
use super::patch::RootKind;
use super::validation::FieldError;
use crate::api::meta;
use crate::api::resource::ResourceInfo;
use crate::api::status::Status;
use crate::api::wire::DeleteOptions;

pub mod config_map;
pub mod custom_resource_definition;
pub mod deployment;
pub mod event;
pub mod lease;
pub mod namespace;
pub mod node;
pub mod pod;
pub mod replica_set;
pub mod role;
pub mod role_binding;
pub mod secret;
pub mod service_account;

/// What one kind does differently. Every method but [`Strategy::validate`] has the behaviour
/// of a kind with no special rules as its default.
pub trait Strategy: Send + Sync {
    /// Whether the kind keeps `metadata.generation` (set to 1 on create, bumped when the spec
    /// changes): kinds whose spec a controller acts on.
    fn tracks_generation(&self) -> bool {
        false
    }

    /// What kube's conversion to its internal types does to a written object before defaults
    /// (a Secret's `stringData` merged into `data`). A body that cannot convert is 400.
    fn normalise(&self, _obj: &mut Value) -> Result<(), Status> {
        Ok(())
    }

    /// Field defaults, as kube's defaulters set them on every write. Idempotent, so that a
    /// replaced object compares equal to the stored one. Like every hook that changes an
    /// object, it is given a JSON object (the registry refuses anything else first).
    fn defaults(&self, _obj: &mut Value) {}

    /// Create-time admission (kube's admission plugins that mutate or refuse a new object).
    fn admit_create(&self, _obj: &mut Value, _admission: &Admission) -> Result<(), Status> {
        Ok(())
    }

    /// The status an object starts with (`PrepareForCreate`): a written one is not kept.
    fn initial_status(&self, _obj: &mut Value) {}

    /// Validates a create (`old` None) or an update: kube's `Validate` and `ValidateUpdate`.
    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError>;

    /// Keeps each write path to its part of the object (`PrepareForUpdate`): by default the
    /// main resource may not change status (for kinds with a status subresource) and the
    /// status subresource may change only status. Other subresources are 404 unless the kind
    /// serves them.
    fn prepare_for_update(
        &self,
        info: &ResourceInfo,
        sub: Option<&str>,
        old: &Value,
        new: &mut Value,
    ) -> Result<(), Status> {
        prepare_for_update(info, sub, old, new)
    }

    /// Seconds a delete waits before the object goes (graceful deletion).
    fn grace_period(&self, _obj: &Value, _opts: &DeleteOptions) -> i64 {
        0
    }

    /// Whether this object may be deleted at all (kube's NamespaceLifecycle admission).
    fn admit_delete(&self, _info: &ResourceInfo, _name: &str) -> Result<(), Status> {
        Ok(())
    }

    /// Whether a delete must wait for something besides `metadata.finalizers`, such as a
    /// namespace's `spec.finalizers`.
    fn delete_pending(&self, _obj: &Value) -> bool {
        false
    }

    /// Marks an object whose deletion has begun (a namespace's `Terminating` phase).
    fn on_deleting(&self, _obj: &mut Value) {}

    /// A finalizer the API server itself adds when an object's deletion begins, for work it
    /// does before the object may go: a CRD's `customresourcecleanup.apiextensions.k8s.io`
    /// (its objects are deleted first, see `custom::cleanup`).
    fn delete_finalizer(&self) -> Option<&'static str> {
        None
    }

    /// Whether deleting with `Orphan` or `Foreground` propagation adds the finalizer the
    /// garbage collector honours: every built-in kind the collector watches (all but
    /// Events, which kube's collector ignores too, and custom resources, which Skiff's does
    /// not watch yet: a finalizer there would never be removed).
    fn owns_dependents(&self) -> bool {
        true
    }

    /// Table column definitions for `kubectl get`.
    fn columns(&self) -> Vec<Value> {
        vec![table::name_column(), table::age_column()]
    }

    /// The cells of one Table row, matching [`Strategy::columns`].
    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![json!(meta::name(obj)), json!(table::age(obj))]
    }

    /// The patch metadata a strategic merge patch of this kind follows.
    fn patch_root(&self) -> RootKind {
        RootKind::Other
    }

    /// Whether the kind takes strategic merge patches: kube has no patch metadata for custom
    /// resources and answers 415.
    fn takes_strategic_merge(&self) -> bool {
        true
    }
}

/// How the admission plugins are configured (kube-apiserver's flags for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// DefaultTolerationSeconds: how long a new pod tolerates a not-ready or unreachable
    /// node when it does not say (kube's `--default-not-ready-toleration-seconds` and
    /// `--default-unreachable-toleration-seconds`, 300 each).
    pub toleration_seconds: i64,
    /// The ServiceAccount plugin (`apiserver::sa_admission`): a pod names an existing
    /// ServiceAccount and gets its token mounted. On, as in kube-apiserver; off only for an
    /// API server that runs without a controller-manager to make `default` ServiceAccounts
    /// (`--disable-admission-plugins=ServiceAccount`).
    pub service_account: bool,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            toleration_seconds: 300,
            service_account: true,
        }
    }
}

/// Every served resource's strategy, keyed by (group, plural) as in `RESOURCES`.
pub static STRATEGIES: &[(&str, &str, &dyn Strategy)] = &[
    ("", "namespaces", &namespace::Namespace),
    ("", "nodes", &node::Node),
    ("", "pods", &pod::Pod),
    ("", "events", &event::Event),
    // Stored as core Events and converted at the edge (`apiserver::events_v1`): the core
    // strategy applies to the stored form.
    ("events.k8s.io", "events", &event::Event),
    ("", "configmaps", &config_map::ConfigMap),
    ("", "secrets", &secret::Secret),
    ("apps", "deployments", &deployment::Deployment),
    ("apps", "replicasets", &replica_set::ReplicaSet),
    ("coordination.k8s.io", "leases", &lease::Lease),
    ("", "serviceaccounts", &service_account::ServiceAccount),
    ("rbac.authorization.k8s.io", "roles", &role::Role),
    (
        "rbac.authorization.k8s.io",
        "clusterroles",
        &role::ClusterRole,
    ),
    (
        "rbac.authorization.k8s.io",
        "rolebindings",
        &role_binding::RoleBinding,
    ),
    (
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        &role_binding::ClusterRoleBinding,
    ),
    (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        &custom_resource_definition::CustomResourceDefinition,
    ),
];

/// The strategy of a served resource: a built-in kind's from [`STRATEGIES`], a custom
/// resource's from its CRD (`apiserver::custom`).
///
/// # Panics
/// Never for a row of `RESOURCES` (a unit test checks that every row has a strategy) or
/// one the custom catalog made.
pub fn of(info: &ResourceInfo) -> &'static dyn Strategy {
    if let Some(s) = super::custom::strategy::of(info) {
        return s;
    }
    STRATEGIES
        .iter()
        .find(|(g, p, _)| *g == info.group && *p == info.plural)
        .map(|(_, _, s)| *s)
        .unwrap_or_else(|| panic!("no strategy for {}/{}", info.group, info.plural))
}

/// The default [`Strategy::prepare_for_update`].
pub fn prepare_for_update(
    info: &ResourceInfo,
    sub: Option<&str>,
    old: &Value,
    new: &mut Value,
) -> Result<(), Status> {
    match sub {
        None if info.has_status => {
            keep_field(new, old, "status");
            Ok(())
        }
        None => Ok(()),
        Some("status") if info.has_status => {
            let status = new.get("status").cloned();
            *new = old.clone();
            if let Some(m) = new.as_object_mut() {
                match status {
                    Some(s) => m.insert("status".into(), s),
                    None => m.remove("status"),
                };
            }
            Ok(())
        }
        Some(other) => Err(Status::not_found(
            info.group,
            &format!("{}/{other}", info.plural),
            meta::name(old),
        )),
    }
}

/// Sets `new[field]` to `old[field]`, or removes it when `old` has none. A `new` that is not
/// an object (a patch may replace the whole document) is left for the registry to refuse.
pub fn keep_field(new: &mut Value, old: &Value, field: &str) {
    let Some(m) = new.as_object_mut() else {
        return;
    };
    match old.get(field) {
        Some(s) => m.insert(field.to_string(), s.clone()),
        None => m.remove(field),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resource::RESOURCES;

    #[test]
    fn every_resource_has_one_strategy() {
        for r in RESOURCES {
            let n = STRATEGIES
                .iter()
                .filter(|(g, p, _)| *g == r.group && *p == r.plural)
                .count();
            assert_eq!(n, 1, "{}/{}", r.group, r.plural);
        }
        assert_eq!(STRATEGIES.len(), RESOURCES.len());
    }
}
