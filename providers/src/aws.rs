//! Shared AWS client configuration for the SES and SNS adapters.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sesv2::config::Credentials;
use aws_smithy_runtime_api::client::result::SdkError;
use mdc_core::ports::ProviderError;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    pub region: String,
    /// Another endpoint than AWS's (a test server, a VPC endpoint).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Environment variables holding static credentials; without them the
    /// default AWS chain is used (environment, profile, instance role).
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// Longest time for one call, retries excluded.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// After an ambiguous send: `wait_for_report` (the default for SES and
    /// SNS SMS, which report back) or `resend` (the default for push).
    #[serde(default)]
    pub after_ambiguous: Option<mdc_core::ports::AfterAmbiguous>,
    /// SNS topics with an HTTPS subscription to
    /// `/v1/callbacks/sns/{provider}` (SES events, push endpoint events);
    /// messages from any other topic are refused.
    #[serde(default)]
    pub events_topic_arns: Vec<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl AwsConfig {
    /// Builds the SDK configuration. The SDK's own retries are off: MDC retries
    /// on its schedule, after asking whether a send is ambiguous.
    pub async fn sdk_config(&self, provider: &str) -> Result<SdkConfig, ConfigError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(self.timeout)
                    .build(),
            );
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        match (&self.access_key_id_env, &self.secret_access_key_env) {
            (Some(id_env), Some(secret_env)) => {
                let id = std::env::var(id_env).map_err(|_| {
                    ConfigError::new(
                        provider,
                        "access_key_id_env",
                        format!("environment variable {id_env} is not set"),
                    )
                })?;
                let secret = std::env::var(secret_env).map_err(|_| {
                    ConfigError::new(
                        provider,
                        "secret_access_key_env",
                        format!("environment variable {secret_env} is not set"),
                    )
                })?;
                loader = loader.credentials_provider(Credentials::new(
                    id,
                    secret,
                    None,
                    None,
                    "mdc-config",
                ));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(ConfigError::new(
                    provider,
                    "secret_access_key_env",
                    "required with access_key_id_env",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    provider,
                    "access_key_id_env",
                    "required with secret_access_key_env",
                ))
            }
        }
        Ok(loader.load().await)
    }
}

/// How long to wait after a throttling answer when AWS does not say.
pub const THROTTLE_BACKOFF: Duration = Duration::from_secs(1);

/// Maps the transport side of an SDK error; service errors are the caller's.
pub fn transport_error<E, R>(error: &SdkError<E, R>) -> Option<ProviderError>
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let message = format!(
        "{}",
        aws_smithy_types::error::display::DisplayErrorContext(error)
    );
    match error {
        SdkError::ServiceError(_) => None,
        // The request may have reached AWS.
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Some(ProviderError::Ambiguous { message })
        }
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            Some(ProviderError::Ambiguous { message })
        }
        SdkError::DispatchFailure(_) => Some(ProviderError::Transient {
            message,
            retry_after: None,
            throttled: false,
        }),
        SdkError::ConstructionFailure(_) => Some(ProviderError::Permanent {
            code: "CONSTRUCTION".into(),
            message,
        }),
        _ => Some(ProviderError::Transient {
            message,
            retry_after: None,
            throttled: false,
        }),
    }
}
