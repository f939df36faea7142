//! What a storage backend must do: load what is durable, and make a batch durable.
//!
//! The Store actor keeps the live index and the watch history in memory and decides every
//! revision itself; a backend only has to remember committed batches across restarts. That
//! keeps the two backends (embedded, memory) tiny and lets the Store group many writes into
//! one durable commit.

use super::KeyValue;

/// One committed change inside a batch.
#[derive(Debug, Clone)]
pub enum Change {
    /// The key now holds this value.
    Put(KeyValue),
    /// The key is gone.
    Delete(String),
}

/// Everything a backend had when it was opened.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The last revision ever committed (0 for a new store): never handed out again.
    pub revision: u64,
    /// Every live key.
    pub kvs: Vec<KeyValue>,
}

/// Why a backend could not load or persist.
#[derive(Debug, thiserror::Error)]
#[error("storage backend: {0}")]
pub struct BackendError(pub String);

/// A durable home for committed batches. Implementations block; the Store calls them only
/// from its dedicated writer thread, never from an actor's thread.
pub trait Backend: Send + 'static {
    /// Reads back every live key and the last committed revision.
    fn load(&mut self) -> Result<Loaded, BackendError>;
    /// Makes `changes` durable together, with `revision` as the new last revision. Returns
    /// only once they survive a crash (fsync), or with an error and nothing applied.
    fn persist(&mut self, changes: &[Change], revision: u64) -> Result<(), BackendError>;
}
