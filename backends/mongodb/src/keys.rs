use crate::{other, unavailable};
use async_trait::async_trait;
use futures::TryStreamExt;
use mdc_core::ports::{ApiKey, ApiKeys, StoreError};
use mdc_core::Timestamp;
use mongodb::bson::{self, doc, Document};
use mongodb::{Collection, Database};

/// API keys on MongoDB: one document per key (`_id` = key id).
pub struct MongoKeys {
    keys: Collection<Document>,
}

fn decode(mut document: Document) -> Result<ApiKey, StoreError> {
    document.remove("_id");
    bson::from_document(document).map_err(other)
}

impl MongoKeys {
    pub fn open(database: &Database, prefix: &str) -> Self {
        Self {
            keys: database.collection::<Document>(&format!("{prefix}api_keys")),
        }
    }
}

#[async_trait]
impl ApiKeys for MongoKeys {
    async fn create(&self, key: &ApiKey) -> Result<(), StoreError> {
        let mut document = bson::to_document(key).map_err(other)?;
        document.insert("_id", key.id.as_str());
        self.keys.insert_one(document).await.map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        self.keys
            .find_one(doc! { "_id": id })
            .await
            .map_err(unavailable)?
            .map(decode)
            .transpose()
    }

    async fn list(&self) -> Result<Vec<ApiKey>, StoreError> {
        // Ids are ULIDs: their order is the creation order.
        let documents: Vec<Document> = self
            .keys
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        documents.into_iter().map(decode).collect()
    }

    async fn revoke(&self, id: &str, at: Timestamp) -> Result<bool, StoreError> {
        let at = bson::to_bson(&at).map_err(other)?;
        let result = self
            .keys
            .update_one(
                doc! { "_id": id, "revoked_at": { "$exists": false } },
                doc! { "$set": { "revoked_at": at } },
            )
            .await
            .map_err(unavailable)?;
        Ok(result.modified_count == 1)
    }
}
