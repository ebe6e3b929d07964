//! Queries the status API and retention run over the channels' collections.

use mdc_core::ports::{ListFilter, StoreError};
use mongodb::bson::{doc, Document};
use mongodb::Collection;

use crate::unavailable;

/// The filter of a [`ListFilter`] for each channel's collection, the field
/// it sorts on and the direction (1 or -1).
pub(crate) fn list(filter: &ListFilter) -> (Document, &'static str, i32) {
    let mut query = Document::new();
    if let Some(status) = filter.status {
        query.insert("status", status.as_str());
    }
    if let Some(to) = &filter.to {
        query.insert("message.to", to.as_str());
    }
    if let Some(service) = &filter.service {
        query.insert("message.service", service.as_str());
    }
    if let Some(provider) = &filter.provider {
        query.insert("provider", provider.as_str());
    }
    if let Some(kind) = filter.message_type {
        query.insert("message.type", kind.as_str());
    }
    if let Some(priority) = filter.priority {
        query.insert("message.priority", priority.as_str());
    }
    if let Some(reference) = &filter.reference {
        query.insert("message.reference", reference.as_str());
    }
    let mut created = Document::new();
    if let Some(after) = filter.created_after {
        created.insert("$gte", after.timestamp_millis());
    }
    if let Some(before) = filter.created_before {
        created.insert("$lt", before.timestamp_millis());
    }
    if !created.is_empty() {
        query.insert("created_ms", created);
    }
    let field = if filter.sort.by_updated() {
        "updated_ms"
    } else {
        "created_ms"
    };
    let direction = if filter.sort.descending() { -1 } else { 1 };
    if let Some((at, id)) = &filter.after {
        let op = if filter.sort.descending() {
            "$lt"
        } else {
            "$gt"
        };
        query.insert(
            "$or",
            vec![
                doc! { field: { op: *at } },
                doc! { field: *at, "_id": { op: id.as_str() } },
            ],
        );
    }
    (query, field, direction)
}

/// The ids of at most `limit` documents matching `filter`.
pub(crate) async fn ids_of(
    collection: &Collection<Document>,
    filter: Document,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let mut cursor = collection
        .find(filter)
        .projection(doc! { "_id": 1 })
        .limit(limit)
        .await
        .map_err(unavailable)?;
    let mut ids = Vec::new();
    while cursor.advance().await.map_err(unavailable)? {
        let document = cursor.deserialize_current().map_err(unavailable)?;
        if let Ok(id) = document.get_str("_id") {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}
