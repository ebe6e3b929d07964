//! Submitting messages: `POST /v1/messages` (one) and
//! `POST /v1/messages/batch` (up to [`MAX_BATCH`]).
//!
//! A batch's messages are each validated, recorded and queued on their
//! own, at the same time; the answer (200) carries one result per message,
//! in the request's order: `{"status": 202, "accepted": {…}}` with what a
//! single submit answers, or `{"status": 4xx|503, "error": {…}}` with its
//! error. One bad message turns none of the others away. The request as a
//! whole fails (and nothing of it is kept) only when it cannot be read:
//! malformed JSON, over `max_body_bytes`, no key or scope, over the
//! service's rate, or a `messages` that is not a list of 1 to
//! [`MAX_BATCH`] messages.

use std::num::NonZeroU32;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use mdc_client::{SubmitError, SubmitRequest, Submitted};
use mdc_core::ports::Scope;
use mdc_core::Channel;
use serde_json::{json, Value};

use crate::api::{read_body, unavailable, unprocessable, ApiError, State};
use crate::auth::Caller;

/// The most messages one batch may carry.
pub const MAX_BATCH: usize = 500;

#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = crate::openapi::SubmitBody, responses((status = 202, description = "Accepted: durable and queued", body = crate::openapi::Submitted), (status = 400, description = "Malformed JSON", body = crate::openapi::ErrorBody), (status = 409, description = "The idempotency key was used for another message", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 422, description = "A field breaks a rule; `field` names it", body = crate::openapi::ErrorBody), (status = 429, description = "The service is over its submit rate; see Retry-After", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn submit(
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Send)?;
    state.auth.check_rate(caller.service.as_deref())?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let value: Value = serde_json::from_slice(&body).map_err(malformed)?;
    let submitted = accept(&state, caller.service.as_deref(), value).await?;
    Ok(HttpResponse::Accepted().json(submitted))
}

#[utoipa::path(post, path = "/v1/messages/batch", tag = "messages", request_body = crate::openapi::BatchBody, responses((status = 200, description = "One result per message, in order: 202 with what a single submit answers, or the error that message got", body = crate::openapi::BatchAnswer), (status = 400, description = "Malformed JSON", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 422, description = "`messages` is not a list of 1 to 500 messages, or more than the service's burst", body = crate::openapi::ErrorBody), (status = 429, description = "The service is over its submit rate; see Retry-After", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "The API keys cannot be read; nothing was taken, retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn submit_batch(
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Send)?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let value: Value = serde_json::from_slice(&body).map_err(malformed)?;
    let messages = batch_messages(value)?;
    let n = NonZeroU32::new(u32::try_from(messages.len()).unwrap_or(u32::MAX))
        .unwrap_or(NonZeroU32::MIN);
    state.auth.check_rate_n(caller.service.as_deref(), n)?;
    let service = caller.service.as_deref();
    let results = futures::future::join_all(
        messages
            .into_iter()
            .map(|message| accept(&state, service, message)),
    )
    .await;
    let results: Vec<Value> = results
        .into_iter()
        .map(|result| match result {
            Ok(submitted) => json!({"status": 202, "accepted": submitted}),
            Err(e) => json!({"status": e.status().as_u16(), "error": e.body()}),
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}

fn malformed(e: serde_json::Error) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")).rule("json")
}

/// The messages of a batch's body, `{"messages": [...]}`.
fn batch_messages(value: Value) -> Result<Vec<Value>, ApiError> {
    let Value::Object(mut body) = value else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the body must be a JSON object: {\"messages\": [...]}",
        )
        .rule("json_object"));
    };
    if let Some(unknown) = body.keys().find(|k| *k != "messages") {
        return Err(unprocessable(
            unknown,
            "type",
            "unknown field; a batch has only `messages`",
        ));
    }
    let messages = match body.remove("messages") {
        Some(Value::Array(messages)) => messages,
        Some(_) => {
            return Err(unprocessable(
                "messages",
                "type",
                "must be a list of messages",
            ))
        }
        None => return Err(unprocessable("messages", "required", "missing")),
    };
    if messages.is_empty() {
        return Err(unprocessable(
            "messages",
            "empty",
            "a batch needs at least one message",
        ));
    }
    if messages.len() > MAX_BATCH {
        return Err(unprocessable(
            "messages",
            "too_many",
            format!(
                "{} messages; a batch carries at most {MAX_BATCH}",
                messages.len()
            ),
        ));
    }
    Ok(messages)
}

/// One message, as JSON: validated, then recorded and queued for
/// `service`. The error is what a single submit of it answers.
async fn accept(state: &State, service: Option<&str>, value: Value) -> Result<Submitted, ApiError> {
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the body must be a JSON object",
        )
        .rule("json_object"));
    }
    let request: SubmitRequest = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // An unknown field is named in the message, not the path.
        let field = if path == "." {
            inner.split('`').nth(1).unwrap_or("").to_owned()
        } else {
            path
        };
        unprocessable(&field, "type", inner)
    })?;
    let started = std::time::Instant::now();
    let answer = match state.submitter.submit_as(&request, service).await {
        Ok(submitted) => Ok(submitted),
        Err(SubmitError::Invalid(e)) => {
            // Labels only from values that validate: no unbounded series.
            let channel = request
                .channel
                .as_deref()
                .and_then(|c| c.parse::<Channel>().ok());
            let priority = request
                .priority
                .as_deref()
                .map_or(
                    Ok(mdc_core::Priority::Normal),
                    str::parse::<mdc_core::Priority>,
                )
                .ok();
            metrics::counter!(
                "mdc_messages_rejected_total",
                "channel" => channel.map_or("unknown", Channel::as_str),
                "priority" => priority.map_or("unknown", mdc_core::Priority::as_str),
                "rule" => e.rule.clone(),
            )
            .increment(1);
            Err(unprocessable(&e.field, e.rule, e.message))
        }
        Err(SubmitError::Conflict(e)) => Err(ApiError::new(StatusCode::CONFLICT, e.message)
            .field(&e.field)
            .rule(e.rule)),
        Err(e @ (SubmitError::Unavailable(_) | SubmitError::Refused { .. })) => Err(unavailable(e)),
    };
    metrics::histogram!("mdc_submit_seconds").record(started.elapsed().as_secs_f64());
    answer
}
