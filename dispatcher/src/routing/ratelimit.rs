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
    /// Sends waiting for a free token take turns (in order): one looks at
    /// the bucket at a time, the rest sleep until it is done.
    free_turn: tokio::sync::Mutex<()>,
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
            free_turn: tokio::sync::Mutex::new(()),
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

    /// Takes a token without queueing for one: waits until a token is free
    /// with no [`acquire`](Self::acquire) waiter ahead (their turns are
    /// counted against the bucket), so those go first. For sends that may
    /// wait behind more urgent ones; among themselves they go in order.
    pub async fn acquire_when_free(&self) {
        let _turn = self.free_turn.lock().await;
        loop {
            let wait = {
                let mut bucket = self.lock();
                self.refill(&mut bucket);
                // A hair under a whole token is rounding, not a wait.
                if bucket.tokens >= 1.0 - 1e-9 {
                    bucket.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - bucket.tokens) / bucket.rate)
            };
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
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

    #[tokio::test(start_paused = true)]
    async fn a_free_token_goes_to_queued_waiters_first() {
        let limiter = std::sync::Arc::new(RateLimiter::new(10.0, 1));
        assert!(limiter.try_acquire());
        let start = Instant::now();
        // Ten sends that may wait start waiting for a free token...
        let waiting: Vec<_> = (0..10)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire_when_free().await;
                    Instant::now()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        // ...and an urgent one queued after them still gets the next token.
        limiter.acquire().await;
        assert!(
            start.elapsed() <= Duration::from_millis(110),
            "{:?}",
            start.elapsed()
        );
        let mut times = Vec::new();
        for task in waiting {
            times.push(task.await.expect("waiter"));
        }
        times.sort();
        assert!(times[0] - start >= Duration::from_millis(200), "{times:?}");
        assert!(
            times[9] - start >= Duration::from_millis(1100),
            "one token each, 100 ms apart: {times:?}"
        );
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
