use crate::{other, unavailable};
use async_trait::async_trait;
use mdc_core::ports::{Checkpoints, StoreError};
use mongodb::bson::{self, doc, Document};
use mongodb::{Collection, Database};

/// Intake checkpoints on MongoDB: one document per name (`_id`).
pub struct MongoCheckpoints {
    entries: Collection<Document>,
}

impl MongoCheckpoints {
    pub fn open(database: &Database, prefix: &str) -> Self {
        Self {
            entries: database.collection::<Document>(&format!("{prefix}checkpoints")),
        }
    }
}

#[async_trait]
impl Checkpoints for MongoCheckpoints {
    async fn load(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let Some(document) = self
            .entries
            .find_one(doc! { "_id": name })
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        // Kept as a JSON string: BSON would turn large integers and
        // arbitrary keys into something else.
        let text = document.get_str("value").map_err(other)?;
        Ok(Some(serde_json::from_str(text).map_err(other)?))
    }

    async fn save(&self, name: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        self.entries
            .replace_one(
                doc! { "_id": name },
                doc! { "_id": name, "value": value.to_string(), "at": bson::DateTime::now() },
            )
            .upsert(true)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
