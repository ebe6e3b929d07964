//! The SES intake: polls the SQS queue that an SES provider's event
//! destination (an SNS topic) delivers to, and hands each event to the
//! responses topic before deleting it from the queue.
//!
//! Long polling, batches of 10, several pollers at once. A message is
//! deleted only after its report is durable; one that cannot be read is
//! left in the queue (counted, logged without its body), so the queue's
//! redrive policy moves it aside after a few receives; an event of a type
//! MDC does not know is acknowledged and dropped. A message not deleted
//! comes back after the queue's visibility timeout.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::Message;
use mdc_core::ports::ReportSink;
use tokio_util::sync::CancellationToken;

use crate::ses::{parse, SesEventError};
use crate::{Intake, IntakeCounts};

/// Pause after SQS could not be reached.
const ERROR_BACKOFF: Duration = Duration::from_secs(2);

pub struct SesSqsIntake {
    provider: String,
    queue_url: String,
    client: aws_sdk_sqs::Client,
    sink: Arc<dyn ReportSink>,
    counts: IntakeCounts,
    pollers: usize,
    wait: Duration,
}

impl SesSqsIntake {
    /// Polls `queue_url` for the SES events of `provider`, with `pollers`
    /// receives in flight and long polls of `wait` (at most 20 s).
    pub fn new(
        provider: &str,
        queue_url: &str,
        sdk: &aws_config::SdkConfig,
        sink: Arc<dyn ReportSink>,
        pollers: usize,
        wait: Duration,
    ) -> Self {
        Self {
            provider: provider.to_owned(),
            queue_url: queue_url.to_owned(),
            client: aws_sdk_sqs::Client::new(sdk),
            sink,
            counts: IntakeCounts::default(),
            pollers: pollers.max(1),
            wait: wait.min(Duration::from_secs(20)),
        }
    }

    async fn poll(&self, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            let receive = self
                .client
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(self.wait.as_secs().max(1) as i32)
                .send();
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                received = receive => received,
            };
            match received {
                Ok(output) => {
                    for message in output.messages() {
                        self.handle(message).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(provider = %self.provider, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "Could not receive SES events from SQS; retrying");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
        }
    }

    /// Hands one SQS message on and deletes it, or leaves it.
    async fn handle(&self, message: &Message) {
        let body = message.body().unwrap_or_default();
        let done = match parse(body, &self.provider, mdc_core::now()) {
            Ok(report) => match self.sink.submit(report).await {
                Ok(()) => {
                    self.counts.accepted();
                    true
                }
                Err(e) => {
                    // Not deleted: SQS hands it out again.
                    tracing::warn!(provider = %self.provider, error = %e, "Could not queue an SES event; it comes back after the visibility timeout");
                    false
                }
            },
            Err(SesEventError::UnknownType(kind)) => {
                self.counts.ignored();
                tracing::info!(provider = %self.provider, %kind, "Ignored an SES event of a type MDC does not use");
                true
            }
            Err(e) => {
                self.counts.refused();
                tracing::warn!(provider = %self.provider, error = %e, sqs_message_id = message.message_id().unwrap_or_default(), "Unreadable SES event left for the queue's redrive policy");
                false
            }
        };
        if done {
            if let Some(receipt) = message.receipt_handle() {
                if let Err(e) = self
                    .client
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                {
                    // Handed on already: a second copy is a duplicate report,
                    // which changes nothing.
                    tracing::warn!(provider = %self.provider, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "Could not delete an SES event from SQS; it will be read again");
                }
            }
        }
    }
}

#[async_trait]
impl Intake for SesSqsIntake {
    fn name(&self) -> &str {
        &self.provider
    }

    fn polls(&self) -> bool {
        true
    }

    async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let pollers: Vec<_> = (0..self.pollers)
            .map(|_| {
                let this = self.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move { this.poll(&shutdown).await })
            })
            .collect();
        for poller in pollers {
            poller.await?;
        }
        Ok(())
    }

    fn counts(&self) -> &IntakeCounts {
        &self.counts
    }
}
