//! When a failed attempt is tried again: a pure function of the attempt, the
//! error, the schedule, the deadline and the clock, so every case has a row
//! in a table test.

use std::time::Duration;

use mdc_core::ports::ProviderError;
use mdc_core::Timestamp;

/// The longest wait a vendor's `Retry-After` can impose. A longer one (or an
/// absurd one such as `u64::MAX` seconds) is cut to this; the message's
/// deadline still bounds it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time.
    RetryAt(Timestamp),
    /// The vendor refused the message for good.
    Refused,
    /// Every retry in the schedule was used.
    GaveUp,
    /// The next attempt would come after the message's deadline.
    PastDeadline,
}

/// `attempt` is the number of the attempt that failed (1 for the first);
/// `schedule[n - 1]` is the wait after attempt `n`. A vendor's `Retry-After`
/// lengthens the wait, never shortens it, and is bounded by
/// [`MAX_RETRY_AFTER`].
pub fn next_attempt(
    attempt: u32,
    error: &ProviderError,
    schedule: &[Duration],
    deadline: Timestamp,
    now: Timestamp,
) -> Next {
    let retry_after = match error {
        ProviderError::Permanent { .. } => return Next::Refused,
        ProviderError::Transient { retry_after, .. } => *retry_after,
        ProviderError::Ambiguous { .. } => None,
    };
    let Some(&delay) = schedule.get((attempt as usize).saturating_sub(1)) else {
        return Next::GaveUp;
    };
    let delay = retry_after.map_or(delay, |after| after.min(MAX_RETRY_AFTER).max(delay));
    let due = chrono::Duration::from_std(delay)
        .ok()
        .and_then(|delay| now.checked_add_signed(delay));
    match due {
        Some(due) if due <= deadline => Next::RetryAt(due),
        _ => Next::PastDeadline,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        chrono::Utc
            .timestamp_opt(1_800_000_000 + seconds, 0)
            .single()
            .expect("valid time")
    }

    fn transient(retry_after: Option<u64>) -> ProviderError {
        ProviderError::Transient {
            message: "HTTP 503".into(),
            retry_after: retry_after.map(Duration::from_secs),
            throttled: false,
        }
    }

    #[test]
    fn decides_every_case() {
        let schedule = [Duration::from_secs(1), Duration::from_secs(30)];
        let permanent = ProviderError::Permanent {
            code: "400".into(),
            message: "bad number".into(),
        };
        let ambiguous = ProviderError::Ambiguous {
            message: "timeout".into(),
        };
        let throttled = ProviderError::throttled("HTTP 429", Some(Duration::from_secs(10)));
        let day = MAX_RETRY_AFTER.as_secs() as i64;
        // (attempt, error, deadline, expected), the clock at 0.
        let table: Vec<(u32, ProviderError, i64, Next)> = vec![
            (1, permanent.clone(), 3600, Next::Refused),
            (1, transient(None), 3600, Next::RetryAt(at(1))),
            (2, transient(None), 3600, Next::RetryAt(at(30))),
            (3, transient(None), 3600, Next::GaveUp),
            (1, ambiguous.clone(), 3600, Next::RetryAt(at(1))),
            // Retry-After lengthens the wait...
            (1, throttled.clone(), 3600, Next::RetryAt(at(10))),
            // ...but never shortens it.
            (2, throttled, 3600, Next::RetryAt(at(30))),
            // The deadline bounds every wait; exactly at it still counts.
            (2, transient(None), 29, Next::PastDeadline),
            (2, transient(None), 30, Next::RetryAt(at(30))),
            // An absurd Retry-After is cut to a day, then the deadline rules.
            (1, transient(Some(u64::MAX)), 3600, Next::PastDeadline),
            (
                1,
                transient(Some(u64::MAX)),
                2 * day,
                Next::RetryAt(at(day)),
            ),
            (
                1,
                transient(Some(7 * 24 * 3600)),
                2 * day,
                Next::RetryAt(at(day)),
            ),
            // Attempt 0 cannot fail, but must not underflow either.
            (0, transient(None), 3600, Next::RetryAt(at(1))),
            (u32::MAX, transient(None), 3600, Next::GaveUp),
        ];
        for (attempt, error, deadline, expected) in table {
            assert_eq!(
                next_attempt(attempt, &error, &schedule, at(deadline), at(0)),
                expected,
                "attempt {attempt}, {error}, deadline +{deadline}s"
            );
        }
    }

    #[test]
    fn an_empty_schedule_gives_up_at_once() {
        assert_eq!(
            next_attempt(1, &transient(None), &[], at(3600), at(0)),
            Next::GaveUp
        );
    }

    #[test]
    fn a_clock_at_the_end_of_time_does_not_panic() {
        let schedule = [Duration::from_secs(1)];
        let end = chrono::DateTime::<chrono::Utc>::MAX_UTC;
        assert_eq!(
            next_attempt(1, &transient(None), &schedule, end, end),
            Next::PastDeadline
        );
    }
}
