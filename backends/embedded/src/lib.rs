//! Embedded backends: the queue, store and retry scheduler of a single-process
//! MDC, durable in one data directory (a [`redb`] database).
//!
//! All writes go through one group-committing writer ([`Db`]): concurrent
//! writes share a transaction and an fsync, so durability costs little per
//! message.

mod accept;
mod cache;
mod checkpoint;
mod db;
mod devices;
mod keys;
mod queue;
mod retry;
mod store;
mod suppression;
mod webhooks;

use std::path::Path;
use std::sync::Arc;

pub use accept::EmbeddedAccept;
pub use cache::MemoryCache;
pub use checkpoint::EmbeddedCheckpoints;
pub use db::{Db, DbError};
pub use devices::EmbeddedDevices;
pub use keys::EmbeddedKeys;
pub use queue::{EmbeddedQueue, QueueLayout};
pub use retry::EmbeddedRetry;
pub use store::EmbeddedStore;
pub use suppression::EmbeddedSuppressions;
pub use webhooks::EmbeddedWebhooks;

/// The three embedded backends over one database file.
pub struct Embedded {
    pub queue: Arc<EmbeddedQueue>,
    pub store: Arc<EmbeddedStore>,
    pub retry: Arc<EmbeddedRetry>,
    pub devices: Arc<EmbeddedDevices>,
    pub suppressions: Arc<EmbeddedSuppressions>,
    pub checkpoints: Arc<EmbeddedCheckpoints>,
    pub webhooks: Arc<EmbeddedWebhooks>,
    pub webhook_retry: Arc<EmbeddedRetry>,
    pub keys: Arc<EmbeddedKeys>,
}

impl Embedded {
    /// Opens (creating if needed) `dir/store.redb`, which holds the queue
    /// and the store: one writer commits a message's record and its queue
    /// entry together. Fails if another process has it open.
    pub fn open(dir: &Path, layout: QueueLayout) -> Result<Self, DbError> {
        let EmbeddedStores {
            db,
            store,
            retry,
            devices,
            suppressions,
            checkpoints,
            webhooks,
            webhook_retry,
            keys,
        } = open_stores(dir)?;
        Ok(Self {
            queue: Arc::new(EmbeddedQueue::open(db, layout)?),
            store,
            retry,
            devices,
            suppressions,
            checkpoints,
            webhooks,
            webhook_retry,
            keys,
        })
    }
}

/// The store, retry timers and device registry over `dir/store.redb`.
pub struct EmbeddedStores {
    /// The database they share; a queue opened on it
    /// ([`EmbeddedQueue::open`]) commits with them.
    pub db: Db,
    pub store: Arc<EmbeddedStore>,
    pub retry: Arc<EmbeddedRetry>,
    pub devices: Arc<EmbeddedDevices>,
    pub suppressions: Arc<EmbeddedSuppressions>,
    pub checkpoints: Arc<EmbeddedCheckpoints>,
    pub webhooks: Arc<EmbeddedWebhooks>,
    /// The timers of webhook deliveries.
    pub webhook_retry: Arc<EmbeddedRetry>,
    pub keys: Arc<EmbeddedKeys>,
}

fn create_dir(dir: &Path) -> Result<(), DbError> {
    std::fs::create_dir_all(dir).map_err(|e| DbError::Open(format!("{}: {e}", dir.display())))
}

/// Opens only the queue (in `dir/store.redb`), for a process whose other
/// ports are elsewhere.
pub fn open_queue(dir: &Path, layout: QueueLayout) -> Result<Arc<EmbeddedQueue>, DbError> {
    Ok(Arc::new(EmbeddedQueue::open(open_db(dir)?, layout)?))
}

/// Opens `dir/store.redb`: the store, retry timers, devices and the rest;
/// [`EmbeddedStores::db`] takes the queue as well.
pub fn open_stores(dir: &Path) -> Result<EmbeddedStores, DbError> {
    let db = open_db(dir)?;
    Ok(EmbeddedStores {
        store: Arc::new(EmbeddedStore::open(db.clone())?),
        retry: Arc::new(EmbeddedRetry::open(db.clone())?),
        devices: Arc::new(EmbeddedDevices::open(db.clone())?),
        suppressions: Arc::new(EmbeddedSuppressions::open(db.clone())?),
        checkpoints: Arc::new(EmbeddedCheckpoints::open(db.clone())?),
        webhooks: Arc::new(EmbeddedWebhooks::open(db.clone())?),
        keys: Arc::new(EmbeddedKeys::open(db.clone())?),
        webhook_retry: Arc::new(EmbeddedRetry::open_webhooks(db.clone())?),
        db,
    })
}

/// `dir/store.redb`, after moving in what a `queue.redb` of an earlier
/// version holds.
fn open_db(dir: &Path) -> Result<Db, DbError> {
    create_dir(dir)?;
    let db = Db::open(&dir.join("store.redb"))?;
    queue::merge_old_queue(&db, &dir.join("queue.redb"))?;
    Ok(db)
}
