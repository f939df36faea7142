//! The node authorizer and NodeRestriction: a kubelet (`system:node:<name>` in
//! `system:nodes`) reads what running pods needs — nodes, pods, services, and only the
//! Secrets and ConfigMaps that pods bound to it reference — and writes only its own Node
//! (never its taints, nor labels in the `kubernetes.io` namespaces outside the kubelet's
//! set), its own Lease, Events, and its pods' status.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::Attributes;
use crate::api::status::Status;
use crate::api::wire::Request;
use crate::apiserver::registry::Registry;
use crate::apiserver::UserInfo;

/// The node a caller is, if it is a kubelet.
pub fn node_of(user: &UserInfo) -> Option<&str> {
    user.name.strip_prefix("system:node:").filter(|n| {
        !n.is_empty()
            && user
                .groups
                .iter()
                .any(|g| g == crate::apiserver::NODES_GROUP)
    })
}

/// The one name a list or watch is limited to by `fieldSelector=metadata.name=<name>` (how
/// a kubelet watches a single Secret), if it is.
fn selected_name(req: &Request) -> Option<String> {
    let sel = req.list.field_selector.as_deref()?;
    let mut name = None;
    for term in sel.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (k, v) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .filter(|(k, _)| !k.ends_with('!'))?;
        if k.trim() == "metadata.name" {
            name = Some(v.trim().to_string());
        }
    }
    name
}

/// Which Secrets and ConfigMaps the pods bound to each node use, per namespace, read from the
/// Store's view: a namespace's part is built when a node first asks about it, and all of it
/// is dropped when a pod changes (the Store's epoch of the pods prefix moves). Between pod
/// changes a kubelet's reads cost a lookup, not a scan of the namespace's pods on the
/// ApiServer's thread.
#[derive(Default)]
pub struct Graph {
    /// The pods prefix's epoch, and each namespace's uses built at it.
    current: std::sync::Mutex<(u64, HashMap<String, Uses>)>,
}

/// One namespace's uses.
type Uses = Arc<HashSet<Use>>;

/// (node, plural, name): a pod bound to `node` uses that Secret or ConfigMap.
type Use = (String, &'static str, String);

impl Graph {
    /// Whether a pod of `namespace` bound to `node` uses the `kind` (plural) `name`.
    pub fn uses(
        &self,
        registry: &Registry,
        node: &str,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> bool {
        let Some(info) = crate::api::resource::lookup("", "pods") else {
            return false;
        };
        let reader = registry.reader();
        let epoch = reader.epoch(&info.prefix());
        let cached = {
            let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            if cur.0 != epoch {
                *cur = (epoch, HashMap::new());
            }
            cur.1.get(namespace).cloned()
        };
        let set = match cached {
            Some(set) => set,
            None => {
                // Read after the epoch: what is read is at least as new as the epoch says.
                let mut set = HashSet::new();
                for kv in reader.values(&info.list_prefix(Some(namespace))) {
                    let Ok(pod) = crate::api::codec::msgpack_to_value(&kv.value) else {
                        continue;
                    };
                    let Some(on) = pod.pointer("/spec/nodeName").and_then(Value::as_str) else {
                        continue;
                    };
                    for plural in ["secrets", "configmaps", "serviceaccounts"] {
                        for used in used_names(&pod, plural) {
                            set.insert((on.to_string(), plural, used));
                        }
                    }
                }
                let set = Arc::new(set);
                let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
                if cur.0 == epoch {
                    cur.1.insert(namespace.to_string(), set.clone());
                }
                set
            }
        };
        let plural = match kind {
            "secrets" => "secrets",
            "serviceaccounts" => "serviceaccounts",
            _ => "configmaps",
        };
        set.contains(&(node.to_string(), plural, name.to_string()))
    }
}

/// Whether the node authorizer allows `a` to `node`.
pub fn allows(
    node: &str,
    a: &Attributes,
    req: Option<&Request>,
    registry: &Registry,
    graph: &Graph,
) -> bool {
    if a.path.is_some() {
        return false;
    }
    let read = matches!(a.verb, "get" | "list" | "watch");
    match (a.group, a.resource, a.subresource) {
        ("", "nodes", _) => read || (a.name == node && a.verb != "delete"),
        ("coordination.k8s.io", "leases", "") => a.namespace == "kube-node-lease" && a.name == node,
        ("" | "events.k8s.io", "events", "") => matches!(a.verb, "create" | "patch" | "update"),
        ("", "services" | "endpoints", "") | ("discovery.k8s.io", "endpointslices", "") => read,
        ("", "pods", sub) => {
            if read && sub.is_empty() {
                return true;
            }
            let own = registry
                .pod_node(a.namespace, a.name)
                .is_some_and(|n| n == node);
            own && match a.verb {
                "delete" => sub.is_empty(),
                "update" | "patch" => sub == "status",
                _ => false,
            }
        }
        // A bound token for a ServiceAccount one of its pods runs as (NodeRestriction then
        // checks the pod it is bound to: `admit_node_token`).
        ("", "serviceaccounts", "token") => {
            a.verb == "create" && graph.uses(registry, node, a.namespace, "serviceaccounts", a.name)
        }
        ("", kind @ ("secrets" | "configmaps"), "") if read => {
            let name = match (a.verb, req) {
                ("get", _) => Some(a.name.to_string()),
                (_, Some(req)) => selected_name(req),
                _ => None,
            };
            name.filter(|n| !n.is_empty())
                .is_some_and(|name| graph.uses(registry, node, a.namespace, kind, &name))
        }
        _ => false,
    }
}

/// The Secrets or ConfigMaps (`kind` is the plural) `pod` names: in a volume, a projected
/// source, an `env` or `envFrom` of any container, or (Secrets) an image pull secret; for
/// `serviceaccounts`, the one it runs as.
pub fn used_names(pod: &Value, kind: &str) -> Vec<String> {
    fn items(v: &Value) -> &[Value] {
        v.as_array().map(Vec::as_slice).unwrap_or_default()
    }
    let spec = &pod["spec"];
    if kind == "serviceaccounts" {
        return spec["serviceAccountName"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(|n| vec![n.to_string()])
            .unwrap_or_default();
    }
    let (volume_key, volume_name, env_key, env_from_key) = match kind {
        "secrets" => ("secret", "secretName", "secretKeyRef", "secretRef"),
        _ => ("configMap", "name", "configMapKeyRef", "configMapRef"),
    };
    let mut names: Vec<&Value> = Vec::new();
    for volume in items(&spec["volumes"]) {
        names.push(&volume[volume_key][volume_name]);
        for source in items(&volume["projected"]["sources"]) {
            names.push(&source[volume_key]["name"]);
        }
    }
    if kind == "secrets" {
        names.extend(items(&spec["imagePullSecrets"]).iter().map(|s| &s["name"]));
    }
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for c in items(&spec[key]) {
            names.extend(
                items(&c["env"])
                    .iter()
                    .map(|e| &e["valueFrom"][env_key]["name"]),
            );
            names.extend(
                items(&c["envFrom"])
                    .iter()
                    .map(|e| &e[env_from_key]["name"]),
            );
        }
    }
    names
        .into_iter()
        .filter_map(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect()
}

/// NodeRestriction on a kubelet's TokenRequest: the token must be bound to a pod, and that
/// pod to this node (kube's words).
pub fn admit_node_token(
    node: &str,
    request: &Value,
    pod_node: impl Fn(&str, &str) -> Option<String>,
) -> Result<(), Status> {
    let bound = &request["spec"]["boundObjectRef"];
    let forbidden = |why: &str| {
        Status::forbidden(format!(
            "serviceaccounts \"{}\" is forbidden: {why}",
            meta_name(request)
        ))
    };
    if bound["kind"] != "Pod" {
        return Err(forbidden("node requested token not bound to a pod"));
    }
    let namespace = request["metadata"]["namespace"].as_str().unwrap_or("");
    let pod = bound["name"].as_str().unwrap_or("");
    match pod_node(namespace, pod) {
        Some(on) if on == node => Ok(()),
        Some(_) => Err(forbidden(
            "node requested token bound to a pod scheduled on a different node",
        )),
        None => Err(forbidden(
            "node requested token bound to a pod that does not exist",
        )),
    }
}

fn meta_name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

/// A kubelet's Event must be about itself: its own Node, or a pod bound to it (the core
/// form's `involvedObject`; `events.k8s.io` Events are checked in the core form they are
/// stored as). `pod_node` says which node a pod is bound to.
pub fn admit_node_event(
    node: &str,
    event: &Value,
    pod_node: impl Fn(&str, &str) -> Option<String>,
) -> Result<(), Status> {
    let about = &event["involvedObject"];
    let (kind, name) = (
        about["kind"].as_str().unwrap_or(""),
        about["name"].as_str().unwrap_or(""),
    );
    let namespace = about["namespace"].as_str().unwrap_or("");
    let own = match kind {
        "Node" => name == node,
        "Pod" => pod_node(namespace, name).is_some_and(|n| n == node),
        _ => false,
    };
    if own {
        return Ok(());
    }
    Err(Status::forbidden(format!(
        "node \"{node}\" may only record events about itself and its pods, not {kind} {}{name}",
        if namespace.is_empty() {
            String::new()
        } else {
            format!("{namespace}/")
        }
    )))
}

/// Label keys a kubelet may set on its Node inside the `kubernetes.io` namespaces (kube's
/// `IsKubeletLabel`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// Whether a kubelet may set the label `key` on its Node.
fn kubelet_may_label(key: &str) -> bool {
    let Some((domain, _)) = key.split_once('/') else {
        return true;
    };
    let under = |d: &str, ns: &str| d == ns || d.ends_with(&format!(".{ns}"));
    if !under(domain, "kubernetes.io") && !under(domain, "k8s.io") {
        return true;
    }
    KUBELET_LABELS.contains(&key)
        || under(domain, "kubelet.kubernetes.io")
        || under(domain, "node.kubernetes.io")
}

/// NodeRestriction on a kubelet's write of its own Node: no taint changes after create,
/// and no labels in the `kubernetes.io`/`k8s.io` namespaces outside the kubelet's set.
pub fn admit_node_write(node: &str, new: &Value, old: Option<&Value>) -> Result<(), Status> {
    let labels = |v: &Value| v.pointer("/metadata/labels").cloned().unwrap_or_default();
    let (new_labels, old_labels) = (labels(new), old.map(labels).unwrap_or_default());
    let mut bad: Vec<String> = new_labels
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| old_labels.get(k.as_str()) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(
            old_labels
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| new_labels.get(k.as_str()).is_none())
                .map(|(k, _)| k.clone()),
        )
        .filter(|k| !kubelet_may_label(k))
        .collect();
    bad.sort();
    bad.dedup();
    if !bad.is_empty() {
        let what = if old.is_some() {
            "is not allowed to modify labels"
        } else {
            "is not allowed to set the following labels"
        };
        return Err(Status::forbidden(format!(
            "node \"{node}\" {what}: {}",
            bad.join(", ")
        )));
    }
    if let Some(old) = old {
        let taints = |v: &Value| v.pointer("/spec/taints").cloned().unwrap_or(Value::Null);
        let norm = |t: Value| match t {
            Value::Array(a) if a.is_empty() => Value::Null,
            t => t,
        };
        if norm(taints(new)) != norm(taints(old)) {
            return Err(Status::forbidden(format!(
                "node \"{node}\" is not allowed to modify taints"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_reference_secrets_and_configmaps_where_kubelets_read_them() {
        let pod = json!({"spec": {
            "volumes": [{"name": "v", "secret": {"secretName": "s1"}},
                        {"name": "p", "projected": {"sources": [{"configMap": {"name": "c2"}}]}}],
            "containers": [{"name": "c", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}}],
                            "envFrom": [{"configMapRef": {"name": "c1"}}]}],
            "imagePullSecrets": [{"name": "pull"}],
        }});
        for (kind, name) in [
            ("secrets", "s1"),
            ("secrets", "s2"),
            ("secrets", "pull"),
            ("configmaps", "c1"),
            ("configmaps", "c2"),
        ] {
            assert!(
                used_names(&pod, kind).contains(&name.to_string()),
                "{kind}/{name}"
            );
        }
        assert!(!used_names(&pod, "secrets").contains(&"c1".to_string()));
        assert!(!used_names(&pod, "configmaps").contains(&"s1".to_string()));
    }

    #[test]
    fn a_kubelet_keeps_to_its_labels_and_cannot_touch_taints() {
        let node = |labels: Value, taints: Value| json!({"metadata": {"name": "n1", "labels": labels}, "spec": {"taints": taints}});
        let old = node(
            json!({"kubernetes.io/hostname": "n1"}),
            json!([{"key": "k", "effect": "NoSchedule"}]),
        );
        let ok = node(
            json!({"kubernetes.io/hostname": "n1", "team": "a", "node.kubernetes.io/x": "y"}),
            old["spec"]["taints"].clone(),
        );
        assert!(admit_node_write("n1", &ok, Some(&old)).is_ok());
        let role = node(
            json!({"node-role.kubernetes.io/control-plane": ""}),
            old["spec"]["taints"].clone(),
        );
        assert_eq!(
            admit_node_write("n1", &role, Some(&old)).unwrap_err().code,
            403
        );
        assert_eq!(admit_node_write("n1", &role, None).unwrap_err().code, 403);
        let untainted = node(old["metadata"]["labels"].clone(), json!([]));
        assert_eq!(
            admit_node_write("n1", &untainted, Some(&old))
                .unwrap_err()
                .code,
            403
        );
        assert!(admit_node_write("n1", &untainted, None).is_ok());
    }
}
