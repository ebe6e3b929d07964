//! Deliveries on the retry timers: firing the due ones, and `recover`,
//! which puts failed events back on them.

use std::sync::Arc;
use std::time::Duration;

use mdc_core::ports::{RetryItem, RetryScheduler, StoreError, WebhookEndpoint};
use tokio_util::sync::CancellationToken;

use super::{Feedback, Tried, ERROR_BACKOFF};

impl Feedback {
    /// Fires due deliveries until `shutdown`.
    pub(super) async fn retry_loop(self: Arc<Self>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let due = tokio::select! {
                _ = shutdown.cancelled() => return,
                due = self.timers.take_due(64) => due,
            };
            match due {
                Ok(items) => {
                    for item in items {
                        let this = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = this.fire(&item).await {
                                tracing::warn!(error = %e, "A webhook retry failed to run; it fires again after a restart");
                            }
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Could not read webhook timers; retrying");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
        }
    }

    async fn fire(&self, item: &RetryItem) -> Result<(), StoreError> {
        let complete = |timers: Arc<dyn RetryScheduler>, item: RetryItem| async move {
            if let Err(e) = timers.complete(&item).await {
                tracing::warn!(error = %e, "Could not complete a webhook timer; it may fire again");
            }
        };
        let Some(pending) = self.webhooks.pending(&item.message_id).await? else {
            complete(self.timers.clone(), item.clone()).await;
            return Ok(());
        };
        let endpoint = match self.webhooks.get(&pending.endpoint_id).await? {
            Some(endpoint) if endpoint.disabled.is_none() => endpoint,
            _ => {
                self.webhooks.remove_pending(&pending.key).await?;
                complete(self.timers.clone(), item.clone()).await;
                return Ok(());
            }
        };
        let body = serde_json::to_vec(&pending.event).map_err(|e| StoreError::Other(e.into()))?;
        let attempt = pending.attempts + 1;
        match self
            .try_once(&endpoint, &pending.event_id, &body, attempt)
            .await
        {
            Tried::Delivered => self.webhooks.remove_pending(&pending.key).await?,
            Tried::Gone => {
                self.webhooks.remove_pending(&pending.key).await?;
                self.disable(&endpoint, "the endpoint answered 410 Gone")
                    .await?;
            }
            Tried::Failed { retry_after } => {
                self.failed(
                    &endpoint,
                    Some(pending.key.clone()),
                    &pending.event_id,
                    &body,
                    attempt,
                    retry_after,
                )
                .await?
            }
        }
        complete(self.timers.clone(), item.clone()).await;
        Ok(())
    }

    /// Delivers again the events whose deliveries to `endpoint` failed
    /// since `since` and never succeeded later; returns how many.
    pub async fn recover(
        &self,
        endpoint: &WebhookEndpoint,
        since: mdc_core::Timestamp,
    ) -> Result<usize, StoreError> {
        let attempts = self
            .webhooks
            .attempts(&endpoint.id, Some(since), 100_000)
            .await?;
        let succeeded: std::collections::HashSet<&str> = attempts
            .iter()
            .filter(|a| a.succeeded)
            .map(|a| a.event_id.as_str())
            .collect();
        let mut queued = std::collections::HashSet::new();
        for attempt in &attempts {
            let Some(event) = &attempt.event else {
                continue;
            };
            if succeeded.contains(attempt.event_id.as_str())
                || !queued.insert(attempt.event_id.clone())
            {
                continue;
            }
            let body = serde_json::to_vec(event).map_err(|e| StoreError::Other(e.into()))?;
            self.defer(endpoint, None, &attempt.event_id, &body, 0, Duration::ZERO)
                .await?;
        }
        Ok(queued.len())
    }
}
