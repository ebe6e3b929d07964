use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::join_all;
use mdc_core::outcome;
use mdc_core::ports::{
    ConsumerSpec, Delivery, MessageCache, Queue, QueueConsumer, Store, StoreError, Suppression,
    SuppressionList, Topic, Transition, Updated,
};
use mdc_core::supervise::TaskHealth;
use mdc_core::{DeliveryReport, Event, MessageId, ReportOutcome, Status, Timestamp};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const COMPONENT: &str = "response-handler";
const BATCH: usize = 256;

mod catch_up;
use catch_up::{lock, Behind, MAX_CATCHING_UP};

/// Tries to apply a report before it is parked, and the first pause
/// between tries (doubling each time: about 3 s in all).
const MAX_TRIES: u32 = 5;
const FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// How long a report that overtook its message's `sent` write waits for
/// it (pauses doubling from [`FIRST_PAUSE`], at most [`MAX_PAUSE`] each)
/// before it is parked.
const MAX_CATCH_UP_TRIES: u32 = 8;
const MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits `pause`; true when `shutdown` came first.
async fn stopped_during(pause: std::time::Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(pause) => false,
    }
}

/// Why a report was not applied.
#[derive(Debug, thiserror::Error)]
pub enum Unapplied {
    #[error("the report cannot be read")]
    Unreadable(#[source] serde_json::Error),
    /// The message's own `sent` is not stored yet.
    #[error("the message's sent outcome is not stored yet")]
    NotSentYet,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store took the report; its outcome event could not be published.
    #[error("could not publish the outcome: {0}")]
    Outcome(#[from] mdc_core::outcome::PublishError),
}

/// What a report that moves a message makes of its outcome.
enum Outcome {
    /// Its event, published: made of the record the write left and the
    /// event that moved it.
    Published(Event),
    /// Only its metrics, counted from the brief of the record the write
    /// left: no reader wanted outcome events ([`Queue::wants_outcomes`])
    /// when the report was taken (one that does by the end of the write
    /// still gets the event: [`outcome::count_moved`]).
    Counted { status: Status, at: Timestamp },
    /// A report that moves nothing makes none.
    Nothing,
}

/// Consumes the responses topic and moves messages to `delivered` or `failed`.
pub struct ResponseHandler {
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    /// Vendor message id → message, tried before the store.
    cache: Arc<dyn MessageCache>,
    parked: AtomicU64,
    suppressions: Option<Arc<dyn SuppressionList>>,
    /// Reports that named a message not sent through their provider.
    mismatched: AtomicU64,
    health: Arc<TaskHealth>,
    /// Room for reports waiting for their message's `sent` write.
    catching_up: Arc<Semaphore>,
    /// Reports that came before their message's `sent` was stored.
    overtaken: AtomicU64,
}

impl ResponseHandler {
    pub fn new(queue: Arc<dyn Queue>, store: Arc<dyn Store>, cache: Arc<dyn MessageCache>) -> Self {
        Self {
            queue,
            store,
            cache,
            parked: AtomicU64::new(0),
            suppressions: None,
            mismatched: AtomicU64::new(0),
            health: Arc::default(),
            catching_up: Arc::new(Semaphore::new(MAX_CATCHING_UP)),
            overtaken: AtomicU64::new(0),
        }
    }

    /// Suppresses recipients that reports say cannot or will not take
    /// messages.
    pub fn with_suppressions(mut self, list: Arc<dyn SuppressionList>) -> Self {
        self.suppressions = Some(list);
        self
    }

    /// Counts restarts in `health` (shared with the process's other tasks).
    pub fn with_health(mut self, health: Arc<TaskHealth>) -> Self {
        self.health = health;
        self
    }

    /// Runs `consumers` members of the group until `shutdown`; in-flight
    /// reports are finished first, except those waiting to be tried again
    /// (for their message's `sent` write, or through a store outage),
    /// which stay unacknowledged for the next run. A consumer that panics is logged, counted
    /// and started again; its unacknowledged reports come back to it.
    pub async fn run(
        self: Arc<Self>,
        consumers: u32,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut tasks = Vec::new();
        for index in 0..consumers {
            let spec = ConsumerSpec {
                index,
                count: consumers,
            };
            let this = self.clone();
            let shutdown = shutdown.clone();
            tasks.push(tokio::spawn(this.supervise(spec, shutdown)));
        }
        for task in tasks {
            task.await??;
        }
        Ok(())
    }

    async fn supervise(
        self: Arc<Self>,
        spec: ConsumerSpec,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            let consumer = self.queue.consumer(Topic::Responses, spec).await?;
            let this = self.clone();
            let token = shutdown.clone();
            match tokio::spawn(async move { this.consume(consumer, token).await }).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_panic() && !shutdown.is_cancelled() => {
                    self.health.restarted("response handler", &e.to_string());
                    tracing::error!(error = %e, "A reports consumer panicked; starting it again");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn consume(
        self: &Arc<Self>,
        consumer: Arc<dyn QueueConsumer>,
        shutdown: CancellationToken,
    ) {
        // Reports waiting for their message's `sent` write, each on a task
        // of its own, and per key the reports that came behind them.
        let mut aside = JoinSet::new();
        let behind: Behind = Arc::default();
        loop {
            while let Some(done) = aside.try_join_next() {
                // Its panic is this consumer's: it is started again, and
                // what it had not acknowledged is handed out again.
                if let Err(e) = done {
                    if e.is_panic() {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            }
            let batch = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                batch = consumer.fetch(BATCH) => batch,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "Fetching reports failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            // One report of a key at a time, so a message's reports apply
            // in order: a later one of the same key waits for the next
            // round, or goes behind one set aside, untried.
            let mut pending = batch;
            while !pending.is_empty() {
                let mut now = Vec::with_capacity(pending.len());
                let mut later = Vec::new();
                {
                    let mut waiting = lock(&behind);
                    let mut keys = HashSet::with_capacity(pending.len());
                    for delivery in pending {
                        if let Some(queue) = waiting.get_mut(&delivery.key) {
                            queue.push_back(delivery);
                        } else if keys.insert(delivery.key.clone()) {
                            now.push(delivery);
                        } else {
                            later.push(delivery);
                        }
                    }
                }
                let tried = join_all(now.into_iter().map(|delivery| async move {
                    let first = self.apply(&delivery).await;
                    (delivery, first)
                }))
                .await;
                let mut rest = Vec::with_capacity(tried.len());
                for (delivery, first) in tried {
                    if matches!(first, Err(Unapplied::NotSentYet)) {
                        self.overtaken.fetch_add(1, Ordering::Relaxed);
                        if let Ok(room) = self.catching_up.clone().try_acquire_owned() {
                            lock(&behind).insert(delivery.key.clone(), VecDeque::new());
                            aside.spawn(self.clone().catch_up(
                                consumer.clone(),
                                delivery,
                                first,
                                behind.clone(),
                                shutdown.clone(),
                                room,
                            ));
                            continue;
                        }
                    }
                    rest.push((delivery, first));
                }
                join_all(
                    rest.into_iter().map(|(delivery, first)| {
                        self.process(&consumer, delivery, first, &shutdown)
                    }),
                )
                .await;
                pending = later;
            }
        }
        // Each stops at its next pause, or once its report is kept, leaving
        // the rest unacknowledged.
        while aside.join_next().await.is_some() {}
        if let Err(e) = consumer.close().await {
            tracing::warn!(error = %e, "Leaving the reports consumer group failed");
        }
    }

    /// Applies one report (`first`: how its first try went), trying again
    /// while the store refuses it, and for as long as the store answers
    /// nothing at all. A report that still cannot be applied after
    /// [`MAX_TRIES`] while the store answers (a document the database will
    /// not grow, say) or cannot be read at all is parked on the
    /// parked-reports topic, counted and logged, and the partition moves
    /// on. Only a report that is kept (applied or parked) is acknowledged,
    /// so none is lost. False when `shutdown` came during a pause: the
    /// report is left unacknowledged, to be handed out again.
    async fn process(
        &self,
        consumer: &Arc<dyn QueueConsumer>,
        delivery: Delivery,
        first: Result<(), Unapplied>,
        shutdown: &CancellationToken,
    ) -> bool {
        let delivery = &delivery;
        let mut pause = FIRST_PAUSE;
        let mut tries = 0;
        let mut catch_up = 0;
        let mut first = Some(first);
        loop {
            let tried = match first.take() {
                Some(tried) => tried,
                None => self.apply(delivery).await,
            };
            let error = match tried {
                Ok(()) => break,
                Err(Unapplied::Unreadable(e)) => format!("unreadable: {e}"),
                Err(Unapplied::NotSentYet) => {
                    catch_up += 1;
                    if catch_up < MAX_CATCH_UP_TRIES {
                        tracing::debug!(tries = catch_up, "A report overtook its message's sent outcome; applying it once that is stored");
                        if stopped_during(pause, shutdown).await {
                            return false;
                        }
                        pause = (pause * 2).min(MAX_PAUSE);
                        continue;
                    }
                    "the message's sent outcome was never stored".to_owned()
                }
                Err(e @ (Unapplied::Store(_) | Unapplied::Outcome(_))) => {
                    tries += 1;
                    // While the store answers nothing at all (a database
                    // failover, an outage), no report can be applied and
                    // none is parked: parked, it would leave its message
                    // `sent` for good. One the store refuses while it
                    // answers is parked after a few tries.
                    if tries < MAX_TRIES
                        || matches!(e, Unapplied::Store(_)) && !self.store_answers().await
                    {
                        tracing::warn!(error = %e, tries, "Could not apply a report; retrying");
                        if stopped_during(pause, shutdown).await {
                            return false;
                        }
                        pause = (pause * 2).min(MAX_PAUSE);
                        continue;
                    }
                    format!("not applied after {tries} tries: {e}")
                }
            };
            if self.park(delivery, &error).await {
                break;
            }
            if stopped_during(pause, shutdown).await {
                return false;
            }
        }
        if let Err(e) = consumer.ack(delivery).await {
            tracing::warn!(error = %e, "Could not acknowledge a report; it will be applied again");
        }
        true
    }

    /// Whether the store answers a read (of a message that does not exist:
    /// cheap on every backend).
    async fn store_answers(&self) -> bool {
        self.store
            .get_recent(&MessageId::generate(), 0)
            .await
            .is_ok()
    }

    /// Keeps a report that cannot be applied; false when even that failed.
    async fn park(&self, delivery: &Delivery, error: &str) -> bool {
        match self
            .queue
            .produce(
                Topic::ParkedReports,
                &delivery.key,
                delivery.payload.clone(),
            )
            .await
        {
            Ok(()) => {
                self.parked.fetch_add(1, Ordering::Relaxed);
                self.health.report_parked();
                tracing::error!(partition = delivery.partition, offset = delivery.offset, %error, topic = %Topic::ParkedReports, "Parked a report that cannot be applied");
                true
            }
            Err(e) => {
                tracing::error!(partition = delivery.partition, offset = delivery.offset, error = %e, "Could not park a report; trying again");
                false
            }
        }
    }

    /// How many reports named a message not sent through their provider
    /// under their id (ignored).
    pub fn mismatched(&self) -> u64 {
        self.mismatched.load(Ordering::Relaxed)
    }

    /// How many reports came before their message's `sent` was stored
    /// (and waited for it) since it started; not counting those that
    /// then waited behind another report of their message.
    pub fn overtaken(&self) -> u64 {
        self.overtaken.load(Ordering::Relaxed)
    }

    /// How many reports this handler parked since it started.
    pub fn parked(&self) -> u64 {
        self.parked.load(Ordering::Relaxed)
    }

    /// Applies one report. Unknown and duplicate reports are logged and dropped.
    pub async fn apply(&self, delivery: &Delivery) -> Result<(), Unapplied> {
        let report: DeliveryReport =
            serde_json::from_slice(&delivery.payload).map_err(Unapplied::Unreadable)?;
        let Some(id) = self.resolve(&report).await? else {
            tracing::warn!(provider = %report.provider, provider_message_id = %report.provider_message_id, "Report for an unknown message");
            return Ok(());
        };
        let (status, details, error) = match &report.outcome {
            ReportOutcome::Delivered => (
                Some(Status::Delivered),
                "delivered (vendor report)".to_owned(),
                None,
            ),
            ReportOutcome::Failed { reason, .. } => (
                Some(Status::Failed),
                "failed (vendor report)".to_owned(),
                Some(reason.clone()),
            ),
            ReportOutcome::Noted { details, .. } => {
                (None, format!("{details} (vendor report)"), None)
            }
        };
        let details = match &report.note {
            Some(note) => note.clone(),
            None => details,
        };
        let mut event = Event::new(COMPONENT, details)
            .provider(&report.provider, Some(&report.provider_message_id))
            .raw(report.raw.clone());
        event.error = error;
        if let Some(vendor_at) = report.vendor_at {
            event
                .details
                .push_str(&format!("; at the vendor {}", vendor_at.to_rfc3339()));
        }
        let outcome = match status {
            // The event as the store keeps it, when it moves the message.
            Some(status) if self.queue.wants_outcomes() => {
                Outcome::Published(event.clone().status(status))
            }
            Some(status) => Outcome::Counted {
                status,
                at: event.at,
            },
            None => Outcome::Nothing,
        };
        let update = match status {
            Some(status) => Transition::Reported {
                status,
                provider: report.provider.clone(),
                provider_message_id: report.provider_message_id.clone(),
                event,
            },
            None => Transition::VendorNoted {
                provider: report.provider.clone(),
                provider_message_id: report.provider_message_id.clone(),
                event,
            },
        };
        let reported = status;
        let status = status.map_or_else(|| "an event".to_owned(), |s| s.to_string());
        // A move publishes an outcome, made of the record as the write left
        // it (or counts it, from the record's brief); an event alone
        // publishes nothing.
        let (updated, after, brief) = match &outcome {
            Outcome::Published(_) => {
                let (updated, after) = self.store.update_and_read(&id, update).await?;
                (updated, after, None)
            }
            Outcome::Counted { .. } => {
                let (updated, brief) = self.store.update_and_brief(&id, update).await?;
                (updated, None, brief)
            }
            Outcome::Nothing => (self.store.update(&id, update).await?, None, None),
        };
        match updated {
            Updated::Applied { status } => {
                tracing::debug!(message_id = %id, %status, "Report applied");
                metrics::counter!(
                    "mdc_reports_total",
                    "provider" => report.provider.clone(),
                    "status" => reported.map_or("event", |s| s.as_str()),
                )
                .increment(1);
                let (store, queue, vendor_at) = (&*self.store, &*self.queue, report.vendor_at);
                match outcome {
                    Outcome::Published(moved) => {
                        Box::pin(outcome::publish_moved(
                            store, queue, &id, &moved, vendor_at, after,
                        ))
                        .await?;
                    }
                    Outcome::Counted { status, at } => {
                        outcome::count_moved(store, queue, &id, status, at, vendor_at, brief)
                            .await?;
                    }
                    Outcome::Nothing => {}
                }
                if suppression_asked(&report).is_some() {
                    Box::pin(self.suppress_if_asked(&id, &report)).await?;
                }
            }
            Updated::Ignored { current } => {
                tracing::info!(message_id = %id, %current, reported = %status, "Report did not change a message already further on");
                // A report applied before a crash that came between the
                // store write and its outcome event: publish it again (the
                // same event id).
                if reported == Some(current) {
                    Box::pin(self.publish(&id, &report)).await?;
                }
                if suppression_asked(&report).is_some() {
                    Box::pin(self.suppress_if_asked(&id, &report)).await?;
                }
            }
            Updated::NotFound => {
                tracing::warn!(message_id = %id, "Report for a message that is not stored")
            }
            Updated::Mismatched => {
                self.mismatched.fetch_add(1, Ordering::Relaxed);
                self.health.report_mismatched();
                tracing::warn!(message_id = %id, provider = %report.provider, provider_message_id = %report.provider_message_id, "Ignored a report: the message was not sent through that provider under that id");
            }
            Updated::NotSentYet => return Err(Unapplied::NotSentYet),
        }
        Ok(())
    }

    /// Publishes the status the message is in now, with the vendor's time
    /// (a report applied again).
    async fn publish(&self, id: &MessageId, report: &DeliveryReport) -> Result<(), Unapplied> {
        mdc_core::outcome::publish_current(&*self.store, &*self.queue, id, report.vendor_at)
            .await?;
        Ok(())
    }

    /// Adds the message's recipient to the suppression list when the report
    /// says it cannot or will not take messages, and publishes
    /// `suppression.added` for an entry this message's report made, also
    /// when it was made before a crash (same event id).
    async fn suppress_if_asked(
        &self,
        id: &MessageId,
        report: &DeliveryReport,
    ) -> Result<(), Unapplied> {
        let Some(reason) = suppression_asked(report) else {
            return Ok(());
        };
        let Some(list) = &self.suppressions else {
            return Ok(());
        };
        let Some(record) = self.store.get(id).await? else {
            return Ok(());
        };
        let entry = Suppression {
            channel: record.message.channel(),
            recipient: record.message.to.clone(),
            reason: reason.clone(),
            source: format!("report:{}", report.provider),
            message_id: Some(id.clone()),
            at: mdc_core::now(),
        };
        if list.add(&entry).await? {
            tracing::info!(message_id = %id, channel = %entry.channel, to = %mdc_core::mask::recipient(&entry.recipient), reason = %mdc_core::mask::scrub(reason), "Recipient suppressed");
        }
        if let Some(stored) = list.get(entry.channel, &entry.recipient).await? {
            if stored.message_id.as_ref() == Some(id) {
                let mut event = mdc_core::outcome::OutcomeEvent::of_suppression(&stored);
                // The service whose message it was hears of it on its webhooks.
                event.service = record.message.service.clone();
                event
                    .publish(&*self.queue)
                    .await
                    .map_err(mdc_core::outcome::PublishError::from)?;
            }
        }
        Ok(())
    }

    async fn resolve(&self, report: &DeliveryReport) -> Result<Option<MessageId>, StoreError> {
        if let Some(reference) = &report.reference {
            return Ok(Some(reference.clone()));
        }
        match self
            .cache
            .get(&report.provider, &report.provider_message_id)
            .await
        {
            Ok(Some(cached)) => {
                self.store
                    .remember_channel(&cached.message_id, cached.channel);
                return Ok(Some(cached.message_id));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "Message cache unavailable; asking the store"),
        }
        self.store
            .find_by_provider_message_id(&report.provider, &report.provider_message_id)
            .await
    }
}

/// Why `report` asks for its recipient to be suppressed, if it does.
fn suppression_asked(report: &DeliveryReport) -> Option<&String> {
    match &report.outcome {
        ReportOutcome::Failed {
            reason,
            suppress: true,
        } => Some(reason),
        ReportOutcome::Noted {
            details,
            suppress: true,
        } => Some(details),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
