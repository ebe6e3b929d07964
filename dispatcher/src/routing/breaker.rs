//! A circuit breaker per provider: it opens when the share of failed sends in
//! a sliding window passes a threshold, stays open for a while, then lets one
//! probe through (half-open); the probe's outcome closes or reopens it.

use mdc_core::InvalidSetting;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Outcomes remembered.
    pub window: usize,
    /// Fewest outcomes in the window before the breaker may open.
    pub min_requests: usize,
    /// Share of failures (0-1) that opens the breaker.
    pub failure_ratio: f64,
    /// How long it stays open before a probe.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: 20,
            min_requests: 10,
            failure_ratio: 0.5,
            open_for: Duration::from_secs(30),
        }
    }
}

impl BreakerConfig {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.window == 0 || self.min_requests == 0 || self.min_requests > self.window {
            return Err(InvalidSetting::new(
                "breaker.min_requests",
                "must be between 1 and breaker.window",
            ));
        }
        mdc_core::setting::duration_within(
            "breaker.open_for",
            self.open_for,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?;
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return Err(InvalidSetting::new(
                "breaker.failure_ratio",
                "must be in (0, 1]",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe is in flight.
    HalfOpen,
}

pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

struct Inner {
    state: State,
    outcomes: VecDeque<bool>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                state: State::Closed,
                outcomes: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    /// Open and not yet due for a probe.
    pub fn is_open(&self) -> bool {
        matches!(self.lock().state, State::Open { until } if Instant::now() < until)
            || self.lock().state == State::HalfOpen
    }

    /// How long until an open breaker lets a probe through.
    pub fn open_remaining(&self) -> Option<Duration> {
        match self.lock().state {
            State::Open { until } => Some(until.saturating_duration_since(Instant::now())),
            _ => None,
        }
    }

    /// Whether a send may go through now; an open breaker past its time lets
    /// exactly one probe through.
    pub fn allow(&self) -> bool {
        let mut inner = self.lock();
        match inner.state {
            State::Closed => true,
            State::HalfOpen => false,
            State::Open { until } if Instant::now() >= until => {
                inner.state = State::HalfOpen;
                true
            }
            State::Open { .. } => false,
        }
    }

    /// Records a send's outcome (`true` = the vendor worked).
    pub fn record(&self, ok: bool) {
        let mut inner = self.lock();
        match inner.state {
            State::HalfOpen => {
                inner.outcomes.clear();
                inner.state = if ok {
                    State::Closed
                } else {
                    State::Open {
                        until: Instant::now() + self.config.open_for,
                    }
                };
            }
            State::Closed => {
                inner.outcomes.push_back(ok);
                while inner.outcomes.len() > self.config.window {
                    inner.outcomes.pop_front();
                }
                let failures = inner.outcomes.iter().filter(|ok| !**ok).count();
                let total = inner.outcomes.len();
                if total >= self.config.min_requests
                    && failures as f64 / total as f64 >= self.config.failure_ratio
                {
                    inner.state = State::Open {
                        until: Instant::now() + self.config.open_for,
                    };
                    inner.outcomes.clear();
                }
            }
            State::Open { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_for: Duration) -> Breaker {
        Breaker::new(BreakerConfig {
            window: 10,
            min_requests: 4,
            failure_ratio: 0.5,
            open_for,
        })
    }

    #[test]
    fn opens_on_error_rate_then_probes_once() {
        let b = breaker(Duration::from_millis(400));
        for ok in [true, false, true, false] {
            assert!(b.allow());
            b.record(ok);
        }
        assert!(matches!(b.state(), State::Open { .. }));
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(450));
        assert!(b.allow(), "one probe after the open period");
        assert!(!b.allow(), "only one probe at a time");
        b.record(false);
        assert!(matches!(b.state(), State::Open { .. }));
        std::thread::sleep(Duration::from_millis(450));
        assert!(b.allow());
        b.record(true);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn stays_closed_below_the_threshold_or_minimum() {
        let b = breaker(Duration::from_secs(1));
        b.record(false);
        b.record(false);
        b.record(false);
        assert_eq!(b.state(), State::Closed, "too few requests to judge");
        let b = breaker(Duration::from_secs(1));
        for ok in [true, true, true, false, true, true, false, true] {
            b.record(ok);
        }
        assert_eq!(b.state(), State::Closed);
    }
}
