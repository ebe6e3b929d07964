//! The HTTP API: submit messages, read their status and trail, list them.
//!
//! Every error is JSON, `{"error": {"field": …, "rule": …, "message": …}}`:
//! 400 for malformed JSON, 413 for an oversized body, 422 for a request that
//! parses but breaks a rule, 404 for an unknown message, 503 when the queue or
//! store cannot take the message (nothing was queued; retry with the same
//! idempotency key).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use futures::StreamExt;

use crate::accept::Submitter;
use mdc_core::ports::{
    DeviceRegistry, ListFilter, Queue, Scope, SortOrder, Store, Transition, Updated,
};
use mdc_core::{Channel, MessageId, MessageRecord, Status};
use mdc_providers::sns::SnsPushProvider;
use mdc_simulators::Ledger;
use serde_json::{json, Value};

use crate::auth::Caller;

#[derive(Clone)]
pub struct State {
    pub submitter: Submitter,
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    /// The simulators' ledger, when simulators are in use.
    pub ledger: Option<Arc<Ledger>>,
    /// Vendor callbacks (the response listener's endpoints).
    pub intakes: Vec<Arc<dyn mdc_response_listener::Intake>>,
    pub devices: Arc<dyn DeviceRegistry>,
    /// Push providers that register device endpoints at registration.
    pub push_endpoints: Vec<Arc<SnsPushProvider>>,
    pub max_body_bytes: usize,
    /// Restarts of this process's workers.
    pub health: Arc<mdc_core::supervise::TaskHealth>,
    pub suppressions: Arc<dyn mdc_core::ports::SuppressionList>,
    pub webhooks: Arc<dyn mdc_core::ports::Webhooks>,
    /// Webhook delivery: its settings, and `recover`.
    pub feedback: Arc<mdc_handlers::Feedback>,
    /// API keys and per-service rates.
    pub auth: Arc<crate::auth::Auth>,
    pub retry: Arc<dyn mdc_core::ports::RetryScheduler>,
    pub cache: Arc<dyn mdc_core::ports::MessageCache>,
    /// The routes this process sends through (none without the dispatcher
    /// role), for their breaker state and rate on `/metrics`.
    pub routes: HashMap<Channel, Arc<mdc_dispatcher::routing::Router>>,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// `ok` while every worker runs; `restarts` counts workers that panicked
/// and were started again (alert on it growing), `last_restart` names the
/// latest; `parked_reports` counts vendor reports parked on
/// `responses.parked`, `mismatched_reports` those that named a message not
/// sent through their provider (ignored). A worker that stopped for good ends the process
/// instead.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, description = "Serving", body = crate::openapi::Health)))]
async fn healthz(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "restarts": state.health.restarts(),
        "last_restart": state.health.last(),
        "parked_reports": state.health.parked_reports(),
        "mismatched_reports": state.health.mismatched_reports(),
        "intakes": state
            .intakes
            .iter()
            .map(|intake| (intake.name().to_owned(), intake.counts().snapshot()))
            .collect::<serde_json::Map<String, Value>>(),
    }))
}

/// `/readyz`: 200 when every configured backend (store, queue, retry
/// timers, cache) answers and every
/// supervised task runs; 503 naming what does not.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses((status = 200, description = "Every backend answers", body = crate::openapi::Readiness), (status = 503, description = "Something is not ready", body = crate::openapi::Readiness)))]
async fn readyz(state: web::Data<State>) -> HttpResponse {
    let within = std::time::Duration::from_secs(2);
    let timed = |what: &'static str,
                 result: Result<Result<(), String>, tokio::time::error::Elapsed>| {
        match result {
            Ok(Ok(())) => (what, None),
            Ok(Err(e)) => {
                tracing::warn!(check = what, error = %e, "Not ready");
                (what, Some("not answering".to_owned()))
            }
            Err(_) => {
                tracing::warn!(check = what, "Not ready: no answer within 2 s");
                (what, Some("no answer within 2 s".to_owned()))
            }
        }
    };
    let store = tokio::time::timeout(within, async {
        state
            .store
            .get(&MessageId::generate())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let queue = tokio::time::timeout(within, async {
        state.queue.ready().await.map_err(|e| e.to_string())
    });
    let retry = tokio::time::timeout(within, async {
        state.retry.ready().await.map_err(|e| e.to_string())
    });
    let cache = tokio::time::timeout(within, async {
        state.cache.ready().await.map_err(|e| e.to_string())
    });
    let (store, queue, retry, cache) = futures::join!(store, queue, retry, cache);
    let mut checks = serde_json::Map::new();
    let mut failing = Vec::new();
    for (what, problem) in [
        timed("store", store),
        timed("queue", queue),
        timed("retry", retry),
        timed("cache", cache),
    ] {
        checks.insert(what.to_owned(), json!(problem.as_deref().unwrap_or("ok")));
        if problem.is_some() {
            failing.push(what.to_owned());
        }
    }
    for task in state.health.down() {
        checks.insert(format!("task {task}"), json!("restarting after a panic"));
        failing.push(format!("task {task}"));
    }
    if failing.is_empty() {
        HttpResponse::Ok().json(json!({ "status": "ready", "checks": checks }))
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((actix_web::http::header::RETRY_AFTER, "1"))
            .json(json!({ "status": "not ready", "failing": failing, "checks": checks }))
    }
}

/// `/metrics` in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String), (status = 404, description = "Metrics are not recorded in this process", body = crate::openapi::ErrorBody)))]
async fn metrics(state: web::Data<State>) -> HttpResponse {
    let Some(handle) = &state.metrics else {
        return HttpResponse::NotFound().json(json!({
            "error": { "message": "metrics are not recorded in this process" }
        }));
    };
    for router in state.routes.values() {
        for member in router.members() {
            let provider = member.provider.name().to_owned();
            if let Some(breaker) = &member.breaker {
                use mdc_dispatcher::routing::breaker::State as Breaker;
                let open = match breaker.state() {
                    Breaker::Closed => 0.0,
                    Breaker::HalfOpen => 0.5,
                    Breaker::Open { .. } => 1.0,
                };
                metrics::gauge!("mdc_breaker_open", "provider" => provider.clone()).set(open);
            }
            if let Some(limiter) = &member.limiter {
                metrics::gauge!("mdc_provider_rate_per_second", "provider" => provider)
                    .set(limiter.rate());
            }
        }
    }
    // Lane lag: records each lane's consumers have not finished.
    for topic in mdc_core::ports::Topic::all() {
        if !matches!(
            topic,
            mdc_core::ports::Topic::Messages(..) | mdc_core::ports::Topic::Responses
        ) {
            continue;
        }
        match state.queue.lag(topic).await {
            Ok(Some(lag)) => {
                metrics::gauge!("mdc_lane_lag", "topic" => topic.to_string()).set(lag as f64)
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(%topic, error = %e, "Lane lag unknown"),
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}

/// The endpoints of `roles`: ingest serves the message, stats and device
/// API (and the simulators' ledger), listener the vendor callbacks; every
/// process answers `/healthz`.
pub fn server(state: State, listen: SocketAddr, roles: crate::Roles) -> std::io::Result<Server> {
    let simulated = state.ledger.is_some();
    let state = web::Data::new(state);
    Ok(HttpServer::new(move || {
        // Called on each HTTP worker's thread as it starts.
        crate::idle::release_periodically();
        let intakes = state.intakes.clone();
        App::new()
            .configure(|cfg| {
                if roles.listener {
                    for intake in intakes {
                        intake.routes(cfg);
                    }
                }
            })
            .app_data(state.clone())
            .configure(|cfg| {
                // The simulators' surface exists only while a route uses one.
                if roles.ingest && simulated {
                    cfg.route(
                        "/v1/simulator/sends",
                        web::get().to(crate::simulator_api::simulator_sends),
                    );
                }
            })
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
            .route("/openapi.json", web::get().to(crate::openapi::openapi_json))
            .configure(|cfg| {
                if roles.ingest {
                    cfg.route("/v1/messages", web::post().to(crate::submit_api::submit))
                        .route(
                            "/v1/messages/batch",
                            web::post().to(crate::submit_api::submit_batch),
                        )
                        .route("/v1/messages", web::get().to(list))
                        .route(
                            "/v1/messages/export.csv",
                            web::get().to(crate::reports_api::export_csv),
                        )
                        .route("/v1/messages/{id}", web::get().to(get))
                        .route("/v1/messages/{id}/cancel", web::post().to(cancel))
                        .route("/v1/stats", web::get().to(stats))
                        .route(
                            "/v1/devices",
                            web::post().to(crate::devices_api::register_device),
                        )
                        .route(
                            "/v1/devices/{id}",
                            web::get().to(crate::devices_api::get_device),
                        )
                        .route(
                            "/v1/devices/{id}",
                            web::delete().to(crate::devices_api::remove_device),
                        )
                        .route(
                            "/v1/suppressions",
                            web::get().to(crate::suppressions_api::list_suppressions),
                        )
                        .route(
                            "/v1/suppressions",
                            web::post().to(crate::suppressions_api::add_suppression),
                        )
                        .route(
                            "/v1/suppressions/{channel}/{recipient}",
                            web::delete().to(crate::suppressions_api::remove_suppression),
                        )
                        .configure(crate::webhooks_api::routes)
                        .configure(crate::keys_api::routes)
                        .configure(crate::parked_api::routes)
                        .configure(crate::reports_api::routes);
                }
            })
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(not_found("no such endpoint"))
            }))
    })
    .disable_signals()
    .shutdown_timeout(10)
    .bind(listen)?
    .run())
}

/// An error answer: `{"error": {"field", "rule", "message"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    field: Option<String>,
    rule: Option<std::borrow::Cow<'static, str>>,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            field: None,
            rule: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Seconds for the `Retry-After` header.
    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub(crate) fn field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }

    pub(crate) fn rule(mut self, rule: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.rule = Some(rule.into());
        self
    }
}

impl ApiError {
    /// The answer's status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The seconds of its `Retry-After`, when it has one.
    pub(crate) fn retry_after_seconds(&self) -> Option<u64> {
        self.retry_after
    }

    /// What goes under `"error"`: `message`, and `field` and `rule` when
    /// known.
    pub(crate) fn body(&self) -> Value {
        let mut body = json!({ "message": self.message });
        if let Some(field) = &self.field {
            body["field"] = json!(field);
        }
        if let Some(rule) = &self.rule {
            body["rule"] = json!(rule);
        }
        body
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl actix_web::ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        let retry_after = self
            .retry_after
            .or((self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(1));
        if let Some(seconds) = retry_after {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(json!({ "error": self.body() }))
    }
}

/// A 503 that says what to do, not the backend's own words (hosts, ports,
/// driver internals), which go to the log.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "A backend is unavailable; answering 503");
    unavailable_quietly()
}

/// [`unavailable`] for a caller that logs the backend's words itself.
pub(crate) fn unavailable_quietly() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily unavailable: nothing was changed; retry shortly (with the same idempotency key)",
    )
}

pub(crate) fn not_found(message: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, message)
}

pub(crate) fn unprocessable(
    field: &str,
    rule: impl Into<std::borrow::Cow<'static, str>>,
    message: impl Into<String>,
) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
        .field(field)
        .rule(rule)
}

/// Reads the body up to the limit.
pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("could not read the body: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads the body and parses it as `T`: 400 for malformed JSON (or a
/// field of the wrong type), 413 over the limit.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<T, ApiError> {
    let body = read_body(req, payload, limit).await?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")).rule("json")
    })
}

/// 422 naming the first query parameter that is not in `known`.
pub(crate) fn only_known(query: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match query.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(unprocessable(
            unknown,
            "query",
            format!("unknown parameter; use {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

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
async fn get(
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

pub(crate) fn parse_param<T: std::str::FromStr>(
    query: &HashMap<String, String>,
    key: &str,
    what: &str,
) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    match query.get(key) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e| unprocessable(key, "query", format!("must be {what}: {e}"))),
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
async fn list(
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
async fn cancel(
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
async fn stats(caller: Caller, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Admin)?;
    let counts = state.store.count_by_status().await.map_err(unavailable)?;
    let total: u64 = counts.values().sum();
    Ok(HttpResponse::Ok().json(json!({ "statuses": counts, "total": total })))
}
