//! `/v1/webhooks`: where client services have their outcomes delivered.
//!
//! - `POST /v1/webhooks` `{"url", "events", "channels", "description"}` →
//!   201 with the endpoint and its `secret` (shown this once).
//! - `GET /v1/webhooks`, `GET|PATCH|DELETE /v1/webhooks/{id}` (PATCH takes
//!   the same fields, and `"enabled": true` to re-enable).
//! - `POST /v1/webhooks/{id}/rotate-secret`: a new secret; the old one
//!   keeps signing for 24 hours.
//! - `GET /v1/webhooks/{id}/attempts?limit=`: the latest attempts.
//! - `POST /v1/webhooks/{id}/recover?since=`: delivers again what failed
//!   since then.

use std::str::FromStr;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use mdc_core::ports::{WebhookEndpoint, WebhookSecret};
use mdc_core::Channel;
use mdc_handlers::feedback::{address, sign};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{not_found, read_json, unavailable, unprocessable, ApiError, State};
use crate::auth::Caller;
use mdc_core::ports::Scope;

/// The event types an endpoint can ask for.
pub const EVENT_TYPES: &[&str] = &[
    "message.sent",
    "message.delivered",
    "message.failed",
    "message.expired",
    "message.rejected",
    "message.cancelled",
    "suppression.added",
];

/// How long a rotated-out secret keeps signing.
const ROTATION_OVERLAP: chrono::Duration = chrono::Duration::hours(24);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/webhooks", web::post().to(create))
        .route("/v1/webhooks", web::get().to(list))
        .route("/v1/webhooks/{id}", web::get().to(get))
        .route("/v1/webhooks/{id}", web::patch().to(update))
        .route("/v1/webhooks/{id}", web::delete().to(delete))
        .route(
            "/v1/webhooks/{id}/rotate-secret",
            web::post().to(rotate_secret),
        )
        .route("/v1/webhooks/{id}/attempts", web::get().to(attempts))
        .route("/v1/webhooks/{id}/recover", web::post().to(recover));
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EndpointRequest {
    url: Option<String>,
    events: Option<Vec<String>>,
    channels: Option<Vec<String>>,
    description: Option<String>,
    /// PATCH only: `true` re-enables a disabled endpoint.
    enabled: Option<bool>,
}

/// The endpoint as the API shows it: secrets never, after creation.
fn shown(endpoint: &WebhookEndpoint) -> Value {
    json!({
        "id": endpoint.id,
        "service": endpoint.service,
        "url": endpoint.url,
        "events": endpoint.events,
        "channels": endpoint.channels,
        "description": endpoint.description,
        "enabled": endpoint.disabled.is_none(),
        "disabled": endpoint.disabled,
        "failing_since": endpoint.failing_since,
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
    })
}

async fn parse(
    req: &HttpRequest,
    payload: web::Payload,
    state: &State,
) -> Result<EndpointRequest, ApiError> {
    read_json(req, payload, state.max_body_bytes).await
}

/// Applies the request's fields to `endpoint`, checking each.
async fn apply(
    request: EndpointRequest,
    endpoint: &mut WebhookEndpoint,
    state: &State,
) -> Result<(), ApiError> {
    let allow_private = state.feedback.config().allow_private_urls;
    if let Some(url) = request.url {
        let checked = address::check(url.trim(), allow_private)
            .await
            .map_err(|e| unprocessable("url", "url", e))?;
        endpoint.url = checked.to_string();
    }
    if let Some(events) = request.events {
        if let Some(unknown) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
            return Err(unprocessable(
                "events",
                "one_of",
                format!(
                    "unknown event type {unknown:?}; known: {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        endpoint.events = events;
    }
    if let Some(channels) = request.channels {
        endpoint.channels = channels
            .iter()
            .map(|c| Channel::from_str(c))
            .collect::<Result<_, _>>()
            .map_err(|_| unprocessable("channels", "one_of", "channels are sms, email and push"))?;
    }
    if let Some(description) = request.description {
        if description.len() > 500 {
            return Err(unprocessable("description", "length", "at most 500 bytes"));
        }
        endpoint.description = description;
    }
    if request.enabled == Some(true) {
        endpoint.disabled = None;
        endpoint.failing_since = None;
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = EndpointRequest, responses((status = 201, description = "Created, with its secret (shown once)", body = crate::openapi::Webhook), (status = 400, description = "Malformed JSON", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 422, description = "A field breaks a rule; `field` names it", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
async fn create(
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Send)?;
    let request = parse(&req, payload, &state).await?;
    if request.url.as_deref().is_none_or(|u| u.trim().is_empty()) {
        return Err(unprocessable("url", "required", "url is required"));
    }
    let now = mdc_core::now();
    let secret = sign::new_secret();
    let mut endpoint = WebhookEndpoint {
        id: format!("wh_{}", ulid::Ulid::new()),
        service: caller.service.clone(),
        url: String::new(),
        events: Vec::new(),
        channels: Vec::new(),
        description: String::new(),
        secrets: vec![WebhookSecret {
            secret: secret.clone(),
            expires_at: None,
        }],
        disabled: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
    };
    apply(request, &mut endpoint, &state).await?;
    // Outcomes are all written from before the store write until the
    // endpoints are read again after it, so the new one misses none.
    let (webhooks, stored) = (state.webhooks.clone(), endpoint.clone());
    to_the_end(state.feedback.changing(), async move {
        webhooks.create(&stored).await
    })
    .await?
    .map_err(unavailable)?;
    let mut body = shown(&endpoint);
    body["secret"] = json!(secret);
    Ok(HttpResponse::Created().json(body))
}

/// Runs `write` on a task of its own, holding `guard` until it ends, and
/// waits for it. A request dropped meanwhile (its client hung up) would
/// otherwise end the guard (a change to the endpoints under way, during
/// which every outcome is written) before the store write it covers,
/// which goes on without it.
async fn to_the_end<G, T>(
    guard: G,
    write: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, ApiError>
where
    G: Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(async move {
        let done = write.await;
        drop(guard);
        done
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "A webhook endpoint's write failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the webhook endpoint's write failed; read it back before retrying",
        )
    })
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", responses((status = 200, description = "The endpoints", body = crate::openapi::Webhooks), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
async fn list(caller: Caller, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let mut endpoints = state.webhooks.list().await.map_err(unavailable)?;
    endpoints.retain(|e| caller.owns(e.service.as_deref()));
    endpoints.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(HttpResponse::Ok().json(json!({
        "webhooks": endpoints.iter().map(shown).collect::<Vec<_>>()
    })))
}

/// The endpoint, if `caller` may touch it with `scope`: another service's
/// is as good as absent (404).
async fn find(
    caller: &Caller,
    scope: Scope,
    state: &State,
    id: &str,
) -> Result<WebhookEndpoint, ApiError> {
    caller.require(scope)?;
    state
        .webhooks
        .get(id)
        .await
        .map_err(unavailable)?
        .filter(|e| caller.owns(e.service.as_deref()))
        .ok_or_else(|| not_found("no webhook with that id"))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "wh_…")), responses((status = 200, description = "The endpoint", body = crate::openapi::Webhook), (status = 404, description = "No such webhook (or another service's)", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
async fn get(
    caller: Caller,
    id: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(shown(&find(&caller, Scope::Read, &state, &id).await?)))
}

#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "wh_…")), request_body = EndpointRequest, responses((status = 200, description = "Updated", body = crate::openapi::Webhook), (status = 404, description = "No such webhook (or another service's)", body = crate::openapi::ErrorBody), (status = 400, description = "Malformed JSON", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 422, description = "A field breaks a rule; `field` names it", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
async fn update(
    caller: Caller,
    id: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let mut endpoint = find(&caller, Scope::Send, &state, &id).await?;
    let request = parse(&req, payload, &state).await?;
    apply(request, &mut endpoint, &state).await?;
    endpoint.updated_at = mdc_core::now();
    // A change may widen what the endpoint wants (or enable it again).
    let (webhooks, stored) = (state.webhooks.clone(), endpoint.clone());
    let updated = to_the_end(state.feedback.changing(), async move {
        webhooks.update(&stored).await
    })
    .await?
    .map_err(unavailable)?;
    if !updated {
        return Err(not_found("no webhook with that id"));
    }
    Ok(HttpResponse::Ok().json(shown(&endpoint)))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "wh_…")), responses((status = 204, description = "Deleted"), (status = 404, description = "No such webhook (or another service's)", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
async fn delete(
    caller: Caller,
    id: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    find(&caller, Scope::Send, &state, &id).await?;
    if !state.webhooks.delete(&id).await.map_err(unavailable)? {
        return Err(not_found("no webhook with that id"));
    }
    state.feedback.invalidate();
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = String, Path, description = "wh_…")), responses((status = 200, description = "A new secret (shown once); the old one signs for 24 h more", body = crate::openapi::Webhook), (status = 404, description = "No such webhook (or another service's)", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
async fn rotate_secret(
    caller: Caller,
    id: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let mut endpoint = find(&caller, Scope::Send, &state, &id).await?;
    let now = mdc_core::now();
    let secret = sign::new_secret();
    // The old secret signs beside the new one for a day; older ones stop.
    endpoint
        .secrets
        .retain(|s| s.expires_at.is_none_or(|at| at > now));
    for old in &mut endpoint.secrets {
        old.expires_at = Some(
            old.expires_at
                .unwrap_or(now + ROTATION_OVERLAP)
                .min(now + ROTATION_OVERLAP),
        );
    }
    endpoint.secrets.insert(
        0,
        WebhookSecret {
            secret: secret.clone(),
            expires_at: None,
        },
    );
    endpoint.updated_at = now;
    state
        .webhooks
        .update(&endpoint)
        .await
        .map_err(unavailable)?;
    state.feedback.invalidate();
    let mut body = shown(&endpoint);
    body["secret"] = json!(secret);
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Debug, Deserialize)]
struct AttemptsQuery {
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/attempts", tag = "webhooks", params(("id" = String, Path, description = "wh_…"), ("limit" = Option<u32>, Query)), responses((status = 200, description = "The latest attempts", body = crate::openapi::Attempts), (status = 404, description = "No such webhook (or another service's)", body = crate::openapi::ErrorBody), (status = 400, description = "A malformed query", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
async fn attempts(
    caller: Caller,
    id: web::Path<String>,
    query: web::Query<AttemptsQuery>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let endpoint = find(&caller, Scope::Read, &state, &id).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let attempts = state
        .webhooks
        .attempts(&endpoint.id, None, limit)
        .await
        .map_err(unavailable)?;
    let shown: Vec<Value> = attempts
        .into_iter()
        .map(|a| {
            json!({
                "event_id": a.event_id, "attempt": a.attempt, "at": a.at, "status": a.status,
                "latency_ms": a.latency_ms, "error": a.error, "response": a.response,
                "succeeded": a.succeeded,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "attempts": shown })))
}

#[derive(Debug, Deserialize)]
struct RecoverQuery {
    since: Option<String>,
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/recover", tag = "webhooks", params(("id" = String, Path, description = "wh_…"), ("since" = String, Query, description = "RFC 3339")), responses((status = 202, description = "Failed deliveries since then are sent again", body = crate::openapi::Recovering), (status = 404, description = "No such webhook (or another service's)", body = crate::openapi::ErrorBody), (status = 409, description = "The endpoint is disabled", body = crate::openapi::ErrorBody), (status = 422, description = "A field breaks a rule; `field` names it", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
async fn recover(
    caller: Caller,
    id: web::Path<String>,
    query: web::Query<RecoverQuery>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let endpoint = find(&caller, Scope::Send, &state, &id).await?;
    let Some(since) = query.since.as_deref() else {
        return Err(unprocessable(
            "since",
            "required",
            "since is required (RFC 3339)",
        ));
    };
    let since = chrono::DateTime::parse_from_rfc3339(since)
        .map_err(|e| unprocessable("since", "timestamp", format!("not an RFC 3339 time: {e}")))?
        .with_timezone(&chrono::Utc);
    if endpoint.disabled.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the endpoint is disabled; enable it first (PATCH {\"enabled\": true})",
        )
        .rule("disabled"));
    }
    let queued = state
        .feedback
        .recover(&endpoint, since)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Accepted().json(json!({ "recovering": queued })))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::to_the_end;

    /// Sets its flag when dropped.
    struct Guard(Arc<AtomicBool>);

    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A request dropped while its write is under way (a client that hung
    /// up) leaves the guard held until the write ends, and no longer.
    #[tokio::test]
    async fn a_dropped_request_holds_its_guard_until_its_write_ends() {
        let ended = Arc::new(AtomicBool::new(false));
        let (began, has_begun) = tokio::sync::oneshot::channel::<()>();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let request = to_the_end(Guard(ended.clone()), async move {
            let _ = began.send(());
            let _ = finished.await;
        });
        tokio::select! {
            _ = request => panic!("the write cannot have ended"),
            _ = has_begun => {}
        }
        // The request is dropped; its write goes on.
        tokio::task::yield_now().await;
        assert!(!ended.load(Ordering::SeqCst), "the guard is held");
        finish.send(()).expect("the write is waiting");
        for _ in 0..100 {
            if ended.load(Ordering::SeqCst) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            ended.load(Ordering::SeqCst),
            "the guard ends with the write"
        );
    }
}
