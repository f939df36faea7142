//! The embedded backend: a write-ahead log for speed, a redb file as the checkpoint.
//!
//! A batch becomes durable by one append to `wal.log` and one `fdatasync` — sequential bytes,
//! however many keys the batch touches, which is what lets group commit pay off. Every
//! `checkpoint_bytes` of log, the changes gathered since the last checkpoint are written into
//! `store.redb` in one fsynced transaction (keys and the last revision together), and the log
//! is emptied.
//!
//! Recovery: load the redb file, then replay the log's records in order, skipping those at or
//! below the checkpoint's revision (a crash between checkpoint and truncation) and cutting the
//! log at the first torn or corrupt record (a crash mid-append: that batch was never
//! acknowledged).
//!
//! Log record: `len u32 | crc32 u32 | payload`, payload = `revision u64 | count u32 |` entries,
//! each `1 | key | create u64 | mod u64 | value` (put) or `2 | key` (delete), where key and
//! value are `u32` length-prefixed. Little endian.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::backend::{Backend, BackendError, Change, Loaded};
use super::KeyValue;

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
/// Log size that triggers a checkpoint into redb.
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 32 * 1024 * 1024;

/// The write-ahead log plus its redb checkpoint.
pub struct EmbeddedBackend {
    /// The checkpoint; redb commits with fsync by default (Durability::Immediate).
    db: Database,
    /// The log, opened for appending.
    wal: File,
    /// Where the log lives (for truncation).
    wal_path: PathBuf,
    /// Bytes in the log since the last checkpoint.
    wal_bytes: u64,
    /// Changes logged since the last checkpoint, coalesced per key (None: deleted).
    pending: BTreeMap<String, Option<KeyValue>>,
    /// Revision of the last logged batch.
    pending_revision: u64,
    /// Log size that triggers a checkpoint.
    checkpoint_bytes: u64,
}

fn err(e: impl std::fmt::Display) -> BackendError {
    BackendError(e.to_string())
}

fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + kv.value.len());
    buf.extend_from_slice(&kv.create_revision.to_be_bytes());
    buf.extend_from_slice(&kv.mod_revision.to_be_bytes());
    buf.extend_from_slice(&kv.value);
    buf
}

fn decode_record(key: &str, raw: &[u8]) -> Result<KeyValue, BackendError> {
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

/// Encodes one batch as a log record.
fn encode_batch(changes: &[Change], revision: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(64 * changes.len() + 16);
    p.extend_from_slice(&revision.to_le_bytes());
    p.extend_from_slice(&(changes.len() as u32).to_le_bytes());
    let put_bytes = |p: &mut Vec<u8>, b: &[u8]| {
        p.extend_from_slice(&(b.len() as u32).to_le_bytes());
        p.extend_from_slice(b);
    };
    for c in changes {
        match c {
            Change::Put(kv) => {
                p.push(1);
                put_bytes(&mut p, kv.key.as_bytes());
                p.extend_from_slice(&kv.create_revision.to_le_bytes());
                p.extend_from_slice(&kv.mod_revision.to_le_bytes());
                put_bytes(&mut p, &kv.value);
            }
            Change::Delete(key) => {
                p.push(2);
                put_bytes(&mut p, key.as_bytes());
            }
        }
    }
    let mut rec = Vec::with_capacity(p.len() + 8);
    rec.extend_from_slice(&(p.len() as u32).to_le_bytes());
    rec.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
    rec.extend_from_slice(&p);
    rec
}

/// A cursor over a record's payload; every read is bounds-checked.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Decodes a record payload into (revision, changes); None if malformed.
fn decode_batch(payload: &[u8]) -> Option<(u64, Vec<Change>)> {
    let mut c = Cursor(payload);
    let revision = c.u64()?;
    let count = c.u32()? as usize;
    let mut changes = Vec::with_capacity(count.min(payload.len()));
    for _ in 0..count {
        let tag = c.take(1)?[0];
        let key = String::from_utf8(c.bytes()?.to_vec()).ok()?;
        match tag {
            1 => {
                let create_revision = c.u64()?;
                let mod_revision = c.u64()?;
                let value = Bytes::copy_from_slice(c.bytes()?);
                changes.push(Change::Put(KeyValue {
                    key,
                    value,
                    create_revision,
                    mod_revision,
                }));
            }
            2 => changes.push(Change::Delete(key)),
            _ => return None,
        }
    }
    if !c.0.is_empty() {
        return None;
    }
    Some((revision, changes))
}

/// Splits a log into its valid records and the offset where validity ends.
fn parse_log(log: &[u8]) -> (Vec<(u64, Vec<Change>)>, usize) {
    let mut records = Vec::new();
    let mut at = 0usize;
    while log.len() - at >= 8 {
        let len = u32::from_le_bytes([log[at], log[at + 1], log[at + 2], log[at + 3]]) as usize;
        let crc = u32::from_le_bytes([log[at + 4], log[at + 5], log[at + 6], log[at + 7]]);
        let Some(payload) = log.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(batch) = decode_batch(payload) else {
            break;
        };
        records.push(batch);
        at += 8 + len;
    }
    (records, at)
}

impl EmbeddedBackend {
    /// Opens (or creates) `store.redb` and `wal.log` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, BackendError> {
        Self::open_with(dir, DEFAULT_CHECKPOINT_BYTES)
    }

    /// Opens with a given checkpoint threshold.
    pub fn open_with(dir: &Path, checkpoint_bytes: u64) -> Result<Self, BackendError> {
        std::fs::create_dir_all(dir).map_err(err)?;
        let db = Database::create(dir.join("store.redb")).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        {
            tx.open_table(KV).map_err(err)?;
            tx.open_table(META).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        let wal_path = dir.join("wal.log");
        let wal = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&wal_path)
            .map_err(err)?;
        Ok(EmbeddedBackend {
            db,
            wal,
            wal_path,
            wal_bytes: 0,
            pending: BTreeMap::new(),
            pending_revision: 0,
            checkpoint_bytes,
        })
    }

    /// Writes the changes logged since the last checkpoint into redb, then empties the log.
    fn checkpoint(&mut self) -> Result<(), BackendError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut table = tx.open_table(KV).map_err(err)?;
            for (key, value) in &self.pending {
                match value {
                    Some(kv) => {
                        table
                            .insert(key.as_str(), encode_record(kv).as_slice())
                            .map_err(err)?;
                    }
                    None => {
                        table.remove(key.as_str()).map_err(err)?;
                    }
                }
            }
            let mut meta = tx.open_table(META).map_err(err)?;
            meta.insert(REVISION, self.pending_revision).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        // The checkpoint is durable: the log's records are no longer needed.
        self.wal.set_len(0).map_err(err)?;
        self.wal.sync_all().map_err(err)?;
        self.pending.clear();
        self.wal_bytes = 0;
        Ok(())
    }

    fn remember(&mut self, changes: &[Change], revision: u64) {
        for c in changes {
            match c {
                Change::Put(kv) => {
                    self.pending.insert(kv.key.clone(), Some(kv.clone()));
                }
                Change::Delete(key) => {
                    self.pending.insert(key.clone(), None);
                }
            }
        }
        self.pending_revision = revision;
    }
}

impl Backend for EmbeddedBackend {
    fn load(&mut self) -> Result<Loaded, BackendError> {
        let mut state = BTreeMap::new();
        let mut revision;
        {
            let tx = self.db.begin_read().map_err(err)?;
            let meta = tx.open_table(META).map_err(err)?;
            revision = meta
                .get(REVISION)
                .map_err(err)?
                .map(|v| v.value())
                .unwrap_or(0);
            let table = tx.open_table(KV).map_err(err)?;
            for row in table.iter().map_err(err)? {
                let (k, v) = row.map_err(err)?;
                let kv = decode_record(k.value(), v.value())?;
                state.insert(kv.key.clone(), kv);
            }
        }
        let mut log = Vec::new();
        File::open(&self.wal_path)
            .and_then(|mut f| f.read_to_end(&mut log))
            .map_err(err)?;
        let (records, valid) = parse_log(&log);
        if valid < log.len() {
            tracing::warn!(
                dropped = log.len() - valid,
                "store log ends with a torn record (a write that was never acknowledged); cutting it"
            );
            self.wal.set_len(valid as u64).map_err(err)?;
            self.wal.sync_all().map_err(err)?;
        }
        self.wal_bytes = valid as u64;
        for (rev, changes) in records {
            if rev <= revision {
                continue; // already in the checkpoint
            }
            for c in &changes {
                match c {
                    Change::Put(kv) => {
                        state.insert(kv.key.clone(), kv.clone());
                    }
                    Change::Delete(key) => {
                        state.remove(key);
                    }
                }
            }
            self.remember(&changes, rev);
            revision = rev;
        }
        self.checkpoint()?;
        Ok(Loaded {
            revision,
            kvs: state.into_values().collect(),
        })
    }

    fn persist(&mut self, changes: &[Change], revision: u64) -> Result<(), BackendError> {
        let record = encode_batch(changes, revision);
        let written = self
            .wal
            .write_all(&record)
            .and_then(|_| self.wal.sync_data());
        if let Err(e) = written {
            // Cut whatever part of the record reached the file, so the log stays parseable.
            let _ = self.wal.set_len(self.wal_bytes);
            return Err(err(e));
        }
        self.wal_bytes += record.len() as u64;
        self.remember(changes, revision);
        if self.wal_bytes >= self.checkpoint_bytes {
            if let Err(e) = self.checkpoint() {
                // The batch is durable in the log; the checkpoint is retried next time.
                tracing::warn!(error = %e, "store checkpoint failed; keeping the log");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, r: u64) -> KeyValue {
        KeyValue {
            key: k.into(),
            create_revision: r,
            mod_revision: r,
            value: Bytes::from(format!("v{r}")),
        }
    }

    fn load(dir: &Path, checkpoint: u64) -> (EmbeddedBackend, Loaded) {
        let mut b = EmbeddedBackend::open_with(dir, checkpoint).unwrap();
        let l = b.load().unwrap();
        (b, l)
    }

    #[test]
    fn batches_survive_reopen_through_log_and_checkpoint() {
        for checkpoint in [1, 1 << 30] {
            let dir = tempfile::tempdir().unwrap();
            {
                let (mut b, l) = load(dir.path(), checkpoint);
                assert_eq!(l.revision, 0);
                b.persist(&[Change::Put(kv("/a", 1)), Change::Put(kv("/b", 2))], 2)
                    .unwrap();
                b.persist(&[Change::Delete("/a".into())], 3).unwrap();
                b.persist(&[Change::Put(kv("/b", 4))], 4).unwrap();
            }
            let (_, loaded) = load(dir.path(), checkpoint);
            assert_eq!(loaded.revision, 4, "checkpoint {checkpoint}");
            assert_eq!(loaded.kvs, vec![kv("/b", 4)]);
        }
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut b, _) = load(dir.path(), 1 << 30);
            b.persist(&[Change::Put(kv("/a", 1))], 1).unwrap();
            b.persist(&[Change::Put(kv("/b", 2))], 2).unwrap();
        }
        // A crash in the middle of appending the third record.
        let rec = encode_batch(&[Change::Put(kv("/c", 3))], 3);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("wal.log"))
            .unwrap();
        f.write_all(&rec[..rec.len() - 3]).unwrap();
        drop(f);
        let (mut b, loaded) = load(dir.path(), 1 << 30);
        assert_eq!(loaded.revision, 2);
        assert_eq!(loaded.kvs.len(), 2);
        // The log is usable again after the cut.
        b.persist(&[Change::Put(kv("/d", 3))], 3).unwrap();
        drop(b);
        let (_, loaded) = load(dir.path(), 1 << 30);
        assert_eq!(loaded.revision, 3);
        assert_eq!(loaded.kvs.len(), 3);
    }

    #[test]
    fn corrupt_records_never_decode() {
        let rec = encode_batch(&[Change::Put(kv("/a", 1)), Change::Delete("/b".into())], 1);
        let (ok, at) = parse_log(&rec);
        assert_eq!((ok.len(), at), (1, rec.len()));
        for i in 0..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x40;
            let (recs, _) = parse_log(&bad);
            assert!(recs.is_empty(), "flipped byte {i} still decoded");
        }
    }
}
