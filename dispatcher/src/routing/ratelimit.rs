//! A token bucket per provider that adapts: a throttling answer (429,
//! `Throttling`) halves the rate, down to a tenth of the configured one;
//! each success wins back 5 % until the configured rate is reached again
//! (additive increase, multiplicative decrease). `governor` and friends keep
//! a fixed quota, which is why this is hand-rolled.
//!
//! The configured rate is the whole deployment's: with `n` dispatchers
//! alive ([`RateLimiter::set_share`]), each takes an `n`th of the rate and
//! of the burst.

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
    /// The adaptive part of the rate: 1 at the configured rate, down to a
    /// tenth after throttling.
    level: f64,
    tokens: f64,
    /// Tokens [`RateLimiter::acquire`] has taken ahead of their turn, all
    /// told: the last one's number, so that only it gives its token back.
    booked: u64,
    refilled: Instant,
    /// How many dispatchers share the configured rate.
    share: f64,
}

impl RateLimiter {
    /// `per_second` sends on average, at most `burst` at once.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            configured: per_second,
            burst,
            inner: Mutex::new(Bucket {
                level: 1.0,
                tokens: burst,
                booked: 0,
                refilled: Instant::now(),
                share: 1.0,
            }),
            free_turn: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// This process's current rate, per second.
    pub fn rate(&self) -> f64 {
        self.rate_of(&self.lock())
    }

    fn rate_of(&self, bucket: &Bucket) -> f64 {
        self.configured * bucket.level / bucket.share
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
    /// takes the next token in turn. A wait dropped before its turn gives
    /// its token back if no wait was booked after it (one booked later
    /// counts on its place and would be overtaken: that token is lost).
    pub async fn acquire(&self) {
        let (wait, reserved) = {
            let mut bucket = self.lock();
            self.refill(&mut bucket);
            bucket.tokens -= 1.0;
            if bucket.tokens >= 0.0 {
                return;
            }
            bucket.booked += 1;
            let wait = Duration::from_secs_f64(-bucket.tokens / self.rate_of(&bucket));
            (wait, Reserved(self, bucket.booked))
        };
        tokio::time::sleep(wait).await;
        std::mem::forget(reserved);
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
                Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate_of(&bucket))
            };
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    fn refill(&self, bucket: &mut Bucket) {
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate_of(bucket)).min(self.burst_of(bucket));
        bucket.refilled = now;
    }

    /// This process's part of the burst: at least one send.
    fn burst_of(&self, bucket: &Bucket) -> f64 {
        (self.burst / bucket.share).max(1.0)
    }

    /// Shares the configured rate among `dispatchers` processes (at least
    /// one): this one's rate, the adaptive one included, and its burst
    /// become that part of the whole (a burst of at least one send).
    pub fn set_share(&self, dispatchers: usize) {
        let share = dispatchers.max(1) as f64;
        let mut bucket = self.lock();
        if bucket.share == share {
            return;
        }
        self.refill(&mut bucket);
        bucket.share = share;
        bucket.tokens = bucket.tokens.min(self.burst_of(&bucket));
    }

    pub fn throttled(&self) {
        let mut bucket = self.lock();
        bucket.level = (bucket.level / 2.0).max(0.1);
        bucket.tokens = bucket.tokens.min(0.0);
    }

    pub fn succeeded(&self) {
        let mut bucket = self.lock();
        bucket.level = (bucket.level + 0.05).min(1.0);
    }
}

/// A token [`RateLimiter::acquire`] took ahead of its turn, and its
/// number among those booked: given back, when the wait for that turn ends
/// early, if it was the last booked. The bucket is then as if it had never
/// been taken; the waits booked before it are not moved.
struct Reserved<'a>(&'a RateLimiter, u64);

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut bucket = self.0.lock();
        if bucket.booked == self.1 {
            bucket.booked -= 1;
            bucket.tokens += 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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

    /// Two dispatchers alive: each sends half the configured rate, with
    /// half the burst; alone again, the whole.
    #[tokio::test(start_paused = true)]
    async fn a_shared_rate_gives_each_dispatcher_its_part() {
        let limiter = RateLimiter::new(10.0, 10);
        limiter.set_share(2);
        assert_eq!(limiter.rate(), 5.0);
        let taken = (0..10).filter(|_| limiter.try_acquire()).count();
        assert_eq!(taken, 5, "half the burst");
        tokio::time::advance(Duration::from_secs(1)).await;
        let taken = (0..10).filter(|_| limiter.try_acquire()).count();
        assert_eq!(taken, 5, "half the rate for a second");

        limiter.throttled();
        assert_eq!(limiter.rate(), 2.5, "throttling halves this share");
        limiter.set_share(1);
        assert_eq!(limiter.rate(), 5.0, "still halved, of the whole");
        limiter.set_share(3);
        limiter.set_share(2);
        assert_eq!(limiter.rate(), 2.5, "no drift from the changes");
        for _ in 0..100 {
            limiter.succeeded();
        }
        assert_eq!(limiter.rate(), 5.0, "never above this share");

        limiter.set_share(1);
        assert_eq!(limiter.rate(), 10.0);
        tokio::time::advance(Duration::from_secs(2)).await;
        let taken = (0..20).filter(|_| limiter.try_acquire()).count();
        assert_eq!(taken, 10, "the whole burst again");
        limiter.set_share(0);
        assert_eq!(limiter.rate(), 10.0, "no fewer than one dispatcher");
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

    #[tokio::test(start_paused = true)]
    async fn a_wait_given_up_leaves_its_token() {
        let limiter = RateLimiter::new(1.0, 1);
        assert!(limiter.try_acquire());
        // Waiting for the token due in a second, given up half-way.
        let gave_up = tokio::time::timeout(Duration::from_millis(500), limiter.acquire()).await;
        assert!(gave_up.is_err());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.try_acquire(), "the token due now was given back");
        assert!(!limiter.try_acquire());
    }

    /// Only the last wait booked gives its token back: the ones after an
    /// earlier one count on their turns, which must not be overtaken.
    #[tokio::test(start_paused = true)]
    async fn a_wait_given_up_ahead_of_others_leaves_no_token() {
        let limiter = Arc::new(RateLimiter::new(1.0, 1));
        assert!(limiter.try_acquire());
        let first = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire().await }
        });
        tokio::task::yield_now().await;
        let second = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire().await }
        });
        tokio::task::yield_now().await;
        // The first (due at 1 s) gives up; the second keeps its turn at 2 s,
        // and the token it sends with is the only one then.
        first.abort();
        assert!(first.await.is_err());
        second.await.expect("second");
        assert!(!limiter.try_acquire(), "two sends at once, over the rate");
        let at = tokio::time::Instant::now();
        // The last booked gives up: its token is left for the next.
        let third = tokio::time::timeout(Duration::from_millis(100), limiter.acquire()).await;
        assert!(third.is_err());
        tokio::time::sleep_until(at + Duration::from_millis(1010)).await;
        assert!(limiter.try_acquire());
    }
}
