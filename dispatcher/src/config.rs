use mdc_core::InvalidSetting;
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
    /// over; must exceed `send_timeout` by a second at least.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    #[serde(with = "mdc_core::durations::list")]
    pub retry_schedule: Vec<Duration>,
    /// Longest time to finish in-flight sends at shutdown.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Percent of a channel's sends each lower lane is guaranteed while it
    /// has a backlog, even when a higher lane pre-empts it.
    pub min_share: HashMap<Priority, u8>,
}

/// Upper bounds of the durations in `[dispatcher]`: a typo such as `"30d"`
/// for a lease fails at start-up instead of stalling messages for a month.
const MAX_SEND_TIMEOUT: Duration = Duration::from_secs(600);
const MAX_LEASE: Duration = Duration::from_secs(3600);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_DRAIN: Duration = Duration::from_secs(600);
/// How much longer than a send the lease is at least: the margin its
/// extensions come within.
const MIN_LEASE_MARGIN: Duration = Duration::from_secs(1);
/// How far apart dispatchers' clocks may be: a lease runs out by the
/// clock of the dispatcher that took it, a takeover goes by the clock of
/// the one taking over. A vendor call starts only with a send's time and
/// this left, so a clock ahead by up to this much never takes a message
/// over while its call may still run. (Under [`MIN_LEASE_MARGIN`], which
/// the extensions need room above.)
pub(crate) const CLOCK_ALLOWANCE: Duration = Duration::from_millis(500);
const _: () = assert!(
    CLOCK_ALLOWANCE.as_millis() < MIN_LEASE_MARGIN.as_millis(),
    "the extensions need room between what a call needs and the lease"
);

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
            min_share: HashMap::from([(Priority::Normal, 20), (Priority::Bulk, 10)]),
        }
    }
}

impl DispatcherConfig {
    pub fn consumers(&self, priority: Priority) -> u32 {
        self.consumers.get(&priority).copied().unwrap_or(1)
    }

    /// How much of its lease a vendor call needs left to start: a send's
    /// time (`send_timeout`) and the [`CLOCK_ALLOWANCE`].
    pub(crate) fn call_needs(&self) -> Duration {
        self.send_timeout.saturating_add(CLOCK_ALLOWANCE)
    }

    /// How often an attempt in flight extends its lease: three times within
    /// the margin of the lease over what a call needs left
    /// ([`call_needs`](Self::call_needs)), so that while the store takes
    /// the extensions a provider call may start at any time.
    /// (At least 100 ms, for a config [`validate`](Self::validate) would
    /// refuse.)
    pub(crate) fn lease_extension_every(&self) -> Duration {
        (self.lease.saturating_sub(self.call_needs()) / 3).max(Duration::from_millis(100))
    }

    /// The guaranteed shares as fractions, by lane rank.
    pub(crate) fn shares(&self) -> [f64; 3] {
        let mut shares = [0.0; 3];
        for (&priority, &percent) in &self.min_share {
            shares[crate::lanes::rank(priority)] = f64::from(percent) / 100.0;
        }
        shares
    }

    /// Errors name the config key at fault.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        for (priority, &n) in &self.consumers {
            if n == 0 || n > 256 {
                return Err(InvalidSetting::new(
                    format!("dispatcher.consumers.{priority}"),
                    "must be between 1 and 256",
                ));
            }
        }
        if self.batch_size == 0 {
            return Err(InvalidSetting::new(
                "dispatcher.batch_size",
                "must be at least 1",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(InvalidSetting::new(
                "dispatcher.max_in_flight",
                "must be at least 1",
            ));
        }
        if self.send_timeout.is_zero() {
            return Err(InvalidSetting::new(
                "dispatcher.send_timeout",
                "must be longer than zero",
            ));
        }
        if self.retry_schedule.is_empty() {
            return Err(InvalidSetting::new(
                "dispatcher.retry_schedule",
                "must list at least one delay",
            ));
        }
        let bounds = [
            ("send_timeout", self.send_timeout, MAX_SEND_TIMEOUT),
            ("lease", self.lease, MAX_LEASE),
            ("drain_timeout", self.drain_timeout, MAX_DRAIN),
        ];
        for (key, value, max) in bounds {
            if value > max {
                return Err(InvalidSetting::new(
                    format!("dispatcher.{key}"),
                    format!("must be at most {}", humantime::format_duration(max)),
                ));
            }
        }
        // Both bounded above: the sum cannot overflow.
        if self.lease < self.send_timeout + MIN_LEASE_MARGIN {
            return Err(InvalidSetting::new(
                "dispatcher.lease",
                "must be at least 1s longer than dispatcher.send_timeout",
            ));
        }
        if let Some(delay) = self.retry_schedule.iter().find(|d| **d > MAX_RETRY_DELAY) {
            return Err(InvalidSetting::new(
                "dispatcher.retry_schedule",
                format!(
                    "has {}, longer than the most allowed, {}",
                    humantime::format_duration(*delay),
                    humantime::format_duration(MAX_RETRY_DELAY)
                ),
            ));
        }
        for (priority, &percent) in &self.min_share {
            if *priority == Priority::Critical && percent > 0 {
                return Err(InvalidSetting::new(
                    "dispatcher.min_share.critical",
                    "cannot be set: nothing pre-empts the critical lane",
                ));
            }
            if percent > 50 {
                return Err(InvalidSetting::new(
                    format!("dispatcher.min_share.{priority}"),
                    "must be at most 50 (percent)",
                ));
            }
        }
        Ok(())
    }
}
