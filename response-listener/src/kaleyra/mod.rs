//! Kaleyra delivery reports: `GET` (query) or `POST` (JSON or form) to
//! `/v1/callbacks/kaleyra/{provider}?token=…`.
//!
//! A wrong or missing token gets 401 without saying why. A report that moves
//! nothing (an intermediate `SENT`, an unknown status) answers 200 and is
//! logged, as do duplicates and reports for unknown messages (the response
//! handler drops those): vendors must not retry forever. A malformed report
//! gets 400; 503 when the report cannot be queued, so the vendor retries.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use mdc_core::ports::ReportSink;
use mdc_core::{DeliveryReport, ReportOutcome};

use self::callback::{CallbackReport, Verdict};
use crate::{Intake, IntakeCounts};

pub mod callback;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

/// The callbacks of every Kaleyra provider, each with its own token.
pub struct KaleyraIntake {
    /// Callback token per Kaleyra provider name.
    tokens: HashMap<String, SecretString>,
    sink: Arc<dyn ReportSink>,
    counts: IntakeCounts,
}

impl KaleyraIntake {
    pub fn new(tokens: HashMap<String, SecretString>, sink: Arc<dyn ReportSink>) -> Self {
        Self {
            tokens,
            sink,
            counts: IntakeCounts::default(),
        }
    }
}

impl Intake for KaleyraIntake {
    fn name(&self) -> &str {
        "kaleyra"
    }

    fn routes(self: Arc<Self>, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::from(self)).service(
            web::resource("/v1/callbacks/kaleyra/{provider}")
                .route(web::get().to(report))
                .route(web::post().to(report)),
        );
    }

    fn counts(&self) -> &IntakeCounts {
        &self.counts
    }
}

/// Mounts `intake`'s endpoints (for `App::configure`).
pub fn routes(intake: Arc<KaleyraIntake>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| intake.routes(cfg)
}

fn answer(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "status": message }))
}

fn token_matches(intake: &KaleyraIntake, provider: &str, given: Option<&str>) -> bool {
    let (Some(expected), Some(given)) = (intake.tokens.get(provider), given) else {
        return false;
    };
    bool::from(expected.expose_secret().as_bytes().ct_eq(given.as_bytes()))
}

/// Why a callback could not be read; the vendor gets it with a 400.
#[derive(Debug, thiserror::Error)]
enum Malformed {
    #[error("malformed JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("not a delivery report: {0}")]
    NotAReport(#[source] serde_json::Error),
}

fn parse(
    req: &HttpRequest,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<(CallbackReport, Value), Malformed> {
    let raw: Value = if req.method() == actix_web::http::Method::GET || body.is_empty() {
        let mut fields: serde_json::Map<String, Value> = query
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        fields.remove("token");
        Value::Object(fields)
    } else if req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
    {
        serde_json::from_slice(body).map_err(Malformed::Json)?
    } else {
        Value::Object(
            url::form_urlencoded::parse(body)
                .into_owned()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    };
    let report: CallbackReport =
        serde_json::from_value(raw.clone()).map_err(Malformed::NotAReport)?;
    Ok((report, raw))
}

async fn report(
    req: HttpRequest,
    provider: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
    body: web::Bytes,
    intake: web::Data<KaleyraIntake>,
) -> HttpResponse {
    if !token_matches(&intake, &provider, query.get("token").map(String::as_str)) {
        intake.counts.refused();
        tracing::warn!(%provider, "Rejected a Kaleyra callback with a wrong or missing token");
        return answer(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let (report, raw) = match parse(&req, &query, &body) {
        Ok(parsed) => parsed,
        Err(e) => {
            intake.counts.refused();
            tracing::warn!(%provider, error = %e, "Malformed Kaleyra callback");
            return answer(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let outcome = match report.verdict() {
        Some(Verdict::Delivered) => ReportOutcome::Delivered,
        Some(Verdict::Failed) => ReportOutcome::Failed {
            suppress: false,
            reason: report
                .error
                .clone()
                .unwrap_or_else(|| format!("Kaleyra status {}", report.status)),
        },
        Some(Verdict::Pending) | None => {
            intake.counts.ignored();
            tracing::info!(%provider, provider_message_id = %report.message_id, status = %report.status, "Kaleyra report with no final outcome; acknowledged");
            return answer(StatusCode::OK, "ignored");
        }
    };
    let delivery = DeliveryReport {
        vendor_at: None,
        provider: provider.clone(),
        provider_message_id: report.message_id.clone(),
        reference: report.reference.as_deref().and_then(|r| r.parse().ok()),
        outcome,
        at: mdc_core::now(),
        raw,
        note: None,
    };
    match intake.sink.submit(delivery).await {
        Ok(()) => {
            intake.counts.accepted();
            answer(StatusCode::OK, "accepted")
        }
        Err(e) => {
            tracing::warn!(%provider, error = %e, "Could not queue a Kaleyra report; the vendor will retry");
            answer(StatusCode::SERVICE_UNAVAILABLE, "try again later")
        }
    }
}
