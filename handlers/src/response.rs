use std::sync::Arc;

use futures::future::join_all;
use mdc_core::ports::{
    ConsumerSpec, Delivery, MessageCache, Queue, QueueConsumer, Store, StoreError, Topic,
    Transition, Updated,
};
use mdc_core::{DeliveryReport, Event, MessageId, ReportOutcome, Status};
use tokio_util::sync::CancellationToken;

const COMPONENT: &str = "response-handler";
const BATCH: usize = 256;

/// Consumes the responses topic and moves messages to `delivered` or `failed`.
pub struct ResponseHandler {
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    /// Vendor message id → message, tried before the store.
    cache: Arc<dyn MessageCache>,
}

impl ResponseHandler {
    pub fn new(queue: Arc<dyn Queue>, store: Arc<dyn Store>, cache: Arc<dyn MessageCache>) -> Self {
        Self {
            queue,
            store,
            cache,
        }
    }

    /// Runs `consumers` members of the group until `shutdown`; in-flight
    /// reports are finished first.
    pub async fn run(
        self: Arc<Self>,
        consumers: u32,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut tasks = Vec::new();
        for index in 0..consumers {
            let consumer = self
                .queue
                .consumer(
                    Topic::Responses,
                    ConsumerSpec {
                        index,
                        count: consumers,
                    },
                )
                .await?;
            let this = self.clone();
            let shutdown = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                this.consume(consumer, shutdown).await
            }));
        }
        for task in tasks {
            task.await?;
        }
        Ok(())
    }

    async fn consume(&self, consumer: Arc<dyn QueueConsumer>, shutdown: CancellationToken) {
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break,
                batch = consumer.fetch(BATCH) => batch,
            };
            match batch {
                Ok(batch) => {
                    join_all(
                        batch
                            .iter()
                            .map(|delivery| self.process(&consumer, delivery)),
                    )
                    .await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Fetching reports failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
        if let Err(e) = consumer.close().await {
            tracing::warn!(error = %e, "Leaving the reports consumer group failed");
        }
    }

    async fn process(&self, consumer: &Arc<dyn QueueConsumer>, delivery: &Delivery) {
        // A report whose outcome cannot be stored is not acknowledged: it comes
        // back after a restart instead of being lost.
        loop {
            match self.apply(delivery).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "Could not store a report; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
        if let Err(e) = consumer.ack(delivery).await {
            tracing::warn!(error = %e, "Could not acknowledge a report; it will be applied again");
        }
    }

    /// Applies one report. Unknown and duplicate reports are logged and dropped.
    pub async fn apply(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let report: DeliveryReport = match serde_json::from_slice(&delivery.payload) {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(partition = delivery.partition, offset = delivery.offset, error = %e, "Dropping an unreadable report");
                return Ok(());
            }
        };
        let Some(id) = self.resolve(&report).await? else {
            tracing::warn!(provider = %report.provider, provider_message_id = %report.provider_message_id, "Report for an unknown message");
            return Ok(());
        };
        let (status, details, error) = match &report.outcome {
            ReportOutcome::Delivered => (
                Status::Delivered,
                "delivered (vendor report)".to_owned(),
                None,
            ),
            ReportOutcome::Failed { reason } => (
                Status::Failed,
                "failed (vendor report)".to_owned(),
                Some(reason.clone()),
            ),
        };
        let mut event = Event::new(COMPONENT, details)
            .provider(&report.provider, Some(&report.provider_message_id))
            .raw(report.raw.clone());
        event.error = error;
        let update = Transition::Reported {
            status,
            provider: report.provider.clone(),
            provider_message_id: report.provider_message_id.clone(),
            event,
        };
        match self.store.update(&id, update).await? {
            Updated::Applied { status } => {
                tracing::debug!(message_id = %id, %status, "Report applied")
            }
            Updated::Ignored { current } => {
                tracing::info!(message_id = %id, %current, reported = %status, "Report did not change a message already further on")
            }
            Updated::NotFound => {
                tracing::warn!(message_id = %id, "Report for a message that is not stored")
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
            Ok(Some(cached)) => return Ok(Some(cached.message_id)),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "Message cache unavailable; asking the store"),
        }
        self.store
            .find_by_provider_message_id(&report.provider, &report.provider_message_id)
            .await
    }
}
