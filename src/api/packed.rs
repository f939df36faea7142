//! Packed objects: an object's MessagePack encoding compressed (LZ4) against a dictionary,
//! for what holds many objects of one kind in memory for a long time (the Store's state,
//! informer caches).
//!
//! Objects of one kind repeat each other: the same keys, defaults, conditions and often
//! (the pods of one ReplicaSet) the same spec. So the first object of a kind a holder sees
//! becomes that kind's dictionary, and every later one is kept as the LZ4 matches against
//! it: a Running pod of ~1.7 KB becomes ~0.2–0.4 KB. Compressing one costs ~2 µs,
//! expanding one ~1 µs. Each packed value holds its dictionary (an `Arc`), so it can never
//! be expanded against another.

use std::sync::Arc;

use bytes::Bytes;

/// LZ4 matches reach back at most 64 KiB: a longer dictionary is cut to its end.
const MAX_DICTIONARY: usize = 64 * 1024;

/// One object, compressed against its kind's dictionary; a copy shares both.
#[derive(Clone)]
pub struct Packed {
    dictionary: Arc<[u8]>,
    /// The LZ4 block, with the expanded length before it (shared by copies).
    data: Bytes,
}

impl Packed {
    /// Packs `bytes` against `dictionary`.
    pub fn new(bytes: &[u8], dictionary: &Arc<[u8]>) -> Packed {
        Packed {
            dictionary: dictionary.clone(),
            data: Bytes::from(lz4_flex::block::compress_prepend_size_with_dict(
                bytes, dictionary,
            )),
        }
    }

    /// The encoding as it was packed.
    pub fn bytes(&self) -> Bytes {
        // A packed value is only ever made by `new`, from these very bytes and dictionary.
        lz4_flex::block::decompress_size_prepended_with_dict(&self.data, &self.dictionary)
            .map(Bytes::from)
            .unwrap_or_default()
    }

    /// Bytes held for this value (not counting the shared dictionary).
    pub fn packed_len(&self) -> usize {
        self.data.len()
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({} bytes)", self.data.len())
    }
}

impl PartialEq for Packed {
    fn eq(&self, other: &Packed) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Packed {}

/// The dictionaries of one holder, one per kind (named as the holder likes: a store prefix,
/// a resource), each the first object of that kind it packed.
#[derive(Default)]
pub struct Dictionaries(std::collections::HashMap<String, Arc<[u8]>>);

impl Dictionaries {
    /// Packs `bytes`, an object of `kind`.
    pub fn pack(&mut self, kind: &str, bytes: &[u8]) -> Packed {
        let dictionary = match self.0.get(kind) {
            Some(d) => d,
            None => {
                let from = bytes.len().saturating_sub(MAX_DICTIONARY);
                self.0
                    .entry(kind.to_string())
                    .or_insert_with(|| Arc::from(&bytes[from..]))
            }
        };
        Packed::new(bytes, dictionary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(i: usize) -> Vec<u8> {
        crate::api::codec::value_to_msgpack(&json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("web-{i}"), "namespace": "default", "uid": format!("{i:036}"),
                "labels": {"app": "web"}},
            "spec": {"nodeName": format!("n{i}"), "containers": [{"name": "c", "image": "nginx:1.27",
                "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent"}]},
            "status": {"phase": "Running", "podIP": format!("10.0.0.{}", i % 250),
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}}))
        .unwrap()
    }

    #[test]
    fn objects_of_a_kind_pack_small_and_expand_exactly() {
        let mut d = Dictionaries::default();
        let first = d.pack("pods", &pod(0));
        assert_eq!(first.bytes(), pod(0));
        for i in 1..50 {
            let p = d.pack("pods", &pod(i));
            assert_eq!(p.bytes(), pod(i));
            assert!(
                p.packed_len() * 3 < pod(i).len(),
                "{} of {}",
                p.packed_len(),
                pod(i).len()
            );
        }
        // Another kind gets its own dictionary; anything at all round-trips.
        for bytes in [&b""[..], b"x", &[0u8; 100_000], &pod(7)[..10]] {
            assert_eq!(d.pack("other", bytes).bytes(), bytes);
            assert_eq!(d.pack("pods", bytes).bytes(), bytes);
        }
        assert_eq!(d.pack("pods", &pod(3)), d.pack("pods", &pod(3)));
    }
}
