//! The HTTP server: its routes and state, the probes and metrics, and what
//! every endpoint shares (errors, reading bodies and query parameters).
//! Messages are submitted in `submit_api` and read in `messages_api`.
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
use futures::StreamExt;

use crate::accept::Submitter;
use mdc_core::ports::{DeviceRegistry, Queue, Store};
use mdc_core::{Channel, MessageId};
use mdc_providers::sns::SnsPushProvider;
use mdc_simulators::Ledger;
use serde_json::{json, Value};

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
                        .route("/v1/messages", web::get().to(crate::messages_api::list))
                        .route(
                            "/v1/messages/export.csv",
                            web::get().to(crate::reports_api::export_csv),
                        )
                        .route("/v1/messages/{id}", web::get().to(crate::messages_api::get))
                        .route(
                            "/v1/messages/{id}/cancel",
                            web::post().to(crate::messages_api::cancel),
                        )
                        .route("/v1/stats", web::get().to(crate::messages_api::stats))
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
