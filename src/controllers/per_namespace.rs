//! Controllers that keep one named object in every namespace that is not being deleted,
//! re-created when deleted and, where a field is kept, put back when edited: the
//! ServiceAccount `default` (`serviceaccount`) and the ConfigMap `kube-root-ca.crt`
//! (`rootca`) are two of them, as kube's controller-manager keeps both.

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use serde_json::Value;

use super::runtime::{self, Action, Controller, ReconcileError, Reconciler};
use crate::api::meta;
use crate::api::wire::ListOptions;
use crate::client::{ApiClient, Cache, Informer};

/// What one such controller keeps.
#[derive(Clone)]
pub struct Kept {
    /// The controller's name (spans and logs).
    pub controller: &'static str,
    /// The object's API group and resource.
    pub group: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
    /// Its name in every namespace.
    pub name: &'static str,
    /// The object to create (without a namespace).
    pub desired: Value,
    /// A top-level field whose value must stay as in `desired` (`data` of the CA ConfigMap);
    /// None: any object of that name will do.
    pub field: Option<&'static str>,
}

/// The reconciler: one key per namespace.
#[derive(Clone)]
pub struct PerNamespace {
    client: ApiClient,
    kept: Kept,
    namespaces: Cache,
    objects: Cache,
}

/// A per-namespace controller, running while `leading` is true.
pub type PerNamespaceController = Controller<PerNamespace>;

/// Starts a controller keeping `kept` (inside an actix System). Namespaces seen before this
/// replica led are acted on as soon as it does (pods of a fresh cluster wait for their
/// `default` ServiceAccount); a write that failed is retried with back-off.
pub fn start(
    client: ApiClient,
    leading: tokio::sync::watch::Receiver<bool>,
    kept: Kept,
) -> Addr<PerNamespaceController> {
    let namespaces = Informer::start(client.api("", "namespaces", None), ListOptions::default());
    // Only the kept name, in every namespace.
    let objects = Informer::start(
        client.api(kept.group, kept.plural, None),
        ListOptions {
            field_selector: Some(format!("metadata.name={}", kept.name)),
            ..Default::default()
        },
    );
    let reconciler = PerNamespace {
        client,
        kept: kept.clone(),
        namespaces: namespaces.cache.clone(),
        objects: objects.cache.clone(),
    };
    Controller::create(move |ctx| {
        let addr = ctx.address();
        let mut c = Controller::new(kept.controller, reconciler, leading);
        c.keep(runtime::watch(namespaces, addr.clone(), |n| {
            n.object()
                .map(|ns| vec![meta::name(ns).to_string()])
                .unwrap_or_default()
        }));
        c.keep(runtime::watch(objects, addr, |n| {
            n.object()
                .map(|o| vec![meta::namespace(o).to_string()])
                .unwrap_or_default()
        }));
        c
    })
}

impl Reconciler for PerNamespace {
    fn reconcile(&self, ns: String) -> LocalBoxFuture<'static, Result<Action, ReconcileError>> {
        let me = self.clone();
        Box::pin(async move { me.sync(&ns).await })
    }
}

impl PerNamespace {
    /// Creates the object in namespace `ns` if it is active and has none, or puts the kept
    /// field back where it differs.
    async fn sync(&self, ns: &str) -> Result<Action, ReconcileError> {
        let kept = &self.kept;
        match self.namespaces.get("", ns) {
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_none() => {}
            _ => return Ok(Action::AwaitChange),
        }
        let write = match self.objects.get(ns, kept.name) {
            None => Write::Create(kept.desired.clone()),
            Some(current) => match kept.field {
                Some(f) if current.get(f) != kept.desired.get(f) => {
                    let mut fixed: Value = current.clone();
                    fixed[f] = kept.desired[f].clone();
                    Write::Update(fixed)
                }
                _ => return Ok(Action::AwaitChange),
            },
        };
        let api = self.client.api(kept.group, kept.plural, Some(ns));
        let (what, result) = match &write {
            Write::Create(obj) => ("creating", api.create(obj).await),
            Write::Update(obj) => ("restoring", api.update(obj).await),
        };
        match result {
            Ok(_) => {
                tracing::debug!(controller = kept.controller, namespace = %ns, name = kept.name, "{what} done");
                Ok(Action::AwaitChange)
            }
            // The cache was behind (409: its change is on the way), or the namespace is
            // going (404, or 403 "being terminated").
            Err(e) if matches!(e.code, 409 | 404) => Ok(Action::AwaitChange),
            Err(e) if e.code == 403 && e.message.contains("being terminated") => {
                Ok(Action::AwaitChange)
            }
            Err(e) => {
                tracing::warn!(controller = kept.controller, namespace = %ns, name = kept.name, error = %e, "{what}");
                Err(e.into())
            }
        }
    }
}

/// The write one namespace needs.
enum Write {
    Create(Value),
    Update(Value),
}
