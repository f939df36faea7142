//! The shared informer: list, then watch, into a local cache, with notifications of every
//! change to each subscriber; relists when its watch expires, telling subscribers exactly
//! what changed in between.
//!
//! Shared, as client-go's SharedInformerFactory: every `Informer::start` with the same client
//! (or a clone of it), resource and selectors in a process subscribes to one cache and one
//! watch, so the controller-manager's controllers keep one copy of the pods, not one each.
//! A subscriber that joins late is told of every cached object as Added (and Synced, once
//! the cache is), as client-go replays its store to a new handler.
//!
//! Compact: the cache keeps each object MessagePack-encoded and packed against the first one
//! it held ([`crate::api::packed`]: a Running pod is ~0.3 KB so, ~1.7 KB encoded, ~16 KB as a
//! `serde_json::Value`) with the few fields controllers scan by ([`Meta`]): reading an object
//! decodes it, scanning metadata decodes nothing, and the indexes (namespace, owner uid,
//! node name) find the objects a reconcile needs without touching the rest.
//!
//! Transformed, when asked ([`Transform`], client-go's `SetTransform`): a component that
//! reads little of an object keeps only that (the scheduler keeps a bound pod's requests and
//! labels, not its status), and the cache and notifications carry the smaller object.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::Api;
use crate::api::codec;
use crate::api::meta;
use crate::api::packed::{Dictionaries, Packed};
use crate::api::wire::{event_type, ListOptions};

/// A change the informer saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// A new object.
    Added(Object),
    /// A changed object (old, new).
    Updated(Object, Object),
    /// A removed object (its last state).
    Deleted(Object),
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

/// An object as a notification carries it: the cache's encoding (shared with the cache and
/// every other subscriber), decoded when first read. A subscriber that falls behind holds a
/// queue of ~1.6 KB encodings, not of ~16 KB decoded pods.
pub struct Object {
    bytes: Bytes,
    value: OnceLock<Value>,
}

impl Object {
    fn new(bytes: Bytes) -> Object {
        Object {
            bytes,
            value: OnceLock::new(),
        }
    }

    /// The decoded object, owned.
    pub fn into_value(self) -> Value {
        match self.value.into_inner() {
            Some(v) => v,
            None => codec::msgpack_to_value(&self.bytes).unwrap_or(Value::Null),
        }
    }
}

impl From<Value> for Object {
    fn from(v: Value) -> Object {
        let o = Object::new(Bytes::from(codec::value_to_msgpack(&v).unwrap_or_default()));
        let _ = o.value.set(v);
        o
    }
}

impl std::ops::Deref for Object {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.value
            .get_or_init(|| codec::msgpack_to_value(&self.bytes).unwrap_or(Value::Null))
    }
}

/// A copy shares the encoding, not the decoded value: each holder decodes its own.
impl Clone for Object {
    fn clone(&self) -> Object {
        Object::new(self.bytes.clone())
    }
}

impl PartialEq for Object {
    fn eq(&self, other: &Object) -> bool {
        self.bytes == other.bytes
    }
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

/// A change made to every object before it is cached and notified, as client-go's
/// `SetTransform`: the cache keeps what its readers need and no more. Subscribers share an
/// informer only when they ask for the same transform (by name).
#[derive(Clone, Copy)]
pub struct Transform {
    /// Identifies the transform among the informer's subscribers.
    pub name: &'static str,
    /// The change; it must keep `metadata.namespace`, `name` and `uid`.
    pub apply: fn(Value) -> Value,
}

impl Transform {
    fn value(t: Option<Transform>, obj: Value) -> Value {
        match t {
            Some(t) => (t.apply)(obj),
            None => obj,
        }
    }
}

/// One ownerReference, as far as controllers scan it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    /// The owner's kind.
    pub kind: String,
    /// The owner's uid.
    pub uid: String,
    /// Whether it is the controller reference.
    pub controller: bool,
}

/// What controllers scan of a cached object without decoding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Namespace ("" for cluster-scoped objects).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// uid.
    pub uid: String,
    /// resourceVersion.
    pub resource_version: String,
    /// ownerReferences.
    pub owners: Vec<OwnerRef>,
    /// Finalizers.
    pub finalizers: Vec<String>,
    /// deletionTimestamp is set.
    pub deleting: bool,
    /// `spec.nodeName` (pods), if set.
    pub node: Option<String>,
}

impl Meta {
    fn of(obj: &Value) -> Meta {
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        Meta {
            namespace: meta::namespace(obj).to_string(),
            name: meta::name(obj).to_string(),
            uid: meta::uid(obj).to_string(),
            resource_version: meta::resource_version(obj).to_string(),
            owners: obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .map(|refs| {
                    refs.iter()
                        .map(|r| OwnerRef {
                            kind: r["kind"].as_str().unwrap_or("").to_string(),
                            uid: r["uid"].as_str().unwrap_or("").to_string(),
                            controller: r["controller"].as_bool().unwrap_or(false),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            finalizers: strings(obj.pointer("/metadata/finalizers")),
            deleting: obj.pointer("/metadata/deletionTimestamp").is_some(),
            node: obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(String::from),
        }
    }

    fn key(&self) -> String {
        key(&self.namespace, &self.name)
    }
}

/// Packs a cache's objects against the first one it held (see [`crate::api::packed`]).
type Packer = Arc<Mutex<Dictionaries>>;

/// One cached object: its encoding, packed, and its scanned metadata.
struct Entry {
    packed: Packed,
    meta: Arc<Meta>,
}

impl Entry {
    fn of(obj: &Value, packer: &Packer) -> Entry {
        let bytes = codec::value_to_msgpack(obj).unwrap_or_default();
        Entry {
            packed: packer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pack("", &bytes),
            meta: Arc::new(Meta::of(obj)),
        }
    }

    fn decode(&self) -> Value {
        codec::msgpack_to_value(&self.packed.bytes()).unwrap_or(Value::Null)
    }

    /// The entry as a notification carries it (nothing decoded).
    fn object(&self) -> Object {
        Object::new(self.packed.bytes())
    }
}

/// The shared state: objects, indexes, subscribers.
#[derive(Default)]
struct Store {
    /// `namespace/name` (or `name`) to object.
    objects: BTreeMap<String, Entry>,
    /// Owner uid to the keys of its dependents.
    by_owner: HashMap<String, BTreeSet<String>>,
    /// Node name to the keys of the pods bound to it.
    by_node: HashMap<String, BTreeSet<String>>,
    /// Where notifications go; closed ones are dropped on the next send.
    subscribers: Vec<mpsc::UnboundedSender<Notification>>,
    /// The cache has matched a full list at least once.
    synced: bool,
}

fn key(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

impl Store {
    /// Stores `entry` under `key`, returning the entry it replaces, indexes kept.
    fn put(&mut self, key: String, entry: Entry) -> Option<Entry> {
        for o in &entry.meta.owners {
            self.by_owner
                .entry(o.uid.clone())
                .or_default()
                .insert(key.clone());
        }
        if let Some(n) = &entry.meta.node {
            self.by_node
                .entry(n.clone())
                .or_default()
                .insert(key.clone());
        }
        let old = self.objects.insert(key.clone(), entry);
        if let Some(old) = &old {
            self.unindex(&key, old, self.objects.get(&key).map(|e| e.meta.clone()));
        }
        old
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let old = self.objects.remove(key)?;
        self.unindex(key, &old, None);
        Some(old)
    }

    /// Drops `key` from the index entries of `old` that `now` no longer has.
    fn unindex(&mut self, key: &str, old: &Entry, now: Option<Arc<Meta>>) {
        for o in &old.meta.owners {
            if now
                .as_ref()
                .is_some_and(|m| m.owners.iter().any(|x| x.uid == o.uid))
            {
                continue;
            }
            if let Some(keys) = self.by_owner.get_mut(&o.uid) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_owner.remove(&o.uid);
                }
            }
        }
        if let Some(n) = &old.meta.node {
            if now.as_ref().is_some_and(|m| m.node.as_ref() == Some(n)) {
                return;
            }
            if let Some(keys) = self.by_node.get_mut(n) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_node.remove(n);
                }
            }
        }
    }

    fn notify(&mut self, note: Notification) {
        match self.subscribers.as_slice() {
            [] => {}
            [only] => {
                if only.send(note).is_err() {
                    self.subscribers.clear();
                }
            }
            _ => self.subscribers.retain(|tx| tx.send(note.clone()).is_ok()),
        }
    }

    fn decode_keys<'a>(&self, keys: impl IntoIterator<Item = &'a String>) -> Vec<Value> {
        keys.into_iter()
            .filter_map(|k| self.objects.get(k))
            .map(Entry::decode)
            .collect()
    }
}

/// The informer's cache, readable from anywhere: every read decodes what it returns.
#[derive(Clone, Default)]
pub struct Cache {
    store: Arc<RwLock<Store>>,
    packer: Packer,
}

impl Cache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|p| p.into_inner())
    }

    /// One object by namespace ("" for cluster-scoped) and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Value> {
        self.read()
            .objects
            .get(&key(namespace, name))
            .map(Entry::decode)
    }

    /// Every cached object, in key order.
    pub fn list(&self) -> Vec<Value> {
        self.read().objects.values().map(Entry::decode).collect()
    }

    /// The objects of one namespace, in name order.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Value> {
        let prefix = format!("{namespace}/");
        self.read()
            .objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, e)| e.decode())
            .collect()
    }

    /// The objects with an ownerReference to `uid`.
    pub fn owned_by(&self, uid: &str) -> Vec<Value> {
        let store = self.read();
        store
            .by_owner
            .get(uid)
            .map(|keys| store.decode_keys(keys))
            .unwrap_or_default()
    }

    /// The pods bound to `node`.
    pub fn on_node(&self, node: &str) -> Vec<Value> {
        let store = self.read();
        store
            .by_node
            .get(node)
            .map(|keys| store.decode_keys(keys))
            .unwrap_or_default()
    }

    /// The metadata of every cached object, in key order (nothing decoded).
    pub fn metas(&self) -> Vec<Arc<Meta>> {
        self.read()
            .objects
            .values()
            .map(|e| e.meta.clone())
            .collect()
    }

    /// Number of cached objects.
    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    /// No objects cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What identifies one shared informer: the client, the resource and the selectors.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    client: u64,
    group: String,
    resource: String,
    namespace: Option<String>,
    labels: Option<String>,
    fields: Option<String>,
    transform: Option<&'static str>,
}

/// One running shared informer; its task ends when the last subscriber's handle is dropped.
struct Running {
    cache: Cache,
    task: tokio::task::AbortHandle,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn running() -> &'static Mutex<HashMap<Key, Weak<Running>>> {
    static RUNNING: OnceLock<Mutex<HashMap<Key, Weak<Running>>>> = OnceLock::new();
    RUNNING.get_or_init(Default::default)
}

/// A subscription to a shared informer: its cache and this subscriber's notifications.
pub struct Informer {
    /// The cache (shared with every other subscriber).
    pub cache: Cache,
    /// Changes, in order.
    pub notifications: mpsc::UnboundedReceiver<Notification>,
    /// Keeps the informer running while this subscriber lives.
    _running: Arc<Running>,
}

impl Informer {
    /// Subscribes to the informer of `api` with the selectors in `options`, starting it if
    /// no one in this process runs it yet (must be called inside a tokio runtime).
    pub fn start(api: Api, options: ListOptions) -> Informer {
        Self::start_with(api, options, None)
    }

    /// As [`Informer::start`], every object changed by `transform` before it is cached.
    pub fn start_with(api: Api, options: ListOptions, transform: Option<Transform>) -> Informer {
        let key = Key {
            client: api.client.id,
            group: api.group.clone(),
            resource: api.resource.clone(),
            namespace: api.namespace.clone(),
            labels: options.label_selector.clone(),
            fields: options.field_selector.clone(),
            transform: transform.map(|t| t.name),
        };
        let mut all = running().lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, r| r.strong_count() > 0);
        let running = match all.get(&key).and_then(Weak::upgrade) {
            Some(r) => r,
            None => {
                let cache = Cache::default();
                let task = tokio::spawn(run(api, options, transform, cache.clone())).abort_handle();
                let r = Arc::new(Running { cache, task });
                all.insert(key, Arc::downgrade(&r));
                r
            }
        };
        drop(all);
        let (tx, rx) = mpsc::unbounded_channel();
        {
            // Catch up with what the cache already holds, then follow.
            let mut store = running.cache.write();
            for e in store.objects.values() {
                let _ = tx.send(Notification::Added(e.object()));
            }
            if store.synced {
                let _ = tx.send(Notification::Synced);
            }
            store.subscribers.push(tx);
        }
        Informer {
            cache: running.cache.clone(),
            notifications: rx,
            _running: running,
        }
    }
}

async fn run(api: Api, options: ListOptions, transform: Option<Transform>, cache: Cache) {
    let (mut failures, mut listed) = (0, false);
    loop {
        // List: replace the cache, notifying the differences. A failed list is retried after
        // a jittered, doubling back-off (100 ms up to 5 s), so that informers cut off together
        // do not relist together.
        let (resource_version, fresh) = match list(&api, &options, transform, &cache.packer).await {
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
        if listed {
            crate::metrics::counter(
                "skiff_informer_relists_total",
                "Lists an informer made again after its first (its watch expired or failed).",
                &["resource"],
            )
            .inc(&[&api.resource]);
        }
        listed = true;
        relisted(&cache, fresh);
        // Watch from the list's revision until it expires.
        let mut opts = options.clone();
        opts.resource_version = Some(resource_version);
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
            let object = Transform::value(transform, ev.object);
            let mut store = cache.write();
            let k = key(meta::namespace(&object), meta::name(&object));
            let note = match ev.event_type.as_str() {
                event_type::ADDED | event_type::MODIFIED => {
                    let entry = Entry::of(&object, &cache.packer);
                    let new = entry.object();
                    match store.put(k, entry) {
                        Some(old) => Notification::Updated(old.object(), new),
                        None => Notification::Added(new),
                    }
                }
                event_type::DELETED => {
                    store.remove(&k);
                    Notification::Deleted(Object::from(object))
                }
                _ => continue,
            };
            store.notify(note);
        }
    }
}

/// Lists every page, keeping each object encoded as it arrives (a page at a time is
/// decoded, never the whole list): the list's resourceVersion and the objects by key.
async fn list(
    api: &Api,
    options: &ListOptions,
    transform: Option<Transform>,
    packer: &Packer,
) -> Result<(String, BTreeMap<String, Entry>), crate::api::Status> {
    let mut fresh = BTreeMap::new();
    let mut opts = options.clone();
    let mut resource_version = None;
    loop {
        let page = api.list(&opts).await?;
        resource_version.get_or_insert(page.resource_version);
        for o in page.items {
            let e = Entry::of(&Transform::value(transform, o), packer);
            fresh.insert(e.meta.key(), e);
        }
        match page.continue_token {
            Some(t) => opts.continue_token = Some(t),
            None => return Ok((resource_version.unwrap_or_default(), fresh)),
        }
    }
}

/// Replaces the cache's objects with a fresh list, notifying each difference, then Synced.
fn relisted(cache: &Cache, mut fresh: BTreeMap<String, Entry>) {
    let mut store = cache.write();
    let gone: Vec<String> = store
        .objects
        .keys()
        .filter(|k| !fresh.contains_key(*k))
        .cloned()
        .collect();
    for k in gone {
        if let Some(old) = store.remove(&k) {
            let note = Notification::Deleted(old.object());
            store.notify(note);
        }
    }
    for (k, entry) in std::mem::take(&mut fresh) {
        let same = store
            .objects
            .get(&k)
            .is_some_and(|e| e.packed == entry.packed);
        if same {
            continue;
        }
        let obj = entry.object();
        let note = match store.put(k, entry) {
            Some(old) => Notification::Updated(old.object(), obj),
            None => Notification::Added(obj),
        };
        store.notify(note);
    }
    store.synced = true;
    store.notify(Notification::Synced);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: Option<&str>, owner: Option<&str>) -> Value {
        let mut p = json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}")},
            "spec": {}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        if let Some(o) = owner {
            p["metadata"]["ownerReferences"] =
                json!([{"kind": "ReplicaSet", "name": "rs", "uid": o, "controller": true}]);
        }
        p
    }

    fn fresh(cache: &Cache, items: Vec<Value>) -> BTreeMap<String, Entry> {
        items
            .iter()
            .map(|o| {
                let e = Entry::of(o, &cache.packer);
                (e.meta.key(), e)
            })
            .collect()
    }

    #[test]
    fn indexes_follow_every_change() {
        let cache = Cache::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        cache.write().subscribers.push(tx);
        relisted(
            &cache,
            fresh(
                &cache,
                vec![pod("a", Some("n1"), Some("rs1")), pod("b", None, None)],
            ),
        );
        assert_eq!(cache.on_node("n1").len(), 1);
        assert_eq!(cache.owned_by("rs1").len(), 1);
        assert_eq!(cache.list_namespace("ns").len(), 2);
        assert!(
            cache.list_namespace("n").is_empty(),
            "a prefix of a namespace is not it"
        );
        // a moves to n2 and loses its owner; b is gone from the next list.
        relisted(&cache, fresh(&cache, vec![pod("a", Some("n2"), None)]));
        assert!(cache.on_node("n1").is_empty());
        assert_eq!(cache.on_node("n2").len(), 1);
        assert!(cache.owned_by("rs1").is_empty());
        assert_eq!(cache.len(), 1);
        let mut notes = Vec::new();
        while let Ok(n) = rx.try_recv() {
            notes.push(n);
        }
        let kinds: Vec<&str> = notes
            .iter()
            .map(|n| match n {
                Notification::Added(_) => "added",
                Notification::Updated(..) => "updated",
                Notification::Deleted(_) => "deleted",
                Notification::Synced => "synced",
            })
            .collect();
        assert_eq!(
            kinds,
            ["added", "added", "synced", "deleted", "updated", "synced"]
        );
        // An unchanged relist notifies nothing but Synced.
        relisted(&cache, fresh(&cache, vec![pod("a", Some("n2"), None)]));
        assert_eq!(rx.try_recv().unwrap(), Notification::Synced);
        assert!(rx.try_recv().is_err());
        // Metadata without decoding.
        let metas = cache.metas();
        assert_eq!(metas[0].node.as_deref(), Some("n2"));
        assert_eq!(metas[0].uid, "u-a");
        assert_eq!(cache.get("ns", "a").unwrap(), pod("a", Some("n2"), None));
    }
}
