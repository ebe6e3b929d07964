use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ports::StoreError;
use crate::{Channel, MessageId, Timestamp};

/// A recipient MDC no longer sends to on one channel: an address that
/// bounced for good or complained, a number that opted out, or one added by
/// hand. `recipient` is normalised as the client normalises `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub channel: Channel,
    pub recipient: String,
    pub reason: String,
    /// What added it: `report:<provider>`, `manual`, ...
    pub source: String,
    /// The message whose report added it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    pub at: Timestamp,
}

/// The suppression list: one entry per channel and recipient.
#[async_trait]
pub trait SuppressionList: Send + Sync + 'static {
    /// Adds the entry; returns false (and keeps the first entry) when the
    /// recipient was already suppressed on that channel.
    async fn add(&self, suppression: &Suppression) -> Result<bool, StoreError>;

    async fn get(
        &self,
        channel: Channel,
        recipient: &str,
    ) -> Result<Option<Suppression>, StoreError>;

    /// Returns whether there was an entry.
    async fn remove(&self, channel: Channel, recipient: &str) -> Result<bool, StoreError>;

    /// Newest first, at most `limit`, optionally of one channel.
    async fn list(
        &self,
        channel: Option<Channel>,
        limit: usize,
    ) -> Result<Vec<Suppression>, StoreError>;
}
