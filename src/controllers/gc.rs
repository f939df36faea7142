//! The garbage collector: deletes dependents whose owner is gone (background deletion),
//! deletes dependents before their owner for `foregroundDeletion`, and releases dependents for
//! `orphan`. It watches the kinds that own or are owned here: Deployments, ReplicaSets, Pods.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Value};

use super::replicaset::forward;
use crate::api::meta;
use crate::api::wire::{DeleteOptions, ListOptions, PatchType};
use crate::client::{ApiClient, Cache, Informer, Notification};

/// (group, resource) of each kind the collector knows, by kind.
const KINDS: &[(&str, &str, &str)] = &[
    ("Deployment", "apps", "deployments"),
    ("ReplicaSet", "apps", "replicasets"),
    ("Pod", "", "pods"),
];

/// The garbage collector actor.
pub struct GarbageCollector {
    client: ApiClient,
    leading: tokio::sync::watch::Receiver<bool>,
    caches: Vec<(&'static str, Cache)>,
    /// Owner uids seen deleted.
    gone: HashSet<String>,
    /// Owner uids found missing by the previous sweep (deleted after two sweeps, so informer
    /// lag never collects a live object's dependents).
    suspects: HashSet<String>,
    busy: bool,
    keep: Vec<Informer>,
}

#[derive(Message)]
#[rtype(result = "()")]
enum Seen {
    Change(Notification),
    Sweep,
    Done,
}

impl GarbageCollector {
    /// A collector acting while `leading` is true.
    pub fn new(client: ApiClient, leading: tokio::sync::watch::Receiver<bool>) -> Self {
        GarbageCollector {
            client,
            leading,
            caches: Vec::new(),
            gone: HashSet::new(),
            suspects: HashSet::new(),
            busy: false,
            keep: Vec::new(),
        }
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.busy || !*self.leading.borrow() {
            return;
        }
        let objects: Vec<(&'static str, Value)> = self
            .caches
            .iter()
            .flat_map(|(kind, c)| c.list().into_iter().map(move |o| (*kind, o)))
            .collect();
        let live: HashMap<String, Value> = objects
            .iter()
            .map(|(_, o)| (meta::uid(o).to_string(), o.clone()))
            .collect();
        let mut work: Vec<Work> = Vec::new();
        let mut missing = HashSet::new();
        for (kind, obj) in &objects {
            let refs = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for r in refs {
                let uid = r["uid"].as_str().unwrap_or("").to_string();
                if !KINDS.iter().any(|(k, _, _)| r["kind"] == *k) {
                    continue;
                }
                match live.get(&uid) {
                    None => {
                        if self.gone.contains(&uid) || self.suspects.contains(&uid) {
                            work.push(Work::Delete(kind, obj.clone()));
                        } else {
                            missing.insert(uid);
                        }
                    }
                    Some(owner) if owner.pointer("/metadata/deletionTimestamp").is_some() => {
                        let fins = finalizers(owner);
                        if fins.iter().any(|f| f == "orphan") {
                            work.push(Work::Release(kind, obj.clone(), uid));
                        } else if fins.iter().any(|f| f == "foregroundDeletion") {
                            work.push(Work::Delete(kind, obj.clone()));
                        }
                    }
                    _ => {}
                }
            }
        }
        // Owners waiting on a finalizer whose dependents are all handled.
        for (kind, owner) in &objects {
            if owner.pointer("/metadata/deletionTimestamp").is_none() {
                continue;
            }
            let uid = meta::uid(owner);
            let has_dependents = objects.iter().any(|(_, o)| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|rs| rs.iter().any(|r| r["uid"] == uid))
            });
            for f in ["orphan", "foregroundDeletion"] {
                if !has_dependents && finalizers(owner).iter().any(|x| x == f) {
                    work.push(Work::Finish(kind, owner.clone(), f));
                }
            }
        }
        self.suspects = missing;
        if work.is_empty() {
            return;
        }
        self.busy = true;
        let client = self.client.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            for w in work {
                w.run(&client).await;
            }
            addr.do_send(Seen::Done);
        });
    }
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

enum Work {
    /// Delete a dependent (its owner is gone or deleting in the foreground).
    Delete(&'static str, Value),
    /// Remove the ownerReference to this owner uid (orphaning).
    Release(&'static str, Value, String),
    /// Drop a finished finalizer from an owner.
    Finish(&'static str, Value, &'static str),
}

fn api_for(client: &ApiClient, kind: &str, obj: &Value) -> Option<crate::client::Api> {
    let (_, group, resource) = KINDS.iter().find(|(k, _, _)| *k == kind)?;
    Some(client.api(group, resource, Some(meta::namespace(obj))))
}

impl Work {
    async fn run(self, client: &ApiClient) {
        match self {
            Work::Delete(kind, obj) => {
                if obj.pointer("/metadata/deletionTimestamp").is_some() {
                    return;
                }
                let Some(api) = api_for(client, kind, &obj) else {
                    return;
                };
                let opts = DeleteOptions {
                    propagation_policy: Some("Background".into()),
                    preconditions: Some(crate::api::wire::Preconditions {
                        uid: Some(meta::uid(&obj).into()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(meta::name(&obj), &opts).await {
                    Ok(_) => tracing::info!(kind, name = %meta::name(&obj), "garbage collected"),
                    Err(e) if e.code == 404 || e.code == 409 => {}
                    Err(e) => {
                        tracing::warn!(kind, name = %meta::name(&obj), error = %e, "collecting")
                    }
                }
            }
            Work::Release(kind, obj, owner) => {
                let Some(api) = api_for(client, kind, &obj) else {
                    return;
                };
                let refs: Vec<Value> = obj
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter(|r| r["uid"] != owner.as_str())
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                let refs = if refs.is_empty() {
                    Value::Null
                } else {
                    json!(refs)
                };
                let _ = api
                    .patch(
                        meta::name(&obj),
                        None,
                        PatchType::Merge,
                        &json!({"metadata": {"ownerReferences": refs}}),
                    )
                    .await;
            }
            Work::Finish(kind, obj, finalizer) => {
                let Some(api) = api_for(client, kind, &obj) else {
                    return;
                };
                let rest: Vec<String> = finalizers(&obj)
                    .into_iter()
                    .filter(|f| f != finalizer)
                    .collect();
                let rest = if rest.is_empty() {
                    Value::Null
                } else {
                    json!(rest)
                };
                let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": meta::resource_version(&obj)}});
                let _ = api
                    .patch(meta::name(&obj), None, PatchType::Merge, &patch)
                    .await;
            }
        }
    }
}

impl Actor for GarbageCollector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        for (kind, group, resource) in KINDS {
            let informer = Informer::start(
                self.client.api(group, resource, None),
                ListOptions::default(),
            );
            self.caches.push((kind, informer.cache.clone()));
            self.keep
                .push(forward(informer, addr.clone(), Seen::Change));
        }
        ctx.run_interval(Duration::from_secs(2), |_, ctx| ctx.notify(Seen::Sweep));
    }
}

impl Handler<Seen> for GarbageCollector {
    type Result = ();

    fn handle(&mut self, seen: Seen, ctx: &mut Context<Self>) {
        let _span = crate::trace::handler_span(
            "GarbageCollector",
            "Seen",
            match &seen {
                Seen::Change(n) => n.object(),
                _ => None,
            },
        )
        .entered();
        match seen {
            Seen::Change(Notification::Deleted(owner)) => {
                self.gone.insert(meta::uid(&owner).to_string());
                self.sweep(ctx);
            }
            Seen::Change(Notification::Updated(_, o))
                if o.pointer("/metadata/deletionTimestamp").is_some() =>
            {
                self.sweep(ctx)
            }
            Seen::Change(_) => {}
            Seen::Sweep => self.sweep(ctx),
            Seen::Done => {
                self.busy = false;
            }
        }
    }
}
