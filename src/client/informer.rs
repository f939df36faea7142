//! The informer: list, then watch, into a local cache, with notifications of every change;
//! relists when its watch expires, telling its owner exactly what changed in between.
//! One writer (the informer task), many cheap readers (`Cache`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::Api;
use crate::api::meta;
use crate::api::wire::{event_type, ListOptions};

/// A change the informer saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// A new object.
    Added(Value),
    /// A changed object (old, new).
    Updated(Value, Value),
    /// A removed object (its last state).
    Deleted(Value),
    /// The cache now matches a full list (after the first list and each relist).
    Synced,
}

impl Notification {
    /// The object it is about (the new one for an update), if any.
    pub fn object(&self) -> Option<&Value> {
        match self {
            Notification::Added(o) | Notification::Updated(_, o) | Notification::Deleted(o) => {
                Some(o)
            }
            Notification::Synced => None,
        }
    }
}

/// The informer's cache, readable from anywhere.
#[derive(Clone, Default)]
pub struct Cache {
    /// `namespace/name` (or `name`) to object.
    objects: Arc<RwLock<BTreeMap<String, Value>>>,
}

fn key_of(obj: &Value) -> String {
    let ns = meta::namespace(obj);
    if ns.is_empty() {
        meta::name(obj).to_string()
    } else {
        format!("{ns}/{}", meta::name(obj))
    }
}

impl Cache {
    /// One object by namespace ("" for cluster-scoped) and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Value> {
        let key = if namespace.is_empty() {
            name.to_string()
        } else {
            format!("{namespace}/{name}")
        };
        self.objects.read().ok()?.get(&key).cloned()
    }

    /// Every cached object, in key order.
    pub fn list(&self) -> Vec<Value> {
        self.objects
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of cached objects.
    pub fn len(&self) -> usize {
        self.objects.read().map(|m| m.len()).unwrap_or(0)
    }

    /// No objects cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A running informer: its cache and its notifications.
pub struct Informer {
    /// The cache.
    pub cache: Cache,
    /// Changes, in order.
    pub notifications: mpsc::UnboundedReceiver<Notification>,
    /// The task; aborted when the informer is dropped.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Informer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Informer {
    /// Starts listing and watching `api` with the selectors in `options`.
    pub fn start(api: Api, options: ListOptions) -> Informer {
        let cache = Cache::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(api, options, cache.clone(), tx));
        Informer {
            cache,
            notifications: rx,
            task,
        }
    }
}

async fn run(
    api: Api,
    options: ListOptions,
    cache: Cache,
    tx: mpsc::UnboundedSender<Notification>,
) {
    let mut failures = 0;
    loop {
        // List: replace the cache, notifying the differences. A failed list is retried after
        // a jittered, doubling back-off (100 ms up to 5 s), so that informers cut off together
        // do not relist together.
        let list = match api.list_all(&options).await {
            Ok(l) => l,
            Err(e) => {
                failures += 1;
                tracing::debug!(error = %e, failures, "informer list failed; retrying");
                tokio::time::sleep(super::retry::backoff(
                    Duration::from_millis(100),
                    Duration::from_secs(5),
                    failures,
                ))
                .await;
                continue;
            }
        };
        failures = 0;
        let fresh: BTreeMap<String, Value> =
            list.items.into_iter().map(|o| (key_of(&o), o)).collect();
        let mut notes = Vec::new();
        if let Ok(mut objects) = cache.objects.write() {
            for (k, old) in objects.iter() {
                if !fresh.contains_key(k) {
                    notes.push(Notification::Deleted(old.clone()));
                }
            }
            for (k, new) in &fresh {
                match objects.get(k) {
                    None => notes.push(Notification::Added(new.clone())),
                    Some(old) if old != new => {
                        notes.push(Notification::Updated(old.clone(), new.clone()))
                    }
                    Some(_) => {}
                }
            }
            *objects = fresh;
        }
        notes.push(Notification::Synced);
        for n in notes {
            if tx.send(n).is_err() {
                return;
            }
        }
        // Watch from the list's revision until it expires.
        let mut opts = options.clone();
        opts.resource_version = Some(list.resource_version.clone());
        opts.continue_token = None;
        opts.limit = 0;
        let mut watcher = api.watch(&opts);
        while let Some(ev) = watcher.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::debug!(error = %e, "informer watch ended; relisting");
                    break;
                }
            };
            let key = key_of(&ev.object);
            let note = {
                let Ok(mut objects) = cache.objects.write() else {
                    return;
                };
                match ev.event_type.as_str() {
                    event_type::ADDED | event_type::MODIFIED => {
                        match objects.insert(key, ev.object.clone()) {
                            Some(old) => Notification::Updated(old, ev.object),
                            None => Notification::Added(ev.object),
                        }
                    }
                    event_type::DELETED => {
                        objects.remove(&key);
                        Notification::Deleted(ev.object)
                    }
                    _ => continue,
                }
            };
            if tx.send(note).is_err() {
                return;
            }
        }
    }
}
