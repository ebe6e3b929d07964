use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mdc_core::ports::{CachedMessage, MessageCache, StoreError};

/// Entries kept at most; past it, expired entries are dropped, then the
/// oldest half.
const CAPACITY: usize = 100_000;

/// The message cache of a single process: in memory, since the embedded
/// store's own index answers the same question after a restart.
#[derive(Default)]
pub struct MemoryCache {
    entries: Mutex<HashMap<(String, String), (CachedMessage, Instant)>>,
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
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if entries.len() >= CAPACITY {
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= CAPACITY {
                let mut ages: Vec<Instant> = entries.values().map(|(_, until)| *until).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                entries.retain(|_, (_, until)| *until > cut);
            }
        }
        entries.insert(
            (provider.to_owned(), provider_message_id.to_owned()),
            (entry, now + ttl),
        );
        Ok(())
    }

    async fn get(
        &self,
        provider: &str,
        provider_message_id: &str,
    ) -> Result<Option<CachedMessage>, StoreError> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Ok(entries
            .get(&(provider.to_owned(), provider_message_id.to_owned()))
            .filter(|(_, until)| *until > Instant::now())
            .map(|(entry, _)| entry.clone()))
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
