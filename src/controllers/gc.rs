//! The garbage collector, on the controller runtime, for every built-in kind (kube's
//! `garbagecollector`): it watches every kind but Events (which kube's collector ignores
//! too) and follows `ownerReferences` of any kind to any kind.
//!
//! - A dependent whose owners are all gone is deleted (Background; with its own `orphan` or
//!   `foregroundDeletion` finalizer honoured), including one whose owner never existed; one
//!   with a live owner besides gone ones only loses the references to the gone ones. An owner
//!   missing from the cache is looked up live before anything is deleted, so informer lag
//!   never collects a live object's dependents; owners of kinds it does not watch (custom
//!   resources) count as alive.
//! - An owner deleted with `propagationPolicy: Foreground` (finalizer `foregroundDeletion`):
//!   its dependents are deleted first (in the foreground themselves when they own others), and
//!   the finalizer goes when none with `blockOwnerDeletion: true` is left.
//! - An owner deleted with `Orphan` (finalizer `orphan`): its dependents lose their reference
//!   to it, then the finalizer goes.
//!
//! Keys are `<kind index>/<namespace>/<name>`; an owner's changes enqueue its dependents,
//! a dependent's changes enqueue itself and its owners.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::runtime::{self, Action, Controller, ReconcileError, Reconciler};
use crate::api::meta;
use crate::api::resource::{ResourceInfo, RESOURCES};
use crate::api::wire::{DeleteOptions, ListOptions, PatchType, Preconditions};
use crate::client::{ApiClient, Cache, Informer, Notification};

/// The finalizer of an owner whose dependents go first.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an owner whose dependents stay, released.
pub const ORPHAN: &str = "orphan";

/// How often an owner waiting on its dependents looks again (their changes also wake it).
const WAITING: Duration = Duration::from_secs(1);

/// The kinds the collector watches: every built-in kind but Events.
fn watched() -> Vec<&'static ResourceInfo> {
    RESOURCES.iter().filter(|r| r.plural != "events").collect()
}

/// The collector's reconciler: the caches of every watched kind.
#[derive(Clone)]
pub struct Collector {
    client: ApiClient,
    kinds: Arc<Vec<(&'static ResourceInfo, Cache)>>,
}

/// The garbage collector, running while `leading` is true.
pub type GarbageCollector = Controller<Collector>;

fn key(kind: usize, obj: &Value) -> String {
    format!("{kind}/{}/{}", meta::namespace(obj), meta::name(obj))
}

fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn owner_refs(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Starts the collector (inside an actix System).
pub fn start(client: ApiClient, leading: watch::Receiver<bool>) -> Addr<GarbageCollector> {
    let informers: Vec<(&'static ResourceInfo, Informer)> = watched()
        .into_iter()
        .map(|info| {
            let api = client.api(info.group, info.plural, None);
            (info, Informer::start(api, ListOptions::default()))
        })
        .collect();
    let kinds: Arc<Vec<(&'static ResourceInfo, Cache)>> = Arc::new(
        informers
            .iter()
            .map(|(info, i)| (*info, i.cache.clone()))
            .collect(),
    );
    let reconciler = Collector {
        client,
        kinds: kinds.clone(),
    };
    Controller::create(move |ctx| {
        let addr = ctx.address();
        let mut c = Controller::new("garbagecollector", reconciler, leading).workers(5);
        for (idx, (_, informer)) in informers.into_iter().enumerate() {
            let kinds = kinds.clone();
            c.keep(runtime::watch(informer, addr.clone(), move |n| {
                keys_for(&kinds, idx, n)
            }));
        }
        c
    })
}

/// What a notification about an object of kind `idx` puts in the queue.
fn keys_for(kinds: &[(&'static ResourceInfo, Cache)], idx: usize, n: &Notification) -> Vec<String> {
    let mut keys = Vec::new();
    match n {
        Notification::Synced => {
            // Everything with owners (an owner may have gone while no one watched), and
            // owners waiting on a finalizer.
            for m in kinds[idx].1.metas() {
                let waits =
                    m.deleting && m.finalizers.iter().any(|f| f == FOREGROUND || f == ORPHAN);
                if !m.owners.is_empty() || waits {
                    keys.push(format!("{idx}/{}/{}", m.namespace, m.name));
                }
            }
        }
        Notification::Added(obj) | Notification::Updated(_, obj) | Notification::Deleted(obj) => {
            let gone = matches!(n, Notification::Deleted(_));
            if !gone && (!owner_refs(obj).is_empty() || deleting(obj)) {
                keys.push(key(idx, obj));
            }
            // Its dependents, when it went or is going.
            if gone || deleting(obj) {
                for (k, (_, cache)) in kinds.iter().enumerate() {
                    keys.extend(cache.owned_by(meta::uid(obj)).iter().map(|d| key(k, d)));
                }
            }
            // Its owners, when they wait for their dependents.
            for r in owner_refs(obj) {
                if let Some((k, owner)) = find_owner(kinds, obj, &r) {
                    if deleting(&owner) {
                        keys.push(key(k, &owner));
                    }
                }
            }
        }
    }
    keys
}

/// The cached owner `r` names (by kind, name and uid), with its kind's index.
fn find_owner(
    kinds: &[(&'static ResourceInfo, Cache)],
    dependent: &Value,
    r: &Value,
) -> Option<(usize, Value)> {
    let (idx, info) = owner_kind(kinds, r)?;
    let ns = if info.namespaced {
        meta::namespace(dependent)
    } else {
        ""
    };
    let owner = kinds[idx].1.get(ns, r["name"].as_str()?)?;
    (meta::uid(&owner) == r["uid"].as_str()?).then_some((idx, owner))
}

/// The watched kind an ownerReference names.
fn owner_kind(
    kinds: &[(&'static ResourceInfo, Cache)],
    r: &Value,
) -> Option<(usize, &'static ResourceInfo)> {
    let (api_version, kind) = (r["apiVersion"].as_str()?, r["kind"].as_str()?);
    kinds
        .iter()
        .enumerate()
        .find(|(_, (info, _))| info.kind == kind && info.api_version() == api_version)
        .map(|(i, (info, _))| (i, *info))
}

/// What became of one owner.
enum Owner {
    /// Exists and is not waiting for its dependents.
    Solid,
    /// Being deleted in the foreground: waits for its dependents.
    Waiting,
    /// Gone (or never was).
    Dangling,
}

impl Reconciler for Collector {
    fn reconcile(&self, key: String) -> LocalBoxFuture<'static, Result<Action, ReconcileError>> {
        let me = self.clone();
        Box::pin(async move { me.sync(&key).await })
    }
}

impl Collector {
    async fn sync(&self, key: &str) -> Result<Action, ReconcileError> {
        let mut parts = key.splitn(3, '/');
        let (Some(idx), Some(ns), Some(name)) = (
            parts.next().and_then(|i| i.parse::<usize>().ok()),
            parts.next(),
            parts.next(),
        ) else {
            return Ok(Action::AwaitChange);
        };
        let Some((info, cache)) = self.kinds.get(idx) else {
            return Ok(Action::AwaitChange);
        };
        let Some(obj) = cache.get(ns, name) else {
            return Ok(Action::AwaitChange);
        };
        if deleting(&obj) {
            let f = finalizers(&obj);
            if f.iter().any(|f| f == ORPHAN) {
                return self.orphan_dependents(info, &obj).await;
            }
            if f.iter().any(|f| f == FOREGROUND) {
                return self.delete_dependents_first(info, &obj).await;
            }
            return Ok(Action::AwaitChange);
        }
        self.check_owners(info, &obj).await
    }

    /// Every object, of any kind, with a reference to `uid`: (kind index, object).
    fn dependents(&self, uid: &str) -> Vec<(usize, Value)> {
        self.kinds
            .iter()
            .enumerate()
            .flat_map(|(k, (_, c))| c.owned_by(uid).into_iter().map(move |d| (k, d)))
            .collect()
    }

    fn api(&self, info: &ResourceInfo, obj: &Value) -> crate::client::Api {
        let ns = meta::namespace(obj);
        self.client.api(
            info.group,
            info.plural,
            (info.namespaced && !ns.is_empty()).then_some(ns),
        )
    }

    /// Deletes `obj` (at its uid) with `policy`; gone already is fine.
    async fn delete(
        &self,
        info: &ResourceInfo,
        obj: &Value,
        policy: &str,
    ) -> Result<(), ReconcileError> {
        let opts = DeleteOptions {
            propagation_policy: Some(policy.into()),
            preconditions: Some(Preconditions {
                uid: Some(meta::uid(obj).to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api(info, obj).delete(meta::name(obj), &opts).await {
            Ok(_) => {
                tracing::info!(kind = info.kind, namespace = %meta::namespace(obj), name = %meta::name(obj), policy, "garbage collected");
                Ok(())
            }
            Err(e) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Merge-patches `obj`'s metadata with `fields` at its resourceVersion; gone is fine.
    async fn patch_meta(
        &self,
        info: &ResourceInfo,
        obj: &Value,
        mut fields: serde_json::Map<String, Value>,
    ) -> Result<(), ReconcileError> {
        fields.insert("resourceVersion".into(), json!(meta::resource_version(obj)));
        match self
            .api(info, obj)
            .patch(
                meta::name(obj),
                None,
                PatchType::Merge,
                &json!({"metadata": fields}),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets `obj`'s ownerReferences to `refs`.
    async fn set_refs(
        &self,
        info: &ResourceInfo,
        obj: &Value,
        refs: Vec<Value>,
    ) -> Result<(), ReconcileError> {
        let refs = if refs.is_empty() {
            Value::Null
        } else {
            json!(refs)
        };
        let mut fields = serde_json::Map::new();
        fields.insert("ownerReferences".into(), refs);
        self.patch_meta(info, obj, fields).await
    }

    /// Removes `finalizer` from `owner`.
    async fn finish(
        &self,
        info: &ResourceInfo,
        owner: &Value,
        finalizer: &str,
    ) -> Result<Action, ReconcileError> {
        let rest: Vec<String> = finalizers(owner)
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        let rest = if rest.is_empty() {
            Value::Null
        } else {
            json!(rest)
        };
        let mut fields = serde_json::Map::new();
        fields.insert("finalizers".into(), rest);
        self.patch_meta(info, owner, fields).await?;
        Ok(Action::AwaitChange)
    }

    /// `orphan`: every dependent loses its reference to the owner, then the finalizer goes.
    async fn orphan_dependents(
        &self,
        info: &ResourceInfo,
        owner: &Value,
    ) -> Result<Action, ReconcileError> {
        let uid = meta::uid(owner);
        let dependents = self.dependents(uid);
        for (k, d) in &dependents {
            let refs: Vec<Value> = owner_refs(d)
                .into_iter()
                .filter(|r| r["uid"] != uid)
                .collect();
            self.set_refs(self.kinds[*k].0, d, refs).await?;
        }
        if dependents.is_empty() {
            self.finish(info, owner, ORPHAN).await
        } else {
            // The released dependents' updates wake it; this is the fallback.
            Ok(Action::requeue(WAITING))
        }
    }

    /// `foregroundDeletion`: the dependents are deleted first; the finalizer goes when none
    /// that blocks its owner's deletion is left.
    async fn delete_dependents_first(
        &self,
        info: &ResourceInfo,
        owner: &Value,
    ) -> Result<Action, ReconcileError> {
        let uid = meta::uid(owner);
        let dependents = self.dependents(uid);
        let mut blocking = 0;
        for (k, d) in &dependents {
            let blocks = owner_refs(d)
                .iter()
                .any(|r| r["uid"] == uid && r["blockOwnerDeletion"] == true);
            if blocks {
                blocking += 1;
            }
            if !deleting(d) {
                // In the foreground too when it owns others, so they go before it.
                let policy = if self.dependents(meta::uid(d)).is_empty() {
                    "Background"
                } else {
                    "Foreground"
                };
                self.delete(self.kinds[*k].0, d, policy).await?;
            }
        }
        if blocking == 0 {
            self.finish(info, owner, FOREGROUND).await
        } else {
            Ok(Action::requeue(WAITING))
        }
    }

    /// What each owner of `obj` is: from the cache, else from a live read (the cache may lag:
    /// never collect on its word alone). Owners of kinds not watched count as solid.
    async fn owner_state(&self, obj: &Value, r: &Value) -> Result<Owner, ReconcileError> {
        let Some((_, info)) = owner_kind(&self.kinds, r) else {
            return Ok(Owner::Solid);
        };
        let state = |o: &Value| {
            if deleting(o) && finalizers(o).iter().any(|f| f == FOREGROUND) {
                Owner::Waiting
            } else {
                Owner::Solid
            }
        };
        if let Some((_, owner)) = find_owner(&self.kinds, obj, r) {
            return Ok(state(&owner));
        }
        let ns = meta::namespace(obj);
        let api = self.client.api(
            info.group,
            info.plural,
            (info.namespaced && !ns.is_empty()).then_some(ns),
        );
        match api.get(r["name"].as_str().unwrap_or_default()).await {
            Ok(live) if meta::uid(&live) == r["uid"].as_str().unwrap_or_default() => {
                Ok(state(&live))
            }
            Ok(_) => Ok(Owner::Dangling),
            Err(e) if e.code == 404 => Ok(Owner::Dangling),
            Err(e) => Err(e.into()),
        }
    }

    /// A dependent: deleted when no owner is left, or released from the gone (and the
    /// foreground-deleting) ones while another still holds it.
    async fn check_owners(
        &self,
        info: &ResourceInfo,
        obj: &Value,
    ) -> Result<Action, ReconcileError> {
        let refs = owner_refs(obj);
        if refs.is_empty() {
            return Ok(Action::AwaitChange);
        }
        let (mut solid, mut waiting, mut dangling) = (0, Vec::new(), Vec::new());
        for r in &refs {
            match self.owner_state(obj, r).await? {
                Owner::Solid => solid += 1,
                Owner::Waiting => waiting.push(r["uid"].clone()),
                Owner::Dangling => dangling.push(r["uid"].clone()),
            }
        }
        if solid > 0 {
            if !waiting.is_empty() || !dangling.is_empty() {
                let keep: Vec<Value> = refs
                    .into_iter()
                    .filter(|r| !waiting.contains(&r["uid"]) && !dangling.contains(&r["uid"]))
                    .collect();
                self.set_refs(info, obj, keep).await?;
            }
            return Ok(Action::AwaitChange);
        }
        let policy = if !waiting.is_empty() {
            if self.dependents(meta::uid(obj)).is_empty() {
                "Background"
            } else {
                "Foreground"
            }
        } else {
            let f = finalizers(obj);
            if f.iter().any(|f| f == ORPHAN) {
                "Orphan"
            } else if f.iter().any(|f| f == FOREGROUND) {
                "Foreground"
            } else {
                "Background"
            }
        };
        self.delete(info, obj, policy).await?;
        Ok(Action::AwaitChange)
    }
}
