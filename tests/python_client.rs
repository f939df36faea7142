//! The official Python `kubernetes` client (installed from PyPI by the test command into
//! `target/pyenv`) works against Skiff unmodified: namespaces and pods created, listed,
//! watched, patched and deleted with client-side validation on.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn python_kubernetes_client_round_trip() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _api = ApiProcess::start(
        &nats.url(),
        dir.path(),
        &["--https-bind", &format!("127.0.0.1:{port}")],
    );
    let kubeconfig = dir.path().join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        assert!(Instant::now() < deadline, "no kubeconfig written");
        std::thread::sleep(Duration::from_millis(50));
    }
    let python = python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_check.py");
    let out = Command::new(&python)
        .arg(script)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("python client: ok"),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
