use std::sync::Arc;
use std::time::Duration;

use mdc_core::ports::{ListFilter, RetryItem, RetryScheduler, Store};
use mdc_core::{MessageRecord, Status};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The safety net under the retry timers: a message `sending` whose next
/// attempt is long overdue, or whose in-flight attempt's lease ran out long
/// ago, has lost its timer (a retry backend that lost data, say). The
/// reconciler schedules it again; the dispatcher's claim decides the rest, so
/// scheduling a message that did have a timer is harmless.
pub struct Reconciler {
    store: Arc<dyn Store>,
    retry: Arc<dyn RetryScheduler>,
    config: ReconcilerConfig,
}

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
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            grace: Duration::from_secs(60),
            batch: 1000,
        }
    }
}

impl ReconcilerConfig {
    /// Errors name the config key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval.is_zero() {
            return Err("reconciler.interval must be more than zero".into());
        }
        if self.batch == 0 {
            return Err("reconciler.batch must be at least 1".into());
        }
        Ok(())
    }
}

const COMPONENT: &str = "reconciler";

impl Reconciler {
    pub fn new(
        store: Arc<dyn Store>,
        retry: Arc<dyn RetryScheduler>,
        config: ReconcilerConfig,
    ) -> Self {
        Self {
            store,
            retry,
            config,
        }
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

    /// One pass; returns how many messages were rescheduled. Pages through
    /// every `sending` message old enough to be stranded, newest first.
    pub async fn pass(&self) -> anyhow::Result<usize> {
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
            let oldest = page.iter().map(|r| r.message.created_at).min();
            match oldest {
                Some(oldest) if page.len() >= self.config.batch => {
                    filter.created_before = Some(oldest)
                }
                _ => break,
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
