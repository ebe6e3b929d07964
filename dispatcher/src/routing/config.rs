//! `[routes.CHANNEL]` and `[breaker]` from the config file, built into one
//! [`Router`] per channel over the configured adapters and the simulators.
//! Errors name the config key.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use mdc_core::ports::Provider;
use mdc_core::{Channel, InvalidSetting};
use serde::{Deserialize, Serialize};

use super::breaker::BreakerConfig;
use super::{Member, Mode, Router};

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

/// One router per routed channel. `providers` are the configured adapters
/// by name; `simulators` are the built-in ones (routable by name, and the
/// whole of every route when no route is configured; they get no circuit
/// breaker, as their errors are per recipient by design).
pub fn build(
    routes: &HashMap<Channel, RouteConfig>,
    breaker: &BreakerConfig,
    providers: &BTreeMap<String, Arc<dyn Provider>>,
    simulators: &[Arc<dyn Provider>],
    send_timeout: Duration,
) -> Result<HashMap<Channel, Arc<Router>>, InvalidSetting> {
    breaker.validate()?;
    let mut out = HashMap::new();
    if routes.is_empty() {
        for simulator in simulators {
            let member = Member::new(simulator.clone(), 1, None, None);
            out.insert(
                simulator.channel(),
                Arc::new(Router::new(Mode::Ordered, vec![member], send_timeout)),
            );
        }
        return Ok(out);
    }
    let find = |name: &str| {
        providers
            .get(name)
            .cloned()
            .or_else(|| simulators.iter().find(|s| s.name() == name).cloned())
    };
    for (&channel, route) in routes {
        if route.members.is_empty() {
            return Err(InvalidSetting::new(
                format!("routes.{channel}.members"),
                "needs at least one provider",
            ));
        }
        let mut members = Vec::new();
        for (i, member) in route.members.iter().enumerate() {
            let key = |field: &str| format!("routes.{channel}.members[{i}].{field}");
            let Some(provider) = find(&member.provider) else {
                return Err(InvalidSetting::new(
                    key("provider"),
                    format!("names no provider: {:?}", member.provider),
                ));
            };
            if provider.channel() != channel {
                return Err(InvalidSetting::new(
                    key("provider"),
                    format!(
                        "names {}, which sends {}, not {channel}",
                        member.provider,
                        provider.channel()
                    ),
                ));
            }
            if member.weight == 0 {
                return Err(InvalidSetting::new(key("weight"), "must be at least 1"));
            }
            let rate = match member.rate_per_second {
                Some(r) if !(r > 0.0 && r.is_finite()) => {
                    return Err(InvalidSetting::new(
                        key("rate_per_second"),
                        "must be above zero",
                    ))
                }
                Some(r) => Some((r, member.burst.unwrap_or(r.ceil() as u32).max(1))),
                None => None,
            };
            let is_simulator = !providers.contains_key(&member.provider);
            let breaker = (!is_simulator).then(|| breaker.clone());
            members.push(Member::new(provider, member.weight, breaker, rate));
        }
        out.insert(
            channel,
            Arc::new(Router::new(route.mode, members, send_timeout)),
        );
    }
    Ok(out)
}
