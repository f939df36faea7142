//! Controllers that keep one named object in every namespace that is not being deleted,
//! re-created when deleted and, where a field is kept, put back when edited: the
//! ServiceAccount `default` (`serviceaccount`) and the ConfigMap `kube-root-ca.crt`
//! (`rootca`) are two of them, as kube's controller-manager keeps both.

use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;

use super::forward;
use crate::api::meta;
use crate::api::wire::ListOptions;
use crate::client::{ApiClient, Cache, Informer, Notification};

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

/// The controller actor.
pub struct PerNamespaceController {
    client: ApiClient,
    leading: tokio::sync::watch::Receiver<bool>,
    kept: Kept,
    namespaces: Cache,
    objects: Cache,
    keep: Vec<Informer>,
}

#[derive(Message)]
#[rtype(result = "()")]
enum Seen {
    Change(#[allow(dead_code)] Notification),
    Tick,
}

impl PerNamespaceController {
    /// A controller keeping `kept`, acting while `leading` is true.
    pub fn new(client: ApiClient, leading: tokio::sync::watch::Receiver<bool>, kept: Kept) -> Self {
        PerNamespaceController {
            client,
            leading,
            kept,
            namespaces: Cache::default(),
            objects: Cache::default(),
            keep: Vec::new(),
        }
    }

    /// Creates the object in each active namespace whose cache shows none, and puts the kept
    /// field back where it differs.
    fn reconcile(&mut self) {
        if !*self.leading.borrow() {
            return;
        }
        let kept = &self.kept;
        for ns in self.namespaces.list() {
            if ns.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            let ns = meta::name(&ns).to_string();
            let write = match self.objects.get(&ns, kept.name) {
                None => Write::Create(kept.desired.clone()),
                Some(current) => match kept.field {
                    Some(f) if current.get(f) != kept.desired.get(f) => {
                        let mut fixed = current.clone();
                        fixed[f] = kept.desired[f].clone();
                        Write::Update(fixed)
                    }
                    _ => continue,
                },
            };
            let api = self.client.api(kept.group, kept.plural, Some(&ns));
            let (controller, name) = (kept.controller, kept.name);
            actix::spawn(async move {
                let (what, result) = match &write {
                    Write::Create(obj) => ("creating", api.create(obj).await),
                    Write::Update(obj) => ("restoring", api.update(obj).await),
                };
                match result {
                    Ok(_) => tracing::debug!(controller, namespace = %ns, name, "{what} done"),
                    // The cache was behind (409), or the namespace is going (404, or 403
                    // "being terminated"); any other refusal is worth a warning.
                    Err(e) if matches!(e.code, 409 | 404) => {}
                    Err(e) if e.code == 403 && e.message.contains("being terminated") => {}
                    Err(e) => {
                        tracing::warn!(controller, namespace = %ns, name, error = %e, "{what}")
                    }
                }
            });
        }
    }
}

/// The write one namespace needs.
enum Write {
    Create(Value),
    Update(Value),
}

impl Actor for PerNamespaceController {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let namespaces = Informer::start(
            self.client.api("", "namespaces", None),
            ListOptions::default(),
        );
        // Only the kept name, in every namespace.
        let objects = Informer::start(
            self.client.api(self.kept.group, self.kept.plural, None),
            ListOptions {
                field_selector: Some(format!("metadata.name={}", self.kept.name)),
                ..Default::default()
            },
        );
        self.namespaces = namespaces.cache.clone();
        self.objects = objects.cache.clone();
        self.keep
            .push(forward(namespaces, addr.clone(), Seen::Change));
        self.keep.push(forward(objects, addr.clone(), Seen::Change));
        // Writes that failed (the API server was away) are tried again.
        ctx.run_interval(Duration::from_secs(5), |_, ctx| ctx.notify(Seen::Tick));
        // Namespaces seen before this replica led are acted on as soon as it does (pods of
        // a fresh cluster wait for their `default` ServiceAccount).
        let mut leading = self.leading.clone();
        actix::spawn(async move {
            while leading.changed().await.is_ok() {
                addr.do_send(Seen::Tick);
            }
        });
    }
}

impl Handler<Seen> for PerNamespaceController {
    type Result = ();

    fn handle(&mut self, seen: Seen, _: &mut Context<Self>) {
        let _span = crate::trace::handler_span(
            self.kept.controller,
            "Seen",
            match &seen {
                Seen::Change(n) => n.object(),
                Seen::Tick => None,
            },
        )
        .entered();
        self.reconcile();
    }
}
