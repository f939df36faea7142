//! `skiff up`: the embedded default for one machine — a nats-server child (unless
//! `--nats-url` names one) and the API server with its store file in `--data-dir`, in one
//! process. Later components (scheduler, controllers, kubelets) join here as they land.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args as ClapArgs;

use super::apiserver as apiserver_cmd;
use crate::config::ApiServerConfig;

/// Flags of `skiff up`.
#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// Data directory: store file, tokens, nats-server state.
    #[arg(long, env = "SKIFF_DATA_DIR", default_value = ".skiff")]
    pub data_dir: PathBuf,
    /// Use this NATS server instead of starting one.
    #[arg(long, env = "SKIFF_NATS_URL")]
    pub nats_url: Option<String>,
    /// Port of the nats-server started here.
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
}

/// A nats-server child, stopped when dropped.
struct NatsChild(Child);

impl Drop for NatsChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nats(port: u16, dir: &std::path::Path) -> anyhow::Result<NatsChild> {
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
    let config = ApiServerConfig {
        nats_url: nats_url.clone(),
        data_dir: data_dir.clone(),
        ..Default::default()
    };
    eprintln!(
        "skiff up: API server on {nats_url}, store {}, tokens {}",
        data_dir.join("store.redb").display(),
        config.token_file().display()
    );
    apiserver_cmd::run(config)
}
