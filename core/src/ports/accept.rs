//! The accept path's write, where a backend can make it one.

use async_trait::async_trait;

use super::queue::Topic;
use super::store::{Created, StoreError};
use crate::MessageRecord;

/// Records a new message and puts it on its lane in one durable write:
/// after an `Ok`, both are kept; after an error, neither or (should the
/// write have happened after all) both. For a store and queue that share
/// a database; elsewhere the accept path creates, then produces.
#[async_trait]
pub trait AcceptLog: Send + Sync + 'static {
    /// Creates `record` and, when it is new, produces `payload` to `topic`
    /// under `key`. When its idempotency key is taken, returns the
    /// existing record ([`Created::Existing`]) and produces nothing.
    async fn create_and_produce(
        &self,
        record: &MessageRecord,
        topic: Topic,
        key: &str,
        payload: Vec<u8>,
    ) -> Result<Created, StoreError>;
}
