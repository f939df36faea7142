//! The Store's committed keys, each value packed (`api::packed`) against the first value
//! stored under its resource's prefix: 100,000 Running pods are ~30 MB so, not ~170 MB. A
//! read expands the value it returns (~1 µs for a pod); a commit packs what it stores.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use crate::api::packed::{Dictionaries, Packed};

use super::{KeyValue, Revision};

/// One committed key's value and revisions; a copy shares the packed value.
#[derive(Clone)]
struct Stored {
    value: Packed,
    create_revision: Revision,
    mod_revision: Revision,
}

impl Stored {
    fn kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: self.value.bytes(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

/// The committed keys, in key order.
#[derive(Default)]
pub(super) struct State {
    keys: BTreeMap<String, Stored>,
    dictionaries: Dictionaries,
    /// Changes so far under each `/registry/<x>/` (see [`kind`]): the API server rebuilds
    /// what it derives from a few keys (the kinds CRDs define) only when theirs moved.
    epochs: HashMap<String, u64>,
}

/// What shares a dictionary: `/registry/<resource>/` (a CRD's `/registry/<group>/<plural>/`
/// shares its group's, which is fine: any dictionary expands what it packed).
fn kind(key: &str) -> &str {
    let mut slashes = key.match_indices('/').map(|(i, _)| i);
    match (slashes.next(), slashes.next(), slashes.next()) {
        (Some(0), Some(_), Some(end)) => &key[..=end],
        _ => "",
    }
}

impl State {
    /// The state holding `kvs`.
    pub(super) fn of(kvs: impl IntoIterator<Item = KeyValue>) -> State {
        let mut state = State::default();
        for kv in kvs {
            state.insert(kv);
        }
        state
    }

    /// The value of `key`, expanded.
    pub(super) fn get(&self, key: &str) -> Option<KeyValue> {
        self.keys.get(key).map(|s| s.kv(key))
    }

    /// Stores `kv`.
    pub(super) fn insert(&mut self, kv: KeyValue) {
        self.bump(&kv.key);
        let value = self.dictionaries.pack(kind(&kv.key), &kv.value);
        self.keys.insert(
            kv.key,
            Stored {
                value,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
            },
        );
    }

    /// Forgets `key`.
    pub(super) fn remove(&mut self, key: &str) {
        if self.keys.remove(key).is_some() {
            self.bump(key);
        }
    }

    fn bump(&mut self, key: &str) {
        let k = kind(key);
        match self.epochs.get_mut(k) {
            Some(n) => *n += 1,
            None => {
                self.epochs.insert(k.to_string(), 1);
            }
        }
    }

    /// How many changes the keys sharing `prefix`'s `/registry/<x>/` have seen.
    pub(super) fn epoch(&self, prefix: &str) -> u64 {
        self.epochs.get(kind(prefix)).copied().unwrap_or(0)
    }

    /// The keys that begin with `prefix` as they are now, each expanded only when the
    /// snapshot is read that far (a watch's initial ADDED events).
    pub(super) fn snapshot(&self, prefix: &str) -> Snapshot {
        let keys: Vec<(String, Stored)> = self
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        Snapshot(keys.into_iter())
    }

    /// The keys from `start` on that begin with `prefix`, each expanded when it is read.
    pub(super) fn range<'a>(
        &'a self,
        start: Bound<String>,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, KeyValue)> + 'a {
        self.keys
            .range((start, Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, s)| (k, s.kv(k)))
    }
}

/// Keys as they were when taken (see [`State::snapshot`]), expanded as they are read.
pub struct Snapshot(std::vec::IntoIter<(String, Stored)>);

impl Snapshot {
    /// No keys.
    pub fn empty() -> Snapshot {
        Snapshot(Vec::new().into_iter())
    }
}

impl Iterator for Snapshot {
    type Item = KeyValue;

    fn next(&mut self) -> Option<KeyValue> {
        self.0.next().map(|(k, s)| s.kv(&k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn kv(key: &str, value: &str, rev: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::from(value.to_string()),
            create_revision: 1,
            mod_revision: rev,
        }
    }

    #[test]
    fn values_read_back_as_stored() {
        assert_eq!(kind("/registry/pods/default/a"), "/registry/pods/");
        assert_eq!(kind("/registry/nodes/n1"), "/registry/nodes/");
        assert_eq!(kind("nonsense"), "");
        let mut s = State::of([
            kv(
                "/registry/pods/default/a",
                "pod a, the first of its kind",
                2,
            ),
            kv("/registry/nodes/n1", "a node", 3),
        ]);
        s.insert(kv("/registry/pods/default/b", "pod b, much like pod a", 4));
        s.insert(kv("/registry/pods/other/c", "", 5));
        assert_eq!(
            s.get("/registry/pods/default/b"),
            Some(kv("/registry/pods/default/b", "pod b, much like pod a", 4))
        );
        let pods: Vec<KeyValue> = s
            .range(Bound::Included("/registry/pods/".into()), "/registry/pods/")
            .map(|(_, kv)| kv)
            .collect();
        assert_eq!(
            pods,
            [
                kv(
                    "/registry/pods/default/a",
                    "pod a, the first of its kind",
                    2
                ),
                kv("/registry/pods/default/b", "pod b, much like pod a", 4),
                kv("/registry/pods/other/c", "", 5),
            ]
        );
        let taken = s.snapshot("/registry/pods/default/");
        s.remove("/registry/pods/default/a");
        assert_eq!(taken.count(), 2, "a snapshot keeps what it took");
        assert_eq!(s.get("/registry/pods/default/a"), None);
        assert_eq!(
            s.range(
                Bound::Excluded("/registry/pods/default/b".into()),
                "/registry/pods/"
            )
            .count(),
            1
        );
    }
}
