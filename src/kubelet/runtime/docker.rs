//! The docker runtime: each started instance of a container is a Docker container, created
//! and driven through the Docker Engine API on the daemon's unix socket. This file owns the
//! minimal HTTP/1.1 client for that socket (one connection per request, nothing beyond
//! tokio), the Docker containers it creates — named
//! `skiff_<namespace>_<pod>_<container>_<uid prefix>_<instance>` and labelled with the pod's
//! namespace, name and uid, the container name and the instance number — and the image pulls
//! it asks for. It touches no Docker container without those labels, and decides nothing
//! about the pod lifecycle: restarts, back-off and probes belong to the kubelet.
//!
//! Kubernetes semantics on Docker's vocabulary: `command` replaces the image's ENTRYPOINT and
//! `args` its CMD; a command without args never runs the image's CMD (Docker only merges the
//! image's CMD when the entrypoint is not overridden). Images are pulled when missing
//! (`IfNotPresent`), anonymously; a pull keeps running in the background when it outlasts a
//! start's patience, and later starts wait on it.
//!
//! Pods share the network named at construction, normally the node's (`host`): the pod IP is
//! then the node's address, as with the process runtime, and pods' ports share one space.
//! Docker's init (tini) is PID 1 of every container, so SIGTERM reaches a command that
//! installs no handler and orphans are reaped. The price: a command that cannot be executed
//! is reported by tini as an exit (126 or 127 with a `[FATAL tini …]` line) after Docker
//! has started the container; `start` watches the new container briefly to turn that into a
//! start error, and `state` reports such an exit with reason `StartError`.
//!
//! Each start creates a new Docker container; the current and the previous instance are kept
//! (`logs --previous`), older ones removed. What the runtime knows is a cache of Docker's
//! view: on first use of a container it adopts that container's instances found by label, so
//! a restarted kubelet finds its running containers again.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{ContainerId, ContainerRuntime, ContainerSpec, ContainerState, RuntimeError};

/// Where the Docker daemon listens by default.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The default network mode of pod containers: the node's own network.
pub const DEFAULT_NETWORK: &str = "host";

/// How long an `exec` may take (create, run, inspect) before it fails. Docker cannot kill an
/// exec: a command outliving this keeps running inside the container.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(10);

/// The Engine API version spoken: Docker 20.10 and later. A daemon whose minimum is newer
/// gets its minimum (the calls used here have not changed since).
const API_VERSION: (u32, u32) = (1, 41);

/// Timeout of one ordinary API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A stop may take the grace period plus this.
const STOP_MARGIN: Duration = Duration::from_secs(30);

/// How long a start waits for a missing image to be pulled before failing with an image
/// error (the pull goes on in the background).
const PULL_WAIT: Duration = Duration::from_secs(20);

/// How long a background pull may take at all.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// At most this much of an `exec`'s output is kept.
const EXEC_OUTPUT_LIMIT: usize = 64 * 1024;

/// At most this much of an `exec`'s raw (multiplexed) stream is kept; the rest is read and
/// dropped.
const EXEC_STREAM_LIMIT: usize = 1024 * 1024;

/// The largest answer accepted (a whole log included).
const RESPONSE_LIMIT: usize = 64 * 1024 * 1024;

/// After a start, how long the new container is watched for a command tini could not run.
const START_CHECK: Duration = Duration::from_millis(100);

/// Polling interval while watching a container or an exec.
const POLL: Duration = Duration::from_millis(10);

/// Exit codes with which tini reports a command it could not execute (1 for an errno other
/// than ENOENT or EACCES).
const TINI_EXEC_EXIT_CODES: [i64; 3] = [1, 126, 127];

/// How tini starts the line it writes when it fails.
const TINI_FATAL: &str = "[FATAL tini (";

const LABEL_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const LABEL_POD: &str = "io.kubernetes.pod.name";
const LABEL_UID: &str = "io.kubernetes.pod.uid";
const LABEL_CONTAINER: &str = "io.kubernetes.container.name";
const LABEL_INSTANCE: &str = "skiff.instance";

/// Runs containers as Docker containers. A cheap-to-clone handle: clones share the same
/// containers.
#[derive(Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    socket: PathBuf,
    /// The path prefix of every call, e.g. `/v1.41`.
    api: String,
    /// `docker://<daemon version>`.
    version: String,
    pod_ip: String,
    network: String,
    containers: Mutex<HashMap<ContainerId, Entry>>,
    /// Pulls in progress, by image reference: their outcome once known.
    pulls: Mutex<Pulls>,
    /// Source of `Entry::token`.
    tokens: AtomicU64,
}

/// Pulls in progress by image reference, each with its outcome once known.
type Pulls = HashMap<String, watch::Receiver<Option<Result<(), String>>>>;

/// What the runtime knows of one container.
struct Entry {
    /// Distinguishes this entry from one created again after a `remove`.
    token: u64,
    /// Known instances, oldest first: the last is the current one.
    instances: Vec<Instance>,
    /// The number the next start gets.
    next_instance: u64,
    /// A start is in progress.
    starting: bool,
}

/// One Docker container: one started instance of a container.
#[derive(Debug, Clone)]
struct Instance {
    number: u64,
    docker_id: String,
    /// Its final state once seen exited (an exited Docker container never changes again).
    exited: Option<ContainerState>,
}

/// A failed Docker API call.
#[derive(Debug)]
struct ApiError {
    /// The HTTP status, None when there was no answer.
    status: Option<u16>,
    message: String,
}

impl ApiError {
    fn transport(message: impl Into<String>) -> Self {
        Self {
            status: None,
            message: message.into(),
        }
    }

    fn is(&self, status: u16) -> bool {
        self.status == Some(status)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "{} (HTTP {status})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl From<ApiError> for RuntimeError {
    fn from(e: ApiError) -> Self {
        RuntimeError::Other(format!("docker: {e}"))
    }
}

/// How much of an answer to read.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// Fail when the answer is larger.
    Fail(usize),
    /// Keep this much and read the rest to its end, dropping it.
    Drain(usize),
}

/// An HTTP answer, its body decoded from chunked transfer encoding.
#[derive(Debug)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

/// A container as last observed through Docker.
struct Observed {
    state: ContainerState,
    /// tini's complaint when the command could not be executed.
    exec_failure: Option<String>,
}

/// Clears an entry's `starting` flag however a start ends (a caller may drop it midway).
struct Starting<'a> {
    runtime: &'a DockerRuntime,
    id: &'a ContainerId,
    token: u64,
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.runtime.lock().get_mut(self.id) {
            if entry.token == self.token {
                entry.starting = false;
            }
        }
    }
}

impl DockerRuntime {
    /// Connects to the Docker daemon on `socket` (checking it answers and speaks API 1.41 or
    /// later); pod containers join the network mode `network` (normally [`DEFAULT_NETWORK`]:
    /// the node's network, so `pod_ip` is the node's address).
    pub async fn connect(
        socket: PathBuf,
        pod_ip: String,
        network: String,
    ) -> Result<Self, RuntimeError> {
        let unreachable =
            |e: ApiError| RuntimeError::Other(format!("docker at {}: {e}", socket.display()));
        let answer = http(
            &socket,
            "GET",
            "/version",
            None,
            CALL_TIMEOUT,
            Limit::Fail(RESPONSE_LIMIT),
        )
        .await
        .and_then(ok)
        .and_then(|r| json_body(&r))
        .map_err(unreachable)?;
        let version = answer["Version"].as_str().unwrap_or("unknown").to_string();
        let api = negotiate(
            answer["ApiVersion"].as_str(),
            answer["MinAPIVersion"].as_str(),
        )
        .map_err(|why| RuntimeError::Other(format!("docker at {}: {why}", socket.display())))?;
        tracing::debug!(socket = %socket.display(), %version, %api, "connected to docker");
        Ok(Self {
            inner: Arc::new(Inner {
                socket,
                api: format!("/v{api}"),
                version: format!("docker://{version}"),
                pod_ip,
                network,
                containers: Mutex::new(HashMap::new()),
                pulls: Mutex::new(HashMap::new()),
                tokens: AtomicU64::new(0),
            }),
        })
    }

    /// Stops every container this runtime knows to be running (SIGTERM, `grace`, SIGKILL),
    /// concurrently, and returns once all are stopped. For kubelet shutdown; failures are
    /// logged. Containers are stopped, not removed.
    pub async fn stop_all(&self, grace: Duration) {
        let ids: Vec<ContainerId> = self
            .lock()
            .iter()
            .filter(|(_, entry)| entry.instances.last().is_some_and(|i| i.exited.is_none()))
            .map(|(id, _)| id.clone())
            .collect();
        super::stop_each(self, ids, grace).await;
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ContainerId, Entry>> {
        self.inner
            .containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_pulls(&self) -> MutexGuard<'_, Pulls> {
        self.inner
            .pulls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// One API call (`path` without the version prefix); non-2xx answers are errors.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
        limit: Limit,
    ) -> Result<Response, ApiError> {
        let target = format!("{}{path}", self.inner.api);
        http(&self.inner.socket, method, &target, body, timeout, limit)
            .await
            .and_then(ok)
    }

    /// An API call answering JSON.
    async fn call_json(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let response = self
            .call(
                method,
                path,
                body,
                CALL_TIMEOUT,
                Limit::Fail(RESPONSE_LIMIT),
            )
            .await?;
        json_body(&response)
    }

    /// Makes sure the runtime's cache holds the container, adopting the instances Docker has
    /// of it (after a kubelet restart).
    async fn load(&self, id: &ContainerId) -> Result<(), ApiError> {
        if self.lock().contains_key(id) {
            return Ok(());
        }
        let found = self.list(id).await?;
        let token = self.inner.tokens.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(id.clone()).or_insert_with(|| Entry {
            token,
            next_instance: found.last().map_or(0, |i| i.number + 1),
            instances: found,
            starting: false,
        });
        Ok(())
    }

    /// The Docker containers labelled as instances of `id`, oldest first.
    async fn list(&self, id: &ContainerId) -> Result<Vec<Instance>, ApiError> {
        let filters = json!({"label": [
            format!("{LABEL_NAMESPACE}={}", id.namespace),
            format!("{LABEL_POD}={}", id.pod),
            format!("{LABEL_UID}={}", id.uid),
            format!("{LABEL_CONTAINER}={}", id.container),
            LABEL_INSTANCE,
        ]});
        let path = format!(
            "/containers/json?all=1&filters={}",
            encode(&filters.to_string(), b"")
        );
        let answer = self.call_json("GET", &path, None).await?;
        let Some(list) = answer.as_array() else {
            return Err(ApiError::transport(format!(
                "listing containers: unexpected answer {}",
                short(&answer.to_string())
            )));
        };
        let mut found: Vec<Instance> = list
            .iter()
            .filter_map(|c| {
                Some(Instance {
                    number: c["Labels"][LABEL_INSTANCE].as_str()?.parse().ok()?,
                    docker_id: c["Id"].as_str()?.to_string(),
                    exited: None,
                })
            })
            .collect();
        found.sort_by_key(|i| i.number);
        Ok(found)
    }

    /// The current instance, or the previous one.
    fn instance(&self, id: &ContainerId, previous: bool) -> Option<Instance> {
        let containers = self.lock();
        let instances = &containers.get(id)?.instances;
        let back = usize::from(previous);
        instances.iter().rev().nth(back).cloned()
    }

    /// Remembers that an instance has exited, as `state`.
    fn remember_exit(&self, id: &ContainerId, number: u64, state: &ContainerState) {
        if let Some(inst) = self
            .lock()
            .get_mut(id)
            .and_then(|entry| entry.instances.iter_mut().find(|i| i.number == number))
        {
            inst.exited = Some(state.clone());
        }
    }

    /// Reserves the next instance number, refusing a second concurrent start.
    fn reserve(&self, id: &ContainerId) -> Result<(u64, u64, Option<Instance>), RuntimeError> {
        let mut containers = self.lock();
        let Some(entry) = containers.get_mut(id) else {
            return Err(RuntimeError::Other(format!(
                "container {} vanished while starting",
                id.label()
            )));
        };
        if entry.starting {
            return Err(RuntimeError::start(id, "it is already being started"));
        }
        entry.starting = true;
        let number = entry.next_instance;
        entry.next_instance += 1;
        Ok((entry.token, number, entry.instances.last().cloned()))
    }

    /// Inspects a container and reads its state.
    async fn observe(&self, docker_id: &str) -> Result<Observed, ApiError> {
        let answer = self
            .call_json("GET", &format!("/containers/{docker_id}/json"), None)
            .await?;
        let mut state = parse_state(&answer["State"]);
        let mut exec_failure = None;
        if let ContainerState::Exited {
            exit_code, reason, ..
        } = &mut state
        {
            if TINI_EXEC_EXIT_CODES.contains(&i64::from(*exit_code)) {
                exec_failure = self.tini_failure(docker_id).await;
                if exec_failure.is_some() {
                    *reason = "StartError".to_string();
                }
            }
        }
        Ok(Observed {
            state,
            exec_failure,
        })
    }

    /// tini's complaint at the end of a container's log, if there is one.
    async fn tini_failure(&self, docker_id: &str) -> Option<String> {
        let log = self
            .call(
                "GET",
                &format!("/containers/{docker_id}/logs?stdout=1&stderr=1&tail=5"),
                None,
                CALL_TIMEOUT,
                Limit::Fail(RESPONSE_LIMIT),
            )
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&demux(&log.body)).into_owned();
        let line = text.lines().rev().find(|l| l.starts_with(TINI_FATAL))?;
        // "[FATAL tini (7)] exec nope failed: No such file or directory"
        Some(
            line.split_once("] ")
                .map_or(line, |(_, why)| why)
                .to_string(),
        )
    }

    /// Whether the daemon has the image.
    async fn image_exists(&self, image: &str) -> Result<bool, ApiError> {
        let path = format!("/images/{}/json", encode(image, b"/:@"));
        match self.call_json("GET", &path, None).await {
            Ok(_) => Ok(true),
            Err(e) if e.is(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Makes the image available, pulling it when missing.
    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        let image_error = |why: String| RuntimeError::Image {
            image: image.to_string(),
            why,
        };
        if image.is_empty() {
            return Err(image_error("no image given".to_string()));
        }
        if self.image_exists(image).await? {
            return Ok(());
        }
        let pulled = self.pull(image).await;
        if self.image_exists(image).await? {
            return Ok(());
        }
        Err(image_error(pulled.err().unwrap_or_else(|| {
            "the image is missing after pulling it".to_string()
        })))
    }

    /// Pulls an image, or waits for the pull already under way, for at most [`PULL_WAIT`];
    /// the pull goes on in the background after that.
    async fn pull(&self, image: &str) -> Result<(), String> {
        let mut outcome = {
            let mut pulls = self.lock_pulls();
            match pulls.get(image) {
                Some(outcome) => outcome.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    pulls.insert(image.to_string(), rx.clone());
                    let runtime = self.clone();
                    let image = image.to_string();
                    tokio::spawn(async move {
                        let result = runtime.pull_now(&image).await;
                        if let Err(why) = &result {
                            tracing::debug!(%image, %why, "pull failed");
                        }
                        runtime.lock_pulls().remove(&image);
                        tx.send_replace(Some(result));
                    });
                    rx
                }
            }
        };
        let waited = tokio::time::timeout(PULL_WAIT, outcome.wait_for(Option::is_some))
            .await
            .map(|done| done.map(|outcome| outcome.clone()));
        match waited {
            Ok(Ok(outcome)) => outcome.unwrap_or(Ok(())),
            Ok(Err(_)) => Err("the pull was abandoned".to_string()),
            Err(_) => Err(format!(
                "not pulled within {}s (still pulling)",
                PULL_WAIT.as_secs()
            )),
        }
    }

    /// One pull. Docker reports a failure either as an error status or, once the progress
    /// stream has begun, as a JSON line with an `error` field in a 200 answer.
    async fn pull_now(&self, image: &str) -> Result<(), String> {
        let (repo, tag) = split_image(image);
        let path = format!(
            "/images/create?fromImage={}&tag={}",
            encode(repo, b""),
            encode(tag, b"")
        );
        let response = self
            .call(
                "POST",
                &path,
                None,
                PULL_TIMEOUT,
                Limit::Drain(RESPONSE_LIMIT),
            )
            .await
            .map_err(|e| e.message)?;
        for line in response.body.split(|&b| b == b'\n') {
            let Ok(progress) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if let Some(error) = progress.get("error") {
                return Err(error
                    .as_str()
                    .map_or_else(|| error.to_string(), str::to_string));
            }
        }
        Ok(())
    }

    /// Creates and starts instance `number`; on failure nothing of it is left.
    async fn launch(
        &self,
        id: &ContainerId,
        spec: &ContainerSpec,
        number: u64,
    ) -> Result<Instance, RuntimeError> {
        let body = create_body(id, spec, number, &self.inner.network)
            .map_err(|why| RuntimeError::start(id, why))?;
        let name = container_name(id, number);
        let created = self
            .call_json(
                "POST",
                &format!("/containers/create?name={}", encode(&name, b"")),
                Some(&body),
            )
            .await;
        let docker_id = match created {
            Ok(answer) => match answer["Id"].as_str() {
                Some(docker_id) => docker_id.to_string(),
                None => {
                    // Unlikely; the name still finds whatever was made.
                    self.delete(&name).await;
                    return Err(RuntimeError::Other(format!(
                        "docker: creating {name}: answer without an Id: {}",
                        short(&answer.to_string())
                    )));
                }
            },
            Err(e) if e.is(404) => {
                return Err(RuntimeError::Image {
                    image: spec.image.clone(),
                    why: e.message,
                })
            }
            Err(e) => return Err(RuntimeError::start(id, e.message)),
        };
        let started = self
            .call(
                "POST",
                &format!("/containers/{docker_id}/start"),
                None,
                CALL_TIMEOUT,
                Limit::Fail(RESPONSE_LIMIT),
            )
            .await;
        if let Err(e) = started {
            self.delete(&docker_id).await;
            return Err(RuntimeError::start(id, e.message));
        }
        // A command tini cannot execute shows as an exit within moments.
        let deadline = Instant::now() + START_CHECK;
        let exited = loop {
            match self.observe(&docker_id).await {
                Ok(Observed {
                    exec_failure: Some(why),
                    ..
                }) => {
                    self.delete(&docker_id).await;
                    return Err(RuntimeError::start(id, why));
                }
                Ok(Observed {
                    state: state @ ContainerState::Exited { .. },
                    ..
                }) => break Some(state),
                Ok(_) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
                Ok(_) => break None,
                Err(e) => {
                    self.delete(&docker_id).await;
                    return Err(RuntimeError::start(
                        id,
                        format!("inspecting after start: {e}"),
                    ));
                }
            }
        };
        tracing::debug!(container = %id.label(), %name, %docker_id, image = %spec.image, "started docker container");
        Ok(Instance {
            number,
            docker_id,
            exited,
        })
    }

    /// Force-removes a Docker container (and its anonymous volumes), logging failures.
    async fn delete(&self, docker_id: &str) {
        if let Err(e) = self.delete_checked(docker_id).await {
            tracing::warn!(%docker_id, error = %e, "removing docker container");
        }
    }

    async fn delete_checked(&self, docker_id: &str) -> Result<(), ApiError> {
        let path = format!("/containers/{}?force=1&v=1", encode(docker_id, b""));
        match self
            .call(
                "DELETE",
                &path,
                None,
                CALL_TIMEOUT,
                Limit::Fail(RESPONSE_LIMIT),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is(404) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for DockerRuntime {
    fn version(&self) -> String {
        self.inner.version.clone()
    }

    async fn start(&self, id: &ContainerId, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        for (what, value) in [
            ("namespace", &id.namespace),
            ("pod name", &id.pod),
            ("pod uid", &id.uid),
            ("container name", &id.container),
        ] {
            if value.is_empty() {
                return Err(RuntimeError::start(id, format!("empty {what}")));
            }
        }
        self.load(id).await?;
        let (token, number, current) = self.reserve(id)?;
        let _starting = Starting {
            runtime: self,
            id,
            token,
        };
        if let Some(current) = current.filter(|c| c.exited.is_none()) {
            match self.observe(&current.docker_id).await {
                Ok(Observed {
                    state: ContainerState::Running { .. },
                    ..
                }) => {
                    return Err(RuntimeError::start(
                        id,
                        format!(
                            "it is already running (docker {})",
                            short_id(&current.docker_id)
                        ),
                    ))
                }
                Ok(_) => {}
                Err(e) if e.is(404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.ensure_image(&spec.image).await?;
        let inst = self.launch(id, spec, number).await?;

        let (docker_id, outdated) = {
            let mut containers = self.lock();
            match containers.get_mut(id).filter(|entry| entry.token == token) {
                Some(entry) => {
                    let docker_id = inst.docker_id.clone();
                    entry.instances.push(inst);
                    let keep_from = entry.instances.len().saturating_sub(2);
                    let outdated: Vec<Instance> = entry.instances.drain(..keep_from).collect();
                    (docker_id, Some(outdated))
                }
                // Removed meanwhile: orphan nothing.
                None => (inst.docker_id, None),
            }
        };
        let Some(outdated) = outdated else {
            self.delete(&docker_id).await;
            return Err(RuntimeError::Other(format!(
                "container {} was removed while starting",
                id.label()
            )));
        };
        for old in outdated {
            self.delete(&old.docker_id).await;
        }
        Ok(())
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<(), RuntimeError> {
        self.load(id).await?;
        let Some(current) = self.instance(id, false) else {
            return Ok(());
        };
        if current.exited.is_some() {
            return Ok(());
        }
        // Docker counts whole seconds; round a fraction up rather than kill at once.
        let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        tracing::debug!(container = %id.label(), docker_id = %current.docker_id, seconds, "stopping docker container");
        let path = format!("/containers/{}/stop?t={seconds}", current.docker_id);
        match self
            .call(
                "POST",
                &path,
                None,
                Duration::from_secs(seconds) + STOP_MARGIN,
                Limit::Fail(RESPONSE_LIMIT),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Already stopped, or gone.
            Err(e) if e.is(304) || e.is(404) => Ok(()),
            Err(e) => Err(RuntimeError::Other(format!(
                "docker: stopping {}: {e}",
                id.label()
            ))),
        }
    }

    async fn state(&self, id: &ContainerId) -> ContainerState {
        if let Err(e) = self.load(id).await {
            tracing::warn!(container = %id.label(), error = %e, "docker: listing containers");
            return ContainerState::Unknown;
        }
        let Some(current) = self.instance(id, false) else {
            return ContainerState::Unknown;
        };
        if let Some(exited) = current.exited {
            return exited;
        }
        match self.observe(&current.docker_id).await {
            Ok(Observed { state, .. }) => {
                if matches!(state, ContainerState::Exited { .. }) {
                    self.remember_exit(id, current.number, &state);
                }
                state
            }
            Err(e) if e.is(404) => ContainerState::Unknown,
            Err(e) => {
                tracing::warn!(container = %id.label(), error = %e, "docker: inspecting container");
                ContainerState::Unknown
            }
        }
    }

    async fn exec(
        &self,
        id: &ContainerId,
        command: &[String],
    ) -> Result<(i32, String), RuntimeError> {
        if command.is_empty() {
            return Err(RuntimeError::Other("exec needs a command".to_string()));
        }
        self.load(id).await?;
        let current = self
            .instance(id, false)
            .filter(|c| c.exited.is_none())
            .ok_or_else(|| {
                RuntimeError::Other(format!("container {} is not running", id.label()))
            })?;
        let run = async {
            let created = self
                .call_json(
                    "POST",
                    &format!("/containers/{}/exec", current.docker_id),
                    Some(&json!({
                        "Cmd": command,
                        "AttachStdin": false,
                        "AttachStdout": true,
                        "AttachStderr": true,
                        "Tty": false,
                    })),
                )
                .await?;
            let Some(exec_id) = created["Id"].as_str() else {
                return Err(ApiError::transport(format!(
                    "exec answer without an Id: {}",
                    short(&created.to_string())
                )));
            };
            let stream = self
                .call(
                    "POST",
                    &format!("/exec/{exec_id}/start"),
                    Some(&json!({"Detach": false, "Tty": false})),
                    EXEC_TIMEOUT,
                    Limit::Drain(EXEC_STREAM_LIMIT),
                )
                .await?;
            let mut output = demux(&stream.body);
            output.truncate(EXEC_OUTPUT_LIMIT);
            // The stream ends with the process; its exit code may lag a moment behind.
            loop {
                let inspected = self
                    .call_json("GET", &format!("/exec/{exec_id}/json"), None)
                    .await?;
                if inspected["Running"].as_bool() != Some(true) {
                    let code = inspected["ExitCode"]
                        .as_i64()
                        .and_then(|c| i32::try_from(c).ok())
                        .ok_or_else(|| {
                            ApiError::transport(format!(
                                "exec ended without an exit code: {}",
                                short(&inspected.to_string())
                            ))
                        })?;
                    return Ok((code, String::from_utf8_lossy(&output).into_owned()));
                }
                tokio::time::sleep(POLL).await;
            }
        };
        match tokio::time::timeout(EXEC_TIMEOUT, run).await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => Err(RuntimeError::Other(format!(
                "docker: exec in {}: {e}",
                id.label()
            ))),
            Err(_) => Err(RuntimeError::Other(format!(
                "docker: exec in {}: timed out after {}s",
                id.label(),
                EXEC_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn logs(
        &self,
        id: &ContainerId,
        tail: Option<usize>,
        previous: bool,
    ) -> Result<String, RuntimeError> {
        self.load(id).await?;
        let no_log = || {
            let which = if previous { "previous terminated " } else { "" };
            RuntimeError::Other(format!("no log for {which}container {}", id.label()))
        };
        let inst = self.instance(id, previous).ok_or_else(no_log)?;
        let tail = match tail {
            Some(0) => return Ok(String::new()),
            Some(n) => n.to_string(),
            None => "all".to_string(),
        };
        let path = format!(
            "/containers/{}/logs?stdout=1&stderr=1&tail={tail}",
            inst.docker_id
        );
        match self
            .call(
                "GET",
                &path,
                None,
                CALL_TIMEOUT,
                Limit::Fail(RESPONSE_LIMIT),
            )
            .await
        {
            Ok(response) => Ok(String::from_utf8_lossy(&demux(&response.body)).into_owned()),
            Err(e) if e.is(404) => Err(no_log()),
            Err(e) => Err(RuntimeError::Other(format!(
                "docker: log of {}: {e}",
                id.label()
            ))),
        }
    }

    /// Removes every instance of the container, stopping (SIGKILL) one still running.
    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        // Forgotten first, so that a start in progress discards what it makes.
        let known = self
            .lock()
            .remove(id)
            .map(|e| e.instances)
            .unwrap_or_default();
        let mut docker_ids: Vec<String> = self
            .list(id)
            .await?
            .into_iter()
            .map(|i| i.docker_id)
            .collect();
        for inst in known {
            if !docker_ids.contains(&inst.docker_id) {
                docker_ids.push(inst.docker_id);
            }
        }
        let mut failures = Vec::new();
        for docker_id in docker_ids {
            if let Err(e) = self.delete_checked(&docker_id).await {
                failures.push(format!("{}: {e}", short_id(&docker_id)));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Other(format!(
                "docker: removing {}: {}",
                id.label(),
                failures.join("; ")
            )))
        }
    }

    fn pod_ip(&self) -> String {
        self.inner.pod_ip.clone()
    }

    fn root(&self) -> Option<PathBuf> {
        None
    }
}

/// One HTTP/1.1 exchange on a fresh connection to `socket`, read to its end: the answer
/// whatever its status.
async fn http(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&Value>,
    timeout: Duration,
    limit: Limit,
) -> Result<Response, ApiError> {
    match tokio::time::timeout(timeout, exchange(socket, method, target, body, limit)).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::transport(format!(
            "{method} {target}: no answer within {}s",
            timeout.as_secs()
        ))),
    }
}

async fn exchange(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&Value>,
    limit: Limit,
) -> Result<Response, ApiError> {
    let failed = |what: &str, e: &dyn fmt::Display| {
        ApiError::transport(format!("{method} {target}: {what}: {e}"))
    };
    let payload = match body {
        Some(body) => serde_json::to_vec(body).map_err(|e| failed("encoding", &e))?,
        None => Vec::new(),
    };
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: skiff\r\nConnection: close\r\n"
    );
    if body.is_some() {
        request.push_str("Content-Type: application/json\r\n");
    }
    if body.is_some() || method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", payload.len()));
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(&payload);

    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|e| failed(&format!("connecting to {}", socket.display()), &e))?;
    stream
        .write_all(&request)
        .await
        .map_err(|e| failed("sending", &e))?;
    let (keep, drain) = match limit {
        Limit::Fail(n) => (n, false),
        Limit::Drain(n) => (n, true),
    };
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| failed("reading", &e))?;
        if n == 0 {
            break;
        }
        let room = keep.saturating_sub(raw.len());
        if n > room && !drain {
            return Err(ApiError::transport(format!(
                "{method} {target}: answer larger than {keep} bytes"
            )));
        }
        raw.extend_from_slice(&buf[..n.min(room)]);
    }
    parse_response(&raw).map_err(|why| failed("bad answer", &why))
}

/// Splits an answer into status and body, undoing chunked transfer encoding. Lenient with a
/// body cut short (a drained answer is cut on purpose).
fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return Err(format!("no complete header in {} bytes", raw.len()));
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split_whitespace().collect::<Vec<_>>()[..] {
        [version, code, ..] if version.starts_with("HTTP/") => code
            .parse::<u16>()
            .map_err(|_| format!("bad status line {status_line:?}"))?,
        _ => return Err(format!("bad status line {status_line:?}")),
    };
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    let body = &raw[end + 4..];
    let body = if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if chunked {
        dechunk(body)?
    } else if let Some(length) = length {
        body[..length.min(body.len())].to_vec()
    } else {
        body.to_vec()
    };
    Ok(Response { status, body })
}

/// Decodes a chunked body, keeping what there is of a body cut short.
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = find(data, b"\r\n") else {
            return Ok(out);
        };
        let line = String::from_utf8_lossy(&data[..line_end]);
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            out.extend_from_slice(data);
            return Ok(out);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size..];
        data = data.strip_prefix(b"\r\n").unwrap_or(data);
    }
}

/// A 2xx answer, or the error Docker gave (its `{"message": …}` when it sent one).
fn ok(response: Response) -> Result<Response, ApiError> {
    if (200..300).contains(&response.status) {
        return Ok(response);
    }
    let message = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&response.body);
            let text = text.trim();
            if text.is_empty() {
                format!("HTTP status {}", response.status)
            } else {
                short(text)
            }
        });
    Err(ApiError {
        status: Some(response.status),
        message,
    })
}

/// The body as JSON (`null` when empty).
fn json_body(response: &Response) -> Result<Value, ApiError> {
    if response.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&response.body).map_err(|e| {
        ApiError::transport(format!(
            "answer is not JSON ({e}): {}",
            short(&String::from_utf8_lossy(&response.body))
        ))
    })
}

/// The output carried by Docker's multiplexed stream (frames of an 8-byte header — stream
/// type, three zero bytes, big-endian u32 length — and the payload), stdout and stderr
/// interleaved as written. A stream that is not multiplexed (a TTY) is returned as is; a
/// frame cut short keeps what arrived.
fn demux(raw: &[u8]) -> Vec<u8> {
    let multiplexed = raw.len() >= 8 && raw[0] <= 3 && raw[1..4] == [0, 0, 0];
    if !multiplexed {
        return raw.to_vec();
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while rest.len() >= 8 {
        let kind = rest[0];
        let size = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let payload = &rest[8..(8 + size).min(rest.len())];
        // 1 stdout, 2 stderr, 3 Docker's own error about the stream.
        if matches!(kind, 1..=3) {
            out.extend_from_slice(payload);
        }
        rest = &rest[8 + payload.len()..];
    }
    out
}

/// The `ContainerState` of Docker's `State` object.
fn parse_state(state: &Value) -> ContainerState {
    let started_at = time(&state["StartedAt"]);
    if state["Running"].as_bool() == Some(true) {
        return ContainerState::Running {
            started_at: started_at.unwrap_or(SystemTime::UNIX_EPOCH),
            pid: state["Pid"]
                .as_u64()
                .filter(|&p| p > 0)
                .and_then(|p| u32::try_from(p).ok()),
        };
    }
    let finished_at = time(&state["FinishedAt"]);
    let status = state["Status"].as_str().unwrap_or_default();
    // Created but never started (or a state this runtime does not know) is not an exit.
    if status == "created" || (finished_at.is_none() && started_at.is_none()) {
        return ContainerState::Unknown;
    }
    let exit_code = state["ExitCode"]
        .as_i64()
        .and_then(|c| i32::try_from(c).ok())
        .unwrap_or(255);
    let reason = if state["OOMKilled"].as_bool() == Some(true) {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let started_at = started_at.unwrap_or(SystemTime::UNIX_EPOCH);
    ContainerState::Exited {
        exit_code,
        // Behind tini a signal shows only as 128 + n, which a command may also exit with.
        signal: None,
        started_at,
        finished_at: finished_at.unwrap_or(started_at),
        reason: reason.to_string(),
    }
}

/// A Docker timestamp (RFC 3339, nanoseconds); None for Go's zero time (year 1).
fn time(value: &Value) -> Option<SystemTime> {
    let ts: jiff::Timestamp = value.as_str()?.parse().ok()?;
    (ts >= jiff::Timestamp::UNIX_EPOCH).then(|| SystemTime::from(ts))
}

/// The Docker `containers/create` body of instance `number`.
fn create_body(
    id: &ContainerId,
    spec: &ContainerSpec,
    number: u64,
    network: &str,
) -> Result<Value, String> {
    let mut env = Vec::with_capacity(spec.env.len());
    for (name, value) in &spec.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(format!("invalid environment variable name {name:?}"));
        }
        env.push(format!("{name}={value}"));
    }
    // `Entrypoint: null` keeps the image's; `[]` would clear it.
    let entrypoint = if spec.command.is_empty() {
        Value::Null
    } else {
        json!(spec.command)
    };
    // With an entrypoint given Docker never adds the image's CMD; `[]` says so explicitly.
    let cmd = if !spec.args.is_empty() {
        json!(spec.args)
    } else if !spec.command.is_empty() {
        json!([])
    } else {
        Value::Null
    };
    // Each volume is a bind mount of the directory the kubelet filled (or the hostPath).
    let binds: Vec<String> = spec
        .mounts
        .iter()
        .map(|m| {
            let mode = if m.read_only { ":ro" } else { "" };
            format!("{}:{}{mode}", m.source.display(), m.path)
        })
        .collect();
    Ok(json!({
        "Image": spec.image,
        "Entrypoint": entrypoint,
        "Cmd": cmd,
        "Env": env,
        "WorkingDir": spec.working_dir.clone().unwrap_or_default(),
        "Labels": {
            LABEL_NAMESPACE: id.namespace,
            LABEL_POD: id.pod,
            LABEL_UID: id.uid,
            LABEL_CONTAINER: id.container,
            LABEL_INSTANCE: number.to_string(),
        },
        "AttachStdin": false,
        "AttachStdout": false,
        "AttachStderr": false,
        "OpenStdin": false,
        "Tty": false,
        "HostConfig": {
            "NetworkMode": network,
            "Binds": binds,
            "Init": true,
            "RestartPolicy": {"Name": "no"},
            // Readable by the logs API whatever the daemon's default, and bounded.
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
        },
    }))
}

/// `skiff_<namespace>_<pod>_<container>_<uid prefix>_<instance>`, limited to the characters
/// Docker allows in names.
fn container_name(id: &ContainerId, number: u64) -> String {
    let uid: String = id.uid.chars().take(8).collect();
    format!(
        "skiff_{}_{}_{}_{uid}_{number}",
        id.namespace, id.pod, id.container
    )
    .chars()
    .map(|c| {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
            c
        } else {
            '-'
        }
    })
    .collect()
}

/// Repository and tag (or digest) of an image reference; `latest` when it names neither.
fn split_image(image: &str) -> (&str, &str) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo, digest);
    }
    match image.rfind(':') {
        // A colon before the last slash is a registry's port.
        Some(i) if !image[i..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, "latest"),
    }
}

/// The API version to speak, given the daemon's newest and oldest (`"1.41"`).
fn negotiate(newest: Option<&str>, oldest: Option<&str>) -> Result<String, String> {
    let parse = |v: &str| {
        let (major, minor) = v.split_once('.')?;
        Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?))
    };
    let newest = newest
        .and_then(parse)
        .ok_or_else(|| format!("no usable ApiVersion in the answer ({newest:?})"))?;
    let oldest = oldest.and_then(parse).unwrap_or((1, 12));
    if newest < API_VERSION {
        return Err(format!(
            "API {}.{} is older than {}.{} (Docker 20.10)",
            newest.0, newest.1, API_VERSION.0, API_VERSION.1
        ));
    }
    let (major, minor) = oldest.max(API_VERSION);
    Ok(format!("{major}.{minor}"))
}

/// Percent-encodes all but unreserved characters and those in `keep`.
fn encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || keep.contains(&b)
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// At most 200 characters of `text`, for messages.
fn short(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// The first 12 characters of a Docker id, as Docker shows them.
fn short_id(docker_id: &str) -> &str {
    docker_id.get(..12).unwrap_or(docker_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The image the Docker tests run (`scripts/base-image` makes it; it has no ENTRYPOINT or CMD).
    const IMAGE: &str = "debian:bookworm-slim";

    #[test]
    fn answers_are_parsed() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}extra";
        let r = parse_response(plain).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"{}".as_slice()));

        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n";
        let r = parse_response(chunked).unwrap();
        assert_eq!(r.body, b"hello, world");
        // Cut short: what arrived.
        let r = parse_response(&chunked[..chunked.len() - 11]).unwrap();
        assert_eq!(r.body, b"hello, w");

        let r = parse_response(b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        // No length: up to the end of the connection (a hijacked exec stream).
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\n\x01\0\0\0\0\0\0\x01x").unwrap();
        assert_eq!(demux(&r.body), b"x");

        let err = ok(parse_response(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 26\r\n\r\n{\"message\":\"no such beef\"}",
        )
        .unwrap())
        .unwrap_err();
        assert!(err.is(404));
        assert_eq!(err.to_string(), "no such beef (HTTP 404)");
        let err = ok(parse_response(b"HTTP/1.1 500 Oops\r\n\r\n").unwrap()).unwrap_err();
        assert_eq!(err.message, "HTTP status 500");

        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 2x0 OK\r\n\r\n").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }

    #[test]
    fn streams_are_demultiplexed() {
        let mut raw = Vec::new();
        for (kind, text) in [(1u8, "out\n"), (2, "err\n"), (1, "more")] {
            raw.extend_from_slice(&[kind, 0, 0, 0]);
            raw.extend_from_slice(&u32::try_from(text.len()).unwrap().to_be_bytes());
            raw.extend_from_slice(text.as_bytes());
        }
        assert_eq!(demux(&raw), b"out\nerr\nmore");
        assert_eq!(demux(&raw[..raw.len() - 2]), b"out\nerr\nmo");
        assert_eq!(demux(&raw[..raw.len() - 6]), b"out\nerr\n");
        assert_eq!(demux(b""), b"");
        // A TTY stream is plain text.
        assert_eq!(demux(b"plain text here"), b"plain text here");
    }

    #[test]
    fn names_images_times_and_versions() {
        let id = ContainerId {
            namespace: "default".to_string(),
            pod: "web-1".to_string(),
            uid: "0123abcd-ffff".to_string(),
            container: "app/x".to_string(),
        };
        assert_eq!(
            container_name(&id, 4),
            "skiff_default_web-1_app-x_0123abcd_4"
        );

        assert_eq!(split_image("busybox"), ("busybox", "latest"));
        assert_eq!(split_image("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_image("localhost:5000/team/app"),
            ("localhost:5000/team/app", "latest")
        );
        assert_eq!(
            split_image("localhost:5000/app:v2"),
            ("localhost:5000/app", "v2")
        );
        assert_eq!(split_image("app@sha256:abcd"), ("app", "sha256:abcd"));

        assert_eq!(negotiate(Some("1.41"), Some("1.12")).unwrap(), "1.41");
        assert_eq!(negotiate(Some("1.50"), Some("1.24")).unwrap(), "1.41");
        assert_eq!(negotiate(Some("1.52"), Some("1.44")).unwrap(), "1.44");
        assert!(negotiate(Some("1.40"), None).is_err());
        assert!(negotiate(None, None).is_err());

        assert_eq!(encode("a b/c:d", b"/"), "a%20b/c%3Ad");

        let t = time(&json!("2026-11-29T01:41:14.346566576Z")).unwrap();
        let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(since.subsec_nanos(), 346_566_576);
        assert_eq!(time(&json!("0001-01-01T00:00:00Z")), None);
        assert_eq!(time(&json!("yesterday")), None);
        assert_eq!(time(&Value::Null), None);
    }

    #[test]
    fn docker_states_are_mapped() {
        let running = parse_state(&json!({"Status": "running", "Running": true, "Pid": 42,
            "StartedAt": "2026-01-01T00:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z"}));
        assert!(matches!(
            running,
            ContainerState::Running { pid: Some(42), .. }
        ));
        let exited = |code: i64, oom: bool| match parse_state(
            &json!({"Status": "exited", "Running": false, "ExitCode": code,
                "OOMKilled": oom, "StartedAt": "2026-01-01T00:00:00Z",
                "FinishedAt": "2026-01-01T00:00:01Z"}),
        ) {
            ContainerState::Exited {
                exit_code,
                reason,
                started_at,
                finished_at,
                signal,
            } => {
                assert_eq!(
                    finished_at.duration_since(started_at).unwrap(),
                    Duration::from_secs(1)
                );
                assert_eq!(signal, None);
                (exit_code, reason)
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(exited(0, false), (0, "Completed".to_string()));
        assert_eq!(exited(3, false), (3, "Error".to_string()));
        assert_eq!(exited(137, true), (137, "OOMKilled".to_string()));
        let created = parse_state(&json!({"Status": "created", "Running": false,
            "StartedAt": "0001-01-01T00:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z"}));
        assert_eq!(created, ContainerState::Unknown);
        assert_eq!(parse_state(&Value::Null), ContainerState::Unknown);
    }

    #[test]
    fn command_and_args_map_to_entrypoint_and_cmd() {
        let id = ContainerId {
            namespace: "ns".to_string(),
            pod: "p".to_string(),
            uid: "u".to_string(),
            container: "c".to_string(),
        };
        let body = |command: &[&str], args: &[&str]| {
            let spec = ContainerSpec {
                image: "img".to_string(),
                command: command.iter().map(|s| s.to_string()).collect(),
                args: args.iter().map(|s| s.to_string()).collect(),
                ..ContainerSpec::default()
            };
            let body = create_body(&id, &spec, 0, "host").unwrap();
            (body["Entrypoint"].clone(), body["Cmd"].clone())
        };
        assert_eq!(body(&[], &[]), (Value::Null, Value::Null));
        assert_eq!(body(&["a"], &[]), (json!(["a"]), json!([])));
        assert_eq!(body(&[], &["b"]), (Value::Null, json!(["b"])));
        assert_eq!(body(&["a"], &["b"]), (json!(["a"]), json!(["b"])));

        let mut spec = ContainerSpec::default();
        spec.env.insert("A=B".to_string(), "x".to_string());
        assert!(create_body(&id, &spec, 0, "host").is_err());
        spec.env.clear();
        spec.env.insert("A".to_string(), "x=y".to_string());
        spec.working_dir = Some("/w".to_string());
        let body = create_body(&id, &spec, 7, "bridge").unwrap();
        assert_eq!(body["Env"], json!(["A=x=y"]));
        assert_eq!(body["WorkingDir"], "/w");
        assert_eq!(body["Labels"][LABEL_INSTANCE], "7");
        assert_eq!(body["HostConfig"]["NetworkMode"], "bridge");
        assert_eq!(body["HostConfig"]["Init"], true);
    }

    /// A runtime on the machine's Docker, with a namespace of its own whose containers are
    /// removed when it is dropped; None (the test skips) without Docker or the test image.
    struct Harness {
        rt: DockerRuntime,
        namespace: String,
        uid: String,
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            // Drop cannot await: clean up on a runtime of its own.
            let rt = self.rt.clone();
            let namespace = self.namespace.clone();
            let cleanup = std::thread::spawn(move || {
                let tokio = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                tokio.block_on(async {
                    for docker_id in in_namespace(&rt, &namespace, None).await {
                        rt.delete(&docker_id).await;
                    }
                });
            });
            let _ = cleanup.join();
        }
    }

    /// The Docker runtime on this machine's engine. No engine at all (no socket) is the one
    /// case a machine truly cannot run these: the test is then recorded as skipped in
    /// `$SKIFF_SKIP_LOG`, which the test command counts. An engine that does not answer, or
    /// a missing image (the test command builds it with `scripts/base-image`), fails.
    async fn harness(test: &str) -> Option<Harness> {
        let socket = PathBuf::from(DEFAULT_SOCKET);
        if !socket.exists() {
            let why = format!("no Docker socket at {}", socket.display());
            eprintln!("SKIPPED {test}: {why}");
            if let Some(log) = std::env::var_os(crate::config::env::SKIP_LOG) {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .expect("the skip log");
                writeln!(f, "{test}: {why}").expect("the skip log");
            }
            return None;
        }
        let rt =
            DockerRuntime::connect(socket, "10.0.0.7".to_string(), DEFAULT_NETWORK.to_string())
                .await
                .unwrap_or_else(|e| {
                    panic!("the Docker socket exists but the engine does not answer: {e}")
                });
        assert!(
            rt.image_exists(IMAGE)
                .await
                .expect("asking Docker for the image"),
            "Docker has no image {IMAGE}: run scripts/base-image (the test command does)"
        );
        let random = uuid::Uuid::new_v4().simple().to_string();
        Some(Harness {
            rt,
            namespace: format!("skiff-test-{}", &random[..10]),
            uid: uuid::Uuid::new_v4().to_string(),
        })
    }

    /// The ids of the Docker containers of `namespace` (of one container of it, when given).
    async fn in_namespace(
        rt: &DockerRuntime,
        namespace: &str,
        container: Option<&str>,
    ) -> Vec<String> {
        let mut labels = vec![format!("{LABEL_NAMESPACE}={namespace}")];
        if let Some(container) = container {
            labels.push(format!("{LABEL_CONTAINER}={container}"));
        }
        let filters = json!({ "label": labels }).to_string();
        let path = format!("/containers/json?all=1&filters={}", encode(&filters, b""));
        let answer = rt.call_json("GET", &path, None).await.unwrap();
        answer
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["Id"].as_str().unwrap().to_string())
            .collect()
    }

    impl Harness {
        fn id(&self, container: &str) -> ContainerId {
            ContainerId {
                namespace: self.namespace.clone(),
                pod: "web".to_string(),
                uid: self.uid.clone(),
                container: container.to_string(),
            }
        }

        async fn containers(&self, container: &str) -> Vec<String> {
            in_namespace(&self.rt, &self.namespace, Some(container)).await
        }

        async fn exited(&self, id: &ContainerId) -> ContainerState {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let state = self.rt.state(id).await;
                if matches!(state, ContainerState::Exited { .. }) {
                    return state;
                }
                assert!(Instant::now() < deadline, "{id:?} did not exit: {state:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        async fn log_contains(&self, id: &ContainerId, text: &str) -> String {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let log = self.rt.logs(id, None, false).await.unwrap();
                if log.contains(text) {
                    return log;
                }
                assert!(
                    Instant::now() < deadline,
                    "log never held {text:?}: {log:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    fn sh(script: &str) -> ContainerSpec {
        ContainerSpec {
            image: IMAGE.to_string(),
            command: vec!["sh".to_string(), "-c".to_string()],
            args: vec![script.to_string()],
            ..ContainerSpec::default()
        }
    }

    #[tokio::test]
    async fn exit_code_and_both_streams_reach_the_log() {
        let Some(h) = harness("exit_code_and_both_streams_reach_the_log").await else {
            return;
        };
        let c = h.id("app");
        h.rt.start(&c, &sh("echo hello; sleep 0.2; echo oops >&2; exit 3"))
            .await
            .unwrap();
        match h.exited(&c).await {
            ContainerState::Exited {
                exit_code,
                signal,
                reason,
                started_at,
                finished_at,
            } => {
                assert_eq!(exit_code, 3);
                assert_eq!(signal, None);
                assert_eq!(reason, "Error");
                assert!(finished_at >= started_at);
                assert!(started_at > SystemTime::now() - Duration::from_secs(60));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(h.rt.logs(&c, None, false).await.unwrap(), "hello\noops\n");
        assert_eq!(h.rt.logs(&c, Some(1), false).await.unwrap(), "oops\n");
        assert_eq!(h.rt.logs(&c, Some(0), false).await.unwrap(), "");

        h.rt.start(&c, &sh("exit 0")).await.unwrap();
        match h.exited(&c).await {
            ContainerState::Exited {
                exit_code, reason, ..
            } => assert_eq!((exit_code, reason.as_str()), (0, "Completed")),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn restarts_keep_the_previous_instance_and_its_log() {
        let Some(h) = harness("restarts_keep_the_previous_instance_and_its_log").await else {
            return;
        };
        let c = h.id("app");
        assert!(h.rt.logs(&c, None, false).await.is_err());
        assert_eq!(h.rt.state(&c).await, ContainerState::Unknown);
        h.rt.start(&c, &sh("echo first")).await.unwrap();
        h.exited(&c).await;
        assert!(
            h.rt.logs(&c, None, true).await.is_err(),
            "no previous instance yet"
        );
        h.rt.start(&c, &sh("echo second")).await.unwrap();
        h.exited(&c).await;
        assert_eq!(h.rt.logs(&c, None, false).await.unwrap(), "second\n");
        assert_eq!(h.rt.logs(&c, None, true).await.unwrap(), "first\n");

        // A third start removes the first instance.
        h.rt.start(&c, &sh("echo third")).await.unwrap();
        h.exited(&c).await;
        assert_eq!(h.rt.logs(&c, None, false).await.unwrap(), "third\n");
        assert_eq!(h.rt.logs(&c, None, true).await.unwrap(), "second\n");
        assert_eq!(h.containers("app").await.len(), 2);

        // A new runtime (kubelet restart) adopts the instances and continues the numbering.
        let again = DockerRuntime::connect(
            PathBuf::from(DEFAULT_SOCKET),
            "10.0.0.7".to_string(),
            DEFAULT_NETWORK.to_string(),
        )
        .await
        .unwrap();
        assert_eq!(again.logs(&c, None, false).await.unwrap(), "third\n");
        assert!(matches!(
            again.state(&c).await,
            ContainerState::Exited { exit_code: 0, .. }
        ));
        again.start(&c, &sh("echo fourth")).await.unwrap();
        h.exited(&c).await;
        assert_eq!(again.logs(&c, None, false).await.unwrap(), "fourth\n");
        assert_eq!(again.logs(&c, None, true).await.unwrap(), "third\n");
        assert_eq!(h.containers("app").await.len(), 2);
        let numbers: Vec<u64> = again
            .list(&c)
            .await
            .unwrap()
            .iter()
            .map(|i| i.number)
            .collect();
        assert_eq!(numbers, [2, 3]);
    }

    #[tokio::test]
    async fn stop_sends_sigterm_through_init() {
        let Some(h) = harness("stop_sends_sigterm_through_init").await else {
            return;
        };
        let c = h.id("sleeper");
        let spec = ContainerSpec {
            image: IMAGE.to_string(),
            command: vec!["sleep".to_string(), "1000".to_string()],
            ..ContainerSpec::default()
        };
        h.rt.start(&c, &spec).await.unwrap();
        match h.rt.state(&c).await {
            ContainerState::Running { pid, .. } => assert!(pid.is_some()),
            other => panic!("{other:?}"),
        }
        let err = h.rt.start(&c, &spec).await.unwrap_err();
        assert!(matches!(err, RuntimeError::Start { .. }), "{err}");

        let began = Instant::now();
        h.rt.stop(&c, Duration::from_secs(10)).await.unwrap();
        let took = began.elapsed();
        assert!(took < Duration::from_secs(5), "{took:?}");
        match h.rt.state(&c).await {
            ContainerState::Exited {
                exit_code, reason, ..
            } => {
                assert_eq!(exit_code, 128 + 15);
                assert_eq!(reason, "Error");
            }
            other => panic!("{other:?}"),
        }
        // Stopping again is a no-op.
        h.rt.stop(&c, Duration::from_secs(1)).await.unwrap();
        // So is stopping what never ran.
        h.rt.stop(&h.id("never"), Duration::from_secs(1))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn stop_sigkills_a_process_ignoring_sigterm_after_the_grace() {
        let Some(h) = harness("stop_sigkills_a_process_ignoring_sigterm_after_the_grace").await
        else {
            return;
        };
        let c = h.id("stubborn");
        h.rt.start(&c, &sh("trap '' TERM; echo ready; sleep 1000"))
            .await
            .unwrap();
        h.log_contains(&c, "ready").await;
        let began = Instant::now();
        h.rt.stop(&c, Duration::from_secs(2)).await.unwrap();
        let took = began.elapsed();
        assert!(took >= Duration::from_secs(2), "{took:?}");
        assert!(took < Duration::from_secs(8), "{took:?}");
        match h.rt.state(&c).await {
            ContainerState::Exited { exit_code, .. } => assert_eq!(exit_code, 137),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn exec_returns_exit_code_and_output() {
        let Some(h) = harness("exec_returns_exit_code_and_output").await else {
            return;
        };
        let c = h.id("exec");
        let command = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        assert!(
            h.rt.exec(&c, &command("true")).await.is_err(),
            "not started"
        );

        let mut spec = sh("sleep 1000");
        spec.env.insert("FOO".to_string(), "from-spec".to_string());
        spec.working_dir = Some("/tmp".to_string());
        h.rt.start(&c, &spec).await.unwrap();
        let (code, output) =
            h.rt.exec(&c, &command("echo out; sleep 0.2; echo err >&2; exit 4"))
                .await
                .unwrap();
        assert_eq!((code, output.as_str()), (4, "out\nerr\n"));
        let (code, output) = h.rt.exec(&c, &command("echo $FOO; pwd")).await.unwrap();
        assert_eq!((code, output.as_str()), (0, "from-spec\n/tmp\n"));

        // Output is capped.
        let (code, output) =
            h.rt.exec(&c, &command("head -c 200000 /dev/zero | tr '\\0' x"))
                .await
                .unwrap();
        assert_eq!((code, output.len()), (0, EXEC_OUTPUT_LIMIT));

        // A program that does not exist: an error or a failing exit code, never success.
        if let Ok((code, output)) = h.rt.exec(&c, &["/no/such/program".to_string()]).await {
            eprintln!("exec of a missing program: {code} {output:?}");
            assert_ne!(code, 0);
        }

        h.rt.stop(&c, Duration::from_secs(1)).await.unwrap();
        assert!(h.rt.exec(&c, &command("true")).await.is_err(), "stopped");
    }

    #[tokio::test]
    async fn env_and_working_dir_reach_the_process() {
        let Some(h) = harness("env_and_working_dir_reach_the_process").await else {
            return;
        };
        let mut spec = sh("echo $FOO; pwd; echo \"[$HOME]\"");
        spec.env.insert("FOO".to_string(), "bar baz".to_string());
        spec.working_dir = Some("/var/tmp".to_string());
        let c = h.id("env");
        h.rt.start(&c, &spec).await.unwrap();
        h.exited(&c).await;
        assert_eq!(
            h.rt.logs(&c, None, false).await.unwrap(),
            "bar baz\n/var/tmp\n[/root]\n"
        );

        // A relative working dir is refused by Docker: a start error, nothing left behind.
        let mut spec = sh("pwd");
        spec.working_dir = Some("relative".to_string());
        let c = h.id("bad-dir");
        let err = h.rt.start(&c, &spec).await.unwrap_err();
        assert!(matches!(err, RuntimeError::Start { .. }), "{err}");
        assert!(h.containers("bad-dir").await.is_empty());
    }

    #[tokio::test]
    async fn an_unknown_image_is_an_image_error() {
        let Some(h) = harness("an_unknown_image_is_an_image_error").await else {
            return;
        };
        let c = h.id("ghost");
        let spec = ContainerSpec {
            image: "no-such-image:v1".to_string(),
            command: vec!["true".to_string()],
            ..ContainerSpec::default()
        };
        let began = Instant::now();
        let err = h.rt.start(&c, &spec).await.unwrap_err();
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{:?}",
            began.elapsed()
        );
        match err {
            RuntimeError::Image { image, why } => {
                assert_eq!(image, "no-such-image:v1");
                assert!(!why.is_empty());
                eprintln!("pull error: {why}");
            }
            other => panic!("{other}"),
        }
        assert_eq!(h.rt.state(&c).await, ContainerState::Unknown);
        assert!(h.containers("ghost").await.is_empty());
    }

    #[tokio::test]
    async fn command_and_args_follow_kubernetes_semantics() {
        let Some(h) = harness("command_and_args_follow_kubernetes_semantics").await else {
            return;
        };
        // An image with both an ENTRYPOINT and a CMD, committed from the base image.
        let base = h.id("base");
        h.rt.start(&base, &sh("true")).await.unwrap();
        h.exited(&base).await;
        let docker_id = h.rt.instance(&base, false).unwrap().docker_id;
        let tag = &h.namespace;
        let image = format!("skiff-test-entrypoint:{tag}");
        let path = format!(
            "/commit?container={docker_id}&repo=skiff-test-entrypoint&tag={tag}&changes={}&changes={}",
            encode(r#"ENTRYPOINT ["/bin/echo", "entrypoint"]"#, b""),
            encode(r#"CMD ["image-cmd"]"#, b"")
        );
        h.rt.call_json("POST", &path, None).await.unwrap();

        let run = |name: &'static str,
                   command: &'static [&'static str],
                   args: &'static [&'static str]| {
            let (rt, c, image) = (h.rt.clone(), h.id(name), image.clone());
            async move {
                let spec = ContainerSpec {
                    image,
                    command: command.iter().map(|s| s.to_string()).collect(),
                    args: args.iter().map(|s| s.to_string()).collect(),
                    ..ContainerSpec::default()
                };
                rt.start(&c, &spec).await.unwrap();
                let deadline = Instant::now() + Duration::from_secs(20);
                while !matches!(rt.state(&c).await, ContainerState::Exited { .. }) {
                    assert!(Instant::now() < deadline);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                rt.logs(&c, None, false).await.unwrap()
            }
        };
        let results = [
            run("neither", &[], &[]).await,
            run("args", &[], &["from-args"]).await,
            run("command", &["/bin/echo", "from-command"], &[]).await,
            run("both", &["/bin/echo", "from-command"], &["from-args"]).await,
        ];
        let removed =
            h.rt.call(
                "DELETE",
                &format!("/images/{}?force=1", encode(&image, b":")),
                None,
                CALL_TIMEOUT,
                Limit::Fail(RESPONSE_LIMIT),
            )
            .await;
        assert_eq!(
            results,
            [
                "entrypoint image-cmd\n",
                "entrypoint from-args\n",
                "from-command\n",
                "from-command from-args\n",
            ]
        );
        // Containers of the image still exist, so it is only untagged; they go with the harness.
        removed.unwrap();
    }

    #[tokio::test]
    async fn a_missing_executable_is_a_start_error() {
        let Some(h) = harness("a_missing_executable_is_a_start_error").await else {
            return;
        };
        let c = h.id("missing");
        for command in ["/no/such/program", "skiff-no-such-program", "/etc"] {
            let spec = ContainerSpec {
                image: IMAGE.to_string(),
                command: vec![command.to_string()],
                ..ContainerSpec::default()
            };
            let began = Instant::now();
            let err = h.rt.start(&c, &spec).await.unwrap_err();
            eprintln!("{command}: {err} after {:?}", began.elapsed());
            assert!(matches!(err, RuntimeError::Start { .. }), "{err}");
            assert_eq!(h.rt.state(&c).await, ContainerState::Unknown);
            assert!(h.containers("missing").await.is_empty());
        }
        assert!(h.rt.logs(&c, None, false).await.is_err());
        // A command that exits 127 itself is an ordinary exit.
        let c = h.id("not-found-inside");
        h.rt.start(&c, &sh("no-such-command")).await.unwrap();
        match h.exited(&c).await {
            ContainerState::Exited {
                exit_code, reason, ..
            } => assert_eq!((exit_code, reason.as_str()), (127, "Error")),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn remove_leaves_no_container_behind() {
        let Some(h) = harness("remove_leaves_no_container_behind").await else {
            return;
        };
        let c = h.id("doomed");
        h.rt.start(&c, &sh("echo one")).await.unwrap();
        h.exited(&c).await;
        h.rt.start(&c, &sh("sleep 1000")).await.unwrap();
        assert_eq!(h.containers("doomed").await.len(), 2);
        // Removing a running container kills it.
        h.rt.remove(&c).await.unwrap();
        assert!(h.containers("doomed").await.is_empty());
        assert_eq!(h.rt.state(&c).await, ContainerState::Unknown);
        assert!(h.rt.logs(&c, None, false).await.is_err());
        assert!(h.rt.logs(&c, None, true).await.is_err());
        h.rt.remove(&c).await.unwrap();
        h.rt.stop(&c, Duration::from_secs(1)).await.unwrap();
        // And it can start afresh.
        h.rt.start(&c, &sh("echo again")).await.unwrap();
        h.exited(&c).await;
        assert_eq!(h.rt.logs(&c, None, false).await.unwrap(), "again\n");
        assert!(h.rt.logs(&c, None, true).await.is_err());
        h.rt.remove(&c).await.unwrap();
        assert!(h.containers("doomed").await.is_empty());
    }

    #[tokio::test]
    async fn stop_all_and_metadata() {
        let Some(h) = harness("stop_all_and_metadata").await else {
            return;
        };
        assert!(
            h.rt.version().starts_with("docker://"),
            "{}",
            h.rt.version()
        );
        assert_eq!(h.rt.pod_ip(), "10.0.0.7");
        assert_eq!(h.rt.root(), None);

        let (a, b) = (h.id("a"), h.id("b"));
        h.rt.start(&a, &sh("sleep 1000")).await.unwrap();
        h.rt.start(&b, &sh("trap '' TERM; echo ready; sleep 1000"))
            .await
            .unwrap();
        h.log_contains(&b, "ready").await;
        let began = Instant::now();
        h.rt.stop_all(Duration::from_secs(1)).await;
        assert!(
            began.elapsed() < Duration::from_secs(8),
            "{:?}",
            began.elapsed()
        );
        assert!(matches!(
            h.rt.state(&a).await,
            ContainerState::Exited { exit_code: 143, .. }
        ));
        assert!(matches!(
            h.rt.state(&b).await,
            ContainerState::Exited { exit_code: 137, .. }
        ));
    }
}
