//! The docker runtime, on this machine's real Docker Engine: a `skiff kubelet --runtime docker`
//! process runs a pod whose image exists locally as a real container, its logs come back
//! through the API server, deleting the pod stops and removes the container, and a pod with
//! an unknown image waits in ErrImagePull / ImagePullBackOff. Runs when Docker is present
//! (`scripts/base-image` makes the local image, as the test command does).

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{json, Value};
use skiff::api::wire::{Request, Verb};

use common::*;

/// The image the pods run (made by `scripts/base-image` when it cannot be pulled).
const IMAGE: &str = "debian:bookworm-slim";

struct Kubelet(Child);

impl Drop for Kubelet {
    fn drop(&mut self) {
        // SIGTERM: the kubelet stops its containers before exiting.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        for _ in 0..300 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn containers_of(pod: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.kubernetes.pod.name={pod}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_kubelet_runs_real_containers_and_reports_missing_images() {
    if !docker_present() {
        skip(
            "a_docker_kubelet_runs_real_containers_and_reports_missing_images",
            "no Docker Engine answers `docker info` here",
        );
        return;
    }
    let base = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/base-image"))
        .status()
        .unwrap();
    assert!(base.success(), "scripts/base-image");

    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let node = format!("dk-{}", std::process::id());
    let root = tempfile::tempdir().unwrap();
    let _kubelet = Kubelet(
        Command::new(skiff_bin())
            .args(["kubelet", "--runtime", "docker", "--node-name", &node])
            .args([
                "--nats-url",
                &cluster.nats.url(),
                "--token",
                "bootstrap-token",
            ])
            .arg("--root")
            .arg(root.path())
            .env("SKIFF_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let nodes = admin.api("", "nodes", None);
    let n = wait_for(Duration::from_secs(30), "the docker node Ready", || {
        let (nodes, node) = (nodes.clone(), node.clone());
        async move {
            let n = nodes.get(&node).await.ok()?;
            let ready = n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(n)
        }
    })
    .await;
    assert!(
        n["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("docker://"),
        "{}",
        n["status"]["nodeInfo"]
    );

    let pods = admin.api("", "pods", Some("default"));
    let name = format!("hello-{}", std::process::id());
    pods.create(
        &json!({"metadata": {"name": name}, "spec": {"nodeName": node,
        "terminationGracePeriodSeconds": 3,
        "containers": [{"name": "main", "image": IMAGE,
            "command": ["sh", "-c", "echo hello from $WHERE; exec sleep 300"],
            "env": [{"name": "WHERE", "value": "a container"}]}]}}),
    )
    .await
    .unwrap();
    let status = wait_for(Duration::from_secs(60), "the pod Running", || {
        let (pods, name) = (pods.clone(), name.clone());
        async move {
            let p = pods.get(&name).await.ok()?;
            (p["status"]["phase"] == "Running").then(|| p["status"].clone())
        }
    })
    .await;
    assert!(
        status["containerStatuses"][0]["state"]["running"].is_object(),
        "{status}"
    );
    assert_eq!(containers_of(&name).len(), 1, "one real container");

    let logs = wait_for(Duration::from_secs(20), "the container's log", || {
        let (c, name) = (admin.clone(), name.clone());
        async move {
            let req = Request {
                resource: "pods".into(),
                namespace: Some("default".into()),
                name: Some(name),
                subresource: Some("log".into()),
                ..Default::default()
            };
            let bytes = c.call_raw(Verb::Get, &req).await.ok()?;
            let text = String::from_utf8_lossy(&bytes).to_string();
            text.contains("hello from a container").then_some(text)
        }
    })
    .await;
    assert!(logs.contains("hello from a container"), "{logs}");

    // An image that exists nowhere: ErrImagePull, then ImagePullBackOff; never Running.
    let missing = format!("nope-{}", std::process::id());
    pods.create(
        &json!({"metadata": {"name": missing}, "spec": {"nodeName": node,
        "containers": [{"name": "main", "image": "skiff.invalid/no-such-image:v1"}]}}),
    )
    .await
    .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    wait_for(
        Duration::from_secs(60),
        "ErrImagePull and ImagePullBackOff",
        || {
            let (pods, missing, seen) = (pods.clone(), missing.clone(), seen.clone());
            async move {
                let p: Value = pods.get(&missing).await.ok()?;
                assert_eq!(p["status"]["phase"], "Pending", "{}", p["status"]);
                if let Some(r) =
                    p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str()
                {
                    seen.lock().unwrap().insert(r.to_string());
                }
                seen.lock()
                    .unwrap()
                    .contains("ImagePullBackOff")
                    .then_some(())
            }
        },
    )
    .await;
    let p = pods.get(&missing).await.unwrap();
    let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"];
    assert!(
        waiting["message"]
            .as_str()
            .unwrap()
            .contains("no-such-image"),
        "{waiting}"
    );

    // Deleting the running pod stops and removes its container.
    pods.delete(&name, &Default::default()).await.unwrap();
    wait_for(
        Duration::from_secs(30),
        "the pod and its container gone",
        || {
            let (pods, name) = (pods.clone(), name.clone());
            async move {
                let gone = pods.get(&name).await.is_err_and(|e| e.code == 404);
                (gone && containers_of(&name).is_empty()).then_some(())
            }
        },
    )
    .await;
}

/// An image with the official Python `kubernetes` client: the Debian base plus the test
/// command's venv packages (`target/pyenv`, the same Python minor as bookworm's), built here
/// since nothing can be pulled.
const PYTHON_IMAGE: &str = "skiff-test/python-kube:local";

fn build_python_image() {
    let lib = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyenv/lib"));
    let site = std::fs::read_dir(lib)
        .expect("target/pyenv (the test command makes it)")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.join("kubernetes").is_dir())
        .expect("the kubernetes client in target/pyenv");
    let mut build = Command::new("docker")
        .args(["build", "-q", "-t", PYTHON_IMAGE, "-f", "-"])
        .arg(&site)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    build
        .stdin
        .take()
        .unwrap()
        .write_all(
            format!("FROM {IMAGE}\nCOPY . /opt/python-kube\nENV PYTHONPATH=/opt/python-kube\n")
                .as_bytes(),
        )
        .unwrap();
    assert!(
        build.wait().unwrap().success(),
        "docker build {PYTHON_IMAGE}"
    );
}

/// In a real container, the official Python client's `load_incluster_config` finds what
/// the pod was given at the well-known path (a bound token, the CA, the namespace) and
/// `KUBERNETES_SERVICE_HOST`/`_PORT`, and lists pods with exactly its ServiceAccount's rights.
#[test]
fn a_container_uses_load_incluster_config_with_its_service_account() {
    if !docker_present() {
        skip(
            "a_container_uses_load_incluster_config_with_its_service_account",
            "no Docker Engine answers `docker info` here",
        );
        return;
    }
    let base = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/base-image"))
        .status()
        .unwrap();
    assert!(base.success(), "scripts/base-image");
    build_python_image();
    let up = SkiffUp::start_with(1, &["--runtime", "docker"]);
    up.ok(&["create", "namespace", "apps"]);
    up.ok(&["create", "serviceaccount", "reader", "-n", "apps"]);
    up.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=list",
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
    let name = format!("incluster-{}", std::process::id());
    let manifest = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"serviceAccountName": "reader", "restartPolicy": "Never",
            "containers": [{"name": "c", "image": PYTHON_IMAGE,
                "command": ["python3", "-c", include_str!("python/incluster_check.py")]}]}});
    let file = up.dir.path().join("pod.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    up.ok(&["apply", "-f", file.to_str().unwrap()]);
    let mut logs = String::new();
    let done = std::time::Instant::now() + Duration::from_secs(90);
    while !logs.contains("other-namespace:") {
        assert!(
            std::time::Instant::now() < done,
            "no answer from the container: {logs}\n{}",
            up.ok(&["get", "pod", &name, "-n", "apps", "-o", "yaml"])
        );
        std::thread::sleep(Duration::from_millis(500));
        let out = up.run(&["logs", &name, "-n", "apps"]);
        logs = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(logs.contains(&format!("pods: {name}")), "{logs}");
    assert!(logs.contains("secrets: 403"), "{logs}");
    assert!(logs.contains("other-namespace: 403"), "{logs}");
    up.ok(&["delete", "pod", &name, "-n", "apps"]);
}
