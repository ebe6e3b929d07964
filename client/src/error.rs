use mdc_core::{MessageId, Status};
use serde::{Deserialize, Serialize};

use crate::validate::{ValidationError, Warning};

/// MDC's answer to an accepted message (the body of `202 Accepted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitted {
    pub id: MessageId,
    pub status: Status,
    pub warnings: Vec<Warning>,
    /// True when the idempotency key matched an earlier submission.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The message is invalid: `field` names what to fix. Nothing was sent.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The idempotency key was used before for a different message.
    #[error("{0}")]
    Conflict(ValidationError),
    /// Nothing was accepted; try again later with the same message (its
    /// idempotency key makes the retry safe).
    #[error("cannot accept messages right now: {0}")]
    Unavailable(#[source] mdc_core::ports::BoxError),
    /// MDC refused the request for a reason retrying does not cure: a
    /// missing, unknown or revoked API key (401), a key without the `send`
    /// scope (403), or a request MDC does not understand.
    #[error("refused by MDC ({status}): {message}")]
    Refused { status: u16, message: String },
}

impl From<mdc_core::ports::StoreError> for SubmitError {
    fn from(e: mdc_core::ports::StoreError) -> Self {
        SubmitError::Unavailable(e.into())
    }
}

impl From<mdc_core::ports::QueueError> for SubmitError {
    fn from(e: mdc_core::ports::QueueError) -> Self {
        SubmitError::Unavailable(e.into())
    }
}

/// Why a status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The client has no URL of MDC's HTTP API to read from.
    #[error("reading a status needs MDC's HTTP API: set MDC_URL (Config::api_url)")]
    NoApi,
    #[error("cannot read the status right now: {0}")]
    Unavailable(#[source] mdc_core::ports::BoxError),
    /// 401 or 403: the key is missing, unknown, revoked or lacks `read`.
    #[error("refused by MDC ({status}): {message}")]
    Refused { status: u16, message: String },
}

/// What [`crate::Client::send`] answers: the message's id, to look it up
/// (and to match the outcome events MDC delivers), and any warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub id: MessageId,
    pub warnings: Vec<Warning>,
    /// The idempotency key matched a message MDC had already accepted; `id`
    /// is that message's (over http only: the direct transport cannot know).
    pub duplicate: bool,
}
