use std::collections::HashMap;
use std::time::Duration;

use mdc_core::Priority;
use serde::{Deserialize, Serialize};

/// Delay before attempt n+1 after attempt n failed transiently. One more
/// failure than the schedule has entries fails the message.
pub const DEFAULT_RETRY_SCHEDULE: &[Duration] = &[
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(1800),
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherConfig {
    /// Consumers per priority lane (per channel); set from the lanes config.
    #[serde(skip)]
    pub consumers: HashMap<Priority, u32>,
    /// Records fetched at once by one consumer.
    pub batch_size: usize,
    /// Sends in flight at once across all lanes.
    pub max_in_flight: usize,
    /// A send taking longer is abandoned as ambiguous.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// How long a claim holds a message before another dispatcher may take it
    /// over; must exceed `send_timeout`.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    #[serde(with = "mdc_core::durations::list")]
    pub retry_schedule: Vec<Duration>,
    /// Longest time to finish in-flight sends at shutdown.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            consumers: HashMap::from([
                (Priority::Critical, 2),
                (Priority::Normal, 2),
                (Priority::Bulk, 1),
            ]),
            batch_size: 256,
            max_in_flight: 2048,
            send_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(30),
            retry_schedule: DEFAULT_RETRY_SCHEDULE.to_vec(),
            drain_timeout: Duration::from_secs(20),
        }
    }
}

impl DispatcherConfig {
    pub fn consumers(&self, priority: Priority) -> u32 {
        self.consumers.get(&priority).copied().unwrap_or(1)
    }

    /// Errors name the config key at fault.
    pub fn validate(&self) -> Result<(), String> {
        for (priority, &n) in &self.consumers {
            if n == 0 || n > 256 {
                return Err(format!(
                    "dispatcher.consumers.{priority} must be between 1 and 256"
                ));
            }
        }
        if self.batch_size == 0 {
            return Err("dispatcher.batch_size must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            return Err("dispatcher.max_in_flight must be at least 1".into());
        }
        if self.send_timeout.is_zero() {
            return Err("dispatcher.send_timeout must be longer than zero".into());
        }
        if self.lease <= self.send_timeout {
            return Err("dispatcher.lease must be longer than dispatcher.send_timeout".into());
        }
        if self.retry_schedule.is_empty() {
            return Err("dispatcher.retry_schedule must list at least one delay".into());
        }
        Ok(())
    }
}
