use mdc_core::InvalidSetting;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use mdc_core::ports::{
    ListFilter, Provider, Queue, ReportSink, RetryItem, RetryScheduler, Store, Topic, Transition,
};
use mdc_core::{DeliveryReport, Event, MessageRecord, ReportOutcome, Status};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The safety net under the retry timers and the queue: a message `sending`
/// whose next attempt is long overdue, or whose in-flight attempt's lease ran
/// out long ago, has lost its timer (a retry backend that lost data, say);
/// the reconciler schedules it again. A message still `queued` long after
/// it was last touched may never have reached the queue (a crash between
/// its record and its produce); the reconciler produces it again. The
/// dispatcher's claim decides the rest, so doing either for a message that
/// did not need it is harmless.
pub struct Reconciler {
    store: Arc<dyn Store>,
    retry: Arc<dyn RetryScheduler>,
    queue: Arc<dyn Queue>,
    config: ReconcilerConfig,
    pull: Option<Pull>,
}

/// Providers that can be asked about their messages, by name, and where
/// their answers go (the responses topic).
struct Pull {
    providers: HashMap<String, Arc<dyn Provider>>,
    reports: Arc<dyn ReportSink>,
    /// Providers whose vendor never reports ([`Provider::reports`]).
    silent: HashSet<String>,
}

/// Vendor ids asked about in one pull request.
const PULL_BATCH: usize = 50;

/// The `[reconciler]` config section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcilerConfig {
    /// Time between passes.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How late a timer must be before it counts as lost.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Messages looked at per pass.
    pub batch: usize,
    /// How long a message may stay `queued`, untouched, before it is put on
    /// its lane again. Longer than the longest backlog a lane is expected
    /// to hold: each pass puts such messages on the queue once more.
    #[serde(with = "humantime_serde")]
    pub queued_grace: Duration,
    /// How long a `sent` message waits for its vendor's report before the
    /// reconciler asks the vendor (for providers with a status API); after
    /// it, a message sent through a provider that never reports is taken
    /// as delivered.
    #[serde(with = "humantime_serde")]
    pub report_timeout: Duration,
    /// How long a `sent` message waits for the report of a vendor that
    /// reports before it is failed for want of one.
    #[serde(with = "humantime_serde")]
    pub final_timeout: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            grace: Duration::from_secs(60),
            batch: 1000,
            queued_grace: Duration::from_secs(600),
            report_timeout: Duration::from_secs(600),
            // SNS documents SMS delivery reports up to 72 hours late.
            final_timeout: Duration::from_secs(72 * 3600),
        }
    }
}

impl ReconcilerConfig {
    /// Errors name the config key at fault.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.interval.is_zero() {
            return Err(InvalidSetting::new(
                "reconciler.interval",
                "must be more than zero",
            ));
        }
        if self.batch == 0 {
            return Err(InvalidSetting::new(
                "reconciler.batch",
                "must be at least 1",
            ));
        }
        let day = Duration::from_secs(24 * 3600);
        for (key, value) in [
            ("interval", self.interval),
            ("grace", self.grace),
            ("queued_grace", self.queued_grace),
            ("report_timeout", self.report_timeout),
        ] {
            if value > day {
                return Err(InvalidSetting::new(
                    format!("reconciler.{key}"),
                    "must be at most 1 day",
                ));
            }
        }
        if self.final_timeout < self.report_timeout
            || self.final_timeout > Duration::from_secs(30 * 24 * 3600)
        {
            return Err(InvalidSetting::new(
                "reconciler.final_timeout",
                "must be at least reconciler.report_timeout and at most 30 days",
            ));
        }
        if self.queued_grace < Duration::from_secs(1) {
            return Err(InvalidSetting::new(
                "reconciler.queued_grace",
                "must be at least 1s",
            ));
        }
        Ok(())
    }
}

const COMPONENT: &str = "reconciler";

impl Reconciler {
    pub fn new(
        store: Arc<dyn Store>,
        retry: Arc<dyn RetryScheduler>,
        queue: Arc<dyn Queue>,
        config: ReconcilerConfig,
    ) -> Self {
        Self {
            store,
            retry,
            queue,
            config,
            pull: None,
        }
    }

    /// Asks `providers` that can be asked ([`Provider::can_pull`]) about
    /// their messages still `sent` after `report_timeout`, and hands what
    /// they answer to `reports` like any vendor report.
    pub fn with_pull(
        mut self,
        providers: HashMap<String, Arc<dyn Provider>>,
        reports: Arc<dyn ReportSink>,
    ) -> Self {
        let silent = providers
            .iter()
            .filter(|(_, p)| !p.reports())
            .map(|(name, _)| name.clone())
            .collect();
        let providers = providers
            .into_iter()
            .filter(|(_, p)| p.can_pull())
            .collect();
        self.pull = Some(Pull {
            providers,
            reports,
            silent,
        });
        self
    }

    fn grace(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.config.grace).unwrap_or_default()
    }

    /// Whether the message's timer should have fired long ago.
    fn stranded(&self, record: &MessageRecord, now: mdc_core::Timestamp) -> bool {
        let grace = self.grace();
        let overdue = |at: Option<mdc_core::Timestamp>| at.is_some_and(|at| at + grace < now);
        record.status == Status::Sending
            && (overdue(record.next_attempt_at) || overdue(record.lease_until))
    }

    /// One pass; returns how many messages were rescheduled or queued
    /// again.
    pub async fn pass(&self) -> anyhow::Result<usize> {
        Ok(self.pass_sending().await?
            + self.pass_queued().await?
            + self.pass_pull().await?
            + self.pass_final().await?)
    }

    /// The final rule: no message stays `sent` for ever. Through a provider
    /// that never reports, a message `sent` for `report_timeout` is taken as
    /// delivered (the vendor's acceptance is all there will be; an
    /// unconfirmed send is failed); through one that reports, a message
    /// still without a report after `final_timeout` is failed. The verdict
    /// goes through the responses topic like any report, so it is applied,
    /// and its outcome published, with the same guarantees. Returns how
    /// many verdicts were handed on.
    async fn pass_final(&self) -> anyhow::Result<usize> {
        let Some(Pull {
            reports, silent, ..
        }) = &self.pull
        else {
            return Ok(0);
        };
        let now = mdc_core::now();
        let report_timeout =
            chrono::Duration::from_std(self.config.report_timeout).unwrap_or_default();
        let final_timeout =
            chrono::Duration::from_std(self.config.final_timeout).unwrap_or_default();
        let mut filter = ListFilter {
            status: Some(Status::Sent),
            created_before: Some(now - report_timeout.min(final_timeout)),
            limit: self.config.batch,
            ..Default::default()
        };
        let mut ended = 0;
        loop {
            let page = self.store.list(&filter).await?;
            for record in &page {
                let Some(provider) = record.provider.clone() else {
                    continue;
                };
                let confirmed = record.provider_message_id.is_some();
                let (outcome, note) = if silent.contains(&provider)
                    && record.updated_at + report_timeout < now
                {
                    if confirmed {
                        (
                            ReportOutcome::Delivered,
                            format!("taken as delivered: {provider} accepted it and never reports delivery"),
                        )
                    } else {
                        let reason = format!("the send to {provider} timed out and {provider} never confirms; it may have arrived");
                        (
                            ReportOutcome::Failed {
                                reason: reason.clone(),
                                suppress: false,
                            },
                            format!("failed: {reason}"),
                        )
                    }
                } else if !silent.contains(&provider) && record.updated_at + final_timeout < now {
                    let reason = format!(
                        "no delivery report from {provider} within {}; it may have arrived",
                        humantime::format_duration(self.config.final_timeout)
                    );
                    (
                        ReportOutcome::Failed {
                            reason: reason.clone(),
                            suppress: false,
                        },
                        format!("failed: {reason}"),
                    )
                } else {
                    continue;
                };
                reports
                    .submit(DeliveryReport {
                        provider,
                        provider_message_id: record.provider_message_id.clone().unwrap_or_default(),
                        reference: Some(record.message.id.clone()),
                        outcome,
                        at: now,
                        vendor_at: None,
                        raw: serde_json::json!({ "rule": "final" }),
                        note: Some(format!("{note} (reconciler)")),
                    })
                    .await?;
                ended += 1;
            }
            if !next_page(&mut filter, &page, self.config.batch) {
                break;
            }
        }
        if ended > 0 {
            tracing::info!(
                ended,
                "Ended messages that stayed sent past their report timeout"
            );
        }
        Ok(ended)
    }

    /// Pulls the outcome of messages `sent` for longer than the report
    /// timeout from vendors that can tell, in batches per provider; returns
    /// how many final outcomes were handed on.
    async fn pass_pull(&self) -> anyhow::Result<usize> {
        let Some(Pull {
            providers, reports, ..
        }) = &self.pull
        else {
            return Ok(0);
        };
        if providers.is_empty() {
            return Ok(0);
        }
        let now = mdc_core::now();
        let timeout = chrono::Duration::from_std(self.config.report_timeout).unwrap_or_default();
        let mut filter = ListFilter {
            status: Some(Status::Sent),
            created_before: Some(now - timeout),
            limit: self.config.batch,
            ..Default::default()
        };
        let mut waiting: HashMap<String, Vec<(String, mdc_core::MessageId)>> = HashMap::new();
        loop {
            let page = self.store.list(&filter).await?;
            for record in page.iter().filter(|r| r.updated_at + timeout < now) {
                if let (Some(provider), Some(vendor_id)) =
                    (&record.provider, &record.provider_message_id)
                {
                    if providers.contains_key(provider) {
                        waiting
                            .entry(provider.clone())
                            .or_default()
                            .push((vendor_id.clone(), record.message.id.clone()));
                    }
                }
            }
            if !next_page(&mut filter, &page, self.config.batch) {
                break;
            }
        }
        let mut settled = 0;
        for (name, messages) in waiting {
            let provider = &providers[&name];
            for chunk in messages.chunks(PULL_BATCH) {
                let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
                let answers = match provider.pull(&ids).await {
                    Ok(answers) => answers,
                    Err(e) => {
                        tracing::warn!(provider = %name, error = %e, "Could not pull message statuses; trying next pass");
                        continue;
                    }
                };
                for (vendor_id, outcome, raw) in answers {
                    let reference = chunk
                        .iter()
                        .find(|(id, _)| *id == vendor_id)
                        .map(|(_, message)| message.clone());
                    reports
                        .submit(DeliveryReport {
                            vendor_at: None,
                            provider: name.clone(),
                            provider_message_id: vendor_id,
                            reference,
                            outcome,
                            at: mdc_core::now(),
                            raw: serde_json::json!({ "pulled": raw }),
                            note: None,
                        })
                        .await?;
                    settled += 1;
                }
            }
        }
        if settled > 0 {
            tracing::info!(settled, "Pulled outcomes of messages whose report was late");
        }
        Ok(settled)
    }

    /// Puts every message `queued` and untouched for `queued_grace` on its
    /// lane again, and notes it on the message's trail.
    async fn pass_queued(&self) -> anyhow::Result<usize> {
        let now = mdc_core::now();
        let grace = chrono::Duration::from_std(self.config.queued_grace).unwrap_or_default();
        let mut filter = ListFilter {
            status: Some(Status::Queued),
            created_before: Some(now - grace),
            limit: self.config.batch,
            ..Default::default()
        };
        let mut requeued = 0;
        loop {
            let page = self.store.list(&filter).await?;
            for record in page.iter().filter(|r| r.updated_at + grace < now) {
                let message = &record.message;
                tracing::warn!(message_id = %message.id, component = COMPONENT, "A queued message was never taken from its lane; queueing it again");
                self.queue
                    .produce(
                        Topic::Messages(message.channel(), message.priority),
                        &message.to,
                        message.encode(),
                    )
                    .await?;
                let event = Event::new(
                    COMPONENT,
                    "still queued long after submit; put on its lane again",
                );
                self.store
                    .update(&message.id, Transition::event(event))
                    .await?;
                requeued += 1;
            }
            if !next_page(&mut filter, &page, self.config.batch) {
                break;
            }
        }
        Ok(requeued)
    }

    /// Pages through every `sending` message old enough to be stranded,
    /// newest first, and schedules those whose timer was lost.
    async fn pass_sending(&self) -> anyhow::Result<usize> {
        let now = mdc_core::now();
        let mut filter = ListFilter {
            status: Some(Status::Sending),
            // A message created within the grace cannot be overdue by more.
            created_before: Some(now - self.grace()),
            limit: self.config.batch,
            ..Default::default()
        };
        let mut rescheduled = 0;
        loop {
            let page = self.store.list(&filter).await?;
            for record in &page {
                if self.stranded(record, now) {
                    self.reschedule(record, now).await?;
                    rescheduled += 1;
                }
            }
            if !next_page(&mut filter, &page, self.config.batch) {
                break;
            }
        }
        Ok(rescheduled)
    }

    async fn reschedule(
        &self,
        record: &MessageRecord,
        now: mdc_core::Timestamp,
    ) -> anyhow::Result<()> {
        let message = &record.message;
        tracing::warn!(message_id = %message.id, component = COMPONENT, "A retry timer was lost; scheduling the message again");
        self.retry
            .schedule(RetryItem {
                message_id: message.id.clone(),
                channel: message.channel(),
                priority: message.priority,
                due: now,
            })
            .await?;
        Ok(())
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "Reconciliation pass failed; trying again later");
            }
        }
    }
}

/// Moves `filter` past `page` (keyset paging in the list's order: messages
/// created in the same millisecond as the page's last are not skipped);
/// false when the page was the last.
fn next_page(filter: &mut ListFilter, page: &[MessageRecord], batch: usize) -> bool {
    match page.last() {
        Some(last) if page.len() >= batch => {
            filter.after = Some(filter.sort.key(last));
            true
        }
        _ => false,
    }
}
