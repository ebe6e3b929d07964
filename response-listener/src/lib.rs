//! Intake of vendor reports. Every vendor event, whatever its shape, is
//! normalised into a [`DeliveryReport`] and put on the responses topic, where
//! the response handler picks it up. Each vendor's intake (how its reports
//! arrive, how they are authenticated, how they parse) is one module behind
//! the [`Intake`] trait, and hands reports to a [`ReportSink`] (the
//! responses topic, [`QueueReportSink`]) before it acknowledges the vendor.

pub mod kaleyra;
pub mod ses;
pub mod ses_sqs;
pub mod sns;
pub mod sns_sms_logs;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::web;
use async_trait::async_trait;
use mdc_core::ports::{Queue, QueueError, ReportSink, Topic};
use mdc_core::DeliveryReport;

/// One vendor's way of telling MDC what became of its messages: HTTP
/// endpoints the vendor calls ([`Intake::routes`]), or a loop that polls
/// the vendor ([`Intake::run`]), or both.
#[async_trait]
pub trait Intake: Send + Sync + 'static {
    /// Names the intake in logs and counts (`kaleyra`, ...).
    fn name(&self) -> &str;

    /// Mounts the endpoints of a vendor that calls MDC back.
    fn routes(self: Arc<Self>, _cfg: &mut web::ServiceConfig) {}

    /// Whether the intake polls its vendor ([`Intake::run`] has a loop).
    fn polls(&self) -> bool {
        false
    }

    /// A polling intake's loop, until `shutdown`.
    async fn run(
        self: Arc<Self>,
        _shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    /// What the intake took, ignored and could not read.
    fn counts(&self) -> &IntakeCounts;
}

/// Reports an intake has seen since start-up.
#[derive(Debug, Default)]
pub struct IntakeCounts {
    /// Handed to the responses topic.
    accepted: AtomicU64,
    /// Authentic but with nothing to record (an intermediate status).
    ignored: AtomicU64,
    /// Unauthenticated or unreadable.
    refused: AtomicU64,
}

impl IntakeCounts {
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn ignored(&self) {
        self.ignored.fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// `{"accepted", "ignored", "refused"}`.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "accepted": self.accepted.load(Ordering::Relaxed),
            "ignored": self.ignored.load(Ordering::Relaxed),
            "refused": self.refused.load(Ordering::Relaxed),
        })
    }
}

/// Puts normalised reports on the responses topic, keyed by the vendor's
/// message id so reports of one message stay in order.
pub struct QueueReportSink {
    queue: Arc<dyn Queue>,
}

impl QueueReportSink {
    pub fn new(queue: Arc<dyn Queue>) -> Self {
        Self { queue }
    }
}

#[async_trait]
impl ReportSink for QueueReportSink {
    async fn submit(&self, report: DeliveryReport) -> Result<(), QueueError> {
        let payload = serde_json::to_vec(&report).map_err(|e| QueueError::Other(e.into()))?;
        self.queue
            .produce(Topic::Responses, &report.provider_message_id, payload)
            .await
    }
}
