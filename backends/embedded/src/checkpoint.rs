use async_trait::async_trait;
use mdc_core::ports::{Checkpoints, StoreError};
use redb::TableDefinition;

use crate::db::{Db, DbError};

/// name → value (JSON).
const CHECKPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("checkpoints");

/// Intake checkpoints on the embedded database (the store's file).
pub struct EmbeddedCheckpoints {
    db: Db,
}

impl EmbeddedCheckpoints {
    pub fn open(db: Db) -> Result<Self, DbError> {
        db.write_now(|txn| {
            txn.open_table(CHECKPOINTS)?;
            Ok(())
        })?;
        Ok(Self { db })
    }
}

#[async_trait]
impl Checkpoints for EmbeddedCheckpoints {
    async fn load(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let txn = self.db.read()?;
        let table = txn.open_table(CHECKPOINTS).map_err(DbError::from)?;
        let found = table.get(name).map_err(DbError::from)?;
        Ok(match found {
            Some(bytes) => Some(serde_json::from_slice(bytes.value()).map_err(DbError::from)?),
            None => None,
        })
    }

    async fn save(&self, name: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        let (name, bytes) = (
            name.to_owned(),
            serde_json::to_vec(value).map_err(DbError::from)?,
        );
        Ok(self
            .db
            .write(true, move |txn| {
                txn.open_table(CHECKPOINTS)?
                    .insert(name.as_str(), bytes.as_slice())?;
                Ok(())
            })
            .await?)
    }
}
