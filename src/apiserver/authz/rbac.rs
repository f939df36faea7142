//! The RBAC authorizer: which rules the Roles and ClusterRoles bound to a user grant, and
//! whether one set of rules covers another (the escalation check).
//!
//! The bindings are read from the Store's view into an [`Index`] keyed by subject, rebuilt
//! only when the Store says a role or binding changed (its per-prefix epochs), so a request
//! costs a few hash lookups and the rules of the roles bound to its caller.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Attributes;
use crate::apiserver::store;
use crate::apiserver::UserInfo;

/// Where roles and bindings are stored (kube's paths).
pub const ROLES: &str = "/registry/roles/";
/// ClusterRoles.
pub const CLUSTER_ROLES: &str = "/registry/clusterroles/";
/// RoleBindings.
pub const ROLE_BINDINGS: &str = "/registry/rolebindings/";
/// ClusterRoleBindings.
pub const CLUSTER_ROLE_BINDINGS: &str = "/registry/clusterrolebindings/";

/// One `rules[]` entry of a Role or ClusterRole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyRule {
    /// `get`, `list`, …, or `*`.
    pub verbs: Vec<String>,
    /// API groups ("" is core), or `*`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// `pods`, `pods/log`, `*/scale`, or `*`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Object names the rule is limited to (none: every object).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Paths outside the API (`/healthz`, `/api/*`).
    #[serde(rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// A rule's `resources` entry against a request's resource and subresource.
fn resource_matches(rule: &str, resource: &str, sub: &str) -> bool {
    if rule == "*" {
        return true;
    }
    if sub.is_empty() {
        return rule == resource;
    }
    match rule.split_once('/') {
        Some((r, s)) => s == sub && (r == resource || r == "*"),
        None => false,
    }
}

/// A `nonResourceURLs` entry against a path: exact, or a prefix ending in `*`.
fn url_matches(rule: &str, path: &str) -> bool {
    match rule.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => rule == path,
    }
}

impl PolicyRule {
    /// Whether this rule allows the request.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, a.verb) {
            return false;
        }
        match &a.path {
            Some(path) => self.non_resource_urls.iter().any(|u| url_matches(u, path)),
            None => {
                has(&self.api_groups, a.group)
                    && self
                        .resources
                        .iter()
                        .any(|r| resource_matches(r, a.resource, a.subresource))
                    && (self.resource_names.is_empty()
                        || (!a.name.is_empty() && self.resource_names.iter().any(|n| n == a.name)))
            }
        }
    }

    /// kube's compact form, as its escalation errors print a rule.
    pub fn compact(&self) -> String {
        let q = |v: &[String]| {
            let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", items.join(" "))
        };
        let mut parts = Vec::new();
        for (name, v) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("ResourceNames", &self.resource_names),
            ("NonResourceURLs", &self.non_resource_urls),
            ("Verbs", &self.verbs),
        ] {
            if !v.is_empty() || name == "Verbs" {
                parts.push(format!("{name}:{}", q(v)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }

    /// The rule as single-verb, single-resource (and single-name) rules: what coverage is
    /// judged on, one grant at a time.
    fn breakdown(&self) -> Vec<PolicyRule> {
        let one = |v: &str| vec![v.to_string()];
        let mut out = Vec::new();
        for verb in &self.verbs {
            for url in &self.non_resource_urls {
                out.push(PolicyRule {
                    verbs: one(verb),
                    non_resource_urls: one(url),
                    ..Default::default()
                });
            }
            for group in &self.api_groups {
                for resource in &self.resources {
                    let base = PolicyRule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        ..Default::default()
                    };
                    for name in &self.resource_names {
                        out.push(PolicyRule {
                            resource_names: one(name),
                            ..base.clone()
                        });
                    }
                    if self.resource_names.is_empty() {
                        out.push(base);
                    }
                }
            }
        }
        out
    }

    /// Whether this rule grants all of `single` (one verb, one resource or URL, at most one
    /// name). Wildcards count only on this side: granting `*` needs `*`.
    fn covers_single(&self, single: &PolicyRule) -> bool {
        let verb = &single.verbs[0];
        if !has(&self.verbs, verb) {
            return false;
        }
        if let Some(url) = single.non_resource_urls.first() {
            return self
                .non_resource_urls
                .iter()
                .any(|u| u == "*" || url_matches(u, url));
        }
        let (Some(group), Some(resource)) = (single.api_groups.first(), single.resources.first())
        else {
            return false;
        };
        let resource_ok = self.resources.iter().any(|r| {
            r == "*"
                || r == resource
                || match (r.split_once('/'), resource.split_once('/')) {
                    (Some(("*", s)), Some((_, want))) => s == want,
                    _ => false,
                }
        });
        let names_ok = self.resource_names.is_empty()
            || single
                .resource_names
                .first()
                .is_some_and(|n| self.resource_names.contains(n));
        has(&self.api_groups, group) && resource_ok && names_ok
    }
}

/// The rules of `servant` that `owner` does not grant (empty: every one is covered), each
/// broken down to a single verb and resource.
pub fn uncovered(owner: &[PolicyRule], servant: &[PolicyRule]) -> Vec<PolicyRule> {
    servant
        .iter()
        .flat_map(PolicyRule::breakdown)
        .filter(|single| !owner.iter().any(|o| o.covers_single(single)))
        .collect()
}

/// The rules of a stored Role or ClusterRole.
pub fn rules_of(obj: &Value) -> Vec<PolicyRule> {
    obj.get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

/// What a binding grants: a Role of its namespace or a ClusterRole.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RoleKey {
    /// `Role` (namespace, name).
    Role(String, String),
    /// `ClusterRole` name.
    ClusterRole(String),
}

/// One binding as the index keeps it.
#[derive(Debug, Clone)]
struct Grant {
    /// The RoleBinding's namespace; None for a ClusterRoleBinding (everywhere).
    namespace: Option<String>,
    role: RoleKey,
}

/// The roles and bindings at one point of the Store.
#[derive(Debug, Default)]
pub struct Index {
    roles: HashMap<RoleKey, Arc<Vec<PolicyRule>>>,
    by_user: HashMap<String, Vec<Grant>>,
    by_group: HashMap<String, Vec<Grant>>,
}

impl Index {
    fn build(reader: &store::Reader) -> Index {
        let objects = |prefix: &str| {
            reader
                .values(prefix)
                .into_iter()
                .filter_map(|kv| crate::api::codec::msgpack_to_value(&kv.value).ok())
        };
        let mut index = Index::default();
        for role in objects(ROLES) {
            let key = RoleKey::Role(
                crate::api::meta::namespace(&role).to_string(),
                crate::api::meta::name(&role).to_string(),
            );
            index.roles.insert(key, Arc::new(rules_of(&role)));
        }
        for role in objects(CLUSTER_ROLES) {
            let key = RoleKey::ClusterRole(crate::api::meta::name(&role).to_string());
            index.roles.insert(key, Arc::new(rules_of(&role)));
        }
        for (prefix, cluster) in [(ROLE_BINDINGS, false), (CLUSTER_ROLE_BINDINGS, true)] {
            for binding in objects(prefix) {
                let namespace = crate::api::meta::namespace(&binding).to_string();
                let Some(role) = role_ref(&binding, &namespace) else {
                    continue;
                };
                let grant = Grant {
                    namespace: (!cluster).then(|| namespace.clone()),
                    role,
                };
                for subject in binding
                    .get("subjects")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let name = subject.get("name").and_then(Value::as_str).unwrap_or("");
                    let (map, key) = match subject.get("kind").and_then(Value::as_str) {
                        Some("User") => (&mut index.by_user, name.to_string()),
                        Some("Group") => (&mut index.by_group, name.to_string()),
                        Some("ServiceAccount") => {
                            let ns = subject
                                .get("namespace")
                                .and_then(Value::as_str)
                                .filter(|s| !s.is_empty())
                                .unwrap_or(&namespace);
                            (
                                &mut index.by_user,
                                format!("system:serviceaccount:{ns}:{name}"),
                            )
                        }
                        _ => continue,
                    };
                    map.entry(key).or_default().push(grant.clone());
                }
            }
        }
        index
    }

    /// The rules of a role, None when it does not exist.
    pub fn role(&self, key: &RoleKey) -> Option<&Arc<Vec<PolicyRule>>> {
        self.roles.get(key)
    }

    /// Calls `f` with the rules of every role bound to `user` that apply in `namespace`
    /// ("" : cluster-wide, where only ClusterRoleBindings apply) until it returns true.
    pub fn visit(
        &self,
        user: &UserInfo,
        namespace: &str,
        mut f: impl FnMut(&[PolicyRule]) -> bool,
    ) -> bool {
        let grants = self
            .by_user
            .get(&user.name)
            .into_iter()
            .chain(user.groups.iter().filter_map(|g| self.by_group.get(g)))
            .flatten();
        for grant in grants {
            if grant.namespace.as_deref().is_some_and(|ns| ns != namespace) {
                continue;
            }
            if let Some(rules) = self.roles.get(&grant.role) {
                if f(rules) {
                    return true;
                }
            }
        }
        false
    }

    /// Every rule that applies to `user` in `namespace`.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        let mut out = Vec::new();
        self.visit(user, namespace, |rules| {
            out.extend_from_slice(rules);
            false
        });
        out
    }
}

/// A binding's `roleRef` as a [`RoleKey`].
pub fn role_ref(binding: &Value, namespace: &str) -> Option<RoleKey> {
    let name = binding.pointer("/roleRef/name").and_then(Value::as_str)?;
    match binding.pointer("/roleRef/kind").and_then(Value::as_str)? {
        "Role" => Some(RoleKey::Role(namespace.to_string(), name.to_string())),
        "ClusterRole" => Some(RoleKey::ClusterRole(name.to_string())),
        _ => None,
    }
}

/// The RBAC authorizer over the Store's view.
pub struct Rbac {
    reader: store::Reader,
    /// The index and the epochs of the four prefixes it was built at.
    current: RwLock<Option<([u64; 4], Arc<Index>)>>,
}

impl Rbac {
    /// An authorizer reading `reader`.
    pub fn new(reader: store::Reader) -> Self {
        Rbac {
            reader,
            current: RwLock::new(None),
        }
    }

    /// The index as the Store holds it now.
    pub fn index(&self) -> Arc<Index> {
        let epochs = [ROLES, CLUSTER_ROLES, ROLE_BINDINGS, CLUSTER_ROLE_BINDINGS]
            .map(|p| self.reader.epoch(p));
        if let Some((at, index)) = &*self.current.read().unwrap_or_else(|e| e.into_inner()) {
            if *at == epochs {
                return index.clone();
            }
        }
        let index = Arc::new(Index::build(&self.reader));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some((epochs, index.clone()));
        index
    }

    /// Whether a role bound to `user` allows the request.
    pub fn allows(&self, user: &UserInfo, a: &Attributes) -> bool {
        self.index()
            .visit(user, a.namespace, |rules| rules.iter().any(|r| r.allows(a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        PolicyRule {
            verbs: v(verbs),
            api_groups: v(groups),
            resources: v(resources),
            resource_names: v(names),
            non_resource_urls: vec![],
        }
    }

    fn attrs<'a>(verb: &'a str, resource: &'a str, sub: &'a str, name: &'a str) -> Attributes<'a> {
        Attributes {
            verb,
            group: "",
            resource,
            subresource: sub,
            namespace: "default",
            name,
            path: None,
        }
    }

    #[test]
    fn rules_match_as_kube_matches_them() {
        let r = rule(&["get"], &[""], &["pods"], &[]);
        assert!(r.allows(&attrs("get", "pods", "", "p")));
        assert!(!r.allows(&attrs("get", "pods", "log", "p")));
        assert!(!r.allows(&attrs("list", "pods", "", "")));
        let sub = rule(&["*"], &["*"], &["*/scale"], &[]);
        assert!(sub.allows(&attrs("update", "deployments", "scale", "d")));
        assert!(!sub.allows(&attrs("update", "deployments", "", "d")));
        let named = rule(&["get"], &[""], &["secrets"], &["s1"]);
        assert!(named.allows(&attrs("get", "secrets", "", "s1")));
        assert!(!named.allows(&attrs("get", "secrets", "", "s2")));
        assert!(!named.allows(&attrs("get", "secrets", "", "")));
        let url = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/api/*".into(), "/healthz".into()],
            ..Default::default()
        };
        let path = |p: &'static str| Attributes {
            path: Some(p),
            ..attrs("get", "", "", "")
        };
        assert!(url.allows(&path("/api/v1")));
        assert!(url.allows(&path("/healthz")));
        assert!(!url.allows(&path("/healthz/ping")));
        assert!(!url.allows(&attrs("get", "pods", "", "")));
    }

    #[test]
    fn coverage_needs_every_grant_and_wildcards_only_on_the_owner() {
        let owner = vec![rule(&["get", "list"], &[""], &["pods", "secrets"], &[])];
        assert!(uncovered(&owner, &[rule(&["get"], &[""], &["pods"], &[])]).is_empty());
        assert!(uncovered(&owner, &[rule(&["get"], &[""], &["secrets"], &["s"])]).is_empty());
        let missing = uncovered(&owner, &[rule(&["get", "delete"], &[""], &["pods"], &[])]);
        assert_eq!(missing.len(), 1);
        assert_eq!(
            missing[0].compact(),
            r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#
        );
        assert_eq!(
            uncovered(&owner, &[rule(&["*"], &[""], &["pods"], &[])]).len(),
            1
        );
        let admin = vec![rule(&["*"], &["*"], &["*"], &[])];
        assert!(uncovered(
            &admin,
            &[rule(&["*"], &["apps"], &["deployments/scale"], &[])]
        )
        .is_empty());
        let named_owner = vec![rule(&["get"], &[""], &["secrets"], &["s"])];
        assert_eq!(
            uncovered(&named_owner, &[rule(&["get"], &[""], &["secrets"], &[])]).len(),
            1
        );
    }
}
