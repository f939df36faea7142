//! The process runtime: each container's `command` + `args` runs as a real OS process on the
//! node itself, in its own process group, with a clean environment (the kubelet's `PATH`,
//! `HOME` and `LANG` plus the container's `env`). This file owns those processes from spawn to
//! reaping, the per-container files under the runtime's root
//! (`<root>/<namespace>_<pod>_<uid>/<container>/`: one `<instance>.log` per started instance
//! and the default working directory `work/`), and the signals sent to its process groups. It
//! never signals a process group it did not create, never touches files outside its root
//! (except the `workingDir` a spec names, which it only uses), and decides nothing about the
//! pod lifecycle: restarts, back-off and probes belong to the kubelet.
//!
//! The image is recorded but not used: there is no filesystem isolation, the command is looked
//! up on the node's `PATH`. With no `command`, `args` alone are run, as an image without an
//! ENTRYPOINT runs its args (what `kubectl run NAME --image=I -- prog arg` sends); a spec with
//! neither is a start error. Pods share
//! the node's network, so the pod IP is the node's address.
//!
//! When a container's main process exits (on its own or after a signal), whatever else is
//! left in its process group is SIGKILLed, as a container runtime does when a PID namespace's
//! init dies; the exit is reported only once the group is gone. A process that moves itself
//! to another process group or session (a daemon that calls `setsid`) escapes this.
//!
//! Linux only in practice: group members left as zombies (the node's init reaps them lazily)
//! are recognised through `/proc`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{ContainerId, ContainerRuntime, ContainerSpec, ContainerState, RuntimeError};

/// How long an `exec` may run before its process group is killed and it fails.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(10);

/// The kubelet's environment variables a container inherits; everything else comes from its
/// spec.
pub const INHERITED_ENV: [&str; 3] = ["PATH", "HOME", "LANG"];

/// The variable naming a container's root directory, in which each of its volumes appears
/// at its `mountPath` (`$SKIFF_CONTAINER_ROOT/var/run/secrets/kubernetes.io/serviceaccount/
/// token`): there is no filesystem isolation to mount them at the path itself. Read-only
/// mounts are not enforced (the process runs as the kubelet's user).
pub const ROOT_ENV: &str = crate::config::env::CONTAINER_ROOT;

/// At most this much of an `exec`'s output is kept (the rest is read and dropped).
const EXEC_OUTPUT_LIMIT: usize = 64 * 1024;

/// After an `exec`'s process exits, how long to keep reading output its leftovers may flush.
const EXEC_DRAIN: Duration = Duration::from_secs(1);

/// After the main process exits, how long to wait for the rest of its group to disappear.
const GROUP_CLEAR_WAIT: Duration = Duration::from_secs(10);

/// After SIGKILL, how long `stop` waits for the exit to be recorded before giving up.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// Polling interval while waiting for a process group to disappear.
const POLL: Duration = Duration::from_millis(20);

/// Read size when reading a log backwards for `tail`.
const TAIL_CHUNK: u64 = 64 * 1024;

/// Runs containers as processes on the node. A cheap-to-clone handle: clones share the same
/// containers.
#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    pod_ip: String,
    containers: Mutex<HashMap<ContainerId, Entry>>,
}

/// What the runtime knows of one container.
struct Entry {
    /// The spec of the latest start (the image is kept here and nowhere else).
    spec: ContainerSpec,
    /// Environment and working directory of the latest start, reused by `exec`.
    launch: Arc<Launch>,
    /// The instance number the next start gets (its log is `<number>.log`).
    next_instance: u64,
    /// A start is between reserving an instance number and spawning.
    starting: bool,
    /// The latest started instance.
    current: Option<Arc<Instance>>,
}

/// How a container's processes are launched.
#[derive(Debug, Default)]
struct Launch {
    env: Vec<(OsString, OsString)>,
    working_dir: PathBuf,
}

/// One started process (one restart instance of a container).
struct Instance {
    pid: u32,
    started_at: SystemTime,
    /// Signals for the supervising task to send to the process group. Only that task signals,
    /// and only before it has reaped the main process, so the group id cannot have been reused.
    signals: mpsc::UnboundedSender<libc::c_int>,
    /// Set once the main process has exited and its group is gone.
    exit: watch::Receiver<Option<Exit>>,
}

impl Instance {
    fn running(&self) -> bool {
        self.exit.borrow().is_none()
    }
}

/// How an instance ended.
#[derive(Debug, Clone, Copy)]
struct Exit {
    exit_code: i32,
    signal: Option<i32>,
    finished_at: SystemTime,
    /// The rest of the process group was gone (or only zombies) when the exit was recorded.
    group_cleared: bool,
}

impl ProcessRuntime {
    /// A runtime keeping its files under `root` (created on demand) and reporting `pod_ip` as
    /// every pod's IP (the node's address: pods share the host network).
    pub fn new(root: PathBuf, pod_ip: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                root,
                pod_ip,
                containers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The spec a container was last started with (the image is recorded here, unused).
    pub fn spec(&self, id: &ContainerId) -> Option<ContainerSpec> {
        self.lock().get(id).map(|entry| entry.spec.clone())
    }

    /// Stops every running container (SIGTERM, `grace`, SIGKILL), concurrently, and returns
    /// once all are gone. For kubelet shutdown, so that no process outlives it; failures are
    /// logged. Call it once the kubelet no longer starts containers: a start racing with it
    /// is not stopped.
    pub async fn stop_all(&self, grace: Duration) {
        let ids: Vec<ContainerId> = self
            .lock()
            .iter()
            .filter(|(_, entry)| entry.current.as_ref().is_some_and(|inst| inst.running()))
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

    fn current(&self, id: &ContainerId) -> Option<Arc<Instance>> {
        self.lock().get(id).and_then(|entry| entry.current.clone())
    }

    /// `<root>/<namespace>_<pod>_<uid>/<container>`, refusing names that would leave the root.
    fn container_dir(&self, id: &ContainerId) -> Result<PathBuf, String> {
        for (what, value) in [
            ("namespace", &id.namespace),
            ("pod name", &id.pod),
            ("pod uid", &id.uid),
            ("container name", &id.container),
        ] {
            if value.is_empty()
                || value == "."
                || value == ".."
                || value.contains('/')
                || value.contains('\0')
            {
                return Err(format!("invalid {what} {value:?}"));
            }
        }
        Ok(self
            .inner
            .root
            .join(format!("{}_{}_{}", id.namespace, id.pod, id.uid))
            .join(&id.container))
    }

    /// Reserves the next instance number, refusing a second start of a running container.
    fn reserve(
        &self,
        id: &ContainerId,
        spec: &ContainerSpec,
        on_disk: u64,
    ) -> Result<u64, RuntimeError> {
        let mut containers = self.lock();
        let entry = containers.entry(id.clone()).or_insert_with(|| Entry {
            spec: spec.clone(),
            launch: Arc::default(),
            next_instance: 0,
            starting: false,
            current: None,
        });
        if entry.starting {
            return Err(RuntimeError::start(id, "it is already being started"));
        }
        if let Some(inst) = entry.current.as_ref().filter(|inst| inst.running()) {
            return Err(RuntimeError::start(
                id,
                format!("it is already running (pid {})", inst.pid),
            ));
        }
        entry.starting = true;
        entry.next_instance = entry.next_instance.max(on_disk);
        Ok(entry.next_instance)
    }

    /// Opens the instance's log and spawns its process with a supervising task.
    async fn launch(
        &self,
        id: &ContainerId,
        spec: &ContainerSpec,
        launch: &Launch,
        log_path: &Path,
    ) -> Result<Instance, RuntimeError> {
        let argv = argv(spec);
        let Some((program, command_args)) = argv.split_first() else {
            return Err(RuntimeError::start(
                id,
                "the process runtime needs a command or args",
            ));
        };
        let log = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .await
            .map_err(|e| RuntimeError::Other(format!("opening {}: {e}", log_path.display())))?
            .into_std()
            .await;
        let log_err = log
            .try_clone()
            .map_err(|e| RuntimeError::Other(format!("opening {}: {e}", log_path.display())))?;

        let mut command = Command::new(program);
        command
            .args(command_args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&launch.working_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0);
        let started_at = SystemTime::now();
        let spawned = command.spawn();
        // The command holds the parent's copies of the log descriptors.
        drop(command);
        let child = spawned.map_err(|e| RuntimeError::start(id, format!("{program}: {e}")))?;
        let Some(pid) = child.id() else {
            return Err(RuntimeError::start(
                id,
                format!("{program}: exited before it could be tracked"),
            ));
        };
        let pgid = i32::try_from(pid)
            .map_err(|_| RuntimeError::Other(format!("pid {pid} out of range")))?;

        let (signals, signal_rx) = mpsc::unbounded_channel();
        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(supervise(child, pgid, signal_rx, exit_tx, id.label()));
        tracing::debug!(container = %id.label(), pid, image = %spec.image, "started process");
        Ok(Instance {
            pid,
            started_at,
            signals,
            exit,
        })
    }
}

/// What runs: `command` then `args`, or `args` alone when there is no command.
fn argv(spec: &ContainerSpec) -> Vec<&String> {
    spec.command.iter().chain(&spec.args).collect()
}

#[async_trait::async_trait]
impl ContainerRuntime for ProcessRuntime {
    fn version(&self) -> String {
        format!("skiff-process://{}", env!("CARGO_PKG_VERSION"))
    }

    async fn start(&self, id: &ContainerId, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        if argv(spec).is_empty() {
            return Err(RuntimeError::start(
                id,
                "the process runtime needs a command or args",
            ));
        }
        let dir = self
            .container_dir(id)
            .map_err(|why| RuntimeError::start(id, why))?;
        let default_dir = dir.join("work");
        tokio::fs::create_dir_all(&default_dir)
            .await
            .map_err(|e| RuntimeError::Other(format!("creating {}: {e}", default_dir.display())))?;
        let working_dir = match spec.working_dir.as_deref() {
            // A relative workingDir is taken relative to the default one.
            Some(wd) if !wd.is_empty() => default_dir.join(wd),
            _ => default_dir,
        };
        if !tokio::fs::metadata(&working_dir)
            .await
            .is_ok_and(|m| m.is_dir())
        {
            return Err(RuntimeError::start(
                id,
                format!("working dir {} is not a directory", working_dir.display()),
            ));
        }
        let root = dir.join("root");
        lay_out_mounts(&root, &spec.mounts).map_err(|why| RuntimeError::start(id, why))?;
        let mut env = spec.env.clone();
        env.insert(ROOT_ENV.into(), root.display().to_string());
        let launch = Launch {
            env: environment(&env).map_err(|why| RuntimeError::start(id, why))?,
            working_dir,
        };

        let on_disk = instances_on_disk(&dir)
            .await
            .map_err(RuntimeError::Other)?
            .last()
            .map_or(0, |n| n + 1);
        let number = self.reserve(id, spec, on_disk)?;
        let log_path = dir.join(format!("{number}.log"));
        let launched = self.launch(id, spec, &launch, &log_path).await;

        let launched = {
            let mut containers = self.lock();
            match (launched, containers.get_mut(id)) {
                (Ok(inst), Some(entry)) => {
                    entry.starting = false;
                    entry.spec = spec.clone();
                    entry.launch = Arc::new(launch);
                    entry.next_instance = number + 1;
                    entry.current = Some(Arc::new(inst));
                    Ok(())
                }
                (Ok(inst), None) => {
                    // Unreachable: `remove` refuses a container being started. Orphan nothing.
                    let _ = inst.signals.send(libc::SIGKILL);
                    Err(RuntimeError::Other(format!(
                        "container {} vanished while starting",
                        id.label()
                    )))
                }
                (Err(e), entry) => {
                    if let Some(entry) = entry {
                        entry.starting = false;
                    }
                    Err(e)
                }
            }
        };
        if launched.is_err() {
            // The instance number was not used: no log file for it.
            if let Err(e) = tokio::fs::remove_file(&log_path).await {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %log_path.display(), error = %e, "removing unused log");
                }
            }
        }
        launched
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<(), RuntimeError> {
        let Some(inst) = self.current(id) else {
            return Ok(());
        };
        let mut exit = inst.exit.clone();
        if inst.running() {
            tracing::debug!(container = %id.label(), pid = inst.pid, ?grace, "stopping process");
            // A send fails only once the supervisor is done: then the exit is recorded.
            let _ = inst.signals.send(libc::SIGTERM);
            if tokio::time::timeout(grace, wait_exit(&mut exit))
                .await
                .is_err()
            {
                tracing::debug!(container = %id.label(), pid = inst.pid, "grace over, SIGKILL");
                let _ = inst.signals.send(libc::SIGKILL);
            }
        }
        match tokio::time::timeout(KILL_WAIT, wait_exit(&mut exit)).await {
            Ok(Some(done)) if done.group_cleared => Ok(()),
            Ok(Some(_)) => Err(RuntimeError::Other(format!(
                "container {}: processes of group {} outlived SIGKILL",
                id.label(),
                inst.pid
            ))),
            Ok(None) => Err(RuntimeError::Other(format!(
                "container {}: lost track of process {}",
                id.label(),
                inst.pid
            ))),
            Err(_) => Err(RuntimeError::Other(format!(
                "container {}: process {} did not exit {}s after SIGKILL",
                id.label(),
                inst.pid,
                KILL_WAIT.as_secs()
            ))),
        }
    }

    async fn state(&self, id: &ContainerId) -> ContainerState {
        let Some(inst) = self.current(id) else {
            return ContainerState::Unknown;
        };
        let exit = *inst.exit.borrow();
        match exit {
            None => ContainerState::Running {
                started_at: inst.started_at,
                pid: Some(inst.pid),
            },
            Some(exit) => ContainerState::Exited {
                exit_code: exit.exit_code,
                signal: exit.signal,
                started_at: inst.started_at,
                finished_at: exit.finished_at,
                reason: reason(exit.exit_code),
            },
        }
    }

    async fn exec(
        &self,
        id: &ContainerId,
        command: &[String],
    ) -> Result<(i32, String), RuntimeError> {
        let launch = {
            let containers = self.lock();
            match containers.get(id) {
                Some(entry) if entry.current.as_ref().is_some_and(|inst| inst.running()) => {
                    entry.launch.clone()
                }
                _ => {
                    return Err(RuntimeError::Other(format!(
                        "container {} is not running",
                        id.label()
                    )))
                }
            }
        };
        let Some((program, args)) = command.split_first() else {
            return Err(RuntimeError::Other("exec needs a command".to_string()));
        };
        let exec_error = |e: io::Error| RuntimeError::Other(format!("exec {program}: {e}"));
        let (reader, writer) = io::pipe().map_err(exec_error)?;
        let writer_err = writer.try_clone().map_err(exec_error)?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&launch.working_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer_err))
            .process_group(0)
            .kill_on_drop(true);
        let spawned = cmd.spawn();
        // Close the parent's write ends, or the output never reaches end-of-file.
        drop(cmd);
        let mut child = spawned.map_err(exec_error)?;
        let pgid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| RuntimeError::Other(format!("exec {program}: no process id")))?;
        // Kills the group should this future be dropped (a caller's own timeout) before the
        // process is reaped; declared after `child` so that it runs first.
        let mut group = GroupKiller { pgid, armed: true };
        let mut output = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
            .map_err(exec_error)?;

        let mut deadline = Instant::now() + EXEC_TIMEOUT;
        let mut collected = Vec::new();
        let mut buf = [0u8; 4096];
        let mut eof = false;
        let mut status: Option<io::Result<ExitStatus>> = None;
        while !(eof && status.is_some()) {
            tokio::select! {
                read = output.read(&mut buf), if !eof => match read {
                    Ok(0) | Err(_) => eof = true,
                    Ok(n) => {
                        let room = EXEC_OUTPUT_LIMIT.saturating_sub(collected.len());
                        collected.extend_from_slice(&buf[..n.min(room)]);
                    }
                },
                waited = child.wait(), if status.is_none() => {
                    status = Some(waited);
                    // Leftover background processes would hold the output open.
                    group.fire();
                    deadline = deadline.min(Instant::now() + EXEC_DRAIN);
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let Some(status) = status else {
            group.fire();
            let _ = child.wait().await;
            return Err(RuntimeError::Other(format!(
                "exec {program}: timed out after {}s",
                EXEC_TIMEOUT.as_secs()
            )));
        };
        let (exit_code, _) = decode(status.map_err(exec_error)?);
        Ok((exit_code, String::from_utf8_lossy(&collected).into_owned()))
    }

    async fn logs(
        &self,
        id: &ContainerId,
        tail: Option<usize>,
        previous: bool,
    ) -> Result<String, RuntimeError> {
        let dir = self.container_dir(id).map_err(RuntimeError::Other)?;
        let instances = instances_on_disk(&dir).await.map_err(RuntimeError::Other)?;
        let picked = if previous {
            instances.iter().rev().nth(1)
        } else {
            instances.last()
        };
        let Some(number) = picked else {
            let which = if previous { "previous terminated " } else { "" };
            return Err(RuntimeError::Other(format!(
                "no log for {which}container {}",
                id.label()
            )));
        };
        let path = dir.join(format!("{number}.log"));
        tokio::task::spawn_blocking(move || {
            read_tail(&path, tail).map_err(|e| format!("reading {}: {e}", path.display()))
        })
        .await
        .map_err(|e| RuntimeError::Other(format!("reading log: {e}")))?
        .map_err(RuntimeError::Other)
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let dir = self.container_dir(id).map_err(RuntimeError::Other)?;
        {
            let mut containers = self.lock();
            if let Some(entry) = containers.get(id) {
                if entry.starting || entry.current.as_ref().is_some_and(|i| i.running()) {
                    return Err(RuntimeError::Other(format!(
                        "container {} is still running: stop it first",
                        id.label()
                    )));
                }
            }
            containers.remove(id);
        }
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RuntimeError::Other(format!(
                    "removing {}: {e}",
                    dir.display()
                )))
            }
        }
        // The pod's directory goes with its last container (fails harmlessly otherwise).
        if let Some(pod_dir) = dir.parent() {
            let _ = tokio::fs::remove_dir(pod_dir).await;
        }
        Ok(())
    }

    fn pod_ip(&self) -> String {
        self.inner.pod_ip.clone()
    }

    fn root(&self) -> Option<PathBuf> {
        Some(self.inner.root.clone())
    }
}

/// Waits for the main process to exit, forwards signals to its group meanwhile, clears the
/// rest of the group, then records the exit.
async fn supervise(
    mut child: Child,
    pgid: i32,
    mut signals: mpsc::UnboundedReceiver<libc::c_int>,
    exit: watch::Sender<Option<Exit>>,
    label: String,
) {
    let mut listening = true;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            signal = signals.recv(), if listening => match signal {
                // The main process is not reaped yet, so the group id is still ours.
                Some(signal) => {
                    if let Err(e) = signal_group(pgid, signal) {
                        if e.raw_os_error() != Some(libc::ESRCH) {
                            tracing::warn!(container = %label, pgid, signal, error = %e, "signalling process group");
                        }
                    }
                }
                None => listening = false,
            },
        }
    };
    let finished_at = SystemTime::now();
    let (exit_code, signal) = match status {
        Ok(status) => decode(status),
        Err(e) => {
            tracing::warn!(container = %label, pgid, error = %e, "waiting for process");
            (255, None)
        }
    };
    let group_cleared = clear_group(pgid).await;
    if !group_cleared {
        tracing::warn!(container = %label, pgid, "processes of the group outlived SIGKILL");
    }
    tracing::debug!(container = %label, pgid, exit_code, ?signal, "process exited");
    exit.send_replace(Some(Exit {
        exit_code,
        signal,
        finished_at,
        group_cleared,
    }));
}

/// SIGKILLs whatever is left of a process group until it is gone (`kill` answers ESRCH) or
/// only zombies remain, for at most [`GROUP_CLEAR_WAIT`]. Whether it is gone.
async fn clear_group(pgid: i32) -> bool {
    let deadline = Instant::now() + GROUP_CLEAR_WAIT;
    loop {
        match signal_group(pgid, libc::SIGKILL) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return true,
            Err(e) => {
                tracing::warn!(pgid, error = %e, "killing process group");
                return false;
            }
            Ok(()) => {}
        }
        let zombies_only = tokio::task::spawn_blocking(move || {
            group_members(pgid).is_some_and(|members| {
                members
                    .iter()
                    .all(|(_, state)| matches!(state, 'Z' | 'X' | 'x'))
            })
        })
        .await
        .unwrap_or(false);
        if zombies_only {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// SIGKILLs an `exec`'s process group once: when told, or when dropped still armed.
struct GroupKiller {
    pgid: i32,
    armed: bool,
}

impl GroupKiller {
    fn fire(&mut self) {
        if std::mem::take(&mut self.armed) {
            if let Err(e) = signal_group(self.pgid, libc::SIGKILL) {
                if e.raw_os_error() != Some(libc::ESRCH) {
                    tracing::warn!(pgid = self.pgid, error = %e, "killing exec process group");
                }
            }
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.fire();
    }
}

/// Waits until the exit is recorded; None if the supervisor vanished without recording it.
async fn wait_exit(exit: &mut watch::Receiver<Option<Exit>>) -> Option<Exit> {
    exit.wait_for(Option::is_some).await.ok().and_then(|e| *e)
}

/// Sends `signal` to the process group `pgid` (never to pid 0, 1 or -1).
fn signal_group(pgid: i32, signal: libc::c_int) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses exactly
    // the process group `pgid`, which is greater than 1.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The processes of group `pgid` with their state letter (`Z` for a zombie), read from
/// `/proc`; None when `/proc` cannot be read.
fn group_members(pgid: i32) -> Option<Vec<(i32, char)>> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        // The process may have gone meanwhile.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold anything, so split at the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next());
        let pgrp = fields.nth(1).and_then(|s| s.parse::<i32>().ok());
        if let (Some(state), Some(pgrp)) = (state, pgrp) {
            if pgrp == pgid {
                members.push((pid, state));
            }
        }
    }
    Some(members)
}

/// Exit code (128 + n when killed by signal n) and signal of an exit status.
fn decode(status: ExitStatus) -> (i32, Option<i32>) {
    match status.signal() {
        Some(signal) => (128 + signal, Some(signal)),
        None => (status.code().unwrap_or(255), None),
    }
}

/// Kubernetes' wording of an exit.
fn reason(exit_code: i32) -> String {
    if exit_code == 0 { "Completed" } else { "Error" }.to_string()
}

/// Lays out the container's root: each mount's `mountPath` (taken relative to `root`) is a
/// symbolic link to its node directory, made afresh on every start.
fn lay_out_mounts(root: &Path, mounts: &[super::Mount]) -> Result<(), String> {
    if let Err(e) = std::fs::remove_dir_all(root) {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(format!("clearing {}: {e}", root.display()));
        }
    }
    std::fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    for m in mounts {
        let rel = Path::new(m.path.trim_start_matches('/'));
        let plain = rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain || rel.as_os_str().is_empty() {
            return Err(format!("invalid mountPath {:?}", m.path));
        }
        let at = root.join(rel);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::os::unix::fs::symlink(&m.source, &at)
            .map_err(|e| format!("mounting {} at {}: {e}", m.source.display(), m.path))?;
    }
    Ok(())
}

/// The kubelet's [`INHERITED_ENV`] overlaid with the spec's variables.
fn environment(spec_env: &BTreeMap<String, String>) -> Result<Vec<(OsString, OsString)>, String> {
    let mut env: BTreeMap<OsString, OsString> = INHERITED_ENV
        .iter()
        .filter_map(|name| std::env::var_os(name).map(|value| (OsString::from(name), value)))
        .collect();
    for (name, value) in spec_env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(format!("invalid environment variable name {name:?}"));
        }
        if value.contains('\0') {
            return Err(format!("environment variable {name} holds a NUL byte"));
        }
        env.insert(OsString::from(name), OsString::from(value));
    }
    Ok(env.into_iter().collect())
}

/// The instance numbers with a log file in `dir` (`<n>.log`), ascending; none when `dir` does
/// not exist.
async fn instances_on_disk(dir: &Path) -> Result<Vec<u64>, String> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", dir.display())),
    };
    let mut numbers = Vec::new();
    loop {
        match entries.next_entry().await {
            Ok(Some(entry)) => {
                let name = entry.file_name();
                if let Some(n) = name
                    .to_str()
                    .and_then(|name| name.strip_suffix(".log"))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    numbers.push(n);
                }
            }
            Ok(None) => break,
            Err(e) => return Err(format!("reading {}: {e}", dir.display())),
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// The whole file, or its last `tail` lines (a last line without a newline counts), read
/// backwards so that a long log is not read whole.
fn read_tail(path: &Path, tail: Option<usize>) -> io::Result<String> {
    let Some(lines) = tail else {
        return Ok(String::from_utf8_lossy(&std::fs::read(path)?).into_owned());
    };
    if lines == 0 {
        return Ok(String::new());
    }
    let mut file = std::fs::File::open(path)?;
    let mut pos = file.metadata()?.len();
    let at_end = pos;
    // Chunks read so far, last chunk of the file first.
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0;
    while pos > 0 {
        let size = TAIL_CHUNK.min(pos);
        pos -= size;
        let mut chunk = vec![0; size as usize];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk)?;
        let mut scan = chunk.as_slice();
        if pos + size == at_end {
            // The file's final newline ends the last line; it does not start another.
            scan = scan.strip_suffix(b"\n").unwrap_or(scan);
        }
        if let Some(start) = scan.iter().rposition(|&b| {
            if b == b'\n' {
                newlines += 1;
            }
            newlines == lines
        }) {
            let mut out = chunk[start + 1..].to_vec();
            for later in chunks.iter().rev() {
                out.extend_from_slice(later);
            }
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        chunks.push(chunk);
    }
    let out: Vec<u8> = chunks.into_iter().rev().flatten().collect();
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(container: &str) -> ContainerId {
        ContainerId {
            namespace: "default".to_string(),
            pod: "web".to_string(),
            uid: "uid-1".to_string(),
            container: container.to_string(),
        }
    }

    fn sh(script: &str) -> ContainerSpec {
        ContainerSpec {
            image: "busybox".to_string(),
            command: vec!["sh".to_string(), "-c".to_string()],
            args: vec![script.to_string()],
            ..ContainerSpec::default()
        }
    }

    fn runtime(dir: &tempfile::TempDir) -> ProcessRuntime {
        ProcessRuntime::new(dir.path().join("root"), "10.0.0.7".to_string())
    }

    async fn exited(rt: &ProcessRuntime, id: &ContainerId) -> ContainerState {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = rt.state(id).await;
            if matches!(state, ContainerState::Exited { .. }) {
                return state;
            }
            assert!(Instant::now() < deadline, "{id:?} did not exit: {state:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn log_contains(rt: &ProcessRuntime, id: &ContainerId, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = rt.logs(id, None, false).await.unwrap();
            if log.contains(text) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "log never held {text:?}: {log:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pid_of(state: &ContainerState) -> i32 {
        match state {
            ContainerState::Running { pid: Some(pid), .. } => i32::try_from(*pid).unwrap(),
            other => panic!("not running: {other:?}"),
        }
    }

    /// Whether `pid` is a live (non-zombie) process.
    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks for existence.
        if unsafe { libc::kill(pid, 0) } != 0 {
            return false;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
    }

    /// Whether any live process of group `pgid` remains.
    fn group_alive(pgid: i32) -> bool {
        // SAFETY: signal 0 only checks for existence.
        if unsafe { libc::kill(-pgid, 0) } != 0 {
            assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::ESRCH));
            return false;
        }
        group_members(pgid)
            .unwrap()
            .iter()
            .any(|(_, state)| !matches!(state, 'Z' | 'X'))
    }

    #[tokio::test]
    async fn exit_code_and_both_streams_reach_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(&dir);
        let c = id("app");
        rt.start(&c, &sh("echo hello; echo oops >&2; exit 3"))
            .await
            .unwrap();
        match exited(&rt, &c).await {
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
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rt.logs(&c, None, false).await.unwrap(), "hello\noops\n");
        assert_eq!(rt.logs(&c, Some(1), false).await.unwrap(), "oops\n");
        let file = dir.path().join("root/default_web_uid-1/app/0.log");
        assert_eq!(std::fs::read_to_string(file).unwrap(), "hello\noops\n");

        rt.start(&c, &sh("exit 0")).await.unwrap();
        match exited(&rt, &c).await {
            ContainerState::Exited { reason, .. } => assert_eq!(reason, "Completed"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn stop_sends_sigterm_and_returns_within_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(&dir);
        let c = id("sleeper");
        let spec = ContainerSpec {
            command: vec!["sleep".to_string(), "30".to_string()],
            ..ContainerSpec::default()
        };
        rt.start(&c, &spec).await.unwrap();
        let pid = pid_of(&rt.state(&c).await);
        assert!(alive(pid));
        assert!(
            rt.start(&c, &spec).await.is_err(),
            "second start of a running container"
        );

        let began = Instant::now();
        rt.stop(&c, Duration::from_secs(2)).await.unwrap();
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
        match rt.state(&c).await {
            ContainerState::Exited {
                exit_code,
                signal,
                reason,
                ..
            } => {
                assert_eq!(signal, Some(libc::SIGTERM));
                assert_eq!(exit_code, 128 + libc::SIGTERM);
                assert_eq!(reason, "Error");
            }
            other => panic!("{other:?}"),
        }
        // SAFETY: signal 0 only checks for existence.
        assert_eq!(unsafe { libc::kill(-pid, 0) }, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::ESRCH));
        // Stopping again is a no-op.
        rt.stop(&c, Duration::from_secs(1)).await.unwrap();
    }

    #[tokio::test]
    async fn stop_sigkills_a_process_ignoring_sigterm_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(&dir);
        let c = id("stubborn");
        rt.start(&c, &sh("trap '' TERM; echo ready; sleep 30"))
            .await
            .unwrap();
        let pid = pid_of(&rt.state(&c).await);
        log_contains(&rt, &c, "ready").await;

        let began = Instant::now();
        rt.stop(&c, Duration::from_secs(1)).await.unwrap();
        let took = began.elapsed();
        assert!(took >= Duration::from_secs(1), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        // SAFETY: signal 0 only checks for existence.
        assert_eq!(unsafe { libc::kill(pid, 0) }, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::ESRCH));
        assert!(!group_alive(pid));
        match rt.state(&c).await {
            ContainerState::Exited {
                exit_code, signal, ..
            } => {
                assert_eq!(signal, Some(libc::SIGKILL));
                assert_eq!(exit_code, 137);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn stop_leaves_no_orphan_of_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(&dir);

        // A background child that dies with the group's SIGTERM.
        let c = id("shell");
        rt.start(&c, &sh("sleep 30 & echo $!; wait")).await.unwrap();
        let pgid = pid_of(&rt.state(&c).await);
        let log = log_contains(&rt, &c, "\n").await;
        let child: i32 = log.trim().parse().unwrap();
        assert!(alive(child));
        rt.stop(&c, Duration::from_secs(2)).await.unwrap();
        assert!(!alive(child), "background child {child} survived");
        assert!(!group_alive(pgid));

        // A background child that ignores SIGTERM and outlives the shell.
        let c = id("stubborn-child");
        rt.start(&c, &sh("(trap '' TERM; sleep 30) & echo $!; wait"))
            .await
            .unwrap();
        let pgid = pid_of(&rt.state(&c).await);
        log_contains(&rt, &c, "\n").await;
        let members: Vec<i32> = group_members(pgid)
            .unwrap()
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        assert!(members.len() >= 2, "{members:?}");
        let began = Instant::now();
        rt.stop(&c, Duration::from_secs(2)).await.unwrap();
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
        for pid in members {
            assert!(!alive(pid), "{pid} survived");
        }
        assert!(!group_alive(pgid));
    }

    #[tokio::test]
    async fn leftovers_are_killed_when_the_main_process_exits() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(&dir);
        let c = id("daemonizer");
        rt.start(&c, &sh("sleep 30 & echo $!")).await.unwrap();
        let pgid = pid_of(&rt.state(&c).await);
        match exited(&rt, &c).await {
            ContainerState::Exited { exit_code, .. } => assert_eq!(exit_code, 0),
            other => panic!("{other:?}"),
        }
        let child: i32 = rt
            .logs(&c, None, false)
            .await
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!alive(child));
        assert!(!group_alive(pgid));
    }

    #[tokio::test]
    async fn restart_instances_keep_separate_logs() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(&dir);
        let c = id("app");
        assert!(rt.logs(&c, None, false).await.is_err());
        rt.start(&c, &sh("echo first")).await.unwrap();
        exited(&rt, &c).await;
        assert!(
            rt.logs(&c, None, true).await.is_err(),
            "no previous instance yet"
        );
        rt.start(&c, &sh("echo second")).await.unwrap();
        exited(&rt, &c).await;
        assert_eq!(rt.logs(&c, None, false).await.unwrap(), "second\n");
        assert_eq!(rt.logs(&c, None, true).await.unwrap(), "first\n");

        // A new runtime on the same root (kubelet restart) continues the numbering.
        let again = runtime(&dir);
        assert_eq!(again.logs(&c, None, false).await.unwrap(), "second\n");
        again.start(&c, &sh("echo third")).await.unwrap();
        exited(&again, &c).await;
        assert_eq!(again.logs(&c, None, false).await.unwrap(), "third\n");
        assert_eq!(again.logs(&c, None, true).await.unwrap(), "second\n");
        let container_dir = dir.path().join("root/default_web_uid-1/app");
        for n in 0..3 {
            assert!(container_dir.join(format!("{n}.log")).is_file());
        }
    }

    #[tokio::test]
    async fn env_and_working_dir_reach_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(&dir);
        let work = dir.path().join("somewhere");
        std::fs::create_dir(&work).unwrap();
        let mut spec = sh("echo $FOO; pwd; echo \"[$CARGO_PKG_NAME]\"");
        spec.env.insert("FOO".to_string(), "bar baz".to_string());
        spec.working_dir = Some(work.to_str().unwrap().to_string());
        let c = id("env");
        rt.start(&c, &spec).await.unwrap();
        exited(&rt, &c).await;
        let work = work.canonicalize().unwrap();
        assert_eq!(
            rt.logs(&c, None, false).await.unwrap(),
            format!("bar baz\n{}\n[]\n", work.display())
        );
        assert_eq!(rt.spec(&c).unwrap().image, "busybox");

        // Without workingDir: the container's own directory under the root.
        let c = id("default-dir");
        rt.start(&c, &sh("pwd")).await.unwrap();
        exited(&rt, &c).await;
        let expected = dir
            .path()
            .join("root/default_web_uid-1/default-dir/work")
            .canonicalize()
            .unwrap();
        assert_eq!(
            rt.logs(&c, None, false).await.unwrap(),
            format!("{}\n", expected.display())
        );

        // A missing working dir is a start error.
        let mut spec = sh("pwd");
        spec.working_dir = Some(dir.path().join("nope").to_str().unwrap().to_string());
        let err = rt.start(&id("bad-dir"), &spec).await.unwrap_err();
        assert!(matches!(err, RuntimeError::Start { .. }), "{err}");
    }

    #[tokio::test]
    async fn exec_returns_exit_code_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(&dir);
        let c = id("exec");
        let command = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        assert!(rt.exec(&c, &command("true")).await.is_err(), "not started");

        let mut spec = sh("sleep 30");
        spec.env.insert("FOO".to_string(), "from-spec".to_string());
        rt.start(&c, &spec).await.unwrap();
        let (code, output) = rt
            .exec(&c, &command("echo out; echo err >&2; exit 4"))
            .await
            .unwrap();
        assert_eq!(code, 4);
        assert_eq!(output, "out\nerr\n");
        let (code, output) = rt.exec(&c, &command("echo $FOO; pwd")).await.unwrap();
        assert_eq!(code, 0);
        let work = dir
            .path()
            .join("root/default_web_uid-1/exec/work")
            .canonicalize()
            .unwrap();
        assert_eq!(output, format!("from-spec\n{}\n", work.display()));

        // A background child does not hold exec up.
        let began = Instant::now();
        let (code, output) = rt
            .exec(&c, &command("sleep 30 & echo quick"))
            .await
            .unwrap();
        assert_eq!((code, output.as_str()), (0, "quick\n"));
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );

        // A caller giving up on an exec leaves none of its processes behind.
        let marker = dir.path().join("exec-pid");
        let script = format!("sleep 30 & echo $! > {}; wait", marker.display());
        let gave_up =
            tokio::time::timeout(Duration::from_secs(1), rt.exec(&c, &command(&script))).await;
        assert!(gave_up.is_err());
        let orphan: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(orphan) {
            assert!(Instant::now() < deadline, "exec child {orphan} survived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        assert!(rt
            .exec(&c, &["/no/such/program".to_string()])
            .await
            .is_err());
        rt.stop(&c, Duration::from_secs(1)).await.unwrap();
        assert!(rt.exec(&c, &command("true")).await.is_err(), "stopped");
    }

    #[tokio::test]
    async fn missing_program_or_command_is_a_start_error() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(&dir);
        let c = id("missing");
        for command in ["/no/such/program", "skiff-no-such-program"] {
            let spec = ContainerSpec {
                command: vec![command.to_string()],
                ..ContainerSpec::default()
            };
            let err = rt.start(&c, &spec).await.unwrap_err();
            assert!(matches!(err, RuntimeError::Start { .. }), "{err}");
            assert_eq!(rt.state(&c).await, ContainerState::Unknown);
        }
        assert!(
            rt.logs(&c, None, false).await.is_err(),
            "no log left behind"
        );

        let spec = ContainerSpec {
            image: "nginx".to_string(),
            ..ContainerSpec::default()
        };
        match rt.start(&c, &spec).await.unwrap_err() {
            RuntimeError::Start { why, .. } => {
                assert_eq!(why, "the process runtime needs a command or args")
            }
            other => panic!("{other}"),
        }
    }

    #[tokio::test]
    async fn args_alone_run_like_an_image_without_an_entrypoint() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(&dir);
        let c = id("args-only");
        let spec = ContainerSpec {
            image: "python:3.11".to_string(),
            args: vec!["sh".into(), "-c".into(), "echo from-args".into()],
            ..ContainerSpec::default()
        };
        rt.start(&c, &spec).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = rt.logs(&c, None, false).await.unwrap_or_default();
            if log.contains("from-args") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "args never ran");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn stop_all_remove_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(&dir);
        assert_eq!(
            rt.version(),
            format!("skiff-process://{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(rt.pod_ip(), "10.0.0.7");
        assert_eq!(rt.root(), Some(dir.path().join("root")));

        let (a, b) = (id("a"), id("b"));
        rt.start(&a, &sh("sleep 30")).await.unwrap();
        rt.start(&b, &sh("trap '' TERM; echo ready; sleep 30"))
            .await
            .unwrap();
        let pids = [pid_of(&rt.state(&a).await), pid_of(&rt.state(&b).await)];
        log_contains(&rt, &b, "ready").await;
        assert!(rt.remove(&a).await.is_err(), "still running");

        rt.clone().stop_all(Duration::from_millis(300)).await;
        for pid in pids {
            assert!(!group_alive(pid));
        }
        assert!(matches!(rt.state(&a).await, ContainerState::Exited { .. }));
        assert!(matches!(rt.state(&b).await, ContainerState::Exited { .. }));

        rt.remove(&a).await.unwrap();
        assert_eq!(rt.state(&a).await, ContainerState::Unknown);
        assert!(!dir.path().join("root/default_web_uid-1/a").exists());
        assert!(rt.logs(&a, None, false).await.is_err());
        rt.remove(&b).await.unwrap();
        assert!(!dir.path().join("root/default_web_uid-1").exists());
        rt.remove(&b).await.unwrap();
        rt.stop(&b, Duration::from_secs(1)).await.unwrap();

        let mut bad = id("x");
        bad.pod = "..".to_string();
        assert!(rt.start(&bad, &sh("true")).await.is_err());
    }

    #[test]
    fn tail_counts_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(read_tail(&path, None).unwrap(), "a\nb\nc\n");
        assert_eq!(read_tail(&path, Some(0)).unwrap(), "");
        assert_eq!(read_tail(&path, Some(1)).unwrap(), "c\n");
        assert_eq!(read_tail(&path, Some(2)).unwrap(), "b\nc\n");
        assert_eq!(read_tail(&path, Some(3)).unwrap(), "a\nb\nc\n");
        assert_eq!(read_tail(&path, Some(9)).unwrap(), "a\nb\nc\n");
        std::fs::write(&path, "a\nb\npartial").unwrap();
        assert_eq!(read_tail(&path, Some(1)).unwrap(), "partial");
        assert_eq!(read_tail(&path, Some(2)).unwrap(), "b\npartial");
        std::fs::write(&path, "").unwrap();
        assert_eq!(read_tail(&path, Some(2)).unwrap(), "");
        std::fs::write(&path, "\n\n").unwrap();
        assert_eq!(read_tail(&path, Some(1)).unwrap(), "\n");

        // Across read chunks.
        let all: String = (0..30_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &all).unwrap();
        let tail: String = (20_000..30_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(read_tail(&path, Some(10_000)).unwrap(), tail);
        assert_eq!(read_tail(&path, Some(100_000)).unwrap(), all);
    }
}
