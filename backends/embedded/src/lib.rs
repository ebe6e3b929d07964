//! Embedded backends: the queue, store and retry scheduler of a single-process
//! MDC, durable in one data directory (a [`redb`] database).
//!
//! All writes go through one group-committing writer ([`Db`]): concurrent
//! writes share a transaction and an fsync, so durability costs little per
//! message.

mod db;
mod queue;
mod retry;
mod store;

use std::path::Path;
use std::sync::Arc;

pub use db::{Db, DbError};
pub use queue::{EmbeddedQueue, QueueLayout};
pub use retry::EmbeddedRetry;
pub use store::EmbeddedStore;

/// The three embedded backends over one database file.
pub struct Embedded {
    pub queue: Arc<EmbeddedQueue>,
    pub store: Arc<EmbeddedStore>,
    pub retry: Arc<EmbeddedRetry>,
}

impl Embedded {
    /// Opens (creating if needed) `dir/mdc.redb`. Fails if another process has
    /// it open.
    pub fn open(dir: &Path, layout: QueueLayout) -> Result<Self, DbError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| DbError::Open(format!("{}: {e}", dir.display())))?;
        let db = Db::open(&dir.join("mdc.redb"))?;
        Ok(Self {
            queue: Arc::new(EmbeddedQueue::open(db.clone(), layout)?),
            store: Arc::new(EmbeddedStore::open(db.clone())?),
            retry: Arc::new(EmbeddedRetry::open(db)?),
        })
    }
}
