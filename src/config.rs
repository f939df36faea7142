//! Configuration, layered: built-in defaults < the config file (`--config`, `SKIFF_CONFIG`, or
//! `config/skiff.toml` when present) < `SKIFF_*` environment < flags. `--print-config` shows
//! the result. Every environment key is a named constant here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Environment keys.
pub mod env {
    pub const CONFIG: &str = "SKIFF_CONFIG";
    pub const NATS_URL: &str = "SKIFF_NATS_URL";
    pub const NATS_USER: &str = "SKIFF_NATS_USER";
    pub const NATS_PASSWORD: &str = "SKIFF_NATS_PASSWORD";
    pub const DATA_DIR: &str = "SKIFF_DATA_DIR";
    pub const TOKEN_FILE: &str = "SKIFF_TOKEN_FILE";
    pub const HISTORY: &str = "SKIFF_HISTORY";
    pub const BOOKMARK_INTERVAL: &str = "SKIFF_BOOKMARK_INTERVAL_SECONDS";
    pub const SHUTDOWN_GRACE: &str = "SKIFF_SHUTDOWN_GRACE_SECONDS";
    pub const MAX_REQUESTS_INFLIGHT: &str = "SKIFF_MAX_REQUESTS_INFLIGHT";
    pub const MAX_QUEUE_WAIT: &str = "SKIFF_MAX_QUEUE_WAIT_SECONDS";
    pub const EVENT_TTL: &str = "SKIFF_EVENT_TTL_SECONDS";
    pub const DEFAULT_TOLERATION_SECONDS: &str = "SKIFF_DEFAULT_TOLERATION_SECONDS";
    pub const STORE: &str = "SKIFF_STORE";
    pub const CHECKPOINT_BYTES: &str = "SKIFF_CHECKPOINT_BYTES";
    pub const HTTPS_BIND: &str = "SKIFF_HTTPS_BIND";
    pub const TLS_SANS: &str = "SKIFF_TLS_SANS";
    pub const SERVER_URL: &str = "SKIFF_SERVER_URL";
    pub const CREDENTIALS_DIR: &str = "SKIFF_CREDENTIALS_DIR";
    pub const OTLP_ENDPOINT: &str = "SKIFF_OTLP_ENDPOINT";
    pub const NATS_CONFIG: &str = "SKIFF_NATS_CONFIG";
    pub const NATS_ROUTES: &str = "SKIFF_NATS_ROUTES";
    pub const NATS_CLUSTER_NAME: &str = "SKIFF_NATS_CLUSTER_NAME";
    pub const NATS_ROUTE_PASSWORD: &str = "SKIFF_NATS_ROUTE_PASSWORD";
}

/// The config file read when none is named and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "config/skiff.toml";

/// Options of `skiff apiserver`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiServerConfig {
    /// NATS server URL.
    pub nats_url: String,
    /// NATS user name, when the server requires one.
    pub nats_user: Option<String>,
    /// NATS password.
    pub nats_password: Option<String>,
    /// The CA of the NATS server's certificate: the API server connects with TLS and
    /// verifies the server against it.
    pub nats_ca_file: Option<PathBuf>,
    /// Where the store file, tokens and (later) certificates live.
    pub data_dir: PathBuf,
    /// `embedded` (a redb file in data_dir) or `memory`.
    pub store: String,
    /// Token file (`token,user,uid,"groups"`); default `<data_dir>/tokens.csv`, created with
    /// an admin token on first start.
    pub token_file: Option<PathBuf>,
    /// Events kept for watch replay and consistent paging.
    pub history: usize,
    /// Seconds between watch bookmarks (heartbeats).
    pub bookmark_interval_seconds: u64,
    /// Seconds in-flight requests get on shutdown.
    pub shutdown_grace_seconds: u64,
    /// Calls served at once, shared by the priority levels (kube-apiserver's
    /// `--max-requests-inflight` plus `--max-mutating-requests-inflight`).
    pub max_requests_inflight: usize,
    /// Seconds a call may wait for a seat before it is refused with 429.
    pub max_queue_wait_seconds: u64,
    /// Seconds an Event lives after its last change (kube-apiserver's `--event-ttl`, 1 h).
    pub event_ttl_seconds: u64,
    /// The audit log (kube-apiserver's `--audit-log-path`); none when unset.
    pub audit_log_path: Option<PathBuf>,
    /// kube-apiserver's `--encryption-provider-config`; the embedded store writes one of its
    /// own (Secrets, aesgcm) when unset.
    pub encryption_provider_config: Option<PathBuf>,
    /// Write-ahead log bytes after which the embedded store checkpoints into its redb file.
    pub checkpoint_bytes: u64,
    /// Seconds a new pod tolerates a not-ready or unreachable node before it is evicted, when
    /// it says nothing itself (kube-apiserver's `--default-not-ready-toleration-seconds` and
    /// `--default-unreachable-toleration-seconds`, DefaultTolerationSeconds admission).
    pub default_toleration_seconds: u64,
    /// Where the HTTPS Kubernetes API listens ("" turns it off).
    pub https_bind: String,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// The server URL written into the kubeconfig (default: https://127.0.0.1:<port>).
    pub server_url: Option<String>,
    /// When set, the token file gets tokens for the scheduler, the controller-manager and a
    /// shared node-bootstrap credential, each also written to `<dir>/<component>.token` for
    /// components that mount the directory (docker compose).
    pub credentials_dir: Option<PathBuf>,
    /// Where to export spans over OTLP/HTTP (`http://host:4318`, e.g. Jaeger 2.x); none: the
    /// spans stay in the collector's buffer and nothing is sent.
    pub otlp_endpoint: Option<String>,
    /// The nats-server config this API server maintains (`skiff nats-run` reloads it): when
    /// set, kubelets holding a node-bootstrap token get a NATS user of their own here.
    pub nats_config: Option<PathBuf>,
    /// Admission plugins turned off (kube-apiserver's `--disable-admission-plugins`): only
    /// `ServiceAccount` may be, for an API server without a controller-manager.
    pub disable_admission_plugins: Vec<String>,
    /// etcd client URLs when `store` is `etcd` (kube-apiserver's `--etcd-servers`).
    pub etcd_servers: Vec<String>,
    /// The CA etcd's certificate is verified with (`--etcd-cafile`).
    pub etcd_cafile: Option<PathBuf>,
    /// This API server's client certificate for etcd (`--etcd-certfile`).
    pub etcd_certfile: Option<PathBuf>,
    /// Its key (`--etcd-keyfile`).
    pub etcd_keyfile: Option<PathBuf>,
    /// Seconds between compactions of etcd's old revisions (kube-apiserver's
    /// `--etcd-compaction-interval`, 5 minutes; 0: never).
    pub etcd_compaction_interval_seconds: u64,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        ApiServerConfig {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_user: None,
            nats_password: None,
            nats_ca_file: None,
            data_dir: PathBuf::from("/var/lib/skiff"),
            store: "embedded".into(),
            token_file: None,
            history: 10_000,
            bookmark_interval_seconds: 5,
            shutdown_grace_seconds: 10,
            max_requests_inflight: crate::apiserver::flowcontrol::DEFAULT_SEATS,
            max_queue_wait_seconds: crate::apiserver::flowcontrol::DEFAULT_MAX_WAIT.as_secs(),
            event_ttl_seconds: crate::apiserver::event_ttl::DEFAULT_TTL.as_secs(),
            audit_log_path: None,
            encryption_provider_config: None,
            checkpoint_bytes: 32 * 1024 * 1024,
            default_toleration_seconds: 300,
            https_bind: "0.0.0.0:6443".into(),
            tls_sans: Vec::new(),
            server_url: None,
            credentials_dir: None,
            otlp_endpoint: None,
            nats_config: None,
            disable_admission_plugins: Vec::new(),
            etcd_servers: Vec::new(),
            etcd_cafile: None,
            etcd_certfile: None,
            etcd_keyfile: None,
            etcd_compaction_interval_seconds: 300,
        }
    }
}

/// The whole config file: one table per component.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// `[apiserver]`.
    pub apiserver: ApiServerConfig,
}

/// Why configuration could not be loaded (the binary exits 64 on these).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("parsing {path}: {why}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A value is out of range.
    #[error("invalid {key}: {why}")]
    Invalid {
        /// The option.
        key: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// Loads the config file: the one named, else the default file if present, else defaults.
pub fn load_file(named: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let path = match named {
        Some(p) => p.to_path_buf(),
        None => {
            let p = PathBuf::from(DEFAULT_CONFIG_FILE);
            if !p.exists() {
                return Ok(FileConfig::default());
            }
            p
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

impl ApiServerConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(e) = &self.otlp_endpoint {
            if !e.starts_with("http://") {
                return Err(ConfigError::Invalid {
                    key: "otlp_endpoint",
                    why: format!("{e:?}: want http://host:port (OTLP over HTTP)"),
                });
            }
        }
        if !matches!(self.store.as_str(), "embedded" | "memory" | "etcd") {
            return Err(ConfigError::Invalid {
                key: "store",
                why: format!("{:?}: want embedded, memory or etcd", self.store),
            });
        }
        if self.store == "etcd" && self.etcd_servers.is_empty() {
            return Err(ConfigError::Invalid {
                key: "etcd_servers",
                why: "store etcd needs at least one server (--etcd-servers)".into(),
            });
        }
        if self.history == 0 {
            return Err(ConfigError::Invalid {
                key: "history",
                why: "must be at least 1".into(),
            });
        }
        if !self.https_bind.is_empty() && self.https_bind.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid {
                key: "https_bind",
                why: format!("{:?}: want host:port, e.g. 0.0.0.0:6443", self.https_bind),
            });
        }
        if self.checkpoint_bytes == 0 {
            return Err(ConfigError::Invalid {
                key: "checkpoint_bytes",
                why: "must be at least 1".into(),
            });
        }
        if self.max_requests_inflight < 8 {
            return Err(ConfigError::Invalid {
                key: "max_requests_inflight",
                why: "must be at least 8 (one seat for each priority level)".into(),
            });
        }
        if self.bookmark_interval_seconds == 0 {
            return Err(ConfigError::Invalid {
                key: "bookmark_interval_seconds",
                why: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// The token file in effect.
    pub fn token_file(&self) -> PathBuf {
        self.token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tokens.csv"))
    }
}
