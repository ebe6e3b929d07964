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
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::MessageAttributeValue;
use mdc_core::message::PushTarget;
use mdc_core::ports::{
    AfterAmbiguous, Device, DeviceRegistry, Platform, Provider, ProviderError, Receipt,
};
use mdc_core::{Channel, Content, Message, MessageType};
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
    /// SMS only: the delivery-status log group
    /// (`sns/<region>/<account>/DirectPublishToPhoneNumber`); the listener
    /// role reads it and its `/Failure` group for delivery reports.
    #[serde(default)]
    pub delivery_status_log_group: Option<String>,
    /// SMS only: how often the log groups are read.
    #[serde(default = "default_log_interval", with = "humantime_serde")]
    pub delivery_status_interval: std::time::Duration,
}

fn default_log_interval() -> std::time::Duration {
    std::time::Duration::from_secs(30)
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
    after_ambiguous: AfterAmbiguous,
    /// Whether MDC reads the delivery-status logs.
    reports: bool,
}

impl SnsSmsProvider {
    pub async fn new(name: &str, config: &SnsConfig) -> Result<Self, ConfigError> {
        let interval = config.delivery_status_interval;
        if interval < std::time::Duration::from_millis(100)
            || interval > std::time::Duration::from_secs(3600)
        {
            return Err(ConfigError::new(
                name,
                "delivery_status_interval",
                "must be between 100ms and 1h",
            ));
        }
        let reports = config.delivery_status_log_group.is_some();
        Ok(Self {
            reports,
            name: name.to_owned(),
            client: client(name, &config.aws).await?,
            after_ambiguous: config.aws.after_ambiguous.unwrap_or(if reports {
                AfterAmbiguous::WaitForReport
            } else {
                AfterAmbiguous::Resend
            }),
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

    fn reports(&self) -> bool {
        self.reports
    }

    /// SNS logs every SMS's delivery status: when MDC reads the logs, wait
    /// for it; without them, send again.
    fn after_ambiguous(&self) -> AfterAmbiguous {
        self.after_ambiguous
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
    /// Longest wait for one device's publish in a fan-out.
    device_timeout: Duration,
    after_ambiguous: AfterAmbiguous,
}

/// Keys of a push's `data` that would replace what MDC builds: APNs reads
/// `aps` at the top level beside the data; FCM keeps data in its own object.
pub const RESERVED_DATA_KEYS: &[&str] = &["aps", "notification"];

/// Sends to every device at once, each bounded by `limit`. A device that
/// does not answer in time is ambiguous on its own; the others keep their
/// outcome, so a retry never pushes again to a device that took the push.
async fn fan_out<'a, F, Fut>(devices: &'a [&'a Device], limit: Duration, send: F) -> Vec<DeviceSend>
where
    F: Fn(&'a Device) -> Fut,
    Fut: std::future::Future<Output = DeviceSend>,
{
    futures::future::join_all(devices.iter().map(|device| {
        let sending = send(device);
        async move {
            match tokio::time::timeout(limit, sending).await {
                Ok(sent) => sent,
                Err(_) => DeviceSend {
                    token: device.token.clone(),
                    result: Err(ProviderError::Ambiguous {
                        message: format!("no answer from SNS within {limit:?} for this device"),
                    }),
                },
            }
        }
    }))
    .await
}

/// One push's outcome from its devices' outcomes: sent when at least one
/// device took it, otherwise the most hopeful error.
fn settle_devices(sends: Vec<DeviceSend>) -> Result<Receipt, ProviderError> {
    let report: Vec<serde_json::Value> = sends
        .iter()
        .map(|s| match &s.result {
            Ok(id) => json!({ "token": s.token, "MessageId": id }),
            Err(e) => json!({ "token": s.token, "error": e.to_string() }),
        })
        .collect();
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
            device_timeout: Duration::from_secs(8),
            after_ambiguous: config.aws.after_ambiguous.unwrap_or(AfterAmbiguous::Resend),
        })
    }

    /// Bounds each device's publish in a fan-out (default 8 s); keep it
    /// below the router's send timeout.
    pub fn with_device_timeout(mut self, limit: Duration) -> Self {
        self.device_timeout = limit;
        self
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
                    if !RESERVED_DATA_KEYS.contains(&k.as_str()) {
                        aps[k] = v.clone();
                    }
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
            // Only the registry names endpoints: an ARN given as a token
            // could be any topic or endpoint the role may publish to.
            let endpoint = match &device.endpoint {
                Some(endpoint) => endpoint.clone(),
                None if device.token.starts_with("arn:") => {
                    return Err(ProviderError::Permanent {
                        code: "ARN_TARGET".into(),
                        message: "an SNS ARN is not a push target; register the device token"
                            .into(),
                    })
                }
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
                    // A user's devices as the sending service registered
                    // them: another service's registrations are not its own
                    // to push to.
                    let devices: Vec<Device> = devices
                        .into_iter()
                        .filter(|d| message.service.is_none() || d.service == message.service)
                        .collect();
                    if devices.is_empty() {
                        return Err(ProviderError::Permanent {
                            code: "NO_DEVICES".into(),
                            message: format!("user {user} has no active device"),
                        });
                    }
                    devices
                }
            };
        let served: Vec<&Device> = devices.iter().filter(|d| self.serves(d.platform)).collect();
        let sends = fan_out(&served, self.device_timeout, |device| {
            self.send_to(device, title.as_deref(), body, data)
        })
        .await;
        settle_devices(sends)
    }

    /// Push has no per-message delivery report.
    fn reports(&self) -> bool {
        false
    }

    /// Push has no delivery report: send again.
    fn after_ambiguous(&self) -> AfterAmbiguous {
        self.after_ambiguous
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(token: &str) -> Device {
        Device::new("alice", Platform::Fcm, token)
    }

    /// One device that never answers: the others keep their outcome and the
    /// push counts as sent, so nothing is pushed again.
    #[tokio::test(start_paused = true)]
    async fn a_slow_device_does_not_make_the_whole_push_ambiguous() {
        let devices = [
            device("tok-fast-1"),
            device("tok-slow"),
            device("tok-fast-2"),
        ];
        let refs: Vec<&Device> = devices.iter().collect();
        let started = tokio::time::Instant::now();
        let sends = fan_out(&refs, Duration::from_secs(6), |d| async move {
            if d.token == "tok-slow" {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            DeviceSend {
                token: d.token.clone(),
                result: Ok(format!("id-{}", d.token)),
            }
        })
        .await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(6),
            "devices are pushed at once, each within its own bound"
        );
        assert!(matches!(
            sends[1].result,
            Err(ProviderError::Ambiguous { .. })
        ));
        let receipt = settle_devices(sends).expect("sent to two of three");
        assert_eq!(receipt.provider_message_id, "id-tok-fast-1");
        assert_eq!(receipt.raw["devices"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn no_device_taking_it_gives_the_most_hopeful_error() {
        let failed = |token: &str, error: ProviderError| DeviceSend {
            token: token.into(),
            result: Err(error),
        };
        let refused = ProviderError::Permanent {
            code: "EndpointDisabled".into(),
            message: "disabled".into(),
        };
        let sends = vec![
            failed("a-token-1", refused.clone()),
            failed("a-token-2", ProviderError::transient("503")),
        ];
        assert!(matches!(
            settle_devices(sends),
            Err(ProviderError::Transient { .. })
        ));
        assert!(matches!(
            settle_devices(vec![failed("a-token-1", refused)]),
            Err(ProviderError::Permanent { .. })
        ));
    }

    #[test]
    fn data_cannot_replace_the_aps_block() {
        let mut data = serde_json::Map::new();
        data.insert("aps".into(), json!({ "alert": "spoofed", "badge": 99 }));
        data.insert("order".into(), json!(42));
        let payload =
            SnsPushProvider::payload(Platform::Apns, Some("Shipped"), "On its way", &data);
        let outer: serde_json::Value = serde_json::from_str(&payload).expect("json");
        let apns: serde_json::Value =
            serde_json::from_str(outer["APNS"].as_str().expect("APNS")).expect("json");
        assert_eq!(apns["aps"]["alert"]["body"], "On its way");
        assert!(apns["aps"].get("badge").is_none());
        assert_eq!(apns["order"], 42);
    }
}
