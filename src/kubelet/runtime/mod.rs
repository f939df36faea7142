//! Container runtimes: what the kubelet asks to run a pod's containers. The kubelet owns the
//! pod lifecycle (restart policy, back-off, probes, status); a runtime only starts, stops and
//! reports on containers.
//!
//! - `process`: each container's command runs as a real OS process on the node.
//! - `fake`: containers "run" without processes, for simulating thousands of nodes.
//! - `docker`: each container is a Docker container, through the Engine API's unix socket.

pub mod docker;
pub mod fake;
pub mod process;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

/// Identifies one container of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod uid (a re-created pod with the same name is another pod).
    pub uid: String,
    /// Container name.
    pub container: String,
}

impl ContainerId {
    /// `namespace/pod/container`, for logs and errors.
    pub fn label(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.pod, self.container)
    }
}

/// What to run: the parts of a Kubernetes container the runtimes use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The image reference (the process runtime records it; the docker runtime pulls it).
    pub image: String,
    /// `command` (the entrypoint); empty means the image's default.
    pub command: Vec<String>,
    /// `args`.
    pub args: Vec<String>,
    /// Environment variables, resolved (`value` only; `valueFrom` is resolved by the kubelet).
    pub env: BTreeMap<String, String>,
    /// `workingDir`.
    pub working_dir: Option<String>,
    /// The pod's volumes this container mounts (`kubelet::volumes` has made them).
    pub mounts: Vec<Mount>,
}

/// One volume mount: a node path (a directory the kubelet filled, or a `hostPath`) shown
/// at `path` inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// On the node.
    pub source: PathBuf,
    /// The container's `mountPath`.
    pub path: String,
    /// `readOnly`.
    pub read_only: bool,
}

/// The state of a container as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Started and not yet exited.
    Running {
        /// When it started.
        started_at: SystemTime,
        /// OS process id, where there is one.
        pid: Option<u32>,
    },
    /// Exited.
    Exited {
        /// Exit code (128 + signal number when killed by a signal).
        exit_code: i32,
        /// Signal that ended it, if any.
        signal: Option<i32>,
        /// When it started.
        started_at: SystemTime,
        /// When it ended.
        finished_at: SystemTime,
        /// "Completed" for exit 0, "Error" otherwise, "OOMKilled"… as Kubernetes words it.
        reason: String,
    },
    /// The runtime does not know it (never started, or removed).
    Unknown,
}

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The command could not be started (not found, not executable, bad working dir…).
    #[error("starting container {container}: {why}")]
    Start {
        /// Which container.
        container: String,
        /// What failed.
        why: String,
    },
    /// The image is not available (docker runtime): ErrImagePull.
    #[error("image {image}: {why}")]
    Image {
        /// The image.
        image: String,
        /// What failed.
        why: String,
    },
    /// Anything else (I/O on log files, the runtime's own daemon…).
    #[error("{0}")]
    Other(String),
}

impl RuntimeError {
    /// A start failure of container `id`.
    pub fn start(id: &ContainerId, why: impl Into<String>) -> Self {
        RuntimeError::Start {
            container: id.label(),
            why: why.into(),
        }
    }
}

/// Stops the containers `ids` of `runtime` concurrently and returns once all are stopped
/// (kubelet shutdown); failures are logged.
pub async fn stop_each<R: ContainerRuntime + Clone>(
    runtime: &R,
    ids: Vec<ContainerId>,
    grace: std::time::Duration,
) {
    let mut stops = tokio::task::JoinSet::new();
    for id in ids {
        let runtime = runtime.clone();
        stops.spawn(async move {
            let result = runtime.stop(&id, grace).await;
            (id, result)
        });
    }
    while let Some(done) = stops.join_next().await {
        match done {
            Ok((_, Ok(()))) => {}
            Ok((id, Err(e))) => {
                tracing::warn!(container = %id.label(), error = %e, "stopping container on shutdown")
            }
            Err(e) => tracing::warn!(error = %e, "stop task failed on shutdown"),
        }
    }
}

/// A container runtime. Implementations are cheap to clone handles; every method may be
/// called concurrently for different containers.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// The runtime's name and version, for `nodeInfo.containerRuntimeVersion` (e.g.
    /// `skiff-process://0.1.0`).
    fn version(&self) -> String;

    /// Starts a container (a new instance each call: restarts call it again). Its stdout and
    /// stderr go to the container's log.
    async fn start(&self, id: &ContainerId, spec: &ContainerSpec) -> Result<(), RuntimeError>;

    /// Stops a container: SIGTERM (or the runtime's equivalent), then after `grace` a SIGKILL;
    /// returns once it has exited and nothing of it (no child process) is left running.
    async fn stop(&self, id: &ContainerId, grace: std::time::Duration) -> Result<(), RuntimeError>;

    /// The container's current state.
    async fn state(&self, id: &ContainerId) -> ContainerState;

    /// Runs a command inside the container's environment (exec probes): (exit code, output).
    async fn exec(
        &self,
        id: &ContainerId,
        command: &[String],
    ) -> Result<(i32, String), RuntimeError>;

    /// The container's log: the last `tail` lines (all when None), of the previous instance
    /// when `previous`.
    async fn logs(
        &self,
        id: &ContainerId,
        tail: Option<usize>,
        previous: bool,
    ) -> Result<String, RuntimeError>;

    /// Forgets a stopped container and its logs (pod deleted).
    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError>;

    /// The IP address containers of this node's pods are reachable on (process runtime: the
    /// node's own address, pods share the host network).
    fn pod_ip(&self) -> String;

    /// Where the runtime keeps its files, if anywhere.
    fn root(&self) -> Option<PathBuf>;
}
