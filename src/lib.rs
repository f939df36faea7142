//! Skiff: a Kubernetes-style control plane whose components are actix actors talking over NATS.
//!
//! # Layout
//! - `api`: wire and object types only — the `Status` error model, the resource table, NATS
//!   subjects and envelopes, the guarded MessagePack codec, packed objects (LZ4 against a
//!   per-kind dictionary, for informer caches and the Store's values), label and field
//!   selectors.
//! - `apiserver`: the ApiServer actor (authentication, registry, watch streams), authorization
//!   (`apiserver::authz`: the `Node,RBAC` chain, escalation checks, NodeRestriction, the
//!   bootstrap policy and ClusterRole aggregation), service account tokens
//!   (`apiserver::serviceaccount`: TokenRequest and the JWTs it signs), the ServiceAccount
//!   admission plugin (`apiserver::sa_admission`: the projected token volume), the audit log
//!   (`apiserver::audit`), the per-kind
//!   strategies (`apiserver::kinds`: defaults, validation, update rules, delete hooks, Table
//!   columns of each kind, one file per kind), validation (`apiserver::validation`), field
//!   management and server-side apply (`apiserver::managed`), custom resources
//!   (`apiserver::custom`: the kinds CRDs define, their schemas, CEL rules, strategies and
//!   the loop that finishes a CRD's deletion), Event expiry (`apiserver::event_ttl`),
//!   the Store actor it alone owns (`apiserver::store`, private, with its packed state,
//!   watcher index and encryption at rest; `store::etcd`: etcd as the store, the Store
//!   then its watch cache), the NATS bridge (which also ends watches nobody listens to any more),
//!   `events.k8s.io` Events served as the core ones they are (`apiserver::events_v1`),
//!   the intake (a thread that reads requests off the bus and refuses the late ones with
//!   429), `apiserver::run` (the API server process: its files, store, NATS and HTTPS), flow control (`apiserver::flowcontrol`: priority levels, fair queuing, 429) and
//!   the HTTPS front (`apiserver::http`: REST, Tables, JSON and Kubernetes-protobuf bodies).
//! - `client`: `ApiClient`, the one way every other component talks to the API server —
//!   CRUD, resuming watches, shared informers (compact caches with indexes),
//!   `client::retry` (rate limit, retries with back-off and `Retry-After`) and
//!   `client::identity` (a component's credentials, connecting as it).
//! - `config`: one configuration tree for every component (`[nats]`, `[apiserver]`,
//!   `[etcd]`, `[scheduler]`, `[controller_manager]`, `[kubelet]`: file, `SKIFF_*`
//!   environment — every name in `config::env` — and flags).
//! - `scheduler`: the Scheduler actor (informers, node summaries, binding, leader election),
//!   its pure filter/score algorithm (with inter-pod affinity and anti-affinity and
//!   topology spread constraints) and
//!   `scheduler::run`, the process.
//! - `controllers`: the controller runtime (`controllers::runtime`: the `Reconciler` trait,
//!   the generic `Controller` actor over a deduplicating work queue with requeue-after,
//!   back-off and leader gating, and the controller-ref manager) and the controllers on it
//!   (ReplicaSet, Deployment, the garbage collector for every kind, the taint manager,
//!   PodGC, namespace, node lifecycle, `controllers::per_namespace`: the `default`
//!   ServiceAccount and the `kube-root-ca.crt` ConfigMap of every namespace), the pure
//!   Deployment rollout planner and `controllers::run`, the controller-manager process.
//! - `kubelet`: the Kubelet actor (node registration, lease, pod workers with init
//!   containers, probes, active deadlines, Events, logs), container environments
//!   (`kubelet::env`: envFrom, ConfigMap/Secret/field/resource references), pod volumes as
//!   files (`kubelet::volumes`: configMap, secret, downwardAPI, projected with bound tokens,
//!   emptyDir, hostPath), the container runtimes (`process`, `docker`, `fake`),
//!   `kubelet::hollow` (many simulated nodes in one actor for scale runs) and
//!   `kubelet::run`, the process (runtime choice, NATS bootstrap).
//! - `process`: what every component process shares: host name, `/metrics`, stop signals.
//! - `files`: directories and files that hold secrets, owner-only from their first byte.
//! - `metrics`: the process-wide Prometheus registry every component updates and `/metrics`
//!   renders.
//! - `rt`: side threads (a current-thread runtime of their own) for work that must not queue
//!   behind a component's tasks.
//! - `trace`: W3C trace context on every hop, span records, the per-process tracer and the
//!   API server's span collector (bounded buffer, timeline queries, OTLP export).
//! - `cmd`: the command lines of the `skiff` binary (each component's flags laid over its
//!   configuration sections; `up`, `init`, `kubeconfig`, `nats-config`, `nats-run`) and the
//!   process titles they set; each component's process starts in its own module's `run`.

// `Status` is the error of every API call and is deliberately the whole Kubernetes shape;
// boxing it everywhere would cost more than the moves it saves.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod apiserver;
pub mod client;
pub mod cmd;
pub mod config;
pub mod controllers;
pub mod files;
pub mod kubelet;
pub mod metrics;
pub mod process;
pub mod rt;
pub mod scheduler;
pub mod trace;

/// Every Skiff process (and every test and benchmark, which link this crate) allocates with
/// mimalloc rather than glibc's malloc: at 10,000 hollow nodes and 100,000 pods glibc's
/// allocator took a third of the CPU (`_int_malloc`, `malloc_consolidate`, `free`) and kept
/// ~400 MB freed but resident across its per-thread arenas. The `system-allocator` feature
/// keeps glibc's, for heap profilers that hook `malloc` (heaptrack, valgrind).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
