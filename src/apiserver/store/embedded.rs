//! The embedded backend: a write-ahead log for speed, a redb file as the checkpoint.
//!
//! A batch becomes durable by one write into `wal.log` and one `fdatasync` — sequential bytes,
//! however many keys the batch touches, which is what lets group commit pay off. Every
//! `checkpoint_bytes` of log, the changes gathered since the last checkpoint are written into
//! `store.redb` in one fsynced transaction (keys and the last revision together), and the log
//! starts over.
//!
//! The log is preallocated and recycled, as etcd's WAL and RocksDB's recyclable logs are: the
//! file is filled with real zeros ahead of the writes, and after a checkpoint it is written
//! again from the start instead of being truncated. A write into blocks the file already owns
//! changes no metadata, so its `fdatasync` flushes the data alone (on this project's machines
//! about half the time of an appending write's). Old records left behind the new ones are told
//! apart by the *segment salt*: a random number in the file's header, chosen anew at every
//! start-over and carried (under the checksum) by every record, so no stale record — nor a
//! record forged inside a stored value, whose author cannot know the salt — is ever replayed.
//!
//! Recovery: load the redb file, then replay the log's records of the current salt in order,
//! skipping those at or below the checkpoint's revision (a crash between checkpoint and
//! start-over) and stopping at the first torn, corrupt or stale record (a crash mid-write:
//! that batch was never acknowledged). Then checkpoint and start over. The header is only ever
//! rewritten when no record is needed (at creation and right after a durable checkpoint), so a
//! torn header loses nothing.
//!
//! Header (first 4 KiB page): `SKIFFWAL | salt u64 | crc32 u32`. Record: `len u32 | crc32 u32 |
//! payload`, payload = `salt u64 | revision u64 | count u32 |` entries, each `1 | key | create
//! u64 | mod u64 | value` (put) or `2 | key` (delete), where key and value are `u32`
//! length-prefixed. Little endian. A log written before the header existed (records from
//! offset 0, payload without the salt) is still replayed once, then replaced.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
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
/// The log header's magic.
const MAGIC: &[u8; 8] = b"SKIFFWAL";
/// Records start after the header's page, so rewriting the header never touches a record's
/// block.
const HEADER_BYTES: u64 = 4096;
/// How far ahead of the writes the log is filled with zeros.
const GROW_BYTES: u64 = 4 * 1024 * 1024;

/// The write-ahead log plus its redb checkpoint.
pub struct EmbeddedBackend {
    /// The checkpoint; redb commits with fsync by default (Durability::Immediate).
    db: Database,
    /// The log, written at explicit offsets.
    wal: File,
    /// Where the log lives.
    wal_path: PathBuf,
    /// The current segment's salt: records carrying another one are not this segment's.
    salt: u64,
    /// Where the next record goes.
    at: u64,
    /// How far the log is allocated (written with zeros or records).
    allocated: u64,
    /// Set when a new header may or may not have reached the disk: neither salt can be
    /// trusted for the records that would follow, so nothing more is written until a restart
    /// (whose recovery finds every acknowledged write in the checkpoint).
    broken: Option<String>,
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

/// Encodes one batch as a log record of the segment with `salt` (None: the format before the
/// header, kept for the tests of its replay).
fn encode_batch(changes: &[Change], revision: u64, salt: Option<u64>) -> Vec<u8> {
    let bytes: usize = changes
        .iter()
        .map(|c| match c {
            Change::Put(kv) => 25 + kv.key.len() + kv.value.len(),
            Change::Delete(key) => 5 + key.len(),
        })
        .sum();
    let mut p = Vec::with_capacity(bytes + 28);
    if let Some(salt) = salt {
        p.extend_from_slice(&salt.to_le_bytes());
    }
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

/// Splits a log into its valid records and the offset where validity ends. With `salt`, each
/// payload must start with it (the current format); without, it is the format before the
/// header.
fn parse_log(log: &[u8], salt: Option<u64>) -> (Vec<(u64, Vec<Change>)>, usize) {
    let mut records = Vec::new();
    let mut at = 0usize;
    while log.len() - at >= 8 {
        let len = u32::from_le_bytes([log[at], log[at + 1], log[at + 2], log[at + 3]]) as usize;
        let crc = u32::from_le_bytes([log[at + 4], log[at + 5], log[at + 6], log[at + 7]]);
        let Some(payload) = log.get(at + 8..at + 8 + len) else {
            break;
        };
        if len == 0 || crc32fast::hash(payload) != crc {
            break; // zeros ahead of the writes, a torn write, or garbage
        }
        let payload = match salt {
            Some(salt) => match payload.split_first_chunk::<8>() {
                Some((s, rest)) if u64::from_le_bytes(*s) == salt => rest,
                _ => break, // a record of an earlier segment
            },
            None => payload,
        };
        let Some(batch) = decode_batch(payload) else {
            break;
        };
        records.push(batch);
        at += 8 + len;
    }
    (records, at)
}

/// The log header for `salt`.
fn encode_header(salt: u64) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&salt.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The salt of a log header, if the log starts with a whole one.
fn decode_header(log: &[u8]) -> Option<u64> {
    let h = log.get(..20)?;
    if &h[..8] != MAGIC || crc32fast::hash(&h[..16]).to_le_bytes() != h[16..20] {
        return None;
    }
    Some(u64::from_le_bytes(h[8..16].try_into().ok()?))
}

impl EmbeddedBackend {
    /// Opens (or creates) `store.redb` and `wal.log` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, BackendError> {
        Self::open_with(dir, DEFAULT_CHECKPOINT_BYTES)
    }

    /// Opens with a given checkpoint threshold.
    pub fn open_with(dir: &Path, checkpoint_bytes: u64) -> Result<Self, BackendError> {
        // The store holds Secrets as they are: its directory and files are its owner's
        // only, from their first byte (redb opens the file made here).
        crate::files::private_dir(dir).map_err(err)?;
        let db_path = dir.join("store.redb");
        crate::files::private_file(&db_path).map_err(err)?;
        let db = Database::create(&db_path).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        {
            tx.open_table(KV).map_err(err)?;
            tx.open_table(META).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        let wal_path = dir.join("wal.log");
        crate::files::private_file(&wal_path).map_err(err)?;
        let wal = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(&wal_path)
            .map_err(err)?;
        let allocated = wal.metadata().map_err(err)?.len();
        Ok(EmbeddedBackend {
            db,
            wal,
            wal_path,
            salt: 0,
            at: HEADER_BYTES,
            allocated,
            broken: None,
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
        self.pending.clear();
        // The checkpoint is durable: the log's records are no longer needed.
        self.start_over()
    }

    /// Starts a new segment at the beginning of the log, under a new salt. Only called when
    /// every record of the log is in the checkpoint.
    fn start_over(&mut self) -> Result<(), BackendError> {
        let salt = loop {
            let s = rand::random::<u64>();
            if s != self.salt {
                break s;
            }
        };
        self.ensure_allocated(HEADER_BYTES)?;
        if let Err(e) = self
            .wal
            .write_all_at(&encode_header(salt), 0)
            .and_then(|_| self.wal.sync_data())
        {
            let e = format!("store log header could not be written: {e}; restart to recover");
            self.broken = Some(e.clone());
            return Err(BackendError(e));
        }
        self.salt = salt;
        self.at = HEADER_BYTES;
        Ok(())
    }

    /// Fills the log with zeros up to at least `end` (in steps of GROW_BYTES), so the writes
    /// that follow land in blocks the file already owns. Made durable by the next sync.
    fn ensure_allocated(&mut self, end: u64) -> Result<(), BackendError> {
        if end <= self.allocated {
            return Ok(());
        }
        let target = end.div_ceil(GROW_BYTES) * GROW_BYTES;
        let zeros = vec![0u8; 1 << 20];
        let mut at = self.allocated;
        while at < target {
            let n = (target - at).min(zeros.len() as u64);
            self.wal
                .write_all_at(&zeros[..n as usize], at)
                .map_err(err)?;
            at += n;
        }
        self.allocated = target;
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
        let (records, valid, from) = match decode_header(&log) {
            Some(salt) => {
                let from = (HEADER_BYTES as usize).min(log.len());
                let (records, valid) = parse_log(&log[from..], Some(salt));
                (records, valid, from)
            }
            // No header: a new log, a torn header (written only when no record is needed), or
            // a log of the format before the header.
            None => {
                let (records, valid) = parse_log(&log, None);
                (records, valid, 0)
            }
        };
        if from + valid < log.len() && log[from + valid..].iter().any(|b| *b != 0) {
            tracing::debug!(
                offset = from + valid,
                "store log: replay stops at a torn, stale or foreign record (never acknowledged)"
            );
        }
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
        // Everything replayed goes into the checkpoint, and the log starts over (checkpoint
        // starts over itself when it has something to write).
        if self.pending.is_empty() {
            self.start_over()?;
        } else {
            self.checkpoint()?;
        }
        Ok(Loaded {
            revision,
            kvs: state.into_values().collect(),
        })
    }

    fn persist(&mut self, changes: &[Change], revision: u64) -> Result<(), BackendError> {
        if let Some(e) = &self.broken {
            return Err(BackendError(e.clone()));
        }
        let record = encode_batch(changes, revision, Some(self.salt));
        let end = self.at + record.len() as u64;
        let written = self
            .ensure_allocated(end)
            .and_then(|_| self.wal.write_all_at(&record, self.at).map_err(err))
            .and_then(|_| self.wal.sync_data().map_err(err));
        if let Err(e) = written {
            // Spoil whatever part of the record reached the file, so replay stops before it;
            // the next record is written at the same place.
            let _ = self.wal.write_all_at(&[0u8; 8], self.at);
            return Err(e);
        }
        self.at = end;
        self.remember(changes, revision);
        if self.at - HEADER_BYTES >= self.checkpoint_bytes {
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
            ..Default::default()
        })]
        /// Recovery from arbitrary bytes where the log was, after or instead of good records:
        /// it never panics, and whatever it loads it loads whole (the good records before the
        /// garbage, or none), never a value the garbage made up.
        #[test]
        fn recovery_from_arbitrary_log_bytes_never_panics_or_invents(
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
            keep in 0usize..3,
            at_start in proptest::prelude::any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let tail = {
                let (mut b, _) = load(dir.path(), 1 << 30);
                for r in 1..=keep as u64 {
                    b.persist(&[Change::Put(kv(&format!("/k{r}"), r))], r).unwrap();
                }
                b.at
            };
            let f = OpenOptions::new().write(true).open(dir.path().join("wal.log")).unwrap();
            f.write_all_at(&garbage, if at_start { 0 } else { tail }).unwrap();
            drop(f);
            if let Ok(mut b) = EmbeddedBackend::open_with(dir.path(), 1 << 30) {
                if let Ok(loaded) = b.load() {
                    proptest::prop_assert!(loaded.revision <= keep as u64);
                    for kv in &loaded.kvs {
                        let r = kv.mod_revision;
                        proptest::prop_assert_eq!(kv, &super::tests::kv(&format!("/k{r}"), r));
                    }
                }
            }
        }
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
        let (tail, salt) = {
            let (mut b, _) = load(dir.path(), 1 << 30);
            b.persist(&[Change::Put(kv("/a", 1))], 1).unwrap();
            b.persist(&[Change::Put(kv("/b", 2))], 2).unwrap();
            (b.at, b.salt)
        };
        // A crash in the middle of writing the third record.
        let rec = encode_batch(&[Change::Put(kv("/c", 3))], 3, Some(salt));
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join("wal.log"))
            .unwrap();
        f.write_all_at(&rec[..rec.len() - 3], tail).unwrap();
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
    fn the_log_is_preallocated_and_recycled() {
        let dir = tempfile::tempdir().unwrap();
        let len = || std::fs::metadata(dir.path().join("wal.log")).unwrap().len();
        let (mut b, _) = load(dir.path(), 64 * 1024);
        assert_eq!(len(), GROW_BYTES, "zeros ahead of the first write");
        let salt = b.salt;
        let mut rev = 0;
        // Past the checkpoint threshold: the log starts over under a new salt, same file.
        while b.salt == salt {
            rev += 1;
            b.persist(&[Change::Put(kv(&format!("/k{rev}"), rev))], rev)
                .unwrap();
        }
        assert_eq!(b.at, HEADER_BYTES);
        assert_eq!(
            len(),
            GROW_BYTES,
            "the file was reused, not truncated or grown"
        );
        b.persist(&[Change::Put(kv("/last", rev + 1))], rev + 1)
            .unwrap();
        drop(b);
        let (_, loaded) = load(dir.path(), 64 * 1024);
        assert_eq!(loaded.revision, rev + 1);
        assert_eq!(loaded.kvs.len() as u64, rev + 1);
    }

    #[test]
    fn records_of_another_salt_are_never_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let tail = {
            let (mut b, _) = load(dir.path(), 1 << 30);
            b.persist(&[Change::Put(kv("/a", 1))], 1).unwrap();
            b.at
        };
        // A stale record of an earlier segment (or one forged without the salt) right after
        // the last good one, with a later revision: replay must stop before it.
        let stale = encode_batch(&[Change::Put(kv("/forged", 9))], 9, Some(12345));
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join("wal.log"))
            .unwrap();
        f.write_all_at(&stale, tail).unwrap();
        drop(f);
        let (_, loaded) = load(dir.path(), 1 << 30);
        assert_eq!(loaded.revision, 1);
        assert_eq!(loaded.kvs, vec![kv("/a", 1)]);
    }

    #[test]
    fn a_log_from_before_the_header_is_replayed_once() {
        let dir = tempfile::tempdir().unwrap();
        drop(load(dir.path(), 1 << 30));
        let mut log = encode_batch(&[Change::Put(kv("/a", 1))], 1, None);
        log.extend(encode_batch(&[Change::Put(kv("/b", 2))], 2, None));
        std::fs::write(dir.path().join("wal.log"), &log).unwrap();
        let (mut b, loaded) = load(dir.path(), 1 << 30);
        assert_eq!(loaded.revision, 2);
        assert_eq!(loaded.kvs.len(), 2);
        b.persist(&[Change::Put(kv("/c", 3))], 3).unwrap();
        drop(b);
        let (_, loaded) = load(dir.path(), 1 << 30);
        assert_eq!(loaded.revision, 3);
        assert_eq!(loaded.kvs.len(), 3);
    }

    #[test]
    fn corrupt_records_never_decode() {
        for salt in [None, Some(77)] {
            let rec = encode_batch(
                &[Change::Put(kv("/a", 1)), Change::Delete("/b".into())],
                1,
                salt,
            );
            let (ok, at) = parse_log(&rec, salt);
            assert_eq!((ok.len(), at), (1, rec.len()));
            for i in 0..rec.len() {
                let mut bad = rec.clone();
                bad[i] ^= 0x40;
                let (recs, _) = parse_log(&bad, salt);
                assert!(recs.is_empty(), "flipped byte {i} still decoded");
            }
        }
    }
}
