//! Intake of vendor reports. Every vendor event, whatever its shape, is
//! normalised into a [`DeliveryReport`] and put on the responses topic, where
//! the response handler picks it up. Vendor-specific HTTP endpoints (Kaleyra
//! callbacks, SNS and SES events) build on [`QueueReportSink`].

pub mod kaleyra;

use std::sync::Arc;

use async_trait::async_trait;
use mdc_core::ports::{Queue, QueueError, ReportSink, Topic};
use mdc_core::DeliveryReport;

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
