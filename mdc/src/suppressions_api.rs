//! `/v1/suppressions`: recipients MDC no longer sends to (admin).

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use mdc_core::message::PushTarget;
use mdc_core::ports::Scope;
use mdc_core::Channel;
use serde_json::json;

use crate::api::{
    not_found, only_known, parse_param, read_json, unavailable, unprocessable, ApiError, State,
};
use crate::auth::Caller;

/// Most entries a suppression list returns.
const MAX_LIST: usize = 1000;

/// A recipient as the client normalises `to` for `channel`, so a
/// suppression matches what submit stores.
fn normalised_recipient(channel: Channel, to: &str) -> Result<String, ApiError> {
    let field =
        |e: mdc_client::validate::ValidationError| unprocessable(&e.field, e.rule, e.message);
    Ok(match channel {
        Channel::Sms => {
            mdc_client::validate::phone_number("to", to)
                .map_err(field)?
                .0
        }
        Channel::Email => mdc_client::validate::email_address("to", to).map_err(field)?,
        Channel::Push => match mdc_client::validate::push_target("to", to).map_err(field)? {
            PushTarget::DeviceToken(token) => token,
            PushTarget::UserId(user) => format!("user:{user}"),
        },
    })
}

fn channel_param(value: Option<&str>) -> Result<Option<Channel>, ApiError> {
    value
        .map(|c| {
            c.parse::<Channel>()
                .map_err(|_| unprocessable("channel", "one_of", "must be sms, email or push"))
        })
        .transpose()
}

/// `GET /v1/suppressions?channel=&to=&limit=`: one recipient's entry (404
/// when it is not suppressed), or the newest entries.
#[utoipa::path(get, path = "/v1/suppressions", tag = "suppressions", params(("channel" = Option<String>, Query), ("to" = Option<String>, Query, description = "One recipient (with channel)"), ("limit" = Option<u32>, Query)), responses((status = 200, description = "Entries", body = crate::openapi::Suppressions), (status = 404, description = "Not suppressed", body = crate::openapi::ErrorBody), (status = 422, description = "A field breaks a rule; `field` names it", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn list_suppressions(
    caller: Caller,
    query: web::Query<HashMap<String, String>>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Admin)?;
    const KNOWN: [&str; 3] = ["channel", "to", "limit"];
    only_known(&query, &KNOWN)?;
    let channel = channel_param(query.get("channel").map(String::as_str))?;
    if let Some(to) = query.get("to") {
        let Some(channel) = channel else {
            return Err(unprocessable(
                "channel",
                "required",
                "give the channel with to",
            ));
        };
        let recipient = normalised_recipient(channel, to)?;
        return match state
            .suppressions
            .get(channel, &recipient)
            .await
            .map_err(unavailable)?
        {
            Some(entry) => Ok(HttpResponse::Ok().json(json!({ "suppressions": [entry] }))),
            None => Err(not_found("not suppressed").field("to")),
        };
    }
    let limit = parse_param::<usize>(&query, "limit", "a number")?
        .unwrap_or(100)
        .min(MAX_LIST);
    let entries = state
        .suppressions
        .list(channel, limit)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(json!({ "suppressions": entries })))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SuppressionRequest {
    channel: Option<String>,
    to: Option<String>,
    reason: Option<String>,
}

/// `POST /v1/suppressions {"channel","to","reason"}`: 201 when added, 200
/// when the recipient was already suppressed (the first entry is kept).
#[utoipa::path(post, path = "/v1/suppressions", tag = "suppressions", request_body = SuppressionRequest, responses((status = 201, description = "Added", body = crate::openapi::Suppression), (status = 200, description = "Already suppressed; the first entry stays", body = crate::openapi::Suppression), (status = 400, description = "Malformed JSON", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 422, description = "A field breaks a rule; `field` names it", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn add_suppression(
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Admin)?;
    let request: SuppressionRequest = read_json(&req, payload, state.max_body_bytes).await?;
    let Some(channel) = channel_param(request.channel.as_deref())? else {
        return Err(unprocessable("channel", "required", "channel is required"));
    };
    let Some(to) = request.to.as_deref().filter(|t| !t.trim().is_empty()) else {
        return Err(unprocessable("to", "required", "to is required"));
    };
    let reason = request
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "added by hand".to_owned());
    if reason.len() > 500 {
        return Err(unprocessable("reason", "length", "at most 500 bytes"));
    }
    let entry = mdc_core::ports::Suppression {
        channel,
        recipient: normalised_recipient(channel, to)?,
        reason,
        source: "manual".to_owned(),
        message_id: None,
        at: mdc_core::now(),
    };
    let added = state.suppressions.add(&entry).await.map_err(unavailable)?;
    let stored = state
        .suppressions
        .get(channel, &entry.recipient)
        .await
        .map_err(unavailable)?
        .unwrap_or(entry);
    Ok(if added {
        HttpResponse::Created().json(stored)
    } else {
        HttpResponse::Ok().json(stored)
    })
}

/// `DELETE /v1/suppressions/{channel}/{recipient}`: 204, or 404.
#[utoipa::path(delete, path = "/v1/suppressions/{channel}/{recipient}", tag = "suppressions", params(("channel" = String, Path), ("recipient" = String, Path)), responses((status = 204, description = "Removed"), (status = 404, description = "Not suppressed", body = crate::openapi::ErrorBody), (status = 422, description = "A field breaks a rule; `field` names it", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn remove_suppression(
    caller: Caller,
    path: web::Path<(String, String)>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Admin)?;
    let (channel, to) = path.into_inner();
    let Some(channel) = channel_param(Some(&channel))? else {
        return Err(unprocessable("channel", "required", "channel is required"));
    };
    let recipient = normalised_recipient(channel, &to)?;
    if state
        .suppressions
        .remove(channel, &recipient)
        .await
        .map_err(unavailable)?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(not_found("not suppressed").field("to"))
    }
}
