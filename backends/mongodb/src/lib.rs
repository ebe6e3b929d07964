//! The message store on MongoDB: one collection per channel, one document per
//! message with its event trail in an `events` array (appended with `$push`),
//! and indexes for every status-API filter.
//!
//! Claims and status moves are compare-and-set: the document is read, the
//! shared rule ([`apply_claim`] / [`apply_update`]) decides, and the write is
//! filtered on the document's `version` and the status it was read in, so a
//! concurrent writer makes it start over rather than overwrite. A late `sent`
//! therefore never overwrites `delivered`.

mod checkpoint;
mod devices;
mod document;
mod idempotency;
mod indexes;
mod keys;
mod located;
mod query;
mod server;
mod suppression;
mod webhooks;

use std::collections::HashMap;

use async_trait::async_trait;
use futures::TryStreamExt;
use mdc_core::ports::store::{apply_claim, apply_update};
use mdc_core::ports::{
    Claim, Created, Expired, ListFilter, Store, StoreError, Transition, Updated,
};
use mdc_core::{trail, Channel, Event, MessageId, MessageRecord, Status, Timestamp};
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::options::{Acknowledgment, ClientOptions, WriteConcern};
use mongodb::{Client, Collection};

#[derive(Debug, Clone)]
pub struct MongoConfig {
    pub url: String,
    pub database: String,
    /// Prefix of the collection names (`{prefix}messages_sms`, …).
    pub prefix: String,
    /// `majority` in production: an acknowledged write survives a failover.
    pub majority_writes: bool,
    /// Retention of message records: a TTL index removes documents this
    /// long after their creation (MDC's retention sweep removes finished
    /// ones on time as well). None keeps them.
    pub records_ttl: Option<std::time::Duration>,
}

use document::{from_document, to_document, OPTIONAL};
use query::ids_of;

pub use checkpoint::MongoCheckpoints;
pub use devices::MongoDevices;
pub use keys::MongoKeys;
pub use suppression::MongoSuppressions;
pub use webhooks::MongoWebhooks;

pub struct MongoStore {
    collections: HashMap<Channel, Collection<Document>>,
    database: mongodb::Database,
    prefix: String,
    located: located::Located,
    key_index: idempotency::KeyIndex,
}

/// The driver could not reach the database (or it refused): try again later.
pub(crate) fn unavailable(e: mongodb::error::Error) -> StoreError {
    StoreError::Unavailable(e.into())
}

/// A document MDC cannot read or write.
pub(crate) fn other(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Other(e.into())
}

/// Every this many versions, a write checks the trail's length.
const TRAIL_CHECK_EVERY: i64 = 8;

/// How many times a create tries a key whose holder keeps being discarded.
pub(crate) const CREATE_TRIES: usize = 5;

pub(crate) fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    matches!(
        error.kind.as_ref(),
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(e)) if e.code == 11000
    ) || error.to_string().contains("E11000")
}

impl MongoStore {
    /// Connects, checks that the server takes transactions and creates the
    /// indexes (idempotent).
    pub async fn connect(config: &MongoConfig) -> Result<Self, StoreError> {
        let options = ClientOptions::parse(&config.url)
            .await
            .map_err(unavailable)?;
        Self::connect_with(options, config).await
    }

    /// [`MongoStore::connect`] with the driver's options parsed from
    /// `config.url` already, and perhaps amended (an event handler, a pool
    /// size); `config.url` is not read again.
    pub async fn connect_with(
        mut options: ClientOptions,
        config: &MongoConfig,
    ) -> Result<Self, StoreError> {
        if config.majority_writes {
            options.write_concern =
                Some(WriteConcern::builder().w(Acknowledgment::Majority).build());
        }
        options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
        let client = Client::with_options(options).map_err(unavailable)?;
        let database = client.database(&config.database);
        server::takes_transactions(&database).await?;
        let mut collections = HashMap::new();
        for &channel in Channel::ALL {
            let collection =
                database.collection::<Document>(&format!("{}messages_{channel}", config.prefix));
            indexes::ensure(&collection, config.records_ttl).await?;
            collections.insert(channel, collection);
        }
        let key_index =
            idempotency::KeyIndex::open(&database, &config.prefix, config.records_ttl).await?;
        Ok(Self {
            collections,
            database,
            prefix: config.prefix.clone(),
            located: located::Located::default(),
            key_index,
        })
    }

    /// The suppression list in the same database.
    pub async fn suppressions(&self) -> Result<MongoSuppressions, StoreError> {
        MongoSuppressions::open(&self.database, &self.prefix).await
    }

    /// Webhook endpoints in the same database.
    pub async fn webhooks(&self) -> Result<MongoWebhooks, StoreError> {
        MongoWebhooks::open(&self.database, &self.prefix).await
    }

    /// API keys in the same database.
    pub fn keys(&self) -> MongoKeys {
        MongoKeys::open(&self.database, &self.prefix)
    }

    /// Intake checkpoints in the same database.
    pub fn checkpoints(&self) -> MongoCheckpoints {
        MongoCheckpoints::open(&self.database, &self.prefix)
    }

    /// The device registry in the same database.
    pub async fn devices(&self) -> Result<MongoDevices, StoreError> {
        MongoDevices::open(&self.database, &self.prefix).await
    }

    /// The message's collection and document (without its events unless asked).
    async fn find(
        &self,
        id: &MessageId,
        with_events: bool,
    ) -> Result<Option<(Channel, Document)>, StoreError> {
        let projection = (!with_events).then(|| doc! { "events": 0 });
        self.find_projected(id, projection).await
    }

    /// The message's document with `projection` applied, from whichever
    /// channel's collection holds it: the one it is known to be in, or each
    /// in turn. Read from the primary whatever the URL's read preference:
    /// a message just accepted is shown (`queued`), and a claim or update
    /// decides on the version its write will be checked against.
    async fn find_projected(
        &self,
        id: &MessageId,
        projection: Option<Document>,
    ) -> Result<Option<(Channel, Document)>, StoreError> {
        let known = self.located.get(id);
        let channels = match &known {
            Some(channel) => std::slice::from_ref(channel),
            None => Channel::ALL,
        };
        for &channel in channels {
            let found = self.collections[&channel]
                .find_one(doc! { "_id": id.as_str() })
                .with_options(
                    mongodb::options::FindOneOptions::builder()
                        .projection(projection.clone())
                        .selection_criteria(idempotency::primary())
                        .build(),
                )
                .await
                .map_err(unavailable)?;
            if let Some(document) = found {
                if known.is_none() {
                    self.located.note(id, channel);
                }
                return Ok(Some((channel, document)));
            }
        }
        Ok(None)
    }

    /// Folds the middle of an over-long trail into one summary event
    /// ([`trail::compact`]), unless the message moved on meanwhile (the
    /// next check catches it then).
    async fn compact_trail(
        &self,
        channel: Channel,
        id: &MessageId,
        version: i64,
    ) -> Result<(), StoreError> {
        let collection = &self.collections[&channel];
        let filter = doc! { "_id": id.as_str(), "version": version };
        let Some(counted) = collection
            .find_one(filter.clone())
            .projection(doc! { "event_count": 1 })
            .selection_criteria(idempotency::primary())
            .await
            .map_err(unavailable)?
        else {
            return Ok(());
        };
        let count = match counted.get("event_count") {
            Some(Bson::Int32(n)) => i64::from(*n),
            Some(Bson::Int64(n)) => *n,
            _ => 0,
        };
        if count as usize <= trail::MAX_TRAIL {
            return Ok(());
        }
        let Some(document) = collection
            .find_one(filter.clone())
            .selection_criteria(idempotency::primary())
            .await
            .map_err(unavailable)?
        else {
            return Ok(());
        };
        let (record, _) = from_document(document)?;
        let events = trail::compact(record.events);
        let count = events.len() as i64;
        let events = bson::to_bson(&events).map_err(other)?;
        collection
            .update_one(
                filter,
                doc! {
                    "$set": { "events": events, "event_count": count, "version": version + 1 },
                },
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Read, decide with `rule`, write only if nobody wrote in between; again
    /// otherwise.
    async fn modify<T, F>(&self, id: &MessageId, mut rule: F) -> Result<Option<T>, StoreError>
    where
        F: FnMut(&mut MessageRecord) -> T,
    {
        loop {
            let Some((channel, document)) = self.find(id, false).await? else {
                return Ok(None);
            };
            let (mut record, version) = from_document(document)?;
            let before = record.clone();
            let out = rule(&mut record);
            if record == before {
                return Ok(Some(out));
            }
            let events: Vec<Event> = std::mem::take(&mut record.events);
            let mut set = to_document(&record, version + 1)?;
            for key in ["_id", "message", "events", "created_ms", "event_count"] {
                set.remove(key);
            }
            let mut unset = Document::new();
            for key in OPTIONAL {
                if !set.contains_key(key) {
                    unset.insert(key, "");
                }
            }
            let added = events.len() as i64;
            let events = bson::to_bson(&events).map_err(other)?;
            let mut change = doc! {
                "$set": set,
                "$push": { "events": { "$each": events } },
                "$inc": { "event_count": added },
            };
            if !unset.is_empty() {
                change.insert("$unset", unset);
            }
            let filter =
                doc! { "_id": id.as_str(), "version": version, "status": before.status.as_str() };
            let result = self.collections[&channel]
                .update_one(filter, change)
                .await
                .map_err(unavailable)?;
            if result.matched_count == 1 {
                // Checked every few writes: a trail overshoots its bound by
                // at most that many events.
                if added > 0 && (version + 1) % TRAIL_CHECK_EVERY == 0 {
                    self.compact_trail(channel, id, version + 1).await?;
                }
                return Ok(Some(out));
            }
            // Someone else moved the message meanwhile: decide again on what is there now.
        }
    }
}

#[async_trait]
impl Store for MongoStore {
    async fn create(&self, record: &MessageRecord) -> Result<Created, StoreError> {
        let channel = record.message.channel();
        let document = to_document(record, 0)?;
        if idempotency::is_callers(&record.message) {
            return self.create_keyed(record, &document).await;
        }
        // The key's holder can be discarded (its own submit failed) between
        // this insert's refusal and the read of the holder: the key is then
        // free, and the insert is tried again.
        for _ in 0..CREATE_TRIES {
            match self.collections[&channel]
                .insert_one(document.clone())
                .await
            {
                Ok(_) => {
                    self.located.note(&record.message.id, channel);
                    return Ok(Created::New);
                }
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(unavailable(e)),
            }
            if let Some(existing) = self.in_channel(record).await? {
                return Ok(existing);
            }
        }
        Err(StoreError::Unavailable(
            format!(
                "idempotency key of {} held and freed {CREATE_TRIES} times in a row",
                record.message.id
            )
            .into(),
        ))
    }

    async fn expire(
        &self,
        records_before: Option<Timestamp>,
        bodies_before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Expired, StoreError> {
        let finished: Vec<&str> = Status::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| s.as_str())
            .collect();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut done = Expired::default();
        for collection in self.collections.values() {
            if let Some(before) = records_before {
                let filter = doc! {
                    "created_ms": { "$lt": before.timestamp_millis() },
                    "status": { "$in": finished.clone() },
                };
                let ids = ids_of(collection, filter, limit - done.removed as i64).await?;
                for id in &ids {
                    if let Ok(id) = id.parse::<MessageId>() {
                        self.located.forget(&id);
                    }
                }
                if !ids.is_empty() {
                    let deleted = collection
                        .delete_many(doc! { "_id": { "$in": &ids } })
                        .await
                        .map_err(unavailable)?;
                    done.removed += deleted.deleted_count as usize;
                    self.key_index.release_all(&ids).await?;
                }
            }
            if let Some(before) = bodies_before {
                let filter = doc! {
                    "created_ms": { "$lt": before.timestamp_millis() },
                    "status": { "$in": finished.clone() },
                    "redacted": { "$ne": true },
                };
                let mut cursor = collection
                    .find(filter)
                    .limit((limit - done.redacted as i64).max(0))
                    .await
                    .map_err(unavailable)?;
                let mut found = Vec::new();
                while cursor.advance().await.map_err(unavailable)? {
                    found.push(cursor.deserialize_current().map_err(unavailable)?);
                }
                for document in found {
                    let (mut record, version) = from_document(document)?;
                    record.redact();
                    let content = bson::to_bson(&record.message.content).map_err(other)?;
                    let events = bson::to_bson(&record.events).map_err(other)?;
                    let result = collection
                        .update_one(
                            doc! { "_id": record.message.id.as_str(), "version": version },
                            doc! {
                                "$set": { "message.content": content, "events": events, "redacted": true },
                                "$inc": { "version": 1 },
                            },
                        )
                        .await
                        .map_err(unavailable)?;
                    // Changed meanwhile (a late report): the next sweep.
                    done.redacted += result.modified_count as usize;
                }
            }
        }
        Ok(done)
    }

    async fn discard(&self, record: &mdc_core::MessageRecord) -> Result<bool, StoreError> {
        let message = &record.message;
        let collection = &self.collections[&message.channel()];
        let untouched = vec![Status::Accepted.as_str(), Status::Queued.as_str()];
        let created_events = i64::try_from(record.events.len()).unwrap_or(i64::MAX);
        let result = collection
            .delete_one(doc! {
                "_id": message.id.as_str(),
                "status": { "$in": untouched },
                "attempts": 0,
                "events": { "$size": created_events },
            })
            .await
            .map_err(unavailable)?;
        if result.deleted_count == 1 {
            self.located.forget(&message.id);
            // Left behind, the key's document is stale, and the next
            // create under the key removes it.
            if let Err(e) = self.release_key(record).await {
                tracing::warn!(id = %message.id, error = %e, "Could not free a discarded message's idempotency key");
            }
        }
        Ok(result.deleted_count == 1)
    }

    async fn key_holder(
        &self,
        message: &mdc_core::Message,
    ) -> Result<Option<MessageId>, StoreError> {
        if idempotency::is_callers(message) {
            if let Some(holder) = self.indexed_holder(message).await? {
                return Ok(Some(holder));
            }
            // Messages stored before the key index are found in their
            // channel's collection.
        }
        let collection = &self.collections[&message.channel()];
        let service = message.service.as_deref().map_or(Bson::Null, Bson::from);
        let found = collection
            .find_one(doc! {
                "message.idempotency_key": message.idempotency_key.as_str(),
                "message.service": service,
            })
            .projection(doc! { "_id": 1 })
            .selection_criteria(idempotency::primary())
            .await
            .map_err(unavailable)?;
        let holder: Option<MessageId> = found
            .as_ref()
            .and_then(|d| d.get_str("_id").ok())
            .and_then(|id| id.parse().ok());
        if let Some(holder) = &holder {
            self.located.note(holder, message.channel());
        }
        Ok(holder)
    }

    async fn claim(
        &self,
        id: &MessageId,
        now: Timestamp,
        lease_until: Timestamp,
        component: &str,
    ) -> Result<Claim, StoreError> {
        let claim = self
            .modify(id, |record| {
                apply_claim(record, now, lease_until, component)
            })
            .await?;
        Ok(claim.unwrap_or(Claim::NotFound))
    }

    fn remember_channel(&self, id: &MessageId, channel: Channel) {
        self.located.note(id, channel);
    }

    async fn update(&self, id: &MessageId, update: Transition) -> Result<Updated, StoreError> {
        let updated = self
            .modify(id, |record| apply_update(record, update.clone()))
            .await?;
        Ok(updated.unwrap_or(Updated::NotFound))
    }

    async fn get(&self, id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
        match self.find(id, true).await? {
            Some((_, document)) => Ok(Some(from_document(document)?.0)),
            None => Ok(None),
        }
    }

    /// Only the last `events` events are read (`$slice`), none at all for
    /// 0: publishing an outcome on every status change needs no more.
    async fn get_recent(
        &self,
        id: &MessageId,
        events: usize,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let projection = match i64::try_from(events) {
            Ok(0) => doc! { "events": 0 },
            Ok(n) => doc! { "events": { "$slice": -n } },
            Err(_) => return self.get(id).await,
        };
        match self.find_projected(id, Some(projection)).await? {
            Some((_, document)) => Ok(Some(from_document(document)?.0)),
            None => Ok(None),
        }
    }

    async fn find_by_provider_message_id(
        &self,
        provider: &str,
        provider_message_id: &str,
    ) -> Result<Option<MessageId>, StoreError> {
        for (&channel, collection) in &self.collections {
            let found = collection
                .find_one(doc! { "provider": provider, "provider_message_id": provider_message_id })
                .projection(doc! { "_id": 1 })
                // A report may come right after the `sent` write naming it.
                .selection_criteria(idempotency::primary())
                .await
                .map_err(unavailable)?;
            if let Some(document) = found {
                let id: Option<MessageId> =
                    document.get_str("_id").ok().and_then(|id| id.parse().ok());
                if let Some(id) = &id {
                    self.located.note(id, channel);
                }
                return Ok(id);
            }
        }
        Ok(None)
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<MessageRecord>, StoreError> {
        let (query, field, direction) = query::list(filter);
        let mut out = Vec::new();
        for (&channel, collection) in &self.collections {
            if filter.channel.is_some_and(|c| c != channel) {
                continue;
            }
            let documents: Vec<Document> = collection
                .find(query.clone())
                .sort(doc! { field: direction, "_id": direction })
                .limit(filter.limit as i64)
                .projection(doc! { "events": 0 })
                .await
                .map_err(unavailable)?
                .try_collect()
                .await
                .map_err(unavailable)?;
            for document in documents {
                out.push(from_document(document)?.0);
            }
        }
        // Merge the collections' pages in the list's order.
        out.sort_by_key(|r| filter.sort.key(r));
        if filter.sort.descending() {
            out.reverse();
        }
        out.retain(|record| filter.matches(record));
        out.truncate(filter.limit);
        Ok(out)
    }

    async fn count_by_status(&self) -> Result<HashMap<Status, u64>, StoreError> {
        // Counted on the status index: no document is read.
        let mut counts = HashMap::new();
        for collection in self.collections.values() {
            for status in Status::ALL {
                let n = collection
                    .count_documents(doc! { "status": status.as_str() })
                    .await
                    .map_err(unavailable)?;
                if n > 0 {
                    *counts.entry(status).or_insert(0) += n;
                }
            }
        }
        Ok(counts)
    }
}
