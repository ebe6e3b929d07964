use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use mdc_core::ports::{
    CachedMessage, Claim, ConsumerSpec, Delivery, MessageCache, ProviderError, Queue,
    QueueConsumer, Receipt, RetryItem, RetryScheduler, StatusUpdate, Store, Topic,
};
use mdc_core::{mask, Channel, Event, Message, MessageRecord, Priority, Status, Timestamp};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use mdc_providers::router::Router;

use crate::DispatcherConfig;

const COMPONENT: &str = "dispatcher";

/// Pause after a backend error before the next fetch.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Per channel, how many consumers of each priority lane have work: a lane
/// whose last fetch returned records has a backlog. While a higher lane of
/// the channel has one, the lower lanes are paused.
#[derive(Default)]
struct LaneGate {
    busy: [std::sync::atomic::AtomicU32; 3],
}

fn rank(priority: Priority) -> usize {
    match priority {
        Priority::Critical => 0,
        Priority::Normal => 1,
        Priority::Bulk => 2,
    }
}

impl LaneGate {
    fn set(&self, priority: Priority, was: &mut bool, busy: bool) {
        use std::sync::atomic::Ordering;
        if *was != busy {
            let counter = &self.busy[rank(priority)];
            if busy {
                counter.fetch_add(1, Ordering::AcqRel);
            } else {
                counter.fetch_sub(1, Ordering::AcqRel);
            }
            *was = busy;
        }
    }

    /// Whether a higher lane than `priority` has a backlog.
    fn pre_empted(&self, priority: Priority) -> bool {
        self.busy[..rank(priority)]
            .iter()
            .any(|n| n.load(std::sync::atomic::Ordering::Acquire) > 0)
    }
}

pub struct Dispatcher {
    gates: HashMap<Channel, LaneGate>,
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    retry: Arc<dyn RetryScheduler>,
    routes: HashMap<Channel, Arc<Router>>,
    cache: Arc<dyn MessageCache>,
    config: DispatcherConfig,
    in_flight: Semaphore,
}

/// How long a vendor message id stays in the cache: longer than vendors take
/// to report.
const CACHE_TTL: Duration = Duration::from_secs(3 * 24 * 3600);

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// What became of one queued record.
enum Outcome {
    /// Nothing more to do: acknowledge it.
    Done,
    /// The store could not be reached: leave it unacknowledged.
    Retry(String),
}

impl Dispatcher {
    pub fn new(
        queue: Arc<dyn Queue>,
        store: Arc<dyn Store>,
        retry: Arc<dyn RetryScheduler>,
        routes: HashMap<Channel, Arc<Router>>,
        cache: Arc<dyn MessageCache>,
        config: DispatcherConfig,
    ) -> Self {
        let in_flight = Semaphore::new(config.max_in_flight);
        Self {
            gates: Channel::ALL
                .iter()
                .map(|&c| (c, LaneGate::default()))
                .collect(),
            queue,
            store,
            retry,
            routes,
            cache,
            config,
            in_flight,
        }
    }

    /// Consumes every lane until `shutdown`, then finishes the sends in flight
    /// (within the drain timeout) and returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tasks = Vec::new();
        for &channel in Channel::ALL {
            if !self.routes.contains_key(&channel) {
                continue;
            }
            for &priority in Priority::ALL {
                let count = self.config.consumers(priority);
                for index in 0..count {
                    let topic = Topic::Messages(channel, priority);
                    let consumer = self
                        .queue
                        .consumer(topic, ConsumerSpec { index, count })
                        .await?;
                    let this = self.clone();
                    let shutdown = shutdown.clone();
                    tasks.push(tokio::spawn(async move {
                        this.consume(topic, consumer, shutdown).await
                    }));
                }
            }
        }
        let all = join_all(tasks);
        tokio::pin!(all);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = &mut all => return Ok(()),
        }
        // The deadline counts from the shutdown, not from the start.
        let drained = tokio::time::timeout(self.config.drain_timeout + ERROR_BACKOFF, all);
        if drained.await.is_err() {
            tracing::warn!(
                "Dispatcher drain timed out; unacknowledged messages are redelivered on restart"
            );
        }
        Ok(())
    }

    async fn consume(
        &self,
        topic: Topic,
        consumer: Arc<dyn QueueConsumer>,
        shutdown: CancellationToken,
    ) {
        let Topic::Messages(channel, priority) = topic else {
            return;
        };
        let gate = &self.gates[&channel];
        let mut busy = false;
        let mut paused = false;
        while !shutdown.is_cancelled() {
            let pre_empted = gate.pre_empted(priority);
            if pre_empted != paused {
                let result = if pre_empted {
                    consumer.pause().await
                } else {
                    consumer.resume().await
                };
                match result {
                    Ok(()) => {
                        paused = pre_empted;
                        tracing::debug!(%topic, paused, "A higher-priority lane's backlog changed");
                    }
                    Err(e) => {
                        tracing::warn!(%topic, error = %e, "Could not pause or resume a lane")
                    }
                }
            }
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break,
                batch = consumer.fetch(self.config.batch_size) => batch,
            };
            match batch {
                Ok(batch) if !batch.is_empty() => {
                    gate.set(priority, &mut busy, true);
                    self.process_batch(&consumer, batch).await;
                }
                Ok(_) => gate.set(priority, &mut busy, false),
                Err(e) => {
                    tracing::warn!(%topic, error = %e, "Fetching from the queue failed; retrying");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
        }
        gate.set(priority, &mut busy, false);
        if let Err(e) = consumer.close().await {
            tracing::warn!(%topic, error = %e, "Leaving the consumer group failed");
        }
    }

    /// Records of one recipient are handled in order; different recipients
    /// concurrently.
    async fn process_batch(&self, consumer: &Arc<dyn QueueConsumer>, batch: Vec<Delivery>) {
        let mut by_key: HashMap<&str, Vec<&Delivery>> = HashMap::new();
        for delivery in &batch {
            by_key
                .entry(delivery.key.as_str())
                .or_default()
                .push(delivery);
        }
        join_all(by_key.into_values().map(|deliveries| async move {
            for delivery in deliveries {
                self.process(consumer, delivery).await;
            }
        }))
        .await;
    }

    async fn process(&self, consumer: &Arc<dyn QueueConsumer>, delivery: &Delivery) {
        loop {
            match self.handle(delivery).await {
                Outcome::Done => break,
                Outcome::Retry(error) => {
                    tracing::warn!(topic = %delivery.topic, offset = delivery.offset, %error, "Store unavailable while dispatching; retrying");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
        }
        if let Err(e) = consumer.ack(delivery).await {
            tracing::warn!(error = %e, "Acknowledgement failed; the message will be redelivered and skipped");
        }
    }

    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let message = match Message::decode(&delivery.payload) {
            Ok(message) => message,
            Err(e) => {
                tracing::error!(topic = %delivery.topic, partition = delivery.partition, offset = delivery.offset, error = %e, "Dropping an unreadable queue record");
                return Outcome::Done;
            }
        };
        let span = tracing::info_span!("dispatch", message_id = %message.id, channel = %message.channel(), priority = %message.priority);
        self.dispatch(message).instrument(span).await
    }

    async fn dispatch(&self, message: Message) -> Outcome {
        self.dispatch_inner(message, false).await
    }

    async fn dispatch_inner(&self, message: Message, waited: bool) -> Outcome {
        let id = &message.id;
        let now = mdc_core::now();
        if now > message.deadline {
            let event = Event::new(
                COMPONENT,
                "deadline passed before the message could be sent",
            );
            return match self
                .store
                .update(id, StatusUpdate::to(Status::Expired, event))
                .await
            {
                Ok(_) => Outcome::Done,
                Err(e) => Outcome::Retry(e.to_string()),
            };
        }
        let lease_until = now + chrono(self.config.lease);
        let claim = match self.store.claim(id, now, lease_until, COMPONENT).await {
            Ok(claim) => claim,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        match claim {
            Claim::Claimed {
                record,
                verify_first,
            } => self.attempt(*record, verify_first).await,
            Claim::Finished { status } => {
                tracing::debug!(%status, "Already sent or finished; skipping redelivery");
                Outcome::Done
            }
            Claim::NotDue { at } => {
                tracing::debug!(due = %at, "Retry not due yet; the scheduler holds it");
                Outcome::Done
            }
            Claim::Busy { lease_until } if !waited => {
                // An attempt is in flight elsewhere, or was when a dispatcher
                // died (this is a redelivery). Wait for its lease here rather
                // than scheduling a retry: later messages to the same
                // recipient queue behind this one, so their order holds.
                let wait = (lease_until - mdc_core::now())
                    .to_std()
                    .unwrap_or_default()
                    .min(self.config.lease);
                tracing::info!(wait = ?wait, "Message held by an earlier attempt; waiting for its lease");
                tokio::time::sleep(wait + Duration::from_millis(10)).await;
                return Box::pin(self.dispatch_inner(message, true)).await;
            }
            Claim::Busy { lease_until } => {
                // Still held: look again when the lease ends.
                self.schedule(&message, lease_until).await
            }
            Claim::NotFound => {
                tracing::warn!("Queued message missing from the store; dropping it");
                Outcome::Done
            }
        }
    }

    async fn schedule(&self, message: &Message, due: Timestamp) -> Outcome {
        let item = RetryItem {
            message_id: message.id.clone(),
            channel: message.channel(),
            priority: message.priority,
            due,
        };
        match self.retry.schedule(item).await {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    async fn attempt(&self, record: MessageRecord, verify_first: bool) -> Outcome {
        let message = &record.message;
        let Some(router) = self.routes.get(&message.channel()).cloned() else {
            let event = Event::new(COMPONENT, "no provider is configured for this channel");
            return self
                .finish(&record, StatusUpdate::to(Status::Failed, event))
                .await;
        };
        let _permit = self.in_flight.acquire().await;
        if verify_first {
            let asked = record.provider.clone().unwrap_or_default();
            match router.lookup(record.provider.as_deref(), &message.id).await {
                Ok(Some(receipt)) => {
                    let details = "vendor already had it from an earlier attempt; not resent";
                    return self.sent(&record, &asked, receipt, details).await;
                }
                Ok(None) => tracing::info!("Vendor does not have the message; sending"),
                Err(error) => return self.failed_attempt(&record, &asked, error, true).await,
            }
        }
        // The router bounds each provider call by the send timeout; waiting
        // for a rate-limit token is not bounded (backpressure).
        let attempt = router.send(message).await;
        for (provider, reason) in &attempt.skipped {
            if *provider != attempt.provider {
                tracing::info!(%provider, %reason, "Failed over to the next provider");
            }
        }
        let failover: Vec<String> = attempt
            .skipped
            .iter()
            .filter(|(provider, _)| *provider != attempt.provider)
            .map(|(provider, reason)| format!("{provider}: {reason}"))
            .collect();
        match attempt.result {
            Ok(receipt) if failover.is_empty() => {
                self.sent(&record, &attempt.provider, receipt, "sent").await
            }
            Ok(receipt) => {
                let details = format!("sent after failing over ({})", failover.join("; "));
                self.sent(&record, &attempt.provider, receipt, &details)
                    .await
            }
            Err(error) => {
                self.failed_attempt(&record, &attempt.provider, error, false)
                    .await
            }
        }
    }

    async fn sent(
        &self,
        record: &MessageRecord,
        provider: &str,
        receipt: Receipt,
        details: &str,
    ) -> Outcome {
        let event = Event::new(COMPONENT, details)
            .provider(provider, Some(&receipt.provider_message_id))
            .raw(receipt.raw);
        let message = &record.message;
        let cached = CachedMessage {
            message_id: message.id.clone(),
            channel: message.channel(),
        };
        // Only a shortcut for vendor reports: the store's index is the truth.
        if let Err(e) = self
            .cache
            .put(provider, &receipt.provider_message_id, cached, CACHE_TTL)
            .await
        {
            tracing::warn!(error = %e, "Could not cache the vendor message id");
        }
        let mut update = StatusUpdate::to(Status::Sent, event);
        update.provider = Some(provider.to_owned());
        update.provider_message_id = Some(receipt.provider_message_id);
        update.verify_before_send = Some(false);
        self.finish(record, update).await
    }

    async fn failed_attempt(
        &self,
        record: &MessageRecord,
        provider: &str,
        error: ProviderError,
        verifying: bool,
    ) -> Outcome {
        let message = &record.message;
        let attempt = record.attempts;
        let (retry_after, ambiguous) = match &error {
            ProviderError::Permanent { .. } => {
                tracing::info!(to = %mask::recipient(&message.to), %error, "Vendor refused the message");
                let event = Event::new(COMPONENT, format!("attempt {attempt} refused"))
                    .provider(provider, None)
                    .error(error.to_string());
                return self
                    .finish(record, StatusUpdate::to(Status::Failed, event))
                    .await;
            }
            ProviderError::Transient { retry_after, .. } => (*retry_after, verifying),
            ProviderError::Ambiguous { .. } => (None, true),
        };
        let schedule = &self.config.retry_schedule;
        let Some(&delay) = schedule.get(attempt as usize - 1) else {
            let event = Event::new(
                COMPONENT,
                format!("attempt {attempt} failed; giving up after {attempt} attempts"),
            )
            .provider(provider, None)
            .error(error.to_string());
            return self
                .finish(record, StatusUpdate::to(Status::Failed, event))
                .await;
        };
        let delay = retry_after.map_or(delay, |after| after.max(delay));
        let due = mdc_core::now() + chrono(delay);
        if due > message.deadline {
            let event = Event::new(
                COMPONENT,
                format!("attempt {attempt} failed and the next would be after the deadline"),
            )
            .provider(provider, None)
            .error(error.to_string());
            return self
                .finish(record, StatusUpdate::to(Status::Expired, event))
                .await;
        }
        // The timer first: if we stop between the two writes, the timer finds
        // the attempt's lease and waits it out, so nothing is stranded.
        let mut details = format!(
            "attempt {attempt} failed; next attempt at {}",
            due.to_rfc3339()
        );
        if let Outcome::Retry(e) = self.schedule(message, due).await {
            // Without a timer the attempt is still recorded as over, with its
            // due time: the reconciler schedules it once the retry backend is
            // back. Going round again here would resend at once and use up
            // the retry schedule while the backend is away.
            tracing::warn!(message_id = %message.id, error = %e, "Could not set the retry timer; the reconciler will schedule the retry");
            details.push_str(&format!(
                " (the retry timer could not be set: {e}; the reconciler will set it)"
            ));
        }
        let event = Event::new(COMPONENT, details)
            .provider(provider, None)
            .error(error.to_string());
        let mut update = StatusUpdate::to(Status::Sending, event);
        // The provider to ask first if this attempt turns out ambiguous.
        update.provider = Some(provider.to_owned());
        update.next_attempt_at = Some(due);
        update.end_attempt = true;
        update.verify_before_send = Some(ambiguous);
        self.finish(record, update).await
    }

    /// Records an attempt's outcome, unless a newer attempt has taken over.
    async fn finish(&self, record: &MessageRecord, mut update: StatusUpdate) -> Outcome {
        update.expect_attempt = Some(record.attempts);
        match self.store.update(&record.message.id, update).await {
            Ok(_) => Outcome::Done,
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
}
