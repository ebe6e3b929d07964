use async_trait::async_trait;
use mdc_core::ports::{ApiKey, ApiKeys, StoreError};
use mdc_core::Timestamp;
use redb::{ReadableTable, TableDefinition};

use crate::db::{Db, DbError};

/// key id → key (JSON). Ids are ULIDs, so the table is in creation order.
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");

/// API keys on the embedded database (the store's file).
pub struct EmbeddedKeys {
    db: Db,
}

impl EmbeddedKeys {
    pub fn open(db: Db) -> Result<Self, DbError> {
        db.write_now(|txn| {
            txn.open_table(KEYS)?;
            Ok(())
        })?;
        Ok(Self { db })
    }
}

#[async_trait]
impl ApiKeys for EmbeddedKeys {
    async fn create(&self, key: &ApiKey) -> Result<(), StoreError> {
        let (id, bytes) = (
            key.id.clone(),
            serde_json::to_vec(key).map_err(DbError::from)?,
        );
        Ok(self
            .db
            .write(true, move |txn| {
                txn.open_table(KEYS)?
                    .insert(id.as_str(), bytes.as_slice())?;
                Ok(())
            })
            .await?)
    }

    async fn get(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let txn = self.db.read()?;
        let table = txn.open_table(KEYS).map_err(DbError::from)?;
        let found = table.get(id).map_err(DbError::from)?;
        Ok(match found {
            Some(bytes) => Some(serde_json::from_slice(bytes.value()).map_err(DbError::from)?),
            None => None,
        })
    }

    async fn list(&self) -> Result<Vec<ApiKey>, StoreError> {
        let txn = self.db.read()?;
        let table = txn.open_table(KEYS).map_err(DbError::from)?;
        let mut keys: Vec<ApiKey> = Vec::new();
        for entry in table.iter().map_err(DbError::from)? {
            let (_, value) = entry.map_err(DbError::from)?;
            keys.push(serde_json::from_slice(value.value()).map_err(DbError::from)?);
        }
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    async fn revoke(&self, id: &str, at: Timestamp) -> Result<bool, StoreError> {
        let id = id.to_owned();
        Ok(self
            .db
            .write(true, move |txn| {
                let mut table = txn.open_table(KEYS)?;
                let mut key: ApiKey = match table.get(id.as_str())? {
                    Some(bytes) => serde_json::from_slice(bytes.value())?,
                    None => return Ok(false),
                };
                if key.revoked_at.is_some() {
                    return Ok(false);
                }
                key.revoked_at = Some(at);
                table.insert(id.as_str(), serde_json::to_vec(&key)?.as_slice())?;
                Ok(true)
            })
            .await?)
    }
}
