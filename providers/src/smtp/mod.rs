//! Email over SMTP with `lettre`: a pooled async transport, STARTTLS, implicit
//! TLS or plain, with optional authentication.
//!
//! Errors: 5xx replies are permanent; 4xx replies and failures to connect are
//! transient; a timeout is ambiguous (the server may have taken the message).
//! SMTP has no status lookup, so after an ambiguous timeout the message is
//! sent again: SMTP delivery is at least once.

use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use mdc_core::ports::{AfterAmbiguous, Provider, ProviderError, Receipt};
use mdc_core::{Channel, Message};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::ConfigError;
use crate::mime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for local relays and tests.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_security")]
    pub security: Security,
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default = "default_pool")]
    pub pool_size: u32,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// After an ambiguous send: `resend` (the default: SMTP never reports
    /// back) or `wait_for_report`.
    #[serde(default)]
    pub after_ambiguous: Option<AfterAmbiguous>,
}

fn default_security() -> Security {
    Security::Starttls
}

fn default_pool() -> u32 {
    8
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

pub struct SmtpProvider {
    name: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    after_ambiguous: AfterAmbiguous,
}

impl SmtpProvider {
    pub fn new(
        name: &str,
        config: &SmtpConfig,
        password: Option<SecretString>,
    ) -> Result<Self, ConfigError> {
        let error =
            |key: &str, e: &dyn std::fmt::Display| ConfigError::new(name, key, e.to_string());
        let mut builder = match config.security {
            Security::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                    .map_err(|e| error("host", &e))?
            }
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
                .map_err(|e| error("host", &e))?,
            Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
        };
        if let Some(port) = config.port {
            builder = builder.port(port);
        }
        match (&config.username, password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(
                    user.clone(),
                    password.expose_secret().to_owned(),
                ));
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    name,
                    "password_env",
                    "a username needs a password",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    name,
                    "username",
                    "a password needs a username",
                ))
            }
            (None, None) => {}
        }
        if config.pool_size == 0 {
            return Err(ConfigError::new(name, "pool_size", "must be at least 1"));
        }
        let transport = builder
            .timeout(Some(config.timeout))
            .pool_config(PoolConfig::new().max_size(config.pool_size))
            .build();
        Ok(Self {
            name: name.to_owned(),
            transport,
            after_ambiguous: config.after_ambiguous.unwrap_or(AfterAmbiguous::Resend),
        })
    }
}

/// Maps a lettre error to what MDC should do next.
fn classify(error: &lettre::transport::smtp::Error) -> ProviderError {
    let message = error.to_string();
    if error.is_permanent() {
        let code = error
            .status()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "5xx".into());
        ProviderError::Permanent { code, message }
    } else if error.is_timeout() {
        ProviderError::Ambiguous { message }
    } else {
        ProviderError::Transient {
            message,
            retry_after: None,
            throttled: false,
        }
    }
}

#[async_trait]
impl Provider for SmtpProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn channel(&self) -> Channel {
        Channel::Email
    }

    async fn send(&self, message: &Message) -> Result<Receipt, ProviderError> {
        let email = mime::build(message)?;
        let response = self.transport.send(email).await.map_err(|e| classify(&e))?;
        let reply: Vec<&str> = response.message().collect();
        Ok(Receipt {
            provider_message_id: mime::message_id(message),
            raw: json!({ "code": response.code().to_string(), "reply": reply }),
        })
    }

    fn reports(&self) -> bool {
        false
    }

    /// SMTP never reports back: send again.
    fn after_ambiguous(&self) -> AfterAmbiguous {
        self.after_ambiguous
    }
}
