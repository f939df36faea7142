//! The Deployment controller actor: for each Deployment, the ReplicaSets it owns are handed to
//! `deployment_plan::plan`, and the actions it returns (create a ReplicaSet, scale one, delete
//! an old one, update status) are carried out through the API server. Rollouts advance as the
//! ReplicaSets' status changes.

use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Value};

use super::deployment_plan::{current_revision, plan, Action, REVISION_ANNOTATION};
use super::replicaset::forward;
use super::{controller_of, key_of, record, Queue};
use crate::api::meta;
use crate::api::wire::{DeleteOptions, ListOptions, PatchType};
use crate::client::{ApiClient, Cache, Informer, Notification};

const COMPONENT: &str = "deployment-controller";

/// The Deployment controller actor.
pub struct DeploymentController {
    client: ApiClient,
    leading: tokio::sync::watch::Receiver<bool>,
    deployments: Cache,
    replica_sets: Cache,
    queue: Queue,
    busy: bool,
    keep: Vec<Informer>,
}

#[derive(Message)]
#[rtype(result = "()")]
enum Seen {
    Deployment(Notification),
    ReplicaSet(Notification),
    Tick,
    Done,
}

impl DeploymentController {
    /// A controller acting while `leading` is true.
    pub fn new(client: ApiClient, leading: tokio::sync::watch::Receiver<bool>) -> Self {
        DeploymentController {
            client,
            leading,
            deployments: Cache::default(),
            replica_sets: Cache::default(),
            queue: Queue::named("deployment"),
            busy: false,
            keep: Vec::new(),
        }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.queue.is_empty() || !*self.leading.borrow() {
            return;
        }
        self.busy = true;
        let keys = self.queue.take();
        let (client, deployments, rss) = (
            self.client.clone(),
            self.deployments.clone(),
            self.replica_sets.clone(),
        );
        let addr = ctx.address();
        actix::spawn(async move {
            for key in keys {
                let (ns, name) = key.split_once('/').unwrap_or(("", key.as_str()));
                if let Some(d) = deployments.get(ns, name) {
                    reconcile(&client, &d, &rss).await;
                }
            }
            addr.do_send(Seen::Done);
        });
    }
}

impl Actor for DeploymentController {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let d = Informer::start(
            self.client.api("apps", "deployments", None),
            ListOptions::default(),
        );
        let rs = Informer::start(
            self.client.api("apps", "replicasets", None),
            ListOptions::default(),
        );
        self.deployments = d.cache.clone();
        self.replica_sets = rs.cache.clone();
        self.keep.push(forward(d, addr.clone(), Seen::Deployment));
        self.keep.push(forward(rs, addr.clone(), Seen::ReplicaSet));
        ctx.run_interval(Duration::from_secs(5), |_, ctx| ctx.notify(Seen::Tick));
        let mut leading = self.leading.clone();
        actix::spawn(async move {
            while leading.changed().await.is_ok() {
                addr.do_send(Seen::Tick);
            }
        });
    }
}

impl Handler<Seen> for DeploymentController {
    type Result = ();

    fn handle(&mut self, seen: Seen, ctx: &mut Context<Self>) {
        let _span = crate::trace::handler_span(
            "DeploymentController",
            "Seen",
            match &seen {
                Seen::Deployment(n) => n.object(),
                Seen::ReplicaSet(n) => n.object(),
                _ => None,
            },
        )
        .entered();
        match seen {
            Seen::Deployment(Notification::Added(d) | Notification::Updated(_, d)) => {
                self.queue.add(key_of(&d))
            }
            Seen::Deployment(_) => {}
            Seen::ReplicaSet(
                Notification::Added(rs) | Notification::Updated(_, rs) | Notification::Deleted(rs),
            ) => {
                if let Some(uid) = controller_of(&rs, "Deployment") {
                    if let Some(d) = self
                        .deployments
                        .list()
                        .into_iter()
                        .find(|d| meta::uid(d) == uid)
                    {
                        self.queue.add(key_of(&d));
                    }
                }
            }
            Seen::ReplicaSet(_) => {}
            Seen::Tick => {
                for d in self.deployments.list() {
                    self.queue.add(key_of(&d));
                }
            }
            Seen::Done => self.busy = false,
        }
        self.kick(ctx);
    }
}

/// One reconciliation of one Deployment.
async fn reconcile(client: &ApiClient, d: &Value, rss: &Cache) {
    if d.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let ns = meta::namespace(d).to_string();
    let uid = meta::uid(d);
    let owned: Vec<Value> = rss
        .list()
        .into_iter()
        .filter(|rs| {
            meta::namespace(rs) == ns && controller_of(rs, "Deployment").as_deref() == Some(uid)
        })
        .collect();
    let now = jiff::Timestamp::now().as_second();
    let rs_api = client.api("apps", "replicasets", Some(&ns));
    let d_api = client.api("apps", "deployments", Some(&ns));
    for action in plan(d, &owned, now) {
        let result = match &action {
            Action::CreateReplicaSet(rs) => {
                let r = rs_api.create(rs).await.map(|_| ());
                if r.is_ok() {
                    let msg = format!(
                        "Scaled up replica set {} to {}",
                        meta::name(rs),
                        rs["spec"]["replicas"]
                    );
                    record(client, d, COMPONENT, "Normal", "ScalingReplicaSet", &msg).await;
                }
                r
            }
            Action::Scale {
                name,
                replicas,
                annotations,
            } => {
                let mut patch = json!({"spec": {"replicas": replicas}});
                if !annotations.is_empty() {
                    let a: serde_json::Map<String, Value> = annotations
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(v)))
                        .collect();
                    patch["metadata"] = json!({"annotations": a});
                }
                let r = rs_api
                    .patch(name, None, PatchType::Merge, &patch)
                    .await
                    .map(|_| ());
                if r.is_ok() {
                    let msg = format!("Scaled replica set {name} to {replicas}");
                    record(client, d, COMPONENT, "Normal", "ScalingReplicaSet", &msg).await;
                }
                r
            }
            Action::DeleteReplicaSet { name } => rs_api
                .delete(name, &DeleteOptions::default())
                .await
                .map(|_| ()),
            Action::UpdateStatus(status) => {
                // The whole status, at the revision planned from (a stale one retries later).
                let mut next = d.clone();
                next["status"] = status.clone();
                d_api
                    .update_subresource(meta::name(d), "status", &next)
                    .await
                    .map(|_| ())
            }
        };
        if let Err(e) = result {
            tracing::debug!(deployment = %meta::name(d), error = %e, "deployment action failed; will retry");
            return;
        }
    }
    // The Deployment carries the revision of its current ReplicaSet, as Kubernetes' controller
    // keeps it: `kubectl rollout undo` replaces the annotations it finds there.
    let revision = current_revision(d, &owned);
    let annotation = d
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(Value::as_str);
    if revision > 0 && annotation != Some(revision.to_string().as_str()) {
        let patch =
            json!({"metadata": {"annotations": {REVISION_ANNOTATION: revision.to_string()}}});
        if let Err(e) = d_api
            .patch(meta::name(d), None, PatchType::Merge, &patch)
            .await
        {
            tracing::debug!(deployment = %meta::name(d), error = %e, "revision annotation not written; will retry");
        }
    }
}
