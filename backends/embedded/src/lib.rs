//! Embedded backends: the queue, store and retry scheduler of a single-process
//! MDC, durable in one data directory (a [`redb`] database).
//!
//! All writes go through one group-committing writer ([`Db`]): concurrent
//! writes share a transaction and an fsync, so durability costs little per
//! message.

mod cache;
mod checkpoint;
mod compact;
mod db;
mod devices;
mod fleet;
mod keys;
mod queue;
mod retry;
mod store;
mod suppression;
mod webhooks;

use std::path::Path;
use std::sync::Arc;

pub use cache::{MemoryCache, NoCache};
pub use checkpoint::EmbeddedCheckpoints;
pub use compact::{compact_file, CompactError, Compacted};
pub use db::{on_writer_idle, Db, DbError, CACHE_BYTES, SMALL_CACHE_BYTES};
pub use devices::EmbeddedDevices;
pub use fleet::LocalFleet;
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
    /// Opens (creating if needed) `dir/queue.redb` and `dir/store.redb`: two
    /// files, so queue and store writes commit in parallel. Fails if another
    /// process has them open.
    pub fn open(dir: &Path, layout: QueueLayout) -> Result<Self, DbError> {
        let queue = open_queue(dir, layout)?;
        let EmbeddedStores {
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
            queue,
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

/// The store's file in the data directory: messages, retry timers,
/// devices, suppressions, webhooks and API keys.
pub const STORE_FILE: &str = "store.redb";
/// The queue's file in the data directory.
pub const QUEUE_FILE: &str = "queue.redb";

fn create_dir(dir: &Path) -> Result<(), DbError> {
    std::fs::create_dir_all(dir).map_err(|e| DbError::Open(format!("{}: {e}", dir.display())))
}

/// Opens only the queue, `dir/queue.redb`.
pub fn open_queue(dir: &Path, layout: QueueLayout) -> Result<Arc<EmbeddedQueue>, DbError> {
    create_dir(dir)?;
    Ok(Arc::new(EmbeddedQueue::open(
        Db::with_cache(&dir.join(QUEUE_FILE), db::SMALL_CACHE_BYTES)?,
        layout,
    )?))
}

/// Opens only `dir/store.redb`: the store, retry timers and devices.
pub fn open_stores(dir: &Path) -> Result<EmbeddedStores, DbError> {
    create_dir(dir)?;
    let store = Db::open(&dir.join(STORE_FILE))?;
    Ok(EmbeddedStores {
        store: Arc::new(EmbeddedStore::open(store.clone())?),
        retry: Arc::new(EmbeddedRetry::open(store.clone())?),
        devices: Arc::new(EmbeddedDevices::open(store.clone())?),
        suppressions: Arc::new(EmbeddedSuppressions::open(store.clone())?),
        checkpoints: Arc::new(EmbeddedCheckpoints::open(store.clone())?),
        webhooks: Arc::new(EmbeddedWebhooks::open(store.clone())?),
        keys: Arc::new(EmbeddedKeys::open(store.clone())?),
        webhook_retry: Arc::new(EmbeddedRetry::open_webhooks(store)?),
    })
}
