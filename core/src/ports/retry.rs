use async_trait::async_trait;

use crate::{Channel, MessageId, Priority, Timestamp};

/// A pending attempt: when it is due and which lane the message goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryItem {
    pub message_id: MessageId,
    pub channel: Channel,
    pub priority: Priority,
    pub due: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("retry scheduler unavailable: {0}")]
    Unavailable(#[source] super::BoxError),
    #[error("retry scheduler error: {0}")]
    Other(#[source] super::BoxError),
}

/// Durable timers: at most one pending item per message.
#[async_trait]
pub trait RetryScheduler: Send + Sync + 'static {
    /// Schedules (or reschedules) the message's next attempt.
    async fn schedule(&self, item: RetryItem) -> Result<(), RetryError>;

    /// Drops the message's pending item, if any.
    async fn cancel(&self, message_id: &MessageId) -> Result<(), RetryError>;

    /// Waits until items are due and hands each due item out once; returns an
    /// empty batch after a quiet interval so callers can check for shutdown.
    /// An item handed out but never completed is handed out again after a
    /// restart (backends shared by several processes: after an in-flight
    /// lease), so firing is at least once; the dispatcher's claim makes a
    /// repeated firing harmless.
    async fn take_due(&self, max: usize) -> Result<Vec<RetryItem>, RetryError>;

    /// Marks a handed-out item as done. Completing an item that was
    /// rescheduled in between leaves the newer schedule in place.
    async fn complete(&self, item: &RetryItem) -> Result<(), RetryError>;

    /// Whether the timers' backend answers now (for readiness probes).
    async fn ready(&self) -> Result<(), RetryError> {
        Ok(())
    }
}
