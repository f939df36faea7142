//! `skiff apiserver`'s command line: flags (each with its `SKIFF_*` variable) laid over the
//! config file's `[nats]`, `[apiserver]` and `[etcd]` sections. The process itself starts in
//! [`crate::apiserver::run`].

use std::path::PathBuf;

use clap::Args as ClapArgs;

use crate::config::{self, env, layer, ConfigError, FileConfig};

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
    #[arg(long, env = crate::config::env::NATS_CA_FILE)]
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
    #[arg(long, env = crate::config::env::AUDIT_LOG_PATH)]
    pub audit_log_path: Option<PathBuf>,
    /// kube-apiserver's EncryptionConfiguration: what is encrypted at rest and with which
    /// keys. Without it, the embedded store encrypts Secrets with a key it writes to
    /// `<data-dir>/encryption-config.yaml` on first start.
    #[arg(long, env = crate::config::env::ENCRYPTION_PROVIDER_CONFIG)]
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
    #[arg(long, env = crate::config::env::DISABLE_ADMISSION_PLUGINS, value_delimiter = ',')]
    pub disable_admission_plugins: Option<Vec<String>>,
    /// etcd client URLs (comma-separated) for `--store etcd`.
    #[arg(
        long,
        alias = "etcd-endpoints",
        env = crate::config::env::ETCD_SERVERS,
        value_delimiter = ','
    )]
    pub etcd_servers: Option<Vec<String>>,
    /// The CA etcd's serving certificate is verified with.
    #[arg(long, env = crate::config::env::ETCD_CAFILE)]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, env = crate::config::env::ETCD_CERTFILE)]
    pub etcd_certfile: Option<PathBuf>,
    /// Its key.
    #[arg(long, env = crate::config::env::ETCD_KEYFILE)]
    pub etcd_keyfile: Option<PathBuf>,
    /// Seconds between compactions of old etcd revisions (0: never).
    #[arg(long, env = crate::config::env::ETCD_COMPACTION_INTERVAL)]
    pub etcd_compaction_interval: Option<u64>,
    /// Write component tokens (scheduler, controller-manager, kubelet) into this directory.
    #[arg(long, env = env::CREDENTIALS_DIR)]
    pub credentials_dir: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl Args {
    /// The effective configuration (`[nats]`, `[apiserver]`, `[etcd]`): file, then
    /// environment and flags.
    pub fn resolve(&self) -> Result<FileConfig, ConfigError> {
        let mut tree = config::load_file(self.config.as_deref())?;
        layer!(tree.nats.url, self.nats_url);
        layer!(tree.nats.ca_file, some self.nats_ca_file);
        let c = &mut tree.apiserver;
        layer!(c.nats_user, some self.nats_user);
        layer!(c.nats_password, some self.nats_password);
        layer!(c.data_dir, self.data_dir);
        layer!(c.store, self.store);
        layer!(c.token_file, some self.token_file);
        layer!(c.history, self.history);
        layer!(c.bookmark_interval_seconds, self.bookmark_interval_seconds);
        layer!(c.shutdown_grace_seconds, self.shutdown_grace_seconds);
        layer!(c.max_requests_inflight, self.max_requests_inflight);
        layer!(c.max_queue_wait_seconds, self.max_queue_wait_seconds);
        layer!(c.event_ttl_seconds, self.event_ttl_seconds);
        layer!(c.audit_log_path, some self.audit_log_path);
        layer!(c.encryption_provider_config, some self.encryption_provider_config);
        layer!(c.checkpoint_bytes, self.checkpoint_bytes);
        layer!(
            c.default_toleration_seconds,
            self.default_toleration_seconds
        );
        layer!(c.https_bind, self.https_bind);
        layer!(c.tls_sans, self.tls_san);
        layer!(c.server_url, some self.server_url);
        layer!(c.credentials_dir, some self.credentials_dir);
        layer!(c.disable_admission_plugins, self.disable_admission_plugins);
        layer!(c.nats_config, some self.nats_config);
        if let Some(v) = &self.otlp_endpoint {
            c.otlp_endpoint = Some(v.clone()).filter(|v| !v.is_empty());
        }
        let e = &mut tree.etcd;
        layer!(e.servers, self.etcd_servers);
        layer!(e.cafile, some self.etcd_cafile);
        layer!(e.certfile, some self.etcd_certfile);
        layer!(e.keyfile, some self.etcd_keyfile);
        layer!(e.compaction_interval_seconds, self.etcd_compaction_interval);
        tree.validate_apiserver()?;
        Ok(tree)
    }
}

/// The sections `skiff apiserver` reads, and the keys `--print-config` hides.
pub const SECTIONS: [&str; 3] = ["nats", "apiserver", "etcd"];
/// Credentials `--print-config` shows as `<redacted>`.
pub const SECRETS: [&str; 1] = ["nats_password"];
