use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ports::StoreError;
use crate::{Channel, MessageId, Timestamp};

/// A signing secret of an endpoint: `whsec_` and the base64 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSecret {
    pub secret: String,
    /// After a rotation the old secret signs too, until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// Where a client service wants its outcomes delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// `wh_` and a ULID.
    pub id: String,
    /// The service that created it; it receives only that service's
    /// messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub url: String,
    /// Event types it wants (`message.delivered`, ...); empty: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Channels it wants; empty: all.
    #[serde(default)]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub description: String,
    /// Newest first.
    pub secrets: Vec<WebhookSecret>,
    /// Why and when deliveries stopped (a 410, or failing for too long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
    /// Since when every attempt failed; cleared by a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    pub reason: String,
    pub at: Timestamp,
}

/// One try to deliver one event to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookAttempt {
    pub endpoint_id: String,
    pub event_id: String,
    /// 1 for the first try.
    pub attempt: u32,
    pub at: Timestamp,
    /// The HTTP status, when there was an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first KiB of the answer.
    #[serde(default)]
    pub response: String,
    pub succeeded: bool,
    /// The event, kept on failed attempts so it can be delivered again
    /// (`recover`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
}

/// A delivery waiting for its next try, keyed by its timer's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingDelivery {
    /// The id of its timer on the webhook retry scheduler.
    pub key: MessageId,
    pub endpoint_id: String,
    pub event_id: String,
    pub event: serde_json::Value,
    /// Tries made so far.
    pub attempts: u32,
}

/// Webhook endpoints, their attempts and their pending deliveries.
#[async_trait]
pub trait Webhooks: Send + Sync + 'static {
    async fn create(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError>;

    async fn get(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError>;

    /// Every endpoint.
    async fn list(&self) -> Result<Vec<WebhookEndpoint>, StoreError>;

    /// Replaces a stored endpoint; false when there is none.
    async fn update(&self, endpoint: &WebhookEndpoint) -> Result<bool, StoreError>;

    /// Deletes the endpoint, its attempts and pending deliveries.
    async fn delete(&self, id: &str) -> Result<bool, StoreError>;

    async fn record_attempt(&self, attempt: &WebhookAttempt) -> Result<(), StoreError>;

    /// The endpoint's attempts, newest first, at most `limit`, optionally
    /// only those at or after `since`.
    async fn attempts(
        &self,
        endpoint_id: &str,
        since: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<WebhookAttempt>, StoreError>;

    /// Deletes attempts made before `before`; returns how many.
    async fn prune_attempts(&self, before: Timestamp) -> Result<u64, StoreError>;

    async fn save_pending(&self, pending: &PendingDelivery) -> Result<(), StoreError>;

    async fn pending(&self, key: &MessageId) -> Result<Option<PendingDelivery>, StoreError>;

    async fn remove_pending(&self, key: &MessageId) -> Result<(), StoreError>;
}
