//! Which implementation backs each port, chosen independently in config:
//!
//! ```toml
//! [backends.store]
//! kind = "mongodb"              # or "embedded" (the default)
//! url = "mongodb://db1,db2,db3/?replicaSet=rs0"
//! database = "mdc"
//!
//! [backends.retry]
//! kind = "redis"                # or "embedded"
//! url = "redis://cache:6379"
//!
//! [backends.queue]
//! kind = "kafka"                # or "embedded"
//! brokers = "kafka1:9092,kafka2:9092"
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mdc_core::ports::{
    ApiKeys, Checkpoints, DeviceRegistry, Fleet, MessageCache, Queue, QueueLayout, RetryScheduler,
    Store, SuppressionList, Webhooks,
};
use mdc_core::InvalidSetting;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Backends {
    pub queue: QueueBackend,
    pub store: StoreBackend,
    pub retry: RetryBackend,
    pub cache: CacheBackend,
}

/// The priority topics and the responses topic.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueueBackend {
    #[default]
    Embedded,
    Kafka(mdc_kafka::KafkaConfig),
}

impl Backends {
    /// Whether every port that roles share lives outside this process, so
    /// roles can run as separate processes.
    pub fn shared(&self) -> Result<(), InvalidSetting> {
        let mut local = Vec::new();
        if matches!(self.queue, QueueBackend::Embedded) {
            local.push("backends.queue");
        }
        if matches!(self.store, StoreBackend::Embedded) {
            local.push("backends.store");
        }
        if matches!(self.retry, RetryBackend::Embedded) {
            local.push("backends.retry");
        }
        if local.is_empty() {
            Ok(())
        } else {
            Err(InvalidSetting::new(
                local.join(", "),
                format!(
                    "{} embedded, but running only some roles needs backends other processes can reach",
                    if local.len() == 1 { "is" } else { "are" }
                ),
            ))
        }
    }

    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if let QueueBackend::Kafka(kafka) = &self.queue {
            kafka.validate()?;
        }
        if let RetryBackend::Redis { sweep_interval, .. } = &self.retry {
            mdc_core::setting::duration_within(
                "backends.retry.sweep_interval",
                *sweep_interval,
                Duration::from_millis(10),
                Duration::from_secs(60),
            )?;
        }
        Ok(())
    }
}

/// Vendor message id → message, for reports that carry only the vendor's id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CacheBackend {
    /// In this process only; the store's index answers after a restart.
    /// With the embedded store nothing is cached: its index answers always.
    #[default]
    Memory,
    Redis {
        url: String,
        #[serde(default = "default_prefix")]
        prefix: String,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoreBackend {
    #[default]
    Embedded,
    Mongodb {
        url: String,
        #[serde(default = "default_database")]
        database: String,
        /// Prefix of the collection names.
        #[serde(default)]
        prefix: String,
        /// Write concern `majority` (keep on in production).
        #[serde(default = "yes")]
        majority_writes: bool,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RetryBackend {
    #[default]
    Embedded,
    Redis {
        url: String,
        #[serde(default = "default_prefix")]
        prefix: String,
        /// Sweep of the due set, the backstop of expired events.
        #[serde(default = "default_sweep", with = "humantime_serde")]
        sweep_interval: Duration,
    },
}

fn default_database() -> String {
    "mdc".into()
}

fn default_prefix() -> String {
    "mdc".into()
}

fn default_sweep() -> Duration {
    Duration::from_millis(500)
}

fn yes() -> bool {
    true
}

/// The connected backends.
pub struct Connected {
    pub queue: Arc<dyn Queue>,
    pub cache: Arc<dyn MessageCache>,
    pub store: Arc<dyn Store>,
    /// Devices live beside the messages.
    pub devices: Arc<dyn DeviceRegistry>,
    /// So does the suppression list.
    pub suppressions: Arc<dyn SuppressionList>,
    /// And the polling intakes' checkpoints.
    pub checkpoints: Arc<dyn Checkpoints>,
    /// And the webhook endpoints.
    pub webhooks: Arc<dyn Webhooks>,
    /// Webhook delivery timers, on the retry backend.
    pub webhook_retry: Arc<dyn RetryScheduler>,
    pub retry: Arc<dyn RetryScheduler>,
    /// API keys, beside the messages.
    pub keys: Arc<dyn ApiKeys>,
    /// The dispatchers alive, who share the routes' rate limits: on the
    /// retry backend's Redis, else the cache's, else in this process.
    pub fleet: Arc<dyn Fleet>,
}

/// What lives in the store's database.
struct StorePorts {
    store: Arc<dyn Store>,
    devices: Arc<dyn DeviceRegistry>,
    suppressions: Arc<dyn SuppressionList>,
    checkpoints: Arc<dyn Checkpoints>,
    webhooks: Arc<dyn Webhooks>,
    keys: Arc<dyn ApiKeys>,
}

/// Connects every configured backend. The embedded file in `data_dir`,
/// `store.redb`, is opened when a port is configured to use it: the queue,
/// the store or retry timing. `records_ttl` is the retention of records
/// (`retention.records`), for MongoDB's TTL index.
pub async fn connect(
    backends: &Backends,
    data_dir: &Path,
    layout: QueueLayout,
    records_ttl: Option<std::time::Duration>,
) -> anyhow::Result<Connected> {
    let opening = || format!("opening the data directory {}", data_dir.display());
    let local = matches!(backends.store, StoreBackend::Embedded)
        || matches!(backends.retry, RetryBackend::Embedded);
    let file = if local || matches!(backends.queue, QueueBackend::Embedded) {
        Some(mdc_embedded::open_file(data_dir).with_context(opening)?)
    } else {
        None
    };
    let earlier_queue = data_dir.join(mdc_embedded::EARLIER_QUEUE_FILE);
    if !matches!(backends.queue, QueueBackend::Embedded) && earlier_queue.is_file() {
        tracing::warn!(
            file = %earlier_queue.display(),
            "An embedded queue's file of an earlier version is left in the data directory; its records move into store.redb only with the embedded queue configured: start once with it to move them, or remove the file if nothing it holds is wanted"
        );
    }
    let queue: Arc<dyn Queue> = match (&backends.queue, &file) {
        (QueueBackend::Embedded, Some(file)) => {
            mdc_embedded::queue_in(file, data_dir, layout.clone()).with_context(opening)?
        }
        (QueueBackend::Embedded, None) => {
            anyhow::bail!("backends.queue: embedded queue not opened")
        }
        (QueueBackend::Kafka(config), _) => Arc::new(
            mdc_kafka::KafkaQueue::connect(config.clone(), layout)
                .await
                .context("backends.queue: cannot use Kafka")?,
        ),
    };
    let embedded = match (local, &file) {
        (true, Some(file)) => Some(mdc_embedded::stores_in(file).with_context(opening)?),
        _ => None,
    };
    let StorePorts {
        store,
        devices,
        suppressions,
        checkpoints,
        webhooks,
        keys,
    } = match (&backends.store, &embedded) {
        (StoreBackend::Embedded, Some(embedded)) => StorePorts {
            store: embedded.store.clone(),
            devices: embedded.devices.clone(),
            suppressions: embedded.suppressions.clone(),
            checkpoints: embedded.checkpoints.clone(),
            webhooks: embedded.webhooks.clone(),
            keys: embedded.keys.clone(),
        },
        (StoreBackend::Embedded, None) => {
            anyhow::bail!("backends.store: embedded store not opened")
        }
        (
            StoreBackend::Mongodb {
                url,
                database,
                prefix,
                majority_writes,
            },
            _,
        ) => {
            let store = connect_mongo(url, database, prefix, *majority_writes, records_ttl).await?;
            let devices = store
                .devices()
                .await
                .context("backends.store: cannot use MongoDB")?;
            let suppressions = store
                .suppressions()
                .await
                .context("backends.store: cannot use MongoDB")?;
            let webhooks = store
                .webhooks()
                .await
                .context("backends.store: cannot use MongoDB")?;
            StorePorts {
                checkpoints: Arc::new(store.checkpoints()),
                keys: Arc::new(store.keys()),
                webhooks: Arc::new(webhooks),
                store: Arc::new(store),
                devices: Arc::new(devices),
                suppressions: Arc::new(suppressions),
            }
        }
    };
    let (retry, webhook_retry): (Arc<dyn RetryScheduler>, Arc<dyn RetryScheduler>) =
        match (&backends.retry, &embedded) {
            (RetryBackend::Embedded, Some(embedded)) => {
                (embedded.retry.clone(), embedded.webhook_retry.clone())
            }
            (RetryBackend::Embedded, None) => {
                anyhow::bail!("backends.retry: embedded timers not opened")
            }
            (
                RetryBackend::Redis {
                    url,
                    prefix,
                    sweep_interval,
                },
                _,
            ) => {
                let mut config = mdc_redis::RedisRetryConfig::new(url, prefix);
                config.sweep_interval = *sweep_interval;
                let mut webhooks = config.clone();
                webhooks.prefix = format!("{prefix}:webhooks");
                (
                    Arc::new(
                        mdc_redis::RedisRetry::connect(config)
                            .await
                            .context("backends.retry: cannot use Redis")?,
                    ),
                    Arc::new(
                        mdc_redis::RedisRetry::connect(webhooks)
                            .await
                            .context("backends.retry: cannot use Redis")?,
                    ),
                )
            }
        };
    let cache: Arc<dyn MessageCache> = match &backends.cache {
        // The embedded store's own index is as quick as a map in memory.
        CacheBackend::Memory if matches!(backends.store, StoreBackend::Embedded) => {
            Arc::new(mdc_embedded::NoCache)
        }
        CacheBackend::Memory => Arc::new(mdc_embedded::MemoryCache::default()),
        CacheBackend::Redis { url, prefix } => Arc::new(
            mdc_redis::RedisCache::connect(url, prefix)
                .await
                .context("backends.cache: cannot use Redis")?,
        ),
    };
    let fleet: Arc<dyn Fleet> = match (&backends.retry, &backends.cache) {
        (RetryBackend::Redis { url, prefix, .. }, _) => Arc::new(
            mdc_redis::RedisFleet::connect(url, prefix)
                .await
                .context("backends.retry: cannot use Redis")?,
        ),
        (_, CacheBackend::Redis { url, prefix }) => Arc::new(
            mdc_redis::RedisFleet::connect(url, prefix)
                .await
                .context("backends.cache: cannot use Redis")?,
        ),
        _ => Arc::new(mdc_embedded::LocalFleet::default()),
    };
    Ok(Connected {
        fleet,
        queue,
        cache,
        store,
        devices,
        suppressions,
        checkpoints,
        webhooks,
        webhook_retry,
        retry,
        keys,
    })
}

async fn connect_mongo(
    url: &str,
    database: &str,
    prefix: &str,
    majority_writes: bool,
    records_ttl: Option<std::time::Duration>,
) -> anyhow::Result<mdc_mongodb::MongoStore> {
    let config = mdc_mongodb::MongoConfig {
        url: url.to_owned(),
        database: database.to_owned(),
        prefix: prefix.to_owned(),
        majority_writes,
        records_ttl,
    };
    mdc_mongodb::MongoStore::connect(&config)
        .await
        .context("backends.store: cannot use MongoDB")
}

/// Only the API keys, for `mdc keys --direct`. An embedded store is locked
/// by a running server: then the error says so.
pub async fn connect_keys(
    backends: &Backends,
    data_dir: &Path,
    records_ttl: Option<std::time::Duration>,
) -> anyhow::Result<Arc<dyn ApiKeys>> {
    Ok(match &backends.store {
        StoreBackend::Embedded => {
            let stores = mdc_embedded::open_stores(data_dir).with_context(|| {
                format!(
                    "opening {} (is mdc serve running on it? Stop it, or create the key through it: mdc keys create --api-key <admin key>)",
                    data_dir.display()
                )
            })?;
            stores.keys
        }
        StoreBackend::Mongodb {
            url,
            database,
            prefix,
            majority_writes,
        } => {
            let store = connect_mongo(url, database, prefix, *majority_writes, records_ttl).await?;
            Arc::new(store.keys())
        }
    })
}

#[cfg(test)]
mod tests {
    use mdc_core::ports::CachedMessage;
    use mdc_core::{Channel, MessageId};

    use super::*;

    /// With the embedded store nothing is cached in memory: a vendor id
    /// put in the cache is not kept (the store's index answers instead).
    #[tokio::test]
    async fn the_embedded_store_has_no_cache_in_front() {
        let dir = tempfile::tempdir().expect("tempdir");
        let connected = connect(
            &Backends::default(),
            dir.path(),
            QueueLayout::default(),
            None,
        )
        .await
        .expect("connects");
        let entry = CachedMessage {
            message_id: MessageId::generate(),
            channel: Channel::Sms,
        };
        connected
            .cache
            .put("sim-sms", "vendor-1", entry, Duration::from_secs(60))
            .await
            .expect("put");
        assert!(connected
            .cache
            .get("sim-sms", "vendor-1")
            .await
            .expect("get")
            .is_none());
    }
}
