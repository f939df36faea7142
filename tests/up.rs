//! `skiff up --nodes 3` as a user runs it, driven by the real kubectl: nodes Ready, a
//! Deployment of real `python3 -m http.server` processes rolled out, spread, served, logged,
//! scaled, rolled back and deleted; a crashing pod backs off; a pod too big stays Pending.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/examples")
        .join(name)
        .display()
        .to_string()
}

fn http_get(ip: &str, port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().ok()?,
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn skiff_up_runs_a_deployment_of_real_processes() {
    let up = SkiffUp::start(3);

    // What holds secrets is its owner's only: the data dir, the store (Secrets as they
    // are), the CA key, the tokens and the kubeconfig.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(up.dir.path().join(p))
                .unwrap_or_else(|e| panic!("{p}: {e}"))
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(""), 0o700, "the data dir");
        assert_eq!(mode("pki"), 0o700);
        for f in [
            "store.redb",
            "wal.log",
            "tokens.csv",
            "kubeconfig",
            "pki/ca.key",
            "pki/server.key",
        ] {
            assert_eq!(mode(f), 0o600, "{f}");
        }
    }

    up.ok(&["apply", "-f", &example("deployment.yaml")]);
    up.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    let ips = up.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.status.podIP} {.spec.nodeName}{\"\\n\"}{end}",
    ]);
    let rows: Vec<(&str, &str)> = ips.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(rows.len(), 3, "{ips}");
    let nodes: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.1).collect();
    assert!(nodes.len() >= 2, "spread over the nodes: {ips}");
    let mut served = 0;
    for (ip, _) in &rows {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http_get(ip, 8080).is_some_and(|b| b.starts_with("HTTP/1.0 200")) {
                served += 1;
                break;
            }
            assert!(Instant::now() < deadline, "{ip}:8080 never answered");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert_eq!(served, 3);
    let pod = up.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    up.eventually("the request in the pod's log", 20, |u| {
        String::from_utf8_lossy(&u.run(&["logs", &pod]).stdout).contains("\"GET / HTTP/1.0\" 200")
    });

    // logs -f streams what the process writes next.
    let follows = |u: &SkiffUp| {
        let samples = skiff::metrics::parse(&u.ok(&["get", "--raw", "/metrics"])).unwrap();
        skiff::metrics::sample_value(&samples, "kubelet_log_follows_open", &[])
    };
    assert_ne!(follows(&up), Some(1.0), "no followed log before logs -f");
    let mut follow = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(up.kubeconfig())
        .arg("--cache-dir")
        .arg(up.cache.path())
        .args(["logs", "-f", &pod])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut streamed = Lines::new(follow.stdout.take().unwrap());
    let request_line = |l: &str| l.contains("\"GET / HTTP/1.0\" 200");
    let before = up
        .ok(&["logs", &pod])
        .lines()
        .filter(|l| request_line(l))
        .count();
    assert!(before >= 1, "the earlier request is in the log");
    streamed.wait_until("the pod's log so far", Duration::from_secs(20), |seen| {
        seen.iter().filter(|l| request_line(l)).count() >= before
    });
    up.eventually("the kubelet serves the followed log", 20, |u| {
        follows(u) == Some(1.0)
    });
    let pod_ip = up.ok(&["get", "pod", &pod, "-o", "jsonpath={.status.podIP}"]);
    assert!(http_get(&pod_ip, 8080).is_some());
    streamed.wait_until(
        "the new request streamed",
        Duration::from_secs(20),
        |seen| seen.iter().filter(|l| request_line(l)).count() > before,
    );
    let _ = follow.kill();
    let _ = follow.wait();
    // With the client gone, the kubelet stops streaming (it finds nobody listening).
    up.eventually("the kubelet stops following the log", 20, |u| {
        follows(u) == Some(0.0)
    });

    up.ok(&["scale", "deployment/web", "--replicas=6"]);
    up.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert_eq!(
        up.ok(&["get", "pods", "-l", "app=web", "--no-headers"])
            .lines()
            .filter(|l| l.contains("Running"))
            .count(),
        6
    );

    // A new template rolls out; undo returns to the previous one.
    up.ok(&["set", "image", "deployment/web", "web=python:3.12"]);
    up.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert_eq!(
        up.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "python:3.12"
    );
    up.ok(&["rollout", "undo", "deployment/web"]);
    up.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert_eq!(
        up.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "python:3.11"
    );
    // The Deployment carries its current revision (the undo made revision 1's template
    // revision 3), as `kubectl rollout undo` on an unannotated Deployment needs.
    up.eventually("the Deployment's revision annotation", 20, |u| {
        u.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
        ]) == "3"
    });
    // A Deployment made by `kubectl create deployment` has no annotations of its own; its
    // undo replaces /metadata/annotations, which must therefore exist.
    up.ok(&[
        "create",
        "deployment",
        "plain",
        "--image=python:3.11",
        "--",
        "python3",
        "-m",
        "http.server",
        "8081",
    ]);
    up.ok(&["rollout", "status", "deployment/plain", "--timeout=90s"]);
    up.ok(&["set", "image", "deployment/plain", "python=python:3.12"]);
    up.ok(&["rollout", "status", "deployment/plain", "--timeout=90s"]);
    up.ok(&["rollout", "undo", "deployment/plain"]);
    up.ok(&["rollout", "status", "deployment/plain", "--timeout=90s"]);
    assert_eq!(
        up.ok(&[
            "get",
            "deploy",
            "plain",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "python:3.11"
    );
    up.ok(&["delete", "deployment", "plain"]);

    // A crashing container backs off; a pod too big stays Pending and says why.
    up.ok(&["apply", "-f", &example("crashing-pod.yaml")]);
    up.ok(&["apply", "-f", &example("unschedulable-pod.yaml")]);
    up.eventually("CrashLoopBackOff with restarts", 60, |u| {
        let row =
            String::from_utf8_lossy(&u.run(&["get", "pod", "crasher", "--no-headers"]).stdout)
                .to_string();
        row.contains("CrashLoopBackOff")
            && row
                .split_whitespace()
                .nth(3)
                .and_then(|r| r.parse::<u32>().ok())
                .unwrap_or(0)
                >= 1
    });
    up.eventually("FailedScheduling", 30, |u| {
        String::from_utf8_lossy(&u.run(&["describe", "pod", "too-big"]).stdout)
            .contains("Insufficient cpu")
    });
    assert!(up
        .ok(&["get", "pod", "too-big", "--no-headers"])
        .contains("Pending"));

    // Deleting the Deployment removes its ReplicaSets, pods and processes: first the
    // processes serving each pod's address, which must be running now.
    let servers = |ips: &str| -> Vec<String> {
        ips.split_whitespace()
            .flat_map(|ip| {
                // The runtime starts python3 by its full path; the line ends with the address.
                let pattern = format!("-m http\\.server 8080 --bind {}$", ip.replace('.', "\\."));
                pgrep(&["-f"], &pattern)
            })
            .collect()
    };
    let web_ips = |u: &SkiffUp| {
        u.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ])
    };
    up.eventually("one server process for each of the 6 pods", 30, |u| {
        let ips = web_ips(u);
        ips.split_whitespace().count() == 6 && servers(&ips).len() == 6
    });
    let web_ips = web_ips(&up);
    up.ok(&["delete", "deployment", "web"]);
    up.eventually("pods gone", 60, |u| {
        u.ok(&["get", "pods", "-l", "app=web", "--no-headers"])
            .trim()
            .is_empty()
    });
    let rs = up.ok(&["get", "rs", "--no-headers"]);
    assert!(rs.trim().is_empty(), "ReplicaSets left: {rs}");
    let left = servers(&web_ips);
    assert!(left.is_empty(), "no server process left: {left:?}");
}

/// Pids of nats-server processes serving `port` (skiff up adds `-c <data-dir>/nats-server.conf`).
fn nats_servers_on(port: &str) -> Vec<String> {
    pgrep(
        &["-f"],
        &format!("^nats-server -a 127.0.0.1 -p {port}( -c [^ ]+)?$"),
    )
}

#[test]
fn skiff_up_restarts_its_nats_server_and_takes_it_along_when_killed() {
    let mut up = SkiffUp::start(1);
    let port = up.nats_url.rsplit(':').next().unwrap().to_string();
    let first = nats_servers_on(&port);
    assert_eq!(first.len(), 1, "skiff up's nats-server on {port}");
    // `skiff trace` finds that bus by itself, from the URL skiff up wrote (it is not 4222).
    let written = std::fs::read_to_string(up.dir.path().join("nats-url")).unwrap();
    assert_eq!(written.trim(), up.nats_url);
    let mut follow = Command::new(skiff_bin())
        .args([
            "trace",
            "--follow",
            "-o",
            "json",
            "--duration",
            "30",
            "--data-dir",
        ])
        .arg(up.dir.path())
        .env_remove("SKIFF_NATS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Lines::new(follow.stdout.take().unwrap()).wait_for_line(
        "a span from skiff trace without --nats-url",
        Duration::from_secs(20),
        |l| l.starts_with('{'),
    );
    let _ = follow.kill();
    let _ = follow.wait();

    // Its nats-server dies: skiff up starts another, and every component reconnects (a pod
    // needs the scheduler, the controllers' informers aside, and the kubelet, all over NATS).
    assert!(Command::new("kill")
        .args(["-9", &first[0]])
        .status()
        .unwrap()
        .success());
    up.eventually("a new nats-server", 30, |_| {
        let now = nats_servers_on(&port);
        now.len() == 1 && now != first
    });
    up.ok(&[
        "run",
        "after-restart",
        "--image=busybox",
        "--",
        "sleep",
        "300",
    ]);
    up.eventually("the pod Running after the restart", 60, |u| {
        u.ok(&[
            "get",
            "pod",
            "after-restart",
            "-o",
            "jsonpath={.status.phase}",
        ]) == "Running"
    });
    up.ok(&["delete", "pod", "after-restart", "--grace-period=1"]);

    // kill -9 of skiff up itself: its nats-server goes too and frees the port.
    let _ = up.child.kill();
    let _ = up.child.wait();
    up.eventually("no nats-server left on the port", 10, |_| {
        nats_servers_on(&port).is_empty()
    });
    assert!(std::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap())).is_ok());
}

#[test]
fn skiff_up_refuses_a_nats_port_that_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(skiff_bin())
        .args(["up", "--nats-port", &port.to_string()])
        .args(["--https-bind", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path())
        .env("SKIFF_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {err}");
    assert!(
        err.contains(&format!("port {port} is already in use")),
        "{err}"
    );
    assert!(!dir.path().join("kubeconfig").exists(), "nothing started");
}
