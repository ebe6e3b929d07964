//! `GET /v1/simulator/sends`: what the simulated vendors accepted, per
//! message, a page at a time. A busy run's ledger holds hundreds of
//! thousands of entries; one answer with all of them would hold them all
//! in memory at once.

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use mdc_core::ports::Scope;
use mdc_core::MessageId;
use serde_json::{json, Map, Value};

use crate::api::{only_known, parse_param, unavailable, unprocessable, ApiError, State};
use crate::auth::Caller;

/// Entries one page holds unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 1000;
/// Most entries one page holds.
const MAX_PAGE: usize = 10_000;

/// Entries by message id, in id order (`accepted` above 1 would be a
/// duplicate send), and `next_cursor` while there may be more.
#[utoipa::path(get, path = "/v1/simulator/sends", tag = "operations", params(("limit" = Option<u32>, Query, description = "1-10000, default 1000"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), responses((status = 200, description = "One page of the simulated vendors' ledger: `sends` by message id, `next_cursor`", body = Object), (status = 404, description = "No route uses a simulator", body = crate::openapi::ErrorBody), (status = 422, description = "A field breaks a rule; `field` names it", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn simulator_sends(
    caller: Caller,
    query: web::Query<HashMap<String, String>>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Admin)?;
    only_known(&query, &["limit", "cursor"])?;
    let limit = parse_param::<usize>(&query, "limit", "a number")?.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(unprocessable(
            "limit",
            "range",
            format!("1 to {MAX_PAGE}; page on with next_cursor"),
        ));
    }
    let cursor =
        match query.get("cursor") {
            Some(cursor) => Some(cursor.parse::<MessageId>().map_err(|_| {
                unprocessable("cursor", "cursor", "not a cursor this list handed out")
            })?),
            None => None,
        };
    let Some(ledger) = &state.ledger else {
        return Ok(HttpResponse::NotFound().json(json!({
            "error": { "message": "no simulator is in use: no route sends through one" }
        })));
    };
    let page = ledger.page(cursor.as_ref(), limit).map_err(unavailable)?;
    // A full page may have more after it.
    let next = (page.len() == limit)
        .then(|| page.last().map(|(id, _)| id.clone()))
        .flatten();
    let mut sends = Map::new();
    for (id, entry) in page {
        sends.insert(id, serde_json::to_value(entry).map_err(unavailable)?);
    }
    Ok(HttpResponse::Ok().json(json!({ "sends": Value::Object(sends), "next_cursor": next })))
}
