//! `skiff up`: the embedded default for one machine — a nats-server child (unless
//! `--nats-url` names one), the API server with its store in `--data-dir`, a scheduler, the
//! controllers and `--nodes` kubelets, in one process. Every component still talks to the API
//! server through its own NATS client and identity, exactly as separate processes would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args as ClapArgs;

use super::apiserver::{self as apiserver_cmd, Extras};
use super::components;
use crate::client::leader::ElectionTimings;
use crate::client::{ApiClient, ClientOptions};
use crate::config::ApiServerConfig;
use crate::kubelet::{Kubelet, KubeletOptions};

/// Flags of `skiff up`.
#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// Data directory: store, certificates, tokens, kubeconfig, pod logs.
    #[arg(long, env = "SKIFF_DATA_DIR", default_value = ".skiff")]
    pub data_dir: PathBuf,
    /// Use this NATS server instead of starting one.
    #[arg(long, env = "SKIFF_NATS_URL")]
    pub nats_url: Option<String>,
    /// Port of the nats-server started here.
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
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

/// A nats-server child, stopped when dropped.
struct NatsChild(Child);

impl Drop for NatsChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nats(port: u16, dir: &Path) -> anyhow::Result<NatsChild> {
    let log = std::fs::File::create(dir.join("nats-server.log"))?;
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting nats-server (install it: apt-get install -y nats-server)")?;
    let mut child = NatsChild(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child);
        }
        if let Some(status) = child.0.try_wait()? {
            bail!(
                "nats-server exited ({status}); see {}",
                dir.join("nats-server.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("nats-server did not listen on port {port} within 10 s")
}

use apiserver_cmd::ensure_tokens;

/// Runs everything until SIGTERM or SIGINT.
pub fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    eprintln!("skiff up: data in {}", data_dir.display());
    let (_nats, nats_url) = match &args.nats_url {
        Some(url) => (None, url.clone()),
        None => {
            eprintln!(
                "skiff up: starting nats-server on 127.0.0.1:{}",
                args.nats_port
            );
            let child = start_nats(args.nats_port, &data_dir)?;
            (Some(child), format!("nats://127.0.0.1:{}", args.nats_port))
        }
    };
    let nodes: Vec<String> = (1..=args.nodes)
        .map(|i| format!("skiff-node-{i}"))
        .collect();
    let mut users = vec![
        ("admin".to_string(), "system:masters"),
        ("system:kube-scheduler".to_string(), "system:masters"),
        (
            "system:kube-controller-manager".to_string(),
            "system:masters",
        ),
    ];
    users.extend(
        nodes
            .iter()
            .map(|n| (format!("system:node:{n}"), "system:nodes")),
    );
    let config = ApiServerConfig {
        nats_url: nats_url.clone(),
        data_dir: data_dir.clone(),
        https_bind: args.https_bind.clone(),
        ..Default::default()
    };
    let tokens = ensure_tokens(&config.token_file(), &users)?;
    let kubeconfig = data_dir.join("kubeconfig");
    let runtime = args.runtime.clone();
    let lifecycle = crate::controllers::nodelifecycle::NodeLifecycleOptions {
        grace: Duration::from_secs(args.node_monitor_grace_period),
        eviction_timeout: Duration::from_secs(args.pod_eviction_timeout),
    };
    eprintln!("skiff up: API server (NATS {nats_url}, HTTPS {}), scheduler, controllers, {} {runtime} node(s)", args.https_bind, nodes.len());
    apiserver_cmd::run_with(config, move |url| async move {
        let connect = |user: &str| {
            let token = tokens.get(user).cloned().unwrap_or_default();
            let options = ClientOptions::new(&url, user, &token);
            async move { ApiClient::connect(options).await }
        };
        let mut extras = Extras::default();
        let scheduler =
            components::start_scheduler(connect("system:kube-scheduler").await?, "skiff-up").await;
        extras.keep.push(Box::new(scheduler));
        let controllers = components::start_controllers(
            connect("system:kube-controller-manager").await?,
            "skiff-up",
            ElectionTimings::default(),
            lifecycle,
        );
        extras.keep.push(Box::new(controllers));
        for (i, node) in nodes.iter().enumerate() {
            let rt = components::runtime(&runtime, data_dir.join("pods").join(node), "127.0.0.1")
                .await?;
            let client = connect(&format!("system:node:{node}")).await?;
            let mut options = KubeletOptions::new(node);
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
