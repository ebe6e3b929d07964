//! The accept path's one write: a new message's record and its queue entry
//! in the same commit.

use std::sync::Arc;

use async_trait::async_trait;
use mdc_core::ports::{AcceptLog, Created, StoreError, Topic};
use mdc_core::MessageRecord;

use crate::queue::EmbeddedQueue;
use crate::store::{create_in, EmbeddedStore};
use crate::DbError;

/// [`AcceptLog`] over an embedded store and queue in one database.
pub struct EmbeddedAccept {
    store: Arc<EmbeddedStore>,
    queue: Arc<EmbeddedQueue>,
}

impl EmbeddedAccept {
    /// None unless both live in the same database (opened by
    /// [`crate::Embedded::open`], or the queue on [`crate::EmbeddedStores::db`]).
    pub fn new(store: Arc<EmbeddedStore>, queue: Arc<EmbeddedQueue>) -> Option<Self> {
        store.db().same(queue.db()).then_some(Self { store, queue })
    }
}

#[async_trait]
impl AcceptLog for EmbeddedAccept {
    async fn create_and_produce(
        &self,
        record: &MessageRecord,
        topic: Topic,
        key: &str,
        payload: Vec<u8>,
    ) -> Result<Created, StoreError> {
        let mut record = record.clone();
        let append = self.queue.append(topic, key, &payload);
        let (created, append) = self
            .store
            .db()
            .write(true, move |txn| {
                let created = create_in(txn, &mut record)?;
                if created == Created::New {
                    if let Some(append) = &append {
                        append.apply(txn)?;
                    }
                }
                Ok::<_, DbError>((created, append))
            })
            .await?;
        if created == Created::New {
            if let Some(append) = append {
                append.notify();
            }
        }
        Ok(created)
    }
}
