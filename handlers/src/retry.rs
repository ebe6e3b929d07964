use std::sync::Arc;
use std::time::Duration;

use mdc_core::ports::{Queue, RetryItem, RetryScheduler, Store, Topic};
use tokio_util::sync::CancellationToken;

/// Puts a message back on its lane when its next attempt is due; the
/// dispatcher's claim decides whether it is really due and not yet done.
pub struct RetryHandler {
    retry: Arc<dyn RetryScheduler>,
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
}

/// Wait before trying again to requeue an item whose requeue failed.
const REQUEUE_BACKOFF: Duration = Duration::from_secs(2);

impl RetryHandler {
    pub fn new(
        retry: Arc<dyn RetryScheduler>,
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
    ) -> Self {
        Self {
            retry,
            store,
            queue,
        }
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let due = tokio::select! {
                _ = shutdown.cancelled() => return,
                due = self.retry.take_due(256) => due,
            };
            match due {
                Ok(items) => {
                    for item in items {
                        self.fire(item).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Retry scheduler unavailable; retrying");
                    tokio::time::sleep(REQUEUE_BACKOFF).await;
                }
            }
        }
    }

    async fn fire(&self, item: RetryItem) {
        match self.requeue(&item).await {
            Ok(()) => {
                metrics::counter!("mdc_retries_total").increment(1);
                if let Err(e) = self.retry.complete(&item).await {
                    tracing::warn!(message_id = %item.message_id, error = %e, "Could not complete a retry; it may fire again");
                }
            }
            Err(e) => {
                tracing::warn!(message_id = %item.message_id, error = %e, "Could not requeue a due message; trying again shortly");
                let mut later = item.clone();
                later.due = mdc_core::now()
                    + chrono::Duration::from_std(REQUEUE_BACKOFF).unwrap_or_default();
                if let Err(e) = self.retry.schedule(later).await {
                    tracing::error!(message_id = %item.message_id, error = %e, "Could not reschedule a retry; it fires again after a restart");
                }
            }
        }
    }

    async fn requeue(&self, item: &RetryItem) -> anyhow::Result<()> {
        let Some(record) = self.store.get(&item.message_id).await? else {
            tracing::warn!(message_id = %item.message_id, "Retry for a message that is not stored");
            return Ok(());
        };
        if record.status.is_terminal() {
            return Ok(());
        }
        let topic = Topic::Messages(item.channel, item.priority);
        self.queue
            .produce(topic, &record.message.to, record.message.encode())
            .await?;
        Ok(())
    }
}
