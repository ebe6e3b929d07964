use mdc_core::{Channel, Event, MessageId, MessageType, Priority, Status, Timestamp};
use serde::Deserialize;

/// A message as MDC shows it (`GET /v1/messages/{id}`): where it stands and
/// everything that happened to it. Without the `read:pii` scope the
/// recipient is masked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct MessageStatus {
    pub id: MessageId,
    pub status: Status,
    pub channel: Channel,
    pub priority: Priority,
    #[serde(rename = "type")]
    pub message_type: MessageType,
    pub to: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub reference: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub attempts: u32,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub provider_message_id: Option<String>,
    /// The timeline, oldest first.
    #[serde(default)]
    pub events: Vec<Event>,
}

impl MessageStatus {
    /// `delivered`, `failed`, `expired`, `cancelled`…: nothing more will happen.
    pub fn is_final(&self) -> bool {
        self.status.is_terminal()
    }
}
