use std::time::Duration;

use async_trait::async_trait;
use mdc_core::message::SmsEncoding;
use mdc_core::ports::{AfterAmbiguous, Provider, ProviderError, Receipt};
use mdc_core::{Channel, Content, Message, MessageType, ReportOutcome};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KaleyraConfig {
    /// `https://api.kaleyra.io` or a regional host.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    pub sid: String,
    /// Environment variable holding the API key.
    pub api_key_env: String,
    /// MDC's public URL of the Kaleyra callback endpoint
    /// (`…/v1/callbacks/kaleyra`).
    pub callback_url: String,
    /// Environment variable holding the callback token.
    pub callback_token_env: String,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// After an ambiguous send: `wait_for_report` (the default) or `resend`.
    #[serde(default)]
    pub after_ambiguous: Option<AfterAmbiguous>,
}

fn default_base_url() -> String {
    "https://api.kaleyra.io".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The secrets a Kaleyra provider needs, read from the environment.
pub struct KaleyraSecrets {
    pub api_key: SecretString,
    pub callback_token: SecretString,
}

impl KaleyraSecrets {
    pub fn from_env(name: &str, config: &KaleyraConfig) -> Result<Self, ConfigError> {
        let read = |key: &str, var: &str| {
            std::env::var(var).map(SecretString::from).map_err(|_| {
                ConfigError::new(name, key, format!("environment variable {var} is not set"))
            })
        };
        Ok(Self {
            api_key: read("api_key_env", &config.api_key_env)?,
            callback_token: read("callback_token_env", &config.callback_token_env)?,
        })
    }
}

pub struct KaleyraProvider {
    name: String,
    http: reqwest::Client,
    messages_url: String,
    status_url: String,
    callback_url: String,
    api_key: SecretString,
    after_ambiguous: AfterAmbiguous,
}

impl KaleyraProvider {
    pub fn new(
        name: &str,
        config: &KaleyraConfig,
        secrets: KaleyraSecrets,
    ) -> Result<Self, ConfigError> {
        let base = reqwest::Url::parse(&config.base_url)
            .map_err(|e| ConfigError::new(name, "base_url", e.to_string()))?;
        let mut callback = reqwest::Url::parse(&config.callback_url)
            .map_err(|e| ConfigError::new(name, "callback_url", e.to_string()))?;
        callback
            .query_pairs_mut()
            .append_pair("token", secrets.callback_token.expose_secret());
        if config.sid.is_empty() || !config.sid.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ConfigError::new(
                name,
                "sid",
                "must be the account SID (letters and digits)",
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| ConfigError::new(name, "timeout", e.to_string()))?;
        let root = base.as_str().trim_end_matches('/');
        Ok(Self {
            name: name.to_owned(),
            http,
            messages_url: format!("{root}/v1/{}/messages", config.sid),
            status_url: format!("{root}/v1/{}/messages/status", config.sid),
            callback_url: callback.to_string(),
            api_key: secrets.api_key,
            after_ambiguous: config
                .after_ambiguous
                .unwrap_or(AfterAmbiguous::WaitForReport),
        })
    }

    /// Asks Kaleyra for the status of messages by their Kaleyra ids.
    pub async fn status(&self, message_ids: &[&str]) -> Result<Value, ProviderError> {
        let response = self
            .http
            .get(&self.status_url)
            .header("api-key", self.api_key.expose_secret())
            .query(&[("message_ids", message_ids.join(","))])
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| ProviderError::Transient {
                message: e.to_string(),
                retry_after: None,
                throttled: false,
            })?;
        if !status.is_success() {
            return Err(http_error(status, None, &body));
        }
        Ok(body)
    }
}

fn message_type(kind: MessageType) -> &'static str {
    match kind {
        MessageType::Otp => "OTP",
        MessageType::Transactional => "TXN",
        MessageType::Marketing => "MKT",
    }
}

/// Errors before an answer: a timeout after sending is ambiguous; failing to
/// connect is not.
fn request_error(error: reqwest::Error) -> ProviderError {
    let message = error.to_string();
    if error.is_timeout() {
        ProviderError::Ambiguous { message }
    } else if error.is_connect() {
        ProviderError::Transient {
            message,
            retry_after: None,
            throttled: false,
        }
    } else if error.is_request() || error.is_body() || error.is_decode() {
        // The connection broke while the request or answer was in flight.
        ProviderError::Ambiguous { message }
    } else {
        ProviderError::Transient {
            message,
            retry_after: None,
            throttled: false,
        }
    }
}

fn http_error(status: StatusCode, retry_after: Option<Duration>, body: &Value) -> ProviderError {
    let message = format!(
        "HTTP {status}: {}",
        body.get("error").or(body.get("message")).unwrap_or(body)
    );
    match status {
        StatusCode::TOO_MANY_REQUESTS => ProviderError::Transient {
            message,
            retry_after: retry_after.or(Some(Duration::from_secs(1))),
            throttled: true,
        },
        s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => ProviderError::Transient {
            message,
            retry_after,
            throttled: false,
        },
        s => ProviderError::Permanent {
            code: s.as_u16().to_string(),
            message,
        },
    }
}

#[async_trait]
impl Provider for KaleyraProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn channel(&self) -> Channel {
        Channel::Sms
    }

    async fn send(&self, message: &Message) -> Result<Receipt, ProviderError> {
        let Content::Sms {
            body,
            encoding,
            template_id,
            ..
        } = &message.content
        else {
            return Err(ProviderError::Permanent {
                code: "BUILD".into(),
                message: "not an SMS".into(),
            });
        };
        let callback = json!({ "url": self.callback_url, "method": "POST" }).to_string();
        let mut form = vec![
            ("to", message.to.clone()),
            ("type", message_type(message.message_type).to_owned()),
            ("body", body.clone()),
            ("ref", message.id.to_string()),
            ("callback", callback),
        ];
        if let Some(sender) = &message.sender {
            form.push(("sender", sender.clone()));
        }
        if let Some(template) = template_id {
            form.push(("template_id", template.clone()));
        }
        if *encoding == SmsEncoding::Ucs2 {
            form.push(("unicode", "1".to_owned()));
        }
        let response = self
            .http
            .post(&self.messages_url)
            .header("api-key", self.api_key.expose_secret())
            .form(&form)
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let body: Value = match response.json().await {
            Ok(body) => body,
            // An accepted request whose answer we cannot read.
            Err(e) if status.is_success() => {
                return Err(ProviderError::Ambiguous {
                    message: e.to_string(),
                })
            }
            Err(_) => Value::Null,
        };
        if !status.is_success() {
            return Err(http_error(status, retry_after, &body));
        }
        let id =
            body["data"][0]["message_id"]
                .as_str()
                .ok_or_else(|| ProviderError::Ambiguous {
                    message: format!("no message_id in Kaleyra's answer: {body}"),
                })?;
        Ok(Receipt {
            provider_message_id: id.to_owned(),
            raw: body,
        })
    }

    fn can_pull(&self) -> bool {
        true
    }

    /// `GET …/messages/status?message_ids=…`: Delivered, Failed /
    /// UnDelivered / NotSent are final; Sent and unknown ids are left out.
    async fn pull(
        &self,
        provider_message_ids: &[String],
    ) -> Result<Vec<(String, ReportOutcome, serde_json::Value)>, ProviderError> {
        let ids: Vec<&str> = provider_message_ids.iter().map(String::as_str).collect();
        let body = self.status(&ids).await?;
        let rows = body["data"].as_array().cloned().unwrap_or_default();
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let id = row["message_id"].as_str()?.to_owned();
                let status = row["status"].as_str().unwrap_or_default();
                let outcome = match status.to_ascii_lowercase().as_str() {
                    "delivered" => ReportOutcome::Delivered,
                    "failed" | "undelivered" | "notsent" => ReportOutcome::Failed {
                        reason: format!("Kaleyra status {status}"),
                        suppress: false,
                    },
                    _ => return None,
                };
                Some((id, outcome, row))
            })
            .collect())
    }

    /// Kaleyra's status API is keyed by its own ids, which an ambiguous send
    /// never returned, so a lookup cannot tell; its callback (which echoes
    /// MDC's id) settles the message instead.
    fn after_ambiguous(&self) -> AfterAmbiguous {
        self.after_ambiguous
    }
}
