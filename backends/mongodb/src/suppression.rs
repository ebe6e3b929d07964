use crate::{other, unavailable};
use async_trait::async_trait;
use futures::TryStreamExt;
use mdc_core::ports::{StoreError, Suppression, SuppressionList};
use mdc_core::Channel;
use mongodb::bson::{self, doc, Document};
use mongodb::options::UpdateOptions;
use mongodb::{Collection, Database, IndexModel};

/// The suppression list on MongoDB: one document per channel and
/// recipient (`_id` = `channel:recipient`).
pub struct MongoSuppressions {
    entries: Collection<Document>,
}

fn key(channel: Channel, recipient: &str) -> String {
    format!("{channel}:{recipient}")
}

fn decode(mut document: Document) -> Result<Suppression, StoreError> {
    document.remove("_id");
    document.remove("at_ms");
    bson::from_document(document).map_err(other)
}

impl MongoSuppressions {
    pub async fn open(database: &Database, prefix: &str) -> Result<Self, StoreError> {
        let entries = database.collection::<Document>(&format!("{prefix}suppressions"));
        entries
            .create_indexes([IndexModel::builder()
                .keys(doc! { "channel": 1, "at_ms": -1 })
                .build()])
            .await
            .map_err(unavailable)?;
        Ok(Self { entries })
    }
}

#[async_trait]
impl SuppressionList for MongoSuppressions {
    async fn add(&self, suppression: &Suppression) -> Result<bool, StoreError> {
        let mut document = bson::to_document(suppression).map_err(other)?;
        document.insert("at_ms", suppression.at.timestamp_millis());
        // Insert only if absent: the first entry is kept.
        let result = self
            .entries
            .update_one(
                doc! { "_id": key(suppression.channel, &suppression.recipient) },
                doc! { "$setOnInsert": document },
            )
            .with_options(UpdateOptions::builder().upsert(true).build())
            .await
            .map_err(unavailable)?;
        Ok(result.upserted_id.is_some())
    }

    async fn get(
        &self,
        channel: Channel,
        recipient: &str,
    ) -> Result<Option<Suppression>, StoreError> {
        match self
            .entries
            .find_one(doc! { "_id": key(channel, recipient) })
            .await
            .map_err(unavailable)?
        {
            Some(document) => Ok(Some(decode(document)?)),
            None => Ok(None),
        }
    }

    async fn remove(&self, channel: Channel, recipient: &str) -> Result<bool, StoreError> {
        let result = self
            .entries
            .delete_one(doc! { "_id": key(channel, recipient) })
            .await
            .map_err(unavailable)?;
        Ok(result.deleted_count == 1)
    }

    async fn list(
        &self,
        channel: Option<Channel>,
        limit: usize,
    ) -> Result<Vec<Suppression>, StoreError> {
        let mut filter = Document::new();
        if let Some(channel) = channel {
            filter.insert("channel", channel.to_string());
        }
        let documents: Vec<Document> = self
            .entries
            .find(filter)
            .sort(doc! { "at_ms": -1 })
            .limit(limit as i64)
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        documents.into_iter().map(decode).collect()
    }
}
