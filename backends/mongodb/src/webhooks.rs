use crate::{other, unavailable};
use async_trait::async_trait;
use futures::TryStreamExt;
use mdc_core::ports::webhooks::{PendingDelivery, WebhookAttempt, WebhookEndpoint, Webhooks};
use mdc_core::ports::StoreError;
use mdc_core::{MessageId, Timestamp};
use mongodb::bson::{self, doc, Document};
use mongodb::options::FindOptions;
use mongodb::{Collection, Database, IndexModel};

/// Webhook endpoints, attempts and pending deliveries on MongoDB: one
/// collection each. Attempts are indexed by endpoint and time.
pub struct MongoWebhooks {
    endpoints: Collection<Document>,
    attempts: Collection<Document>,
    pending: Collection<Document>,
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Document, StoreError> {
    bson::to_document(value).map_err(other)
}

fn decode<T: serde::de::DeserializeOwned>(mut document: Document) -> Result<T, StoreError> {
    document.remove("_id");
    document.remove("at_ms");
    bson::from_document(document).map_err(other)
}

impl MongoWebhooks {
    pub async fn open(database: &Database, prefix: &str) -> Result<Self, StoreError> {
        let endpoints = database.collection::<Document>(&format!("{prefix}webhooks"));
        let attempts = database.collection::<Document>(&format!("{prefix}webhook_attempts"));
        let pending = database.collection::<Document>(&format!("{prefix}webhook_pending"));
        attempts
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "endpoint_id": 1, "at_ms": -1 })
                    .build(),
                IndexModel::builder().keys(doc! { "at_ms": 1 }).build(),
            ])
            .await
            .map_err(unavailable)?;
        pending
            .create_indexes([IndexModel::builder()
                .keys(doc! { "endpoint_id": 1 })
                .build()])
            .await
            .map_err(unavailable)?;
        Ok(Self {
            endpoints,
            attempts,
            pending,
        })
    }
}

#[async_trait]
impl Webhooks for MongoWebhooks {
    async fn create(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        let mut document = encode(endpoint)?;
        document.insert("_id", endpoint.id.as_str());
        self.endpoints
            .insert_one(document)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        self.endpoints
            .find_one(doc! { "_id": id })
            .await
            .map_err(unavailable)?
            .map(decode)
            .transpose()
    }

    async fn list(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let documents: Vec<Document> = self
            .endpoints
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        documents.into_iter().map(decode).collect()
    }

    async fn update(&self, endpoint: &WebhookEndpoint) -> Result<bool, StoreError> {
        let mut document = encode(endpoint)?;
        document.insert("_id", endpoint.id.as_str());
        let result = self
            .endpoints
            .replace_one(doc! { "_id": endpoint.id.as_str() }, document)
            .await
            .map_err(unavailable)?;
        Ok(result.matched_count == 1)
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let result = self
            .endpoints
            .delete_one(doc! { "_id": id })
            .await
            .map_err(unavailable)?;
        self.attempts
            .delete_many(doc! { "endpoint_id": id })
            .await
            .map_err(unavailable)?;
        self.pending
            .delete_many(doc! { "endpoint_id": id })
            .await
            .map_err(unavailable)?;
        Ok(result.deleted_count == 1)
    }

    async fn record_attempt(&self, attempt: &WebhookAttempt) -> Result<(), StoreError> {
        let mut document = encode(attempt)?;
        document.insert("at_ms", attempt.at.timestamp_millis());
        self.attempts
            .insert_one(document)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn attempts(
        &self,
        endpoint_id: &str,
        since: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<WebhookAttempt>, StoreError> {
        let mut filter = doc! { "endpoint_id": endpoint_id };
        if let Some(since) = since {
            filter.insert("at_ms", doc! { "$gte": since.timestamp_millis() });
        }
        let options = FindOptions::builder()
            .sort(doc! { "at_ms": -1, "_id": -1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .build();
        let documents: Vec<Document> = self
            .attempts
            .find(filter)
            .with_options(options)
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        documents.into_iter().map(decode).collect()
    }

    async fn prune_attempts(&self, before: Timestamp) -> Result<u64, StoreError> {
        let result = self
            .attempts
            .delete_many(doc! { "at_ms": { "$lt": before.timestamp_millis() } })
            .await
            .map_err(unavailable)?;
        Ok(result.deleted_count)
    }

    async fn save_pending(&self, pending: &PendingDelivery) -> Result<(), StoreError> {
        let mut document = encode(pending)?;
        document.insert("_id", pending.key.as_str());
        self.pending
            .replace_one(doc! { "_id": pending.key.as_str() }, document)
            .upsert(true)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn pending(&self, key: &MessageId) -> Result<Option<PendingDelivery>, StoreError> {
        self.pending
            .find_one(doc! { "_id": key.as_str() })
            .await
            .map_err(unavailable)?
            .map(decode)
            .transpose()
    }

    async fn remove_pending(&self, key: &MessageId) -> Result<(), StoreError> {
        self.pending
            .delete_one(doc! { "_id": key.as_str() })
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
