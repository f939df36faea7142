//! A container's environment, built as the kubelet builds it when the container is created:
//! the service variables first, then `envFrom` sources in order (ConfigMaps and Secrets, each
//! key with its `prefix`; keys that are not valid variable names are skipped), then `env` in
//! order, later names replacing earlier ones. An `env` value may refer to variables defined
//! before it (`$(VAR)`); `valueFrom` reads a ConfigMap or Secret key (`configMapKeyRef`,
//! `secretKeyRef`), a pod field (`fieldRef`) or a resource of the container
//! (`resourceFieldRef`: an unset limit is the node's allocatable, as the kubelet does). A
//! required source that is missing is an error with the kubelet's message; the container then
//! waits in `CreateContainerConfigError`.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use serde_json::Value;

use super::pod::{expand, field_ref};
use crate::client::ApiClient;

/// The node's allocatable resources, for `resourceFieldRef` limits the container leaves unset.
#[derive(Debug, Clone, Copy)]
pub struct Allocatable {
    /// CPU cores.
    pub cpu: i64,
    /// Memory bytes.
    pub memory: i64,
}

/// Reads ConfigMaps and Secrets of one namespace once per container start.
struct Sources<'a> {
    client: &'a ApiClient,
    namespace: &'a str,
    read: HashMap<(&'static str, String), Option<BTreeMap<String, String>>>,
}

impl Sources<'_> {
    /// The object's data as text (Secrets decoded); None when it does not exist.
    async fn data(
        &mut self,
        plural: &'static str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        if let Some(d) = self.read.get(&(plural, name.to_string())) {
            return Ok(d.clone());
        }
        let singular = &plural[..plural.len() - 1];
        let got = match self
            .client
            .api("", plural, Some(self.namespace))
            .get(name)
            .await
        {
            Ok(obj) => {
                let mut data = BTreeMap::new();
                for (k, v) in obj["data"].as_object().into_iter().flatten() {
                    let v = v.as_str().unwrap_or("");
                    let text = if plural == "secrets" {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(v)
                            .map_err(|e| format!("{singular} \"{name}\" key {k}: {e}"))?;
                        String::from_utf8_lossy(&bytes).into_owned()
                    } else {
                        v.to_string()
                    };
                    data.insert(k.clone(), text);
                }
                Some(data)
            }
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(format!("getting {singular} \"{name}\": {}", e.message)),
        };
        self.read.insert((plural, name.to_string()), got.clone());
        Ok(got)
    }

    /// One key of a ConfigMap or Secret (`configMapKeyRef`/`secretKeyRef`); None when
    /// missing and optional.
    async fn key(
        &mut self,
        plural: &'static str,
        source: &Value,
    ) -> Result<Option<String>, String> {
        let name = source["name"].as_str().unwrap_or("");
        let key = source["key"].as_str().unwrap_or("");
        let optional = source["optional"] == true;
        let kind = if plural == "secrets" {
            "Secret"
        } else {
            "ConfigMap"
        };
        let singular = &plural[..plural.len() - 1];
        match self.data(plural, name).await? {
            None if optional => Ok(None),
            None => Err(format!("{singular} \"{name}\" not found")),
            Some(d) => match d.get(key) {
                Some(v) => Ok(Some(v.clone())),
                None if optional => Ok(None),
                None => Err(format!(
                    "couldn't find key {key} in {kind} {}/{name}",
                    self.namespace
                )),
            },
        }
    }
}

/// Whether `name` may be an environment variable (kube's `IsEnvVarName`: letters, digits,
/// `_`, `-`, `.`, not starting with a digit).
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A quantity in base units (cores or bytes): `500m`, `2`, `1Gi`, `128M`, `1e3`.
fn quantity(text: &str) -> Option<f64> {
    let t = text.trim();
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (s, f) in suffixes {
        if let Some(n) = t.strip_suffix(s) {
            return n.parse::<f64>().ok().map(|v| v * f);
        }
    }
    t.parse::<f64>().ok()
}

/// `resourceFieldRef`: the container's request or limit (an unset limit is the node's
/// allocatable; an unset request is 0 for CPU… as kube: the limit when only it is set),
/// divided by `divisor` and rounded up.
fn resource_field(container: &Value, source: &Value, node: Allocatable) -> Result<String, String> {
    let resource = source["resource"].as_str().unwrap_or("");
    let divisor = source["divisor"]
        .as_str()
        .map(String::from)
        .or_else(|| source["divisor"].as_i64().map(|n| n.to_string()))
        .unwrap_or_else(|| "1".into());
    let divisor = quantity(&divisor).filter(|d| *d > 0.0).unwrap_or(1.0);
    let get = |kind: &str, what: &str| {
        container
            .pointer(&format!("/resources/{kind}/{what}"))
            .and_then(|v| {
                v.as_str()
                    .map(String::from)
                    .or_else(|| v.as_f64().map(|n| n.to_string()))
            })
            .and_then(|s| quantity(&s))
    };
    let value = match resource {
        "limits.cpu" => get("limits", "cpu").unwrap_or(node.cpu as f64),
        "limits.memory" => get("limits", "memory").unwrap_or(node.memory as f64),
        "requests.cpu" => get("requests", "cpu")
            .or_else(|| get("limits", "cpu"))
            .unwrap_or(0.0),
        "requests.memory" => get("requests", "memory")
            .or_else(|| get("limits", "memory"))
            .unwrap_or(0.0),
        "limits.ephemeral-storage" | "requests.ephemeral-storage" => 0.0,
        other => return Err(format!("unsupported container resource: {other}")),
    };
    // CPU rounds up to at least 1 when asked for cores, as the kubelet's
    // ExtractContainerResourceValue does.
    let n = (value / divisor).ceil();
    let n = if resource.ends_with(".cpu") && value > 0.0 {
        n.max(1.0)
    } else {
        n
    };
    Ok(format!("{}", n as i64))
}

/// The environment of `container` (its spec in `pod`): `base` (the service variables), then
/// its `envFrom`, then its `env`.
pub async fn resolve(
    client: &ApiClient,
    pod: &Value,
    container: &Value,
    (pod_ip, host_ip): (&str, &str),
    base: &BTreeMap<String, String>,
    node: Allocatable,
) -> Result<BTreeMap<String, String>, String> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let mut sources = Sources {
        client,
        namespace,
        read: HashMap::new(),
    };
    let mut env = base.clone();
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or("");
        let (plural, source) = if from.get("configMapRef").is_some() {
            ("configmaps", &from["configMapRef"])
        } else if from.get("secretRef").is_some() {
            ("secrets", &from["secretRef"])
        } else {
            continue;
        };
        let name = source["name"].as_str().unwrap_or("");
        match sources.data(plural, name).await? {
            Some(data) => {
                for (k, v) in data {
                    let var = format!("{prefix}{k}");
                    if is_env_name(&var) {
                        env.insert(var, v);
                    }
                }
            }
            None if source["optional"] == true => {}
            None => {
                return Err(format!(
                    "{} \"{name}\" not found",
                    &plural[..plural.len() - 1]
                ))
            }
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let Some(name) = var["name"].as_str() else {
            continue;
        };
        let value = match var.get("valueFrom") {
            None => Some(expand(var["value"].as_str().unwrap_or(""), &env)),
            Some(from) => {
                if let Some(path) = from.pointer("/fieldRef/fieldPath").and_then(Value::as_str) {
                    Some(field_ref(pod, path, pod_ip, host_ip))
                } else if let Some(r) = from.get("resourceFieldRef") {
                    Some(resource_field(container, r, node)?)
                } else if let Some(r) = from.get("configMapKeyRef") {
                    sources.key("configmaps", r).await?
                } else if let Some(r) = from.get("secretKeyRef") {
                    sources.key("secrets", r).await?
                } else {
                    Some(String::new())
                }
            }
        };
        if let Some(v) = value {
            env.insert(name.to_string(), v);
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn variable_names_and_quantities() {
        assert!(is_env_name("A_b-c.d"));
        assert!(!is_env_name("1A"));
        assert!(!is_env_name("a b"));
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("1Gi"), Some(1073741824.0));
        assert_eq!(quantity("128M"), Some(128e6));
        assert_eq!(quantity("2"), Some(2.0));
    }

    #[test]
    fn resource_fields_divide_round_up_and_default_to_the_node() {
        let node = Allocatable {
            cpu: 4,
            memory: 8 << 30,
        };
        let c = json!({"resources": {"limits": {"cpu": "500m", "memory": "256Mi"},
            "requests": {"memory": "64Mi"}}});
        let f = |r: &str, d: Option<&str>| {
            let mut s = json!({"resource": r});
            if let Some(d) = d {
                s["divisor"] = json!(d);
            }
            resource_field(&c, &s, node).unwrap()
        };
        assert_eq!(f("limits.cpu", None), "1");
        assert_eq!(f("limits.cpu", Some("1m")), "500");
        assert_eq!(f("limits.memory", Some("1Mi")), "256");
        assert_eq!(f("requests.memory", Some("1Mi")), "64");
        assert_eq!(
            f("requests.cpu", Some("1m")),
            "500",
            "the limit when no request"
        );
        let none = json!({});
        let s = json!({"resource": "limits.memory", "divisor": "1Gi"});
        assert_eq!(resource_field(&none, &s, node).unwrap(), "8");
        let s = json!({"resource": "limits.cpu"});
        assert_eq!(resource_field(&none, &s, node).unwrap(), "4");
    }
}
