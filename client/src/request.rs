use serde::Deserialize;

/// A message as a caller submits it, before validation. Every field is
/// optional here so that a missing one gets an error naming it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub channel: Option<String>,
    pub to: Option<String>,
    pub body: Option<String>,
    /// Email: sender address. SMS: sender id overriding the configured one.
    pub from: Option<String>,
    pub subject: Option<String>,
    /// Email: HTML alternative to `body`.
    pub html: Option<String>,
    /// Push: notification title.
    pub title: Option<String>,
    /// Push: custom data delivered to the app.
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    pub priority: Option<String>,
    #[serde(rename = "type")]
    pub message_type: Option<String>,
    pub idempotency_key: Option<String>,
    /// SMS: registered template (India DLT).
    pub template_id: Option<String>,
    /// Email: files to attach.
    pub attachments: Option<Vec<mdc_core::message::Attachment>>,
    /// The caller's own reference (an order id, say), returned with every
    /// outcome.
    pub reference: Option<String>,
    /// The caller's key-value data, returned with every outcome.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}
