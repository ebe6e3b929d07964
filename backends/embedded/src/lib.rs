//! Embedded backends: the queue, store and retry scheduler of a single-process
//! MDC, durable in one [`redb`] database file of the data directory.
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

/// The embedded backends over one database file.
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
    /// Opens (creating if needed) `dir/store.redb` with the queue and the
    /// stores in it. Fails if another process has it open.
    pub fn open(dir: &Path, layout: QueueLayout) -> Result<Self, DbError> {
        let file = open_file(dir)?;
        let queue = queue_in(&file, dir, layout)?;
        let EmbeddedStores {
            store,
            retry,
            devices,
            suppressions,
            checkpoints,
            webhooks,
            webhook_retry,
            keys,
        } = stores_in(&file)?;
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

/// The store, retry timers and device registry of `store.redb`.
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

/// The file of the embedded backends in the data directory: the queue,
/// messages, retry timers, devices, suppressions, webhooks and API keys.
/// One file with one writer, so the queue's writes and the store's share
/// commits: a submit's record and its queue entry usually go into the same
/// one, and a message takes fewer commits and `fdatasync`s than with two
/// files (docs/benchmarks.md, "One file for the queue and the store").
pub const STORE_FILE: &str = "store.redb";
/// The queue's own file in earlier versions. When the queue opens, the
/// records left in it move into [`STORE_FILE`] and the file is removed.
pub const EARLIER_QUEUE_FILE: &str = "queue.redb";

fn create_dir(dir: &Path) -> Result<(), DbError> {
    std::fs::create_dir_all(dir).map_err(|e| DbError::Open(format!("{}: {e}", dir.display())))
}

/// Opens (creating it and `dir` if needed) `dir/store.redb`, for
/// [`queue_in`] and [`stores_in`]. Fails if another process has it open.
pub fn open_file(dir: &Path) -> Result<Db, DbError> {
    create_dir(dir)?;
    Db::open(&dir.join(STORE_FILE))
}

/// The queue in `file`, the data file of `dir` ([`open_file`]), with the
/// records of an earlier version's `dir/queue.redb` moved into it first.
pub fn queue_in(file: &Db, dir: &Path, layout: QueueLayout) -> Result<Arc<EmbeddedQueue>, DbError> {
    queue::earlier_file::move_records(file, &dir.join(EARLIER_QUEUE_FILE))?;
    Ok(Arc::new(EmbeddedQueue::open(file.clone(), layout)?))
}

/// Opens only the queue of `dir/store.redb`.
pub fn open_queue(dir: &Path, layout: QueueLayout) -> Result<Arc<EmbeddedQueue>, DbError> {
    queue_in(&open_file(dir)?, dir, layout)
}

/// The store, retry timers and devices in `file` ([`open_file`]).
pub fn stores_in(file: &Db) -> Result<EmbeddedStores, DbError> {
    Ok(EmbeddedStores {
        store: Arc::new(EmbeddedStore::open(file.clone())?),
        retry: Arc::new(EmbeddedRetry::open(file.clone())?),
        devices: Arc::new(EmbeddedDevices::open(file.clone())?),
        suppressions: Arc::new(EmbeddedSuppressions::open(file.clone())?),
        checkpoints: Arc::new(EmbeddedCheckpoints::open(file.clone())?),
        webhooks: Arc::new(EmbeddedWebhooks::open(file.clone())?),
        keys: Arc::new(EmbeddedKeys::open(file.clone())?),
        webhook_retry: Arc::new(EmbeddedRetry::open_webhooks(file.clone())?),
    })
}

/// Opens only the stores of `dir/store.redb`: the store, retry timers and
/// devices.
pub fn open_stores(dir: &Path) -> Result<EmbeddedStores, DbError> {
    stores_in(&open_file(dir)?)
}
