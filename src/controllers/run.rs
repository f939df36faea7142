//! The controller-manager process (`skiff controller-manager`, and the controllers inside
//! `skiff up`).

use std::time::Duration;

use anyhow::Context as _;

use crate::client::identity::Credentials;
use crate::client::leader::ElectionTimings;
use crate::client::ApiClient;
use crate::config::{ControllerManagerConfig, NatsConfig};
use crate::controllers;
use crate::process::{hostname, serve_metrics};

/// The node lifecycle timings the configuration asks for.
pub fn lifecycle(
    config: &ControllerManagerConfig,
) -> controllers::nodelifecycle::NodeLifecycleOptions {
    controllers::nodelifecycle::NodeLifecycleOptions {
        grace: Duration::from_secs(config.node_monitor_grace_period),
        eviction_timeout: Duration::from_secs(config.pod_eviction_timeout),
    }
}

/// The controllers of the controller-manager, kept alive together.
pub struct ControllerSet {
    _election: crate::client::leader::Election,
    _replica_sets: actix::Addr<controllers::replicaset::ReplicaSetController>,
    _deployments: actix::Addr<controllers::deployment::DeploymentController>,
    _gc: actix::Addr<controllers::gc::GarbageCollector>,
    _taints: actix::Addr<controllers::taint::TaintController>,
    _pod_gc: actix::Addr<controllers::podgc::PodGcController>,
    _nodes: actix::Addr<controllers::nodelifecycle::NodeLifecycleController>,
    _namespaces: actix::Addr<controllers::namespace::NamespaceController>,
    _service_accounts: actix::Addr<controllers::per_namespace::PerNamespaceController>,
    _root_ca: Option<actix::Addr<controllers::per_namespace::PerNamespaceController>>,
}

/// Starts the controller-manager's actors (inside an actix System); `root_ca` (PEM) is
/// published in every namespace when given.
pub fn start_controllers(
    client: ApiClient,
    identity: &str,
    timings: ElectionTimings,
    nodes: controllers::nodelifecycle::NodeLifecycleOptions,
    root_ca: Option<String>,
) -> ControllerSet {
    let (election, leading) = controllers::leader(&client, identity, timings);
    ControllerSet {
        _election: election,
        _replica_sets: controllers::replicaset::start(client.clone(), leading.clone()),
        _deployments: controllers::deployment::start(client.clone(), leading.clone()),
        _gc: controllers::gc::start(client.clone(), leading.clone()),
        _taints: controllers::taint::start(client.clone(), leading.clone()),
        _pod_gc: controllers::podgc::start(client.clone(), leading.clone()),
        _nodes: controllers::nodelifecycle::start(client.clone(), leading.clone(), nodes),
        _service_accounts: controllers::serviceaccount::controller(client.clone(), leading.clone()),
        _root_ca: root_ca
            .map(|pem| controllers::rootca::controller(client.clone(), leading.clone(), pem)),
        _namespaces: controllers::namespace::start(client, leading),
    }
}

/// `skiff controller-manager`: connects as `config.user`, runs every controller (leader-
/// elected) and the metrics endpoint until SIGTERM or SIGINT.
pub fn run(
    nats: NatsConfig,
    config: ControllerManagerConfig,
    credentials: Credentials,
) -> anyhow::Result<()> {
    let identity = config
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    actix::System::new().block_on(async move {
        serve_metrics(&config.metrics_bind, "controller-manager");
        let root_ca = match &config.root_ca_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading --root-ca-file {}", path.display()))?,
            ),
            None => None,
        };
        let client = credentials.connect(&nats, &config.user).await?;
        let _controllers = start_controllers(
            client,
            &identity,
            ElectionTimings::default(),
            lifecycle(&config),
            root_ca,
        );
        tracing::info!(%identity, "skiff controller-manager ready");
        crate::process::wait_for_signal().await;
        anyhow::Ok(())
    })
}
