use std::time::{Duration, Instant};

use async_trait::async_trait;
use mdc_core::ports::{CachedMessage, MessageCache, StoreError};
use moka::policy::{EvictionPolicy, Expiry};
use moka::sync::Cache;

/// Entries kept at most; past it, the least recently used go.
const CAPACITY: u64 = 100_000;

type Key = (String, String);

/// The message cache of a single process: in memory, since the embedded
/// store's own index answers the same question after a restart. Each
/// entry lives for the time it was put with, or until the cache is full
/// and it is the least recently used.
pub struct MemoryCache {
    entries: Cache<Key, (CachedMessage, Duration)>,
}

/// Each entry expires after the time it was put with.
struct PutTtl;

impl Expiry<Key, (CachedMessage, Duration)> for PutTtl {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &(CachedMessage, Duration),
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.1)
    }

    fn expire_after_update(
        &self,
        _key: &Key,
        value: &(CachedMessage, Duration),
        _updated_at: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.1)
    }
}

impl MemoryCache {
    fn with_capacity(capacity: u64) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(capacity)
                // Every entry is put once and read about once: least
                // recently used, not admission by frequency (which would
                // turn new entries away once full).
                .eviction_policy(EvictionPolicy::lru())
                .expire_after(PutTtl)
                .build(),
        }
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

#[async_trait]
impl MessageCache for MemoryCache {
    async fn put(
        &self,
        provider: &str,
        provider_message_id: &str,
        entry: CachedMessage,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.entries.insert(
            (provider.to_owned(), provider_message_id.to_owned()),
            (entry, ttl),
        );
        Ok(())
    }

    async fn get(
        &self,
        provider: &str,
        provider_message_id: &str,
    ) -> Result<Option<CachedMessage>, StoreError> {
        Ok(self
            .entries
            .get(&(provider.to_owned(), provider_message_id.to_owned()))
            .map(|(entry, _)| entry))
    }
}

/// No message cache, for the embedded store: its index of vendor ids is a
/// local B-tree read, as quick as a map in memory, and a map would hold the
/// ids of every message sent in the last three days (up to its capacity)
/// in the server's memory. Every lookup misses and the store answers.
#[derive(Debug, Default)]
pub struct NoCache;

#[async_trait]
impl MessageCache for NoCache {
    async fn put(
        &self,
        _provider: &str,
        _provider_message_id: &str,
        _entry: CachedMessage,
        _ttl: Duration,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn get(
        &self,
        _provider: &str,
        _provider_message_id: &str,
    ) -> Result<Option<CachedMessage>, StoreError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdc_core::{Channel, MessageId};

    /// Full, the cache keeps the newest entries and the ones still read.
    #[tokio::test]
    async fn a_full_cache_drops_the_least_recently_used() {
        let cache = MemoryCache::with_capacity(100);
        let ttl = Duration::from_secs(60);
        let entry = || CachedMessage {
            message_id: MessageId::generate(),
            channel: Channel::Sms,
        };
        let read = entry();
        cache
            .put("p", "read", read.clone(), ttl)
            .await
            .expect("put");
        for i in 0..1_000 {
            cache
                .put("p", &i.to_string(), entry(), ttl)
                .await
                .expect("put");
            if i % 10 == 0 {
                assert!(cache.get("p", "read").await.expect("get").is_some());
            }
        }
        cache.entries.run_pending_tasks();
        assert!(cache.entries.entry_count() <= 100);
        assert_eq!(cache.get("p", "read").await.expect("get"), Some(read));
        assert!(
            cache.get("p", "999").await.expect("get").is_some(),
            "the newest stays"
        );
        assert!(
            cache.get("p", "0").await.expect("get").is_none(),
            "the oldest went"
        );
    }
}
