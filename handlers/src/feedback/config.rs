//! The `[webhooks]` settings of the feedback handler.

use std::time::Duration;

use mdc_core::InvalidSetting;
use serde::{Deserialize, Serialize};

/// The `[webhooks]` config section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedbackConfig {
    /// Delays between tries after the first (which is immediate).
    #[serde(with = "mdc_core::durations::list")]
    pub schedule: Vec<Duration>,
    /// An answer must come within this to count.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// An endpoint failing every try this long is disabled.
    #[serde(with = "humantime_serde")]
    pub disable_after: Duration,
    /// Deliveries in flight at once, over all endpoints.
    pub max_in_flight: usize,
    /// Deliveries in flight at once to one endpoint.
    pub per_endpoint: usize,
    /// Local development and tests only: allow http and internal
    /// addresses (loopback, private networks).
    pub allow_private_urls: bool,
    /// Attempts older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub attempt_retention: Duration,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        Self {
            schedule: vec![
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                minutes(120),
                minutes(300),
                minutes(600),
                minutes(600),
            ],
            timeout: Duration::from_secs(15),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            max_in_flight: 256,
            per_endpoint: 32,
            allow_private_urls: false,
            attempt_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl FeedbackConfig {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let week = Duration::from_secs(7 * 24 * 3600);
        if self.schedule.len() > 50 || self.schedule.iter().any(|d| *d > week) {
            return Err(InvalidSetting::new(
                "webhooks.schedule",
                "at most 50 delays of at most 7 days each",
            ));
        }
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(60) {
            return Err(InvalidSetting::new(
                "webhooks.timeout",
                "must be between 100ms and 1m",
            ));
        }
        if self.disable_after < Duration::from_millis(100) || self.disable_after > 10 * week {
            return Err(InvalidSetting::new(
                "webhooks.disable_after",
                "must be between 100ms and 70 days",
            ));
        }
        if self.attempt_retention < Duration::from_secs(1)
            || self.attempt_retention > Duration::from_secs(365 * 24 * 3600)
        {
            return Err(InvalidSetting::new(
                "webhooks.attempt_retention",
                "must be between 1s and 365 days",
            ));
        }
        if self.max_in_flight == 0 || self.per_endpoint == 0 {
            return Err(InvalidSetting::new(
                "webhooks.max_in_flight",
                "max_in_flight and per_endpoint must be at least 1",
            ));
        }
        Ok(())
    }
}
