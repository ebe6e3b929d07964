//! The indexes of the message collections, created (or brought up to
//! date) at start-up: idempotent.

use mongodb::bson::{doc, Document};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};

use mdc_core::ports::StoreError;

use crate::unavailable;

/// Creates a message collection's indexes and its retention TTL index
/// (`ttl`; none drops it).
pub(crate) async fn ensure(
    collection: &Collection<Document>,
    ttl: Option<std::time::Duration>,
) -> Result<(), StoreError> {
    let indexes = [
        // Unique per service: two services' keys never collide.
        IndexModel::builder()
            .keys(doc! { "message.service": 1, "message.idempotency_key": 1 })
            .options(IndexOptions::builder().unique(true).build())
            .build(),
        IndexModel::builder()
            .keys(doc! { "status": 1, "created_ms": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "created_ms": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "message.to": 1, "created_ms": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "provider": 1, "provider_message_id": 1 })
            .build(),
        // The status API's filters and orders.
        IndexModel::builder()
            .keys(doc! { "updated_ms": -1, "_id": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "message.service": 1, "created_ms": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "provider": 1, "created_ms": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "message.type": 1, "created_ms": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "message.priority": 1, "created_ms": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "message.reference": 1, "created_ms": -1 })
            .build(),
    ];
    // Before keys were per service, they were unique on their own.
    if let Err(e) = collection.drop_index("message.idempotency_key_1").await {
        tracing::debug!(error = %e, "No global idempotency index to drop");
    }
    collection
        .create_indexes(indexes)
        .await
        .map_err(unavailable)?;
    ttl_index(collection, ttl).await
}

const TTL_INDEX: &str = "created_date_ttl";

/// The retention TTL index on `created_date`, as configured: created,
/// replaced when its expiry changed, dropped when retention is off.
pub(crate) async fn ttl_index(
    collection: &Collection<Document>,
    ttl: Option<std::time::Duration>,
) -> Result<(), StoreError> {
    let mut existing = None;
    let mut cursor = collection.list_indexes().await.map_err(unavailable)?;
    while cursor.advance().await.map_err(unavailable)? {
        let index = cursor.deserialize_current().map_err(unavailable)?;
        let options = index.options.unwrap_or_default();
        if options.name.as_deref() == Some(TTL_INDEX) {
            existing = Some(options.expire_after);
        }
    }
    let wanted = ttl.map(|d| std::time::Duration::from_secs(d.as_secs()));
    match (existing, wanted) {
        (Some(current), Some(wanted)) if current == Some(wanted) => return Ok(()),
        (None, None) => return Ok(()),
        (Some(_), _) => collection
            .drop_index(TTL_INDEX)
            .await
            .map_err(unavailable)?,
        (None, Some(_)) => {}
    }
    if let Some(ttl) = wanted {
        collection
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "created_date": 1 })
                    .options(
                        IndexOptions::builder()
                            .name(TTL_INDEX.to_owned())
                            .expire_after(ttl)
                            .build(),
                    )
                    .build(),
            )
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}
