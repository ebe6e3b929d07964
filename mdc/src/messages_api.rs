//! Reading, listing and cancelling messages: `GET /v1/messages/{id}`,
//! `GET /v1/messages`, `POST /v1/messages/{id}/cancel`, `GET /v1/stats`.
//! What a caller sees of a message depends on its key's scopes.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use base64::Engine as _;
use mdc_core::ports::{ListFilter, Scope, SortOrder, Transition, Updated};
use mdc_core::{Channel, MessageId, MessageRecord, Status};
use serde_json::{json, Value};

use crate::api::{not_found, only_known, parse_param, unavailable, unprocessable, ApiError, State};
use crate::auth::Caller;

/// What stands for a body that is not shown.
fn hidden(text: &str) -> Value {
    json!(format!("[hidden: {} characters]", text.chars().count()))
}

/// The content as `caller` may see it: bodies in clear only with
/// `read:pii`, and never for OTPs.
fn content_view(message: &mdc_core::Message, pii: bool) -> Value {
    let mut content = json!(message.content);
    if pii && message.message_type != mdc_core::MessageType::Otp {
        return content;
    }
    if let Value::Object(fields) = &mut content {
        for field in ["body", "text", "html", "title", "subject"] {
            if let Some(Value::String(text)) = fields.get(field) {
                let masked = hidden(text);
                fields.insert(field.to_owned(), masked);
            }
        }
        if !pii {
            // A push target is a recipient: a device token or a user id.
            if let Some(Value::Object(target)) = fields.get_mut("target") {
                if let Some(Value::String(value)) = target.get_mut("value") {
                    *value = mdc_core::mask::recipient(value);
                }
            }
            if let Some(Value::Object(data)) = fields.get_mut("data") {
                for value in data.values_mut() {
                    *value = json!("[hidden]");
                }
            }
            if let Some(Value::Array(files)) = fields.get_mut("attachments") {
                for file in files {
                    if let Value::Object(file) = file {
                        file.remove("content_base64");
                    }
                }
            }
        }
    }
    content
}

/// The message as support sees it; recipients and bodies masked without
/// `pii`.
fn view(record: &MessageRecord, with_events: bool, pii: bool) -> Value {
    let message = &record.message;
    let to = if pii {
        message.to.clone()
    } else {
        mdc_core::mask::recipient(&message.to)
    };
    let mut view = json!({
        "id": message.id,
        "status": record.status,
        "channel": message.channel(),
        "priority": message.priority,
        "type": message.message_type,
        "to": to,
        "sender": message.sender,
        "service": message.service,
        "idempotency_key": message.idempotency_key,
        "reference": message.reference,
        "metadata": message.metadata,
        "created_at": message.created_at,
        "updated_at": record.updated_at,
        "deadline": message.deadline,
        "attempts": record.attempts,
        "next_attempt_at": record.next_attempt_at,
        "provider": record.provider,
        "provider_message_id": record.provider_message_id,
        "content": content_view(message, pii),
    });
    if with_events {
        let mut events = json!(record.events);
        if !pii {
            // Vendors' payloads and error texts echo recipients.
            for event in events.as_array_mut().into_iter().flatten() {
                if let Value::Object(event) = event {
                    event.remove("raw");
                    for field in ["error", "details"] {
                        if let Some(Value::String(text)) = event.get_mut(field) {
                            *text = mdc_core::mask::scrub(text);
                        }
                    }
                }
            }
        }
        view["events"] = events;
    }
    view
}

#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages", params(("id" = String, Path, description = "msg_…")), responses((status = 200, description = "The message and its trail", body = crate::openapi::MessageView), (status = 404, description = "No such message (or another service's)", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn get(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let id = path.parse::<MessageId>().map_err(|_| {
        not_found("no such message (ids look like msg_01J…)")
            .field("id")
            .rule("message_id")
    })?;
    match state.store.get(&id).await.map_err(unavailable)? {
        Some(record) if caller.owns(record.message.service.as_deref()) => {
            Ok(HttpResponse::Ok().json(view(&record, true, caller.sees_pii())))
        }
        _ => Err(not_found("no such message").field("id")),
    }
}

/// Most messages one page of a list returns.
const MAX_PAGE: usize = 500;

/// A recipient filter as the client stores recipients: `+1 415 555 0123`
/// finds `+14155550123`, `Alice@Example.COM` finds `Alice@example.com`.
fn normalised_to(to: &str) -> String {
    let to = to.trim();
    if to.contains('@') {
        if let Ok(address) = mdc_client::validate::email_address("to", to) {
            return address;
        }
    } else if to.starts_with('+') || to.starts_with(|c: char| c.is_ascii_digit()) {
        if let Ok((number, _)) = mdc_client::validate::phone_number("to", to) {
            return number;
        }
    }
    to.to_owned()
}

/// The opaque cursor after `record`: base64 of its position in `sort`.
fn cursor_after(sort: SortOrder, record: &MessageRecord) -> String {
    let (at, id) = sort.key(record);
    let text = json!({"s": sort.as_str(), "t": at, "id": id}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn parse_cursor(cursor: &str, sort: SortOrder) -> Result<(i64, String), ApiError> {
    let bad = || unprocessable("cursor", "cursor", "not a cursor this list handed out");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if value["s"] != sort.as_str() {
        return Err(unprocessable(
            "cursor",
            "cursor",
            "the cursor belongs to another sort order",
        ));
    }
    match (value["t"].as_i64(), value["id"].as_str()) {
        (Some(at), Some(id)) => Ok((at, id.to_owned())),
        _ => Err(bad()),
    }
}

/// The list filters of a query (`GET /v1/messages` and the CSV export).
pub(crate) fn list_filter(
    caller: &Caller,
    query: &HashMap<String, String>,
    paged: bool,
) -> Result<ListFilter, ApiError> {
    const KNOWN: [&str; 13] = [
        "status",
        "channel",
        "provider",
        "type",
        "priority",
        "to",
        "reference",
        "service",
        "created_after",
        "created_before",
        "sort",
        "limit",
        "cursor",
    ];
    only_known(query, &KNOWN)?;
    let sort = parse_param::<SortOrder>(query, "sort", "a sort order")?.unwrap_or_default();
    let service = match query.get("service") {
        Some(service) if caller.is_admin() => Some(service.clone()),
        Some(service) if caller.service.as_ref() == Some(service) => Some(service.clone()),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "only admin keys list another service's messages",
            )
            .field("service")
            .rule("scope"))
        }
        None => caller.scope_filter(),
    };
    let limit = match parse_param::<usize>(query, "limit", "a number")? {
        Some(0) => return Err(unprocessable("limit", "range", "must be at least 1")),
        Some(n) if n > MAX_PAGE && paged => {
            return Err(unprocessable(
                "limit",
                "range",
                format!("at most {MAX_PAGE}; page on with next_cursor"),
            ))
        }
        Some(n) => n,
        None if paged => 100,
        None => usize::MAX,
    };
    Ok(ListFilter {
        status: parse_param::<Status>(query, "status", "a status")?,
        channel: parse_param::<Channel>(query, "channel", "a channel")?,
        to: query.get("to").map(|to| normalised_to(to)),
        created_after: parse_param(query, "created_after", "an RFC 3339 time")?,
        created_before: parse_param(query, "created_before", "an RFC 3339 time")?,
        service,
        provider: query.get("provider").cloned(),
        message_type: parse_param::<mdc_core::MessageType>(query, "type", "a message type")?,
        priority: parse_param::<mdc_core::Priority>(query, "priority", "a priority")?,
        reference: query.get("reference").cloned(),
        after: query
            .get("cursor")
            .map(|c| parse_cursor(c, sort))
            .transpose()?,
        sort,
        limit,
    })
}

/// `GET /v1/messages`: one page, and `next_cursor` while there may be more.
/// Walking by `created_at` sees every message of the window once, however
/// many arrive meanwhile.
#[utoipa::path(get, path = "/v1/messages", tag = "messages", params(("status" = Option<String>, Query, description = "accepted, queued, sending, sent, delivered, failed, expired, rejected, cancelled"), ("channel" = Option<String>, Query, description = "sms, email, push"), ("provider" = Option<String>, Query), ("type" = Option<String>, Query, description = "otp, transactional, marketing"), ("priority" = Option<String>, Query, description = "critical, normal, bulk"), ("to" = Option<String>, Query, description = "Recipient, normalised as at submit"), ("reference" = Option<String>, Query), ("service" = Option<String>, Query, description = "Admin keys: another service's messages"), ("created_after" = Option<String>, Query, description = "RFC 3339"), ("created_before" = Option<String>, Query, description = "RFC 3339"), ("sort" = Option<String>, Query, description = "created_at, -created_at (default), updated_at, -updated_at"), ("limit" = Option<u32>, Query, description = "1-500, default 100"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), responses((status = 200, description = "One page", body = crate::openapi::MessagePage), (status = 422, description = "A field breaks a rule; `field` names it", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn list(
    caller: Caller,
    query: web::Query<HashMap<String, String>>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let filter = list_filter(&caller, &query, true)?;
    let records = state.store.list(&filter).await.map_err(unavailable)?;
    let next = (records.len() == filter.limit)
        .then(|| records.last().map(|r| cursor_after(filter.sort, r)))
        .flatten();
    let messages: Vec<Value> = records
        .iter()
        .map(|r| view(r, false, caller.sees_pii()))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "messages": messages, "next_cursor": next })))
}

/// `POST /v1/messages/{id}/cancel`: `cancelled` while no vendor has it
/// (`accepted` or `queued`); 409 once a send started.
#[utoipa::path(post, path = "/v1/messages/{id}/cancel", tag = "messages", params(("id" = String, Path, description = "msg_…")), responses((status = 200, description = "Cancelled", body = crate::openapi::MessageView), (status = 404, description = "No such message (or another service's)", body = crate::openapi::ErrorBody), (status = 409, description = "A send has started", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn cancel(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Send)?;
    let id = path
        .parse::<MessageId>()
        .map_err(|_| not_found("no such message").field("id"))?;
    match state.store.get(&id).await.map_err(unavailable)? {
        Some(record) if caller.owns(record.message.service.as_deref()) => {}
        _ => return Err(not_found("no such message").field("id")),
    }
    let by = caller.service.as_deref().unwrap_or("the API");
    let event = mdc_core::Event::new("ingest", format!("cancelled by {by}"));
    match state
        .store
        .update(&id, Transition::to(Status::Cancelled, event))
        .await
        .map_err(unavailable)?
    {
        Updated::Applied { .. } => {
            if let Err(e) =
                mdc_core::outcome::publish_current(&*state.store, &*state.queue, &id, None).await
            {
                // Stored: the reconciler's outcome pass is not needed, the
                // webhook simply misses this one event; say so.
                tracing::warn!(message_id = %id, error = %e, "Could not publish the cancellation");
            }
            let record = state.store.get(&id).await.map_err(unavailable)?;
            match record {
                Some(record) => Ok(HttpResponse::Ok().json(view(&record, true, caller.sees_pii()))),
                None => Err(not_found("no such message").field("id")),
            }
        }
        Updated::Ignored { current } => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("the message is {current}: only accepted or queued messages can be cancelled"),
        )
        .field("id")
        .rule("not_cancellable")),
        _ => Err(not_found("no such message").field("id")),
    }
}

/// Messages per status: `{"statuses": {"delivered": 10, ...}, "total": 12}`.
#[utoipa::path(get, path = "/v1/stats", tag = "reports", responses((status = 200, description = "Messages per status", body = crate::openapi::Stats), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn stats(
    caller: Caller,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Admin)?;
    let counts = state.store.count_by_status().await.map_err(unavailable)?;
    let total: u64 = counts.values().sum();
    Ok(HttpResponse::Ok().json(json!({ "statuses": counts, "total": total })))
}
