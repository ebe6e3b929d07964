//! A token bucket per provider that adapts: a throttling answer (429,
//! `Throttling`) halves the rate, down to a tenth of the configured one;
//! each success wins back 5 % until the configured rate is reached again
//! (additive increase, multiplicative decrease). `governor` and friends keep
//! a fixed quota, which is why this is hand-rolled.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct RateLimiter {
    configured: f64,
    burst: f64,
    inner: Mutex<Bucket>,
}

struct Bucket {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    /// `per_second` sends on average, at most `burst` at once.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            configured: per_second,
            burst,
            inner: Mutex::new(Bucket {
                rate: per_second,
                tokens: burst,
                refilled: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current rate, per second.
    pub fn rate(&self) -> f64 {
        self.lock().rate
    }

    /// Refills the bucket and takes a token if there is one.
    pub fn try_acquire(&self) -> bool {
        let mut bucket = self.lock();
        self.refill(&mut bucket);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes a token, waiting as long as it takes. Waiters queue up: each
    /// takes the next token in turn.
    pub async fn acquire(&self) {
        let wait = {
            let mut bucket = self.lock();
            self.refill(&mut bucket);
            bucket.tokens -= 1.0;
            if bucket.tokens >= 0.0 {
                return;
            }
            Duration::from_secs_f64(-bucket.tokens / bucket.rate)
        };
        tokio::time::sleep(wait).await;
    }

    fn refill(&self, bucket: &mut Bucket) {
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * bucket.rate).min(self.burst);
        bucket.refilled = now;
    }

    pub fn throttled(&self) {
        let mut bucket = self.lock();
        bucket.rate = (bucket.rate / 2.0).max(self.configured / 10.0);
        bucket.tokens = bucket.tokens.min(0.0);
    }

    pub fn succeeded(&self) {
        let mut bucket = self.lock();
        bucket.rate = (bucket.rate + self.configured * 0.05).min(self.configured);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_halves_the_rate_and_successes_restore_it() {
        let limiter = RateLimiter::new(100.0, 10);
        limiter.throttled();
        assert_eq!(limiter.rate(), 50.0);
        for _ in 0..5 {
            limiter.throttled();
        }
        assert_eq!(limiter.rate(), 10.0, "never below a tenth");
        for _ in 0..100 {
            limiter.succeeded();
        }
        assert_eq!(limiter.rate(), 100.0, "never above the configured rate");
    }

    #[tokio::test]
    async fn try_acquire_refuses_and_acquire_waits_its_turn() {
        let limiter = RateLimiter::new(5.0, 1);
        assert!(limiter.try_acquire());
        assert!(!limiter.try_acquire(), "the next token is 200 ms away");
        let start = std::time::Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        assert!(
            start.elapsed() >= Duration::from_millis(350),
            "two tokens at 5/s: {:?}",
            start.elapsed()
        );
    }
}
