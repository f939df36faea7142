//! Every `SKIFF_*` environment variable Skiff reads, by name: a flag's `env = …` and every
//! `std::env::var` use one of these, so this list is the whole environment interface.

/// The config file (`--config`).
pub const CONFIG: &str = "SKIFF_CONFIG";
/// Log filter (`--log`, tracing's EnvFilter syntax).
pub const LOG: &str = "SKIFF_LOG";
/// Log format: `text` or `json`.
pub const LOG_FORMAT: &str = "SKIFF_LOG_FORMAT";

// [nats]: every component.
/// NATS URL, or a comma-separated list of a cluster's servers.
pub const NATS_URL: &str = "SKIFF_NATS_URL";
/// The CA the NATS server's certificate is verified with (TLS).
pub const NATS_CA_FILE: &str = "SKIFF_NATS_CA_FILE";
/// This component's NATS user.
pub const NATS_USER: &str = "SKIFF_NATS_USER";
/// Its password.
pub const NATS_PASSWORD: &str = "SKIFF_NATS_PASSWORD";
/// A component's bearer token.
pub const TOKEN: &str = "SKIFF_TOKEN";
/// A file holding it.
pub const TOKEN_PATH: &str = "SKIFF_TOKEN_PATH";
/// Where `/metrics` and `/healthz` are served (scheduler, controller-manager, kubelet).
pub const METRICS_BIND: &str = "SKIFF_METRICS_BIND";

// [apiserver]
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
pub const AUDIT_LOG_PATH: &str = "SKIFF_AUDIT_LOG_PATH";
pub const ENCRYPTION_PROVIDER_CONFIG: &str = "SKIFF_ENCRYPTION_PROVIDER_CONFIG";
pub const DISABLE_ADMISSION_PLUGINS: &str = "SKIFF_DISABLE_ADMISSION_PLUGINS";

// [etcd]
pub const ETCD_SERVERS: &str = "SKIFF_ETCD_SERVERS";
pub const ETCD_CAFILE: &str = "SKIFF_ETCD_CAFILE";
pub const ETCD_CERTFILE: &str = "SKIFF_ETCD_CERTFILE";
pub const ETCD_KEYFILE: &str = "SKIFF_ETCD_KEYFILE";
pub const ETCD_COMPACTION_INTERVAL: &str = "SKIFF_ETCD_COMPACTION_INTERVAL";

// [controller_manager]
pub const NODE_MONITOR_GRACE_PERIOD: &str = "SKIFF_NODE_MONITOR_GRACE_PERIOD";
pub const POD_EVICTION_TIMEOUT: &str = "SKIFF_POD_EVICTION_TIMEOUT";
pub const ROOT_CA_FILE: &str = "SKIFF_ROOT_CA_FILE";

// [kubelet]
pub const NODE_NAME: &str = "SKIFF_NODE_NAME";
pub const RUNTIME: &str = "SKIFF_RUNTIME";
pub const KUBELET_ROOT: &str = "SKIFF_KUBELET_ROOT";
pub const NATS_BOOTSTRAP: &str = "SKIFF_NATS_BOOTSTRAP";
pub const NODE_LEASE_DURATION_SECONDS: &str = "SKIFF_NODE_LEASE_DURATION_SECONDS";
pub const NODE_IP: &str = "SKIFF_NODE_IP";
pub const APISERVER_ENDPOINT: &str = "SKIFF_APISERVER_ENDPOINT";
pub const DOCKER_SOCKET: &str = "SKIFF_DOCKER_SOCKET";
pub const DOCKER_NETWORK: &str = "SKIFF_DOCKER_NETWORK";

// `skiff nats-run` and `skiff nats-config`
pub const NATS_TLS_DIR: &str = "SKIFF_NATS_TLS_DIR";
pub const NATS_TLS_SANS: &str = "SKIFF_NATS_TLS_SANS";
pub const NATS_CA_OUT: &str = "SKIFF_NATS_CA_OUT";
pub const NATS_ROUTES: &str = "SKIFF_NATS_ROUTES";
pub const NATS_CLUSTER_NAME: &str = "SKIFF_NATS_CLUSTER_NAME";
pub const NATS_ROUTE_PASSWORD: &str = "SKIFF_NATS_ROUTE_PASSWORD";
/// The prefix and suffix of the passwords a generated nats-server config refers to:
/// `SKIFF_NATS_<COMPONENT>_PASSWORD` (nats-server reads them from its environment).
pub const NATS_PASSWORD_PREFIX: &str = "SKIFF_NATS_";
pub const NATS_PASSWORD_SUFFIX: &str = "_PASSWORD";

// Set by Skiff for its own children, or for tests.
/// `off` turns span recording off.
pub const TRACE: &str = "SKIFF_TRACE";
/// The process title a re-executed component already has.
pub const TITLE: &str = "SKIFF_TITLE";
/// Set: never re-execute for a process title.
pub const NO_TITLE: &str = "SKIFF_NO_TITLE";
/// The pod root a process-runtime container sees its volumes under.
pub const CONTAINER_ROOT: &str = "SKIFF_CONTAINER_ROOT";
/// Tests: a file the docker runtime logs skipped log lines to.
pub const SKIP_LOG: &str = "SKIFF_SKIP_LOG";
