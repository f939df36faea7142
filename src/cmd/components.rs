//! The command lines of `skiff scheduler`, `skiff controller-manager` and `skiff kubelet`:
//! flags (each with its `SKIFF_*` variable) laid over the config file's `[nats]` section and
//! the component's own; credentials from flags and variables only. The processes themselves
//! start in [`crate::scheduler::run`], [`crate::controllers::run`] and [`crate::kubelet::run`].

use std::path::PathBuf;

use clap::Args as ClapArgs;

use crate::client::identity::Credentials;
use crate::config::{self, env, layer, ConfigError, FileConfig};

/// How a component reaches the API server: the config file, the bus and its credentials.
#[derive(Debug, Clone, ClapArgs)]
pub struct Connection {
    /// Config file (TOML: `[nats]` and this component's section).
    #[arg(long, env = env::CONFIG)]
    pub config: Option<PathBuf>,
    /// NATS server URL, or a comma-separated list of a cluster's servers.
    #[arg(long, env = env::NATS_URL)]
    pub nats_url: Option<String>,
    /// The CA of the NATS server's certificate: connect with TLS and verify it.
    #[arg(long, env = env::NATS_CA_FILE)]
    pub nats_ca_file: Option<PathBuf>,
    /// NATS user, when the server requires one (deploy/nats/nats.conf gives each component
    /// its own, with subject permissions).
    #[arg(long, env = env::NATS_USER)]
    pub nats_user: Option<String>,
    /// NATS password.
    #[arg(long, env = env::NATS_PASSWORD, hide_env_values = true)]
    pub nats_password: Option<String>,
    /// Bearer token of this component's identity.
    #[arg(long, env = env::TOKEN, hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the bearer token instead (read once at start).
    #[arg(long, env = env::TOKEN_PATH, conflicts_with = "token")]
    pub token_path: Option<PathBuf>,
    /// Print the effective configuration (`[nats]` and this component's section) as TOML and
    /// exit; credentials are only said to be set or not.
    #[arg(long)]
    pub print_config: bool,
}

impl Connection {
    /// The file's tree with `[nats]` overridden by these flags.
    fn tree(&self) -> Result<FileConfig, ConfigError> {
        let mut tree = config::load_file(self.config.as_deref())?;
        layer!(tree.nats.url, self.nats_url);
        layer!(tree.nats.ca_file, some self.nats_ca_file);
        Ok(tree)
    }

    /// The credentials given.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            nats_user: self.nats_user.clone(),
            nats_password: self.nats_password.clone(),
            token: self.token.clone(),
            token_path: self.token_path.clone(),
        }
    }

    /// `--print-config`: the sections, then what credentials there are (never their values).
    fn print(&self, tree: &FileConfig, section: &str) -> anyhow::Result<()> {
        print!("{}", tree.render(&["nats", section], &[])?);
        let set = |v: bool| if v { "set" } else { "not set" };
        println!(
            "# credentials (flags and environment only): nats_user = {:?}, nats_password {}, token {}",
            self.nats_user.as_deref().unwrap_or(""),
            set(self.nats_password.is_some()),
            match (&self.token, &self.token_path) {
                (Some(_), _) => "set".to_string(),
                (None, Some(p)) => format!("from {}", p.display()),
                (None, None) => "not set".to_string(),
            }
        );
        Ok(())
    }
}

/// Flags of `skiff scheduler` (over `[scheduler]`).
#[derive(Debug, Clone, ClapArgs)]
pub struct SchedulerArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Where `/metrics` (Prometheus text) and `/healthz` are served over plain HTTP ("" turns
    /// them off).
    #[arg(long, env = env::METRICS_BIND)]
    pub metrics_bind: Option<String>,
    /// The user the token belongs to.
    #[arg(long)]
    pub user: Option<String>,
    /// This replica's identity in the leader election (default: host name and pid).
    #[arg(long)]
    pub identity: Option<String>,
}

impl SchedulerArgs {
    /// The effective configuration.
    pub fn resolve(&self) -> Result<FileConfig, ConfigError> {
        let mut tree = self.connection.tree()?;
        let c = &mut tree.scheduler;
        layer!(c.metrics_bind, self.metrics_bind);
        layer!(c.user, self.user);
        layer!(c.identity, some self.identity);
        Ok(tree)
    }
}

/// Flags of `skiff controller-manager` (over `[controller_manager]`).
#[derive(Debug, Clone, ClapArgs)]
pub struct ControllerManagerArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Where `/metrics` (Prometheus text) and `/healthz` are served over plain HTTP ("" turns
    /// them off).
    #[arg(long, env = env::METRICS_BIND)]
    pub metrics_bind: Option<String>,
    /// The user the token belongs to.
    #[arg(long)]
    pub user: Option<String>,
    /// This replica's identity in the leader election (default: host name and pid).
    #[arg(long)]
    pub identity: Option<String>,
    /// Seconds without a Lease renewal before a node is NotReady.
    #[arg(long, env = env::NODE_MONITOR_GRACE_PERIOD)]
    pub node_monitor_grace_period: Option<u64>,
    /// Seconds pods on an unreachable node are tolerated before eviction.
    #[arg(long, env = env::POD_EVICTION_TIMEOUT)]
    pub pod_eviction_timeout: Option<u64>,
    /// The cluster CA (PEM) published in every namespace as ConfigMap `kube-root-ca.crt`,
    /// for pods to verify the API server with (kube's `--root-ca-file`); none: not published.
    #[arg(long, env = env::ROOT_CA_FILE)]
    pub root_ca_file: Option<PathBuf>,
}

impl ControllerManagerArgs {
    /// The effective configuration.
    pub fn resolve(&self) -> Result<FileConfig, ConfigError> {
        let mut tree = self.connection.tree()?;
        let c = &mut tree.controller_manager;
        layer!(c.metrics_bind, self.metrics_bind);
        layer!(c.user, self.user);
        layer!(c.identity, some self.identity);
        layer!(c.node_monitor_grace_period, self.node_monitor_grace_period);
        layer!(c.pod_eviction_timeout, self.pod_eviction_timeout);
        layer!(c.root_ca_file, some self.root_ca_file);
        Ok(tree)
    }
}

/// Flags of `skiff kubelet` (over `[kubelet]`).
#[derive(Debug, Clone, ClapArgs)]
pub struct KubeletArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Where `/metrics` (Prometheus text) and `/healthz` are served over plain HTTP ("" turns
    /// them off).
    #[arg(long, env = env::METRICS_BIND)]
    pub metrics_bind: Option<String>,
    /// The Node's name (default: the host name).
    #[arg(long, env = env::NODE_NAME)]
    pub node_name: Option<String>,
    /// `process` (real processes), `docker` (containers, through `--docker-socket`), `fake`
    /// (no processes), or `auto` (docker when its socket exists, else process).
    #[arg(long, env = env::RUNTIME)]
    pub runtime: Option<String>,
    /// Where pod logs, working directories and volumes are kept.
    #[arg(long, env = env::KUBELET_ROOT)]
    pub root: Option<PathBuf>,
    /// Get this node's own NATS user from the API server first: `--nats-user`/`--nats-password`
    /// are then the shared `kubelet-bootstrap` credentials, which may do nothing else.
    #[arg(long, env = env::NATS_BOOTSTRAP, num_args = 0..=1, default_missing_value = "true")]
    pub nats_bootstrap: Option<bool>,
    /// Seconds a node Lease is valid; the kubelet renews it every quarter of that, as the
    /// real kubelet does (keep the controller-manager's grace period above the renewal).
    #[arg(long, env = env::NODE_LEASE_DURATION_SECONDS)]
    pub node_lease_duration_seconds: Option<u64>,
    /// The address of this node; `auto` picks the address this host reaches NATS from (in a
    /// container: the container's own address).
    #[arg(long, env = env::NODE_IP)]
    pub node_ip: Option<String>,
    /// The API server's HTTPS `host:port` as pods reach it: their `KUBERNETES_SERVICE_HOST`
    /// and `_PORT` (what in-cluster clients connect to); none: pods are not told.
    #[arg(long, env = env::APISERVER_ENDPOINT)]
    pub apiserver_endpoint: Option<String>,
    /// The Docker Engine's socket (the docker runtime).
    #[arg(long, env = env::DOCKER_SOCKET)]
    pub docker_socket: Option<PathBuf>,
    /// Pod containers' Docker network mode: `host`, `kubelet` (the kubelet's own
    /// container's network) or any other mode.
    #[arg(long, env = env::DOCKER_NETWORK)]
    pub docker_network: Option<String>,
}

impl KubeletArgs {
    /// The effective configuration.
    pub fn resolve(&self) -> Result<FileConfig, ConfigError> {
        let mut tree = self.connection.tree()?;
        let c = &mut tree.kubelet;
        layer!(c.metrics_bind, self.metrics_bind);
        layer!(c.node_name, some self.node_name);
        layer!(c.runtime, self.runtime);
        layer!(c.root, self.root);
        layer!(c.nats_bootstrap, self.nats_bootstrap);
        layer!(
            c.node_lease_duration_seconds,
            self.node_lease_duration_seconds
        );
        layer!(c.node_ip, self.node_ip);
        layer!(c.apiserver_endpoint, some self.apiserver_endpoint);
        layer!(c.docker_socket, self.docker_socket);
        layer!(c.docker_network, self.docker_network);
        c.validate()?;
        Ok(tree)
    }
}

/// `skiff scheduler`.
pub fn run_scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    let tree = args.resolve()?;
    if args.connection.print_config {
        return args.connection.print(&tree, "scheduler");
    }
    super::title::set("skiff-scheduler", &[]);
    crate::scheduler::run::run(tree.nats, tree.scheduler, args.connection.credentials())
}

/// `skiff controller-manager`.
pub fn run_controller_manager(args: ControllerManagerArgs) -> anyhow::Result<()> {
    let tree = args.resolve()?;
    if args.connection.print_config {
        return args.connection.print(&tree, "controller_manager");
    }
    super::title::set("skiff-controller-manager", &[]);
    crate::controllers::run::run(
        tree.nats,
        tree.controller_manager,
        args.connection.credentials(),
    )
}

/// `skiff kubelet`.
pub fn run_kubelet(args: KubeletArgs) -> anyhow::Result<()> {
    let mut tree = args.resolve()?;
    crate::kubelet::run::settle(&tree.nats, &mut tree.kubelet);
    if args.connection.print_config {
        return args.connection.print(&tree, "kubelet");
    }
    let node = tree.kubelet.node_name.clone().unwrap_or_default();
    super::title::set("skiff-kubelet", &[&node]);
    crate::kubelet::run::run(tree.nats, tree.kubelet, args.connection.credentials())
}
