use serde::{Deserialize, Serialize};

/// A message as a caller submits it, before validation. Every field is
/// optional here so that a missing one gets an error naming it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Email: sender address. SMS: sender id overriding the configured one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Email: HTML alternative to `body`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Push: notification title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Push: custom data delivered to the app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(rename = "type")]
    pub message_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// SMS: registered template (India DLT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// Email: files to attach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<mdc_core::message::Attachment>>,
    /// The caller's own reference (an order id, say), returned with every
    /// outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The caller's key-value data, returned with every outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}
