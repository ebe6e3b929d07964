//! The http transport: `POST /v1/messages` (and `/batch`) with the
//! service's API key.

use std::time::Duration;

use mdc_core::{InvalidSetting, MessageId};
use reqwest::header::RETRY_AFTER;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use crate::client::{Config, ENV_URL};
use crate::error::{Sent, StatusError, SubmitError, Submitted};
use crate::validate::ValidationError;
use crate::{MessageStatus, SubmitRequest};

/// The first pause between tries; it doubles up to `max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The most messages MDC takes in one batch.
const BATCH_MESSAGES: usize = 500;

/// A batch's body is kept under this, below MDC's default `max_body_bytes`
/// (256 KiB); a batch MDC still finds too large (413) is cut in two.
const BATCH_BYTES: usize = 192 * 1024;

/// How long an MDC that answered a batch with 404 or 405 (one from before
/// batches) gets single submits before a batch is tried again.
const SINGLES_FOR: Duration = Duration::from_secs(300);

pub(crate) struct Http {
    client: reqwest::Client,
    base: String,
    key: Option<String>,
    attempts: u32,
    max_backoff: Duration,
    /// Until when batches go as single submits (MDC has no batches).
    singles_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize, Clone)]
struct ErrorBody {
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    message: String,
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<BatchResult>,
}

#[derive(Deserialize)]
struct BatchResult {
    status: u16,
    #[serde(default)]
    accepted: Option<Submitted>,
    #[serde(default)]
    error: Option<ErrorBody>,
    /// Seconds to wait before this message is sent again (with 429).
    #[serde(default)]
    retry_after: Option<u64>,
}

impl From<StatusCode> for ErrorBody {
    fn from(status: StatusCode) -> Self {
        ErrorBody {
            field: None,
            rule: None,
            message: status.to_string(),
        }
    }
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// `{"messages": [...]}` of the messages' JSON.
fn batch_body(messages: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(
        messages
            .iter()
            .map(|(_, json)| json.len() + 1)
            .sum::<usize>()
            + 16,
    );
    body.extend_from_slice(b"{\"messages\":[");
    for (n, (_, json)) in messages.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(json);
    }
    body.extend_from_slice(b"]}");
    body
}

/// A submit's result, from MDC's answer for it.
fn outcome(
    status: StatusCode,
    submitted: Option<Submitted>,
    error: ErrorBody,
) -> Result<Sent, SubmitError> {
    match (status, submitted) {
        (status, Some(submitted)) if status.is_success() => Ok(Sent {
            id: submitted.id,
            warnings: submitted.warnings,
            duplicate: submitted.duplicate,
        }),
        (StatusCode::UNPROCESSABLE_ENTITY, _) => Err(SubmitError::Invalid(validation_error(error))),
        (StatusCode::CONFLICT, _) => Err(SubmitError::Conflict(validation_error(error))),
        (status, _) => Err(SubmitError::Refused {
            status: status.as_u16(),
            message: error.message,
        }),
    }
}

/// The `{"error": {…}}` of an answer, or its status text when the body is
/// something else (a proxy's page, say).
async fn error_body(response: Response) -> ErrorBody {
    let status = response.status();
    match response.json::<ErrorEnvelope>().await {
        Ok(envelope) => envelope.error,
        Err(_) => ErrorBody {
            field: None,
            rule: None,
            message: status.to_string(),
        },
    }
}

fn validation_error(body: ErrorBody) -> ValidationError {
    ValidationError::new(
        body.field.as_deref().unwrap_or("request"),
        body.rule.unwrap_or_else(|| "invalid".to_owned()),
        body.message,
    )
}

/// Seconds from a `Retry-After` header (the HTTP-date form is not used by MDC).
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Answers worth trying again: the request was not taken (MDC's backends
/// are down, the service is over its rate, a proxy lost the upstream).
fn retryable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::GATEWAY_TIMEOUT
    )
}

impl Http {
    pub(crate) fn new(config: &Config, url: &str) -> Result<Self, InvalidSetting> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("mdc-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                InvalidSetting::new(ENV_URL, format!("cannot build an HTTP client: {e}"))
            })?;
        Ok(Self {
            client,
            base: url.trim_end_matches('/').to_owned(),
            key: config.api_key.clone(),
            attempts: config.attempts,
            max_backoff: config.max_backoff,
            singles_until: std::sync::Mutex::new(None),
        })
    }

    fn authorized(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Posts the request, trying again (same body, same idempotency key) on
    /// connection errors, timeouts, 503 and 429, after the pause MDC asks
    /// for in `Retry-After` or a doubling one.
    pub(crate) async fn submit(&self, request: &SubmitRequest) -> Result<Sent, SubmitError> {
        let url = format!("{}/v1/messages", self.base);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.attempts;
            let asked = match self
                .authorized(self.client.post(&url))
                .json(request)
                .send()
                .await
            {
                Err(e) if last => {
                    return Err(SubmitError::Unavailable(
                        format!("no answer from MDC after {attempt} tries: {e}").into(),
                    ))
                }
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "No answer from MDC; trying again");
                    None
                }
                Ok(response) if response.status().is_success() => {
                    let submitted: Submitted = response.json().await.map_err(|e| {
                        SubmitError::Unavailable(
                            format!("MDC's answer could not be read: {e}").into(),
                        )
                    })?;
                    return Ok(Sent {
                        id: submitted.id,
                        warnings: submitted.warnings,
                        duplicate: submitted.duplicate,
                    });
                }
                Ok(response) if retryable(response.status()) => {
                    let status = response.status();
                    let wait = retry_after(&response);
                    if last {
                        let body = error_body(response).await;
                        return Err(SubmitError::Unavailable(
                            format!("MDC answered {status} {attempt} times: {}", body.message)
                                .into(),
                        ));
                    }
                    tracing::debug!(attempt, %status, ?wait, "MDC cannot take the message now; trying again");
                    wait
                }
                Ok(response) => {
                    let status = response.status();
                    return outcome(status, None, error_body(response).await);
                }
            };
            tokio::time::sleep(asked.unwrap_or(backoff).min(self.max_backoff)).await;
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }

    /// Posts `requests` to `/v1/messages/batch`, as many per request as MDC
    /// takes; one result per request, in order. What MDC did not take is
    /// tried again, the same messages under the same idempotency keys, up
    /// to `attempts` tries as [`Http::submit`] does: no answer, an answer
    /// that cannot be read or does not match the batch, and 503, 429, 502
    /// or 504 for the batch or for single messages of it.
    pub(crate) async fn submit_batch(
        &self,
        requests: &[SubmitRequest],
    ) -> Vec<Result<Sent, SubmitError>> {
        if self.singles_for_now() {
            let mut results = Vec::with_capacity(requests.len());
            for request in requests {
                results.push(self.submit(request).await);
            }
            return results;
        }
        let mut results: Vec<Option<Result<Sent, SubmitError>>> =
            requests.iter().map(|_| None).collect();
        let mut encoded = Vec::with_capacity(requests.len());
        for (i, request) in requests.iter().enumerate() {
            match serde_json::to_vec(request) {
                Ok(json) => encoded.push((i, json)),
                Err(e) => {
                    results[i] = Some(Err(SubmitError::Refused {
                        status: 0,
                        message: format!("the message could not be encoded: {e}"),
                    }));
                }
            }
        }
        // Cut into batches of at most BATCH_MESSAGES and about BATCH_BYTES.
        // `{"messages":[` and `]}`.
        const WRAPPER: usize = 15;
        let mut batch: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut bytes = WRAPPER;
        let mut batches = Vec::new();
        for (i, json) in encoded {
            if !batch.is_empty()
                && (batch.len() == BATCH_MESSAGES || bytes + json.len() > BATCH_BYTES)
            {
                batches.push(std::mem::take(&mut batch));
                bytes = WRAPPER;
            }
            bytes += json.len() + 1;
            batch.push((i, json));
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        for batch in batches {
            for (i, result) in self.post_batch(batch, requests, 0).await {
                results[i] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(SubmitError::Unavailable("not sent".into()))))
            .collect()
    }

    fn singles_lock(&self) -> std::sync::MutexGuard<'_, Option<tokio::time::Instant>> {
        self.singles_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether MDC lately answered that it has no batches.
    fn singles_for_now(&self) -> bool {
        self.singles_lock()
            .is_some_and(|until| tokio::time::Instant::now() < until)
    }

    /// One batch, `(index, JSON)` of each message, until each has its
    /// result or the tries are used up, `tried` of them already spent.
    /// Boxed: a batch over MDC's body limit is cut in two, each half posted
    /// the same way with the tries left.
    fn post_batch<'a>(
        &'a self,
        mut pending: Vec<(usize, Vec<u8>)>,
        requests: &'a [SubmitRequest],
        tried: u32,
    ) -> BoxFuture<'a, Vec<(usize, Result<Sent, SubmitError>)>> {
        Box::pin(async move {
            let url = format!("{}/v1/messages/batch", self.base);
            let mut done = Vec::with_capacity(pending.len());
            let mut backoff = FIRST_BACKOFF;
            // The wait MDC asked for (Retry-After), for the next pause only.
            let mut asked: Option<Duration> = None;
            // A half of a batch too large goes on from the batch's tries.
            let mut attempt = tried;
            // Why the last try failed, for the messages left when they run out.
            let mut failure = String::new();
            while !pending.is_empty() {
                if attempt >= self.attempts {
                    let why = format!("MDC could not take it after {attempt} tries: {failure}");
                    done.extend(
                        pending
                            .drain(..)
                            .map(|(i, _)| (i, Err(SubmitError::Unavailable(why.clone().into())))),
                    );
                    break;
                }
                if attempt > tried {
                    let pause = asked.take().unwrap_or(backoff).min(self.max_backoff);
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
                attempt += 1;
                let response = match self
                    .authorized(self.client.post(&url))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(batch_body(&pending))
                    .send()
                    .await
                {
                    Ok(response) => response,
                    Err(e) => {
                        tracing::debug!(attempt, error = %e, "No answer from MDC; trying again");
                        failure = format!("no answer: {e}");
                        continue;
                    }
                };
                let status = response.status();
                if status == StatusCode::OK {
                    let answer = match response.json::<BatchAnswer>().await {
                        Ok(answer) if answer.results.len() == pending.len() => answer,
                        Ok(answer) => {
                            tracing::error!(sent = pending.len(), results = answer.results.len(), "MDC answered a batch with another number of results; sending it again");
                            failure = "an answer that did not match the batch".to_owned();
                            continue;
                        }
                        Err(e) => {
                            tracing::debug!(attempt, error = %e, "MDC's answer to a batch could not be read; sending it again");
                            failure = format!("an answer that could not be read: {e}");
                            continue;
                        }
                    };
                    // What MDC could not take now goes again, under its key.
                    let mut again = Vec::new();
                    for ((i, json), result) in pending.drain(..).zip(answer.results) {
                        let status =
                            StatusCode::from_u16(result.status).unwrap_or(StatusCode::BAD_GATEWAY);
                        let accepted = status.is_success() && result.accepted.is_some();
                        if accepted || !(retryable(status) || status.is_success()) {
                            let error = result.error.unwrap_or_else(|| ErrorBody::from(status));
                            done.push((i, outcome(status, result.accepted, error)));
                        } else {
                            if let Some(error) = result.error {
                                failure = format!("{status}: {}", error.message);
                            }
                            if let Some(seconds) = result.retry_after {
                                let wait = Duration::from_secs(seconds);
                                asked = Some(asked.map_or(wait, |a| a.max(wait)));
                            }
                            again.push((i, json));
                        }
                    }
                    pending = again;
                    if !pending.is_empty() {
                        tracing::debug!(
                            attempt,
                            pending = pending.len(),
                            "MDC could not take some messages of a batch now; trying them again"
                        );
                    }
                    continue;
                }
                if retryable(status) {
                    let wait = retry_after(&response);
                    failure = format!("{status}: {}", error_body(response).await.message);
                    tracing::debug!(attempt, %status, ?wait, "MDC cannot take the batch now; trying again");
                    asked = wait;
                    continue;
                }
                if status == StatusCode::PAYLOAD_TOO_LARGE && pending.len() > 1 {
                    // Over this MDC's max_body_bytes: each half on its own.
                    let second = pending.split_off(pending.len() / 2);
                    // The halves share the tries left, one at least: the
                    // refusal was of the size, not of MDC being unavailable.
                    let tried = attempt.min(self.attempts.saturating_sub(1));
                    done.extend(self.post_batch(pending, requests, tried).await);
                    done.extend(self.post_batch(second, requests, tried).await);
                    break;
                }
                if matches!(
                    status,
                    StatusCode::PAYLOAD_TOO_LARGE
                        | StatusCode::NOT_FOUND
                        | StatusCode::METHOD_NOT_ALLOWED
                ) {
                    // One message too large for a batch, or an MDC without
                    // batches: one at a time.
                    if status != StatusCode::PAYLOAD_TOO_LARGE {
                        tracing::warn!(%status, "MDC does not take batches at {url}; sending one message at a time for {} s", SINGLES_FOR.as_secs());
                        *self.singles_lock() = Some(tokio::time::Instant::now() + SINGLES_FOR);
                    }
                    for (i, _) in pending.drain(..) {
                        done.push((i, self.submit(&requests[i]).await));
                    }
                    break;
                }
                // The batch as a whole was refused (a key without `send`):
                // each message with it, as MDC's own refusal.
                let body = error_body(response).await;
                for (i, _) in pending.drain(..) {
                    done.push((
                        i,
                        Err(SubmitError::Refused {
                            status: status.as_u16(),
                            message: body.message.clone(),
                        }),
                    ));
                }
            }
            done
        })
    }

    pub(crate) async fn status(
        &self,
        id: &MessageId,
    ) -> Result<Option<MessageStatus>, StatusError> {
        let url = format!("{}/v1/messages/{id}", self.base);
        let response = self
            .authorized(self.client.get(&url))
            .send()
            .await
            .map_err(|e| StatusError::Unavailable(e.into()))?;
        match response.status() {
            StatusCode::OK => response.json().await.map(Some).map_err(|e| {
                StatusError::Unavailable(format!("MDC's answer could not be read: {e}").into())
            }),
            StatusCode::NOT_FOUND => Ok(None),
            status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(StatusError::Refused {
                    status: status.as_u16(),
                    message: error_body(response).await.message,
                })
            }
            status => Err(StatusError::Unavailable(
                format!(
                    "MDC answered {status}: {}",
                    error_body(response).await.message
                )
                .into(),
            )),
        }
    }
}
