//! A component's credentials: its NATS user and password and its bearer token, from flags,
//! `SKIFF_*` variables or a token file — never from the config file, which may be shared and
//! is printed by `--print-config` — and the client it connects to the API server with.

use std::path::PathBuf;

use anyhow::Context as _;

use super::{ApiClient, ClientOptions};
use crate::config::{env, NatsConfig};

/// Who a component is on the bus and at the API.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// NATS user, when the server requires one.
    pub nats_user: Option<String>,
    /// Its password.
    pub nats_password: Option<String>,
    /// Bearer token of the component's identity.
    pub token: Option<String>,
    /// A file holding the token instead (read at connect).
    pub token_path: Option<PathBuf>,
}

/// The rate limit of a component's client. Kubelets get the kubelet's own defaults
/// (`--kube-api-qps=50 --kube-api-burst=100`); the scheduler and controller-manager are
/// unlimited here, since kube-scheduler's 50/100 would cap binding at ~25 pods/s, 80× below
/// what Skiff's scheduler sustains: the API server's load shedding protects it from them.
pub fn component_retry(user: &str) -> crate::client::RetryPolicy {
    if user.starts_with("system:node:") {
        crate::client::RetryPolicy::limited(50.0, 100)
    } else {
        crate::client::RetryPolicy::default()
    }
}

impl Credentials {
    /// The bearer token, from `--token` or the file `--token-path` names.
    pub fn bearer(&self) -> anyhow::Result<String> {
        match (&self.token, &self.token_path) {
            (Some(t), _) => Ok(t.trim().to_string()),
            (None, Some(path)) => Ok(std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?
                .trim()
                .to_string()),
            (None, None) => anyhow::bail!(
                "no token: give --token or --token-path ({}, {})",
                env::TOKEN,
                env::TOKEN_PATH
            ),
        }
    }

    /// Connects to the bus `nats` names as `user` (the identity the token belongs to).
    pub async fn connect(&self, nats: &NatsConfig, user: &str) -> anyhow::Result<ApiClient> {
        let c = self;
        let mut options = ClientOptions::new(&nats.url, user, &c.bearer()?);
        options.retry = component_retry(user);
        if let Some(u) = &c.nats_user {
            options.nats_user = Some((u.clone(), c.nats_password.clone().unwrap_or_default()));
        }
        options.nats_ca = nats.ca_file.clone();
        ApiClient::connect(options)
            .await
            .with_context(|| format!("connecting to {} as {user}", nats.url))
    }
}
