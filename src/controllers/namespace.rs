//! The namespace controller: when a namespace is being deleted, it deletes everything in it,
//! reports how far it got in the namespace's conditions (`NamespaceContentRemaining`,
//! `NamespaceFinalizersRemaining` and the others kube sets), and once nothing is left removes
//! the `kubernetes` finalizer, so the API server can remove the namespace itself.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use serde_json::{json, Value};

use super::runtime::{self, Action, Controller, ReconcileError, Reconciler};
use crate::api::meta;
use crate::api::resource::RESOURCES;
use crate::api::wire::{DeleteOptions, ListOptions};
use crate::client::{ApiClient, Cache, Informer, Notification};

/// The reconciler: one key per namespace.
#[derive(Clone)]
pub struct Namespaces {
    client: ApiClient,
    namespaces: Cache,
}

/// The namespace controller, running while `leading` is true.
pub type NamespaceController = Controller<Namespaces>;

/// How soon a namespace whose content is still going is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// Starts it (inside an actix System).
pub fn start(
    client: ApiClient,
    leading: tokio::sync::watch::Receiver<bool>,
) -> Addr<NamespaceController> {
    let informer = Informer::start(client.api("", "namespaces", None), ListOptions::default());
    let reconciler = Namespaces {
        client,
        namespaces: informer.cache.clone(),
    };
    Controller::create(move |ctx| {
        let addr = ctx.address();
        let mut c = Controller::new("namespace", reconciler, leading).workers(2);
        c.keep(runtime::watch(informer, addr, |n| match n {
            Notification::Added(ns) | Notification::Updated(_, ns)
                if ns.pointer("/metadata/deletionTimestamp").is_some() =>
            {
                vec![meta::name(ns).to_string()]
            }
            _ => Vec::new(),
        }));
        c
    })
}

impl Reconciler for Namespaces {
    fn reconcile(&self, name: String) -> LocalBoxFuture<'static, Result<Action, ReconcileError>> {
        let me = self.clone();
        Box::pin(async move {
            match me.namespaces.get("", &name) {
                Some(ns) if ns.pointer("/metadata/deletionTimestamp").is_some() => {
                    // Content still going (or finalizers pending): look again soon, as kube's
                    // controller requeues a namespace it could not finish.
                    if finalize(&me.client, &ns).await? {
                        Ok(Action::AwaitChange)
                    } else {
                        Ok(Action::requeue(RECHECK))
                    }
                }
                _ => Ok(Action::AwaitChange),
            }
        })
    }
}

/// Deletes the namespace's content and reports progress in the namespace's status
/// conditions, as kube's namespace controller does; when it is empty, drops the finalizer.
/// Whether it is done.
async fn finalize(client: &ApiClient, ns: &Value) -> Result<bool, ReconcileError> {
    let name = meta::name(ns);
    let mut progress = Progress::default();
    let mut resources: Vec<(String, String)> = RESOURCES
        .iter()
        .filter(|r| r.namespaced)
        .map(|r| (r.group.to_string(), r.plural.to_string()))
        .collect();
    match custom_resources(client).await {
        Ok(custom) => resources.extend(custom),
        Err(()) => progress
            .failed
            .push("customresourcedefinitions.apiextensions.k8s.io".into()),
    }
    for (group, plural) in &resources {
        let api = client.api(group, plural, Some(name));
        let Ok(list) = api.list_all(&ListOptions::default()).await else {
            progress.failed.push(format!("{plural}.{group}"));
            continue;
        };
        for obj in list.items {
            *progress
                .remaining
                .entry(format!("{plural}.{group}"))
                .or_default() += 1;
            for f in obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                *progress.finalizers.entry(f.to_string()).or_default() += 1;
            }
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                let opts = DeleteOptions {
                    propagation_policy: Some("Background".into()),
                    ..Default::default()
                };
                let _ = api.delete(meta::name(&obj), &opts).await;
            }
        }
    }
    let ns = report(client, ns, &progress).await;
    if !progress.remaining.is_empty() || !progress.failed.is_empty() {
        return Ok(false);
    }
    let mut next = ns;
    next["spec"]["finalizers"] = json!([]);
    match client
        .api("", "namespaces", None)
        .update_subresource(name, "finalize", &next)
        .await
    {
        Ok(_) => {
            tracing::info!(namespace = %name, "namespace emptied and finalized");
            Ok(true)
        }
        Err(e) if e.code == 404 => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// The namespaced kinds CRDs add, as (group, plural): kube's namespace controller finds
/// them by discovery, this one from the CRDs themselves (those of a CRD being deleted too:
/// their objects still need to go).
async fn custom_resources(client: &ApiClient) -> Result<Vec<(String, String)>, ()> {
    let crds = client
        .api(
            crate::apiserver::custom::GROUP,
            "customresourcedefinitions",
            None,
        )
        .list_all(&ListOptions::default())
        .await
        .map_err(|_| ())?;
    Ok(crds
        .items
        .iter()
        .filter(|crd| crd.pointer("/spec/scope").and_then(Value::as_str) == Some("Namespaced"))
        .filter_map(|crd| {
            let group = crd.pointer("/spec/group")?.as_str()?;
            let plural = crd.pointer("/spec/names/plural")?.as_str()?;
            Some((group.to_string(), plural.to_string()))
        })
        .collect())
}

/// What one pass over a terminating namespace found.
#[derive(Default)]
struct Progress {
    /// Objects left, by `<resource>.<group>`.
    remaining: BTreeMap<String, usize>,
    /// Finalizers those objects still carry, and on how many.
    finalizers: BTreeMap<String, usize>,
    /// Resources that could not be listed.
    failed: Vec<String>,
}

/// kube's namespace deletion conditions for this pass: (type, status, reason, message).
fn conditions(p: &Progress) -> Vec<(&'static str, &'static str, &'static str, String)> {
    let list = |m: &BTreeMap<String, usize>, what: &str| {
        m.iter()
            .map(|(k, n)| format!("{k}{what}{n} resource instances"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        (
            "NamespaceDeletionDiscoveryFailure",
            "False",
            "ResourcesDiscovered",
            "All resources successfully discovered".to_string(),
        ),
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            "False",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".to_string(),
        ),
        if p.failed.is_empty() {
            (
                "NamespaceDeletionContentFailure",
                "False",
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".to_string(),
            )
        } else {
            (
                "NamespaceDeletionContentFailure",
                "True",
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: could not list {}",
                    p.failed.len(),
                    p.failed.join(", ")
                ),
            )
        },
        if p.remaining.is_empty() {
            (
                "NamespaceContentRemaining",
                "False",
                "ContentRemoved",
                "All content successfully removed".to_string(),
            )
        } else {
            (
                "NamespaceContentRemaining",
                "True",
                "SomeResourcesRemain",
                format!(
                    "Some resources are remaining: {}",
                    list(&p.remaining, " has ")
                ),
            )
        },
        if p.finalizers.is_empty() {
            (
                "NamespaceFinalizersRemaining",
                "False",
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".to_string(),
            )
        } else {
            (
                "NamespaceFinalizersRemaining",
                "True",
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    list(&p.finalizers, " in ")
                ),
            )
        },
    ]
}

/// Writes the pass's conditions to the namespace's status when they changed (a condition
/// keeps its transition time while its status stays), and returns the namespace as it now is.
async fn report(client: &ApiClient, ns: &Value, p: &Progress) -> Value {
    let old: Vec<Value> = ns
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let now = meta::now();
    let mut changed = false;
    let next_conditions: Vec<Value> = conditions(p)
        .into_iter()
        .map(|(kind, status, reason, message)| {
            let before = old.iter().find(|c| c["type"] == kind);
            let same = before.is_some_and(|c| {
                c["status"] == status && c["reason"] == reason && c["message"] == message.as_str()
            });
            changed |= !same;
            let since = match before {
                Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
                _ => json!(now),
            };
            json!({"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": since})
        })
        .collect();
    if !changed {
        return ns.clone();
    }
    let mut next = ns.clone();
    if !next.get("status").is_some_and(Value::is_object) {
        next["status"] = json!({});
    }
    next["status"]["conditions"] = json!(next_conditions);
    match client
        .api("", "namespaces", None)
        .update_subresource(meta::name(ns), "status", &next)
        .await
    {
        Ok(updated) => updated,
        Err(e) => {
            tracing::debug!(namespace = %meta::name(ns), error = %e, "namespace conditions; will retry");
            ns.clone()
        }
    }
}
