//! The dispatcher's path for one queued record, in order:
//!
//! 1. [`Dispatcher::consume`]: one loop per lane consumer; pauses while a
//!    higher lane has a backlog (unless the lane is owed its share), takes
//!    smaller batches while a higher lane is sending, fetches a batch, hands
//!    it to [`Dispatcher::handle_batch`].
//! 2. [`Dispatcher::handle_batch`]: records of one recipient in order,
//!    different recipients at once; each record is acknowledged once its
//!    outcome is stored.
//! 3. [`Dispatcher::dispatch`]: decode, drop what is past its deadline, take
//!    an in-flight permit, then claim the message in the store.
//! 4. [`Dispatcher::attempt`]: under a lease kept alive until it returns: ask
//!    the vendor first if an earlier attempt may have reached it, send
//!    through the channel's router, and turn the result into a
//!    [`Transition`] ([`crate::retry::next_attempt`] decides retries).
//! 5. [`Dispatcher::store_outcome`]: writes that transition, retrying the
//!    write (never the send) until the store takes it.
//!
//! Steps 1 to 3 are here, 4 and 5 in [`attempt`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use mdc_core::ports::{
    Claim, ConsumerSpec, Created, Delivery, MessageCache, Queue, QueueConsumer, RetryScheduler,
    Store, StoreError, SuppressionList, Topic, Transition, Updated,
};
use mdc_core::supervise::TaskHealth;
use mdc_core::{mask, Channel, Event, Message, MessageRecord, Priority, Status, Timestamp};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::lanes::{Found, LaneGate, Standing, SHARING_DIVISOR};
use crate::routing::Router;
use crate::DispatcherConfig;

/// Rounds of storing a directly produced message whose key's holder keeps
/// being removed before it is noted; past them the record is taken again
/// later (an error), never dropped unnoted.
const DIRECT_ROUNDS: u32 = 3;

mod attempt;

use attempt::Held;

const COMPONENT: &str = "dispatcher";

/// How one pass over a queued message ended.
enum Pass {
    /// Sent, failed, skipped or handed on: the record can be acknowledged.
    Done,
    /// Its record is not in the store (yet).
    NotStored,
}

/// Pause after a backend error before the next fetch.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// How often a pre-empted lane that found itself empty looks for records
/// it is owed a share of.
const SHARE_PROBE: Duration = Duration::from_secs(1);
/// How long a queued message whose record is not in the store is looked
/// for again before it is dropped: the accept path stores and queues a
/// message at the same time, so its record may land just after.
pub const NOT_STORED_GRACE: Duration = Duration::from_secs(5);
/// The first pause before looking for such a record again; it doubles.
const NOT_STORED_PAUSE: Duration = Duration::from_millis(5);

/// Longest pause between two tries to store an outcome the vendor already
/// gave.
const MAX_WRITE_BACKOFF: Duration = Duration::from_secs(10);

/// How long a vendor message id stays in the cache: longer than vendors take
/// to report.
const CACHE_TTL: Duration = Duration::from_secs(3 * 24 * 3600);

pub struct Dispatcher {
    gates: HashMap<Channel, LaneGate>,
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    retry: Arc<dyn RetryScheduler>,
    routes: HashMap<Channel, Arc<Router>>,
    cache: Arc<dyn MessageCache>,
    config: DispatcherConfig,
    in_flight: Semaphore,
    /// Counts lane consumers that panicked and were started again.
    health: Arc<TaskHealth>,
    /// Checked for messages produced directly, which skipped the accept
    /// path's check.
    suppressions: Option<Arc<dyn SuppressionList>>,
}

/// A std duration as chrono's, saturating (config durations are bounded).
fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `now + d`, saturating at the end of time instead of panicking.
fn later(now: Timestamp, d: Duration) -> Timestamp {
    now.checked_add_signed(chrono(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
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
        let shares = config.shares();
        Self {
            gates: Channel::ALL
                .iter()
                .map(|&c| (c, LaneGate::new(shares)))
                .collect(),
            queue,
            store,
            retry,
            routes,
            cache,
            config,
            in_flight,
            health: Arc::default(),
            suppressions: None,
        }
    }

    /// Refuses directly produced messages to recipients on `list`, as the
    /// accept path refuses submitted ones.
    pub fn with_suppressions(mut self, list: Arc<dyn SuppressionList>) -> Self {
        self.suppressions = Some(list);
        self
    }

    /// Counts restarts in `health` (shared with the process's other tasks).
    pub fn with_health(mut self, health: Arc<TaskHealth>) -> Self {
        self.health = health;
        self
    }

    /// How many lane consumers panicked and were started again.
    pub fn restarts(&self) -> u64 {
        self.health.restarts()
    }

    /// Consumes every lane until `shutdown`, then finishes the sends in flight
    /// (within the drain timeout) and returns. A lane consumer that panics is
    /// logged and started again: its records were not acknowledged, so they
    /// come back to it.
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
                    let spec = ConsumerSpec { index, count };
                    let this = self.clone();
                    let shutdown = shutdown.clone();
                    tasks.push(tokio::spawn(async move {
                        this.supervise(topic, spec, shutdown).await
                    }));
                }
            }
        }
        let all = join_all(tasks);
        tokio::pin!(all);
        let results = tokio::select! {
            _ = shutdown.cancelled() => {
                // The deadline counts from the shutdown, not from the start.
                let drain = self.config.drain_timeout + ERROR_BACKOFF;
                match tokio::time::timeout(drain, all).await {
                    Ok(results) => results,
                    Err(_) => {
                        tracing::warn!("Dispatcher drain timed out; unacknowledged messages are redelivered on restart");
                        return Ok(());
                    }
                }
            }
            results = &mut all => results,
        };
        for result in results {
            result??;
        }
        if !shutdown.is_cancelled() {
            anyhow::bail!("every lane consumer stopped");
        }
        Ok(())
    }

    /// Runs one lane consumer, starting it again after a panic. Joining the
    /// group fails only at start-up or when the queue is gone: that ends the
    /// dispatcher with the error.
    async fn supervise(
        self: Arc<Self>,
        topic: Topic,
        spec: ConsumerSpec,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            let consumer = self.queue.consumer(topic, spec).await?;
            let this = self.clone();
            let token = shutdown.clone();
            let lane = tokio::spawn(async move { this.consume(topic, consumer, token).await });
            match lane.await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_panic() => {
                    self.health
                        .restarted(&format!("dispatcher {topic}"), &e.to_string());
                    tracing::error!(%topic, error = %e, "A lane consumer panicked; starting it again");
                    if shutdown.is_cancelled() {
                        return Ok(());
                    }
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
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
        // What this consumer's last fetch found: records make lower lanes
        // share, a full batch pre-empts them.
        let mut found = gate.slot(priority);
        // Whether this lane may have records waiting: until a fetch while
        // not paused comes back empty, it may. A lane that found itself
        // empty looks again now and then while pre-empted, as records may
        // have arrived meanwhile.
        let mut backlog = true;
        let mut probed = tokio::time::Instant::now();
        let mut paused = false;
        while !shutdown.is_cancelled() {
            let standing = gate.standing(priority);
            let pre_empted = standing == Standing::PreEmpted;
            let may_have_work = backlog || probed.elapsed() >= SHARE_PROBE;
            let owed = if pre_empted && may_have_work {
                gate.owed(priority)
            } else {
                0
            };
            if owed > 0 {
                probed = tokio::time::Instant::now();
            }
            let pause = pre_empted && owed == 0;
            if pause != paused {
                let result = if pause {
                    consumer.pause().await
                } else {
                    consumer.resume().await
                };
                match result {
                    Ok(()) => {
                        paused = pause;
                        tracing::debug!(%topic, paused, owed, "A higher-priority lane's backlog changed");
                    }
                    Err(e) => {
                        tracing::warn!(%topic, error = %e, "Could not pause or resume a lane")
                    }
                }
            }
            let max = if owed > 0 {
                owed.min(self.config.batch_size)
            } else if standing == Standing::Sharing {
                (self.config.batch_size / SHARING_DIVISOR).max(1)
            } else {
                self.config.batch_size
            };
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break,
                batch = consumer.fetch(max) => batch,
            };
            match batch {
                Ok(batch) if !batch.is_empty() => {
                    let now = if batch.len() >= max {
                        Found::Full
                    } else {
                        Found::Some
                    };
                    found.set(now);
                    backlog = true;
                    let n = batch.len();
                    self.handle_batch(&consumer, batch).await;
                    gate.handled(priority, n);
                }
                Ok(_) => {
                    found.set(Found::Nothing);
                    if !paused {
                        backlog = false;
                    }
                }
                Err(e) => {
                    found.set(Found::Nothing);
                    tracing::warn!(%topic, error = %e, "Fetching from the queue failed; retrying");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
        }
        drop(found);
        if let Err(e) = consumer.close().await {
            tracing::warn!(%topic, error = %e, "Leaving the consumer group failed");
        }
    }

    /// Records of one recipient are handled in order; different recipients
    /// concurrently. Each is acknowledged once its outcome is stored.
    async fn handle_batch(&self, consumer: &Arc<dyn QueueConsumer>, batch: Vec<Delivery>) {
        let mut by_key: HashMap<&str, Vec<&Delivery>> = HashMap::new();
        for delivery in &batch {
            by_key
                .entry(delivery.key.as_str())
                .or_default()
                .push(delivery);
        }
        join_all(by_key.into_values().map(|deliveries| async move {
            for delivery in deliveries {
                self.handle_record(delivery).await;
                if let Err(e) = consumer.ack(delivery).await {
                    tracing::warn!(error = %e, "Acknowledgement failed; the message will be redelivered and skipped");
                }
            }
        }))
        .await;
    }

    /// Dispatches one record, starting over while the store cannot be
    /// reached before the vendor was called.
    async fn handle_record(&self, delivery: &Delivery) {
        let message = match Message::decode(&delivery.payload) {
            Ok(message) => message,
            Err(e) => {
                tracing::error!(topic = %delivery.topic, partition = delivery.partition, offset = delivery.offset, error = %e, "Dropping an unreadable queue record");
                return;
            }
        };
        let span = tracing::info_span!("dispatch", message_id = %message.id, channel = %message.channel(), priority = %message.priority);
        async {
            let mut waited = false;
            let mut missing: Option<(tokio::time::Instant, Duration)> = None;
            loop {
                match self.dispatch(&message, &mut waited).await {
                    Ok(Pass::Done) => break,
                    Ok(Pass::NotStored) => {
                        if self.held_by_another(&message).await {
                            tracing::debug!("A repeated submission's copy (its key belongs to an earlier message); dropping it");
                            break;
                        }
                        let (since, pause) =
                            missing.get_or_insert((tokio::time::Instant::now(), NOT_STORED_PAUSE));
                        if since.elapsed() >= NOT_STORED_GRACE {
                            tracing::warn!("Queued message missing from the store; dropping it");
                            break;
                        }
                        tokio::time::sleep(*pause).await;
                        *pause = (*pause * 2).min(ERROR_BACKOFF);
                    }
                    Err(error) => {
                        tracing::warn!(topic = %delivery.topic, offset = delivery.offset, %error, "Store unavailable while dispatching; retrying");
                        tokio::time::sleep(ERROR_BACKOFF).await;
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Whether another stored message holds `message`'s idempotency key: a
    /// submission answered with that earlier message was queued (at the same
    /// time as its record was tried) but never stored, so there is nothing
    /// to wait for. Should the holder be removed and this record stored
    /// after all, the reconciler queues it again.
    async fn held_by_another(&self, message: &Message) -> bool {
        // An own key can be held by its message alone.
        if message.idempotency_key_owner().as_ref() == Some(&message.id) {
            return false;
        }
        match self.store.key_holder(message).await {
            Ok(holder) => holder.is_some_and(|holder| holder != message.id),
            Err(e) => {
                tracing::debug!(error = %e, "Could not look up an idempotency key");
                false
            }
        }
    }

    /// Claims the message and makes one attempt. An error means nothing was
    /// sent: the caller may start over.
    async fn dispatch(&self, message: &Message, waited: &mut bool) -> Result<Pass, StoreError> {
        // Past the deadline, with an attempt that may have reached a vendor.
        let mut late = false;
        let id = &message.id;
        self.store.remember_channel(id, message.channel());
        if message.direct && !Box::pin(self.record_direct(message)).await? {
            return Ok(Pass::Done);
        }
        if mdc_core::now() > message.deadline {
            let event = Event::new(
                COMPONENT,
                "deadline passed before the message could be sent",
            );
            match self
                .store
                .update(id, Transition::to(Status::Expired, event))
                .await?
            {
                Updated::Applied { .. } => {
                    Box::pin(self.publish_outcome(id)).await;
                    return Ok(Pass::Done);
                }
                // Queued before its record was written: expire it once it is.
                Updated::NotFound => return Ok(Pass::NotStored),
                // An attempt may have reached a vendor: a claimed attempt
                // asks first and, past the deadline, sends nothing.
                Updated::Ignored {
                    current: Status::Sending,
                } => late = true,
                _ => return Ok(Pass::Done),
            }
        }
        // The permit first, so the lease starts only when the send can.
        let _permit = self.in_flight.acquire().await;
        let now = mdc_core::now();
        let lease_until = later(now, self.config.lease);
        // The queue's copy is the stored message (the claim need not read
        // it), but for one a service produced directly: a second record of
        // the same id with other content is not what was stored, so the
        // store's copy is claimed.
        let claim = if message.direct {
            self.store.claim(id, now, lease_until, COMPONENT).await?
        } else {
            self.store
                .claim_message(message, now, lease_until, COMPONENT)
                .await?
        };
        match claim {
            Claim::Claimed { record, verify } => {
                let attempt = record.attempts;
                let held = Held::new(lease_until);
                // Boxed, as are the large or rare steps of dispatching: a
                // future is copied whole when made, and each record in
                // flight holds one (tests::a_records_dispatch_futures_stay_small).
                let mut work = Box::pin(self.attempt(*record, verify, &held));
                let keeper = self.keep_lease(message, attempt, &held);
                tokio::pin!(keeper);
                tokio::select! {
                    biased;
                    () = &mut work => {}
                    () = &mut keeper => {}
                }
                Ok(Pass::Done)
            }
            Claim::Finished { status } => {
                tracing::debug!(%status, "Already sent or finished; skipping redelivery");
                // The redelivery may follow a crash between the store write
                // and its outcome event: publish it again (same event id).
                if mdc_core::outcome::is_outcome(status) {
                    Box::pin(self.publish_outcome(id)).await;
                }
                Ok(Pass::Done)
            }
            Claim::NotDue { at } => {
                tracing::debug!(due = %at, "Retry not due yet; the scheduler holds it");
                Ok(Pass::Done)
            }
            // The attempt in flight ends it; this copy is not waited for.
            Claim::Busy { .. } if late => Ok(Pass::Done),
            Claim::Busy { lease_until } if !*waited => {
                // An attempt is in flight elsewhere, or was when a dispatcher
                // died (this is a redelivery). Wait for its lease here rather
                // than scheduling a retry: later messages to the same
                // recipient queue behind this one, so their order holds.
                *waited = true;
                let wait = (lease_until - mdc_core::now())
                    .to_std()
                    .unwrap_or_default()
                    .min(self.config.lease);
                tracing::info!(wait = ?wait, "Message held by an earlier attempt; waiting for its lease");
                drop(_permit);
                tokio::time::sleep(wait + Duration::from_millis(10)).await;
                Box::pin(self.dispatch(message, waited)).await
            }
            Claim::Busy { lease_until } => {
                // Still held: look again when the lease ends.
                Box::pin(self.schedule(message, lease_until)).await?;
                Ok(Pass::Done)
            }
            Claim::NotFound => Ok(Pass::NotStored),
        }
    }

    /// Stores a message a service produced straight to its topic (the
    /// client's direct transport), as the accept path would have; again on a
    /// redelivery, which finds it stored. False when it is not to be sent:
    /// its idempotency key belongs to another message, or its recipient is
    /// suppressed (it is then `failed`, and the service hears so).
    async fn record_direct(&self, message: &Message) -> Result<bool, StoreError> {
        let service = message.service.as_deref().unwrap_or("a service");
        let how = format!("accepted: produced directly by {service}");
        let record = MessageRecord::accepted(message.clone(), COMPONENT, &how);
        let mut rounds = 0;
        loop {
            rounds += 1;
            match self.store.create(&record).await? {
                Created::New => message.count_accepted(),
                Created::Existing(existing) if existing.message.id == message.id => {}
                Created::Existing(existing) => {
                    if !existing.message.same_request(message) {
                        tracing::warn!(used_by = %existing.message.id, "Idempotency key already used for another message; dropping this one");
                        return Ok(false);
                    }
                    // The service was told this copy was taken, so the holder
                    // now stands for it. A holder not yet sent may have missed
                    // the queue (its own submission's produce failing): it is
                    // produced again and noted, so that its submission keeps
                    // it rather than removing it (`Store::discard`), as a
                    // repeated submission does. One removed before the note
                    // leaves the key free for this copy.
                    let unsent = matches!(existing.status, Status::Accepted | Status::Queued)
                        && existing.attempts == 0;
                    if unsent {
                        if rounds >= DIRECT_ROUNDS {
                            return Err(StoreError::Unavailable(
                                "the holder of this message's idempotency key keeps being removed"
                                    .into(),
                            ));
                        }
                        let holder = &existing.message;
                        let topic = Topic::Messages(holder.channel(), holder.priority);
                        self.queue
                            .produce(topic, &holder.to, holder.encode())
                            .await
                            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
                        let event = Event::new(
                            COMPONENT,
                            format!("produced again directly by {service} with its idempotency key; this message stands for that copy"),
                        );
                        let noted = self
                            .store
                            .update(&existing.message.id, Transition::event(event))
                            .await?;
                        if matches!(noted, Updated::NotFound) {
                            continue;
                        }
                    }
                    tracing::info!(duplicate_of = %existing.message.id, "Produced again with the same idempotency key; dropping the copy");
                    return Ok(false);
                }
            }
            break;
        }
        let Some(list) = &self.suppressions else {
            return Ok(true);
        };
        let Some(entry) = list.get(message.channel(), &message.to).await? else {
            return Ok(true);
        };
        let event = Event::new(
            COMPONENT,
            format!(
                "recipient suppressed on {} since {}: {}",
                entry.channel,
                entry.at.to_rfc3339(),
                mask::scrub(&entry.reason)
            ),
        );
        if let Updated::Applied { .. } = self
            .store
            .update(&message.id, Transition::to(Status::Failed, event))
            .await?
        {
            self.publish_outcome(&message.id).await;
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests;
