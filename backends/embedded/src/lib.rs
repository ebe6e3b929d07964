//! Embedded backends: the queue, store and retry scheduler of a single-process
//! MDC, durable in one data directory (a [`redb`] database).
//!
//! All writes go through one group-committing writer ([`Db`]): concurrent
//! writes share a transaction and an fsync, so durability costs little per
//! message.

mod cache;
mod db;
mod devices;
mod queue;
mod retry;
mod store;

use std::path::Path;
use std::sync::Arc;

pub use cache::MemoryCache;
pub use db::{Db, DbError};
pub use devices::EmbeddedDevices;
pub use queue::{EmbeddedQueue, QueueLayout};
pub use retry::EmbeddedRetry;
pub use store::EmbeddedStore;

/// The three embedded backends over one database file.
pub struct Embedded {
    pub queue: Arc<EmbeddedQueue>,
    pub store: Arc<EmbeddedStore>,
    pub retry: Arc<EmbeddedRetry>,
    pub devices: Arc<EmbeddedDevices>,
}

impl Embedded {
    /// Opens (creating if needed) `dir/queue.redb` and `dir/store.redb`: two
    /// files, so queue and store writes commit in parallel. Fails if another
    /// process has them open.
    pub fn open(dir: &Path, layout: QueueLayout) -> Result<Self, DbError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| DbError::Open(format!("{}: {e}", dir.display())))?;
        let queue = Db::open(&dir.join("queue.redb"))?;
        let store = Db::open(&dir.join("store.redb"))?;
        Ok(Self {
            queue: Arc::new(EmbeddedQueue::open(queue, layout)?),
            store: Arc::new(EmbeddedStore::open(store.clone())?),
            retry: Arc::new(EmbeddedRetry::open(store.clone())?),
            devices: Arc::new(EmbeddedDevices::open(store)?),
        })
    }
}
