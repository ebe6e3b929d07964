//! Submitting messages: `POST /v1/messages` (one) and
//! `POST /v1/messages/batch` (up to [`MAX_BATCH`]).
//!
//! A batch's messages are each validated, recorded and queued on their
//! own, at the same time; the answer (200) carries one result per message,
//! in the request's order: `{"status": 202, "accepted": {…}}` with what a
//! single submit answers, or `{"status": 4xx|503, "error": {…}}` with its
//! error (and `retry_after`, seconds, with a 429). One bad message turns
//! none of the others away. Each message that can be read takes one of the
//! service's rate, in order; those past it get 429. The request
//! as a whole fails (and nothing of it is kept) when it cannot be read
//! (malformed JSON, over `max_body_bytes`, no key or scope, a `messages`
//! that is not a list of 1 to [`MAX_BATCH`] messages), and when every
//! message got the same 429 or 503, so that it reads as a single submit's
//! would.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use mdc_client::{SubmitError, SubmitRequest, Submitted};
use mdc_core::ports::Scope;
use mdc_core::Channel;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;

use futures::StreamExt;

use crate::api::{read_body, unavailable_quietly, unprocessable, ApiError, State};
use crate::auth::Caller;

/// The most messages one batch may carry.
pub const MAX_BATCH: usize = 500;

/// How many messages of one batch are taken at the same time: enough for
/// the store's and the queue's writes to gather into few commits.
const BATCH_CONCURRENCY: usize = 64;

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
    let request = parse_message(&body)?;
    match accept(&state, caller.service.as_deref(), &request).await {
        Ok(submitted) => Ok(HttpResponse::Accepted().json(submitted)),
        Err(Refusal { error, cause }) => {
            if let Some(cause) = cause {
                tracing::warn!(error = %cause, "A backend is unavailable; answering 503");
            }
            Err(error)
        }
    }
}

#[utoipa::path(post, path = "/v1/messages/batch", tag = "messages", request_body = crate::openapi::BatchBody, responses((status = 200, description = "One result per message, in order: 202 with what a single submit answers, or the error that message got", body = crate::openapi::BatchAnswer), (status = 400, description = "Malformed JSON", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 422, description = "`messages` is not a list of 1 to 500 messages", body = crate::openapi::ErrorBody), (status = 429, description = "The service is over its submit rate for every message; see Retry-After", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "No message could be taken (a backend is unavailable); nothing was kept, retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn submit_batch(
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Send)?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let messages = batch_messages(&body)?;
    let parsed: Vec<Result<SubmitRequest, ApiError>> = messages
        .iter()
        .map(|message| parse_message(message.get().as_bytes()))
        .collect();
    // JSON that cannot be read fails the whole request, as it did before
    // the body was split (a lone surrogate or a number out of range is
    // found only when its message is read).
    if parsed.iter().any(|p| p.as_ref().is_err_and(unreadable)) {
        return Err(match serde_json::from_slice::<Value>(&body) {
            Err(e) => malformed(&e),
            Ok(_) => ApiError::new(StatusCode::BAD_REQUEST, "malformed JSON").rule("json"),
        });
    }
    let service = caller.service.as_deref();
    // A message's idempotency key is taken first, whatever becomes of the
    // message; then each message that can be read takes one of the
    // service's rate, in order: those past it are refused (429), the
    // others go on.
    let mut keys = std::collections::HashSet::new();
    let admitted: Vec<Result<SubmitRequest, ApiError>> = parsed
        .into_iter()
        .zip(&messages)
        .map(|(parsed, raw)| {
            let key = match &parsed {
                Ok(request) => request.idempotency_key.clone(),
                Err(_) => serde_json::from_str::<KeyOnly>(raw.get())
                    .ok()
                    .and_then(|k| k.idempotency_key),
            };
            if let Some(key) = key {
                if !keys.insert(key) {
                    return Err(unprocessable(
                        "idempotency_key",
                        "repeated_in_batch",
                        "an earlier message of this batch has this idempotency key; give each message its own",
                    ));
                }
            }
            let request = parsed?;
            state.auth.check_rate(service)?;
            Ok(request)
        })
        .collect();
    let results: Vec<Result<Submitted, Refusal>> = futures::stream::iter(admitted)
        .map(|admitted| async {
            match admitted {
                Ok(request) => accept(&state, service, &request).await,
                Err(error) => Err(Refusal { error, cause: None }),
            }
        })
        .buffered(BATCH_CONCURRENCY)
        .collect()
        .await;
    let unavailable = results
        .iter()
        .filter_map(|r| r.as_ref().err()?.cause.as_deref())
        .collect::<Vec<_>>();
    if let Some(first) = unavailable.first() {
        tracing::warn!(messages = unavailable.len(), of = results.len(), error = %first, "A backend is unavailable; answering 503 for those messages of a batch");
    }
    if let Some(whole) = refused_whole(&results) {
        return Err(whole);
    }
    let results: Vec<BatchResult> = results.into_iter().map(BatchResult::from).collect();
    metrics::counter!("mdc_batches_total").increment(1);
    Ok(HttpResponse::Ok().json(BatchAnswer { results }))
}

/// The answer to a batch: one result per message, in order.
#[derive(Serialize)]
struct BatchAnswer {
    results: Vec<BatchResult>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum BatchResult {
    Accepted {
        status: u16,
        accepted: Submitted,
    },
    Refused {
        status: u16,
        error: Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
}

impl From<Result<Submitted, Refusal>> for BatchResult {
    fn from(result: Result<Submitted, Refusal>) -> Self {
        match result {
            Ok(accepted) => BatchResult::Accepted {
                status: StatusCode::ACCEPTED.as_u16(),
                accepted,
            },
            Err(Refusal { error, .. }) => BatchResult::Refused {
                status: error.status().as_u16(),
                error: error.body(),
                retry_after: error.retry_after_seconds(),
            },
        }
    }
}

/// When every message of a batch was refused for the same passing reason
/// (the rate, or a backend down), that answer for the whole request, so
/// that retries and monitoring see it as they would for a single submit.
fn refused_whole(results: &[Result<Submitted, Refusal>]) -> Option<ApiError> {
    let mut errors = results.iter().map(|r| r.as_ref().err());
    let first = errors.next()??;
    let status = first.error.status();
    let passing = [
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::SERVICE_UNAVAILABLE,
    ];
    if !passing.contains(&status) || !errors.all(|e| e.is_some_and(|e| e.error.status() == status))
    {
        return None;
    }
    Some(first.error.clone())
}

/// A message not accepted: its error and, for a backend that could not
/// take it, what the backend said (for the log, not the caller).
struct Refusal {
    error: ApiError,
    cause: Option<String>,
}

fn malformed(e: &serde_json::Error) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")).rule("json")
}

/// Whether `error` is for JSON that cannot be read (400).
fn unreadable(error: &ApiError) -> bool {
    error.status() == StatusCode::BAD_REQUEST
}

/// A message's idempotency key alone, read from a message that cannot be
/// read whole.
#[derive(serde::Deserialize)]
struct KeyOnly {
    idempotency_key: Option<String>,
}

/// `json` is a JSON document (400 otherwise) whose top level is an object
/// (422 otherwise).
fn require_object(json: &[u8], what: &str) -> Result<(), ApiError> {
    if json.trim_ascii_start().first() == Some(&b'{') {
        return Ok(());
    }
    // Only on this error path: the document read whole, as JSON.
    serde_json::from_slice::<Value>(json).map_err(|e| malformed(&e))?;
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("{what} must be a JSON object"),
    )
    .rule("json_object"))
}

/// The message in `json`, read straight from the bytes: 400 for JSON that
/// cannot be read, 422 naming the field for a field of the wrong type or
/// one a message does not have.
fn parse_message(json: &[u8]) -> Result<SubmitRequest, ApiError> {
    require_object(json, "the body")?;
    let mut reader = serde_json::Deserializer::from_slice(json);
    let request: SubmitRequest = serde_path_to_error::deserialize(&mut reader).map_err(|e| {
        // Read as a stream, a field of the wrong type can come before JSON
        // that cannot be read: only on this error path, the document is
        // read whole first, so that broken JSON is a 400 wherever it breaks.
        if let Err(syntax) = serde_json::from_slice::<Value>(json) {
            return malformed(&syntax);
        }
        let path = e.path().to_string();
        let inner = e.into_inner();
        if !inner.is_data() {
            return malformed(&inner);
        }
        let message = without_position(&inner);
        // An unknown field is named in the message, not the path.
        let field = if path == "." {
            message.split('`').nth(1).unwrap_or("").to_owned()
        } else {
            path
        };
        unprocessable(&field, "type", message)
    })?;
    // Nothing but white space after the message.
    reader.end().map_err(|e| malformed(&e))?;
    Ok(request)
}

/// What `serde_json` says, without where in the document it was: a
/// batch's messages are read one by one, so the place would mislead.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&position) {
        Some(message) => message.to_owned(),
        None => text,
    }
}

/// The messages of a batch's body, `{"messages": [...]}`, each as the JSON
/// it was sent as.
fn batch_messages(body: &[u8]) -> Result<Vec<&RawValue>, ApiError> {
    require_object(body, "the body").map_err(|e| {
        if e.status() == StatusCode::UNPROCESSABLE_ENTITY {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the body must be a JSON object: {\"messages\": [...]}",
            )
            .rule("json_object")
        } else {
            e
        }
    })?;
    // In order, so that of several unknown fields the first is named.
    let mut fields: BTreeMap<Cow<'_, str>, &RawValue> =
        serde_json::from_slice(body).map_err(|e| malformed(&e))?;
    if let Some(unknown) = fields.keys().find(|k| *k != "messages") {
        return Err(unprocessable(
            unknown,
            "type",
            "unknown field; a batch has only `messages`",
        ));
    }
    let Some(messages) = fields.remove("messages") else {
        return Err(unprocessable("messages", "required", "missing"));
    };
    let messages: Vec<&RawValue> = serde_json::from_str(messages.get())
        .map_err(|_| unprocessable("messages", "type", "must be a list of messages"))?;
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

/// One message: validated, then recorded and queued for `service`. The
/// error is what a single submit of it answers.
async fn accept(
    state: &State,
    service: Option<&str>,
    request: &SubmitRequest,
) -> Result<Submitted, Refusal> {
    let refused = |error| Refusal { error, cause: None };
    let started = std::time::Instant::now();
    let answer = match state.submitter.submit_as(request, service).await {
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
            Err(refused(unprocessable(&e.field, e.rule, e.message)))
        }
        Err(SubmitError::Conflict(e)) => Err(refused(
            ApiError::new(StatusCode::CONFLICT, e.message)
                .field(&e.field)
                .rule(e.rule),
        )),
        Err(e @ (SubmitError::Unavailable(_) | SubmitError::Refused { .. })) => Err(Refusal {
            error: unavailable_quietly(),
            cause: Some(e.to_string()),
        }),
    };
    metrics::histogram!("mdc_submit_seconds").record(started.elapsed().as_secs_f64());
    answer
}

#[cfg(test)]
mod tests {
    use mdc_core::{MessageId, Status};
    use serde_json::json;

    use super::*;

    fn accepted() -> Result<Submitted, Refusal> {
        Ok(Submitted {
            id: MessageId::generate(),
            status: Status::Queued,
            warnings: Vec::new(),
            duplicate: false,
        })
    }

    fn refused(status: StatusCode) -> Result<Submitted, Refusal> {
        Err(Refusal {
            error: ApiError::new(status, "no"),
            cause: None,
        })
    }

    fn refusal(json: &str) -> (u16, Value) {
        let error = parse_message(json.as_bytes()).expect_err("refused");
        (error.status().as_u16(), error.body())
    }

    #[test]
    fn a_message_is_read_straight_from_its_json_and_refusals_name_the_field() {
        let request =
            parse_message(br#" {"channel": "sms", "to": "+14155550123"} "#).expect("a message");
        assert_eq!(request.channel.as_deref(), Some("sms"));
        assert_eq!(request.to.as_deref(), Some("+14155550123"));

        let (status, body) = refusal(r#"{"channel": "sms""#);
        assert_eq!((status, &body["rule"]), (400, &json!("json")), "{body}");
        let (status, body) = refusal(r#"{"channel": "sms"} trailing"#);
        assert_eq!((status, &body["rule"]), (400, &json!("json")), "{body}");
        // Broken JSON after a field of the wrong type is still broken JSON.
        for broken in [r#"{"to": 7,"#, r#"{"to": 7} trailing"#, r#"{"colour": 1 x"#] {
            let (status, body) = refusal(broken);
            assert_eq!(
                (status, &body["rule"]),
                (400, &json!("json")),
                "{broken}: {body}"
            );
        }
        for not_an_object in [r#"["sms", "+14155550123"]"#, "\"sms\"", "7"] {
            let (status, body) = refusal(not_an_object);
            assert_eq!(
                (status, &body["rule"]),
                (422, &json!("json_object")),
                "{body}"
            );
        }
        let (status, body) = refusal(r#"{"channel": "sms", "to": 14155550123}"#);
        assert_eq!((status, &body["field"]), (422, &json!("to")), "{body}");
        let message = body["message"].as_str().expect("message");
        assert!(message.starts_with("invalid type: integer"), "{message}");
        assert!(
            !message.contains("line"),
            "no place in the document: {message}"
        );
        let (status, body) = refusal(r#"{"channel": "sms", "colour": "red"}"#);
        assert_eq!((status, &body["field"]), (422, &json!("colour")), "{body}");
        let (status, body) = refusal(r#"{"to": "+1", "to": "+2"}"#);
        assert_eq!((status, &body["field"]), (422, &json!("to")), "{body}");
    }

    #[test]
    fn a_batch_body_is_an_object_with_a_list_of_1_to_500_messages() {
        let messages = batch_messages(br#"{"messages": [{"to": "+1"}, 7]}"#).expect("batch");
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].get(), r#"{"to": "+1"}"#);
        let refused = |body: &str| {
            let error = batch_messages(body.as_bytes()).expect_err("refused");
            let body = error.body();
            (
                error.status().as_u16(),
                body["field"].clone(),
                body["rule"].clone(),
            )
        };
        assert_eq!(refused("[1]"), (422, Value::Null, json!("json_object")));
        assert_eq!(
            refused(r#"{"messages": "#),
            (400, Value::Null, json!("json"))
        );
        assert_eq!(refused("{}"), (422, json!("messages"), json!("required")));
        assert_eq!(
            refused(r#"{"messages": {}}"#),
            (422, json!("messages"), json!("type"))
        );
        assert_eq!(
            refused(r#"{"messages": []}"#),
            (422, json!("messages"), json!("empty"))
        );
        assert_eq!(
            refused(r#"{"messages": [], "extra": 1}"#),
            (422, json!("extra"), json!("type"))
        );
        let many = format!(
            r#"{{"messages": [{}]}}"#,
            vec!["{}"; MAX_BATCH + 1].join(",")
        );
        assert_eq!(refused(&many), (422, json!("messages"), json!("too_many")));
    }

    #[test]
    fn a_batch_is_refused_whole_only_when_every_message_got_the_same_passing_refusal() {
        let whole = |results: &[Result<Submitted, Refusal>]| {
            refused_whole(results).map(|e| e.status().as_u16())
        };
        let busy = StatusCode::SERVICE_UNAVAILABLE;
        let limited = StatusCode::TOO_MANY_REQUESTS;
        let invalid = StatusCode::UNPROCESSABLE_ENTITY;
        assert_eq!(whole(&[refused(busy), refused(busy)]), Some(503));
        assert_eq!(whole(&[refused(limited)]), Some(429));
        // One accepted, or refusals that differ or would not pass: per message.
        assert_eq!(whole(&[refused(busy), accepted()]), None);
        assert_eq!(whole(&[accepted(), refused(busy)]), None);
        assert_eq!(whole(&[refused(busy), refused(limited)]), None);
        assert_eq!(whole(&[refused(invalid), refused(invalid)]), None);
        assert_eq!(whole(&[]), None);
    }
}
