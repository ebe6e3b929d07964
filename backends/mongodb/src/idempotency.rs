//! Callers' idempotency keys across the channels' collections.
//!
//! Each channel has a collection of its own, and a unique index covers one
//! collection, so a key must be one message in all of them some other way:
//! a `{prefix}message_keys` collection with one document per key in its
//! scope (`_id`), naming the message that holds it (`id`, `channel`). A
//! create writes that document and the message in one transaction: either
//! both are stored or neither, so a key document always names a message
//! that was stored. The dispatcher may claim a message the moment it is
//! stored (the accept path queues it at the same time), so a message is
//! never stored first and removed again on finding the key taken.
//!
//! A key document whose message is gone (discarded, or removed by
//! retention) is stale: a create that finds one removes it and tries again.
//! Messages with their own key ([`mdc_core::Message::idempotency_key_owner`])
//! have none: no other message can hold it.

use std::time::Duration;

use mdc_core::ports::{Created, StoreError};
use mdc_core::{Channel, Message, MessageId, MessageRecord};
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::error::{ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::{IndexOptions, ReadConcern, ReadPreference, SelectionCriteria};
use mongodb::{Collection, Database, IndexModel};

use crate::document::from_document;
use crate::{is_duplicate_key, unavailable, MongoStore, CREATE_TRIES};

/// The key index: which message holds each caller's key.
pub(crate) struct KeyIndex {
    keys: Collection<Document>,
}

/// The message a key document names.
struct Holder {
    id: MessageId,
    channel: Channel,
}

/// Whether `message`'s key is a caller's, kept in the key index.
pub(crate) fn is_callers(message: &Message) -> bool {
    message.idempotency_key_owner().as_ref() != Some(&message.id)
}

impl KeyIndex {
    pub(crate) async fn open(
        database: &Database,
        prefix: &str,
        ttl: Option<std::time::Duration>,
    ) -> Result<Self, StoreError> {
        let keys = database.collection::<Document>(&format!("{prefix}message_keys"));
        keys.create_index(
            IndexModel::builder()
                .keys(doc! { "id": 1 })
                .options(IndexOptions::builder().build())
                .build(),
        )
        .await
        .map_err(unavailable)?;
        crate::indexes::ttl_index(&keys, ttl).await?;
        Ok(Self { keys })
    }

    async fn holder(&self, scope: &str) -> Result<Option<Holder>, StoreError> {
        let Some(document) = self
            .keys
            .find_one(doc! { "_id": scope })
            .selection_criteria(primary())
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let id = document.get_str("id").ok().and_then(|id| id.parse().ok());
        let channel = document
            .get_str("channel")
            .ok()
            .and_then(|c| c.parse().ok());
        match (id, channel) {
            (Some(id), Some(channel)) => Ok(Some(Holder { id, channel })),
            _ => Err(StoreError::Other(
                format!("unreadable idempotency key document {document}").into(),
            )),
        }
    }

    /// Removes the key document of `scope` if it still names `id`.
    async fn release(&self, scope: &str, id: &MessageId) -> Result<(), StoreError> {
        self.keys
            .delete_one(doc! { "_id": scope, "id": id.as_str() })
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Removes the key documents naming any of `ids` (removed by retention).
    pub(crate) async fn release_all(&self, ids: &[String]) -> Result<(), StoreError> {
        if !ids.is_empty() {
            self.keys
                .delete_many(doc! { "id": { "$in": ids } })
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}

fn key_document(record: &MessageRecord) -> Document {
    let message = &record.message;
    doc! {
        "_id": message.idempotency_scope(),
        "id": message.id.as_str(),
        "channel": message.channel().as_str(),
        // For the retention TTL index, as on the messages.
        "created_date": bson::DateTime::from_millis(message.created_at.timestamp_millis()),
    }
}

/// How long a create waits out conflicting transactions (another one
/// writing the same key, a lock) before it gives up.
const CONFLICT_WAIT: Duration = Duration::from_secs(2);

/// A transaction another one got in the way of, worth trying again after
/// a pause; not a server out of reach, which the driver labels alike.
fn is_conflict(e: &mongodb::error::Error) -> bool {
    e.contains_label(TRANSIENT_TRANSACTION_ERROR)
        && !matches!(
            *e.kind,
            ErrorKind::ServerSelection { .. }
                | ErrorKind::Io(_)
                | ErrorKind::ConnectionPoolCleared { .. }
        )
}

/// Why [`MongoStore::insert_both`] did not store.
enum NotStored {
    Refused(mongodb::error::Error),
    /// The commit's result is unknown: it may have gone through.
    Unsure(mongodb::error::Error),
}

/// The primary, for reads whatever the URL's `readPreference`: those that
/// decide whether a key is taken, and every read of a message by its id
/// or vendor id. A lagging secondary may not have a message just written.
pub(crate) fn primary() -> SelectionCriteria {
    SelectionCriteria::ReadPreference(ReadPreference::Primary)
}

impl MongoStore {
    /// Stores a message under a caller's key: the key document and the
    /// message in one transaction (see the module's doc).
    pub(crate) async fn create_keyed(
        &self,
        record: &MessageRecord,
        document: &Document,
    ) -> Result<Created, StoreError> {
        let message = &record.message;
        let channel = message.channel();
        let scope = message.idempotency_scope();
        let key = key_document(record);
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(5);
        let mut freed = 0;
        while freed < CREATE_TRIES {
            match self.insert_both(&key, channel, document).await {
                Ok(()) => {
                    self.located.note(&message.id, channel);
                    return Ok(Created::New);
                }
                Err(NotStored::Unsure(e)) => {
                    // Read as the majority has it: a commit only the primary
                    // has could be rolled back by a failover.
                    let committed = self.collections[&channel]
                        .find_one(doc! { "_id": message.id.as_str() })
                        .selection_criteria(primary())
                        .read_concern(ReadConcern::majority())
                        .await
                        .map_err(unavailable)?;
                    return match committed {
                        Some(_) => {
                            self.located.note(&message.id, channel);
                            Ok(Created::New)
                        }
                        None => Err(unavailable(e)),
                    };
                }
                Err(NotStored::Refused(e)) if is_conflict(&e) => {
                    if started.elapsed() >= CONFLICT_WAIT {
                        return Err(unavailable(e));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                    continue;
                }
                Err(NotStored::Refused(e)) if is_duplicate_key(&e) => {}
                Err(NotStored::Refused(e)) => return Err(unavailable(e)),
            }
            match self.key_index.holder(&scope).await? {
                Some(holder) => match self.read_primary(holder.channel, &holder.id).await? {
                    Some(existing) => {
                        self.located.note(&holder.id, holder.channel);
                        let existing = from_document(existing)?.0;
                        return Ok(Created::Existing(Box::new(existing)));
                    }
                    // Stale: its message is gone, and so is the key.
                    None => self.key_index.release(&scope, &holder.id).await?,
                },
                // The key is free: the message itself was refused.
                None => {
                    if let Some(existing) = self.in_channel(record).await? {
                        return Ok(existing);
                    }
                }
            }
            freed += 1;
        }
        Err(StoreError::Unavailable(
            format!(
                "idempotency key of {} held and freed {CREATE_TRIES} times in a row",
                message.id
            )
            .into(),
        ))
    }

    /// A message's document as the primary has it: what a key document
    /// read there names is committed there, whatever the URL's read
    /// preference.
    async fn read_primary(
        &self,
        channel: Channel,
        id: &MessageId,
    ) -> Result<Option<Document>, StoreError> {
        self.collections[&channel]
            .find_one(doc! { "_id": id.as_str() })
            .selection_criteria(primary())
            .await
            .map_err(unavailable)
    }

    /// The key document and the message, both or neither.
    async fn insert_both(
        &self,
        key: &Document,
        channel: Channel,
        document: &Document,
    ) -> Result<(), NotStored> {
        let mut session = self
            .database
            .client()
            .start_session()
            .await
            .map_err(NotStored::Refused)?;
        session
            .start_transaction()
            .await
            .map_err(NotStored::Refused)?;
        let written = async {
            self.key_index
                .keys
                .insert_one(key.clone())
                .session(&mut session)
                .await?;
            self.collections[&channel]
                .insert_one(document.clone())
                .session(&mut session)
                .await?;
            Ok::<_, mongodb::error::Error>(())
        }
        .await;
        if let Err(e) = written {
            // The server has aborted it already after a failed write; this
            // only ends the session's transaction.
            let _ = session.abort_transaction().await;
            return Err(NotStored::Refused(e));
        }
        let mut tries = 0;
        loop {
            match session.commit_transaction().await {
                Ok(()) => return Ok(()),
                Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) => {
                    tries += 1;
                    if tries > 3 {
                        return Err(NotStored::Unsure(e));
                    }
                }
                Err(e) => return Err(NotStored::Refused(e)),
            }
        }
    }

    /// After `record`'s insert into its channel's collection was refused:
    /// the message holding its key there, or an error when another message
    /// has its id; None when neither is there any more (the holder was
    /// discarded meanwhile: try again).
    pub(crate) async fn in_channel(
        &self,
        record: &MessageRecord,
    ) -> Result<Option<Created>, StoreError> {
        let message = &record.message;
        let channel = message.channel();
        let collection = &self.collections[&channel];
        let service = message.service.as_deref().map_or(Bson::Null, Bson::from);
        let by_key = doc! {
            "message.idempotency_key": message.idempotency_key.as_str(),
            "message.service": service,
        };
        if let Some(existing) = collection
            .find_one(by_key)
            .selection_criteria(primary())
            .await
            .map_err(unavailable)?
        {
            let existing = from_document(existing)?.0;
            self.located.note(&existing.message.id, channel);
            return Ok(Some(Created::Existing(Box::new(existing))));
        }
        let same_id = collection
            .find_one(doc! { "_id": message.id.as_str() })
            .projection(doc! { "_id": 1 })
            .selection_criteria(primary())
            .await
            .map_err(unavailable)?;
        if same_id.is_some() {
            return Err(StoreError::Other(
                format!("duplicate message id {}", message.id).into(),
            ));
        }
        Ok(None)
    }

    /// The key's holder named by the key index, if any.
    pub(crate) async fn indexed_holder(
        &self,
        message: &Message,
    ) -> Result<Option<MessageId>, StoreError> {
        let Some(holder) = self.key_index.holder(&message.idempotency_scope()).await? else {
            return Ok(None);
        };
        // A key document left behind by a removal cut short names nobody.
        if self
            .read_primary(holder.channel, &holder.id)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        self.located.note(&holder.id, holder.channel);
        Ok(Some(holder.id))
    }

    /// After a discard of `record`, its key is free in every channel.
    pub(crate) async fn release_key(&self, record: &MessageRecord) -> Result<(), StoreError> {
        let message = &record.message;
        if is_callers(message) {
            self.key_index
                .release(&message.idempotency_scope(), &message.id)
                .await?;
        }
        Ok(())
    }
}
