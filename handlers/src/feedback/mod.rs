//! The feedback handler: delivers outcome events to the webhook endpoints
//! client services registered, signed per Standard Webhooks.
//!
//! It is one consumer group (`webhooks`) of the outcomes topic. For each
//! event, every enabled endpoint whose filters match gets a first try at
//! once (endpoints in parallel, one message's events in order); an event is
//! acknowledged on the topic only when each of its deliveries succeeded or
//! was handed to the retry timers (a pending delivery in the webhook store
//! and a timer on the same durable retry timing as message retries), so a
//! crash loses none. A failing endpoint gets no first tries: its deliveries
//! go straight to the timers, so it never holds up the others.
//!
//! Answers: 2xx within the timeout is success; 410 disables the endpoint;
//! 429, 502, 503 and 504 honour `Retry-After`; anything else is retried on
//! the schedule (with jitter). After the last try the delivery is given up
//! (it stays listed as failed and `recover` redelivers it); an endpoint
//! failing every try for `disable_after` is disabled.

pub mod address;
mod config;
mod endpoints;
mod post;
pub mod sign;
mod timers;

pub use config::FeedbackConfig;
pub use endpoints::Changing;
use endpoints::{wants, Endpoints};
use post::Tried;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use mdc_core::outcome::{OutcomeEvent, OutcomeInterest};
use mdc_core::ports::queue::OUTCOME_WEBHOOKS_GROUP;
use mdc_core::ports::{
    ConsumerSpec, Delivery, Disabled, PendingDelivery, Queue, QueueConsumer, RetryItem,
    RetryScheduler, StoreError, Topic, WebhookAttempt, WebhookEndpoint, Webhooks,
};
use mdc_core::{MessageId, Priority};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Outcome records fetched at once.
const BATCH: usize = 256;
/// Pause after the queue or the store failed.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
pub struct Feedback {
    queue: Arc<dyn Queue>,
    webhooks: Arc<dyn Webhooks>,
    timers: Arc<dyn RetryScheduler>,
    http: reqwest::Client,
    config: FeedbackConfig,
    /// The endpoints, read again when older than a second or invalidated,
    /// and every half second once a queue asks which outcomes are wanted.
    endpoints: Arc<Endpoints>,
    in_flight: Semaphore,
    per_endpoint: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Feedback {
    pub fn new(
        queue: Arc<dyn Queue>,
        webhooks: Arc<dyn Webhooks>,
        timers: Arc<dyn RetryScheduler>,
        config: FeedbackConfig,
    ) -> Self {
        Self {
            http: address::client(config.timeout, config.allow_private_urls),
            in_flight: Semaphore::new(config.max_in_flight),
            queue,
            webhooks,
            timers,
            config,
            endpoints: Arc::default(),
            per_endpoint: Mutex::new(HashMap::new()),
        }
    }

    /// Makes the next event see endpoint changes at once.
    pub fn invalidate(&self) {
        self.endpoints.invalidate();
    }

    /// Begins a change to the endpoints, made while the guard is held:
    /// until it is dropped every outcome is written, and the next event
    /// reads the endpoints again.
    pub fn changing(&self) -> Changing {
        self.endpoints.changing()
    }

    /// Which outcome events some endpoint wants, as last read, for a queue
    /// that can leave the rest unwritten. Holds the endpoints' view only,
    /// not the handler (which holds the queue).
    pub fn interest(&self) -> Arc<dyn OutcomeInterest> {
        self.endpoints.clone()
    }

    pub fn config(&self) -> &FeedbackConfig {
        &self.config
    }

    /// Delivers until `shutdown`: the outcomes consumer and the retry loop.
    ///
    /// The loops it starts (the retry loop, the pruner, the endpoint
    /// reader) stop with it, also when it panics or is dropped: a restart
    /// by [`mdc_core::supervise::supervise`] leaves one of each. A retry
    /// already firing finishes on its own, within the webhook timeout.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let consumer = self
            .queue
            .group_consumer(
                Topic::Outcomes,
                OUTCOME_WEBHOOKS_GROUP,
                ConsumerSpec { index: 0, count: 1 },
            )
            .await?;
        let ours = shutdown.child_token();
        let _stop_ours = ours.clone().drop_guard();
        let retries = tokio::spawn(self.clone().retry_loop(ours.clone()));
        let pruner = tokio::spawn(self.clone().prune_loop(ours.clone()));
        let freshener = tokio::spawn({
            let (endpoints, webhooks) = (self.endpoints.clone(), self.webhooks.clone());
            let shutdown = ours.clone();
            async move {
                let load = || {
                    let webhooks = webhooks.clone();
                    async move { webhooks.list().await }
                };
                endpoints.keep_fresh(load, shutdown).await;
            }
        });
        while !shutdown.is_cancelled() {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break,
                batch = consumer.fetch(BATCH) => batch,
            };
            match batch {
                Ok(batch) => self.handle_batch(&consumer, batch).await,
                Err(e) => {
                    tracing::warn!(error = %e, "Could not read outcomes; retrying");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
        }
        consumer.close().await.ok();
        retries.await?;
        pruner.await?;
        freshener.await?;
        Ok(())
    }

    /// Deletes old attempts every quarter of the retention (at most
    /// hourly), so the attempt log stays bounded.
    async fn prune_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let every = (self.config.attempt_retention / 4)
            .clamp(Duration::from_millis(250), Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let before = mdc_core::now()
                - chrono::Duration::from_std(self.config.attempt_retention).unwrap_or_default();
            match self.webhooks.prune_attempts(before).await {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "Deleted old webhook attempts"),
                Err(e) => tracing::warn!(error = %e, "Could not delete old webhook attempts"),
            }
        }
    }

    /// One message's events in order, messages in parallel; each record
    /// acknowledged once all its deliveries are done or pending.
    async fn handle_batch(&self, consumer: &Arc<dyn QueueConsumer>, batch: Vec<Delivery>) {
        let mut by_key: HashMap<&str, Vec<&Delivery>> = HashMap::new();
        for delivery in &batch {
            by_key.entry(&delivery.key).or_default().push(delivery);
        }
        join_all(by_key.into_values().map(|records| async move {
            for record in records {
                loop {
                    match self.handle_event(&record.payload).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "Could not hand an outcome to its endpoints; retrying");
                            tokio::time::sleep(ERROR_BACKOFF).await;
                        }
                    }
                }
                if let Err(e) = consumer.ack(record).await {
                    tracing::warn!(error = %e, "Could not acknowledge an outcome; it will be delivered again");
                }
            }
        }))
        .await;
    }

    async fn endpoints(&self) -> Result<Arc<Vec<WebhookEndpoint>>, StoreError> {
        self.endpoints.get(self.webhooks.list()).await
    }

    async fn handle_event(&self, payload: &[u8]) -> Result<(), StoreError> {
        let event: OutcomeEvent = match serde_json::from_slice(payload) {
            Ok(event) => event,
            Err(e) => {
                tracing::error!(error = %e, "Skipping an unreadable outcome event");
                return Ok(());
            }
        };
        let endpoints = self.endpoints().await?;
        let matching: Vec<&WebhookEndpoint> =
            endpoints.iter().filter(|e| wants(e, &event)).collect();
        if matching.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_vec(&event).map_err(|e| StoreError::Other(e.into()))?;
        let results = join_all(
            matching
                .into_iter()
                .map(|endpoint| self.first_delivery(endpoint, &event.event_id, &body)),
        )
        .await;
        results.into_iter().collect()
    }

    async fn first_delivery(
        &self,
        endpoint: &WebhookEndpoint,
        event_id: &str,
        body: &[u8],
    ) -> Result<(), StoreError> {
        if endpoint.failing_since.is_some() {
            // Straight to the timers: a failing endpoint holds up no one.
            return self
                .defer(endpoint, None, event_id, body, 0, Duration::ZERO)
                .await;
        }
        match self.try_once(endpoint, event_id, body, 1).await {
            Tried::Delivered => Ok(()),
            Tried::Gone => {
                self.disable(endpoint, "the endpoint answered 410 Gone")
                    .await
            }
            Tried::Failed { retry_after } => {
                self.failed(endpoint, None, event_id, body, 1, retry_after)
                    .await
            }
        }
    }

    /// After `attempts` failed tries: the next one on the timers, or the
    /// delivery given up; the endpoint marked failing, or disabled after
    /// failing for `disable_after`.
    async fn failed(
        &self,
        endpoint: &WebhookEndpoint,
        key: Option<MessageId>,
        event_id: &str,
        body: &[u8],
        attempts: u32,
        retry_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        let now = mdc_core::now();
        let mut current = self
            .webhooks
            .get(&endpoint.id)
            .await?
            .unwrap_or_else(|| endpoint.clone());
        match current.failing_since {
            Some(since)
                if (now - since).to_std().unwrap_or_default() >= self.config.disable_after =>
            {
                if let Some(key) = &key {
                    self.webhooks.remove_pending(key).await?;
                }
                let reason = format!(
                    "every delivery failed for {}",
                    humantime::format_duration(self.config.disable_after)
                );
                return self.disable(&current, &reason).await;
            }
            Some(_) => {}
            None => {
                current.failing_since = Some(now);
                self.webhooks.update(&current).await?;
                self.invalidate();
            }
        }
        let Some(delay) = self.config.schedule.get(attempts as usize - 1).copied() else {
            tracing::warn!(endpoint = %endpoint.id, %event_id, attempts, "Gave up a webhook delivery after its last try");
            if let Some(key) = &key {
                self.webhooks.remove_pending(key).await?;
            }
            return Ok(());
        };
        let jitter = rand::rng().random_range(0.9..1.1);
        let delay = delay.mul_f64(jitter).max(retry_after.unwrap_or_default());
        self.defer(endpoint, key, event_id, body, attempts, delay)
            .await
    }

    /// Keeps the delivery (durably) and sets its timer `delay` from now.
    async fn defer(
        &self,
        endpoint: &WebhookEndpoint,
        key: Option<MessageId>,
        event_id: &str,
        body: &[u8],
        attempts: u32,
        delay: Duration,
    ) -> Result<(), StoreError> {
        let key = key.unwrap_or_else(MessageId::generate);
        let event: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| StoreError::Other(e.into()))?;
        self.webhooks
            .save_pending(&PendingDelivery {
                key: key.clone(),
                endpoint_id: endpoint.id.clone(),
                event_id: event_id.to_owned(),
                event,
                attempts,
            })
            .await?;
        let due = mdc_core::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        self.timers
            .schedule(RetryItem {
                message_id: key,
                channel: mdc_core::Channel::Sms,
                priority: Priority::Normal,
                due,
            })
            .await
            .map_err(|e| StoreError::Other(e.into()))
    }

    async fn disable(&self, endpoint: &WebhookEndpoint, reason: &str) -> Result<(), StoreError> {
        let mut current = self
            .webhooks
            .get(&endpoint.id)
            .await?
            .unwrap_or_else(|| endpoint.clone());
        if current.disabled.is_some() {
            return Ok(());
        }
        current.disabled = Some(Disabled {
            reason: reason.to_owned(),
            at: mdc_core::now(),
        });
        current.updated_at = mdc_core::now();
        self.webhooks.update(&current).await?;
        self.invalidate();
        tracing::warn!(endpoint = %endpoint.id, %reason, "Disabled a webhook endpoint");
        // Said where the endpoint's owner looks: its attempt log.
        self.webhooks
            .record_attempt(&WebhookAttempt {
                endpoint_id: endpoint.id.clone(),
                event_id: "-".to_owned(),
                attempt: 0,
                at: mdc_core::now(),
                status: None,
                latency_ms: 0,
                error: Some(format!("endpoint disabled: {reason}")),
                response: String::new(),
                succeeded: false,
                event: None,
            })
            .await
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
