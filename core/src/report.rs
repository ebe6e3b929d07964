use serde::{Deserialize, Serialize};

use crate::{MessageId, Timestamp};

/// The tag (SES message tag, and the like) that carries MDC's message id on
/// a send, so the vendor's events name the message.
pub const MESSAGE_ID_TAG: &str = "mdc_message_id";

/// A vendor's word on a message, normalised into one shape whatever the vendor:
/// what the response listener puts on the responses topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryReport {
    pub provider: String,
    pub provider_message_id: String,
    /// MDC's message id when the vendor echoes it back (preferred for correlation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<MessageId>,
    pub outcome: ReportOutcome,
    /// When MDC received it.
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub at: Timestamp,
    /// When the vendor says it happened, when it says.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::rfc3339::serialize_option"
    )]
    pub vendor_at: Option<Timestamp>,
    /// The vendor's payload, kept verbatim for the event trail.
    #[serde(default)]
    pub raw: serde_json::Value,
    /// What the trail says instead of "vendor report", for a report MDC
    /// made itself (the reconciler's final rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ReportOutcome {
    Delivered,
    /// With `suppress`, the vendor says the recipient cannot or will not
    /// take messages (a permanent bounce, a complaint, an opt-out): MDC adds
    /// it to the suppression list.
    Failed {
        reason: String,
        #[serde(default)]
        suppress: bool,
    },
    /// Something the vendor observed that moves no status (a complaint, a
    /// delay, an open): an event on the message's trail; with `suppress`,
    /// the recipient is suppressed too (a complaint).
    Noted {
        details: String,
        #[serde(default)]
        suppress: bool,
    },
}
