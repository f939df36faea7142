//! `skiff init`: the cluster state several API servers share, made once before any of them
//! starts (kubeadm init's part of it), never by two replicas at once: the CA and the serving
//! certificate (with every replica's names), the token file with the components'
//! credentials, the service account signing key and the EncryptionConfiguration. What is
//! already there is kept; the API servers then start on that directory (or copies of it).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args as ClapArgs;

use crate::apiserver::certs::Pki;
use crate::config::ApiServerConfig;

/// Flags of `skiff init`.
#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// The directory to fill (each API server's `--data-dir`).
    #[arg(long, env = crate::config::env::DATA_DIR, default_value = "/var/lib/skiff")]
    pub data_dir: PathBuf,
    /// Names and addresses of every API server replica and of the address in front of them,
    /// for the serving certificate (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// Also write the scheduler's, controller-manager's and kubelets' tokens here, one
    /// directory each (as `--credentials-dir` does).
    #[arg(long)]
    pub credentials_dir: Option<PathBuf>,
}

/// Makes (or keeps) everything and says what is where.
pub fn run(args: Args) -> anyhow::Result<()> {
    crate::files::private_dir(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let config = ApiServerConfig {
        data_dir: args.data_dir.clone(),
        tls_sans: args.tls_san.clone(),
        credentials_dir: args.credentials_dir.clone(),
        ..Default::default()
    };
    let token_file = config.token_file();
    crate::apiserver::run::ensure_token_file(&token_file)?;
    if let Some(dir) = &config.credentials_dir {
        crate::apiserver::run::write_component_credentials(&token_file, dir)?;
    }
    let pki = Pki::ensure(&args.data_dir, &args.tls_san).context("preparing certificates")?;
    if let Some(dir) = &config.credentials_dir {
        let to = dir.join("controller-manager").join("ca.crt");
        std::fs::copy(pki.dir.join("ca.crt"), &to)
            .with_context(|| format!("writing {}", to.display()))?;
    }
    let encryption = crate::apiserver::run::encryption_config(&config)?;
    crate::apiserver::serviceaccount::ensure_key(&args.data_dir)
        .context("the service account signing key")?;
    println!("skiff init: cluster state in {}", args.data_dir.display());
    println!("  CA and serving certificate: {}", pki.dir.display());
    println!("  tokens: {}", token_file.display());
    if let Some(e) = encryption {
        println!("  encryption at rest: {}", e.display());
    }
    println!(
        "start every API server with --data-dir {} (or a copy) and the same --store",
        args.data_dir.display()
    );
    Ok(())
}
