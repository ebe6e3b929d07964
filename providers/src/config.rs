//! Providers from the config file, validated and built into adapters.
//! Errors name the config key. Routes over them are the dispatcher's
//! (`mdc_dispatcher::routing`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mdc_core::ports::{DeviceRegistry, Provider};
use mdc_core::Channel;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::kaleyra::{KaleyraConfig, KaleyraProvider};
use crate::ses::{SesConfig, SesProvider};
use crate::smtp::{SmtpConfig, SmtpProvider};
use crate::sns::{SnsConfig, SnsPushProvider, SnsSmsProvider};

/// One `[providers.NAME]` table; `kind` picks the vendor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderConfig {
    Kaleyra(KaleyraConfig),
    Ses(SesConfig),
    SnsSms(SnsConfig),
    SnsPush(SnsConfig),
    Smtp(SmtpConfig),
}

impl ProviderConfig {
    /// The adapter's own bound on one vendor call.
    pub fn timeout(&self) -> std::time::Duration {
        match self {
            ProviderConfig::Kaleyra(c) => c.timeout,
            ProviderConfig::Ses(c) => c.aws.timeout,
            ProviderConfig::SnsSms(c) | ProviderConfig::SnsPush(c) => c.aws.timeout,
            ProviderConfig::Smtp(c) => c.timeout,
        }
    }

    /// The AWS settings of an AWS provider.
    pub fn aws(&self) -> Option<&crate::aws::AwsConfig> {
        match self {
            ProviderConfig::Ses(c) => Some(&c.aws),
            ProviderConfig::SnsSms(c) | ProviderConfig::SnsPush(c) => Some(&c.aws),
            ProviderConfig::Kaleyra(_) | ProviderConfig::Smtp(_) => None,
        }
    }

    pub fn channel(&self) -> Channel {
        match self {
            ProviderConfig::Kaleyra(_) | ProviderConfig::SnsSms(_) => Channel::Sms,
            ProviderConfig::Ses(_) | ProviderConfig::Smtp(_) => Channel::Email,
            ProviderConfig::SnsPush(_) => Channel::Push,
        }
    }
}

/// The configured adapters, and what the rest of MDC needs from them.
pub struct Adapters {
    /// Every `[providers.NAME]`, by name.
    pub by_name: BTreeMap<String, Arc<dyn Provider>>,
    /// Callback tokens of the Kaleyra providers, by provider name.
    pub kaleyra_tokens: HashMap<String, SecretString>,
    /// Push providers that register device endpoints.
    pub push_endpoints: Vec<Arc<SnsPushProvider>>,
}

async fn build_one(
    name: &str,
    config: &ProviderConfig,
    tokens: &mut HashMap<String, SecretString>,
    devices: &Arc<dyn DeviceRegistry>,
    push: &mut Vec<Arc<SnsPushProvider>>,
    send_timeout: std::time::Duration,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let timeout = config.timeout();
    if timeout < std::time::Duration::from_millis(100)
        || timeout > std::time::Duration::from_secs(600)
    {
        return Err(ConfigError::new(
            name,
            "timeout",
            "must be between 100ms and 10m",
        ));
    }
    Ok(match config {
        ProviderConfig::Kaleyra(k) => {
            let secrets = crate::kaleyra::KaleyraSecrets::from_env(name, k)?;
            tokens.insert(name.to_owned(), secrets.callback_token.clone());
            Arc::new(KaleyraProvider::new(name, k, secrets)?)
        }
        ProviderConfig::Ses(c) => Arc::new(SesProvider::new(name, c).await?),
        ProviderConfig::SnsSms(c) => Arc::new(SnsSmsProvider::new(name, c).await?),
        ProviderConfig::SnsPush(c) => {
            // Each device of a fan-out gets its own bound, inside the
            // router's: one slow device cannot make the whole push ambiguous.
            let provider = Arc::new(
                SnsPushProvider::new(name, c, devices.clone())
                    .await?
                    .with_device_timeout(send_timeout * 3 / 4),
            );
            push.push(provider.clone());
            provider
        }
        ProviderConfig::Smtp(c) => {
            let password = match &c.password_env {
                Some(var) => Some(SecretString::from(std::env::var(var).map_err(|_| {
                    ConfigError::new(
                        name,
                        "password_env",
                        format!("environment variable {var} is not set"),
                    )
                })?)),
                None => None,
            };
            Arc::new(SmtpProvider::new(name, c, password)?)
        }
    })
}

/// Builds every configured provider. `send_timeout` is the router's bound
/// on one send; adapters that fan out stay inside it.
pub async fn build(
    providers: &BTreeMap<String, ProviderConfig>,
    send_timeout: std::time::Duration,
    devices: Arc<dyn DeviceRegistry>,
) -> Result<Adapters, ConfigError> {
    let mut tokens = HashMap::new();
    let mut push = Vec::new();
    let mut by_name: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    for (name, config) in providers {
        by_name.insert(
            name.clone(),
            build_one(name, config, &mut tokens, &devices, &mut push, send_timeout).await?,
        );
    }
    Ok(Adapters {
        by_name,
        kaleyra_tokens: tokens,
        push_endpoints: push,
    })
}
