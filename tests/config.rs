//! One configuration tree for every component, run as the real binary: a file section is
//! overridden by its `SKIFF_*` variable, which a flag overrides; `--print-config` prints the
//! sections a component runs with (credentials never); a bad value or an unknown key exits
//! 64; every `SKIFF_*` name in the sources is a constant of `config::env`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::skiff_bin;

fn skiff(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(skiff_bin());
    cmd.args(args).current_dir(dir);
    // Only what the test sets: the harness may run with SKIFF_* of its own.
    for (k, _) in std::env::vars() {
        if k.starts_with("SKIFF_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("skiff runs")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

const FILE: &str = r#"
[nats]
url = "nats://file:4222"

[apiserver]
store = "memory"
nats_password = "from-the-file"

[etcd]
compaction_interval_seconds = 77

[scheduler]
metrics_bind = "127.0.0.1:1"

[controller_manager]
node_monitor_grace_period = 11
pod_eviction_timeout = 12

[kubelet]
node_name = "from-file"
node_lease_duration_seconds = 13
runtime = "fake"
"#;

#[test]
fn every_component_reads_its_section_under_environment_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("skiff.toml");
    std::fs::write(&file, FILE).unwrap();
    let config = file.to_str().unwrap();

    // The file alone.
    let k = stdout(&skiff(
        dir.path(),
        &["kubelet", "--config", config, "--print-config"],
        &[],
    ));
    assert!(k.contains("[kubelet]") && k.contains("[nats]"), "{k}");
    assert!(k.contains("node_name = \"from-file\""), "{k}");
    assert!(k.contains("node_lease_duration_seconds = 13"), "{k}");
    assert!(k.contains("url = \"nats://file:4222\""), "{k}");
    assert!(!k.contains("[apiserver]"), "only its own sections: {k}");

    // The variable over the file, the flag over the variable.
    let env = [
        ("SKIFF_NODE_LEASE_DURATION_SECONDS", "22"),
        ("SKIFF_NATS_URL", "nats://env:4222"),
    ];
    let k = stdout(&skiff(
        dir.path(),
        &["kubelet", "--config", config, "--print-config"],
        &env,
    ));
    assert!(k.contains("node_lease_duration_seconds = 22"), "{k}");
    assert!(k.contains("url = \"nats://env:4222\""), "{k}");
    let k = stdout(&skiff(
        dir.path(),
        &[
            "kubelet",
            "--config",
            config,
            "--print-config",
            "--node-lease-duration-seconds",
            "33",
            "--nats-url",
            "nats://flag:4222",
        ],
        &env,
    ));
    assert!(k.contains("node_lease_duration_seconds = 33"), "{k}");
    assert!(k.contains("url = \"nats://flag:4222\""), "{k}");

    // SKIFF_CONFIG names the file as --config does.
    let c = stdout(&skiff(
        dir.path(),
        &["controller-manager", "--print-config"],
        &[
            ("SKIFF_CONFIG", config),
            ("SKIFF_POD_EVICTION_TIMEOUT", "99"),
        ],
    ));
    assert!(c.contains("[controller_manager]"), "{c}");
    assert!(c.contains("node_monitor_grace_period = 11"), "{c}");
    assert!(c.contains("pod_eviction_timeout = 99"), "{c}");
    let s = stdout(&skiff(
        dir.path(),
        &["scheduler", "--config", config, "--print-config"],
        &[("SKIFF_TOKEN", "a-secret-token")],
    ));
    assert!(s.contains("metrics_bind = \"127.0.0.1:1\""), "{s}");
    assert!(!s.contains("a-secret-token"), "a token printed: {s}");

    // The API server: [nats], [apiserver] and [etcd]; its NATS password never printed.
    let a = stdout(&skiff(
        dir.path(),
        &["apiserver", "--config", config, "--print-config"],
        &[],
    ));
    for section in ["[nats]", "[apiserver]", "[etcd]"] {
        assert!(a.contains(section), "{section}: {a}");
    }
    assert!(a.contains("compaction_interval_seconds = 77"), "{a}");
    assert!(a.contains("url = \"nats://file:4222\""), "{a}");
    assert!(!a.contains("from-the-file"), "the password printed: {a}");
    assert!(!a.contains("[kubelet]"), "{a}");
}

#[test]
fn a_bad_value_or_an_unknown_key_exits_64_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("skiff.toml");
    std::fs::write(&file, "[scheduler]\nmetrics_bnd = \"x\"\n").unwrap();
    let out = skiff(
        dir.path(),
        &[
            "scheduler",
            "--config",
            file.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("metrics_bnd"),
        "{out:?}"
    );
    let out = skiff(
        dir.path(),
        &["kubelet", "--print-config"],
        &[("SKIFF_RUNTIME", "bogus")],
    );
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("runtime"),
        "{out:?}"
    );
    let out = skiff(
        dir.path(),
        &["apiserver", "--print-config", "--store", "etcd"],
        &[],
    );
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("etcd.servers"),
        "{out:?}"
    );
}

/// Every `SKIFF_*` name in the sources is spelled once, in `src/config/env.rs`.
#[test]
fn every_environment_variable_is_a_named_constant_in_one_place() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stray = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path.ends_with("config/env.rs")
            {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, line) in text.lines().enumerate() {
                    if line.contains("\"SKIFF_") {
                        stray.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        stray.is_empty(),
        "SKIFF_ names outside config::env: {stray:#?}"
    );
}
