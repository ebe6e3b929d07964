use async_trait::async_trait;
use mdc_core::ports::{StoreError, Suppression, SuppressionList};
use mdc_core::Channel;
use redb::{ReadableTable, TableDefinition};

use crate::db::{Db, DbError};

/// `channel:recipient` → entry (JSON).
const SUPPRESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("suppressions");

/// The suppression list on the embedded database (the store's file).
pub struct EmbeddedSuppressions {
    db: Db,
}

fn key(channel: Channel, recipient: &str) -> String {
    [channel.as_str(), ":", recipient].concat()
}

impl EmbeddedSuppressions {
    pub fn open(db: Db) -> Result<Self, DbError> {
        db.write_now(|txn| {
            txn.open_table(SUPPRESSIONS)?;
            Ok(())
        })?;
        Ok(Self { db })
    }
}

#[async_trait]
impl SuppressionList for EmbeddedSuppressions {
    async fn add(&self, suppression: &Suppression) -> Result<bool, StoreError> {
        let suppression = suppression.clone();
        Ok(self
            .db
            .write(true, move |txn| {
                let mut table = txn.open_table(SUPPRESSIONS)?;
                let key = key(suppression.channel, &suppression.recipient);
                if table.get(key.as_str())?.is_some() {
                    return Ok(false);
                }
                table.insert(key.as_str(), serde_json::to_vec(&suppression)?.as_slice())?;
                Ok(true)
            })
            .await?)
    }

    async fn get(
        &self,
        channel: Channel,
        recipient: &str,
    ) -> Result<Option<Suppression>, StoreError> {
        let txn = self.db.read()?;
        let table = txn.open_table(SUPPRESSIONS).map_err(DbError::from)?;
        let found = table
            .get(key(channel, recipient).as_str())
            .map_err(DbError::from)?;
        Ok(match found {
            Some(bytes) => Some(serde_json::from_slice(bytes.value()).map_err(DbError::from)?),
            None => None,
        })
    }

    async fn remove(&self, channel: Channel, recipient: &str) -> Result<bool, StoreError> {
        let key = key(channel, recipient);
        Ok(self
            .db
            .write(true, move |txn| {
                let mut table = txn.open_table(SUPPRESSIONS)?;
                let removed = table.remove(key.as_str())?.is_some();
                Ok(removed)
            })
            .await?)
    }

    async fn list(
        &self,
        channel: Option<Channel>,
        limit: usize,
    ) -> Result<Vec<Suppression>, StoreError> {
        let txn = self.db.read()?;
        let table = txn.open_table(SUPPRESSIONS).map_err(DbError::from)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(DbError::from)? {
            let (_, value) = entry.map_err(DbError::from)?;
            let suppression: Suppression =
                serde_json::from_slice(value.value()).map_err(DbError::from)?;
            if channel.is_none_or(|c| c == suppression.channel) {
                out.push(suppression);
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.at));
        out.truncate(limit);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries are stored under this key; a store written by an earlier
    /// version must still be found.
    #[test]
    fn entries_are_keyed_by_channel_and_recipient() {
        assert_eq!(key(Channel::Sms, "+14155550100"), "sms:+14155550100");
        assert_eq!(key(Channel::Email, "a@example.com"), "email:a@example.com");
    }
}
