//! A message record as a MongoDB document and back.

use mdc_core::ports::StoreError;
use mdc_core::MessageRecord;
use mongodb::bson::{self, Bson, Document};

use crate::other;

/// Fields that may be absent (None) and must then be unset, not kept.
pub(crate) const OPTIONAL: [&str; 4] = [
    "lease_until",
    "next_attempt_at",
    "provider",
    "provider_message_id",
];

pub(crate) fn to_document(record: &MessageRecord, version: i64) -> Result<Document, StoreError> {
    let mut document = bson::to_document(record).map_err(other)?;
    document.insert("_id", record.message.id.as_str());
    document.insert("version", version);
    document.insert("created_ms", record.message.created_at.timestamp_millis());
    document.insert("updated_ms", record.updated_at.timestamp_millis());
    document.insert("event_count", record.events.len() as i64);
    // A BSON date, for the TTL index of retention.
    document.insert(
        "created_date",
        bson::DateTime::from_millis(record.message.created_at.timestamp_millis()),
    );
    Ok(document)
}

pub(crate) fn from_document(mut document: Document) -> Result<(MessageRecord, i64), StoreError> {
    let version = document.get_i64("version").map_err(other)?;
    for key in [
        "_id",
        "version",
        "created_ms",
        "updated_ms",
        "event_count",
        "created_date",
        "redacted",
    ] {
        document.remove(key);
    }
    if !document.contains_key("events") {
        document.insert("events", Bson::Array(Vec::new()));
    }
    Ok((bson::from_document(document).map_err(other)?, version))
}
