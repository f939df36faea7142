//! Measurements of the Store itself, for `benches/spine.rs`: the store stays private, only
//! figures leave this module.

use std::path::Path;
use std::time::Instant;

use actix::Actor;

use super::store::{self, EmbeddedBackend, MemoryBackend, Store, StoreConfig};

/// Result of one create run against a bare Store.
#[derive(Debug, Clone, Copy)]
pub struct CreateRun {
    /// Acknowledged (durable) creates per second.
    pub per_second: f64,
    /// Creates acknowledged.
    pub created: u64,
    /// Seconds the run took.
    pub seconds: f64,
    /// Durable commits during the run.
    pub commits: u64,
    /// Writes those commits carried.
    pub writes: u64,
}

/// Creates `writers × per_writer` keys of `value_bytes` each, `writers` at a time, straight
/// through the Store's messages (no NATS, no validation), with `max_batch` and `pipeline` as
/// in [`StoreConfig`]. Must run inside an actix System.
pub async fn store_creates(
    dir: Option<&Path>,
    writers: usize,
    per_writer: usize,
    value_bytes: usize,
    max_batch: usize,
    pipeline: usize,
) -> Result<CreateRun, String> {
    let backend: Box<dyn store::Backend> = match dir {
        Some(d) => Box::new(EmbeddedBackend::open(d).map_err(|e| e.to_string())?),
        None => Box::new(MemoryBackend),
    };
    let config = StoreConfig {
        max_batch,
        pipeline,
        ..Default::default()
    };
    let store = Store::open(backend, config)
        .map_err(|e| e.to_string())?
        .start();
    let value = vec![0x42u8; value_bytes];
    let before = store.send(store::Stats).await.map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let value = value.clone();
        tasks.push(actix::spawn(async move {
            for i in 0..per_writer {
                let v = value.clone();
                store
                    .send(store::Create {
                        key: format!("/registry/bench/{w}/{i}"),
                        value: Box::new(move |_| Ok(v)),
                        trace: None,
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .durable()
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = store.send(store::Stats).await.map_err(|e| e.to_string())?;
    Ok(CreateRun {
        per_second: (writers * per_writer) as f64 / elapsed,
        created: (writers * per_writer) as u64,
        seconds: elapsed,
        commits: after.commits - before.commits,
        writes: after.writes - before.writes,
    })
}
