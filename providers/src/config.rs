//! Providers and routes from the config file, validated and built into one
//! [`Router`] per channel. Errors name the config key.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mdc_core::ports::{DeviceRegistry, Provider};
use mdc_core::Channel;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::error::ConfigError;
use crate::kaleyra::{KaleyraConfig, KaleyraProvider};
use crate::router::{Member, Mode, Router};
use crate::ses::{SesConfig, SesProvider};
use crate::simulator::Simulator;
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
    pub fn channel(&self) -> Channel {
        match self {
            ProviderConfig::Kaleyra(_) | ProviderConfig::SnsSms(_) => Channel::Sms,
            ProviderConfig::Ses(_) | ProviderConfig::Smtp(_) => Channel::Email,
            ProviderConfig::SnsPush(_) => Channel::Push,
        }
    }
}

/// One member of a route.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// A name from `[providers]`, or a built-in simulator (`sim-sms`,
    /// `sim-email`, `sim-push`).
    pub provider: String,
    /// Share of traffic in a weighted route.
    #[serde(default = "one")]
    pub weight: u32,
    /// Sends per second at most (adapting down on throttling).
    #[serde(default)]
    pub rate_per_second: Option<f64>,
    /// Sends allowed at once above the rate; defaults to one second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
}

fn one() -> u32 {
    1
}

/// `[routes.CHANNEL]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub mode: Mode,
    pub members: Vec<MemberConfig>,
}

/// What the rest of MDC needs from the built providers.
pub struct Built {
    pub routes: HashMap<Channel, Arc<Router>>,
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

/// Builds every configured provider and one router per routed channel. With
/// no routes at all, every channel goes to its built-in simulator.
pub async fn build(
    providers: &BTreeMap<String, ProviderConfig>,
    routes: &HashMap<Channel, RouteConfig>,
    breaker: &BreakerConfig,
    simulators: &[Arc<Simulator>],
    send_timeout: std::time::Duration,
    devices: Arc<dyn DeviceRegistry>,
) -> Result<Built, ConfigError> {
    let route_error = |channel: Channel, i: usize, key: &str, message: String| ConfigError {
        provider: String::new(),
        key: format!("routes.{channel}.members[{i}].{key}"),
        message,
    };
    breaker.validate().map_err(|e| ConfigError {
        provider: String::new(),
        key: e.key,
        message: e.message,
    })?;
    let mut tokens = HashMap::new();
    let mut push = Vec::new();
    let mut built: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    for (name, config) in providers {
        built.insert(
            name.clone(),
            build_one(name, config, &mut tokens, &devices, &mut push, send_timeout).await?,
        );
    }
    for simulator in simulators {
        built
            .entry(simulator.name().to_owned())
            .or_insert_with(|| simulator.clone());
    }
    let mut out = HashMap::new();
    if routes.is_empty() {
        for simulator in simulators {
            let member = Member::new(simulator.clone(), 1, None, None);
            out.insert(
                simulator.channel(),
                Arc::new(Router::new(Mode::Ordered, vec![member], send_timeout)),
            );
        }
        return Ok(Built {
            routes: out,
            kaleyra_tokens: tokens,
            push_endpoints: push,
        });
    }
    for (&channel, route) in routes {
        if route.members.is_empty() {
            return Err(ConfigError {
                provider: String::new(),
                key: format!("routes.{channel}.members"),
                message: "needs at least one provider".into(),
            });
        }
        let mut members = Vec::new();
        for (i, member) in route.members.iter().enumerate() {
            let Some(provider) = built.get(&member.provider) else {
                return Err(route_error(
                    channel,
                    i,
                    "provider",
                    format!("no provider named {:?}", member.provider),
                ));
            };
            if provider.channel() != channel {
                return Err(route_error(
                    channel,
                    i,
                    "provider",
                    format!(
                        "{} sends {}, not {channel}",
                        member.provider,
                        provider.channel()
                    ),
                ));
            }
            if member.weight == 0 {
                return Err(route_error(
                    channel,
                    i,
                    "weight",
                    "must be at least 1".into(),
                ));
            }
            let rate = match member.rate_per_second {
                Some(r) if !(r > 0.0 && r.is_finite()) => {
                    return Err(route_error(
                        channel,
                        i,
                        "rate_per_second",
                        "must be above zero".into(),
                    ))
                }
                Some(r) => Some((r, member.burst.unwrap_or(r.ceil() as u32).max(1))),
                None => None,
            };
            let is_simulator = simulators.iter().any(|s| s.name() == member.provider);
            let breaker = (!is_simulator).then(|| breaker.clone());
            members.push(Member::new(provider.clone(), member.weight, breaker, rate));
        }
        out.insert(
            channel,
            Arc::new(Router::new(route.mode, members, send_timeout)),
        );
    }
    Ok(Built {
        routes: out,
        kaleyra_tokens: tokens,
        push_endpoints: push,
    })
}
