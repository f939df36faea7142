//! The in-memory backend: nothing survives the process. For tests and throwaway clusters.

use super::backend::{Backend, BackendError, Change, Loaded};

/// Keeps nothing: the Store's own index is the only copy.
#[derive(Debug, Default)]
pub struct MemoryBackend;

impl Backend for MemoryBackend {
    fn load(&mut self) -> Result<Loaded, BackendError> {
        Ok(Loaded::default())
    }

    fn persist(&mut self, _changes: &[Change], _revision: u64) -> Result<(), BackendError> {
        Ok(())
    }
}
