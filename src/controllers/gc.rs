//! The garbage collector: deletes dependents whose owner is gone (background deletion),
//! deletes dependents before their owner for `foregroundDeletion`, and releases dependents for
//! `orphan`. It watches the kinds that own or are owned here: Deployments, ReplicaSets, Pods.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Value};

use super::forward;
use crate::api::meta;
use crate::api::wire::{DeleteOptions, ListOptions, PatchType};
use crate::client::{ApiClient, Cache, Informer, Meta, Notification};

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
        // Metadata only: nothing is decoded until there is work on it.
        let objects: Vec<(&'static str, Arc<Meta>)> = self
            .caches
            .iter()
            .flat_map(|(kind, c)| c.metas().into_iter().map(move |m| (*kind, m)))
            .collect();
        let live: HashMap<&str, &Meta> = objects
            .iter()
            .map(|(_, m)| (m.uid.as_str(), m.as_ref()))
            .collect();
        let mut work: Vec<Work> = Vec::new();
        let mut missing = HashSet::new();
        let mut has_dependents = HashSet::new();
        for (kind, obj) in &objects {
            for r in &obj.owners {
                has_dependents.insert(r.uid.as_str());
                if !KINDS.iter().any(|(k, _, _)| r.kind == *k) {
                    continue;
                }
                match live.get(r.uid.as_str()) {
                    None => {
                        if self.gone.contains(&r.uid) || self.suspects.contains(&r.uid) {
                            work.push(Work::Delete(kind, obj.clone()));
                        } else {
                            missing.insert(r.uid.clone());
                        }
                    }
                    Some(owner) if owner.deleting => {
                        if owner.finalizers.iter().any(|f| f == "orphan") {
                            work.push(Work::Release(kind, obj.clone(), r.uid.clone()));
                        } else if owner.finalizers.iter().any(|f| f == "foregroundDeletion") {
                            work.push(Work::Delete(kind, obj.clone()));
                        }
                    }
                    _ => {}
                }
            }
        }
        // Owners waiting on a finalizer whose dependents are all handled.
        for (kind, owner) in &objects {
            if !owner.deleting || has_dependents.contains(owner.uid.as_str()) {
                continue;
            }
            for f in ["orphan", "foregroundDeletion"] {
                if owner.finalizers.iter().any(|x| x == f) {
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
        let caches = self.caches.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            for w in work {
                w.run(&client, &caches).await;
            }
            addr.do_send(Seen::Done);
        });
    }
}

enum Work {
    /// Delete a dependent (its owner is gone or deleting in the foreground).
    Delete(&'static str, Arc<Meta>),
    /// Remove the ownerReference to this owner uid (orphaning).
    Release(&'static str, Arc<Meta>, String),
    /// Drop a finished finalizer from an owner.
    Finish(&'static str, Arc<Meta>, &'static str),
}

fn api_for(client: &ApiClient, kind: &str, obj: &Meta) -> Option<crate::client::Api> {
    let (_, group, resource) = KINDS.iter().find(|(k, _, _)| *k == kind)?;
    Some(client.api(group, resource, Some(&obj.namespace)))
}

impl Work {
    async fn run(self, client: &ApiClient, caches: &[(&'static str, Cache)]) {
        match self {
            Work::Delete(kind, obj) => {
                if obj.deleting {
                    return;
                }
                let Some(api) = api_for(client, kind, &obj) else {
                    return;
                };
                let opts = DeleteOptions {
                    propagation_policy: Some("Background".into()),
                    preconditions: Some(crate::api::wire::Preconditions {
                        uid: Some(obj.uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(&obj.name, &opts).await {
                    Ok(_) => tracing::info!(kind, name = %obj.name, "garbage collected"),
                    Err(e) if e.code == 404 || e.code == 409 => {}
                    Err(e) => {
                        tracing::warn!(kind, name = %obj.name, error = %e, "collecting")
                    }
                }
            }
            Work::Release(kind, obj, owner) => {
                let Some(api) = api_for(client, kind, &obj) else {
                    return;
                };
                // The full references, from the cached object.
                let Some(full) = caches
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .and_then(|(_, c)| c.get(&obj.namespace, &obj.name))
                else {
                    return;
                };
                let refs: Vec<Value> = full
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
                        &obj.name,
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
                let rest: Vec<&String> =
                    obj.finalizers.iter().filter(|f| *f != finalizer).collect();
                let rest = if rest.is_empty() {
                    Value::Null
                } else {
                    json!(rest)
                };
                let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": obj.resource_version}});
                let _ = api.patch(&obj.name, None, PatchType::Merge, &patch).await;
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
