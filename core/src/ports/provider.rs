use std::time::Duration;

use async_trait::async_trait;

use crate::{Channel, Message, MessageId};

/// The vendor accepted the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub provider_message_id: String,
    pub raw: serde_json::Value,
}

/// Why a send did not succeed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The vendor refused the message for good (bad number, unverified sender, ...).
    #[error("permanent: {message}")]
    Permanent { code: String, message: String },
    /// Trying again later can succeed; the vendor may say when. `throttled`
    /// says the vendor asked MDC to slow down (HTTP 429, `Throttling`): the
    /// router then lowers that provider's rate.
    #[error("transient: {message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
        throttled: bool,
    },
    /// The request may or may not have reached the vendor (e.g. a timeout after
    /// sending). Ask the vendor before sending again.
    #[error("ambiguous: {message}")]
    Ambiguous { message: String },
}

impl ProviderError {
    /// A transient error that says nothing about the vendor's load.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            retry_after: None,
            throttled: false,
        }
    }

    /// The vendor asked to slow down, perhaps saying for how long.
    pub fn throttled(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self::Transient {
            message: message.into(),
            retry_after,
            throttled: true,
        }
    }

    pub fn is_throttled(&self) -> bool {
        matches!(
            self,
            Self::Transient {
                throttled: true,
                ..
            }
        )
    }

    /// Whether another attempt can succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent { .. })
    }
}

/// What a vendor says when asked whether it holds a message sent with
/// MDC's id as its reference.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Receipt),
    NotFound,
    /// The vendor cannot be asked by MDC's id (Kaleyra's status API takes
    /// its own ids; SES, SNS and SMTP have none).
    CannotTell,
}

/// What to do after an ambiguous send to a vendor that cannot tell whether
/// it got the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterAmbiguous {
    /// Do not send again: the message is recorded as sent, unconfirmed,
    /// and the vendor's report (matched by MDC's id) settles it. For
    /// vendors that report back.
    WaitForReport,
    /// Send again: a duplicate is possible, a loss is not. For vendors
    /// that never report (SMTP).
    Resend,
}

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Stable name used in events, config and metrics.
    fn name(&self) -> &str;

    fn channel(&self) -> Channel;

    async fn send(&self, message: &Message) -> Result<Receipt, ProviderError>;

    /// Asks the vendor whether it already holds a message sent with MDC's id as
    /// its reference; used after an ambiguous outcome so nothing is sent twice.
    async fn lookup(&self, _reference: &MessageId) -> Result<Lookup, ProviderError> {
        Ok(Lookup::CannotTell)
    }

    /// Whether [`pull`](Self::pull) can ask the vendor about messages by
    /// its own ids.
    fn can_pull(&self) -> bool {
        false
    }

    /// The vendor's word on messages it accepted, by its ids: the final
    /// outcome of each it knows one for (a message still on its way, or
    /// unknown to it, is left out).
    async fn pull(
        &self,
        _provider_message_ids: &[String],
    ) -> Result<Vec<(String, crate::ReportOutcome, serde_json::Value)>, ProviderError> {
        Ok(Vec::new())
    }

    /// Whether the vendor reports what became of a message (callbacks,
    /// events, delivery logs that MDC reads). A message `sent` through a
    /// provider that never reports is taken as delivered once the
    /// reconciler's `report_timeout` passes; through one that reports, it
    /// waits for the report up to `final_timeout`.
    fn reports(&self) -> bool {
        true
    }

    /// The policy when [`lookup`](Self::lookup) cannot tell.
    fn after_ambiguous(&self) -> AfterAmbiguous {
        AfterAmbiguous::Resend
    }
}
