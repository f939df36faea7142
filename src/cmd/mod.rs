//! The subcommands of the `skiff` binary. Each parses its own flags over the layered config
//! and runs one component.

pub mod apiserver;
pub mod components;
pub mod init;
pub mod kubeconfig;
pub mod natsconf;
pub mod title;
pub mod trace;
pub mod up;

use clap::{Parser, Subcommand};

/// Command line of `skiff`.
#[derive(Debug, Parser)]
#[command(
    name = "skiff",
    version,
    about = "A Kubernetes-style control plane on NATS"
)]
pub struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info,skiff=debug`.
    #[arg(long, global = true, env = crate::config::env::LOG, default_value = "info")]
    pub log: String,
    /// `text` (default) or `json`: one JSON object per line, with the request's span fields
    /// (among them `trace_id`). Tokens and passwords are never logged.
    #[arg(long, global = true, env = crate::config::env::LOG_FORMAT, default_value = "text")]
    pub log_format: String,
    /// The component to run.
    #[command(subcommand)]
    pub command: Command,
}

/// One component per subcommand, so each can be scaled on its own.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The API server: the only owner of the store, serving requests over NATS.
    Apiserver(Box<apiserver::Args>),
    /// The scheduler: binds pods to nodes (leader-elected).
    Scheduler(components::SchedulerArgs),
    /// The controllers: ReplicaSet, Deployment, garbage collector, namespace, node lifecycle
    /// (leader-elected).
    ControllerManager(components::ControllerManagerArgs),
    /// A node agent: runs the pods bound to its node.
    Kubelet(components::KubeletArgs),
    /// Make the state several API servers share (CA, certificates, tokens, keys), once.
    Init(init::Args),
    /// Print a kubeconfig for this cluster (admin token, or a new client certificate).
    Kubeconfig(kubeconfig::Args),
    /// Print a nats-server config giving each component its own user and permissions.
    NatsConfig(natsconf::Args),
    /// Run nats-server on a config the API server extends (node users), reloading on change.
    NatsRun(natsconf::RunArgs),
    /// Watch the control plane talk: the bus live (--follow), or one object's timeline.
    Trace(trace::Args),
    /// Everything on one machine: a nats-server child and the API server, embedded store.
    Up(up::Args),
}
