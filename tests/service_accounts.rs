//! ServiceAccounts inside pods, on `skiff up` (process runtime) driven by the real kubectl:
//! every pod gets a bound token, the cluster CA and its namespace (the ServiceAccount
//! admission plugin's projected volume, filled by the kubelet), and the official Python
//! client in the pod acts with exactly its ServiceAccount's rights. A kubelet obtains tokens
//! only for pods bound to it, and a token dies with its pod.

mod common;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use common::*;

/// What the pod runs: tests/python/incluster_check.py.
const CHECK: &str = include_str!("python/incluster_check.py");

/// The bearer token of `user` in `skiff up`'s token file.
fn token_of(up: &SkiffUp, user: &str) -> String {
    let csv = std::fs::read_to_string(up.dir.path().join("tokens.csv")).unwrap();
    csv.lines()
        .find(|l| l.split(',').nth(1) == Some(user))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("no token for {user}"))
        .to_string()
}

/// Applies one manifest (JSON) with kubectl.
fn apply(up: &SkiffUp, manifest: &Value) -> std::process::Output {
    let file = up
        .dir
        .path()
        .join(format!("m-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, manifest.to_string()).unwrap();
    up.run(&["apply", "-f", file.to_str().unwrap()])
}

/// A TokenRequest for ServiceAccount `sa` of `apps`, as `token` (a node's credential).
fn request_token(up: &SkiffUp, token: &str, sa: &str, bound: Option<Value>) -> (bool, String) {
    let mut body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600}});
    if let Some(b) = bound {
        body["spec"]["boundObjectRef"] = b;
    }
    let file = up.dir.path().join("token-request.json");
    std::fs::write(&file, body.to_string()).unwrap();
    let out = up.run(&[
        "--token",
        token,
        "create",
        "--raw",
        &format!("/api/v1/namespaces/apps/serviceaccounts/{sa}/token"),
        "-f",
        file.to_str().unwrap(),
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The files of the pod's token volume on node `node`.
fn volume_dir(up: &SkiffUp, node: &str, pod: &Value) -> PathBuf {
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let volume = pod["spec"]["volumes"][0]["name"].as_str().unwrap();
    up.dir
        .path()
        .join("pods")
        .join(node)
        .join("volumes")
        .join(uid)
        .join(volume)
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn pods_act_as_their_service_account_with_a_token_bound_to_them() {
    let up = SkiffUp::start(2);
    up.ok(&["create", "namespace", "apps"]);
    up.ok(&["create", "serviceaccount", "reader", "-n", "apps"]);
    up.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
        "-n",
        "apps",
    ]);
    up.ok(&[
        "create",
        "rolebinding",
        "reader",
        "--role=pod-reader",
        "--serviceaccount=apps:reader",
        "-n",
        "apps",
    ]);
    // A ServiceAccount that does not exist: the pod is refused, as kube refuses it.
    let refused = apply(
        &up,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ghost", "namespace": "apps"},
            "spec": {"serviceAccountName": "nobody", "containers": [{"name": "c", "image": "i", "command": ["true"]}]}}),
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains(
            "error looking up service account apps/nobody: serviceaccount \"nobody\" not found"
        ),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // The Python client in a pod on node 1, as `reader`.
    let python = python();
    let out = apply(
        &up,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "py", "namespace": "apps"},
            "spec": {"nodeName": "skiff-node-1", "serviceAccountName": "reader",
                "containers": [{"name": "c", "image": "python",
                    "command": ["sh", "-c", "\"$0\" -c \"$1\"; sleep 3600", python, CHECK]}]}}),
    );
    assert!(out.status.success(), "{out:?}");
    let mut logs = String::new();
    up.eventually("the in-pod client's answers", 60, |u| {
        logs = String::from_utf8_lossy(&u.run(&["logs", "py", "-n", "apps"]).stdout).into_owned();
        logs.contains("other-namespace:")
    });
    assert!(logs.contains("pods: py"), "{logs}");
    assert!(logs.contains("secrets: 403"), "{logs}");
    assert!(logs.contains("other-namespace: 403"), "{logs}");

    // What the pod was given, as kube gives it: a projected volume mounted at the
    // well-known path, the namespace, the CA, a token private to the node's user.
    let pod: Value =
        serde_json::from_str(&up.ok(&["get", "pod", "py", "-n", "apps", "-o", "json"])).unwrap();
    let volume = &pod["spec"]["volumes"][0];
    assert!(volume["name"]
        .as_str()
        .unwrap()
        .starts_with("kube-api-access-"));
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    let dir = volume_dir(&up, "skiff-node-1", &pod);
    assert_eq!(
        std::fs::read_to_string(dir.join("namespace")).unwrap(),
        "apps"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
        std::fs::read_to_string(up.dir.path().join("pki").join("ca.crt")).unwrap()
    );
    assert_eq!(mode(dir.parent().unwrap()), 0o700, "the pod's volume dir");
    let pod_token = std::fs::read_to_string(dir.join("token")).unwrap();
    let as_pod = |args: &[&str]| {
        let mut all = vec!["--token", pod_token.as_str()];
        all.extend_from_slice(args);
        up.run(&all)
    };
    assert!(as_pod(&["get", "pods", "-n", "apps"]).status.success());

    // Node 2 runs a pod as `reader` too, so it may ask for reader's tokens, but only bound
    // to its own pods (NodeRestriction).
    let out = apply(
        &up,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other", "namespace": "apps"},
            "spec": {"nodeName": "skiff-node-2", "serviceAccountName": "reader",
                "containers": [{"name": "c", "image": "i", "command": ["sleep", "3600"]}]}}),
    );
    assert!(out.status.success(), "{out:?}");
    let node1 = token_of(&up, "system:node:skiff-node-1");
    let node2 = token_of(&up, "system:node:skiff-node-2");
    let py_ref = json!({"apiVersion": "v1", "kind": "Pod", "name": "py",
        "uid": pod["metadata"]["uid"]});
    let (ok, text) = request_token(&up, &node2, "reader", Some(py_ref.clone()));
    assert!(
        !ok && text.contains("scheduled on a different node"),
        "{text}"
    );
    let (ok, text) = request_token(&up, &node2, "reader", None);
    assert!(!ok && text.contains("not bound to a pod"), "{text}");
    // No pod on node 2 runs as `default`: the node authorizer refuses before that.
    let (ok, text) = request_token(&up, &node2, "default", None);
    assert!(!ok && text.contains("forbidden"), "{text}");
    let (ok, text) = request_token(&up, &node1, "reader", Some(py_ref));
    assert!(ok && text.contains("\"token\""), "{text}");

    // The token dies with its pod, and its files go.
    up.ok(&["delete", "pod", "py", "-n", "apps", "--wait=true"]);
    let refused = as_pod(&["get", "pods", "-n", "apps"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Unauthorized")
            || String::from_utf8_lossy(&refused.stderr).contains("must be logged in"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    up.eventually("the pod's volume files removed", 20, |_| {
        !dir.parent().unwrap().exists()
    });
}

/// `automountServiceAccountToken: false` on the ServiceAccount: its pods get no token.
#[test]
fn automount_off_gives_no_token() {
    let up = SkiffUp::start(1);
    let out = apply(
        &up,
        &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "quiet", "namespace": "default"},
            "automountServiceAccountToken": false}),
    );
    assert!(out.status.success(), "{out:?}");
    let out = apply(
        &up,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q", "namespace": "default"},
            "spec": {"serviceAccountName": "quiet", "containers": [{"name": "c", "image": "i",
                "command": ["sh", "-c", "ls \"$SKIFF_CONTAINER_ROOT/var/run/secrets\" || echo no-secrets; sleep 3600"]}]}}),
    );
    assert!(out.status.success(), "{out:?}");
    let pod: Value = serde_json::from_str(&up.ok(&["get", "pod", "q", "-o", "json"])).unwrap();
    assert!(pod["spec"].get("volumes").is_none(), "{}", pod["spec"]);
    up.eventually("the pod's output", 60, |u| {
        String::from_utf8_lossy(&u.run(&["logs", "q"]).stdout).contains("no-secrets")
    });
}

/// ConfigMap, Secret, downward-API and emptyDir volumes as files (process runtime: under
/// `$SKIFF_CONTAINER_ROOT`): keys or chosen items, Secrets decoded, labels as kube writes
/// them; an edited ConfigMap reaches the file; a missing ConfigMap holds the pod in
/// ContainerCreating until it exists.
#[test]
fn configmap_secret_and_downward_volumes_are_files() {
    let up = SkiffUp::start(1);
    up.ok(&[
        "create",
        "configmap",
        "app",
        "--from-literal=mode=fast",
        "--from-literal=level=3",
    ]);
    up.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ]);
    let script = r#"r=$SKIFF_CONTAINER_ROOT
while true; do
  echo "mode=$(cat $r/etc/app/mode) level=$(cat $r/etc/app/level 2>/dev/null || echo none) pick=$(cat $r/etc/pick/chosen) password=$(cat $r/etc/creds/password) labels=$(tr '\n' ' ' < $r/etc/info/labels) scratch=$(test -d $r/scratch && echo dir)"
  sleep 1
done"#;
    let out = apply(
        &up,
        &json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "files", "namespace": "default", "labels": {"app": "files", "tier": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i", "command": ["sh", "-c", script],
                "volumeMounts": [
                    {"name": "app", "mountPath": "/etc/app"},
                    {"name": "pick", "mountPath": "/etc/pick"},
                    {"name": "creds", "mountPath": "/etc/creds", "readOnly": true},
                    {"name": "info", "mountPath": "/etc/info"},
                    {"name": "scratch", "mountPath": "/scratch"}]}],
                "volumes": [
                    {"name": "app", "configMap": {"name": "app"}},
                    {"name": "pick", "configMap": {"name": "app", "items": [{"key": "mode", "path": "chosen"}]}},
                    {"name": "creds", "secret": {"secretName": "creds"}},
                    {"name": "info", "downwardAPI": {"items": [{"path": "labels",
                        "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                    {"name": "scratch", "emptyDir": {}}]}}),
    );
    assert!(out.status.success(), "{out:?}");
    up.eventually("the files' contents in the log", 60, |u| {
        String::from_utf8_lossy(&u.run(&["logs", "files", "--tail=1"]).stdout).contains(
            "mode=fast level=3 pick=fast password=s3cret labels=app=\"files\" tier=\"web\" scratch=dir",
        )
    });
    // An edit reaches the file (the kubelet rewrites volumes every minute).
    up.ok(&[
        "patch",
        "configmap",
        "app",
        "--type=merge",
        "-p",
        r#"{"data": {"mode": "slow"}}"#,
    ]);
    up.eventually("the edited ConfigMap in the file", 90, |u| {
        String::from_utf8_lossy(&u.run(&["logs", "files", "--tail=1"]).stdout).contains("mode=slow")
    });

    // A volume of a ConfigMap that does not exist: ContainerCreating until it does.
    let out = apply(
        &up,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "waits", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i", "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "later", "mountPath": "/etc/later"}]}],
                "volumes": [{"name": "later", "configMap": {"name": "later"}}]}}),
    );
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(std::time::Duration::from_secs(5));
    let reason = up.ok(&[
        "get",
        "pod",
        "waits",
        "-o",
        "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
    ]);
    assert_eq!(reason, "ContainerCreating");
    up.ok(&["create", "configmap", "later", "--from-literal=k=v"]);
    up.eventually("the pod running once its ConfigMap exists", 60, |u| {
        u.ok(&["get", "pod", "waits", "-o", "jsonpath={.status.phase}"]) == "Running"
    });
}
