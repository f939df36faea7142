//! The scheduler process (`skiff scheduler`, and the scheduler inside `skiff up`).

use crate::client::identity::Credentials;
use crate::client::ApiClient;
use crate::config::{NatsConfig, SchedulerConfig};
use crate::process::{hostname, serve_metrics};

use super::{Scheduler, SchedulerOptions};

/// Starts a scheduler's actors (inside an actix System).
pub async fn start_scheduler(client: ApiClient, identity: &str) -> actix::Addr<Scheduler> {
    actix::Actor::start(Scheduler::new(SchedulerOptions::new(identity), client))
}

/// `skiff scheduler`: connects as `config.user`, runs the scheduler (leader-elected) and
/// its metrics endpoint until SIGTERM or SIGINT.
pub fn run(
    nats: NatsConfig,
    config: SchedulerConfig,
    credentials: Credentials,
) -> anyhow::Result<()> {
    let identity = config
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    actix::System::new().block_on(async move {
        serve_metrics(&config.metrics_bind, "scheduler");
        let client = credentials.connect(&nats, &config.user).await?;
        let _scheduler = start_scheduler(client, &identity).await;
        tracing::info!(%identity, "skiff scheduler ready");
        crate::process::wait_for_signal().await;
        anyhow::Ok(())
    })
}
