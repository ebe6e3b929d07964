//! The delivery report Kaleyra sends to a message's callback URL, as MDC
//! reads it (GET query or POST form/JSON) and as the simulator writes it.

use serde::{Deserialize, Serialize};

/// One delivery report. Kaleyra's status words: `DELIVERED`, `SENT`,
/// `FAILED`, `UNDELIVERED`, `NOTSENT` (any case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackReport {
    #[serde(alias = "id")]
    pub message_id: String,
    pub status: String,
    /// MDC's message id, echoed from the send's `ref`.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
}

/// What a report's status means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Failed,
    /// Intermediate (`SENT`): nothing to record yet.
    Pending,
}

impl CallbackReport {
    pub fn verdict(&self) -> Option<Verdict> {
        match self.status.to_ascii_uppercase().as_str() {
            "DELIVERED" | "DELIVRD" => Some(Verdict::Delivered),
            "FAILED" | "UNDELIVERED" | "UNDELIV" | "NOTSENT" | "REJECTED" | "EXPIRED" => {
                Some(Verdict::Failed)
            }
            "SENT" | "SUBMITTED" | "ACCEPTED" => Some(Verdict::Pending),
            _ => None,
        }
    }
}
