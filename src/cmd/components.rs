//! `skiff scheduler`, `skiff controller-manager` and `skiff kubelet`: each connects to NATS
//! with its own identity and token, starts its actors, and stops on SIGTERM/SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args as ClapArgs;
use serde::Serialize;

use crate::client::leader::ElectionTimings;
use crate::client::{ApiClient, ClientOptions};
use crate::config::env;
use crate::controllers;
use crate::kubelet::runtime::docker::{self, DockerRuntime};
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
    /// The CA of the NATS server's certificate: connect with TLS and verify it.
    #[arg(long, env = "SKIFF_NATS_CA_FILE")]
    pub nats_ca_file: Option<PathBuf>,
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
    /// Where `/metrics` (Prometheus text) and `/healthz` are served over plain HTTP ("" turns
    /// them off).
    #[arg(long, env = "SKIFF_METRICS_BIND", default_value = "0.0.0.0:10259")]
    pub metrics_bind: String,
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
    /// Where `/metrics` (Prometheus text) and `/healthz` are served over plain HTTP ("" turns
    /// them off).
    #[arg(long, env = "SKIFF_METRICS_BIND", default_value = "0.0.0.0:10257")]
    pub metrics_bind: String,
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
    /// The cluster CA (PEM) published in every namespace as ConfigMap `kube-root-ca.crt`,
    /// for pods to verify the API server with (kube's `--root-ca-file`); none: not published.
    #[arg(long, env = "SKIFF_ROOT_CA_FILE")]
    pub root_ca_file: Option<PathBuf>,
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
    /// Where `/metrics` (Prometheus text) and `/healthz` are served over plain HTTP ("" turns
    /// them off).
    #[arg(long, env = "SKIFF_METRICS_BIND", default_value = "0.0.0.0:10255")]
    pub metrics_bind: String,
    /// The Node's name (default: the host name).
    #[arg(long, env = "SKIFF_NODE_NAME")]
    pub node_name: Option<String>,
    /// `process` (real processes), `docker` (containers, through SKIFF_DOCKER_SOCKET),
    /// `fake` (no processes), or `auto` (docker when its socket exists, else process).
    #[arg(long, env = "SKIFF_RUNTIME", default_value = "process")]
    pub runtime: String,
    /// Where the process runtime keeps logs and working directories.
    #[arg(
        long,
        env = "SKIFF_KUBELET_ROOT",
        default_value = "/var/lib/skiff/kubelet"
    )]
    pub root: PathBuf,
    /// Get this node's own NATS user from the API server first: `--nats-user`/`--nats-password`
    /// are then the shared `kubelet-bootstrap` credentials, which may do nothing else.
    #[arg(long, env = "SKIFF_NATS_BOOTSTRAP")]
    pub nats_bootstrap: bool,
    /// Seconds a node Lease is valid; the kubelet renews it every quarter of that, as the
    /// real kubelet does (keep the controller-manager's grace period above the renewal).
    #[arg(long, env = "SKIFF_NODE_LEASE_DURATION_SECONDS", default_value_t = 40)]
    pub node_lease_duration_seconds: u64,
    /// The address of this node; `auto` picks the address this host reaches NATS from (in a
    /// container: the container's own address).
    #[arg(long, env = "SKIFF_NODE_IP", default_value = "127.0.0.1")]
    pub node_ip: String,
    /// The API server's HTTPS `host:port` as pods reach it: their `KUBERNETES_SERVICE_HOST`
    /// and `_PORT` (what in-cluster clients connect to); none: pods are not told.
    #[arg(long, env = "SKIFF_APISERVER_ENDPOINT")]
    pub apiserver_endpoint: Option<String>,
}

/// `host:port` → (host, port); a wildcard host (`0.0.0.0`, `[::]`) becomes loopback, where
/// pods on the same machine reach a server listening on every address.
pub fn endpoint(text: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = text
        .rsplit_once(':')
        .with_context(|| format!("{text:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("{text:?}: the port is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host {
        "" | "0.0.0.0" | "::" => "127.0.0.1",
        h => h,
    };
    Ok((host.to_string(), port))
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

/// Serves `/metrics` and `/healthz` on `bind` (plain HTTP) inside the current actix System;
/// a bind failure is logged, not fatal: metrics must not keep a component from running.
pub fn serve_metrics(bind: &str, component: &str) {
    if bind.is_empty() {
        return;
    }
    let server = actix_web::HttpServer::new(|| {
        actix_web::App::new()
            .route(
                "/metrics",
                actix_web::web::get().to(|| async {
                    actix_web::HttpResponse::Ok()
                        .content_type("text/plain; version=0.0.4; charset=utf-8")
                        .body(crate::metrics::render())
                }),
            )
            .route("/healthz", actix_web::web::get().to(|| async { "ok" }))
    })
    .workers(1)
    .disable_signals()
    .bind(bind);
    match server {
        Ok(s) => {
            tracing::info!(%bind, %component, "serving /metrics");
            actix::spawn(async move {
                let _ = s.run().await;
            });
        }
        Err(e) => tracing::warn!(%bind, %component, error = %e, "cannot serve /metrics"),
    }
}

/// Asks the API server (as the shared `kubelet-bootstrap` NATS user, with the node-bootstrap
/// token) for a NATS user of this node's own; returns its password, chosen here on first
/// start and kept (0600) in `root`: the API server binds a node name to the first password
/// that claimed it, so a restarted kubelet must come back with the same one.
async fn bootstrap_nats_user(c: &Connection, node: &str, root: &Path) -> anyhow::Result<String> {
    use super::natsconf::{BootstrapAnswer, NodeBootstrap, BOOTSTRAP_INBOX, BOOTSTRAP_SUBJECT};
    let mut o = async_nats::ConnectOptions::new()
        .name("skiff kubelet bootstrap")
        .custom_inbox_prefix(BOOTSTRAP_INBOX)
        .request_timeout(Some(Duration::from_secs(10)));
    if let Some(u) = &c.nats_user {
        o = o.user_and_password(u.clone(), c.nats_password.clone().unwrap_or_default());
    }
    if let Some(ca) = &c.nats_ca_file {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    let nats = o
        .connect(crate::client::nats_servers(&c.nats_url))
        .await
        .with_context(|| format!("connecting to {} to bootstrap", c.nats_url))?;
    let kept = root.join(format!("nats-node-{node}.password"));
    let password = match std::fs::read_to_string(&kept) {
        Ok(p) if !p.trim().is_empty() => p.trim().to_string(),
        _ => {
            let p = uuid::Uuid::new_v4().simple().to_string();
            crate::files::create_private_dir(root)
                .with_context(|| format!("creating {}", root.display()))?;
            crate::files::write_private(&kept, p.as_bytes())
                .with_context(|| format!("writing {}", kept.display()))?;
            p
        }
    };
    let body = rmp_serde::to_vec_named(&NodeBootstrap {
        node: node.into(),
        password: password.clone(),
    })?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        crate::api::subject::HEADER_TOKEN,
        format!("Bearer {}", c.bearer()?).as_str(),
    );
    // The API server may still be starting: ask until it answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let reply = loop {
        match nats
            .request_with_headers(BOOTSTRAP_SUBJECT, headers.clone(), body.clone().into())
            .await
        {
            Ok(r) => break r,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "node bootstrap not answered yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => anyhow::bail!("node bootstrap: {e}"),
        }
    };
    let answer: BootstrapAnswer = rmp_serde::from_slice(&reply.payload)?;
    if let Some(e) = answer.error {
        anyhow::bail!("node bootstrap refused: {e}");
    }
    tracing::info!(%node, "own NATS user issued");
    Ok(password)
}

/// This host's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The rate limit of a component's client. Kubelets get the kubelet's own defaults
/// (`--kube-api-qps=50 --kube-api-burst=100`); the scheduler and controller-manager are
/// unlimited here, since kube-scheduler's 50/100 would cap binding at ~25 pods/s, 80× below
/// what Skiff's scheduler sustains: the API server's load shedding protects it from them.
pub fn component_retry(user: &str) -> crate::client::RetryPolicy {
    if user.starts_with("system:node:") {
        crate::client::RetryPolicy::limited(50.0, 100)
    } else {
        crate::client::RetryPolicy::default()
    }
}

async fn connect(c: &Connection, user: &str) -> anyhow::Result<ApiClient> {
    let mut options = ClientOptions::new(&c.nats_url, user, &c.bearer()?);
    options.retry = component_retry(user);
    if let Some(u) = &c.nats_user {
        options.nats_user = Some((u.clone(), c.nats_password.clone().unwrap_or_default()));
    }
    options.nats_ca = c.nats_ca_file.clone();
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
    _service_accounts: actix::Addr<controllers::per_namespace::PerNamespaceController>,
    _root_ca: Option<actix::Addr<controllers::per_namespace::PerNamespaceController>>,
}

/// Starts the controller-manager's actors (inside an actix System); `root_ca` (PEM) is
/// published in every namespace when given.
pub fn start_controllers(
    client: ApiClient,
    identity: &str,
    timings: ElectionTimings,
    nodes: controllers::nodelifecycle::NodeLifecycleOptions,
    root_ca: Option<String>,
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
        _service_accounts: actix::Actor::start(controllers::serviceaccount::controller(
            client.clone(),
            leading.clone(),
        )),
        _root_ca: root_ca.map(|pem| {
            actix::Actor::start(controllers::rootca::controller(
                client.clone(),
                leading.clone(),
                pem,
            ))
        }),
        _namespaces: actix::Actor::start(controllers::namespace::NamespaceController::new(
            client, leading,
        )),
    }
}

/// A node's container runtime, and what to stop with its kubelet.
pub struct NodeRuntime {
    /// The runtime the kubelet uses.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Its name (`process`, `fake`, `docker`), as chosen (`auto` resolved).
    pub name: &'static str,
    /// The concrete runtime, for stopping every container on shutdown.
    stopper: Option<Stopper>,
}

enum Stopper {
    Process(ProcessRuntime),
    Docker(DockerRuntime),
}

impl NodeRuntime {
    /// Stops every container this runtime started (kubelet shutdown).
    pub async fn stop_all(&self, grace: Duration) {
        match &self.stopper {
            Some(Stopper::Process(p)) => p.stop_all(grace).await,
            Some(Stopper::Docker(d)) => d.stop_all(grace).await,
            None => {}
        }
    }
}

/// Where the docker runtime finds the Engine API.
pub fn docker_socket() -> PathBuf {
    std::env::var_os("SKIFF_DOCKER_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(docker::DEFAULT_SOCKET))
}

/// The Docker network mode of pod containers (`SKIFF_DOCKER_NETWORK`): `host` by default (pods
/// share the node's network, pod IP = node IP); `kubelet` joins the kubelet's own container
/// (docker compose: the pod IP is then the kubelet container's address, as with processes).
pub fn docker_network() -> String {
    match std::env::var("SKIFF_DOCKER_NETWORK").ok().as_deref() {
        None | Some("") => docker::DEFAULT_NETWORK.into(),
        Some("kubelet") => format!("container:{}", hostname()),
        Some(other) => other.into(),
    }
}

/// A runtime by name: `process`, `fake`, `docker`, or `auto` (docker when its socket is
/// there, else process).
pub async fn runtime(kind: &str, root: PathBuf, ip: &str) -> anyhow::Result<NodeRuntime> {
    let kind = match kind {
        "auto" if docker_socket().exists() => "docker",
        "auto" => "process",
        k => k,
    };
    Ok(match kind {
        "process" => {
            let p = ProcessRuntime::new(root, ip.into());
            NodeRuntime {
                runtime: Arc::new(p.clone()),
                name: "process",
                stopper: Some(Stopper::Process(p)),
            }
        }
        "fake" => NodeRuntime {
            runtime: Arc::new(FakeRuntime::new(ip.into())),
            name: "fake",
            stopper: None,
        },
        "docker" => {
            let socket = docker_socket();
            let d = DockerRuntime::connect(socket.clone(), ip.into(), docker_network())
                .await
                .with_context(|| format!("the Docker Engine at {}", socket.display()))?;
            NodeRuntime {
                runtime: Arc::new(d.clone()),
                name: "docker",
                stopper: Some(Stopper::Docker(d)),
            }
        }
        other => anyhow::bail!("unknown runtime {other:?}: want process, docker, fake or auto"),
    })
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
        serve_metrics(&args.metrics_bind, "scheduler");
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
        serve_metrics(&args.metrics_bind, "controller-manager");
        let root_ca = match &args.root_ca_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading --root-ca-file {}", path.display()))?,
            ),
            None => None,
        };
        let client = connect(&args.connection, &args.user).await?;
        let _controllers = start_controllers(
            client,
            &identity,
            ElectionTimings::default(),
            args.lifecycle(),
            root_ca,
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
    actix::System::new().block_on(async move {
        serve_metrics(&args.metrics_bind, "kubelet");
        let rt = runtime(&args.runtime, args.root.join(&node), &args.node_ip).await?;
        let identity = format!("system:node:{node}");
        let client = if args.nats_bootstrap {
            let password = bootstrap_nats_user(&args.connection, &node, &args.root).await?;
            let mut own = args.connection.clone();
            own.nats_user = Some(identity.clone());
            own.nats_password = Some(password);
            // nats-server picks the new user up on its next reload: retry until it has.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                match connect(&own, &identity).await {
                    Ok(c) => break c,
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        tracing::debug!(error = %e, "own NATS user not active yet");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        } else {
            connect(&args.connection, &identity).await?
        };
        let mut options = KubeletOptions::new(&node);
        options.node_ip = args.node_ip.clone();
        options.api_endpoint = args
            .apiserver_endpoint
            .as_deref()
            .map(endpoint)
            .transpose()?;
        if rt.name != "fake" {
            options.volume_root = Some(args.root.join(&node).join("volumes"));
        }
        let lease = args.node_lease_duration_seconds.max(1);
        options.lease_duration = Duration::from_secs(lease);
        options.lease_renew = Duration::from_millis(lease * 250);
        let _kubelet = actix::Actor::start(Kubelet::new(options, client, rt.runtime.clone()));
        tracing::info!(%node, runtime = rt.name, "skiff kubelet ready");
        super::apiserver::wait_for_signal().await;
        tracing::info!("stopping every container");
        rt.stop_all(Duration::from_secs(10)).await;
        anyhow::Ok(())
    })
}
