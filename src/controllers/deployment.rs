//! The Deployment controller, on the controller runtime: for each Deployment, the
//! ReplicaSets it controls (claimed with the controller-ref manager: matching orphans adopted,
//! non-matching ones released) are handed to `deployment_plan::plan`, and the actions it
//! returns (create a ReplicaSet, scale one, delete an old one, update status) are carried out
//! through the API server. Rollouts advance as the ReplicaSets' status changes; a Deployment
//! whose progress deadline is pending is requeued for that moment.

use std::time::Duration;

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::deployment_plan::{
    current_revision, plan, progress_deadline_at, Action as Step, REVISION_ANNOTATION,
};
use super::runtime::refs::{adopt_patch, claim, release_patch};
use super::runtime::{self, Action, Controller, ReconcileError, Reconciler};
use super::{controller_of, key_of, record};
use crate::api::meta;
use crate::api::selector::LabelSelector;
use crate::api::wire::{DeleteOptions, ListOptions, PatchType};
use crate::client::{ApiClient, Cache, Informer, Notification};

const COMPONENT: &str = "deployment-controller";

/// The Deployment controller's reconciler.
#[derive(Clone)]
pub struct Deployments {
    client: ApiClient,
    deployments: Cache,
    replica_sets: Cache,
}

/// The Deployment controller, running while `leading` is true.
pub type DeploymentController = Controller<Deployments>;

/// Starts the Deployment controller (inside an actix System).
pub fn start(client: ApiClient, leading: watch::Receiver<bool>) -> Addr<DeploymentController> {
    let d = Informer::start(
        client.api("apps", "deployments", None),
        ListOptions::default(),
    );
    let rs = Informer::start(
        client.api("apps", "replicasets", None),
        ListOptions::default(),
    );
    let reconciler = Deployments {
        client,
        deployments: d.cache.clone(),
        replica_sets: rs.cache.clone(),
    };
    let deployments = reconciler.deployments.clone();
    Controller::create(move |ctx| {
        let addr = ctx.address();
        let mut c = Controller::new("deployment", reconciler, leading).workers(5);
        c.keep(runtime::watch(d, addr.clone(), |n| match n {
            Notification::Added(d) | Notification::Updated(_, d) => vec![key_of(d)],
            _ => Vec::new(),
        }));
        c.keep(runtime::watch(rs, addr, move |n| rs_keys(&deployments, n)));
        c
    })
}

/// The Deployments a ReplicaSet notification concerns: its controller (and the one it had
/// before, when released), or every Deployment of its namespace for an orphan (one may adopt
/// it).
fn rs_keys(deployments: &Cache, n: &Notification) -> Vec<String> {
    let (rs, old) = match n {
        Notification::Added(rs) | Notification::Deleted(rs) => (rs, None),
        Notification::Updated(old, rs) => (rs, Some(old)),
        Notification::Synced => return Vec::new(),
    };
    let owners: Vec<String> = [Some(rs), old]
        .into_iter()
        .flatten()
        .filter_map(|o| controller_of(o, "Deployment"))
        .collect();
    let ns = meta::namespace(rs);
    let list = deployments.list_namespace(ns);
    if owners.is_empty() {
        if matches!(n, Notification::Deleted(_)) {
            return Vec::new();
        }
        return list.iter().map(key_of).collect();
    }
    list.iter()
        .filter(|d| owners.iter().any(|u| u == meta::uid(d)))
        .map(key_of)
        .collect()
}

impl Reconciler for Deployments {
    fn reconcile(&self, key: String) -> LocalBoxFuture<'static, Result<Action, ReconcileError>> {
        let me = self.clone();
        Box::pin(async move {
            let (ns, name) = key.split_once('/').unwrap_or(("", key.as_str()));
            match me.deployments.get(ns, name) {
                Some(d) => reconcile(&me.client, &d, &me.replica_sets).await,
                None => Ok(Action::AwaitChange),
            }
        })
    }
}

/// One reconciliation of one Deployment: its ReplicaSets claimed (orphans that match its
/// selector adopted, as after `kubectl delete deploy --cascade=orphan` and a re-create;
/// those that no longer match released), then the plan carried out.
async fn reconcile(client: &ApiClient, d: &Value, rss: &Cache) -> Result<Action, ReconcileError> {
    let ns = meta::namespace(d).to_string();
    let Ok(selector) =
        LabelSelector::from_json(d.pointer("/spec/selector").unwrap_or(&Value::Null))
    else {
        return Ok(Action::AwaitChange);
    };
    let rs_api = client.api("apps", "replicasets", Some(&ns));
    let claimed = claim(d, &selector, rss.list_namespace(&ns));
    let mut owned = claimed.owned;
    for rs in &claimed.release {
        if let Err(e) = rs_api
            .patch(
                meta::name(rs),
                None,
                PatchType::Merge,
                &release_patch(d, rs),
            )
            .await
        {
            tracing::debug!(rs = %meta::name(rs), error = %e, "releasing a ReplicaSet");
        }
    }
    for rs in &claimed.adopt {
        match rs_api
            .patch(meta::name(rs), None, PatchType::Merge, &adopt_patch(d, rs))
            .await
        {
            Ok(adopted) => owned.push(adopted),
            Err(e) => return Err(e.into()),
        }
    }
    if d.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok(Action::AwaitChange);
    }
    let now = jiff::Timestamp::now().as_second();
    let d_api = client.api("apps", "deployments", Some(&ns));
    for action in plan(d, &owned, now) {
        let result = match &action {
            Step::CreateReplicaSet(rs) => {
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
            Step::Scale {
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
                // Only a change of size is a scaling Event (annotations alone are not).
                let before = owned
                    .iter()
                    .find(|rs| meta::name(rs) == name.as_str())
                    .and_then(|rs| rs.pointer("/spec/replicas"))
                    .and_then(Value::as_i64);
                let r = rs_api
                    .patch(name, None, PatchType::Merge, &patch)
                    .await
                    .map(|_| ());
                if r.is_ok() && before != Some(*replicas) {
                    let msg = format!("Scaled replica set {name} to {replicas}");
                    record(client, d, COMPONENT, "Normal", "ScalingReplicaSet", &msg).await;
                }
                r
            }
            Step::DeleteReplicaSet { name } => rs_api
                .delete(name, &DeleteOptions::default())
                .await
                .map(|_| ()),
            Step::UpdateStatus(status) => {
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
            return Err(e.into());
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
        d_api
            .patch(meta::name(d), None, PatchType::Merge, &patch)
            .await?;
    }
    // Look again when the progress deadline passes, as kube's controller requeues a
    // Deployment for it; everything else arrives as a change of it or its ReplicaSets.
    Ok(match progress_deadline_at(d) {
        Some(at) => Action::requeue(Duration::from_secs(at.saturating_sub(now).max(1) as u64)),
        None => Action::AwaitChange,
    })
}
