//! Acceptance tests of the Kubernetes REST API with the real `kubectl` on PATH, against a
//! real `skiff apiserver` process (HTTPS, its own CA) and a real nats-server.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A running API server with HTTPS, and a kubectl pointed at it.
struct Kube {
    _nats: NatsServer,
    _api: ApiProcess,
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
    pub port: u16,
}

impl Kube {
    fn start() -> Kube {
        Self::start_with(&[])
    }

    fn start_with(flags: &[&str]) -> Kube {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let mut args = vec!["--https-bind", bind.as_str()];
        args.extend_from_slice(flags);
        let api = ApiProcess::start(&nats.url(), dir.path(), &args);
        let kube = Kube {
            _nats: nats,
            _api: api,
            dir,
            cache: tempfile::tempdir().unwrap(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if kube.kubeconfig().exists() {
                let out = kube.run(&["get", "--raw", "/healthz"]);
                if out.status.success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "API server did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        kube
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Starts a long-running kubectl (`get -w`, `wait`) with `-v=6` and returns once its
    /// watch request has been answered (kubectl logs each response at that level), so that
    /// what the test changes next happens while kubectl is watching. Its stdout, read on.
    fn start_watching(&self, args: &[&str]) -> (std::process::Child, Lines) {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.cache.path())
            .arg("-v=6")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl on PATH");
        let mut log = Lines::new(child.stderr.take().unwrap());
        log.wait_for_line(
            &format!("kubectl {args:?} to watch"),
            Duration::from_secs(20),
            |l| l.contains("watch=true") && l.contains("200 OK"),
        );
        log.discard();
        let out = Lines::new(child.stdout.take().unwrap());
        (child, out)
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `kubectl create --raw <path>` with a JSON body: a POST to any path.
    fn post_raw(&self, path: &str, body: &str) -> std::process::Output {
        let file = self.data_dir().join("raw-body.json");
        std::fs::write(&file, body).unwrap();
        self.run(&["create", "--raw", path, "-f", file.to_str().unwrap()])
    }

    /// Runs kubectl with this cluster's kubeconfig and a fresh cache dir.
    fn run_with(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match stdin {
            None => cmd.stdin(Stdio::null()).output().expect("kubectl on PATH"),
            Some(text) => {
                use std::io::Write;
                cmd.stdin(Stdio::piped());
                let mut child = cmd.spawn().expect("kubectl on PATH");
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(text.as_bytes())
                    .unwrap();
                child.wait_with_output().unwrap()
            }
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(&self.kubeconfig(), args, None)
    }

    /// Runs kubectl and returns stdout, failing the test on a non-zero exit.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply_stdin(&self, verb: &str, manifest: &str) -> Output {
        self.run_with(&self.kubeconfig(), &[verb, "-f", "-"], Some(manifest))
    }

    /// kubectl expecting failure: returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "kubectl {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: python:3.11
        command: ["python3", "-m", "http.server", "8080"]
        ports:
        - containerPort: 8080
"#;

fn pod(name: &str, labels: &str, node: Option<&str>) -> String {
    let node = node
        .map(|n| format!("  nodeName: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {labels}\nspec:\n{node}  containers:\n  - name: main\n    image: busybox:1.36\n    command: [\"sleep\", \"3600\"]\n"
    )
}

#[test]
fn discovery_health_and_namespaces() {
    let k = Kube::start();
    let resources = k.ok(&["api-resources"]);
    for row in [
        "pods",
        "deployments",
        "replicasets",
        "nodes",
        "namespaces",
        "leases",
        "configmaps",
    ] {
        assert!(
            resources.contains(row),
            "api-resources lists {row}:\n{resources}"
        );
    }
    assert!(resources.contains("deploy") && resources.contains("apps/v1"));
    assert_eq!(k.ok(&["get", "--raw", "/healthz"]), "ok");
    // The Swagger 2.0 document, from the same schemas as v3, as JSON and as the protobuf
    // kubectl's own v2 reader asks for (`explain --output plaintext-openapiv2`).
    let v2: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/openapi/v2"])).expect("/openapi/v2 is JSON");
    assert_eq!(v2["swagger"], "2.0");
    assert!(v2["definitions"]["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"].is_object());
    assert!(v2["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"].is_object());
    let explain = k.ok(&[
        "explain",
        "pods.spec.containers.ports",
        "--output=plaintext-openapiv2",
    ]);
    assert!(
        explain.contains("RESOURCE: ports <[]Object>")
            && explain.contains("containerPort\t<integer> -required-"),
        "{explain}"
    );
    let explain = k.ok(&[
        "explain",
        "deployments.spec.strategy.rollingUpdate",
        "--output=plaintext-openapiv2",
    ]);
    assert!(explain.contains("maxSurge\t<string>"), "{explain}");
    let ns = k.ok(&["get", "ns"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(n), "{ns}");
    }
    assert!(ns.starts_with("NAME") && ns.contains("STATUS") && ns.contains("Active"));
    let explain = k.ok(&["explain", "pod.spec.containers"]);
    assert!(
        explain.contains("KIND:") && explain.contains("Pod"),
        "{explain}"
    );
    assert!(
        explain.contains("image") && explain.contains("<string>"),
        "{explain}"
    );
    let explain = k.ok(&["explain", "deployment.spec.replicas"]);
    assert!(explain.contains("<integer>"), "{explain}");
    let version = k.ok(&["version", "-o", "json"]);
    assert!(version.contains("\"minor\": \"33\""), "{version}");
}

#[test]
fn get_output_formats_selectors_and_watch() {
    // A short history, so that an old revision is really gone.
    let k = Kube::start_with(&["--history", "3"]);
    assert!(k
        .apply_stdin("create", &pod("web-1", "{app: web}", Some("n1")))
        .status
        .success());
    assert!(k
        .apply_stdin("create", &pod("db-1", "{app: db}", Some("n2")))
        .status
        .success());
    assert!(k
        .apply_stdin(
            "create",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n"
        )
        .status
        .success());
    let out = k.run_with(
        &k.kubeconfig(),
        &["create", "-n", "other", "-f", "-"],
        Some(&pod("web-2", "{app: web}", None)),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let wide = k.ok(&["get", "pods", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        &header[..7],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"],
        "{wide}"
    );
    assert!(
        wide.lines().any(|l| l.starts_with("web-1")
            && l.contains("0/1")
            && l.contains("Pending")
            && l.contains("n1")),
        "{wide}"
    );
    let yaml = k.ok(&["get", "pod", "web-1", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Pod") && yaml.contains("nodeName: n1") && yaml.contains("uid:"),
        "{yaml}"
    );
    let json = k.ok(&["get", "pod", "web-1", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["spec"]["containers"][0]["image"], "busybox:1.36");
    assert_eq!(
        k.ok(&["get", "pod", "web-1", "-o", "jsonpath={.spec.nodeName}"]),
        "n1"
    );
    // A watch from a revision long gone: the stream carries a 410 ERROR event.
    let out = k.run(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods?watch=true&resourceVersion=1&timeoutSeconds=1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"ERROR\"") && text.contains("410") && text.contains("Expired"),
        "{text}"
    );
    let all = k.ok(&["get", "pods", "-A"]);
    assert!(
        all.contains("other") && all.contains("web-2") && all.contains("db-1"),
        "{all}"
    );
    let labelled = k.ok(&["get", "pods", "-A", "-l", "app=web", "-o", "name"]);
    assert_eq!(labelled.lines().count(), 2, "{labelled}");
    let on_n2 = k.ok(&[
        "get",
        "pods",
        "--field-selector",
        "spec.nodeName=n2",
        "-o",
        "name",
    ]);
    assert_eq!(on_n2.trim(), "pod/db-1");

    // get -w prints rows as they happen: ADDED (existing), MODIFIED, DELETED.
    let (mut watch, mut rows) = k.start_watching(&[
        "get",
        "pods",
        "-w",
        "--output-watch-events",
        "--request-timeout=60s",
    ]);
    let event = |kind: &'static str| move |l: &str| l.starts_with(kind) && l.contains("db-1");
    rows.wait_for_line("ADDED db-1", Duration::from_secs(20), event("ADDED"));
    k.ok(&["label", "pod", "db-1", "tier=backend"]);
    rows.wait_for_line("MODIFIED db-1", Duration::from_secs(20), event("MODIFIED"));
    k.ok(&["delete", "pod", "db-1", "--grace-period=0", "--force"]);
    rows.wait_for_line("DELETED db-1", Duration::from_secs(20), event("DELETED"));
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn create_apply_scale_label_and_delete_a_deployment() {
    let k = Kube::start();
    let out = k.apply_stdin("create", DEPLOYMENT);
    assert!(
        out.status.success(),
        "create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    k.ok(&["delete", "deployment", "web"]);
    let out = k.apply_stdin("apply", DEPLOYMENT);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deployment.apps/web created"),
        "{out:?}"
    );
    let out = k.apply_stdin("apply", DEPLOYMENT);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unchanged"),
        "{out:?}"
    );
    // `kubectl diff` asks for a server-side dry run of the patch: it shows the change and
    // writes nothing.
    let more = DEPLOYMENT.replace("replicas: 2", "replicas: 4");
    let out = k.run_with(&k.kubeconfig(), &["diff", "-f", "-"], Some(&more));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "diff finds a change: {out:?}");
    assert!(
        shown.contains("-  replicas: 2") && shown.contains("+  replicas: 4"),
        "{shown}"
    );
    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "2",
        "a dry run writes nothing"
    );
    let changed = DEPLOYMENT.replace("python:3.11", "python:3.12");
    let out = k.apply_stdin("apply", &changed);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("configured"),
        "{out:?}"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "python:3.12"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].ports[0].containerPort}"
        ]),
        "8080"
    );

    k.ok(&["scale", "deployment", "web", "--replicas=5"]);
    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "5"
    );
    k.ok(&["label", "deployment", "web", "tier=front"]);
    k.ok(&["annotate", "deployment", "web", "owner=team-a"]);
    let d: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "deploy", "web", "-o", "json"])).unwrap();
    assert_eq!(d["metadata"]["labels"]["tier"], "front");
    assert_eq!(d["metadata"]["annotations"]["owner"], "team-a");
    let table = k.ok(&["get", "deploy", "-o", "wide"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    k.ok(&["delete", "deployment", "web"]);
    assert!(k.fails(&["get", "deployment", "web"]).contains("NotFound"));
}

/// kubectl's typed generators send their objects as Kubernetes protobuf.
#[test]
fn typed_generators_send_protobuf_and_it_is_read() {
    let k = Kube::start();
    let json = |args: &[&str]| -> serde_json::Value { serde_json::from_str(&k.ok(args)).unwrap() };
    k.ok(&["create", "namespace", "team-a"]);
    assert_eq!(
        k.ok(&["get", "ns", "team-a", "-o", "jsonpath={.status.phase}"]),
        "Active"
    );
    k.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "team-a",
        "--from-literal=mode=fast",
        "--from-literal=empty=",
    ]);
    let cm = json(&["get", "cm", "settings", "-n", "team-a", "-o", "json"]);
    assert_eq!(cm["data"], serde_json::json!({"mode": "fast", "empty": ""}));
    k.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        "team-a",
        "--from-literal=password=s3cr3t",
    ]);
    let secret = json(&["get", "secret", "creds", "-n", "team-a", "-o", "json"]);
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["data"]["password"], "czNjcjN0", "base64 of s3cr3t");
    k.ok(&[
        "create",
        "deployment",
        "api",
        "-n",
        "team-a",
        "--image=python:3.11",
        "--replicas=3",
        "--port=8080",
        "--",
        "python3",
        "-m",
        "http.server",
        "8080",
    ]);
    let d = json(&["get", "deploy", "api", "-n", "team-a", "-o", "json"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "api");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "python:3.11");
    assert_eq!(c["command"][0], "python3");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(
        c["ports"][0]["protocol"], "TCP",
        "defaulted as Kubernetes does"
    );
    assert!(
        d["metadata"]["creationTimestamp"].is_string(),
        "the server's own timestamp, not the client's zero time"
    );
    // An explicit zero survives (a pointer field on the wire only when set).
    k.ok(&[
        "create",
        "deployment",
        "idle",
        "-n",
        "team-a",
        "--image=python:3.11",
        "--replicas=0",
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "idle",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "0"
    );
    // The same rules as JSON: a second create is AlreadyExists, a bad name Invalid.
    assert!(k
        .fails(&["create", "configmap", "settings", "-n", "team-a"])
        .contains(r#"configmaps "settings" already exists"#));
    assert!(k
        .fails(&["create", "namespace", "Bad_Name"])
        .contains(r#"The Namespace "Bad_Name" is invalid: metadata.name"#));
}

#[test]
fn nodes_cordon_describe_and_wait() {
    let k = Kube::start();
    let node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels: {node-role.kubernetes.io/worker: \"\"}\n";
    assert!(k.apply_stdin("create", node).status.success());
    k.ok(&["cordon", "n1"]);
    assert_eq!(
        k.ok(&["get", "node", "n1", "-o", "jsonpath={.spec.unschedulable}"]),
        "true"
    );
    assert!(k.ok(&["get", "nodes"]).contains("SchedulingDisabled"));
    k.ok(&["uncordon", "n1"]);
    assert_eq!(
        k.ok(&["get", "node", "n1", "-o", "jsonpath={.spec.unschedulable}"]),
        ""
    );

    assert!(k
        .apply_stdin("create", &pod("p1", "{app: p}", Some("n1")))
        .status
        .success());
    let uid = k.ok(&["get", "pod", "p1", "-o", "jsonpath={.metadata.uid}"]);
    let event = format!("apiVersion: v1\nkind: Event\nmetadata:\n  name: p1.scheduled\ninvolvedObject:\n  apiVersion: v1\n  kind: Pod\n  name: p1\n  namespace: default\n  uid: {uid}\nreason: Scheduled\nmessage: Successfully assigned default/p1 to n1\ntype: Normal\nsource:\n  component: default-scheduler\n");
    let out = k.apply_stdin("create", &event);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let describe = k.ok(&["describe", "pod", "p1"]);
    assert!(
        describe.contains("Successfully assigned default/p1 to n1"),
        "{describe}"
    );
    assert!(describe.contains("Node:") && describe.contains("n1"));

    // wait --for=condition=Ready returns once the status subresource says so.
    let (mut waiter, mut said) =
        k.start_watching(&["wait", "--for=condition=Ready", "pod/p1", "--timeout=30s"]);
    let status =
        r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#;
    k.ok(&[
        "patch",
        "pod",
        "p1",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
    said.wait_for_line("condition met", Duration::from_secs(30), |l| {
        l.contains("condition met")
    });
    let status = waiter.wait().unwrap();
    assert!(status.success(), "wait: {status:?}");

    // No kubelet serves node n1 yet: logs answer a clear 503-style error.
    let err = k.fails(&["logs", "p1"]);
    assert!(
        err.contains("ServiceUnavailable") && err.contains("n1"),
        "{err}"
    );

    // drain: cordon, list the node's pods by field selector, evict them, wait until gone.
    let out = k.run(&[
        "drain",
        "n1",
        "--force",
        "--grace-period=0",
        "--timeout=30s",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success()
            && text.contains("evicting pod default/p1")
            && text.contains("drained"),
        "{text}"
    );
    assert!(k.fails(&["get", "pod", "p1"]).contains("NotFound"));
    k.ok(&["uncordon", "n1"]);

    // delete returns once the object is gone (the kubelet's part is played by --force here).
    assert!(k
        .apply_stdin("create", &pod("p2", "{app: p}", Some("n1")))
        .status
        .success());
    k.ok(&["delete", "pod", "p2", "--grace-period=0", "--force"]);
    assert!(k.fails(&["get", "pod", "p2"]).contains("NotFound"));
}

#[test]
fn errors_read_as_kubectl_users_expect() {
    let k = Kube::start();
    let bad = pod("Bad_Name", "{app: x}", None);
    let out = k.apply_stdin("create", &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is invalid"), "{err}");
    let unknown = pod("typo", "{app: x}", None).replace("image:", "imagee: x\n    image:");
    let out = k.apply_stdin("create", &unknown);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("imagee"),
        "strict validation names the field: {err}"
    );

    // The namespaces a cluster cannot do without are not deleted.
    assert!(k
        .fails(&["delete", "namespace", "default"])
        .contains(r#"namespaces "default" is forbidden: this namespace may not be deleted"#));
    assert!(k
        .fails(&["delete", "namespace", "kube-system"])
        .contains("may not be deleted"));
    k.ok(&["get", "namespace", "default"]);

    // Streaming subresources are refused at once with a clear error (never a hang: the
    // upgrade request's body is not waited for).
    let out = k.apply_stdin("create", &pod("shell", "{app: x}", Some("n1")));
    assert!(out.status.success(), "{out:?}");
    let started = Instant::now();
    let err = k.fails(&["exec", "shell", "--", "true"]);
    assert!(
        err.contains("pods/exec is not supported by Skiff yet"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exec answered late"
    );

    // Without strict validation an unknown field is dropped with a warning.
    let out = k.run_with(
        &k.kubeconfig(),
        &["create", "-f", "-", "--validate=warn"],
        Some(&unknown),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("unknown field") && err.contains("imagee"),
        "{err}"
    );

    let wrong = k.data_dir().join("wrong-kubeconfig");
    let text = std::fs::read_to_string(k.kubeconfig())
        .unwrap()
        .replace("token: admin-token", "token: not-a-token");
    std::fs::write(&wrong, text).unwrap();
    let out = k.run_with(&wrong, &["get", "pods"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("You must be logged in to the server"),
        "{err}"
    );

    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  blob: \"{}\"\n",
        "x".repeat(4 * 1024 * 1024)
    );
    let out = k.run_with(
        &k.kubeconfig(),
        &["create", "-f", "-", "--validate=false"],
        Some(&big),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && (err.contains("too large") || err.contains("413")),
        "{err}"
    );
    assert!(
        k.fails(&["get", "configmap", "big"]).contains("NotFound"),
        "nothing was written"
    );
}

#[test]
fn client_certificates_signed_by_the_cluster_ca_work_and_others_do_not() {
    let k = Kube::start();
    let skiff = skiff_bin();
    let server = format!("https://127.0.0.1:{}", k.port);
    let make = |user: &str, group: &str, dir: &Path| {
        let out = Command::new(&skiff)
            .args(["kubeconfig", "--data-dir"])
            .arg(dir)
            .args(["--server", &server, "--user", user, "--group", group])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let good = k.data_dir().join("jane.kubeconfig");
    std::fs::write(&good, make("jane", "system:masters", k.data_dir())).unwrap();
    let out = k.run_with(&good, &["get", "ns"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ns = |name: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n");
    let out = k.run_with(&good, &["create", "-f", "-"], Some(&ns("janes")));
    assert!(
        out.status.success(),
        "an admin certificate may write: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A reader (no admin group; its group bound to `view`) may read but gets 403 on writes.
    k.ok(&[
        "create",
        "clusterrolebinding",
        "readers-view",
        "--clusterrole=view",
        "--group=readers",
    ]);
    let reader = k.data_dir().join("reader.kubeconfig");
    std::fs::write(&reader, make("rita", "readers", k.data_dir())).unwrap();
    assert!(k.run_with(&reader, &["get", "ns"], None).status.success());
    let out = k.run_with(
        &reader,
        &["create", "-f", "-", "--validate=false"],
        Some(&ns("ritas")),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Forbidden"), "{err}");
    // /metrics is for admins and monitoring (kube's system:monitoring group).
    let out = k.run_with(&reader, &["get", "--raw", "/metrics"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Forbidden"), "{err}");
    let monitor = k.data_dir().join("monitor.kubeconfig");
    std::fs::write(&monitor, make("prom", "system:monitoring", k.data_dir())).unwrap();
    let out = k.run_with(&monitor, &["get", "--raw", "/metrics"], None);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("# TYPE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `kubectl auth whoami` and `auth can-i` answer from the same authenticator and
    // authorizer as the requests themselves.
    let me = k.ok(&["auth", "whoami"]);
    assert!(
        me.contains("admin") && me.contains("system:masters"),
        "{me}"
    );
    let me = k.run_with(&reader, &["auth", "whoami"], None);
    let me = String::from_utf8_lossy(&me.stdout);
    assert!(me.contains("rita") && me.contains("readers"), "{me}");
    let can = |kubeconfig: &Path, args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let out = k.run_with(kubeconfig, &all, None);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(can(&k.kubeconfig(), &["create", "namespaces"]), "yes");
    assert_eq!(can(&reader, &["list", "pods", "-n", "default"]), "yes");
    assert_eq!(can(&reader, &["create", "namespaces"]), "no");
    assert_eq!(
        can(&reader, &["delete", "deployments.apps", "-n", "default"]),
        "no"
    );

    // Impersonation (`--as`): an admin may act as someone else, and then has only their
    // rights; anyone else may not.
    let me = k.ok(&["auth", "whoami", "--as", "rita", "--as-group", "readers"]);
    assert!(me.contains("rita") && me.contains("readers"), "{me}");
    assert_eq!(
        can(&k.kubeconfig(), &["create", "namespaces", "--as", "rita"]),
        "no"
    );
    let err = k.fails(&["create", "namespace", "as-rita", "--as", "rita"]);
    assert!(err.contains("Forbidden"), "{err}");
    let out = k.run_with(&reader, &["get", "ns", "--as", "admin"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(r#"User "rita" cannot impersonate"#),
        "{err}"
    );

    // A certificate from another CA is refused, whatever it claims.
    let other = tempfile::tempdir().unwrap();
    let mut forged = make("mallory", "system:masters", other.path());
    // Trust the real server CA so TLS gets as far as the client certificate.
    let real_ca = std::fs::read_to_string(k.kubeconfig()).unwrap();
    let ca_line = |t: &str| {
        t.lines()
            .find(|l| l.contains("certificate-authority-data"))
            .unwrap()
            .to_string()
    };
    assert_ne!(ca_line(&forged), ca_line(&real_ca), "another CA");
    forged = forged.replace(&ca_line(&forged), &ca_line(&real_ca));
    assert_eq!(ca_line(&forged), ca_line(&real_ca), "the CA swapped");
    let forged_path = k.data_dir().join("forged.kubeconfig");
    std::fs::write(&forged_path, forged).unwrap();
    let out = k.run_with(&forged_path, &["get", "ns"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    // The server trusts only its own CA for client certificates, so the server ends the
    // handshake (a *remote* TLS alert: the forged certificate's signature does not verify
    // against the real CA, whose name it copies); kubectl's own check of the server's
    // certificate passed, or it would say x509.
    assert!(
        !out.status.success()
            && err.contains("remote error: tls: error decrypting message")
            && !err.contains("x509"),
        "a foreign certificate must not get in: {err}"
    );
}

/// `kubectl delete --dry-run=server` (dryRun in the DeleteOptions body) and `?dryRun=All` in
/// the query delete nothing, whatever the object; unknown dryRun values and propagation
/// policies are refused with 422 and act on nothing.
#[test]
fn dry_run_deletes_nothing_and_bad_options_act_on_nothing() {
    let k = Kube::start();
    k.ok(&["create", "configmap", "keep", "--from-literal=a=b"]);
    let rv = k.ok(&[
        "get",
        "cm",
        "keep",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let out = k.ok(&["delete", "cm", "keep", "--dry-run=server"]);
    assert!(out.contains("deleted (server dry run)"), "{out}");
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "keep",
            "-o",
            "jsonpath={.metadata.resourceVersion}"
        ]),
        rv,
        "the ConfigMap is still there, unchanged"
    );
    // A scheduled pod's delete is graceful: a dry run sets no deletionTimestamp either.
    let out = k.apply_stdin("create", &pod("graceful", "{app: x}", Some("n1")));
    assert!(out.status.success(), "{out:?}");
    k.ok(&[
        "delete",
        "pod",
        "graceful",
        "--dry-run=server",
        "--wait=false",
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "pod",
            "graceful",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}"
        ]),
        "",
        "no deletion under way"
    );
    // The query form, as client-go sends it.
    let raw = k.run(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/configmaps/keep?dryRun=All",
    ]);
    assert!(raw.status.success(), "{raw:?}");
    k.ok(&["get", "cm", "keep"]);

    // `kubectl scale --dry-run=server` scales nothing; a dry-run binding binds nothing.
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
    ]);
    let out = k.ok(&[
        "scale",
        "deployment",
        "web",
        "--replicas=5",
        "--dry-run=server",
    ]);
    assert!(out.contains("scaled (server dry run)"), "{out}");
    assert_eq!(
        k.ok(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "2"
    );
    let out = k.apply_stdin("create", &pod("unbound", "{app: unbound}", None));
    assert!(out.status.success(), "{out:?}");
    let binding = k.data_dir().join("binding.json");
    std::fs::write(
        &binding,
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"unbound"},"target":{"kind":"Node","name":"n1"}}"#,
    )
    .unwrap();
    let raw = k.run(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/pods/unbound/binding?dryRun=All",
        "-f",
        binding.to_str().unwrap(),
    ]);
    assert!(raw.status.success(), "{raw:?}");
    assert_eq!(
        k.ok(&["get", "pod", "unbound", "-o", "jsonpath={.spec.nodeName}"]),
        "",
        "a dry-run binding binds nothing"
    );

    // Unknown values: 422 and nothing acts.
    let err = k.fails(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/configmaps/keep?dryRun=Foo",
    ]);
    assert!(
        err.contains(
            r#"The DeleteOptions "" is invalid: dryRun: Unsupported value: []string{"Foo"}: supported values: "All""#
        ),
        "{err}"
    );
    let err = k.fails(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/configmaps/keep?propagationPolicy=Sideways",
    ]);
    assert!(
        err.contains(
            r#"propagationPolicy: Unsupported value: "Sideways": supported values: "Foreground", "Background", "Orphan", "nil""#
        ),
        "{err}"
    );
    k.ok(&["get", "cm", "keep"]);
    let out = k.post_raw(
        "/api/v1/namespaces/default/configmaps?dryRun=Foo",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"made"}}"#,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            r#"The CreateOptions "" is invalid: dryRun: Unsupported value: []string{"Foo"}"#
        ),
        "{err}"
    );
    assert!(
        k.fails(&["get", "cm", "made"]).contains("NotFound"),
        "a create with a bad dryRun stores nothing"
    );
}

/// Updates as kube-apiserver's `rest.BeforeUpdate` and storage preconditions treat them: the
/// URL's namespace fills an absent one and a different one is 400; a uid in a PUT's body is a
/// precondition (409); a patch may not change the uid (422); a Secret's `stringData` is merged
/// into `data` on every write and never stored.
#[test]
fn updates_check_namespace_and_uid_and_secrets_merge_string_data() {
    let k = Kube::start();
    k.ok(&["create", "configmap", "c", "--from-literal=a=1"]);
    let uid = k.ok(&["get", "cm", "c", "-o", "jsonpath={.metadata.uid}"]);
    let put = |name: &str, body: &str| {
        let file = k.data_dir().join(name);
        std::fs::write(&file, body).unwrap();
        k.run(&[
            "replace",
            "--raw",
            "/api/v1/namespaces/default/configmaps/c",
            "-f",
            file.to_str().unwrap(),
        ])
    };
    let out = put(
        "no-ns.json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"a":"2"}}"#,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(k.ok(&["get", "cm", "c", "-o", "jsonpath={.data.a}"]), "2");
    let out = put(
        "other-ns.json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","namespace":"kube-system"},"data":{"a":"3"}}"#,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "the namespace of the provided object does not match the namespace sent on the request"
            ),
        "{out:?}"
    );
    let out = put(
        "stale-uid.json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","uid":"00000000-0000-0000-0000-000000000001"},"data":{"a":"4"}}"#,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&format!(
                "Precondition failed: UID in precondition: 00000000-0000-0000-0000-000000000001, UID in object meta: {uid}"
            )),
        "{out:?}"
    );
    let err = k.fails(&[
        "patch",
        "cm",
        "c",
        "--type=merge",
        "-p",
        r#"{"metadata":{"uid":"00000000-0000-0000-0000-000000000002"}}"#,
    ]);
    assert!(
        err.contains(r#"metadata.uid: Invalid value: "00000000-0000-0000-0000-000000000002": field is immutable"#),
        "{err}"
    );
    assert_eq!(k.ok(&["get", "cm", "c", "-o", "jsonpath={.data.a}"]), "2");
    assert_eq!(
        k.ok(&["get", "cm", "c", "-o", "jsonpath={.metadata.uid}"]),
        uid
    );

    // stringData: merged on create, on apply's patch, and never stored.
    let secret = |value: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  kept: eA==\nstringData:\n  user: {value}\n"
        )
    };
    let out = k.apply_stdin("apply", &secret("admin"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        k.ok(&[
            "get",
            "secret",
            "s",
            "-o",
            "jsonpath={.data.user} {.data.kept}"
        ]),
        "YWRtaW4= eA=="
    );
    let out = k.apply_stdin("apply", &secret("root"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        k.ok(&["get", "secret", "s", "-o", "jsonpath={.data.user}"]),
        "cm9vdA=="
    );
    assert_eq!(
        k.ok(&["get", "secret", "s", "-o", "jsonpath={.stringData}"]),
        "",
        "stringData is never stored"
    );
}

/// The same resourceVersion rules over HTTPS, as kubectl and client-go send them: 422 for
/// options kube refuses, 504 for a revision from the future, and a watch list that ends its
/// initial objects with the `k8s.io/initial-events-end` BOOKMARK at once.
#[test]
fn list_options_and_watch_lists_over_http() {
    let k = Kube::start();
    k.ok(&["create", "configmap", "one", "--from-literal=a=1"]);
    let err = k.fails(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?resourceVersionMatch=NotOlderThan",
    ]);
    assert!(
        err.contains("resourceVersionMatch is forbidden unless resourceVersion is provided"),
        "{err}"
    );
    let err = k.fails(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true",
    ]);
    assert!(
        err.contains("sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"),
        "{err}"
    );
    let err = k.fails(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?resourceVersion=999999999",
    ]);
    assert!(err.contains("Too large resource version"), "{err}");

    // Field selectors kube's pods and nodes take; an unset bool selects as false.
    let out = k.apply_stdin("create", &pod("plain", "{app: plain}", None));
    assert!(out.status.success(), "{out:?}");
    let out = k.ok(&[
        "get",
        "pods",
        "--field-selector",
        "spec.hostNetwork=false,status.podIP=",
        "-o",
        "name",
    ]);
    assert!(out.lines().any(|l| l == "pod/plain"), "{out}");

    let started = Instant::now();
    let out = k.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1",
    ]);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    // kube-root-ca.crt may not exist here; "one" does, and the annotated bookmark follows
    // the ADDED events, within the 1 s the watch lasts (bookmarks otherwise come every 5 s).
    let end = types
        .iter()
        .position(|t| *t == "BOOKMARK")
        .unwrap_or_else(|| panic!("no bookmark: {out}"));
    assert!(
        types[..end].iter().all(|t| *t == "ADDED") && end >= 1,
        "{out}"
    );
    assert!(
        events[..end]
            .iter()
            .any(|e| e["object"]["metadata"]["name"] == "one"),
        "{out}"
    );
    assert_eq!(
        events[end]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true",
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// DELETE on a collection (what client-go's `DeleteCollection` and the Python client's
/// `delete_collection_*` send): the selected objects only, with the DeleteOptions' dry run
/// and preconditions honoured per object; refused options delete nothing.
#[test]
fn delete_collection_deletes_what_the_selectors_select() {
    let k = Kube::start();
    for (name, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
        k.ok(&["create", "configmap", name]);
        k.ok(&["label", "configmap", name, &format!("tier={tier}")]);
    }
    let names = || {
        k.ok(&[
            "get",
            "cm",
            "-l",
            "tier",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
    };
    // Dry run in the body, as client-go sends it: nothing goes.
    let body = k.data_dir().join("dry.json");
    std::fs::write(
        &body,
        r#"{"kind":"DeleteOptions","apiVersion":"v1","dryRun":["All"]}"#,
    )
    .unwrap();
    let out = k.run(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/configmaps?labelSelector=tier%3Dweb",
        "-f",
        body.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["kind"], "ConfigMapList", "{answer}");
    assert_eq!(
        answer["items"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    assert_eq!(names(), "a b c");
    // A refused option: 422, nothing goes.
    let err = k.fails(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/configmaps?labelSelector=tier%3Dweb&propagationPolicy=Sideways",
    ]);
    assert!(err.contains("Unsupported value: \"Sideways\""), "{err}");
    assert_eq!(names(), "a b c");
    // For real: the selected ones only.
    let out = k.ok(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/configmaps?labelSelector=tier%3Dweb",
    ]);
    assert!(out.contains("ConfigMapList"), "{out}");
    assert_eq!(names(), "c");
    // Across namespaces it is not served (405), as on kube.
    let err = k.fails(&["delete", "--raw", "/api/v1/configmaps"]);
    assert!(
        err.contains("MethodNotAllowed")
            || err.contains("not allowed")
            || err.contains("not supported"),
        "{err}"
    );
    assert_eq!(names(), "c");
    // Discovery says so, as kube's does.
    let out = k.ok(&["api-resources", "--verbs=deletecollection", "-o", "name"]);
    assert!(out.lines().any(|l| l == "configmaps"), "{out}");
}

/// Pods kube-apiserver refuses, refused here with the same words (validation: 422;
/// priority admission: 403), and the priority it computes written on those it takes.
#[test]
fn pods_kube_refuses_are_refused_alike() {
    let k = Kube::start();
    let pod_with = |name: &str, spec: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec}")
    };
    let main = "  containers:\n  - name: main\n    image: busybox\n";
    let cases = [
        (
            "no-handler",
            format!("{main}    livenessProbe:\n      periodSeconds: 5\n"),
            "spec.containers[0].livenessProbe: Required value: must specify a handler type",
        ),
        (
            "two-handlers",
            format!("{main}    readinessProbe:\n      exec:\n        command: [\"true\"]\n      tcpSocket:\n        port: 80\n"),
            "spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
        ),
        (
            "liveness-twice",
            format!("{main}    livenessProbe:\n      exec:\n        command: [\"true\"]\n      successThreshold: 2\n"),
            "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
        ),
        (
            "bogus-field",
            format!("{main}    env:\n    - name: X\n      valueFrom:\n        fieldRef:\n          fieldPath: spec.bogus\n"),
            r#"spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: "spec.bogus": supported values: "metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs""#,
        ),
        (
            "in-no-values",
            format!("{main}  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - key: zone\n            operator: In\n"),
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
        ),
        (
            "host-port",
            format!("  hostNetwork: true\n{main}    ports:\n    - containerPort: 80\n      hostPort: 8080\n"),
            "spec.containers[0].ports[0].hostPort: Invalid value: 8080: must match `containerPort` when `hostNetwork` is true",
        ),
        (
            "init-readiness",
            format!("  initContainers:\n  - name: setup\n    image: busybox\n    readinessProbe:\n      exec:\n        command: [\"true\"]\n{main}"),
            "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
        ),
        (
            "given-priority",
            format!("  priority: 5\n{main}"),
            "the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 0 from the given PriorityClass name",
        ),
        (
            "unknown-class",
            format!("  priorityClassName: gold\n{main}"),
            "no PriorityClass with name gold was found",
        ),
    ];
    for (name, spec, want) in &cases {
        let out = k.apply_stdin("create", &pod_with(name, spec));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(err.contains(want), "{name}: {err}");
    }
    assert_eq!(k.ok(&["get", "pods", "-o", "name"]), "", "none was stored");
    // A sidecar may have probes; a known class gives its priority.
    let ok = pod_with(
        "fine",
        &format!("  priorityClassName: system-cluster-critical\n  initContainers:\n  - name: proxy\n    image: busybox\n    restartPolicy: Always\n    readinessProbe:\n      exec:\n        command: [\"true\"]\n{main}"),
    );
    let out = k.apply_stdin("create", &ok);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        k.ok(&[
            "get",
            "pod",
            "fine",
            "-o",
            "jsonpath={.spec.priority} {.spec.preemptionPolicy}"
        ]),
        "2000000000 PreemptLowerPriority"
    );
}

/// A namespace's `spec.finalizers` change through `namespaces/<n>/finalize` only, and that
/// subresource changes nothing else; deleting a namespace still completes (the namespace
/// controller finalizes through it).
#[test]
fn namespace_finalizers_change_through_finalize_only() {
    let k = Kube::start();
    k.ok(&["create", "namespace", "fin"]);
    let finalizers = || k.ok(&["get", "ns", "fin", "-o", "jsonpath={.spec.finalizers}"]);
    assert_eq!(finalizers(), r#"["kubernetes"]"#);
    let put = |path: &str, body: &str| {
        let file = k.data_dir().join("ns.json");
        std::fs::write(&file, body).unwrap();
        k.run(&["replace", "--raw", path, "-f", file.to_str().unwrap()])
    };
    let out = put(
        "/api/v1/namespaces/fin",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"fin","labels":{"a":"b"}},"spec":{"finalizers":[]}}"#,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        finalizers(),
        r#"["kubernetes"]"#,
        "the main resource keeps them"
    );
    assert_eq!(
        k.ok(&["get", "ns", "fin", "-o", "jsonpath={.metadata.labels.a}"]),
        "b"
    );
    let out = put(
        "/api/v1/namespaces/fin/finalize",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"fin","labels":{"a":"changed"}},"spec":{"finalizers":["example.com/x"]}}"#,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(finalizers(), r#"["example.com/x"]"#);
    assert_eq!(
        k.ok(&["get", "ns", "fin", "-o", "jsonpath={.metadata.labels.a}"]),
        "b",
        "finalize changes the finalizers only"
    );
    // Deleted, it waits for its finalizers (no namespace controller runs here); emptied
    // through finalize, as the controller does, it goes.
    k.ok(&["delete", "namespace", "fin", "--wait=false"]);
    assert_eq!(
        k.ok(&["get", "ns", "fin", "-o", "jsonpath={.status.phase}"]),
        "Terminating"
    );
    let out = put(
        "/api/v1/namespaces/fin/finalize",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"fin"},"spec":{"finalizers":[]}}"#,
    );
    assert!(out.status.success(), "{out:?}");
    let err = k.fails(&["get", "ns", "fin"]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}

/// A dry-run create of a name in use is 409 as the real one would be; a Scale written with a
/// stale resourceVersion is 409, and a fresh write answers the new resourceVersion.
#[test]
fn dry_run_creates_and_scale_writes_answer_as_the_real_ones() {
    let k = Kube::start();
    k.ok(&["create", "configmap", "taken"]);
    let err = k.fails(&["create", "configmap", "taken", "--dry-run=server"]);
    assert!(
        err.contains("AlreadyExists") || err.contains("already exists"),
        "{err}"
    );
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=1",
    ]);
    let stale = k.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    k.ok(&["scale", "deploy", "web", "--replicas=2"]);
    // Objects are created through their collection: a POST on an object's own path is 405,
    // whatever its body names.
    let out = k.post_raw(
        "/api/v1/namespaces/default/configmaps/taken",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"other"}}"#,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("MethodNotAllowed"),
        "{err}"
    );
    assert!(k.fails(&["get", "configmap", "other"]).contains("NotFound"));
    let file = k.data_dir().join("scale.json");
    let put = |rv: &str| {
        std::fs::write(
            &file,
            format!(r#"{{"apiVersion":"autoscaling/v1","kind":"Scale","metadata":{{"name":"web","namespace":"default","resourceVersion":"{rv}"}},"spec":{{"replicas":3}}}}"#),
        )
        .unwrap();
        k.run(&[
            "replace",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            "-f",
            file.to_str().unwrap(),
        ])
    };
    let out = put(&stale);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Conflict")
            || err.contains("the object has been modified"),
        "{out:?}"
    );
    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "2"
    );
    let fresh = k.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let out = put(&fresh);
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let now = k.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    assert_ne!(now, fresh);
    assert_eq!(
        answer["metadata"]["resourceVersion"],
        json_str(&now),
        "{answer}"
    );
    assert_eq!(answer["spec"]["replicas"], 3);
}

fn json_str(s: &str) -> serde_json::Value {
    serde_json::Value::String(s.to_string())
}

/// The HTTP half of the dry-run table, as kubectl asks for it: `--dry-run=server` on create,
/// replace, apply, every patch type (also of the status and scale subresources), scale,
/// delete, drain (evictions), and `?dryRun=All` or a DeleteOptions body on raw binding,
/// status, collection and eviction requests. Afterwards the Store's revision is the same and
/// a watch from the revision before replays nothing.
#[test]
fn dry_run_over_http_changes_nothing() {
    let k = Kube::start();
    k.ok(&["create", "configmap", "c1", "--from-literal=a=1"]);
    k.ok(&["label", "configmap", "c1", "x=y"]);
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
    ]);
    let out = k.apply_stdin("create", &pod("unbound", "{app: u}", None));
    assert!(out.status.success(), "{out:?}");
    let out = k.apply_stdin("create", &pod("bound", "{app: b}", Some("n1")));
    assert!(out.status.success(), "{out:?}");
    let node = k.data_dir().join("node.json");
    std::fs::write(
        &node,
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"}}"#,
    )
    .unwrap();
    k.ok(&["create", "-f", node.to_str().unwrap()]);
    let revision = || {
        let list: serde_json::Value =
            serde_json::from_str(&k.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"]))
                .unwrap();
        list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = revision();
    assert!(before.parse::<u64>().unwrap() > 0);

    let file = |name: &str, body: &str| {
        let p = k.data_dir().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };
    let new_cm = file(
        "new.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: new\n",
    );
    let replaced = file(
        "c1.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\n  labels: {x: \"y\"}\ndata:\n  a: \"2\"\n",
    );
    let binding = file(
        "binding.json",
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"unbound"},"target":{"kind":"Node","name":"n1"}}"#,
    );
    let eviction = file(
        "eviction.json",
        r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"bound","namespace":"default"},"deleteOptions":{"dryRun":["All"]}}"#,
    );
    let dry_body = file(
        "dry.json",
        r#"{"kind":"DeleteOptions","apiVersion":"v1","dryRun":["All"]}"#,
    );
    let status = file(
        "status.json",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bound","namespace":"default"},"spec":{"nodeName":"n1","containers":[{"name":"main","image":"busybox:1.36"}]},"status":{"phase":"Failed"}}"#,
    );
    let calls: Vec<Vec<&str>> = vec![
        vec!["create", "-f", &new_cm, "--dry-run=server"],
        vec!["replace", "-f", &replaced, "--dry-run=server"],
        vec!["apply", "-f", &replaced, "--dry-run=server"],
        vec![
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &replaced,
            "--dry-run=server",
        ],
        vec!["apply", "--server-side", "-f", &new_cm, "--dry-run=server"],
        vec![
            "patch",
            "cm",
            "c1",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"3"}}"#,
            "--dry-run=server",
        ],
        vec![
            "patch",
            "cm",
            "c1",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/data/a","value":"4"}]"#,
            "--dry-run=server",
        ],
        vec![
            "patch",
            "cm",
            "c1",
            "--type=strategic",
            "-p",
            r#"{"metadata":{"labels":{"z":"w"}}}"#,
            "--dry-run=server",
        ],
        vec![
            "patch",
            "pod",
            "bound",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
            "--dry-run=server",
        ],
        vec![
            "patch",
            "deployment",
            "web",
            "--subresource=scale",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":7}}"#,
            "--dry-run=server",
        ],
        vec![
            "scale",
            "deployment",
            "web",
            "--replicas=5",
            "--dry-run=server",
        ],
        vec!["label", "cm", "c1", "more=labels", "--dry-run=server"],
        vec!["delete", "cm", "c1", "--dry-run=server"],
        vec!["delete", "pod", "bound", "--dry-run=server", "--wait=false"],
        vec![
            "delete",
            "deployment",
            "web",
            "--cascade=foreground",
            "--dry-run=server",
            "--wait=false",
        ],
        vec!["cordon", "n1", "--dry-run=server"],
        vec![
            "drain",
            "n1",
            "--dry-run=server",
            "--force",
            "--ignore-daemonsets",
        ],
        vec![
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/unbound/binding?dryRun=All",
            "-f",
            &binding,
        ],
        vec![
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/bound/eviction",
            "-f",
            &eviction,
        ],
        vec![
            "replace",
            "--raw",
            "/api/v1/namespaces/default/pods/bound/status?dryRun=All",
            "-f",
            &status,
        ],
        vec![
            "delete",
            "--raw",
            "/api/v1/namespaces/default/configmaps?labelSelector=x%3Dy",
            "-f",
            &dry_body,
        ],
        vec![
            "delete",
            "--raw",
            "/api/v1/namespaces/default/configmaps?labelSelector=x%3Dy&dryRun=All",
        ],
    ];
    for args in &calls {
        let out = k.run(args);
        assert!(out.status.success(), "kubectl {args:?}: {out:?}");
    }
    assert_eq!(revision(), before, "the Store's revision moved");
    for path in [
        "/api/v1/namespaces/default/configmaps",
        "/api/v1/namespaces/default/pods",
        "/apis/apps/v1/namespaces/default/deployments",
        "/api/v1/nodes",
    ] {
        let events = k.ok(&[
            "get",
            "--raw",
            &format!("{path}?watch=1&resourceVersion={before}&timeoutSeconds=1"),
        ]);
        assert_eq!(events.trim(), "", "{path} changed since {before}");
    }
}

/// `events.k8s.io/v1` Events are the core Events under other names, as on kube: one written
/// in either form reads in both; patches, field selectors, watches and Tables speak the
/// new names; what the new version requires is required.
#[test]
fn events_k8s_io_serves_the_core_events() {
    let k = Kube::start();
    let v1 = "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: e1\neventTime: \"2026-12-07T12:00:00.000000Z\"\nreportingController: example.com/ctl\nreportingInstance: ctl-1\naction: Reconcile\nreason: Done\ntype: Normal\nregarding:\n  kind: Pod\n  name: web\n  namespace: default\nnote: all good\n";
    let out = k.apply_stdin("create", v1);
    assert!(out.status.success(), "{out:?}");
    // The core view.
    assert_eq!(
        k.ok(&[
            "get",
            "events",
            "e1",
            "-o",
            "jsonpath={.apiVersion} {.message} {.involvedObject.name} {.reportingComponent}"
        ]),
        "v1 all good web example.com/ctl"
    );
    // The new view, also of an Event written as core.
    let core = "apiVersion: v1\nkind: Event\nmetadata:\n  name: e2\ninvolvedObject:\n  kind: Pod\n  name: db\n  namespace: default\nreason: Started\nmessage: core message\ntype: Warning\n";
    let out = k.apply_stdin("create", core);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        k.ok(&[
            "get",
            "events.events.k8s.io",
            "e2",
            "-o",
            "jsonpath={.apiVersion} {.note} {.regarding.name}"
        ]),
        "events.k8s.io/v1 core message db"
    );
    // Patches speak the new names; the core Event changes.
    k.ok(&[
        "patch",
        "events.events.k8s.io",
        "e1",
        "--type=merge",
        "-p",
        r#"{"note":"changed"}"#,
    ]);
    assert_eq!(
        k.ok(&["get", "events", "e1", "-o", "jsonpath={.message}"]),
        "changed"
    );
    // Field selectors on the new names.
    assert_eq!(
        k.ok(&[
            "get",
            "events.events.k8s.io",
            "--field-selector",
            "regarding.name=db",
            "-o",
            "name"
        ])
        .trim(),
        "event.events.k8s.io/e2"
    );
    // A watch sends the new form.
    let out = k.ok(&[
        "get",
        "--raw",
        "/apis/events.k8s.io/v1/namespaces/default/events?watch=1&timeoutSeconds=1",
    ]);
    let notes: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|e| {
            assert_eq!(e["object"]["apiVersion"], "events.k8s.io/v1", "{e}");
            e["object"]["note"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert!(
        notes.contains(&"changed".to_string()) && notes.contains(&"core message".to_string()),
        "{out}"
    );
    // The Table.
    let table = k.ok(&["get", "events.events.k8s.io"]);
    assert!(
        table.contains("pod/db") && table.contains("core message"),
        "{table}"
    );
    // What events.k8s.io/v1 requires.
    let out = k.apply_stdin(
        "create",
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: e3\nnote: x\ntype: Normal\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("reportingController: Required value"),
        "{err}"
    );
}

/// Runs kubectl with a manifest on stdin.
fn with_stdin(k: &Kube, args: &[&str], manifest: &str) -> Output {
    k.run_with(&k.kubeconfig(), args, Some(manifest))
}

/// The managers of an object as `kubectl get -o yaml --show-managed-fields` shows them:
/// (manager, operation, subresource).
fn managers(k: &Kube, what: &[&str]) -> Vec<(String, String, String)> {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    let obj: serde_json::Value = serde_json::from_str(&k.ok(&args)).unwrap();
    obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let s = |f: &str| e[f].as_str().unwrap_or("").to_string();
            (s("manager"), s("operation"), s("subresource"))
        })
        .collect()
}

#[test]
fn server_side_apply_owns_fields_conflicts_and_forces() {
    let k = Kube::start();
    // Without the managed fields flag kubectl hides them; the server keeps them.
    let out = with_stdin(&k, &["apply", "--server-side", "-f", "-"], DEPLOYMENT);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("serverside-applied"));
    let hidden = k.ok(&["get", "deploy", "web", "-o", "yaml"]);
    assert!(!hidden.contains("managedFields"), "{hidden}");
    let owners = managers(&k, &["deploy", "web"]);
    assert!(
        owners.contains(&("kubectl".into(), "Apply".into(), "".into())),
        "{owners:?}"
    );
    let fields = k.ok(&[
        "get",
        "deploy",
        "web",
        "--show-managed-fields",
        "-o",
        r#"jsonpath={.metadata.managedFields[?(@.manager=="kubectl")].fieldsV1}"#,
    ]);
    let fields: serde_json::Value = serde_json::from_str(&fields).unwrap();
    assert_eq!(fields["f:spec"]["f:replicas"], serde_json::json!({}));
    let container =
        &fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
    assert_eq!(container["."], serde_json::json!({}), "{fields}");
    assert_eq!(
        container["f:ports"]["k:{\"containerPort\":8080,\"protocol\":\"TCP\"}"]["f:containerPort"],
        serde_json::json!({}),
        "{fields}"
    );

    // The same configuration again writes nothing.
    let rv = k.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let out = with_stdin(&k, &["apply", "--server-side", "-f", "-"], DEPLOYMENT);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.resourceVersion}"
        ]),
        rv,
        "a no-op apply is no write"
    );

    // A second manager changing a field the first owns conflicts, naming both.
    let three = DEPLOYMENT.replace("replicas: 2", "replicas: 3");
    let out = with_stdin(
        &k,
        &["apply", "--server-side", "--field-manager=ops", "-f", "-"],
        &three,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas"#),
        "{err}"
    );
    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "2"
    );
    // The same value is co-owned without a conflict.
    let out = with_stdin(
        &k,
        &["apply", "--server-side", "--field-manager=ops", "-f", "-"],
        DEPLOYMENT,
    );
    assert!(out.status.success(), "{out:?}");
    // --force-conflicts takes the field over.
    let out = with_stdin(
        &k,
        &[
            "apply",
            "--server-side",
            "--field-manager=ops",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &three,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    let owners = managers(&k, &["deploy", "web"]);
    for m in ["kubectl", "ops"] {
        assert!(
            owners.contains(&(m.into(), "Apply".into(), "".into())),
            "{m}: {owners:?}"
        );
    }
    let replicas_owners = k.ok(&[
        "get",
        "deploy",
        "web",
        "--show-managed-fields",
        "-o",
        r#"jsonpath={.metadata.managedFields[?(@.fieldsV1.f:spec.f:replicas)].manager}"#,
    ]);
    assert_eq!(replicas_owners.trim(), "ops");
    // Status writes are recorded against the status subresource.
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"observedGeneration":1}}"#,
    ]);
    let owners = managers(&k, &["deploy", "web"]);
    assert!(
        owners.contains(&("kubectl-patch".into(), "Update".into(), "status".into())),
        "{owners:?}"
    );

    // A plain write is recorded under kubectl's field manager for it, and takes the field.
    k.ok(&["scale", "deploy", "web", "--replicas=4"]);
    let owners = managers(&k, &["deploy", "web"]);
    assert!(
        owners
            .iter()
            .any(|(m, op, _)| m == "kubectl" && op == "Update"),
        "{owners:?}"
    );
    // Now the applier conflicts with that update, named with its apiVersion.
    let err = String::from_utf8_lossy(
        &with_stdin(
            &k,
            &["apply", "--server-side", "--field-manager=ops", "-f", "-"],
            &three,
        )
        .stderr,
    )
    .into_owned();
    assert!(
        err.contains(r#"conflict with "kubectl" using apps/v1: .spec.replicas"#),
        "{err}"
    );

    // A field the manager no longer applies is removed; a dry-run apply changes nothing.
    let cm =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owned}\ndata: {a: \"1\", b: \"2\"}\n";
    let out = with_stdin(&k, &["apply", "--server-side", "-f", "-"], cm);
    assert!(out.status.success(), "{out:?}");
    let fewer = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owned}\ndata: {a: \"1\"}\n";
    let rv = k.ok(&[
        "get",
        "cm",
        "owned",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let out = with_stdin(
        &k,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ],
        fewer,
    );
    assert!(out.status.success(), "{out:?}");
    let answered: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answered["data"], serde_json::json!({"a": "1"}));
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "owned",
            "-o",
            "jsonpath={.metadata.resourceVersion}"
        ]),
        rv,
        "a dry-run apply writes nothing"
    );
    let out = with_stdin(&k, &["apply", "--server-side", "-f", "-"], fewer);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        k.ok(&["get", "cm", "owned", "-o", "jsonpath={.data}"]),
        r#"{"a":"1"}"#
    );
}

#[test]
fn client_side_apply_migrates_to_server_side_apply() {
    let k = Kube::start();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: csa}\ndata: {a: \"1\", b: \"2\"}\n";
    let out = with_stdin(&k, &["apply", "-f", "-"], cm);
    assert!(out.status.success(), "{out:?}");
    let owners = managers(&k, &["cm", "csa"]);
    assert_eq!(
        owners,
        vec![(
            "kubectl-client-side-apply".to_string(),
            "Update".to_string(),
            String::new()
        )]
    );
    // kubectl rewrites the client-side owner into its server-side one, then applies.
    let out = with_stdin(&k, &["apply", "--server-side", "-f", "-"], cm);
    assert!(out.status.success(), "{out:?}");
    let owners = managers(&k, &["cm", "csa"]);
    assert!(
        owners.contains(&("kubectl".into(), "Apply".into(), "".into()))
            && !owners
                .iter()
                .any(|(m, _, _)| m == "kubectl-client-side-apply"),
        "{owners:?}"
    );
    // After the migration, dropping a key from the manifest removes it.
    let fewer = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: csa}\ndata: {a: \"1\"}\n";
    let out = with_stdin(&k, &["apply", "--server-side", "-f", "-"], fewer);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        k.ok(&["get", "cm", "csa", "-o", "jsonpath={.data}"]),
        r#"{"a":"1"}"#
    );
}

#[test]
fn defaults_and_normalisation_match_kube() {
    let k = Kube::start();
    // Namespaces carry their name as a label.
    k.ok(&["create", "namespace", "team-a"]);
    assert_eq!(
        k.ok(&[
            "get",
            "ns",
            "team-a",
            "-o",
            r#"jsonpath={.metadata.labels.kubernetes\.io/metadata\.name}"#
        ]),
        "team-a"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "ns",
            "-l",
            "kubernetes.io/metadata.name=team-a",
            "-o",
            "name"
        ])
        .trim(),
        "namespace/team-a"
    );
    let pod = |name: &str, resources: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n    resources: {resources}\n"
        )
    };
    let create = |manifest: String| {
        let out = k.apply_stdin("create", &manifest);
        assert!(out.status.success(), "{out:?}");
    };
    create(pod(
        "guaranteed",
        r#"{limits: {cpu: "1000m", memory: "1.5Gi"}}"#,
    ));
    create(pod("burstable", r#"{requests: {cpu: "0.5"}}"#));
    create(pod("besteffort", "{}"));
    let get =
        |name: &str, path: &str| k.ok(&["get", "pod", name, "-o", &format!("jsonpath={{{path}}}")]);
    // Requests default from limits; quantities are stored canonical.
    assert_eq!(
        get("guaranteed", ".spec.containers[0].resources.requests"),
        r#"{"cpu":"1","memory":"1536Mi"}"#
    );
    assert_eq!(
        get("guaranteed", ".spec.containers[0].resources.limits"),
        r#"{"cpu":"1","memory":"1536Mi"}"#
    );
    assert_eq!(
        get("burstable", ".spec.containers[0].resources.requests.cpu"),
        "500m"
    );
    for (name, qos) in [
        ("guaranteed", "Guaranteed"),
        ("burstable", "Burstable"),
        ("besteffort", "BestEffort"),
    ] {
        assert_eq!(get(name, ".status.qosClass"), qos, "{name}");
    }
    // The pod defaults and admission kube adds.
    assert_eq!(get("besteffort", ".spec.enableServiceLinks"), "true");
    assert_eq!(get("besteffort", ".spec.priority"), "0");
    // DefaultTolerationSeconds admission: 300 s for the not-ready and unreachable taints.
    let tolerations: serde_json::Value =
        serde_json::from_str(&get("besteffort", ".spec.tolerations")).unwrap();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        assert!(
            tolerations
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["key"] == key
                    && t["effect"] == "NoExecute"
                    && t["operator"] == "Exists"
                    && t["tolerationSeconds"] == 300),
            "{key}: {tolerations}"
        );
    }
    // A pod that tolerates everything gets none added.
    let out = k.apply_stdin(
        "create",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: tolerant}\nspec:\n  tolerations: [{operator: Exists}]\n  containers: [{name: c, image: busybox:1.36}]\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        get("tolerant", ".spec.tolerations"),
        r#"[{"operator":"Exists"}]"#
    );
    // A status write that leaves the QoS class out keeps it.
    k.ok(&[
        "patch",
        "pod",
        "guaranteed",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"qosClass":null,"phase":"Pending"}}"#,
    ]);
    assert_eq!(get("guaranteed", ".status.qosClass"), "Guaranteed");
    // Owner references repeating a uid are kept once.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\n  ownerReferences:\n  - {apiVersion: v1, kind: ConfigMap, name: a, uid: 11111111-1111-1111-1111-111111111111}\n  - {apiVersion: v1, kind: ConfigMap, name: a, uid: 11111111-1111-1111-1111-111111111111}\n";
    let out = k.apply_stdin("create", cm);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "owned",
            "-o",
            "jsonpath={.metadata.ownerReferences[*].name}"
        ]),
        "a"
    );
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wg]}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.size, statusReplicasPath: .status.size, labelSelectorPath: .status.selector}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the widget should be.
            required: [size]
            x-kubernetes-validations:
            - {rule: "!has(self.maxSize) || self.size <= self.maxSize", message: size must not exceed maxSize}
            properties:
              size: {type: integer, minimum: 1, maximum: 10, description: How big.}
              maxSize: {type: integer}
              shape:
                type: string
                x-kubernetes-validations: [{rule: self == oldSelf, message: shape is immutable}]
              color: {type: string, enum: [red, blue], default: red}
              labels: {type: object, additionalProperties: {type: string}}
          status:
            type: object
            properties:
              size: {type: integer}
              selector: {type: string}
              conditions:
                type: array
                items: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// A CRD serving two versions (conversion None): objects are stored in the storage version
/// and read, written, listed and watched in whichever version is asked, only apiVersion
/// differing.
#[test]
fn custom_resources_are_served_in_every_served_version() {
    let k = Kube::start();
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gizmos.example.com}
spec:
  group: example.com
  names: {plural: gizmos, kind: Gizmo}
  scope: Namespaced
  versions:
  - name: v1beta1
    served: true
    storage: false
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;
    let out = k.apply_stdin("apply", crd);
    assert!(out.status.success(), "{out:?}");
    let out = k.apply_stdin(
        "create",
        "apiVersion: example.com/v1beta1\nkind: Gizmo\nmetadata: {name: g}\nspec: {n: 1}\n",
    );
    assert!(out.status.success(), "{out:?}");
    let av = |resource: &str| k.ok(&["get", resource, "g", "-o", "jsonpath={.apiVersion}"]);
    assert_eq!(av("gizmos.v1beta1.example.com"), "example.com/v1beta1");
    assert_eq!(av("gizmos.v1.example.com"), "example.com/v1");
    // kubectl's preferred version is v1.
    assert_eq!(av("gizmos"), "example.com/v1");
    k.ok(&[
        "patch",
        "gizmos.v1beta1.example.com",
        "g",
        "--type=merge",
        "-p",
        r#"{"spec":{"n":2}}"#,
    ]);
    assert_eq!(
        k.ok(&["get", "gizmos", "g", "-o", "jsonpath={.spec.n}"]),
        "2"
    );
    let list: serde_json::Value = serde_json::from_str(&k.ok(&[
        "get",
        "--raw",
        "/apis/example.com/v1beta1/namespaces/default/gizmos",
    ]))
    .unwrap();
    assert_eq!(
        list["items"][0]["apiVersion"], "example.com/v1beta1",
        "{list}"
    );
    let watched = k.ok(&[
        "get",
        "--raw",
        "/apis/example.com/v1beta1/namespaces/default/gizmos?watch=1&timeoutSeconds=1",
    ]);
    assert!(
        watched.contains(r#""apiVersion":"example.com/v1beta1""#)
            && !watched.contains(r#""apiVersion":"example.com/v1""#),
        "{watched}"
    );
    // Stored in the storage version: what a NATS client (no version) reads.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = client_for(&k._nats.url(), ADMIN.0, ADMIN.1).await;
        let got = c
            .api("example.com", "gizmos", Some("default"))
            .get("g")
            .await
            .unwrap();
        assert_eq!(got["apiVersion"], "example.com/v1");
    });
}

#[test]
fn custom_resource_definitions_serve_their_kinds_at_once() {
    let k = Kube::start();
    let out = k.apply_stdin("apply", WIDGET_CRD);
    assert!(out.status.success(), "{out:?}");
    // Established as it commits, the names accepted, listed with kube's columns.
    let conditions = k.ok(&[
        "get",
        "crd",
        "widgets.example.com",
        "-o",
        r#"jsonpath={range .status.conditions[*]}{.type}={.status} {end}"#,
    ]);
    assert_eq!(conditions.trim(), "NamesAccepted=True Established=True");
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=10s",
    ]);
    assert!(k.ok(&["get", "crds"]).starts_with("NAME"));
    // Discovery has the kind with its short name and status subresource, no restart.
    let resources = k.ok(&["api-resources", "--api-group=example.com", "-o", "wide"]);
    assert!(
        resources.contains("widgets") && resources.contains("wg"),
        "{resources}"
    );
    let list = k.ok(&["get", "--raw", "/apis/example.com/v1"]);
    assert!(list.contains("widgets/status"), "{list}");

    // Defaults filled in, the schema's bounds and enums refused with kube's messages.
    let widget = |name: &str, spec: &str| {
        format!(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: {name}}}\nspec: {spec}\n"
        )
    };
    let out = k.apply_stdin("create", &widget("w1", "{size: 3}"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        k.ok(&[
            "get",
            "wg",
            "w1",
            "-o",
            "jsonpath={.spec.color} {.metadata.generation}"
        ]),
        "red 1"
    );
    let out = k.apply_stdin("create", &widget("w2", "{size: 30, color: green}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"The Widget "w2" is invalid"#)
            && err.contains("spec.size: Invalid value: 30: spec.size in body should be less than or equal to 10")
            && err.contains(r#"spec.color: Unsupported value: "green": supported values: "red", "blue""#),
        "{err}"
    );
    let out = k.apply_stdin("create", &widget("w3", "{color: blue}"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.size: Required value"));
    // Unknown fields: refused under kubectl's Strict validation, pruned when not validated.
    let out = k.apply_stdin("create", &widget("w4", "{size: 2, bogus: 1}"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(r#"unknown field "spec.bogus""#),
        "{out:?}"
    );
    let out = k.run_with(
        &k.kubeconfig(),
        &["create", "--validate=false", "-f", "-"],
        Some(&widget("w4", "{size: 2, bogus: 1}")),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        k.ok(&["get", "wg", "w4", "-o", "jsonpath={.spec}"]),
        r#"{"color":"red","size":2}"#
    );

    // The status subresource: status through it only, spec through the main resource only.
    k.ok(&[
        "patch",
        "wg",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]},"spec":{"size":9}}"#,
    ]);
    k.ok(&[
        "patch",
        "wg",
        "w1",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[]},"spec":{"size":4}}"#,
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "wg",
            "w1",
            "-o",
            "jsonpath={.spec.size} {.status.conditions[0].status} {.metadata.generation}"
        ]),
        "4 True 2"
    );
    // No strategic merge for custom resources, as on kube (kubectl patch's default type).
    let err = k.fails(&["patch", "wg", "w1", "-p", r#"{"spec":{"size":5}}"#]);
    assert!(
        err.contains("UnsupportedMediaType") || err.contains("unknown format"),
        "{err}"
    );
    // The printer columns.
    let table = k.ok(&["get", "widgets"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "READY"]);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["w1", "4", "True"]),
        "{table}"
    );
    // kubectl explain reads the schema from /openapi/v3.
    let explain = k.ok(&["explain", "widgets.spec"]);
    assert!(
        explain.contains("KIND:       Widget")
            && explain.contains("size")
            && explain.contains("How big."),
        "{explain}"
    );

    // Over NATS like any other kind.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = client_for(&k._nats.url(), ADMIN.0, ADMIN.1).await;
        let widgets = c.api("example.com", "widgets", Some("default"));
        let got = widgets.get("w1").await.expect("get over NATS");
        assert_eq!(got["spec"]["size"], 4);
        let created = widgets
            .create(
                &serde_json::json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "from-nats"}, "spec": {"size": 1}}),
            )
            .await
            .expect("create over NATS");
        assert_eq!(created["spec"]["color"], "red");
        let bad = widgets
            .create(
                &serde_json::json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "bad"}, "spec": {"size": 0}}),
            )
            .await
            .expect_err("invalid over NATS");
        assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
        let bad = widgets
            .create(
                &serde_json::json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "bad"}, "spec": {"size": 5, "maxSize": 4}}),
            )
            .await
            .expect_err("a CEL rule over NATS");
        assert!(
            bad.message.contains("size must not exceed maxSize"),
            "{bad:?}"
        );
    });

    // x-kubernetes-validations: CEL rules with their messages, transition rules on updates.
    let out = k.apply_stdin("create", &widget("w5", "{size: 5, maxSize: 3}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"The Widget "w5" is invalid: spec: Invalid value: "object": size must not exceed maxSize"#),
        "{err}"
    );
    let out = k.apply_stdin(
        "create",
        &widget("w6", "{size: 5, maxSize: 5, shape: round}"),
    );
    assert!(out.status.success(), "{out:?}");
    let err = k.fails(&[
        "patch",
        "wg",
        "w6",
        "--type=merge",
        "-p",
        r#"{"spec":{"shape":"square"}}"#,
    ]);
    assert!(
        err.contains(r#"spec.shape: Invalid value: "string": shape is immutable"#),
        "{err}"
    );
    k.ok(&[
        "patch",
        "wg",
        "w6",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":4}}"#,
    ]);

    // The scale subresource, on the CRD's paths.
    k.ok(&[
        "patch",
        "wg",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"size":4,"selector":"app=w1"}}"#,
    ]);
    k.ok(&["scale", "wg", "w1", "--replicas=7"]);
    assert_eq!(
        k.ok(&["get", "wg", "w1", "-o", "jsonpath={.spec.size}"]),
        "7"
    );
    let scale: serde_json::Value = serde_json::from_str(&k.ok(&[
        "get",
        "--raw",
        "/apis/example.com/v1/namespaces/default/widgets/w1/scale",
    ]))
    .unwrap();
    assert_eq!(
        (
            &scale["kind"],
            &scale["spec"]["replicas"],
            &scale["status"]["replicas"],
            &scale["status"]["selector"]
        ),
        (
            &serde_json::json!("Scale"),
            &serde_json::json!(7),
            &serde_json::json!(4),
            &serde_json::json!("app=w1")
        )
    );
    // The schema still holds: a scale past the maximum is the object's 422.
    let err = k.fails(&["scale", "wg", "w1", "--replicas=30"]);
    assert!(
        err.contains("spec.size in body should be less than or equal to 10"),
        "{err}"
    );
    k.ok(&["scale", "wg", "w1", "--replicas=8", "--dry-run=server"]);
    assert_eq!(
        k.ok(&["get", "wg", "w1", "-o", "jsonpath={.spec.size}"]),
        "7"
    );

    // Deleting the CRD deletes its objects: a new CRD of the same name starts empty.
    k.ok(&["delete", "crd", "widgets.example.com"]);
    let gone = k.fails(&["get", "--raw", "/apis/example.com/v1"]);
    assert!(
        gone.contains("NotFound") || gone.contains("not find"),
        "{gone}"
    );
    let out = k.apply_stdin("apply", WIDGET_CRD);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(k.ok(&["get", "widgets", "-o", "name"]).trim(), "");

    // A CRD being deleted deletes its objects as a client would, waiting for their
    // finalizers: meanwhile it serves them but takes no new ones.
    let out = k.apply_stdin(
        "create",
        &widget("kept", "{size: 2}").replace(
            "metadata: {name: kept}",
            "metadata: {name: kept, finalizers: [example.com/hold]}",
        ),
    );
    assert!(out.status.success(), "{out:?}");
    k.ok(&["delete", "crd", "widgets.example.com", "--wait=false"]);
    assert!(k
        .ok(&[
            "get",
            "crd",
            "widgets.example.com",
            "-o",
            "jsonpath={.metadata.finalizers}"
        ])
        .contains("customresourcecleanup.apiextensions.k8s.io"));
    k.ok(&[
        "wait",
        "--for=jsonpath={.status.conditions[?(@.type==\"Terminating\")].reason}=InstanceDeletionCheck",
        "crd/widgets.example.com",
        "--timeout=20s",
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "widgets",
            "-o",
            "jsonpath={.items[*].metadata.name} {.items[*].metadata.deletionTimestamp}"
        ])
        .split_whitespace()
        .count(),
        2,
        "kept, being deleted"
    );
    let out = k.apply_stdin("create", &widget("late", "{size: 2}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("create not allowed while custom resource definition is terminating"),
        "{err}"
    );
    k.ok(&[
        "patch",
        "wg",
        "kept",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    k.ok(&[
        "wait",
        "--for=delete",
        "crd/widgets.example.com",
        "--timeout=20s",
    ]);
    assert!(k
        .fails(&["get", "crd", "widgets.example.com"])
        .contains("NotFound"));
    let out = k.apply_stdin("apply", WIDGET_CRD);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(k.ok(&["get", "widgets", "-o", "name"]).trim(), "");

    // Definitions kube refuses.
    let bad_crd = WIDGET_CRD
        .replace("name: widgets.example.com", "name: gadgets.example.com")
        .replace("group: example.com", "group: example");
    let out = k.apply_stdin("create", &bad_crd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metadata.name") && err.contains("spec.group"),
        "{err}"
    );
    let bad_rule = WIDGET_CRD.replace("rule: self == oldSelf", "rule: self == other");
    let out = k.apply_stdin("apply", &bad_rule);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("x-kubernetes-validations[0].rule")
            && err.contains("undeclared reference to 'other'"),
        "{err}"
    );
}

/// `--audit-log-path`: every mutating request, refused ones included, is a JSON line in
/// kube-apiserver's `audit.k8s.io/v1` Event shape; reads are not; the file is 0600.
#[test]
fn the_audit_log_has_a_line_per_mutating_request() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("audit").join("audit.log");
    let k = Kube::start_with(&["--audit-log-path", path.to_str().unwrap()]);
    k.ok(&["create", "configmap", "audited", "--from-literal=a=b"]);
    k.ok(&["get", "configmap", "audited"]);
    k.ok(&["label", "configmap", "audited", "x=y"]);
    k.ok(&["delete", "configmap", "audited"]);
    let out = k.run(&["create", "configmap", "nope", "--as=mallory"]);
    assert!(!out.status.success());
    let events = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while events().len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = events();
    let about = |name: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|e| {
                e["objectRef"]["name"] == name && e["objectRef"]["resource"] == "configmaps"
            })
            .collect()
    };
    let mine = about("audited");
    let verbs: Vec<&str> = mine.iter().map(|e| e["verb"].as_str().unwrap()).collect();
    assert_eq!(
        verbs,
        ["create", "patch", "delete"],
        "reads are not audited: {events:#?}"
    );
    let create = mine[0];
    assert_eq!(create["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(create["kind"], "Event");
    assert_eq!(create["stage"], "ResponseComplete");
    assert_eq!(create["level"], "Metadata");
    assert_eq!(create["user"]["username"], "admin");
    assert_eq!(create["responseStatus"]["code"], 201);
    assert_eq!(create["objectRef"]["namespace"], "default");
    assert!(create["userAgent"].as_str().unwrap().starts_with("kubectl"));
    assert!(create["requestURI"]
        .as_str()
        .unwrap()
        .starts_with("/api/v1/namespaces/default/configmaps"));
    assert!(create["auditID"].as_str().is_some_and(|id| id.len() == 36));
    assert!(create["requestReceivedTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let refused = about("nope");
    assert_eq!(refused.len(), 1, "{events:#?}");
    assert_eq!(refused[0]["responseStatus"]["code"], 403);
    assert_eq!(refused[0]["user"]["username"], "mallory");
    assert_eq!(
        refused[0]["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
