//! `docker compose up` on this machine's Docker Engine, with images built here (no registry:
//! `scripts/image` packs this build's binary onto a debootstrapped Debian base). Then, with the
//! real kubectl from the host: three nodes Ready, a Deployment rolled out, `kubectl logs`;
//! `--scale kubelet=4` adds a fourth node; stopping a kubelet container turns its node
//! NotReady; `down -v` leaves nothing behind. Runs when Docker is present.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::compose::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_up_scales_kubelets_runs_a_deployment_and_comes_down_clean() {
    if !docker_present() {
        skip(
            "compose_up_scales_kubelets_runs_a_deployment_and_comes_down_clean",
            "no Docker Engine answers `docker info` here",
        );
        return;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tag = format!("skiff:test-{}", std::process::id());
    build_image(&repo, &tag);
    let project = Project {
        cli: compose_cli(),
        name: format!("skiff-test-{}", std::process::id()),
        env: vec![
            ("SKIFF_IMAGE".into(), tag.clone()),
            ("SKIFF_HTTPS_PORT".into(), free_port().to_string()),
            // Leases renewed every 2 s, NotReady after 8 s without one.
            ("SKIFF_NODE_LEASE_DURATION_SECONDS".into(), "8".into()),
            ("SKIFF_NODE_MONITOR_GRACE_PERIOD".into(), "8".into()),
            // The kubelets run processes inside their containers here.
            ("SKIFF_KUBELET_RUNTIME".into(), "process".into()),
        ]
        .into_iter()
        // The compose file has no default passwords: each test run has its own.
        .chain(nats_passwords())
        .collect(),
        repo: repo.clone(),
        file: "docker-compose.yml",
    };
    project.run(&[
        "up",
        "-d",
        "--scale",
        "kubelet=3",
        "--scale",
        "scheduler=2",
        "--scale",
        "controller-manager=2",
    ]);

    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    kubeconfig(&project, "apiserver", &kc).await;

    let three = ready_nodes(&kc, 3).await;
    assert!(
        three.iter().all(|n| n.len() == 12),
        "node names are container host names: {three:?}"
    );

    // Each kubelet is connected to NATS as its own node's user (issued at bootstrap), which
    // nats-server itself reports.
    let connz = project.run(&[
        "exec", "-T", "nats", "python3", "-c",
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8222/connz?auth=1&limit=1000').read().decode())",
    ]);
    let connz: Value = serde_json::from_slice(&connz.stdout).expect("connz JSON");
    let users: Vec<&str> = connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["authorized_user"].as_str())
        .collect();
    for node in &three {
        assert!(
            users.contains(&format!("system:node:{node}").as_str()),
            "{node} connected as its own user: {users:?}"
        );
    }
    assert!(
        !users.contains(&"kubelet"),
        "no shared kubelet user: {users:?}"
    );
    // Every link is TLS (nats-run's CA, which every service verifies the server with).
    for c in connz["connections"].as_array().unwrap() {
        assert!(
            c["tls_version"].as_str().is_some_and(|v| !v.is_empty()),
            "a connection without TLS: {c}"
        );
    }

    // Two schedulers and two controller-managers: each Lease is held by one of its replicas,
    // and exactly one replica of each says it leads.
    for (service, lease) in [
        ("scheduler", "skiff-scheduler"),
        ("controller-manager", "skiff-controller-manager"),
    ] {
        let ids = project.run(&["ps", "-q", service]);
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
            .lines()
            .map(|l| l.chars().take(12).collect())
            .collect();
        assert_eq!(ids.len(), 2, "{service}: {ids:?}");
        let holder = wait_for(Duration::from_secs(30), "a lease holder", || {
            let kc = kc.clone();
            async move {
                let out = kubectl(
                    &kc,
                    &[
                        "get",
                        "lease",
                        "-n",
                        "kube-system",
                        lease,
                        "-o",
                        "jsonpath={.spec.holderIdentity}",
                    ],
                );
                let h = String::from_utf8_lossy(&out.stdout).to_string();
                (!h.is_empty()).then_some(h)
            }
        })
        .await;
        assert!(
            ids.iter().any(|id| holder.starts_with(id.as_str())),
            "{lease} held by {holder}, replicas {ids:?}"
        );
        let logs = project.run(&["logs", "--no-color", service]);
        let leading = String::from_utf8_lossy(&logs.stdout)
            .lines()
            .filter(|l| l.contains("became leader"))
            .count();
        assert_eq!(leading, 1, "{service}: one leader");
    }

    // A Deployment rolls out and serves; its logs come back through kubectl.
    let apply = kubectl(
        &kc,
        &[
            "apply",
            "-f",
            repo.join("deploy/examples/deployment.yaml")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(apply.status.success(), "{apply:?}");
    let rollout = kubectl(
        &kc,
        &["rollout", "status", "deployment/web", "--timeout=120s"],
    );
    assert!(
        rollout.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&rollout.stderr),
        project.logs()
    );
    let logs = wait_for(Duration::from_secs(30), "kubectl logs", || {
        let kc = kc.clone();
        async move {
            let out = kubectl(&kc, &["logs", "deployment/web"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains("Serving HTTP on").then_some(text)
        }
    })
    .await;
    assert!(logs.contains("port 8080"), "{logs}");

    // What a pod (a process in its kubelet's container, as root) can read — every file
    // under the credentials mount and every process's environment — holds nothing that may
    // list Secrets: only the node-bootstrap token, which is a node at most.
    let kubelet_id = String::from_utf8_lossy(&project.run(&["ps", "-q", "kubelet"]).stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let loot = Command::new("docker")
        .args(["exec", &kubelet_id, "sh", "-c"])
        .arg("find / -xdev -path /proc -prune -o -type f -name '*.token' -print -exec cat {} \\; 2>/dev/null; \
              ls -R /var/lib/skiff-credentials; \
              for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; echo; done 2>/dev/null")
        .output()
        .unwrap();
    let loot = String::from_utf8_lossy(&loot.stdout).to_string();
    assert!(
        loot.contains("kubelet.token"),
        "the kubelet's own token is there: {loot}"
    );
    for other in ["scheduler.token", "controller-manager.token"] {
        assert!(
            !loot.contains(other),
            "{other} within a pod's reach: {loot}"
        );
    }
    let candidates: std::collections::BTreeSet<String> = loot
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '.' && c != '_')
        .filter(|w| w.len() >= 16)
        .map(String::from)
        .collect();
    let mut tried = 0;
    for token in &candidates {
        tried += 1;
        let out = kubectl(&kc, &["--token", token, "get", "secrets", "-A"]);
        assert!(
            !out.status.success(),
            "a string a pod can read lists every Secret: {token}"
        );
    }
    assert!(tried > 0, "candidates were tried: {loot}");

    // One more kubelet replica is one more node.
    project.run(&[
        "up",
        "-d",
        "--no-recreate",
        "--scale",
        "kubelet=4",
        "--scale",
        "scheduler=2",
        "--scale",
        "controller-manager=2",
    ]);
    let four = ready_nodes(&kc, 4).await;

    // Stopping a kubelet container: its node turns NotReady after the grace period.
    let ids = project.run(&["ps", "-q", "kubelet"]);
    let first = String::from_utf8_lossy(&ids.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let stopped_node: String = first.chars().take(12).collect();
    assert!(four.contains(&stopped_node), "{stopped_node} in {four:?}");
    let stop = Command::new("docker")
        .args(["stop", &first])
        .output()
        .unwrap();
    assert!(stop.status.success(), "{stop:?}");
    let kc2 = kc.clone();
    wait_for(
        Duration::from_secs(60),
        "the stopped kubelet's node NotReady",
        || {
            let (kc, node) = (kc2.clone(), stopped_node.clone());
            async move {
                nodes(&kc)
                    .into_iter()
                    .any(|(n, r)| n == node && r != "True")
                    .then_some(())
            }
        },
    )
    .await;
    let table = kubectl(&kc, &["get", "node", &stopped_node]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("NotReady"),
        "{table:?}"
    );
    assert_eq!(
        nodes(&kc).iter().filter(|(_, r)| r == "True").count(),
        3,
        "the other three stay Ready"
    );

    // down -v leaves no container, volume or network of the project.
    project.run(&["down", "-v", "--timeout", "5"]);
    assert_eq!(project.leftovers(), Vec::<String>::new());
    let _ = Command::new("docker").args(["rmi", &tag]).output();
}
