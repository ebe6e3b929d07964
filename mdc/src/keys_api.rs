//! `/v1/keys` (scope `admin`): API keys of the internal services.
//!
//! - `POST /v1/keys` `{"service", "scopes": ["send", ...], "description"}` →
//!   201 with the key and its `secret` (shown this once).
//! - `GET /v1/keys`: every key, revoked ones too; never a secret.
//! - `DELETE /v1/keys/{id}`: revokes the key at once (204; 404 when unknown
//!   or already revoked).

use actix_web::{web, HttpRequest, HttpResponse};
use mdc_core::ports::{ApiKey, Scope};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{not_found, read_json, unavailable, unprocessable, ApiError, State};
use crate::auth::{self, Caller};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/keys", web::post().to(create))
        .route("/v1/keys", web::get().to(list))
        .route("/v1/keys/{id}", web::delete().to(revoke));
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    service: Option<String>,
    scopes: Option<Vec<String>>,
    description: Option<String>,
}

/// The key as the API shows it: its hash never.
pub fn shown(key: &ApiKey) -> Value {
    json!({
        "id": key.id,
        "service": key.service,
        "scopes": key.scopes,
        "description": key.description,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    })
}

#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = KeyRequest, responses((status = 201, description = "Created, with the key (shown once)", body = crate::openapi::Key), (status = 400, description = "Malformed JSON", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 422, description = "A field breaks a rule; `field` names it", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
async fn create(
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Admin)?;
    let request: KeyRequest = read_json(&req, payload, state.max_body_bytes).await?;
    let Some(service) = request.service.filter(|s| !s.is_empty()) else {
        return Err(unprocessable("service", "required", "service is required"));
    };
    auth::check_service(&service).map_err(|e| unprocessable("service", "service_name", e))?;
    let scopes = auth::parse_scopes(&request.scopes.unwrap_or_default().join(","))
        .map_err(|e| unprocessable("scopes", "one_of", e))?;
    let (key, secret) = auth::issue(&service, scopes, &request.description.unwrap_or_default())
        .map_err(|e| unprocessable("description", "length", e))?;
    state.auth.keys().create(&key).await.map_err(unavailable)?;
    state.auth.key_created();
    tracing::info!(key_id = %key.id, service = %key.service, scopes = ?key.scopes, by = ?caller.key_id, "API key created");
    let mut body = shown(&key);
    body["secret"] = json!(secret);
    Ok(HttpResponse::Created().json(body))
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys", responses((status = 200, description = "Every key, never a secret", body = crate::openapi::Keys), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
async fn list(caller: Caller, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Admin)?;
    let keys = state.auth.keys().list().await.map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(json!({ "keys": keys.iter().map(shown).collect::<Vec<_>>() })))
}

#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path, description = "key_…")), responses((status = 204, description = "Revoked at once"), (status = 404, description = "No active key with that id", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
async fn revoke(
    caller: Caller,
    id: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Admin)?;
    let revoked = state
        .auth
        .keys()
        .revoke(&id, mdc_core::now())
        .await
        .map_err(unavailable)?;
    state.auth.forget(&id);
    if !revoked {
        return Err(not_found("no active key with that id").field("id"));
    }
    tracing::info!(key_id = %id, by = ?caller.key_id, "API key revoked");
    Ok(HttpResponse::NoContent().finish())
}
