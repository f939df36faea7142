//! `skiff apiserver`: load config, open the store, serve NATS, stop gracefully on SIGTERM or
//! SIGINT (stop taking requests, finish those in flight, drain NATS).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args as ClapArgs;

use crate::apiserver::certs::{self, Pki};
use crate::apiserver::{self, Authenticator};
use crate::config::{self, env, ApiServerConfig, ConfigError};

/// Flags of `skiff apiserver`; each overrides the config file.
#[derive(Debug, Clone, Default, ClapArgs)]
pub struct Args {
    /// Config file (TOML, `[apiserver]` table).
    #[arg(long, env = env::CONFIG)]
    pub config: Option<PathBuf>,
    /// NATS server URL.
    #[arg(long, env = env::NATS_URL)]
    pub nats_url: Option<String>,
    /// NATS user.
    #[arg(long, env = env::NATS_USER)]
    pub nats_user: Option<String>,
    /// NATS password.
    #[arg(long, env = env::NATS_PASSWORD, hide_env_values = true)]
    pub nats_password: Option<String>,
    /// The CA of the NATS server's certificate: connect with TLS and verify it.
    #[arg(long, env = "SKIFF_NATS_CA_FILE")]
    pub nats_ca_file: Option<PathBuf>,
    /// Data directory (store file, tokens).
    #[arg(long, env = env::DATA_DIR)]
    pub data_dir: Option<PathBuf>,
    /// `embedded` (a file in the data dir), `memory`, or `etcd` (`--etcd-servers`).
    #[arg(long, env = env::STORE)]
    pub store: Option<String>,
    /// Token file (`token,user,uid,"group1,group2"`).
    #[arg(long, env = env::TOKEN_FILE)]
    pub token_file: Option<PathBuf>,
    /// Events kept for watch replay and paged lists.
    #[arg(long, env = env::HISTORY)]
    pub history: Option<usize>,
    /// Seconds between watch bookmarks.
    #[arg(long, env = env::BOOKMARK_INTERVAL)]
    pub bookmark_interval_seconds: Option<u64>,
    /// Seconds in-flight requests get on shutdown.
    #[arg(long, env = env::SHUTDOWN_GRACE)]
    pub shutdown_grace_seconds: Option<u64>,
    /// Calls served at once, shared by the priority levels (429 beyond them and their queues).
    #[arg(long, env = env::MAX_REQUESTS_INFLIGHT)]
    pub max_requests_inflight: Option<usize>,
    /// Seconds a call may wait for a seat before it is refused with 429.
    #[arg(long, env = env::MAX_QUEUE_WAIT)]
    pub max_queue_wait_seconds: Option<u64>,
    /// Seconds an Event lives after its last change (kube-apiserver's `--event-ttl`).
    #[arg(long, env = env::EVENT_TTL)]
    pub event_ttl_seconds: Option<u64>,
    /// Append an `audit.k8s.io/v1` Event per mutating request to this file (JSON lines).
    #[arg(long, env = "SKIFF_AUDIT_LOG_PATH")]
    pub audit_log_path: Option<PathBuf>,
    /// kube-apiserver's EncryptionConfiguration: what is encrypted at rest and with which
    /// keys. Without it, the embedded store encrypts Secrets with a key it writes to
    /// `<data-dir>/encryption-config.yaml` on first start.
    #[arg(long, env = "SKIFF_ENCRYPTION_PROVIDER_CONFIG")]
    pub encryption_provider_config: Option<PathBuf>,
    /// Seconds new pods tolerate a not-ready or unreachable node unless they say otherwise.
    #[arg(long, env = env::DEFAULT_TOLERATION_SECONDS)]
    pub default_toleration_seconds: Option<u64>,
    /// Write-ahead log bytes between checkpoints of the embedded store.
    #[arg(long, env = env::CHECKPOINT_BYTES)]
    pub checkpoint_bytes: Option<u64>,
    /// HTTPS listen address ("" turns the Kubernetes API off).
    #[arg(long, env = env::HTTPS_BIND)]
    pub https_bind: Option<String>,
    /// Extra names or addresses for the serving certificate (comma-separated).
    #[arg(long, env = env::TLS_SANS, value_delimiter = ',')]
    pub tls_san: Option<Vec<String>>,
    /// Server URL written into the kubeconfig.
    #[arg(long, env = env::SERVER_URL)]
    pub server_url: Option<String>,
    /// Export spans over OTLP/HTTP to this endpoint (`http://jaeger:4318`); "" for none.
    #[arg(long, env = env::OTLP_ENDPOINT)]
    pub otlp_endpoint: Option<String>,
    /// The nats-server config to add bootstrapped kubelets' users to (see `skiff nats-run`).
    #[arg(long, env = env::NATS_CONFIG)]
    pub nats_config: Option<PathBuf>,
    /// Admission plugins to turn off (comma-separated; only `ServiceAccount` may be: for an
    /// API server with no controller-manager making `default` ServiceAccounts).
    #[arg(long, env = "SKIFF_DISABLE_ADMISSION_PLUGINS", value_delimiter = ',')]
    pub disable_admission_plugins: Option<Vec<String>>,
    /// etcd client URLs (comma-separated) for `--store etcd`.
    #[arg(
        long,
        alias = "etcd-endpoints",
        env = "SKIFF_ETCD_SERVERS",
        value_delimiter = ','
    )]
    pub etcd_servers: Option<Vec<String>>,
    /// The CA etcd's serving certificate is verified with.
    #[arg(long, env = "SKIFF_ETCD_CAFILE")]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, env = "SKIFF_ETCD_CERTFILE")]
    pub etcd_certfile: Option<PathBuf>,
    /// Its key.
    #[arg(long, env = "SKIFF_ETCD_KEYFILE")]
    pub etcd_keyfile: Option<PathBuf>,
    /// Seconds between compactions of old etcd revisions (0: never).
    #[arg(long, env = "SKIFF_ETCD_COMPACTION_INTERVAL")]
    pub etcd_compaction_interval: Option<u64>,
    /// Write component tokens (scheduler, controller-manager, kubelet) into this directory.
    #[arg(long, env = env::CREDENTIALS_DIR)]
    pub credentials_dir: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl Args {
    /// The effective configuration: file, then environment and flags.
    pub fn resolve(&self) -> Result<ApiServerConfig, ConfigError> {
        let mut c = config::load_file(self.config.as_deref())?.apiserver;
        if let Some(v) = &self.nats_url {
            c.nats_url = v.clone();
        }
        if let Some(v) = &self.nats_user {
            c.nats_user = Some(v.clone());
        }
        if let Some(v) = &self.nats_password {
            c.nats_password = Some(v.clone());
        }
        if let Some(v) = &self.nats_ca_file {
            c.nats_ca_file = Some(v.clone());
        }
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        if let Some(v) = &self.store {
            c.store = v.clone();
        }
        if let Some(v) = &self.token_file {
            c.token_file = Some(v.clone());
        }
        if let Some(v) = self.history {
            c.history = v;
        }
        if let Some(v) = self.bookmark_interval_seconds {
            c.bookmark_interval_seconds = v;
        }
        if let Some(v) = self.shutdown_grace_seconds {
            c.shutdown_grace_seconds = v;
        }
        if let Some(v) = self.max_requests_inflight {
            c.max_requests_inflight = v;
        }
        if let Some(v) = self.max_queue_wait_seconds {
            c.max_queue_wait_seconds = v;
        }
        if let Some(v) = self.event_ttl_seconds {
            c.event_ttl_seconds = v;
        }
        if let Some(v) = &self.audit_log_path {
            c.audit_log_path = Some(v.clone());
        }
        if let Some(v) = &self.encryption_provider_config {
            c.encryption_provider_config = Some(v.clone());
        }
        if let Some(v) = self.checkpoint_bytes {
            c.checkpoint_bytes = v;
        }
        if let Some(v) = self.default_toleration_seconds {
            c.default_toleration_seconds = v;
        }
        if let Some(v) = &self.https_bind {
            c.https_bind = v.clone();
        }
        if let Some(v) = &self.tls_san {
            c.tls_sans = v.clone();
        }
        if let Some(v) = &self.server_url {
            c.server_url = Some(v.clone());
        }
        if let Some(v) = &self.credentials_dir {
            c.credentials_dir = Some(v.clone());
        }
        if let Some(v) = &self.disable_admission_plugins {
            c.disable_admission_plugins = v.clone();
        }
        if let Some(v) = &self.etcd_servers {
            c.etcd_servers = v.clone();
        }
        if let Some(v) = &self.etcd_cafile {
            c.etcd_cafile = Some(v.clone());
        }
        if let Some(v) = &self.etcd_certfile {
            c.etcd_certfile = Some(v.clone());
        }
        if let Some(v) = &self.etcd_keyfile {
            c.etcd_keyfile = Some(v.clone());
        }
        if let Some(v) = self.etcd_compaction_interval {
            c.etcd_compaction_interval_seconds = v;
        }
        if let Some(v) = &self.nats_config {
            c.nats_config = Some(v.clone());
        }
        if let Some(v) = &self.otlp_endpoint {
            c.otlp_endpoint = Some(v.clone()).filter(|v| !v.is_empty());
        }
        c.validate()?;
        Ok(c)
    }
}

/// Writes a token file with a fresh admin token when there is none (like k3s' first start).
pub fn ensure_token_file(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        crate::files::create_private_dir(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    write_private(path, &format!("{token},admin,admin,\"system:masters\"\n"))?;
    tracing::info!(path = %path.display(), "wrote a token file with an admin token");
    Ok(())
}

/// The components whose tokens `--credentials-dir` holds: (file stem, user, groups). The
/// scheduler and controller-manager hold their bootstrap roles (`authz::policy`), not
/// `system:masters`.
pub const COMPONENT_CREDENTIALS: [(&str, &str, &str); 3] = [
    ("scheduler", "system:kube-scheduler", ""),
    ("controller-manager", "system:kube-controller-manager", ""),
    (
        "kubelet",
        "system:node-bootstrap",
        apiserver::NODE_BOOTSTRAP_GROUP,
    ),
];

/// Makes sure the token file has a token for each component and writes each to
/// `<dir>/<component>/<component>.token` (0600 in a 0700 directory of its own: compose mounts
/// each directory from its own volume into that component's containers alone).
pub fn write_component_credentials(token_file: &Path, dir: &Path) -> anyhow::Result<()> {
    let users: Vec<(String, &str)> = COMPONENT_CREDENTIALS
        .iter()
        .map(|(_, user, groups)| (user.to_string(), *groups))
        .collect();
    let tokens = ensure_tokens(token_file, &users)?;
    crate::files::private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (stem, user, _) in COMPONENT_CREDENTIALS {
        let own = dir.join(stem);
        crate::files::private_dir(&own).with_context(|| format!("creating {}", own.display()))?;
        write_private(&own.join(format!("{stem}.token")), &tokens[user])?;
    }
    tracing::info!(dir = %dir.display(), "wrote component credentials");
    Ok(())
}

/// Makes sure the token file holds a token for each (user, groups); returns user → token.
pub fn ensure_tokens(
    path: &Path,
    users: &[(String, &str)],
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut tokens = std::collections::HashMap::new();
    let mut out = String::new();
    for line in text.lines() {
        let f: Vec<&str> = line.splitn(4, ',').collect();
        if f.len() >= 3 {
            tokens.insert(f[1].to_string(), f[0].to_string());
            // A component's groups are what this version gives it: a data dir from an
            // earlier one loses the `system:masters` its components used to have.
            if let Some((_, groups)) = users.iter().find(|(u, _)| u == f[1]) {
                out.push_str(&format!("{},{},{},\"{groups}\"\n", f[0], f[1], f[2]));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    for (i, (user, groups)) in users.iter().enumerate() {
        if !tokens.contains_key(user) {
            let token = uuid::Uuid::new_v4().simple().to_string();
            out.push_str(&format!("{token},{user},{},\"{groups}\"\n", 100 + i));
            tokens.insert(user.clone(), token);
        }
    }
    write_private(path, &out)?;
    Ok(tokens)
}

/// The EncryptionConfiguration the API server runs with: the one configured, else (for the
/// embedded store) `<data-dir>/encryption-config.yaml`, written with a fresh key on first
/// start, so Secrets never reach the disk in the clear.
pub(crate) fn encryption_config(config: &ApiServerConfig) -> anyhow::Result<Option<PathBuf>> {
    if let Some(p) = &config.encryption_provider_config {
        return Ok(Some(p.clone()));
    }
    if config.store == "memory" {
        return Ok(None);
    }
    let path = config.data_dir.join("encryption-config.yaml");
    if !path.exists() {
        crate::files::create_private_dir(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let text = apiserver::store_encryption_config().context("generating an encryption key")?;
        write_private(&path, &text)?;
        tracing::info!(path = %path.display(), "wrote an encryption config: Secrets are encrypted at rest");
    }
    Ok(Some(path))
}

/// Writes a file only its owner can read (kubeconfigs hold credentials).
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::files::write_private(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Runs the API server until SIGTERM or SIGINT.
pub fn run(config: ApiServerConfig) -> anyhow::Result<()> {
    run_with(config, |_| async { anyhow::Ok(Extras::default()) })
}

/// What `skiff up` starts next to the API server: kept alive until shutdown, then stopped.
#[derive(Default)]
pub struct Extras {
    /// Actors and handles to keep alive.
    pub keep: Vec<Box<dyn std::any::Any>>,
    /// Run on shutdown before the API server stops (e.g. stop every pod process).
    pub on_shutdown: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>,
}

/// Runs the API server and, once it serves, whatever `extras` starts in the same System.
pub fn run_with<F, Fut>(config: ApiServerConfig, extras: F) -> anyhow::Result<()>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Extras>>,
{
    let token_file = config.token_file();
    if config.token_file.is_none() {
        ensure_token_file(&token_file)?;
    }
    if let Some(dir) = &config.credentials_dir {
        write_component_credentials(&token_file, dir)?;
    }
    let authenticator = Authenticator::from_file(&token_file)?;
    let options = apiserver::ApiServerOptions {
        // etcd keeps the objects; the data dir still holds the keys (tokens, signing key).
        data_dir: (config.store != "memory").then(|| config.data_dir.clone()),
        etcd: (config.store == "etcd").then(|| apiserver::EtcdOptions {
            endpoints: config.etcd_servers.clone(),
            ca_file: config.etcd_cafile.clone(),
            cert_file: config.etcd_certfile.clone(),
            key_file: config.etcd_keyfile.clone(),
            compaction_interval: Duration::from_secs(config.etcd_compaction_interval_seconds),
        }),
        authenticator,
        history: config.history,
        bookmark_interval: Duration::from_secs(config.bookmark_interval_seconds),
        max_requests_inflight: config.max_requests_inflight,
        max_queue_wait: Duration::from_secs(config.max_queue_wait_seconds),
        event_ttl: Duration::from_secs(config.event_ttl_seconds.max(1)),
        audit_log: config.audit_log_path.clone(),
        encryption_config: encryption_config(&config)?,
        checkpoint_bytes: config.checkpoint_bytes,
        admission: apiserver::kinds::Admission {
            toleration_seconds: i64::try_from(config.default_toleration_seconds)
                .unwrap_or(i64::MAX),
            service_account: !disabled_plugins(&config.disable_admission_plugins)?,
        },
        ..Default::default()
    };
    let https = if config.https_bind.is_empty() {
        None
    } else {
        let pki =
            Pki::ensure(&config.data_dir, &config.tls_sans).context("preparing certificates")?;
        // The controller-manager publishes the CA to pods (`kube-root-ca.crt`): it finds it
        // beside its token.
        if let Some(dir) = &config.credentials_dir {
            let to = dir.join("controller-manager").join("ca.crt");
            std::fs::copy(pki.dir.join("ca.crt"), &to)
                .with_context(|| format!("writing {}", to.display()))?;
        }
        let bind: std::net::SocketAddr = config.https_bind.parse()?;
        Some(apiserver::http::HttpOptions {
            bind,
            pki,
            workers: 2,
        })
    };
    let admin = options
        .authenticator
        .token_for_group(apiserver::ADMIN_GROUP)
        .map(|(t, _)| t.to_string());
    let system = actix::System::new();
    system.block_on(async move {
        let mut connect = async_nats::ConnectOptions::new()
            .name("skiff apiserver")
            .custom_inbox_prefix(crate::api::subject::APISERVER_INBOX)
            .event_callback(crate::client::nats_events("apiserver".into()));
        if let (Some(u), Some(p)) = (&config.nats_user, &config.nats_password) {
            connect = connect.user_and_password(u.clone(), p.clone());
        }
        if let Some(ca) = &config.nats_ca_file {
            connect = connect.add_root_certificates(ca.clone()).require_tls(true);
        }
        // On the intake's thread: the socket is read and written off the request path.
        let nats = apiserver::intake::connect(connect.clone(), config.nats_url.clone())
            .await
            .with_context(|| format!("connecting to NATS at {}", config.nats_url))?;
        let mut options = options;
        let bootstrap_auth = Arc::new(options.authenticator.clone());
        options.node_nats = Some(nats.clone());
        // Spans on a connection of their own, read and written on the trace thread.
        match crate::trace::connect(connect.name("skiff apiserver spans"), config.nats_url.clone()).await {
            Ok(spans) => options.trace_nats = Some(spans),
            Err(e) => tracing::warn!(error = %e, "no connection of its own for spans: they share the API server's"),
        }
        options.otlp_endpoint = config.otlp_endpoint.clone();
        let api = apiserver::start(options).await?;
        if let Some(path) = &config.nats_config {
            let handle = api.clone();
            actix::spawn(super::natsconf::serve_bootstrap(
                nats.clone(),
                bootstrap_auth,
                config.data_dir.clone(),
                path.clone(),
                move |node: &str| handle.exists("", "nodes", None, node),
            ));
        }
        let http = match https {
            None => None,
            Some(opts) => {
                let ca = opts.pki.ca_cert.clone();
                let (server, addr) = apiserver::http::serve_https(api.clone(), opts)
                    .context("starting the HTTPS API")?;
                let url = config
                    .server_url
                    .clone()
                    .unwrap_or_else(|| format!("https://127.0.0.1:{}", addr.port()));
                let path = config.data_dir.join("kubeconfig");
                let text = certs::kubeconfig(&url, &ca, admin.as_deref(), None);
                write_private(&path, &text)?;
                tracing::info!(%addr, kubeconfig = %path.display(), "Kubernetes API (HTTPS) ready");
                let handle = server.handle();
                actix::spawn(server);
                Some(handle)
            }
        };
        let bridge = apiserver::serve_nats(api, nats)
            .await
            .context("subscribing the request subjects")?;
        tracing::info!(nats = %config.nats_url, store = %config.store, data_dir = %config.data_dir.display(), "skiff apiserver ready");
        let extras = extras(config.nats_url.clone()).await?;
        wait_for_signal().await;
        for f in extras.on_shutdown {
            f.await;
        }
        drop(extras.keep);
        tracing::info!("shutting down: finishing in-flight requests");
        if let Some(h) = http {
            h.stop(true).await;
        }
        bridge
            .send(apiserver::Shutdown {
                grace: Duration::from_secs(config.shutdown_grace_seconds),
            })
            .await
            .ok();
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Whether `--disable-admission-plugins` turns the ServiceAccount plugin off; any other
/// name is refused (the rest of Skiff's admission is not optional).
fn disabled_plugins(names: &[String]) -> anyhow::Result<bool> {
    let mut service_account = false;
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        match name {
            "ServiceAccount" => service_account = true,
            other => anyhow::bail!(
                "--disable-admission-plugins: {other:?} cannot be disabled (only \"ServiceAccount\" can)"
            ),
        }
    }
    Ok(service_account)
}
