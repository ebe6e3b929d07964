//! One try of a delivery: the signed POST to the endpoint, and its record.

use std::sync::Arc;
use std::time::Duration;

use mdc_core::ports::{WebhookAttempt, WebhookEndpoint};
use tokio::sync::Semaphore;

use super::{address, lock, sign, Feedback};

/// The most of an answer kept with an attempt.
const KEPT_RESPONSE: usize = 1024;

/// How one try went.
pub(super) enum Tried {
    Delivered,
    /// 410: the endpoint asked to be disabled.
    Gone,
    Failed {
        retry_after: Option<Duration>,
    },
}

impl Feedback {
    /// One signed POST; the attempt is recorded whatever happens.
    pub(super) async fn try_once(
        &self,
        endpoint: &WebhookEndpoint,
        event_id: &str,
        body: &[u8],
        attempt: u32,
    ) -> Tried {
        let _all = self.in_flight.acquire().await;
        let one = self.endpoint_permits(&endpoint.id);
        let _one = one.acquire().await;
        let now = mdc_core::now();
        let timestamp = now.timestamp();
        let signatures: Vec<String> = endpoint
            .secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|at| at > now))
            .filter_map(|s| sign::sign(&s.secret, event_id, timestamp, body))
            .collect();
        let started = std::time::Instant::now();
        let mut record = WebhookAttempt {
            endpoint_id: endpoint.id.clone(),
            event_id: event_id.to_owned(),
            attempt,
            at: now,
            status: None,
            latency_ms: 0,
            error: None,
            response: String::new(),
            succeeded: false,
            event: None,
        };
        let tried = match address::syntax(&endpoint.url, self.config.allow_private_urls) {
            Err(e) => {
                record.error = Some(format!("refused URL: {e}"));
                Tried::Failed { retry_after: None }
            }
            Ok(url) => {
                let sent = self
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("webhook-id", event_id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", signatures.join(" "))
                    .body(body.to_vec())
                    .send()
                    .await;
                match sent {
                    Ok(response) => {
                        let status = response.status();
                        record.status = Some(status.as_u16());
                        let retry_after = retry_after(&response);
                        record.response = first_bytes(response).await;
                        if status.is_success() {
                            Tried::Delivered
                        } else if status.as_u16() == 410 {
                            Tried::Gone
                        } else {
                            let honoured = matches!(status.as_u16(), 429 | 502 | 503 | 504);
                            Tried::Failed {
                                retry_after: retry_after.filter(|_| honoured),
                            }
                        }
                    }
                    Err(e) => {
                        record.error = Some(e.without_url().to_string());
                        Tried::Failed { retry_after: None }
                    }
                }
            }
        };
        record.latency_ms = started.elapsed().as_millis() as u64;
        record.succeeded = matches!(tried, Tried::Delivered);
        metrics::counter!(
            "mdc_webhook_deliveries_total",
            "result" => if record.succeeded { "delivered" } else { "failed" },
        )
        .increment(1);
        if !record.succeeded {
            record.event = serde_json::from_slice(body).ok();
        }
        if let Err(e) = self.webhooks.record_attempt(&record).await {
            tracing::warn!(error = %e, "Could not record a webhook attempt");
        }
        if record.succeeded && endpoint.failing_since.is_some() {
            self.recovered(&endpoint.id).await;
        }
        tried
    }

    /// Clears a failing mark after a success.
    async fn recovered(&self, id: &str) {
        if let Ok(Some(mut current)) = self.webhooks.get(id).await {
            if current.failing_since.take().is_some() {
                if let Err(e) = self.webhooks.update(&current).await {
                    tracing::warn!(error = %e, "Could not clear an endpoint's failing mark");
                }
                self.invalidate();
            }
        }
    }

    fn endpoint_permits(&self, id: &str) -> Arc<Semaphore> {
        lock(&self.per_endpoint)
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_endpoint)))
            .clone()
    }
}

/// The pause an answer's `Retry-After` asks for, in seconds (at most a day).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|secs| Duration::from_secs(secs.min(24 * 3600)))
}

/// The first KiB of an answer, as text.
async fn first_bytes(mut response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    while kept.len() < KEPT_RESPONSE {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            _ => break,
        }
    }
    kept.truncate(KEPT_RESPONSE);
    String::from_utf8_lossy(&kept).into_owned()
}
