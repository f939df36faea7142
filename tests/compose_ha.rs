//! `deploy/compose/ha.yml` on this machine's Docker Engine (images built here): 3 etcd
//! members, 3 nats-servers with routes, 3 API servers behind HAProxy, 2 schedulers, 2
//! controller-managers, 2 kubelets. With the real kubectl through HAProxy's one address:
//! the objects are in etcd; one etcd member, one nats-server and one API server container
//! are killed in turn and kubectl keeps working (every acknowledged create listed after), the
//! nodes stay Ready (their kubelets reconnect to a live nats-server); the scheduler's and
//! the controller-manager's leaders are killed and their standbys take over (a new
//! Deployment rolls out); `down -v` leaves nothing behind. Runs when Docker is present.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::compose::*;
use common::*;

/// Creates ConfigMap `name` through `kc`, trying again for up to 15 s: while etcd elects a
/// new leader (about a second; kube-apiserver answers the same way meanwhile) a write may
/// be refused with 503, never lost. Returns how many attempts failed.
async fn create_configmap(kc: &Path, name: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut failed = 0;
    loop {
        let out = kubectl(kc, &["create", "configmap", name, "--from-literal=k=v"]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        // A create whose answer was lost may have landed: AlreadyExists is its success.
        if out.status.success() || err.contains("AlreadyExists") || err.contains("already exists") {
            return failed;
        }
        failed += 1;
        assert!(
            Instant::now() < deadline,
            "kubectl create configmap {name} still failing after 15 s: {err}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The names of the ConfigMaps in `default`.
fn configmaps(kc: &Path) -> Vec<String> {
    let out = kubectl(kc, &["get", "configmaps", "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// The Lease's holder, once there is one.
async fn lease_holder(kc: &Path, lease: &str) -> String {
    let kc = kc.to_path_buf();
    wait_for(Duration::from_secs(60), "a lease holder", || {
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
    .await
}

fn docker_kill(id: &str) {
    let out = Command::new("docker").args(["kill", id]).output().unwrap();
    assert!(out.status.success(), "docker kill {id}: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_ha_survives_losing_an_etcd_member_a_nats_server_an_api_server_and_leaders() {
    if !docker_present() {
        skip(
            "compose_ha_survives_losing_an_etcd_member_a_nats_server_an_api_server_and_leaders",
            "no Docker Engine answers `docker info` here",
        );
        return;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tag = format!("skiff:test-ha-{}", std::process::id());
    build_image(&repo, &tag);
    let project = Project {
        cli: compose_cli(),
        name: format!("skiff-test-ha-{}", std::process::id()),
        env: vec![
            ("SKIFF_IMAGE".into(), tag.clone()),
            ("SKIFF_HTTPS_PORT".into(), free_port().to_string()),
            ("SKIFF_NODE_LEASE_DURATION_SECONDS".into(), "8".into()),
            ("SKIFF_NODE_MONITOR_GRACE_PERIOD".into(), "8".into()),
            ("SKIFF_KUBELET_RUNTIME".into(), "process".into()),
        ]
        .into_iter()
        .chain(nats_passwords())
        .collect(),
        repo: repo.clone(),
        file: "deploy/compose/ha.yml",
    };
    // The file scales API servers to 3, schedulers and controller-managers to 2.
    project.run(&["up", "-d", "--scale", "kubelet=2"]);
    for (service, n) in [
        ("apiserver", 3),
        ("scheduler", 2),
        ("controller-manager", 2),
        ("kubelet", 2),
    ] {
        assert_eq!(project.containers(service).len(), n, "{service} replicas");
    }

    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    kubeconfig(&project, "apiserver", &kc).await;
    let text = std::fs::read_to_string(&kc).unwrap();
    let port = project.env[1].1.clone();
    assert!(
        text.contains(&format!("server: https://127.0.0.1:{port}")),
        "kubectl goes through the one published address (HAProxy): {text}"
    );
    let nodes = ready_nodes(&kc, 2).await;

    // The objects are in etcd, laid out as kube-apiserver lays them out.
    let range = project.run(&[
        "exec", "-T", "etcd1", "python3", "-c",
        "import urllib.request as u, json, base64; \
         b = json.dumps({'key': base64.b64encode(b'/registry/namespaces/default').decode()}).encode(); \
         r = json.load(u.urlopen(u.Request('http://127.0.0.1:2379/v3/kv/range', data=b))); \
         print(r.get('count', 0))",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&range.stdout).trim(),
        "1",
        "/registry/namespaces/default in etcd"
    );
    // The nats-servers are one cluster: each has routes to the other two.
    let routez = project.run(&[
        "exec", "-T", "nats1", "python3", "-c",
        "import urllib.request as u, json; print(json.load(u.urlopen('http://127.0.0.1:8222/routez'))['num_routes'])",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&routez.stdout).trim(),
        "2",
        "routes of nats1"
    );
    // A pod's container (a kubelet's) has no way to the store: etcd is on its own network.
    let kubelet = project.containers("kubelet")[0].clone();
    let reach = Command::new("docker")
        .args([
            "exec",
            &kubelet,
            "python3",
            "-c",
            "import socket; socket.create_connection(('etcd1', 2379), timeout=3)",
        ])
        .output()
        .unwrap();
    assert!(
        !reach.status.success(),
        "a kubelet's container reached etcd1:2379"
    );

    // One etcd member, one nats-server, one API server, killed in turn: kubectl through the
    // one address goes on working, and every acknowledged create is there after each.
    let mut created = Vec::new();
    let mut failures = Vec::new();
    let victims = [
        ("etcd2", project.containers("etcd2")[0].clone()),
        ("nats2", project.containers("nats2")[0].clone()),
        ("apiserver", project.containers("apiserver")[0].clone()),
    ];
    for (service, id) in &victims {
        docker_kill(id);
        let mut failed = 0;
        for i in 0..10 {
            let name = format!("after-{service}-{i}");
            failed += create_configmap(&kc, &name).await;
            created.push(name);
        }
        failures.push((service.to_string(), failed));
        let listed = configmaps(&kc);
        let missing: Vec<&String> = created.iter().filter(|n| !listed.contains(n)).collect();
        assert!(
            missing.is_empty(),
            "after killing {service}: lost {missing:?}"
        );
    }
    eprintln!("failed attempts while a member was gone: {failures:?}");
    // Past the node grace period: the kubelets that were on nats2 reconnected elsewhere.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let still = ready_nodes(&kc, 2).await;
    assert_eq!(
        {
            let mut s = still.clone();
            s.sort();
            s
        },
        {
            let mut n = nodes.clone();
            n.sort();
            n
        }
    );

    // The scheduler's and the controller-manager's leaders die: their standbys take the
    // Leases and a new Deployment rolls out.
    let mut old = Vec::new();
    for (service, lease) in [
        ("scheduler", "skiff-scheduler"),
        ("controller-manager", "skiff-controller-manager"),
    ] {
        let holder = lease_holder(&kc, lease).await;
        let ids = project.containers(service);
        let leader = ids
            .iter()
            .find(|id| holder.starts_with(&id[..12]))
            .unwrap_or_else(|| panic!("{lease} held by {holder}, replicas {ids:?}"))
            .clone();
        docker_kill(&leader);
        old.push((lease, holder));
    }
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
    for (lease, before) in old {
        let now = lease_holder(&kc, lease).await;
        assert_ne!(now, before, "{lease} taken over");
    }

    project.run(&["down", "-v", "--timeout", "5"]);
    assert_eq!(project.leftovers(), Vec::<String>::new());
    let _ = Command::new("docker").args(["rmi", &tag]).output();
}
