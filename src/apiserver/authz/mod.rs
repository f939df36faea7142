//! Authorization: kube-apiserver's chain as `--authorization-mode=Node,RBAC` sets it up,
//! behind the privileged group `system:masters` (the break-glass group, allowed everything
//! before any authorizer is asked). Nothing is allowed that no authorizer allows.
//!
//! The same [`Authorizer`] answers requests on both transports, the non-resource paths of
//! HTTP (`/metrics`, discovery), `kubectl auth can-i` (access and rules reviews) and
//! impersonation, and guards the writes only the final object can judge: RBAC escalation
//! (a role or binding may grant only what its writer holds, unless they may `escalate` or
//! `bind`) and NodeRestriction.

pub mod node;
pub mod policy;
pub mod rbac;

use std::sync::Arc;

use serde_json::{json, Value};

use super::registry::Registry;
use super::{UserInfo, ADMIN_GROUP};
use crate::api::meta;
use crate::api::status::Status;
use crate::api::wire::{GuardFn, Request, Verb, WriteGuard};
use rbac::{PolicyRule, Rbac, RoleKey};

/// The API group of RBAC's kinds, and of User and Group subjects.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// What one request asks to do, as authorizers see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attributes<'a> {
    /// `get`, `list`, `watch`, `create`, …, or `escalate`, `bind`, `impersonate`.
    pub verb: &'a str,
    /// API group ("" for core).
    pub group: &'a str,
    /// Resource plural.
    pub resource: &'a str,
    /// Subresource, "" for none.
    pub subresource: &'a str,
    /// Namespace, "" for cluster scope (or every namespace).
    pub namespace: &'a str,
    /// Object name, "" for none.
    pub name: &'a str,
    /// A non-resource request's path (`/metrics`); None for resource requests.
    pub path: Option<&'a str>,
}

impl<'a> Attributes<'a> {
    /// The attributes of a request; `name` is the object's (for a create, the body's).
    pub fn of_request(verb: &'a str, req: &'a Request, name: &'a str) -> Self {
        Attributes {
            verb,
            group: &req.group,
            resource: &req.resource,
            subresource: req.subresource.as_deref().unwrap_or(""),
            namespace: req.namespace.as_deref().unwrap_or(""),
            name,
            path: None,
        }
    }

    /// A request for a path outside the API.
    pub fn non_resource(verb: &'a str, path: &'a str) -> Self {
        Attributes {
            verb,
            path: Some(path),
            ..Default::default()
        }
    }
}

/// The name a request acts on: the URL's, else (a create) the body's.
pub fn request_name(req: &Request) -> String {
    match &req.name {
        Some(n) => n.clone(),
        None => req
            .body
            .as_ref()
            .map(|b| meta::name(b).to_string())
            .unwrap_or_default(),
    }
}

/// kube's 403 for a denied request.
pub fn forbidden(user: &UserInfo, a: &Attributes) -> Status {
    let Some(path) = a.path else {
        let resource = if a.subresource.is_empty() {
            a.resource.to_string()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let scope = if a.namespace.is_empty() {
            " at the cluster scope".to_string()
        } else {
            format!(" in the namespace \"{}\"", a.namespace)
        };
        let why = format!(
            "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\"{scope}",
            user.name, a.verb, a.group
        );
        let qualified = crate::api::status::qualified(a.group, a.resource);
        let message = if a.name.is_empty() {
            format!("{qualified} is forbidden: {why}")
        } else {
            format!("{qualified} \"{}\" is forbidden: {why}", a.name)
        };
        return Status::forbidden(message).with_details(a.group, a.resource, a.name);
    };
    Status::forbidden(format!(
        "forbidden: User \"{}\" cannot {} path \"{path}\"",
        user.name, a.verb
    ))
}

/// The authorizer chain.
pub struct Authorizer {
    rbac: Rbac,
    registry: Registry,
    /// What each node's pods use, for the node authorizer.
    graph: node::Graph,
}

impl Authorizer {
    /// The chain over the registry's Store view.
    pub fn new(registry: Registry) -> Self {
        Authorizer {
            rbac: Rbac::new(registry.reader().clone()),
            registry,
            graph: node::Graph::default(),
        }
    }

    /// The registry whose Store view the chain reads.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The RBAC index as it is now.
    pub fn rbac(&self) -> Arc<rbac::Index> {
        self.rbac.index()
    }

    /// Whether any authorizer allows `a` (`req`, when there is one, lets the node
    /// authorizer read a list's field selector).
    pub fn allows(&self, user: &UserInfo, a: &Attributes, req: Option<&Request>) -> bool {
        if user.groups.iter().any(|g| g == ADMIN_GROUP) {
            return true;
        }
        if let Some(node) = node::node_of(user) {
            if node::allows(node, a, req, &self.registry, &self.graph) {
                return true;
            }
        }
        self.rbac.allows(user, a)
    }

    /// Allows `a` or says why not.
    pub fn check(&self, user: &UserInfo, a: &Attributes) -> Result<(), Status> {
        if self.allows(user, a, None) {
            Ok(())
        } else {
            Err(forbidden(user, a))
        }
    }

    /// Authorizes one API request.
    pub fn authorize(&self, user: &UserInfo, verb: Verb, req: &Request) -> Result<(), Status> {
        let name = request_name(req);
        let a = Attributes::of_request(verb.as_str(), req, &name);
        if self.allows(user, &a, Some(req)) {
            Ok(())
        } else {
            Err(forbidden(user, &a))
        }
    }

    /// Authorizes a GET of a path outside the API (`/metrics`, `/apis`).
    pub fn authorize_path(&self, user: &UserInfo, path: &str) -> Result<(), Status> {
        self.check(user, &Attributes::non_resource("get", path))
    }

    /// The status of a SelfSubjectRulesReview: what `user` may do in `namespace`.
    pub fn rules_review(&self, user: &UserInfo, namespace: &str) -> Value {
        let rules = self.rbac.index().rules_for(user, namespace);
        let (urls, resources): (Vec<&PolicyRule>, Vec<&PolicyRule>) =
            rules.iter().partition(|r| !r.non_resource_urls.is_empty());
        let resource_rules: Vec<Value> = resources
            .iter()
            .map(|r| {
                let mut v =
                    json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
                if !r.resource_names.is_empty() {
                    v["resourceNames"] = json!(r.resource_names);
                }
                v
            })
            .collect();
        let url_rules: Vec<Value> = urls
            .iter()
            .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
            .collect();
        json!({"resourceRules": resource_rules, "nonResourceRules": url_rules, "incomplete": false})
    }

    /// Who `user` asks to act as, if they may (kube's impersonation filter): each of the
    /// user, a service account's namespace and name, and every group needs `impersonate`.
    pub fn impersonate(
        &self,
        user: &UserInfo,
        as_user: &str,
        as_groups: &[String],
    ) -> Result<UserInfo, Status> {
        let sa = as_user
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'));
        let mut checks = vec![match sa {
            Some((ns, name)) => Attributes {
                verb: "impersonate",
                resource: "serviceaccounts",
                namespace: ns,
                name,
                ..Default::default()
            },
            None => Attributes {
                verb: "impersonate",
                resource: "users",
                name: as_user,
                ..Default::default()
            },
        }];
        checks.extend(as_groups.iter().map(|g| Attributes {
            verb: "impersonate",
            resource: "groups",
            name: g,
            ..Default::default()
        }));
        for a in &checks {
            self.check(user, a)?;
        }
        let mut groups = as_groups.to_vec();
        if let Some((ns, _)) = sa {
            groups.push("system:serviceaccounts".into());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Ok(UserInfo {
            name: as_user.to_string(),
            uid: String::new(),
            groups,
        })
    }

    /// The check a write by `user` needs on its final object, if any: RBAC escalation for
    /// roles and bindings, NodeRestriction for a kubelet's Node.
    pub fn guard(self: &Arc<Self>, user: &UserInfo, req: &Request) -> Option<WriteGuard> {
        if user.groups.iter().any(|g| g == ADMIN_GROUP) {
            return None;
        }
        let (me, user) = (self.clone(), user.clone());
        let check: Arc<GuardFn> = match (req.group.as_str(), req.resource.as_str()) {
            (RBAC_GROUP, "roles" | "clusterroles") => {
                Arc::new(move |info, new, _| me.confirm_role(&user, info.plural, new))
            }
            (RBAC_GROUP, "rolebindings" | "clusterrolebindings") => {
                Arc::new(move |info, new, _| me.confirm_binding(&user, info.plural, new))
            }
            ("", "nodes") if req.subresource.is_none() => {
                let node = node::node_of(&user)?.to_string();
                Arc::new(move |_, new, old| node::admit_node_write(&node, new, old))
            }
            ("", "serviceaccounts") if req.subresource.as_deref() == Some("token") => {
                let node = node::node_of(&user)?.to_string();
                Arc::new(move |_, new, _| {
                    node::admit_node_token(&node, new, |ns, pod| me.registry.pod_node(ns, pod))
                })
            }
            ("" | "events.k8s.io", "events") => {
                let node = node::node_of(&user)?.to_string();
                Arc::new(move |_, new, _| {
                    node::admit_node_event(&node, new, |ns, pod| me.registry.pod_node(ns, pod))
                })
            }
            _ => return None,
        };
        Some(WriteGuard(check))
    }

    /// A role may be written by who holds all its rules, or may `escalate` it.
    fn confirm_role(&self, user: &UserInfo, plural: &str, role: &Value) -> Result<(), Status> {
        let (ns, name) = (meta::namespace(role), meta::name(role));
        let escalate = Attributes {
            verb: "escalate",
            group: RBAC_GROUP,
            resource: plural,
            namespace: ns,
            name,
            ..Default::default()
        };
        if self.allows(user, &escalate, None) {
            return Ok(());
        }
        let owner = self.rbac.index().rules_for(user, ns);
        if role.get("aggregationRule").is_some_and(|a| !a.is_null()) {
            let full = [
                PolicyRule {
                    verbs: vec!["*".into()],
                    api_groups: vec!["*".into()],
                    resources: vec!["*".into()],
                    ..Default::default()
                },
                PolicyRule {
                    verbs: vec!["*".into()],
                    non_resource_urls: vec!["*".into()],
                    ..Default::default()
                },
            ];
            if !rbac::uncovered(&owner, &full).is_empty() {
                return Err(Status::forbidden_on(
                    RBAC_GROUP,
                    plural,
                    name,
                    "must have cluster-admin privileges to use the aggregationRule",
                ));
            }
        }
        no_escalation(user, &owner, &rbac::rules_of(role), plural, name)
    }

    /// A binding may be written by who holds all the rules of its role, or may `bind` it.
    fn confirm_binding(
        &self,
        user: &UserInfo,
        plural: &str,
        binding: &Value,
    ) -> Result<(), Status> {
        let (ns, name) = (meta::namespace(binding), meta::name(binding));
        let Some(key) = rbac::role_ref(binding, ns) else {
            return Ok(()); // validation has refused it already
        };
        let (role_plural, role_name) = match &key {
            RoleKey::Role(_, n) => ("roles", n.as_str()),
            RoleKey::ClusterRole(n) => ("clusterroles", n.as_str()),
        };
        let bind = Attributes {
            verb: "bind",
            group: RBAC_GROUP,
            resource: role_plural,
            namespace: ns,
            name: role_name,
            ..Default::default()
        };
        if self.allows(user, &bind, None) {
            return Ok(());
        }
        let index = self.rbac.index();
        let Some(rules) = index.role(&key) else {
            return Err(Status::not_found(RBAC_GROUP, role_plural, role_name));
        };
        let owner = index.rules_for(user, ns);
        no_escalation(user, &owner, rules, plural, name)
    }
}

/// 403 unless `owner` covers every rule of `granted` (kube's `ConfirmNoEscalation`).
fn no_escalation(
    user: &UserInfo,
    owner: &[PolicyRule],
    granted: &[PolicyRule],
    plural: &str,
    name: &str,
) -> Result<(), Status> {
    let missing = rbac::uncovered(owner, granted);
    if missing.is_empty() {
        return Ok(());
    }
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let rules: Vec<String> = missing.iter().map(PolicyRule::compact).collect();
    Err(Status::forbidden_on(
        RBAC_GROUP,
        plural,
        name,
        &format!(
            "user \"{}\" (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
            user.name,
            groups.join(" "),
            rules.join("\n")
        ),
    ))
}
