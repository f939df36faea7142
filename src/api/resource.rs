//! The table of served kinds: what each resource is called, where it lives in the store, and
//! which subresources and field selectors it has. Adding a kind starts here.

/// One served resource (a row of `kubectl api-resources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; "" for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Lower-case plural used in URLs and subjects, e.g. `pods`.
    pub plural: &'static str,
    /// Lower-case singular, e.g. `pod`.
    pub singular: &'static str,
    /// Kind, e.g. `Pod`.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl short names (`po`, `deploy`).
    pub short_names: &'static [&'static str],
    /// Whether the resource has a `status` subresource (then the main resource ignores status
    /// changes and the subresource ignores everything else).
    pub has_status: bool,
    /// Whether the resource has a `scale` subresource.
    pub has_scale: bool,
    /// Field selector paths accepted beyond metadata.name / metadata.namespace.
    pub extra_fields: &'static [&'static str],
    /// Discovery categories (`all` makes `kubectl get all` list the kind).
    pub categories: &'static [&'static str],
    /// Subresources beyond `status` and `scale`.
    pub subresources: &'static [Subresource],
    /// Where its objects are stored, under `/registry/`: the plural for built-in kinds
    /// (kube's paths), `<group>/<plural>` for custom resources, whose plural may repeat a
    /// built-in one.
    pub store: &'static str,
}

/// A subresource served beyond `status` and `scale`, as discovery lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    /// Name after the object's, e.g. `eviction`.
    pub name: &'static str,
    /// API group of what it takes or answers; `""` for core.
    pub group: &'static str,
    /// Version of what it takes or answers.
    pub version: &'static str,
    /// Kind of what it takes or answers, e.g. `Eviction`; `""` for the resource's own kind.
    pub kind: &'static str,
    /// Verbs it serves.
    pub verbs: &'static [&'static str],
}

impl ResourceInfo {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store prefix holding every object of this resource: `/registry/pods/`.
    pub fn prefix(&self) -> String {
        format!("/registry/{}/", self.store)
    }

    /// The store prefix for one namespace (or everything when `namespace` is None or the
    /// resource is cluster-scoped).
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced && !ns.is_empty() => {
                format!("/registry/{}/{ns}/", self.store)
            }
            _ => self.prefix(),
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/{name}", self.store),
            _ => format!("/registry/{}/{name}", self.store),
        }
    }

    /// Every field selector path this resource accepts.
    pub fn field_labels(&self) -> Vec<&'static str> {
        let mut v = vec!["metadata.name", "metadata.namespace"];
        v.extend_from_slice(self.extra_fields);
        v
    }

    /// The kind of the list: `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

/// Every served resource.
pub const RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        has_status: true,
        has_scale: false,
        extra_fields: &["status.phase"],
        categories: &[],
        subresources: &[Subresource {
            name: "finalize",
            group: "",
            version: "v1",
            kind: "Namespace",
            verbs: &["update"],
        }],
        store: "namespaces",
    },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        has_status: true,
        has_scale: false,
        extra_fields: &["spec.unschedulable"],
        categories: &[],
        subresources: &[],
        store: "nodes",
    },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        has_status: true,
        has_scale: false,
        extra_fields: &[
            "spec.nodeName",
            "spec.hostNetwork",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        categories: &["all"],
        subresources: &[
            Subresource {
                name: "binding",
                group: "",
                version: "v1",
                kind: "Binding",
                verbs: &["create"],
            },
            Subresource {
                name: "eviction",
                group: "policy",
                version: "v1",
                kind: "Eviction",
                verbs: &["create"],
            },
            Subresource {
                name: "log",
                group: "",
                version: "v1",
                kind: "Pod",
                verbs: &["get"],
            },
        ],
        store: "pods",
    },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        has_status: false,
        has_scale: false,
        extra_fields: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        categories: &[],
        subresources: &[],
        store: "events",
    },
    // The same objects as core Events, stored once; converted at the edge
    // (`apiserver::events_v1`).
    ResourceInfo {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &[],
        has_status: false,
        has_scale: false,
        extra_fields: &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "deprecatedSource",
            "type",
        ],
        categories: &[],
        subresources: &[],
        store: "events",
    },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        has_status: false,
        has_scale: false,
        extra_fields: &[],
        categories: &[],
        subresources: &[],
        store: "configmaps",
    },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        has_status: false,
        has_scale: false,
        extra_fields: &["type"],
        categories: &[],
        subresources: &[],
        store: "secrets",
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        has_status: true,
        has_scale: true,
        extra_fields: &[],
        categories: &["all"],
        subresources: &[],
        store: "deployments",
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        has_status: true,
        has_scale: true,
        extra_fields: &["status.replicas"],
        categories: &["all"],
        subresources: &[],
        store: "replicasets",
    },
    ResourceInfo {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        has_status: false,
        has_scale: false,
        extra_fields: &[],
        categories: &[],
        subresources: &[],
        store: "leases",
    },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        has_status: false,
        has_scale: false,
        extra_fields: &[],
        categories: &[],
        subresources: &[Subresource {
            name: "token",
            group: "authentication.k8s.io",
            version: "v1",
            kind: "TokenRequest",
            verbs: &["create"],
        }],
        store: "serviceaccounts",
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        has_status: false,
        has_scale: false,
        extra_fields: &[],
        categories: &[],
        subresources: &[],
        store: "roles",
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        has_status: false,
        has_scale: false,
        extra_fields: &[],
        categories: &[],
        subresources: &[],
        store: "clusterroles",
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        has_status: false,
        has_scale: false,
        extra_fields: &[],
        categories: &[],
        subresources: &[],
        store: "rolebindings",
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        has_status: false,
        has_scale: false,
        extra_fields: &[],
        categories: &[],
        subresources: &[],
        store: "clusterrolebindings",
    },
    ResourceInfo {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: "customresourcedefinitions",
        singular: "customresourcedefinition",
        kind: "CustomResourceDefinition",
        namespaced: false,
        short_names: &["crd", "crds"],
        has_status: true,
        has_scale: false,
        extra_fields: &[],
        categories: &["api-extensions"],
        subresources: &[],
        store: "apiextensions.k8s.io/customresourcedefinitions",
    },
];

/// Finds a resource by group and plural (or singular, kind or short name, as kubectl allows).
pub fn lookup(group: &str, name: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| {
        r.group == group
            && (r.plural == name
                || r.singular == name
                || r.kind == name
                || r.short_names.contains(&name))
    })
}

/// Finds a resource by apiVersion and kind, as written in an object's body.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_prefixes() {
        let pods = lookup("", "pods").unwrap();
        assert_eq!(pods.key(Some("default"), "a"), "/registry/pods/default/a");
        assert_eq!(pods.list_prefix(Some("default")), "/registry/pods/default/");
        assert_eq!(pods.list_prefix(None), "/registry/pods/");
        let ns = lookup("", "ns").unwrap();
        assert_eq!(ns.key(Some("ignored"), "x"), "/registry/namespaces/x");
        assert_eq!(lookup("apps", "deploy").unwrap().api_version(), "apps/v1");
        assert!(by_kind("apps/v1", "ReplicaSet").is_some());
        assert!(by_kind("v1", "Deployment").is_none());
    }
}
