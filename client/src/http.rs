//! The http transport: `POST /v1/messages` with the service's API key.

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

pub(crate) struct Http {
    client: reqwest::Client,
    base: String,
    key: Option<String>,
    attempts: u32,
    max_backoff: Duration,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    message: String,
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
                    let body = error_body(response).await;
                    return Err(match status {
                        StatusCode::UNPROCESSABLE_ENTITY => {
                            SubmitError::Invalid(validation_error(body))
                        }
                        StatusCode::CONFLICT => SubmitError::Conflict(validation_error(body)),
                        _ => SubmitError::Refused {
                            status: status.as_u16(),
                            message: body.message,
                        },
                    });
                }
            };
            tokio::time::sleep(asked.unwrap_or(backoff).min(self.max_backoff)).await;
            backoff = (backoff * 2).min(self.max_backoff);
        }
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
