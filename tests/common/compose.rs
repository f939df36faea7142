//! docker compose projects for the tests that run Skiff's compose files on this machine's
//! Docker Engine: the CLI there is (v2 or v1), a project taken down with its volumes on drop,
//! the image built here, and kubectl against it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{skiff_bin, wait_for};

/// Builds `tag` from this build's skiff binary (`scripts/image`: no registry needed).
pub fn build_image(repo: &Path, tag: &str) {
    let image = Command::new(repo.join("scripts/image"))
        .arg(skiff_bin())
        .env("SKIFF_IMAGE", tag)
        .status()
        .unwrap();
    assert!(image.success(), "scripts/image");
}

/// Fresh NATS passwords for a project (the compose files have no defaults). nats-server reads
/// `$VARIABLE` values as config values: a password must begin with a letter to be read as a
/// string (8e3… is a number).
pub fn nats_passwords() -> Vec<(String, String)> {
    [
        "APISERVER",
        "SCHEDULER",
        "CONTROLLER_MANAGER",
        "KUBELET_BOOTSTRAP",
        "TRACE",
        "ROUTE",
    ]
    .iter()
    .map(|c| {
        (
            format!("SKIFF_NATS_{c}_PASSWORD"),
            format!("pw{}", uuid::Uuid::new_v4().simple()),
        )
    })
    .collect()
}

/// A kubeconfig from the project's API server (`skiff kubeconfig` in its container).
pub async fn kubeconfig(project: &Project, service: &str, to: &Path) {
    let text = wait_for(
        Duration::from_secs(60),
        "a kubeconfig from the apiserver",
        || async move {
            let out = project.try_run(&["exec", "-T", service, "skiff", "kubeconfig"]);
            out.status.success().then_some(out.stdout)
        },
    )
    .await;
    std::fs::write(to, text).unwrap();
}

/// `docker compose` (v2) when the plugin is there, else `docker-compose` (v1).
pub fn compose_cli() -> Vec<String> {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if v2 {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

/// One compose project, taken down (with its volumes) on drop.
pub struct Project {
    pub cli: Vec<String>,
    pub name: String,
    pub env: Vec<(String, String)>,
    pub repo: PathBuf,
    /// The compose file, relative to `repo`.
    pub file: &'static str,
}

impl Project {
    /// Runs compose with `args`, asserting that it succeeds.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.try_run(args);
        assert!(
            out.status.success(),
            "compose {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs compose with `args`.
    pub fn try_run(&self, args: &[&str]) -> Output {
        Command::new(&self.cli[0])
            .args(&self.cli[1..])
            .args(["-p", &self.name, "-f"])
            .arg(self.repo.join(self.file))
            .args(args)
            .current_dir(&self.repo)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("compose runs")
    }

    /// The containers of `service`, by id.
    pub fn containers(&self, service: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.run(&["ps", "-q", service]).stdout)
            .lines()
            .map(String::from)
            .collect()
    }

    /// The last lines of every service's log.
    pub fn logs(&self) -> String {
        let out = Command::new(&self.cli[0])
            .args(&self.cli[1..])
            .args(["-p", &self.name, "-f"])
            .arg(self.repo.join(self.file))
            .args(["logs", "--tail=30"])
            .current_dir(&self.repo)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    }

    pub fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.name);
        let mut left = Vec::new();
        for what in [
            vec!["ps", "-aq"],
            vec!["volume", "ls", "-q"],
            vec!["network", "ls", "-q"],
        ] {
            let out = Command::new("docker")
                .args(&what)
                .args(["--filter", &label])
                .output()
                .unwrap();
            left.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(|l| format!("{}: {l}", what[0])),
            );
        }
        left
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = Command::new(&self.cli[0])
            .args(&self.cli[1..])
            .args(["-p", &self.name, "-f"])
            .arg(self.repo.join(self.file))
            .args(["down", "-v", "--timeout", "5"])
            .current_dir(&self.repo)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output();
    }
}

pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs")
}

/// Node name → Ready condition status.
pub fn nodes(kubeconfig: &Path) -> Vec<(String, String)> {
    let out = kubectl(kubeconfig, &["get", "nodes", "-o", "json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|n| {
                    let ready = n["status"]["conditions"]
                        .as_array()
                        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                        .map(|c| c["status"].as_str().unwrap_or("").to_string())
                        .unwrap_or_default();
                    (
                        n["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        ready,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub async fn ready_nodes(kubeconfig: &Path, n: usize) -> Vec<String> {
    let kc = kubeconfig.to_path_buf();
    wait_for(Duration::from_secs(90), &format!("{n} nodes Ready"), || {
        let kc = kc.clone();
        async move {
            let ready: Vec<String> = nodes(&kc)
                .into_iter()
                .filter(|(_, r)| r == "True")
                .map(|(n, _)| n)
                .collect();
            (ready.len() == n).then_some(ready)
        }
    })
    .await
}
