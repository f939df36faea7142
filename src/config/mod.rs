//! Configuration, one tree for every component, layered: built-in defaults < the config file
//! (`--config`, `SKIFF_CONFIG`, or `config/skiff.toml` when present) < `SKIFF_*` environment
//! < flags. The file has a table per section — `[nats]` (every component), `[apiserver]`,
//! `[etcd]` (the API server's store when `store = "etcd"`), `[scheduler]`,
//! `[controller_manager]`, `[kubelet]` — and each component reads the sections it needs;
//! `skiff <component> --print-config` prints those sections as it would run with them.
//! Every default is defined once, in the section's `Default`; every environment variable is
//! a named constant in [`env`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod components;
pub mod env;

/// Lays a flag (or its `SKIFF_*` variable), when given, over the value from the file:
/// `layer!(c.x, flag)` for plain values, `layer!(c.x, some flag)` for optional ones.
macro_rules! layer {
    ($to:expr, some $from:expr) => {
        if let Some(v) = &$from {
            $to = Some(v.clone());
        }
    };
    ($to:expr, $from:expr) => {
        if let Some(v) = &$from {
            $to = v.clone();
        }
    };
}
pub(crate) use layer;

pub use components::{ControllerManagerConfig, KubeletConfig, NatsConfig, SchedulerConfig};

/// The config file read when none is named and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "config/skiff.toml";

/// Options of `skiff apiserver`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiServerConfig {
    /// The API server's NATS user, when the server requires one (the URL and CA are
    /// `[nats]`'s).
    pub nats_user: Option<String>,
    /// Its password (better from `SKIFF_NATS_PASSWORD` than from the file).
    pub nats_password: Option<String>,
    /// Where the store file, tokens and (later) certificates live.
    pub data_dir: PathBuf,
    /// `embedded` (a redb file in data_dir), `memory`, or `etcd` (the `[etcd]` section).
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
}

/// `[etcd]`: the API server's store when `[apiserver] store = "etcd"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs (kube-apiserver's `--etcd-servers`).
    pub servers: Vec<String>,
    /// The CA etcd's certificate is verified with (`--etcd-cafile`).
    pub cafile: Option<PathBuf>,
    /// The API server's client certificate for etcd (`--etcd-certfile`).
    pub certfile: Option<PathBuf>,
    /// Its key (`--etcd-keyfile`).
    pub keyfile: Option<PathBuf>,
    /// Seconds between compactions of old revisions (kube-apiserver's
    /// `--etcd-compaction-interval`, 5 minutes; 0: never).
    pub compaction_interval_seconds: u64,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            servers: Vec::new(),
            cafile: None,
            certfile: None,
            keyfile: None,
            compaction_interval_seconds: 300,
        }
    }
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        ApiServerConfig {
            nats_user: None,
            nats_password: None,
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
        }
    }
}

/// The whole tree (and the config file): one table per section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// `[nats]`: every component.
    pub nats: NatsConfig,
    /// `[apiserver]`.
    pub apiserver: ApiServerConfig,
    /// `[etcd]`: the API server's, with `store = "etcd"`.
    pub etcd: EtcdConfig,
    /// `[scheduler]`.
    pub scheduler: SchedulerConfig,
    /// `[controller_manager]`.
    pub controller_manager: ControllerManagerConfig,
    /// `[kubelet]`.
    pub kubelet: KubeletConfig,
}

impl FileConfig {
    /// Checks what `skiff apiserver` runs with.
    pub fn validate_apiserver(&self) -> Result<(), ConfigError> {
        self.apiserver.validate()?;
        if self.apiserver.store == "etcd" && self.etcd.servers.is_empty() {
            return Err(ConfigError::Invalid {
                key: "etcd.servers",
                why: "store etcd needs at least one server (--etcd-servers)".into(),
            });
        }
        Ok(())
    }

    /// The named sections as TOML (`--print-config`): what a component runs with. `hide`
    /// lists keys (in any section) whose values are shown as `<redacted>`.
    pub fn render(&self, sections: &[&str], hide: &[&str]) -> Result<String, ConfigError> {
        let bad = |e: String| ConfigError::Invalid {
            key: "print-config",
            why: e,
        };
        let value = toml::Value::try_from(self).map_err(|e| bad(e.to_string()))?;
        let mut out = toml::Table::new();
        if let toml::Value::Table(all) = value {
            for (name, mut section) in all {
                if !sections.contains(&name.as_str()) {
                    continue;
                }
                if let toml::Value::Table(t) = &mut section {
                    for key in hide {
                        if let Some(v) = t.get_mut(*key) {
                            *v = toml::Value::String("<redacted>".into());
                        }
                    }
                }
                out.insert(name, section);
            }
        }
        toml::to_string_pretty(&out).map_err(|e| bad(e.to_string()))
    }
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
