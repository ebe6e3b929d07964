//! Keeps this dispatcher's share of every route's rate limit: it beats in
//! the [`Fleet`] every [`BEAT`], counts the dispatchers alive and gives each
//! router's limits that part of the configured rate. A dispatcher that
//! stops cleanly leaves at once; one that dies drops out after [`ALIVE_FOR`].
//!
//! A count that rises is taken at once; one that falls only when two more
//! beats agree (over at least [`BEAT`] twice), so a moment when the count
//! reads low (the backend restarted empty and the others have not beaten
//! again yet) never raises every dispatcher's rate at the same time.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use mdc_core::ports::{Fleet, StoreError};
use tokio_util::sync::CancellationToken;

use crate::routing::Router;

/// How often a dispatcher counts itself alive.
pub const BEAT: Duration = Duration::from_secs(2);
/// How long one beat counts a dispatcher alive: a few missed beats (a slow
/// backend, a pause) do not drop it.
pub const ALIVE_FOR: Duration = Duration::from_secs(10);

pub struct FleetShare {
    fleet: Arc<dyn Fleet>,
    member: String,
    routers: Vec<Arc<Router>>,
    /// The dispatchers the routers' rates are shared among now.
    dispatchers: usize,
    /// What the last beats that answered counted, newest last.
    counted: [usize; 3],
    /// Whether the last beat failed (so a failing backend logs once).
    failing: bool,
}

impl FleetShare {
    pub fn new(fleet: Arc<dyn Fleet>, routers: Vec<Arc<Router>>) -> Self {
        let member = format!("dispatcher-{}-{}", std::process::id(), ulid::Ulid::new());
        Self::named(fleet, routers, member)
    }

    fn named(fleet: Arc<dyn Fleet>, routers: Vec<Arc<Router>>, member: String) -> Self {
        Self {
            fleet,
            member,
            routers,
            dispatchers: 1,
            counted: [1; 3],
            failing: false,
        }
    }

    /// Beats until `shutdown`, then leaves. A beat that panics (in a fleet
    /// backend) is logged and the next one comes on time: a share that
    /// stopped counting would keep the last count for good.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            if let Err(panic) = AssertUnwindSafe(self.beat()).catch_unwind().await {
                // Logged once, as a failing count is, until a beat answers.
                if !self.failing {
                    tracing::error!(
                        panic = panic_message(&panic),
                        dispatchers = self.dispatchers,
                        "Counting the dispatchers alive panicked; keeping the last count"
                    );
                    self.failing = true;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(BEAT) => {}
            }
        }
        let left = tokio::time::timeout(BEAT, self.fleet.leave(&self.member)).await;
        if !matches!(left, Ok(Ok(()))) {
            tracing::warn!(
                error = ?left,
                "Could not leave the count of dispatchers; the others count this one until its last beat runs out"
            );
        }
    }

    /// One beat: counts the dispatchers alive and shares the rates among
    /// them. When the count cannot be had, the last one stands.
    pub async fn beat(&mut self) -> usize {
        let counted = tokio::time::timeout(BEAT, self.fleet.beat(&self.member, ALIVE_FOR))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    format!("no answer within {BEAT:?}").into(),
                ))
            });
        match counted {
            Ok(counted) => {
                if self.failing {
                    tracing::info!("Counting the dispatchers alive again");
                    self.failing = false;
                }
                self.counted.rotate_left(1);
                self.counted[2] = counted;
                let dispatchers = self.counted.into_iter().max().unwrap_or(counted);
                if dispatchers != self.dispatchers {
                    tracing::info!(
                        dispatchers,
                        was = self.dispatchers,
                        "Dispatchers alive changed: each sends its part of every route's rate limit"
                    );
                    self.dispatchers = dispatchers;
                }
                metrics::gauge!("mdc_dispatchers_alive").set(dispatchers as f64);
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(
                        error = %e,
                        dispatchers = self.dispatchers,
                        "Cannot count the dispatchers alive; keeping the last count"
                    );
                    self.failing = true;
                }
            }
        }
        for router in &self.routers {
            router.set_share(self.dispatchers);
        }
        self.dispatchers
    }
}

/// The text a panic was raised with, when it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Member, Mode};
    use async_trait::async_trait;
    use mdc_core::ports::{Lookup, Provider, ProviderError, Receipt};
    use mdc_core::{Channel, Message, MessageId};
    use mdc_embedded::LocalFleet;

    struct Vendor;

    #[async_trait]
    impl Provider for Vendor {
        fn name(&self) -> &str {
            "vendor"
        }

        fn channel(&self) -> Channel {
            Channel::Sms
        }

        async fn send(&self, _message: &Message) -> Result<Receipt, ProviderError> {
            Err(ProviderError::transient("not used"))
        }

        async fn lookup(&self, _reference: &MessageId) -> Result<Lookup, ProviderError> {
            Ok(Lookup::CannotTell)
        }
    }

    fn router(per_second: f64) -> Arc<Router> {
        Arc::new(Router::new(
            Mode::Ordered,
            vec![Member::new(
                Arc::new(Vendor),
                1,
                None,
                Some((per_second, 10)),
            )],
            Duration::from_secs(1),
        ))
    }

    fn rate(router: &Router) -> f64 {
        router.members()[0]
            .limiter
            .as_ref()
            .expect("a rate limit")
            .rate()
    }

    /// A second dispatcher halves this one's rate; when it leaves, or stops
    /// beating, the whole rate comes back at the next beat but one.
    #[tokio::test(start_paused = true)]
    async fn the_rate_is_shared_by_the_dispatchers_alive() {
        let fleet: Arc<dyn Fleet> = Arc::new(LocalFleet::default());
        let route = router(100.0);
        let mut this = FleetShare::named(fleet.clone(), vec![route.clone()], "this".into());
        assert_eq!(this.beat().await, 1);
        assert_eq!(rate(&route), 100.0);

        fleet.beat("other", ALIVE_FOR).await.expect("beat");
        assert_eq!(this.beat().await, 2, "a rise is taken at once");
        assert_eq!(rate(&route), 50.0);

        fleet.leave("other").await.expect("leave");
        assert_eq!(this.beat().await, 2, "a fall waits for two more beats");
        assert_eq!(this.beat().await, 2);
        assert_eq!(this.beat().await, 1);
        assert_eq!(rate(&route), 100.0);

        fleet.beat("gone", ALIVE_FOR).await.expect("beat");
        assert_eq!(this.beat().await, 2);
        tokio::time::advance(ALIVE_FOR).await;
        this.beat().await;
        this.beat().await;
        assert_eq!(this.beat().await, 1, "its time ran out");
    }

    /// The count reads low for two beats (the backend restarted empty, the
    /// others beat again late): the rate stays shared.
    #[tokio::test(start_paused = true)]
    async fn a_count_low_for_two_beats_raises_no_rate() {
        let fleet: Arc<dyn Fleet> = Arc::new(LocalFleet::default());
        let route = router(90.0);
        let mut this = FleetShare::named(fleet.clone(), vec![route.clone()], "this".into());
        fleet.beat("a", ALIVE_FOR).await.expect("beat");
        fleet.beat("b", ALIVE_FOR).await.expect("beat");
        assert_eq!(this.beat().await, 3);
        fleet.leave("a").await.expect("leave");
        fleet.leave("b").await.expect("leave");
        assert_eq!(this.beat().await, 3);
        fleet.beat("a", ALIVE_FOR).await.expect("beat");
        assert_eq!(this.beat().await, 3);
        assert_eq!(rate(&route), 30.0);
        fleet.beat("b", ALIVE_FOR).await.expect("beat");
        assert_eq!(this.beat().await, 3);
        assert_eq!(rate(&route), 30.0);
    }

    /// A fleet that cannot be asked: the last count stands.
    struct Down;

    #[async_trait]
    impl Fleet for Down {
        async fn beat(&self, _member: &str, _alive_for: Duration) -> Result<usize, StoreError> {
            Err(StoreError::Unavailable("connection refused".into()))
        }

        async fn leave(&self, _member: &str) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("connection refused".into()))
        }
    }

    #[tokio::test]
    async fn while_the_count_cannot_be_had_the_last_one_stands() {
        let route = router(90.0);
        let local: Arc<dyn Fleet> = Arc::new(LocalFleet::default());
        local.beat("a", ALIVE_FOR).await.expect("beat");
        let mut this = FleetShare::named(local, vec![route.clone()], "this".into());
        assert_eq!(this.beat().await, 2);
        this.fleet = Arc::new(Down);
        assert_eq!(this.beat().await, 2);
        assert_eq!(rate(&route), 45.0);
        assert!(this.failing);
    }

    /// A fleet whose second beat panics; the others count `alive`.
    struct PanicsOnce {
        beats: std::sync::atomic::AtomicUsize,
        alive: usize,
    }

    #[async_trait]
    impl Fleet for PanicsOnce {
        async fn beat(&self, _member: &str, _alive_for: Duration) -> Result<usize, StoreError> {
            let n = self.beats.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            assert_ne!(n, 1, "the fleet backend panicked");
            Ok(if n == 0 { 1 } else { self.alive })
        }

        async fn leave(&self, _member: &str) -> Result<(), StoreError> {
            Ok(())
        }
    }

    /// A beat that panics does not stop the count: the next beat shares the
    /// rate among the dispatchers alive then. The share stood at the last
    /// count for good before.
    #[tokio::test(start_paused = true)]
    async fn a_beat_that_panics_leaves_the_next_beats_counting() {
        let fleet = Arc::new(PanicsOnce {
            beats: Default::default(),
            alive: 3,
        });
        let route = router(90.0);
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(
            FleetShare::named(fleet.clone(), vec![route.clone()], "this".into())
                .run(shutdown.clone()),
        );
        // Four beats' time: the first, the one that panics, and two more.
        tokio::time::sleep(BEAT * 3 + BEAT / 2).await;
        assert!(fleet.beats.load(std::sync::atomic::Ordering::SeqCst) >= 3);
        assert_eq!(rate(&route), 30.0);
        shutdown.cancel();
        running.await.expect("the share ran to its stop");
    }

    /// A clean stop leaves the count at once.
    #[tokio::test]
    async fn a_stopped_dispatcher_leaves_the_count() {
        let fleet: Arc<dyn Fleet> = Arc::new(LocalFleet::default());
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(
            FleetShare::named(fleet.clone(), vec![router(10.0)], "leaving".into())
                .run(shutdown.clone()),
        );
        let counted = tokio::time::timeout(Duration::from_secs(5), async {
            while fleet.beat("this", ALIVE_FOR).await.expect("beat") < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(counted.is_ok(), "the running dispatcher was never counted");
        shutdown.cancel();
        running.await.expect("run");
        assert_eq!(fleet.beat("this", ALIVE_FOR).await.expect("beat"), 1);
    }
}
