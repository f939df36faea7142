//! The service account controller: every namespace that is not being deleted has a
//! ServiceAccount `default` (re-created if deleted), as kube's controller-manager keeps it.

use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Value};

use super::replicaset::forward;
use crate::api::meta;
use crate::api::wire::ListOptions;
use crate::client::{ApiClient, Cache, Informer, Notification};

/// The ServiceAccount every namespace has.
pub const DEFAULT: &str = "default";

/// The service account controller actor.
pub struct ServiceAccountController {
    client: ApiClient,
    leading: tokio::sync::watch::Receiver<bool>,
    namespaces: Cache,
    accounts: Cache,
    keep: Vec<Informer>,
}

#[derive(Message)]
#[rtype(result = "()")]
enum Seen {
    Change(#[allow(dead_code)] Notification),
    Tick,
}

impl ServiceAccountController {
    /// A controller acting while `leading` is true.
    pub fn new(client: ApiClient, leading: tokio::sync::watch::Receiver<bool>) -> Self {
        ServiceAccountController {
            client,
            leading,
            namespaces: Cache::default(),
            accounts: Cache::default(),
            keep: Vec::new(),
        }
    }

    /// Creates `default` in each active namespace whose cache shows none.
    fn reconcile(&mut self) {
        if !*self.leading.borrow() {
            return;
        }
        let missing: Vec<String> = self
            .namespaces
            .list()
            .iter()
            .filter(|ns| ns.pointer("/metadata/deletionTimestamp").is_none())
            .map(|ns| meta::name(ns).to_string())
            .filter(|ns| self.accounts.get(ns, DEFAULT).is_none())
            .collect();
        for ns in missing {
            let api = self.client.api("", "serviceaccounts", Some(&ns));
            actix::spawn(async move {
                let sa: Value = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": DEFAULT}});
                match api.create(&sa).await {
                    Ok(_) => tracing::debug!(namespace = %ns, "created the default ServiceAccount"),
                    // Already there (the cache was behind), or the namespace is going.
                    Err(e) if matches!(e.code, 409 | 403 | 404) => {}
                    Err(e) => {
                        tracing::warn!(namespace = %ns, error = %e, "creating the default ServiceAccount")
                    }
                }
            });
        }
    }
}

impl Actor for ServiceAccountController {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let namespaces = Informer::start(
            self.client.api("", "namespaces", None),
            ListOptions::default(),
        );
        let accounts = Informer::start(
            self.client.api("", "serviceaccounts", None),
            ListOptions::default(),
        );
        self.namespaces = namespaces.cache.clone();
        self.accounts = accounts.cache.clone();
        self.keep
            .push(forward(namespaces, addr.clone(), Seen::Change));
        self.keep.push(forward(accounts, addr, Seen::Change));
        // Creates that failed (the API server was away) are tried again.
        ctx.run_interval(Duration::from_secs(5), |_, ctx| ctx.notify(Seen::Tick));
    }
}

impl Handler<Seen> for ServiceAccountController {
    type Result = ();

    fn handle(&mut self, seen: Seen, _: &mut Context<Self>) {
        let _span = crate::trace::handler_span(
            "ServiceAccountController",
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
