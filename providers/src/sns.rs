//! SMS and mobile push through AWS SNS (`aws-sdk-sns`).
//!
//! SMS: `Publish` to the number with `AWS.SNS.SMS.SMSType` (Transactional for
//! OTP and transactional messages, Promotional for marketing) and
//! `AWS.SNS.SMS.SenderID` when the sender is alphanumeric.
//!
//! Push: the device token gets a platform endpoint in the configured platform
//! application (`CreatePlatformEndpoint` is idempotent per token), then a
//! `Publish` with per-platform payloads (APNs `aps.alert`, FCM
//! `notification`/`data`). An `EndpointDisabled` answer fails the message
//! permanently: the device no longer takes notifications.
//!
//! Errors: throttling and internal errors are transient; authorization,
//! invalid parameters, unknown or disabled targets are permanent; timeouts
//! are ambiguous (SNS has no status lookup, so they are sent again).

use std::fmt;

use async_trait::async_trait;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::MessageAttributeValue;
use mdc_core::message::PushTarget;
use mdc_core::ports::{Provider, ProviderError, Receipt};
use mdc_core::{Channel, Content, Message, MessageId, MessageType};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::aws::{transport_error, AwsConfig, THROTTLE_BACKOFF};
use crate::error::{BuildError, ConfigError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Apns,
    ApnsSandbox,
    Fcm,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsConfig {
    #[serde(flatten)]
    pub aws: AwsConfig,
    /// Push only: the platform application devices are registered in.
    #[serde(default)]
    pub platform_application_arn: Option<String>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// Maps any SNS error: `code` is the AWS error code.
fn classify<E, R>(error: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    if let Some(mapped) = transport_error(&error) {
        return mapped;
    }
    let code = error.code().unwrap_or("Unknown").to_owned();
    let message = format!("{code}: {}", error.message().unwrap_or("no message"));
    match code.as_str() {
        c if c.starts_with("Throttl") || c == "KMSThrottling" => ProviderError::Transient {
            message,
            retry_after: Some(THROTTLE_BACKOFF),
        },
        "InternalError" | "InternalFailure" | "ServiceUnavailable" => ProviderError::Transient {
            message,
            retry_after: None,
        },
        _ => ProviderError::Permanent { code, message },
    }
}

async fn client(name: &str, aws: &AwsConfig) -> Result<aws_sdk_sns::Client, ConfigError> {
    Ok(aws_sdk_sns::Client::new(&aws.sdk_config(name).await?))
}

fn receipt(id: Option<&str>) -> Receipt {
    let id = id.unwrap_or_default().to_owned();
    Receipt {
        raw: json!({ "MessageId": id }),
        provider_message_id: id,
    }
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, ProviderError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| BuildError(e.to_string()).into())
}

/// SMS through SNS.
pub struct SnsSmsProvider {
    name: String,
    client: aws_sdk_sns::Client,
}

impl SnsSmsProvider {
    pub async fn new(name: &str, config: &SnsConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            name: name.to_owned(),
            client: client(name, &config.aws).await?,
        })
    }
}

#[async_trait]
impl Provider for SnsSmsProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn channel(&self) -> Channel {
        Channel::Sms
    }

    async fn send(&self, message: &Message) -> Result<Receipt, ProviderError> {
        let Content::Sms { body, .. } = &message.content else {
            return Err(BuildError("not an SMS".into()).into());
        };
        let sms_type = match message.message_type {
            MessageType::Marketing => "Promotional",
            MessageType::Otp | MessageType::Transactional => "Transactional",
        };
        let mut publish = self
            .client
            .publish()
            .phone_number(&message.to)
            .message(body)
            .message_attributes("AWS.SNS.SMS.SMSType", string_attribute(sms_type)?);
        // Sender ids are alphanumeric (1-11); numeric senders are origination numbers.
        if let Some(sender) = message
            .sender
            .as_deref()
            .filter(|s| s.chars().any(|c| c.is_ascii_alphabetic()))
        {
            publish = publish.message_attributes("AWS.SNS.SMS.SenderID", string_attribute(sender)?);
        }
        let output = publish.send().await.map_err(classify)?;
        Ok(receipt(output.message_id()))
    }

    async fn lookup(&self, _reference: &MessageId) -> Result<Option<Receipt>, ProviderError> {
        Ok(None)
    }
}

/// Mobile push through SNS platform endpoints.
pub struct SnsPushProvider {
    name: String,
    client: aws_sdk_sns::Client,
    application_arn: String,
    platform: Platform,
}

impl SnsPushProvider {
    pub async fn new(name: &str, config: &SnsConfig) -> Result<Self, ConfigError> {
        let application_arn = config.platform_application_arn.clone().ok_or_else(|| {
            ConfigError::new(name, "platform_application_arn", "required for push")
        })?;
        let platform = config.platform.ok_or_else(|| {
            ConfigError::new(
                name,
                "platform",
                "required for push: apns, apns_sandbox or fcm",
            )
        })?;
        Ok(Self {
            name: name.to_owned(),
            client: client(name, &config.aws).await?,
            application_arn,
            platform,
        })
    }

    /// The endpoint of a device token; SNS returns the existing one for a
    /// token it knows. When the existing endpoint's attributes differ (it was
    /// disabled, say), SNS refuses and names it in the error: that endpoint is
    /// the device's.
    pub async fn endpoint(&self, token: &str) -> Result<String, ProviderError> {
        let result = self
            .client
            .create_platform_endpoint()
            .platform_application_arn(&self.application_arn)
            .token(token)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                let existing = error
                    .message()
                    .filter(|m| m.contains("already exists"))
                    .and_then(|m| m.split_whitespace().find(|w| w.starts_with("arn:")))
                    .map(str::to_owned);
                return existing.ok_or_else(|| classify(error));
            }
        };
        output
            .endpoint_arn()
            .map(str::to_owned)
            .ok_or_else(|| ProviderError::Ambiguous {
                message: "SNS returned no endpoint ARN".into(),
            })
    }

    /// The JSON message with one payload per platform.
    fn payload(
        &self,
        title: Option<&str>,
        body: &str,
        data: &serde_json::Map<String, serde_json::Value>,
    ) -> String {
        let platform_payload = match self.platform {
            Platform::Apns | Platform::ApnsSandbox => {
                let mut aps = json!({ "aps": { "alert": { "title": title, "body": body } } });
                for (k, v) in data {
                    aps[k] = v.clone();
                }
                aps
            }
            Platform::Fcm => {
                json!({ "notification": { "title": title, "body": body }, "data": data })
            }
        };
        let key = match self.platform {
            Platform::Apns => "APNS",
            Platform::ApnsSandbox => "APNS_SANDBOX",
            Platform::Fcm => "GCM",
        };
        json!({ "default": body, key: platform_payload.to_string() }).to_string()
    }
}

#[async_trait]
impl Provider for SnsPushProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn channel(&self) -> Channel {
        Channel::Push
    }

    async fn send(&self, message: &Message) -> Result<Receipt, ProviderError> {
        let Content::Push {
            target,
            title,
            body,
            data,
        } = &message.content
        else {
            return Err(BuildError("not a push notification".into()).into());
        };
        let token = match target {
            PushTarget::DeviceToken(token) => token,
            PushTarget::UserId(_) => {
                return Err(ProviderError::Permanent {
                    code: "NO_DEVICES".into(),
                    message: "user targets need the device registry; send to a device token".into(),
                })
            }
        };
        let endpoint = if token.starts_with("arn:") {
            token.clone()
        } else {
            self.endpoint(token).await?
        };
        let output = self
            .client
            .publish()
            .target_arn(&endpoint)
            .message_structure("json")
            .message(self.payload(title.as_deref(), body, data))
            .send()
            .await
            .map_err(classify)?;
        let mut receipt = receipt(output.message_id());
        receipt.raw["EndpointArn"] = json!(endpoint);
        Ok(receipt)
    }

    async fn lookup(&self, _reference: &MessageId) -> Result<Option<Receipt>, ProviderError> {
        Ok(None)
    }
}
