use std::time::Duration;

use async_trait::async_trait;

use crate::ports::StoreError;
use crate::{Channel, MessageId};

/// What a vendor message id leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedMessage {
    pub message_id: MessageId,
    pub channel: Channel,
}

/// A short-lived map from a vendor's message id to MDC's message, filled when
/// a message is sent, so vendor reports that carry only the vendor's id find
/// their message without a store query.
#[async_trait]
pub trait MessageCache: Send + Sync + 'static {
    async fn put(
        &self,
        provider: &str,
        provider_message_id: &str,
        entry: CachedMessage,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    async fn get(
        &self,
        provider: &str,
        provider_message_id: &str,
    ) -> Result<Option<CachedMessage>, StoreError>;

    /// Whether the cache's backend answers now (for readiness probes).
    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
