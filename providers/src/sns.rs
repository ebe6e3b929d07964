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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::MessageAttributeValue;
use mdc_core::message::PushTarget;
use mdc_core::ports::{Device, DeviceRegistry, Platform, Provider, ProviderError, Receipt};
use mdc_core::{Channel, Content, Message, MessageId, MessageType};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::aws::{transport_error, AwsConfig, THROTTLE_BACKOFF};
use crate::error::{BuildError, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsConfig {
    #[serde(flatten)]
    pub aws: AwsConfig,
    /// Push only: the platform application per platform
    /// (`apns`, `apns_sandbox`, `fcm`).
    #[serde(default)]
    pub platform_applications: BTreeMap<Platform, String>,
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
            throttled: true,
        },
        "InternalError" | "InternalFailure" | "ServiceUnavailable" => ProviderError::Transient {
            message,
            retry_after: None,
            throttled: false,
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

/// Mobile push through SNS platform endpoints, one platform application per
/// platform. A device token is looked up in the device registry for its
/// platform and endpoint; a `user:` target fans out to every active device of
/// the user. `EndpointDisabled` deactivates that device.
pub struct SnsPushProvider {
    name: String,
    client: aws_sdk_sns::Client,
    applications: BTreeMap<Platform, String>,
    devices: Arc<dyn DeviceRegistry>,
}

/// One device's outcome in a fan-out.
struct DeviceSend {
    token: String,
    result: Result<String, ProviderError>,
}

impl SnsPushProvider {
    pub async fn new(
        name: &str,
        config: &SnsConfig,
        devices: Arc<dyn DeviceRegistry>,
    ) -> Result<Self, ConfigError> {
        if config.platform_applications.is_empty() {
            return Err(ConfigError::new(
                name,
                "platform_applications",
                "push needs at least one platform application ARN (apns, apns_sandbox or fcm)",
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            client: client(name, &config.aws).await?,
            applications: config.platform_applications.clone(),
            devices,
        })
    }

    pub fn serves(&self, platform: Platform) -> bool {
        self.applications.contains_key(&platform)
    }

    /// The endpoint of a device token; SNS returns the existing one for a
    /// token it knows. When the existing endpoint's attributes differ (it was
    /// disabled, say), SNS refuses and names it in the error: that endpoint is
    /// the device's.
    pub async fn endpoint(&self, platform: Platform, token: &str) -> Result<String, ProviderError> {
        let Some(application) = self.applications.get(&platform) else {
            return Err(ProviderError::Permanent {
                code: "NO_APPLICATION".into(),
                message: format!("no platform application for {platform:?}"),
            });
        };
        let result = self
            .client
            .create_platform_endpoint()
            .platform_application_arn(application)
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

    /// The JSON message with the payload for the device's platform.
    fn payload(
        platform: Platform,
        title: Option<&str>,
        body: &str,
        data: &serde_json::Map<String, serde_json::Value>,
    ) -> String {
        let (key, platform_payload) = match platform {
            Platform::Apns | Platform::ApnsSandbox => {
                let mut aps = json!({ "aps": { "alert": { "title": title, "body": body } } });
                for (k, v) in data {
                    aps[k] = v.clone();
                }
                (
                    if platform == Platform::Apns {
                        "APNS"
                    } else {
                        "APNS_SANDBOX"
                    },
                    aps,
                )
            }
            Platform::Fcm => (
                "GCM",
                json!({ "notification": { "title": title, "body": body }, "data": data }),
            ),
        };
        json!({ "default": body, key: platform_payload.to_string() }).to_string()
    }

    /// The registered device for a token, or an unregistered one when only
    /// one platform is configured (it can only be that platform's).
    async fn device_for(&self, token: &str) -> Result<Device, ProviderError> {
        let registered =
            self.devices
                .by_token(token)
                .await
                .map_err(|e| ProviderError::Transient {
                    message: e.to_string(),
                    retry_after: None,
                    throttled: false,
                })?;
        if let Some(device) = registered {
            return Ok(device);
        }
        match self.applications.keys().collect::<Vec<_>>()[..] {
            [only] => Ok(Device::new("", *only, token)),
            _ => Err(ProviderError::Permanent {
                code: "UNREGISTERED_DEVICE".into(),
                message:
                    "the token is not registered (POST /v1/devices), so its platform is unknown"
                        .into(),
            }),
        }
    }

    async fn send_to(
        &self,
        device: &Device,
        title: Option<&str>,
        body: &str,
        data: &serde_json::Map<String, serde_json::Value>,
    ) -> DeviceSend {
        let result = async {
            let endpoint = match &device.endpoint {
                Some(endpoint) => endpoint.clone(),
                None if device.token.starts_with("arn:") => device.token.clone(),
                None => self.endpoint(device.platform, &device.token).await?,
            };
            let output = self
                .client
                .publish()
                .target_arn(&endpoint)
                .message_structure("json")
                .message(Self::payload(device.platform, title, body, data))
                .send()
                .await
                .map_err(classify)?;
            Ok(output.message_id().unwrap_or_default().to_owned())
        }
        .await;
        if let Err(ProviderError::Permanent { code, .. }) = &result {
            if code == "EndpointDisabled" {
                if let Err(e) = self.devices.deactivate(&device.token).await {
                    tracing::warn!(error = %e, "Could not deactivate a disabled device");
                }
            }
        }
        DeviceSend {
            token: device.token.clone(),
            result,
        }
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
        let devices =
            match target {
                PushTarget::DeviceToken(token) => vec![self.device_for(token).await?],
                PushTarget::UserId(user) => {
                    let devices = self.devices.for_user(user).await.map_err(|e| {
                        ProviderError::Transient {
                            message: e.to_string(),
                            retry_after: None,
                            throttled: false,
                        }
                    })?;
                    if devices.is_empty() {
                        return Err(ProviderError::Permanent {
                            code: "NO_DEVICES".into(),
                            message: format!("user {user} has no active device"),
                        });
                    }
                    devices
                }
            };
        let mut sends = Vec::new();
        for device in devices.iter().filter(|d| self.serves(d.platform)) {
            sends.push(self.send_to(device, title.as_deref(), body, data).await);
        }
        let report: Vec<serde_json::Value> = sends
            .iter()
            .map(|s| match &s.result {
                Ok(id) => json!({ "token": s.token, "MessageId": id }),
                Err(e) => json!({ "token": s.token, "error": e.to_string() }),
            })
            .collect();
        // Delivered to at least one device: sent. Otherwise the most hopeful error.
        if let Some(id) = sends.iter().find_map(|s| s.result.as_ref().ok()) {
            return Ok(Receipt {
                provider_message_id: id.clone(),
                raw: json!({ "MessageId": id, "devices": report }),
            });
        }
        let errors: Vec<ProviderError> = sends.into_iter().filter_map(|s| s.result.err()).collect();
        Err(errors
            .iter()
            .find(|e| matches!(e, ProviderError::Ambiguous { .. }))
            .or_else(|| {
                errors
                    .iter()
                    .find(|e| matches!(e, ProviderError::Transient { .. }))
            })
            .or(errors.first())
            .cloned()
            .unwrap_or(ProviderError::Permanent {
                code: "NO_DEVICES".into(),
                message: "no device on a configured platform".into(),
            }))
    }

    async fn lookup(&self, _reference: &MessageId) -> Result<Option<Receipt>, ProviderError> {
        Ok(None)
    }
}
