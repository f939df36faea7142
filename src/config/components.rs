//! The sections every component but the API server reads: `[nats]` (shared by all, the API
//! server too), `[scheduler]`, `[controller_manager]` and `[kubelet]`. Each default is
//! defined here, once; flags and `SKIFF_*` variables override the file (see `cmd`).
//! Credentials (NATS passwords, tokens) are never read from the file: they come from the
//! environment, flags or token files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[nats]`: how every component reaches the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// The NATS URL, or a comma-separated list of a cluster's servers.
    pub url: String,
    /// The CA of the NATS server's certificate: connect with TLS and verify it.
    pub ca_file: Option<PathBuf>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            ca_file: None,
        }
    }
}

/// `[scheduler]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Where `/metrics` and `/healthz` are served over plain HTTP ("" turns them off);
    /// kube-scheduler's port.
    pub metrics_bind: String,
    /// The user the token belongs to.
    pub user: String,
    /// This replica's identity in the leader election (default: host name and pid).
    pub identity: Option<String>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            metrics_bind: "0.0.0.0:10259".into(),
            user: "system:kube-scheduler".into(),
            identity: None,
        }
    }
}

/// `[controller_manager]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerManagerConfig {
    /// Where `/metrics` and `/healthz` are served ("" turns them off).
    pub metrics_bind: String,
    /// The user the token belongs to.
    pub user: String,
    /// This replica's identity in the leader election (default: host name and pid).
    pub identity: Option<String>,
    /// Seconds without a Lease renewal before a node is NotReady (kube's
    /// `--node-monitor-grace-period`).
    pub node_monitor_grace_period: u64,
    /// Seconds pods on an unreachable node are tolerated before eviction.
    pub pod_eviction_timeout: u64,
    /// The cluster CA (PEM) published in every namespace as ConfigMap `kube-root-ca.crt`
    /// (kube's `--root-ca-file`); none: not published.
    pub root_ca_file: Option<PathBuf>,
}

impl Default for ControllerManagerConfig {
    fn default() -> Self {
        ControllerManagerConfig {
            metrics_bind: "0.0.0.0:10257".into(),
            user: "system:kube-controller-manager".into(),
            identity: None,
            node_monitor_grace_period: 50,
            pod_eviction_timeout: 300,
            root_ca_file: None,
        }
    }
}

/// `[kubelet]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletConfig {
    /// Where `/metrics` and `/healthz` are served ("" turns them off).
    pub metrics_bind: String,
    /// The Node's name (default: the host name).
    pub node_name: Option<String>,
    /// `process` (real processes), `docker` (containers), `fake` (no processes), or `auto`
    /// (docker when its socket exists, else process).
    pub runtime: String,
    /// Where the kubelet keeps pod logs, working directories and volumes.
    pub root: PathBuf,
    /// Get this node's own NATS user from the API server first: the NATS user and password
    /// given are then the shared `kubelet-bootstrap` credentials, which may do nothing else.
    pub nats_bootstrap: bool,
    /// Seconds a node Lease is valid; renewed every quarter of that, as the kubelet does.
    pub node_lease_duration_seconds: u64,
    /// The node's address; `auto`: the address this host reaches NATS from.
    pub node_ip: String,
    /// The API server's HTTPS `host:port` as pods reach it (their
    /// `KUBERNETES_SERVICE_HOST`/`_PORT`); none: pods are not told.
    pub apiserver_endpoint: Option<String>,
    /// The Docker Engine's socket (the docker runtime).
    pub docker_socket: PathBuf,
    /// Pod containers' network mode: `host` (the node's network), `kubelet` (the kubelet's
    /// own container's, in compose) or any Docker network mode.
    pub docker_network: String,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            metrics_bind: "0.0.0.0:10255".into(),
            node_name: None,
            runtime: "process".into(),
            root: PathBuf::from("/var/lib/skiff/kubelet"),
            nats_bootstrap: false,
            node_lease_duration_seconds: 40,
            node_ip: "127.0.0.1".into(),
            apiserver_endpoint: None,
            docker_socket: PathBuf::from(crate::kubelet::runtime::docker::DEFAULT_SOCKET),
            docker_network: crate::kubelet::runtime::docker::DEFAULT_NETWORK.into(),
        }
    }
}

impl KubeletConfig {
    /// Checks values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(
            self.runtime.as_str(),
            "process" | "docker" | "fake" | "auto"
        ) {
            return Err(ConfigError::Invalid {
                key: "runtime",
                why: format!("{:?}: want process, docker, fake or auto", self.runtime),
            });
        }
        if self.node_lease_duration_seconds == 0 {
            return Err(ConfigError::Invalid {
                key: "node_lease_duration_seconds",
                why: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}
