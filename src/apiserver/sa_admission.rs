//! The ServiceAccount admission plugin, as kube-apiserver runs it on every pod create: the
//! pod gets a ServiceAccount (`default` unless it names one), which must exist, and unless
//! the pod or its ServiceAccount turns `automountServiceAccountToken` off, a projected volume
//! `kube-api-access-<suffix>` — a bound token, the cluster CA (ConfigMap `kube-root-ca.crt`)
//! and the namespace — mounted read-only at [`MOUNT_PATH`] in every container that has
//! nothing mounted there. The kubelet fills that volume (`kubelet::volumes`).

use std::time::Duration;

use serde_json::{json, Value};

use crate::api::meta;
use crate::api::status::Status;

/// Where the token, `ca.crt` and `namespace` appear in a container.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The prefix of the injected volume's name.
pub const VOLUME_PREFIX: &str = "kube-api-access-";

/// The ConfigMap every namespace has with the cluster CA (`controllers::rootca`).
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// The lifetime kube-apiserver asks for the injected token: an hour and seven seconds (the
/// seven seconds mark tokens the API server may extend, kube's `WarnOnlyBoundTokenExpiration`).
pub const TOKEN_SECONDS: i64 = 3607;

/// Mirror pods (static pods the kubelet reflects) are left as they are.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// How often, and how far apart, a missing `default` ServiceAccount is looked up again
/// before the pod is refused: the controller creates it moments after its namespace.
const DEFAULT_ATTEMPTS: u32 = 10;
const RETRY_INTERVAL: Duration = Duration::from_millis(150);

/// Admits a pod create: `lookup` reads a ServiceAccount of the pod's namespace by name from
/// the Store; `suffix` makes the volume's random suffix. 403 when the ServiceAccount does not
/// exist (after retries for `default`), as kube words it.
pub async fn admit(
    pod: &mut Value,
    lookup: impl Fn(&str) -> Option<Value>,
    suffix: impl Fn() -> String,
) -> Result<(), Status> {
    let (ns, name) = (
        meta::namespace(pod).to_string(),
        meta::name(pod).to_string(),
    );
    let forbidden = |why: String| Status::forbidden_on("", "pods", &name, &why);
    if pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(MIRROR_ANNOTATION))
        .is_some()
    {
        let names_account = ["serviceAccountName", "serviceAccount"]
            .iter()
            .any(|k| pod["spec"][k].as_str().is_some_and(|s| !s.is_empty()));
        if names_account {
            return Err(forbidden(
                "a mirror pod may not reference service accounts".into(),
            ));
        }
        return Ok(());
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(()); // validation refuses it
    };
    // `serviceAccount` is the deprecated alias: either names the account, both show it.
    let account = ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|k| {
            spec.get(*k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(account));
    spec.insert("serviceAccount".into(), json!(account));
    let attempts = if account == "default" {
        DEFAULT_ATTEMPTS
    } else {
        1
    };
    let mut found = None;
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
        found = lookup(&account);
        if found.is_some() {
            break;
        }
    }
    let Some(sa) = found else {
        return Err(forbidden(format!(
            "error looking up service account {ns}/{account}: serviceaccount \"{account}\" not found"
        )));
    };
    // The pod's choice wins, then the account's; mounted unless one of them says false.
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| sa["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    if automount {
        mount_token(spec, &suffix);
    }
    if spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty())
    {
        if let Some(pulls) = sa["imagePullSecrets"].as_array().filter(|a| !a.is_empty()) {
            let names: Vec<Value> = pulls
                .iter()
                .map(|p| json!({"name": p["name"].as_str().unwrap_or("")}))
                .collect();
            spec.insert("imagePullSecrets".into(), json!(names));
        }
    }
    Ok(())
}

/// The projected volume and its mounts: every container (and init container) without
/// something at [`MOUNT_PATH`] mounts it; the volume is added when one does.
fn mount_token(spec: &mut serde_json::Map<String, Value>, suffix: &impl Fn() -> String) {
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .filter_map(|v| v["name"].as_str())
                .find(|n| n.starts_with(VOLUME_PREFIX))
                .map(String::from)
        });
    let volume = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}{}", suffix()));
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue; // validation refuses it
            };
            if mounts.iter().any(|m| m["mountPath"] == MOUNT_PATH) {
                continue;
            }
            mounts.push(json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH}));
            needed = true;
        }
    }
    if needed && existing.is_none() {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(vs) = volumes.as_array_mut() {
            vs.push(json!({
                "name": volume,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace",
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                    ],
                },
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec})
    }

    fn run(p: &mut Value, sa: Option<Value>) -> Result<(), Status> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(admit(p, |_| sa.clone(), || "abcde".into()))
    }

    #[test]
    fn injects_the_projected_volume_into_every_container() {
        let mut p = pod(json!({"containers": [{"name": "a"},
            {"name": "b", "volumeMounts": [{"name": "x", "mountPath": MOUNT_PATH}]}],
            "initContainers": [{"name": "i"}]}));
        run(&mut p, Some(json!({"metadata": {"name": "default"}}))).unwrap();
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["serviceAccount"], "default");
        assert_eq!(p["spec"]["volumes"][0]["name"], "kube-api-access-abcde");
        let sources = &p["spec"]["volumes"][0]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[1]["configMap"]["name"], ROOT_CA_CONFIGMAP);
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"][0],
            json!({"name": "kube-api-access-abcde", "readOnly": true, "mountPath": MOUNT_PATH})
        );
        // Something already at the path stays, and nothing is added beside it.
        assert_eq!(
            p["spec"]["containers"][1]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            p["spec"]["initContainers"][0]["volumeMounts"][0]["name"],
            "kube-api-access-abcde"
        );
    }

    #[test]
    fn automount_off_on_the_pod_or_the_account_mounts_nothing() {
        let mut p =
            pod(json!({"automountServiceAccountToken": false, "containers": [{"name": "a"}]}));
        run(&mut p, Some(json!({}))).unwrap();
        assert!(p["spec"].get("volumes").is_none());
        let mut p = pod(json!({"serviceAccountName": "robot", "containers": [{"name": "a"}]}));
        run(&mut p, Some(json!({"automountServiceAccountToken": false}))).unwrap();
        assert!(p["spec"].get("volumes").is_none());
        // The pod's own true wins over the account's false.
        let mut p =
            pod(json!({"automountServiceAccountToken": true, "containers": [{"name": "a"}]}));
        run(&mut p, Some(json!({"automountServiceAccountToken": false}))).unwrap();
        assert!(p["spec"]["volumes"].is_array());
    }

    #[test]
    fn a_missing_account_is_forbidden() {
        let mut p = pod(json!({"serviceAccount": "robot", "containers": [{"name": "a"}]}));
        let e = run(&mut p, None).unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods \"p\" is forbidden: error looking up service account ns/robot: serviceaccount \"robot\" not found"
        );
    }
}
