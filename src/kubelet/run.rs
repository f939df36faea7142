//! The kubelet process (`skiff kubelet`, and the kubelets inside `skiff up`): its container
//! runtime chosen, its own NATS user bootstrapped when asked, the kubelet actor run until
//! SIGTERM or SIGINT, every container stopped on the way out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::runtime::docker::{self, DockerRuntime};
use super::runtime::fake::FakeRuntime;
use super::runtime::process::ProcessRuntime;
use super::runtime::ContainerRuntime;
use super::{Kubelet, KubeletOptions};
use crate::client::identity::Credentials;
use crate::config::{KubeletConfig, NatsConfig};
use crate::process::{hostname, serve_metrics};

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

/// Asks the API server (as the shared `kubelet-bootstrap` NATS user, with the node-bootstrap
/// token) for a NATS user of this node's own; returns its password, chosen here on first
/// start and kept (0600) in `root`: the API server binds a node name to the first password
/// that claimed it, so a restarted kubelet must come back with the same one.
async fn bootstrap_nats_user(
    nats_config: &NatsConfig,
    c: &Credentials,
    node: &str,
    root: &Path,
) -> anyhow::Result<String> {
    use crate::cmd::natsconf::{
        BootstrapAnswer, NodeBootstrap, BOOTSTRAP_INBOX, BOOTSTRAP_SUBJECT,
    };
    let mut o = async_nats::ConnectOptions::new()
        .name("skiff kubelet bootstrap")
        .custom_inbox_prefix(BOOTSTRAP_INBOX)
        .request_timeout(Some(Duration::from_secs(10)));
    if let Some(u) = &c.nats_user {
        o = o.user_and_password(u.clone(), c.nats_password.clone().unwrap_or_default());
    }
    if let Some(ca) = &nats_config.ca_file {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    let nats = o
        .connect(crate::client::nats_servers(&nats_config.url))
        .await
        .with_context(|| format!("connecting to {} to bootstrap", nats_config.url))?;
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

/// Where the docker runtime finds the Engine, and the network its pods join.
#[derive(Debug, Clone)]
pub struct Docker {
    /// The Engine API's socket.
    pub socket: PathBuf,
    /// Pod containers' network mode: `host` by default (pods share the node's network, pod
    /// IP = node IP); `kubelet` joins the kubelet's own container (docker compose: the pod
    /// IP is then the kubelet container's address, as with processes).
    pub network: String,
}

impl Docker {
    /// As `[kubelet]` says.
    pub fn of(config: &KubeletConfig) -> Docker {
        let network = match config.docker_network.as_str() {
            "" => docker::DEFAULT_NETWORK.into(),
            "kubelet" => format!("container:{}", hostname()),
            other => other.into(),
        };
        Docker {
            socket: config.docker_socket.clone(),
            network,
        }
    }
}

impl Default for Docker {
    fn default() -> Docker {
        Docker::of(&KubeletConfig::default())
    }
}

/// A runtime by name: `process`, `fake`, `docker`, or `auto` (docker when its socket is
/// there, else process).
pub async fn runtime(
    kind: &str,
    root: PathBuf,
    ip: &str,
    engine: &Docker,
) -> anyhow::Result<NodeRuntime> {
    let kind = match kind {
        "auto" if engine.socket.exists() => "docker",
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
            let socket = engine.socket.clone();
            let d = DockerRuntime::connect(socket.clone(), ip.into(), engine.network.clone())
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

/// Fills in what the configuration leaves to the host: the node name (the host name) and
/// `node_ip = "auto"` (the address this host reaches NATS from).
pub fn settle(nats: &NatsConfig, config: &mut KubeletConfig) {
    if config.node_name.is_none() {
        config.node_name = Some(hostname());
    }
    if config.node_ip == "auto" {
        config.node_ip = address_towards(&nats.url);
    }
}

/// `skiff kubelet` (after [`settle`]): connects as `system:node:<node>` (bootstrapping its
/// own NATS user first when asked), runs the kubelet with its runtime until SIGTERM or
/// SIGINT, then stops every container.
pub fn run(nats: NatsConfig, args: KubeletConfig, credentials: Credentials) -> anyhow::Result<()> {
    let node = args.node_name.clone().unwrap_or_else(hostname);
    actix::System::new().block_on(async move {
        serve_metrics(&args.metrics_bind, "kubelet");
        let rt = runtime(
            &args.runtime,
            args.root.join(&node),
            &args.node_ip,
            &Docker::of(&args),
        )
        .await?;
        let identity = format!("system:node:{node}");
        let client = if args.nats_bootstrap {
            let password = bootstrap_nats_user(&nats, &credentials, &node, &args.root).await?;
            let mut own = credentials.clone();
            own.nats_user = Some(identity.clone());
            own.nats_password = Some(password);
            // nats-server picks the new user up on its next reload: retry until it has.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                match own.connect(&nats, &identity).await {
                    Ok(c) => break c,
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        tracing::debug!(error = %e, "own NATS user not active yet");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        } else {
            credentials.connect(&nats, &identity).await?
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
        crate::process::wait_for_signal().await;
        tracing::info!("stopping every container");
        rt.stop_all(Duration::from_secs(10)).await;
        anyhow::Ok(())
    })
}
