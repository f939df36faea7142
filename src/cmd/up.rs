//! `skiff up`: the embedded default for one machine — a nats-server child (unless
//! `--nats-url` names one), the API server with its store in `--data-dir`, a scheduler, the
//! controllers and `--nodes` kubelets, in one process. Every component still talks to the API
//! server through its own NATS client and identity, exactly as separate processes would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args as ClapArgs;

use crate::apiserver::run::{self as apiserver_run, Extras};
use crate::client::leader::ElectionTimings;
use crate::client::{ApiClient, ClientOptions};
use crate::config::{ApiServerConfig, FileConfig, NatsConfig};
use crate::kubelet::{Kubelet, KubeletOptions};

/// Flags of `skiff up`.
#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// Data directory: store, certificates, tokens, kubeconfig, pod logs.
    #[arg(long, env = crate::config::env::DATA_DIR, default_value = ".skiff")]
    pub data_dir: PathBuf,
    /// Use this NATS server instead of starting one.
    #[arg(long, env = crate::config::env::NATS_URL)]
    pub nats_url: Option<String>,
    /// Port of the nats-server started here (default 4222; when that is taken, a free one,
    /// said on stderr). A port given here that is taken is refused.
    #[arg(long)]
    pub nats_port: Option<u16>,
    /// HTTPS address of the Kubernetes API.
    #[arg(long, default_value = "0.0.0.0:6443")]
    pub https_bind: String,
    /// Number of kubelets (nodes skiff-node-1 … N).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Container runtime of the kubelets: `process`, `docker` or `fake`.
    #[arg(long, default_value = "process")]
    pub runtime: String,
    /// Seconds without a Lease renewal before a node is NotReady.
    #[arg(long, default_value_t = 50)]
    pub node_monitor_grace_period: u64,
    /// Seconds pods on an unreachable node are tolerated before eviction.
    #[arg(long, default_value_t = 300)]
    pub pod_eviction_timeout: u64,
}

/// Supervises the nats-server child: restarts it with back-off when it dies (every
/// component reconnects by itself), and stops it when dropped. The child also dies with this
/// process, even on `kill -9` (PR_SET_PDEATHSIG), so it never keeps the port afterwards.
struct NatsSupervisor {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pid: std::sync::Arc<std::sync::atomic::AtomicI32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Back-off between restarts of the nats-server child: doubling from 250 ms to at most 10 s,
/// back to the start after a minute of uptime.
const NATS_RESTART_MIN: Duration = Duration::from_millis(250);
const NATS_RESTART_MAX: Duration = Duration::from_secs(10);

impl NatsSupervisor {
    /// Starts nats-server on `port` with `config` (its users) and waits until it listens.
    fn start(port: u16, dir: &Path, config: &str) -> anyhow::Result<NatsSupervisor> {
        let log_path = dir.join("nats-server.log");
        let conf = log_path.with_file_name("nats-server.conf");
        crate::files::write_private(&conf, config.as_bytes())
            .with_context(|| format!("writing {}", conf.display()))?;
        let mut child = spawn_nats(port, &log_path)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("nats-server exited ({status}); see {}", log_path.display());
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("nats-server did not listen on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pid = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(child.id() as i32));
        let (s, p) = (stop.clone(), pid.clone());
        // The thread that spawns the child must outlive it: PR_SET_PDEATHSIG fires when the
        // spawning *thread* ends. So the supervising thread spawns every restart itself.
        let thread = std::thread::Builder::new()
            .name("nats-supervisor".into())
            .spawn(move || supervise(child, port, &log_path, &s, &p))?;
        Ok(NatsSupervisor {
            stop,
            pid,
            thread: Some(thread),
        })
    }
}

/// Waits for the child; restarts it with back-off until told to stop.
fn supervise(
    mut child: Child,
    port: u16,
    log_path: &Path,
    stop: &std::sync::atomic::AtomicBool,
    pid: &std::sync::atomic::AtomicI32,
) {
    use std::sync::atomic::Ordering;
    let mut backoff = NATS_RESTART_MIN;
    loop {
        let started = Instant::now();
        let status = child.wait();
        // Reaped: its pid may be anyone's now, so nobody may signal it any more.
        pid.store(0, Ordering::SeqCst);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = NATS_RESTART_MIN;
        }
        let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        tracing::warn!(%how, retry_in = ?backoff, log = %log_path.display(), "nats-server exited; restarting it");
        eprintln!(
            "skiff up: nats-server exited ({how}); restarting it in {backoff:?} (log: {})",
            log_path.display()
        );
        crate::metrics::counter(
            "skiff_up_nats_restarts_total",
            "Restarts of the nats-server child of skiff up.",
            &[],
        )
        .inc(&[]);
        loop {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(NATS_RESTART_MAX);
            if stop.load(Ordering::SeqCst) {
                return;
            }
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                // Someone else took the port while ours was down: the components would
                // reconnect to a bus skiff up does not own. Stop everything instead.
                eprintln!(
                    "skiff up: port {port} was taken by another process while nats-server was \
                     down; stopping rather than running on a foreign bus"
                );
                // SAFETY: signalling this very process; its SIGTERM handler shuts down.
                unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
                return;
            }
            match spawn_nats(port, log_path) {
                Ok(c) => {
                    pid.store(c.id() as i32, Ordering::SeqCst);
                    child = c;
                    eprintln!("skiff up: nats-server restarted on 127.0.0.1:{port}");
                    break;
                }
                Err(e) => eprintln!("skiff up: restarting nats-server: {e:#}"),
            }
        }
        // A stop that came while the new child was starting.
        if stop.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
    }
}

/// One nats-server on loopback `port`, logging (appending) to `log_path`, killed when this
/// thread or process dies.
fn spawn_nats(port: u16, log_path: &Path) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)?;
    let parent = std::process::id() as libc::pid_t;
    let mut command = Command::new("nats-server");
    // Its configuration sits beside its log: users, permissions, the message size.
    let conf = log_path.with_file_name("nats-server.conf");
    command
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: prctl, getppid and kill are async-signal-safe, as pre_exec requires.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
    command
        .spawn()
        .context("starting nats-server (install it: apt-get install -y nats-server)")
}

impl Drop for NatsSupervisor {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::SeqCst);
        let pid = self.pid.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: signalling our own child, not yet reaped (the supervisor zeroes the pid
            // as soon as it has reaped it; a restart in between is killed by the supervisor
            // itself once it sees the flag).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The port for the nats-server child: `asked` if free; when taken, the default is replaced
/// by a free port (and said so), while an explicitly asked port is refused, never shared
/// with a foreign server (Debian's package runs one on 4222 as a system service).
fn nats_port(asked: Option<u16>) -> anyhow::Result<u16> {
    let port = asked.unwrap_or(DEFAULT_NATS_PORT);
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        return Ok(port);
    }
    if asked.is_some() {
        bail!(
            "port {port} is already in use (another nats-server?): skiff up will not run on a \
             bus it did not start; free the port, choose another with --nats-port, or name a \
             server with --nats-url"
        );
    }
    let free = std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port();
    eprintln!(
        "skiff up: port {DEFAULT_NATS_PORT} is already in use (another nats-server?); \
         starting ours on {free} instead"
    );
    Ok(free)
}

/// The file in the data dir where `skiff up` writes the NATS URL its components use, so
/// that `skiff trace` finds the bus wherever it is.
pub const NATS_URL_FILE: &str = "nats-url";

/// The nats-server port `skiff up` starts on unless told otherwise.
const DEFAULT_NATS_PORT: u16 = 4222;

use apiserver_run::ensure_tokens;

/// The NATS users of the nats-server `skiff up` runs (`user,password` lines, 0600), for
/// `skiff trace --data-dir` and restarts.
pub const NATS_USERS_FILE: &str = "nats-users.csv";

/// The password of each NATS user `skiff up` needs, made on first start and kept.
fn ensure_nats_users(
    data_dir: &Path,
    users: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let path = data_dir.join(NATS_USERS_FILE);
    let mut known = read_nats_users(data_dir);
    let before = known.len();
    for u in users {
        known
            .entry(u.clone())
            .or_insert_with(|| uuid::Uuid::new_v4().simple().to_string());
    }
    if known.len() != before || !path.exists() {
        let text: String = known.iter().map(|(u, p)| format!("{u},{p}\n")).collect();
        crate::files::write_private(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(known)
}

/// The NATS users `skiff up` keeps in `data_dir` (none when it has not run there).
pub fn read_nats_users(data_dir: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(data_dir.join(NATS_USERS_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(','))
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .collect()
}

/// The NATS user a component of `skiff up` connects as.
fn nats_user_of(identity: &str) -> &str {
    match identity {
        "system:kube-scheduler" => "scheduler",
        "system:kube-controller-manager" => "controller-manager",
        other => other,
    }
}

/// Runs everything until SIGTERM or SIGINT.
pub fn run(args: Args) -> anyhow::Result<()> {
    crate::files::private_dir(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    eprintln!("skiff up: data in {}", data_dir.display());
    let nodes: Vec<String> = (1..=args.nodes)
        .map(|i| format!("skiff-node-{i}"))
        .collect();
    // The nats-server it runs has a user per component and node (never anonymous), each
    // held to its own subjects, and no monitoring port.
    let (_nats, nats_url, nats_users) = match &args.nats_url {
        Some(url) => (None, url.clone(), None),
        None => {
            let port = nats_port(args.nats_port)?;
            let mut names: Vec<String> = ["apiserver", "scheduler", "controller-manager", "trace"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            names.extend(nodes.iter().map(|n| format!("system:node:{n}")));
            let users = ensure_nats_users(&data_dir, &names)?;
            let node_users: Vec<(String, String)> = nodes
                .iter()
                .map(|n| (n.clone(), users[&format!("system:node:{n}")].clone()))
                .collect();
            // Its links use TLS with the cluster CA: the server certificate is the API
            // server's (SANs 127.0.0.1, localhost, the host name), made here first.
            let pki = crate::apiserver::certs::Pki::ensure(
                &data_dir,
                &ApiServerConfig::default().tls_sans,
            )
            .context("preparing certificates")?;
            let (cert, key) = (pki.dir.join("server.crt"), pki.dir.join("server.key"));
            let config = super::natsconf::render_local(&users, &node_users, Some((&cert, &key)));
            eprintln!("skiff up: starting nats-server on 127.0.0.1:{port} (TLS)");
            let child = NatsSupervisor::start(port, &data_dir, &config)?;
            (Some(child), format!("tls://127.0.0.1:{port}"), Some(users))
        }
    };
    std::fs::write(data_dir.join(NATS_URL_FILE), format!("{nats_url}\n"))
        .with_context(|| format!("writing {}", data_dir.join(NATS_URL_FILE).display()))?;
    let nats_ca = nats_users
        .as_ref()
        .map(|_| data_dir.join("pki").join("ca.crt"));
    let mut users = vec![
        ("admin".to_string(), "system:masters"),
        // The components hold their bootstrap roles (`authz::policy`), not system:masters.
        ("system:kube-scheduler".to_string(), ""),
        ("system:kube-controller-manager".to_string(), ""),
    ];
    users.extend(
        nodes
            .iter()
            .map(|n| (format!("system:node:{n}"), "system:nodes")),
    );
    let config = ApiServerConfig {
        data_dir: data_dir.clone(),
        https_bind: args.https_bind.clone(),
        // New pods tolerate a lost node as long as the node lifecycle controller waits.
        default_toleration_seconds: args.pod_eviction_timeout,
        nats_user: nats_users.as_ref().map(|_| "apiserver".to_string()),
        nats_password: nats_users.as_ref().map(|u| u["apiserver"].clone()),
        ..Default::default()
    };
    let tokens = ensure_tokens(&config.token_file(), &users)?;
    let kubeconfig = data_dir.join("kubeconfig");
    // The CA pods verify the API server with (ConfigMap `kube-root-ca.crt`).
    let pki = crate::apiserver::certs::Pki::ensure(&data_dir, &config.tls_sans)
        .context("preparing certificates")?;
    let root_ca =
        Some(std::fs::read_to_string(pki.dir.join("ca.crt")).context("reading the cluster CA")?);
    let runtime = args.runtime.clone();
    // The docker runtime's Engine and pod network, as the config file's `[kubelet]` says.
    let engine = crate::kubelet::run::Docker::of(&crate::config::load_file(None)?.kubelet);
    let https_bind = args.https_bind.clone();
    let lifecycle = crate::controllers::nodelifecycle::NodeLifecycleOptions {
        grace: Duration::from_secs(args.node_monitor_grace_period),
        eviction_timeout: Duration::from_secs(args.pod_eviction_timeout),
    };
    eprintln!("skiff up: API server (NATS {nats_url}, HTTPS {}), scheduler, controllers, {} {runtime} node(s)", args.https_bind, nodes.len());
    let tree = FileConfig {
        nats: NatsConfig {
            url: nats_url.clone(),
            ca_file: nats_ca.clone(),
        },
        apiserver: config,
        ..Default::default()
    };
    apiserver_run::run_with(tree, move |url| async move {
        let connect = |user: &str| {
            let token = tokens.get(user).cloned().unwrap_or_default();
            let mut options = ClientOptions::new(&url, user, &token);
            options.retry = crate::client::identity::component_retry(user);
            options.nats_ca = nats_ca.clone();
            options.nats_user = nats_users.as_ref().map(|u| {
                let name = nats_user_of(user);
                (name.to_string(), u.get(name).cloned().unwrap_or_default())
            });
            async move { ApiClient::connect(options).await }
        };
        let mut extras = Extras::default();
        let scheduler = crate::scheduler::run::start_scheduler(
            connect("system:kube-scheduler").await?,
            "skiff-up",
        )
        .await;
        extras.keep.push(Box::new(scheduler));
        let controllers = crate::controllers::run::start_controllers(
            connect("system:kube-controller-manager").await?,
            "skiff-up",
            ElectionTimings::default(),
            lifecycle,
            root_ca.clone(),
        );
        extras.keep.push(Box::new(controllers));
        for (i, node) in nodes.iter().enumerate() {
            let rt = crate::kubelet::run::runtime(
                &runtime,
                data_dir.join("pods").join(node),
                "127.0.0.1",
                &engine,
            )
            .await?;
            let client = connect(&format!("system:node:{node}")).await?;
            let mut options = KubeletOptions::new(node);
            options.api_endpoint = Some(crate::kubelet::run::endpoint(&https_bind)?);
            if rt.name != "fake" {
                options.volume_root = Some(data_dir.join("pods").join(node).join("volumes"));
            }
            // Each node's processes get their own loopback addresses: 127.<10+i>.x.y (docker
            // pods share the host's network: their address is the node's).
            if rt.name != "docker" {
                options.pod_subnet = Some(10 + (i % 240) as u8);
            }
            let kubelet = actix::Actor::start(Kubelet::new(options, client, rt.runtime.clone()));
            extras.keep.push(Box::new(kubelet));
            extras.on_shutdown.push(Box::pin(async move {
                rt.stop_all(Duration::from_secs(10)).await
            }));
        }
        eprintln!(
            "skiff up: ready — export KUBECONFIG={}",
            kubeconfig.display()
        );
        anyhow::Ok(extras)
    })
}
