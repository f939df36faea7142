//! The Store's registered watchers, indexed so that an event costs the watchers it concerns
//! (kube-apiserver's watch cache does the same with its triggers): a watch that selects one
//! exact value of `spec.nodeName` or `metadata.name` is found through that value, so a pod
//! bound to one node wakes that node's kubelet and not the thousand others.
//!
//! The index only narrows who is handed an event: each watch still applies its own selector,
//! so a trigger may let an unconcerned event through but never holds a concerned one back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Event;

/// The exact field value a watch selects on, which events are looked up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// `spec.nodeName=<value>` ("" for unbound pods).
    NodeName(String),
    /// `metadata.name=<value>`.
    Name(String),
}

/// One registered watcher.
struct Watcher {
    prefix: String,
    trigger: Option<Trigger>,
    tx: mpsc::Sender<Arc<Event>>,
}

/// Every registered watcher; see the module docs.
#[derive(Default)]
pub struct Watchers {
    by_id: HashMap<u64, Watcher>,
    /// Watchers without a trigger: every event of their prefix goes to them.
    untriggered: HashSet<u64>,
    /// Watchers by trigger.
    triggered: HashMap<Trigger, HashSet<u64>>,
    /// How many triggers are on `spec.nodeName` (events are decoded for them only).
    node_triggers: usize,
    next_id: u64,
}

impl Watchers {
    /// Registers a watcher.
    pub fn add(&mut self, prefix: String, trigger: Option<Trigger>, tx: mpsc::Sender<Arc<Event>>) {
        self.next_id += 1;
        let id = self.next_id;
        match &trigger {
            None => {
                self.untriggered.insert(id);
            }
            Some(t) => {
                if matches!(t, Trigger::NodeName(_)) {
                    self.node_triggers += 1;
                }
                self.triggered.entry(t.clone()).or_default().insert(id);
            }
        }
        self.by_id.insert(
            id,
            Watcher {
                prefix,
                trigger,
                tx,
            },
        );
    }

    /// Live watchers.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Hands an event to the watchers it concerns; a watcher that is full or gone is dropped
    /// (its stream ends and it resumes from its last revision).
    pub fn notify(&mut self, event: &Arc<Event>) {
        let mut dead = Vec::new();
        let mut offer = |id: u64, by_id: &HashMap<u64, Watcher>| {
            if let Some(w) = by_id.get(&id) {
                if event.kv.key.starts_with(&w.prefix) && w.tx.try_send(event.clone()).is_err() {
                    dead.push(id);
                }
            }
        };
        for &id in &self.untriggered {
            offer(id, &self.by_id);
        }
        if !self.triggered.is_empty() {
            let name = event.kv.key.rsplit('/').next().unwrap_or("");
            if let Some(ids) = self.triggered.get(&Trigger::Name(name.to_string())) {
                for &id in ids {
                    offer(id, &self.by_id);
                }
            }
            if self.node_triggers > 0 {
                let new = node_name(&event.kv.value);
                let prev = event.prev.as_ref().map(|p| node_name(&p.value));
                for node in std::iter::once(new.clone()).chain(prev.filter(|p| *p != new)) {
                    if let Some(ids) = self.triggered.get(&Trigger::NodeName(node)) {
                        for &id in ids {
                            offer(id, &self.by_id);
                        }
                    }
                }
            }
        }
        for id in dead {
            self.remove(id);
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(w) = self.by_id.remove(&id) else {
            return;
        };
        match w.trigger {
            None => {
                self.untriggered.remove(&id);
            }
            Some(t) => {
                if matches!(t, Trigger::NodeName(_)) {
                    self.node_triggers -= 1;
                }
                if let Some(ids) = self.triggered.get_mut(&t) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.triggered.remove(&t);
                    }
                }
            }
        }
    }
}

/// `spec.nodeName` of a stored object ("" when unset), read without decoding the rest into
/// values.
fn node_name(value: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Object {
        #[serde(default)]
        spec: Option<Spec>,
    }
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default, rename = "nodeName")]
        node_name: Option<String>,
    }
    rmp_serde::from_slice::<Object>(value)
        .ok()
        .and_then(|o| o.spec?.node_name)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::codec;
    use crate::apiserver::store::{EventKind, KeyValue};
    use serde_json::json;

    fn kv(key: &str, node: Option<&str>, rev: u64) -> KeyValue {
        let obj = match node {
            Some(n) => {
                json!({"metadata": {"name": "p"}, "spec": {"nodeName": n, "containers": []}})
            }
            None => json!({"metadata": {"name": "p"}, "spec": {"containers": []}}),
        };
        KeyValue {
            key: key.into(),
            value: codec::value_to_msgpack(&obj).unwrap().into(),
            create_revision: 1,
            mod_revision: rev,
        }
    }

    fn event(key: &str, node: Option<&str>, prev: Option<Option<&str>>, rev: u64) -> Arc<Event> {
        Arc::new(Event {
            kind: EventKind::Put,
            kv: kv(key, node, rev),
            prev: prev.map(|p| kv(key, p, rev - 1)),
            decoded: Default::default(),
            trace: None,
        })
    }

    #[test]
    fn events_reach_the_watchers_they_concern_and_no_others() {
        let mut ws = Watchers::default();
        let mut rx = HashMap::new();
        let mut watch = |name: &str, prefix: &str, trigger: Option<Trigger>| {
            let (tx, r) = mpsc::channel(16);
            ws.add(prefix.into(), trigger, tx);
            rx.insert(name.to_string(), r);
        };
        watch("all", "/registry/pods/", None);
        watch(
            "n1",
            "/registry/pods/",
            Some(Trigger::NodeName("n1".into())),
        );
        watch(
            "n2",
            "/registry/pods/",
            Some(Trigger::NodeName("n2".into())),
        );
        watch(
            "unbound",
            "/registry/pods/",
            Some(Trigger::NodeName(String::new())),
        );
        watch(
            "by-name",
            "/registry/pods/default/",
            Some(Trigger::Name("p".into())),
        );
        watch("cms", "/registry/configmaps/", None);
        // Created unbound, bound to n1, moved to n2 (a re-created pod of the same name).
        ws.notify(&event("/registry/pods/default/p", None, None, 2));
        ws.notify(&event(
            "/registry/pods/default/p",
            Some("n1"),
            Some(None),
            3,
        ));
        ws.notify(&event(
            "/registry/pods/default/p",
            Some("n2"),
            Some(Some("n1")),
            4,
        ));
        let mut got = |name: &str| {
            let r = rx.get_mut(name).unwrap();
            let mut revs = Vec::new();
            while let Ok(e) = r.try_recv() {
                revs.push(e.revision());
            }
            revs
        };
        assert_eq!(got("all"), [2, 3, 4]);
        assert_eq!(got("unbound"), [2, 3], "created unbound, then left");
        assert_eq!(got("n1"), [3, 4], "bound to it, then moved away");
        assert_eq!(got("n2"), [4]);
        assert_eq!(got("by-name"), [2, 3, 4]);
        assert_eq!(got("cms"), Vec::<u64>::new(), "another prefix");
    }

    #[test]
    fn a_full_or_closed_watcher_is_dropped_from_the_index() {
        let mut ws = Watchers::default();
        let (tx, rx) = mpsc::channel(1);
        ws.add(
            "/registry/pods/".into(),
            Some(Trigger::NodeName("n1".into())),
            tx,
        );
        drop(rx);
        ws.notify(&event("/registry/pods/default/p", Some("n1"), None, 2));
        assert_eq!(ws.len(), 0);
        assert!(ws.triggered.is_empty());
        assert_eq!(ws.node_triggers, 0);
    }
}
