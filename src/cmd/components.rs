//! `skiff scheduler`, `skiff controller-manager` and `skiff kubelet`: each connects to NATS
//! with its own identity and token, starts its actors, and stops on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args as ClapArgs;
use serde::Serialize;

use crate::client::leader::ElectionTimings;
use crate::client::{ApiClient, ClientOptions};
use crate::config::env;
use crate::controllers;
use crate::kubelet::runtime::fake::FakeRuntime;
use crate::kubelet::runtime::process::ProcessRuntime;
use crate::kubelet::runtime::ContainerRuntime;
use crate::kubelet::{Kubelet, KubeletOptions};
use crate::scheduler::{Scheduler, SchedulerOptions};

/// How a component reaches the API server.
#[derive(Debug, Clone, ClapArgs, Serialize)]
pub struct Connection {
    /// NATS server URL.
    #[arg(long, env = env::NATS_URL, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// NATS user, when the server requires one (deploy/nats/nats.conf gives each component
    /// its own, with subject permissions).
    #[arg(long, env = env::NATS_USER)]
    pub nats_user: Option<String>,
    /// NATS password.
    #[arg(long, env = env::NATS_PASSWORD, hide_env_values = true)]
    #[serde(serialize_with = "redacted")]
    pub nats_password: Option<String>,
    /// Bearer token of this component's identity.
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    #[serde(serialize_with = "redacted")]
    pub token: Option<String>,
    /// A file holding the bearer token instead (read once at start).
    #[arg(long, env = "SKIFF_TOKEN_PATH", conflicts_with = "token")]
    pub token_path: Option<PathBuf>,
    /// Print the effective options (credentials redacted) as TOML and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
}

/// Credentials are shown as set or not, never their value.
fn redacted<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

impl Connection {
    /// The bearer token, from `--token` or the file `--token-path` names.
    pub fn bearer(&self) -> anyhow::Result<String> {
        match (&self.token, &self.token_path) {
            (Some(t), _) => Ok(t.trim().to_string()),
            (None, Some(path)) => Ok(std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?
                .trim()
                .to_string()),
            (None, None) => anyhow::bail!(
                "no token: give --token or --token-path (SKIFF_TOKEN, SKIFF_TOKEN_PATH)"
            ),
        }
    }
}

/// Prints a component's effective options as TOML (`--print-config`).
pub fn print_config<T: Serialize>(component: &str, args: &T) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct File<'a, T> {
        #[serde(flatten)]
        inner: std::collections::BTreeMap<&'a str, &'a T>,
    }
    let file = File {
        inner: [(component, args)].into_iter().collect(),
    };
    let text = toml::to_string_pretty(&file)?;
    println!("{}", text.trim_end());
    Ok(())
}

/// Flags of `skiff scheduler`.
#[derive(Debug, Clone, ClapArgs, Serialize)]
pub struct SchedulerArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub connection: Connection,
    /// The user the token belongs to.
    #[arg(long, default_value = "system:kube-scheduler")]
    pub user: String,
    /// This replica's identity in the leader election (default: host name and pid).
    #[arg(long)]
    pub identity: Option<String>,
}

/// Flags of `skiff controller-manager`.
#[derive(Debug, Clone, ClapArgs, Serialize)]
pub struct ControllerManagerArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub connection: Connection,
    /// The user the token belongs to.
    #[arg(long, default_value = "system:kube-controller-manager")]
    pub user: String,
    /// This replica's identity in the leader election (default: host name and pid).
    #[arg(long)]
    pub identity: Option<String>,
    /// Seconds without a Lease renewal before a node is NotReady.
    #[arg(long, env = "SKIFF_NODE_MONITOR_GRACE_PERIOD", default_value_t = 50)]
    pub node_monitor_grace_period: u64,
    /// Seconds pods on an unreachable node are tolerated before eviction.
    #[arg(long, env = "SKIFF_POD_EVICTION_TIMEOUT", default_value_t = 300)]
    pub pod_eviction_timeout: u64,
}

impl ControllerManagerArgs {
    /// The node lifecycle timings the flags ask for.
    pub fn lifecycle(&self) -> controllers::nodelifecycle::NodeLifecycleOptions {
        controllers::nodelifecycle::NodeLifecycleOptions {
            grace: Duration::from_secs(self.node_monitor_grace_period),
            eviction_timeout: Duration::from_secs(self.pod_eviction_timeout),
        }
    }
}

/// Flags of `skiff kubelet`.
#[derive(Debug, Clone, ClapArgs, Serialize)]
pub struct KubeletArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub connection: Connection,
    /// The Node's name (default: the host name).
    #[arg(long, env = "SKIFF_NODE_NAME")]
    pub node_name: Option<String>,
    /// `process` (real processes) or `fake` (no processes).
    #[arg(long, env = "SKIFF_RUNTIME", default_value = "process")]
    pub runtime: String,
    /// Where the process runtime keeps logs and working directories.
    #[arg(
        long,
        env = "SKIFF_KUBELET_ROOT",
        default_value = "/var/lib/skiff/kubelet"
    )]
    pub root: PathBuf,
    /// The address of this node; `auto` picks the address this host reaches NATS from (in a
    /// container: the container's own address).
    #[arg(long, env = "SKIFF_NODE_IP", default_value = "127.0.0.1")]
    pub node_ip: String,
}

/// The local address the route to `nats_url` leaves from (no packet is sent: a UDP
/// "connect" only picks the route); loopback when it cannot be told.
pub fn address_towards(nats_url: &str) -> String {
    let host_port = nats_url
        .split("://")
        .last()
        .unwrap_or(nats_url)
        .rsplit('@')
        .next()
        .unwrap_or("")
        .split(',')
        .next()
        .unwrap_or("")
        .to_string();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .ok()
        .and_then(|mut a| a.next());
    let local = addr.and_then(|a| {
        let s = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
        s.connect(a).ok()?;
        s.local_addr().ok()
    });
    local
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into())
}

/// This host's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

async fn connect(c: &Connection, user: &str) -> anyhow::Result<ApiClient> {
    let mut options = ClientOptions::new(&c.nats_url, user, &c.bearer()?);
    if let Some(u) = &c.nats_user {
        options.nats_user = Some((u.clone(), c.nats_password.clone().unwrap_or_default()));
    }
    ApiClient::connect(options)
        .await
        .with_context(|| format!("connecting to {} as {user}", c.nats_url))
}

/// Starts a scheduler's actors (inside an actix System).
pub async fn start_scheduler(client: ApiClient, identity: &str) -> actix::Addr<Scheduler> {
    actix::Actor::start(Scheduler::new(SchedulerOptions::new(identity), client))
}

/// The controllers of the controller-manager, kept alive together.
pub struct ControllerSet {
    _election: crate::client::leader::Election,
    _replica_sets: actix::Addr<controllers::replicaset::ReplicaSetController>,
    _deployments: actix::Addr<controllers::deployment::DeploymentController>,
    _gc: actix::Addr<controllers::gc::GarbageCollector>,
    _nodes: actix::Addr<controllers::nodelifecycle::NodeLifecycleController>,
    _namespaces: actix::Addr<controllers::namespace::NamespaceController>,
}

/// Starts the controller-manager's actors (inside an actix System).
pub fn start_controllers(
    client: ApiClient,
    identity: &str,
    timings: ElectionTimings,
    nodes: controllers::nodelifecycle::NodeLifecycleOptions,
) -> ControllerSet {
    let (election, leading) = controllers::leader(&client, identity, timings);
    ControllerSet {
        _election: election,
        _replica_sets: actix::Actor::start(controllers::replicaset::ReplicaSetController::new(
            client.clone(),
            leading.clone(),
        )),
        _deployments: actix::Actor::start(controllers::deployment::DeploymentController::new(
            client.clone(),
            leading.clone(),
        )),
        _gc: actix::Actor::start(controllers::gc::GarbageCollector::new(
            client.clone(),
            leading.clone(),
        )),
        _nodes: actix::Actor::start(controllers::nodelifecycle::NodeLifecycleController::new(
            client.clone(),
            leading.clone(),
            nodes,
        )),
        _namespaces: actix::Actor::start(controllers::namespace::NamespaceController::new(
            client, leading,
        )),
    }
}

/// A runtime by name.
pub fn runtime(
    kind: &str,
    root: PathBuf,
    ip: &str,
) -> anyhow::Result<(Arc<dyn ContainerRuntime>, Option<ProcessRuntime>)> {
    match kind {
        "process" => {
            let p = ProcessRuntime::new(root, ip.into());
            Ok((Arc::new(p.clone()), Some(p)))
        }
        "fake" => Ok((Arc::new(FakeRuntime::new(ip.into())), None)),
        other => anyhow::bail!("unknown runtime {other:?}: want process or fake"),
    }
}

/// `skiff scheduler`.
pub fn run_scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    if args.connection.print_config {
        return print_config("scheduler", &args);
    }
    super::title::set("skiff-scheduler", &[]);
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    actix::System::new().block_on(async move {
        let client = connect(&args.connection, &args.user).await?;
        let _scheduler = start_scheduler(client, &identity).await;
        tracing::info!(%identity, "skiff scheduler ready");
        super::apiserver::wait_for_signal().await;
        anyhow::Ok(())
    })
}

/// `skiff controller-manager`.
pub fn run_controller_manager(args: ControllerManagerArgs) -> anyhow::Result<()> {
    if args.connection.print_config {
        return print_config("controller-manager", &args);
    }
    super::title::set("skiff-controller-manager", &[]);
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    actix::System::new().block_on(async move {
        let client = connect(&args.connection, &args.user).await?;
        let _controllers = start_controllers(
            client,
            &identity,
            ElectionTimings::default(),
            args.lifecycle(),
        );
        tracing::info!(%identity, "skiff controller-manager ready");
        super::apiserver::wait_for_signal().await;
        anyhow::Ok(())
    })
}

/// `skiff kubelet`.
pub fn run_kubelet(mut args: KubeletArgs) -> anyhow::Result<()> {
    let node = args.node_name.clone().unwrap_or_else(hostname);
    args.node_name = Some(node.clone());
    if args.node_ip == "auto" {
        args.node_ip = address_towards(&args.connection.nats_url);
    }
    if args.connection.print_config {
        return print_config("kubelet", &args);
    }
    super::title::set("skiff-kubelet", &[&node]);
    let (rt, process) = runtime(&args.runtime, args.root.join(&node), &args.node_ip)?;
    actix::System::new().block_on(async move {
        let client = connect(&args.connection, &format!("system:node:{node}")).await?;
        let mut options = KubeletOptions::new(&node);
        options.node_ip = args.node_ip.clone();
        let _kubelet = actix::Actor::start(Kubelet::new(options, client, rt));
        tracing::info!(%node, runtime = %args.runtime, "skiff kubelet ready");
        super::apiserver::wait_for_signal().await;
        if let Some(p) = process {
            tracing::info!("stopping every container");
            p.stop_all(Duration::from_secs(10)).await;
        }
        anyhow::Ok(())
    })
}
