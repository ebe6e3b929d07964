//! Email through AWS SES v2 (`aws-sdk-sesv2`): simple text, HTML plus text, or
//! raw MIME when there are attachments. Every send names the configuration set
//! (when configured) and carries the MDC message id as a message tag, so SES
//! events correlate with the message.
//!
//! Errors: throttling (`TooManyRequests`, `LimitExceeded`) is transient;
//! sending paused or account suspended is transient with a long retry-after
//! (an operator has to act); rejected messages, unverified senders, unknown
//! configuration sets and bad requests are permanent. Timeouts are ambiguous;
//! SES has no status lookup, so an ambiguous send is sent again.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sesv2::error::SdkError;
use aws_sdk_sesv2::operation::send_email::SendEmailError;
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{
    Body, Content as SesContent, Destination, EmailContent, Message as SesMessage, MessageTag,
    RawMessage,
};
use mdc_core::ports::{AfterAmbiguous, Provider, ProviderError, Receipt};
use mdc_core::{Channel, Content, Message};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::aws::{transport_error, AwsConfig, THROTTLE_BACKOFF};
use crate::error::{BuildError, ConfigError};
use crate::mime;

/// Retry-after when SES has paused sending: long enough not to hammer it,
/// short enough to resume soon after an operator fixes the account.
pub const PAUSED_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// The message tag holding MDC's id.
pub const TAG: &str = mdc_core::report::MESSAGE_ID_TAG;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SesConfig {
    #[serde(flatten)]
    pub aws: AwsConfig,
    #[serde(default)]
    pub configuration_set: Option<String>,
    /// The SQS queue the configuration set's event destination (an SNS
    /// topic) delivers to; the listener role polls it for SES events.
    #[serde(default)]
    pub events_queue_url: Option<String>,
}

pub struct SesProvider {
    name: String,
    client: aws_sdk_sesv2::Client,
    configuration_set: Option<String>,
    after_ambiguous: AfterAmbiguous,
    /// Whether MDC reads this provider's events (SQS or HTTPS).
    reports: bool,
}

impl SesProvider {
    pub async fn new(name: &str, config: &SesConfig) -> Result<Self, ConfigError> {
        let sdk = config.aws.sdk_config(name).await?;
        let reports = config.events_queue_url.is_some() || !config.aws.events_topic_arns.is_empty();
        Ok(Self {
            reports,
            name: name.to_owned(),
            client: aws_sdk_sesv2::Client::new(&sdk),
            configuration_set: config.configuration_set.clone(),
            after_ambiguous: config.aws.after_ambiguous.unwrap_or(if reports {
                AfterAmbiguous::WaitForReport
            } else {
                AfterAmbiguous::Resend
            }),
        })
    }

    fn content(message: &Message) -> Result<EmailContent, BuildError> {
        let Content::Email {
            subject,
            text,
            html,
            attachments,
            ..
        } = &message.content
        else {
            return Err(BuildError("not an email".into()));
        };
        if !attachments.is_empty() {
            let raw = mime::build(message)?.formatted();
            let raw = RawMessage::builder()
                .data(Blob::new(raw))
                .build()
                .map_err(|e| BuildError(e.to_string()))?;
            return Ok(EmailContent::builder().raw(raw).build());
        }
        let text_part = |data: &str| SesContent::builder().data(data).charset("UTF-8").build();
        let mut body = Body::builder();
        if let Some(text) = text {
            body = body.text(text_part(text).map_err(|e| BuildError(e.to_string()))?);
        }
        if let Some(html) = html {
            body = body.html(text_part(html).map_err(|e| BuildError(e.to_string()))?);
        }
        let simple = SesMessage::builder()
            .subject(text_part(subject).map_err(|e| BuildError(e.to_string()))?)
            .body(body.build())
            .build();
        Ok(EmailContent::builder().simple(simple).build())
    }
}

fn classify(error: SdkError<SendEmailError>) -> ProviderError {
    if let Some(mapped) = transport_error(&error) {
        return mapped;
    }
    let service = error.into_service_error();
    let message = service.to_string();
    let code = service.meta().code().unwrap_or("Unknown").to_owned();
    match service {
        SendEmailError::TooManyRequestsException(_) | SendEmailError::LimitExceededException(_) => {
            ProviderError::Transient {
                message,
                retry_after: Some(THROTTLE_BACKOFF),
                throttled: true,
            }
        }
        SendEmailError::SendingPausedException(_)
        | SendEmailError::AccountSuspendedException(_) => ProviderError::Transient {
            message,
            retry_after: Some(PAUSED_BACKOFF),
            throttled: false,
        },
        SendEmailError::MessageRejected(_)
        | SendEmailError::MailFromDomainNotVerifiedException(_)
        | SendEmailError::NotFoundException(_)
        | SendEmailError::BadRequestException(_) => ProviderError::Permanent { code, message },
        // Unmodelled: AWS's 5xx-class faults are worth another try.
        _ if code.contains("Internal") || code.contains("Unavailable") => {
            ProviderError::Transient {
                message,
                retry_after: None,
                throttled: false,
            }
        }
        _ => ProviderError::Permanent { code, message },
    }
}

#[async_trait]
impl Provider for SesProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn channel(&self) -> Channel {
        Channel::Email
    }

    async fn send(&self, message: &Message) -> Result<Receipt, ProviderError> {
        let Content::Email { from, .. } = &message.content else {
            return Err(BuildError("not an email".into()).into());
        };
        let tag = MessageTag::builder()
            .name(TAG)
            .value(message.id.as_str())
            .build()
            .map_err(|e| ProviderError::from(BuildError(e.to_string())))?;
        let output = self
            .client
            .send_email()
            .from_email_address(from)
            .destination(Destination::builder().to_addresses(&message.to).build())
            .content(Self::content(message)?)
            .set_configuration_set_name(self.configuration_set.clone())
            .email_tags(tag)
            .send()
            .await
            .map_err(classify)?;
        let id = output.message_id().unwrap_or_default().to_owned();
        Ok(Receipt {
            raw: json!({ "MessageId": id }),
            provider_message_id: id,
        })
    }

    fn reports(&self) -> bool {
        self.reports
    }

    /// SES reports every message (event publishing) when MDC reads its
    /// events: wait for the report; without them, send again.
    fn after_ambiguous(&self) -> AfterAmbiguous {
        self.after_ambiguous
    }
}
