//! `POST /v1/parked-reports/redrive?limit=N` (scope `admin`): vendor
//! reports the response handler parked (they could not be applied) are
//! sent back to be applied again, oldest first, once what kept them from
//! applying is fixed. Answers how many it moved (up to `limit`, 1,000 by
//! default, 100,000 at most, and never more than were parked when it
//! began).

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use mdc_core::ports::Scope;
use serde_json::json;

use crate::api::{only_known, parse_param, unavailable, unprocessable, ApiError, State};
use crate::auth::Caller;

const DEFAULT_LIMIT: usize = 1_000;
const MAX_LIMIT: usize = 100_000;

/// One redrive at a time in a process: two would read the parked topic as
/// one consumer (across processes, run one at a time: see docs/api.md).
static REDRIVING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/parked-reports/redrive", web::post().to(redrive));
}

#[utoipa::path(post, path = "/v1/parked-reports/redrive", tag = "operations", params(("limit" = Option<usize>, Query, description = "The most reports to move (1 to 100000; 1000 by default)")), responses((status = 200, description = "How many parked reports were sent back to be applied again", body = crate::openapi::Redriven), (status = 422, description = "A field breaks a rule; `field` names it", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "The queue failed; the message says how many were sent back first, the rest stay parked: retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn redrive(
    caller: Caller,
    query: web::Query<HashMap<String, String>>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Admin)?;
    only_known(&query, &["limit"])?;
    let limit = parse_param::<usize>(&query, "limit", "a whole number")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(unprocessable(
            "limit",
            "range",
            format!("must be from 1 to {MAX_LIMIT}"),
        ));
    }
    // On a task of its own, so a client that hangs up leaves the consumer
    // closed and the next redrive waiting until this one ends.
    let queue = state.queue.clone();
    let redriving = tokio::spawn(async move {
        let _one = REDRIVING.lock().await;
        mdc_handlers::parked::redrive(queue.as_ref(), limit, mdc_handlers::parked::PATIENCE).await
    });
    let moved = match redriving.await {
        Ok(Ok(moved)) => moved,
        Ok(Err(unfinished)) => {
            tracing::warn!(reports = unfinished.moved, error = %unfinished.error, "A redrive of parked reports stopped on a queue error");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the queue failed after {} parked reports were sent back; retry to send the rest",
                    unfinished.moved
                ),
            ));
        }
        Err(e) => return Err(unavailable(e)),
    };
    tracing::info!(reports = moved, by = ?caller.key_id, "Parked reports redriven");
    Ok(HttpResponse::Ok().json(json!({ "redriven": moved })))
}
