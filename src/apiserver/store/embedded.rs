//! The embedded backend: one redb file, one fsynced transaction per batch.
//!
//! Each record is `create_revision (8 bytes BE) | mod_revision (8 bytes BE) | value`.
//! The last committed revision lives in the `meta` table, written in the same transaction as
//! the batch, so a crash leaves either the whole batch with its revision or neither.

use std::path::Path;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::backend::{Backend, BackendError, Change, Loaded};
use super::KeyValue;

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";

/// A redb database file holding the live keys.
pub struct EmbeddedBackend {
    /// The open database; redb commits with fsync by default (Durability::Immediate).
    db: Database,
}

fn err(e: impl std::fmt::Display) -> BackendError {
    BackendError(e.to_string())
}

impl EmbeddedBackend {
    /// Opens (or creates) the store file.
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let db = Database::create(path).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        {
            tx.open_table(KV).map_err(err)?;
            tx.open_table(META).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(EmbeddedBackend { db })
    }
}

fn encode(kv: &KeyValue) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + kv.value.len());
    buf.extend_from_slice(&kv.create_revision.to_be_bytes());
    buf.extend_from_slice(&kv.mod_revision.to_be_bytes());
    buf.extend_from_slice(&kv.value);
    buf
}

fn decode(key: &str, raw: &[u8]) -> Result<KeyValue, BackendError> {
    if raw.len() < 16 {
        return Err(BackendError(format!("record of {key} is truncated")));
    }
    let (c, rest) = raw.split_at(8);
    let (m, value) = rest.split_at(8);
    Ok(KeyValue {
        key: key.to_string(),
        create_revision: u64::from_be_bytes(c.try_into().map_err(err)?),
        mod_revision: u64::from_be_bytes(m.try_into().map_err(err)?),
        value: Bytes::copy_from_slice(value),
    })
}

impl Backend for EmbeddedBackend {
    fn load(&mut self) -> Result<Loaded, BackendError> {
        let tx = self.db.begin_read().map_err(err)?;
        let meta = tx.open_table(META).map_err(err)?;
        let revision = meta
            .get(REVISION)
            .map_err(err)?
            .map(|v| v.value())
            .unwrap_or(0);
        let table = tx.open_table(KV).map_err(err)?;
        let mut kvs = Vec::new();
        for row in table.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            kvs.push(decode(k.value(), v.value())?);
        }
        Ok(Loaded { revision, kvs })
    }

    fn persist(&mut self, changes: &[Change], revision: u64) -> Result<(), BackendError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut table = tx.open_table(KV).map_err(err)?;
            for change in changes {
                match change {
                    Change::Put(kv) => {
                        table
                            .insert(kv.key.as_str(), encode(kv).as_slice())
                            .map_err(err)?;
                    }
                    Change::Delete(key) => {
                        table.remove(key.as_str()).map_err(err)?;
                    }
                }
            }
            let mut meta = tx.open_table(META).map_err(err)?;
            meta.insert(REVISION, revision).map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let mut b = EmbeddedBackend::open(&path).unwrap();
            let kv = |k: &str, r| KeyValue {
                key: k.into(),
                create_revision: r,
                mod_revision: r,
                value: Bytes::from_static(b"v"),
            };
            b.persist(&[Change::Put(kv("/a", 1)), Change::Put(kv("/b", 2))], 2)
                .unwrap();
            b.persist(&[Change::Delete("/a".into())], 3).unwrap();
        }
        let mut b = EmbeddedBackend::open(&path).unwrap();
        let loaded = b.load().unwrap();
        assert_eq!(loaded.revision, 3);
        assert_eq!(loaded.kvs.len(), 1);
        assert_eq!(loaded.kvs[0].key, "/b");
        assert_eq!(loaded.kvs[0].mod_revision, 2);
    }
}
