//! `skiff kubeconfig`: prints a kubeconfig for this cluster — the admin token by default, or a
//! fresh client certificate signed by Skiff's CA (`--user`, `--group`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args as ClapArgs;

use crate::apiserver::certs::{self, Pki};
use crate::apiserver::{Authenticator, ADMIN_GROUP};
use crate::config::env;

/// Flags of `skiff kubeconfig`.
#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// The API server's data directory (holds pki/ and tokens.csv).
    #[arg(long, env = env::DATA_DIR, default_value = "/var/lib/skiff")]
    pub data_dir: PathBuf,
    /// Token file (default `<data-dir>/tokens.csv`).
    #[arg(long, env = env::TOKEN_FILE)]
    pub token_file: Option<PathBuf>,
    /// Server URL clients use.
    #[arg(long, env = env::SERVER_URL, default_value = "https://127.0.0.1:6443")]
    pub server: String,
    /// Issue a client certificate for this user instead of using the admin token.
    #[arg(long)]
    pub user: Option<String>,
    /// Groups of the client certificate (repeatable).
    #[arg(long)]
    pub group: Vec<String>,
}

/// Prints the kubeconfig.
pub fn run(args: Args) -> anyhow::Result<()> {
    let pki = Pki::ensure(&args.data_dir, &[]).context("reading the cluster's certificates")?;
    let text = match &args.user {
        Some(user) => {
            let groups: Vec<&str> = args.group.iter().map(String::as_str).collect();
            let (cert, key) = pki.issue_client(user, &groups)?;
            certs::kubeconfig(&args.server, &pki.ca_cert, None, Some((&cert, &key)))
        }
        None => {
            let path = args
                .token_file
                .clone()
                .unwrap_or_else(|| args.data_dir.join("tokens.csv"));
            let auth = Authenticator::from_file(&path)?;
            let (token, _) = auth
                .token_for_group(ADMIN_GROUP)
                .with_context(|| format!("no {ADMIN_GROUP} token in {}", path.display()))?;
            certs::kubeconfig(&args.server, &pki.ca_cert, Some(token), None)
        }
    };
    print!("{text}");
    Ok(())
}
