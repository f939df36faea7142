//! The namespace controller: when a namespace is being deleted, it deletes everything in it,
//! and once nothing is left removes the `kubernetes` finalizer, so the API server can remove
//! the namespace itself.

use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Value};

use super::replicaset::forward;
use crate::api::meta;
use crate::api::resource::RESOURCES;
use crate::api::wire::{DeleteOptions, ListOptions};
use crate::client::{ApiClient, Cache, Informer, Notification};

/// The namespace controller actor.
pub struct NamespaceController {
    client: ApiClient,
    leading: tokio::sync::watch::Receiver<bool>,
    namespaces: Cache,
    busy: bool,
    keep: Vec<Informer>,
}

#[derive(Message)]
#[rtype(result = "()")]
enum Seen {
    Change(#[allow(dead_code)] Notification),
    Tick,
    Done,
}

impl NamespaceController {
    /// A controller acting while `leading` is true.
    pub fn new(client: ApiClient, leading: tokio::sync::watch::Receiver<bool>) -> Self {
        NamespaceController {
            client,
            leading,
            namespaces: Cache::default(),
            busy: false,
            keep: Vec::new(),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy || !*self.leading.borrow() {
            return;
        }
        let terminating: Vec<Value> = self
            .namespaces
            .list()
            .into_iter()
            .filter(|n| n.pointer("/metadata/deletionTimestamp").is_some())
            .collect();
        if terminating.is_empty() {
            return;
        }
        self.busy = true;
        let client = self.client.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            for ns in terminating {
                finalize(&client, &ns).await;
            }
            addr.do_send(Seen::Done);
        });
    }
}

/// Deletes the namespace's content; when it is empty, drops the finalizer.
async fn finalize(client: &ApiClient, ns: &Value) {
    let name = meta::name(ns);
    let mut remaining = 0;
    for info in RESOURCES.iter().filter(|r| r.namespaced) {
        let api = client.api(info.group, info.plural, Some(name));
        let Ok(list) = api.list_all(&ListOptions::default()).await else {
            remaining += 1;
            continue;
        };
        for obj in list.items {
            remaining += 1;
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                let opts = DeleteOptions {
                    propagation_policy: Some("Background".into()),
                    ..Default::default()
                };
                let _ = api.delete(meta::name(&obj), &opts).await;
            }
        }
    }
    if remaining > 0 {
        return;
    }
    let mut next = ns.clone();
    next["spec"]["finalizers"] = json!([]);
    match client
        .api("", "namespaces", None)
        .update_subresource(name, "finalize", &next)
        .await
    {
        Ok(_) => tracing::info!(namespace = %name, "namespace emptied and finalized"),
        Err(e) => tracing::debug!(namespace = %name, error = %e, "finalizing; will retry"),
    }
}

impl Actor for NamespaceController {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let informer = Informer::start(
            self.client.api("", "namespaces", None),
            ListOptions::default(),
        );
        self.namespaces = informer.cache.clone();
        self.keep.push(forward(informer, addr, Seen::Change));
        ctx.run_interval(Duration::from_secs(1), |_, ctx| ctx.notify(Seen::Tick));
    }
}

impl Handler<Seen> for NamespaceController {
    type Result = ();

    fn handle(&mut self, seen: Seen, ctx: &mut Context<Self>) {
        let _span = crate::trace::handler_span(
            "NamespaceController",
            "Seen",
            match &seen {
                Seen::Change(n) => n.object(),
                _ => None,
            },
        )
        .entered();
        match seen {
            Seen::Change(_) | Seen::Tick => self.tick(ctx),
            Seen::Done => self.busy = false,
        }
    }
}
