//! The suppression list, checkpoints and API keys in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::ports::StoreError;

/// A suppression list in memory.
#[derive(Default)]
pub struct MemorySuppressions {
    entries: Mutex<HashMap<(crate::Channel, String), crate::ports::Suppression>>,
}

#[async_trait]
impl crate::ports::SuppressionList for MemorySuppressions {
    async fn add(&self, suppression: &crate::ports::Suppression) -> Result<bool, StoreError> {
        let mut entries = lock(&self.entries);
        let key = (suppression.channel, suppression.recipient.clone());
        if entries.contains_key(&key) {
            return Ok(false);
        }
        entries.insert(key, suppression.clone());
        Ok(true)
    }

    async fn get(
        &self,
        channel: crate::Channel,
        recipient: &str,
    ) -> Result<Option<crate::ports::Suppression>, StoreError> {
        Ok(lock(&self.entries)
            .get(&(channel, recipient.to_owned()))
            .cloned())
    }

    async fn remove(&self, channel: crate::Channel, recipient: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.entries)
            .remove(&(channel, recipient.to_owned()))
            .is_some())
    }

    async fn list(
        &self,
        channel: Option<crate::Channel>,
        limit: usize,
    ) -> Result<Vec<crate::ports::Suppression>, StoreError> {
        let mut out: Vec<_> = lock(&self.entries)
            .values()
            .filter(|s| channel.is_none_or(|c| c == s.channel))
            .cloned()
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.at));
        out.truncate(limit);
        Ok(out)
    }
}

/// Checkpoints in memory.
#[derive(Default)]
pub struct MemoryCheckpoints {
    values: Mutex<HashMap<String, serde_json::Value>>,
}

#[async_trait]
impl crate::ports::Checkpoints for MemoryCheckpoints {
    async fn load(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(lock(&self.values).get(name).cloned())
    }

    async fn save(&self, name: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        lock(&self.values).insert(name.to_owned(), value.clone());
        Ok(())
    }
}

/// API keys in memory.
#[derive(Default)]
pub struct MemoryKeys {
    keys: Mutex<Vec<crate::ports::ApiKey>>,
}

#[async_trait]
impl crate::ports::ApiKeys for MemoryKeys {
    async fn create(&self, key: &crate::ports::ApiKey) -> Result<(), StoreError> {
        lock(&self.keys).push(key.clone());
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<crate::ports::ApiKey>, StoreError> {
        Ok(lock(&self.keys).iter().find(|k| k.id == id).cloned())
    }

    async fn list(&self) -> Result<Vec<crate::ports::ApiKey>, StoreError> {
        Ok(lock(&self.keys).clone())
    }

    async fn revoke(&self, id: &str, at: crate::Timestamp) -> Result<bool, StoreError> {
        let mut keys = lock(&self.keys);
        match keys.iter_mut().find(|k| k.id == id) {
            Some(key) if key.revoked_at.is_none() => {
                key.revoked_at = Some(at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
