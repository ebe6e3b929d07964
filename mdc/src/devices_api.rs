//! `/v1/devices`: the push device registry, each device its service's.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use mdc_core::message::PushTarget;
use mdc_core::ports::{Device, Platform, ProviderError, Scope};

use crate::api::{not_found, read_json, unavailable, unprocessable, ApiError, State};
use crate::auth::Caller;

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DeviceRequest {
    user_id: Option<String>,
    platform: Option<String>,
    token: Option<String>,
}

/// Registers a device (idempotent per token): creates its platform endpoint
/// when a push provider serves the platform. 201 when new, 200 when known.
#[utoipa::path(post, path = "/v1/devices", tag = "devices", request_body = DeviceRequest, responses((status = 201, description = "Registered", body = crate::openapi::Device), (status = 200, description = "Known token, updated", body = crate::openapi::Device), (status = 400, description = "Malformed JSON", body = crate::openapi::ErrorBody), (status = 409, description = "Another service registered the token", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 422, description = "A field breaks a rule; `field` names it", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn register_device(
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Send)?;
    let request: DeviceRequest = read_json(&req, payload, state.max_body_bytes).await?;
    let required = |field: &str, value: &Option<String>| {
        value
            .clone()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| unprocessable(field, "required", format!("{field} is required")))
    };
    let user_id = required("user_id", &request.user_id)?;
    let user = match mdc_client::validate::push_target("user_id", &format!("user:{user_id}")) {
        Ok(PushTarget::UserId(user)) => user,
        Ok(PushTarget::DeviceToken(_)) => {
            return Err(unprocessable("user_id", "push_user_id", "not a user id"))
        }
        Err(e) => return Err(unprocessable(&e.field, e.rule, e.message)),
    };
    let platform: Platform = required("platform", &request.platform)?
        .parse()
        .map_err(|e: String| unprocessable("platform", "one_of", e))?;
    let token =
        match mdc_client::validate::push_target("token", &required("token", &request.token)?) {
            Ok(PushTarget::DeviceToken(token)) => token,
            Ok(PushTarget::UserId(_)) => {
                return Err(unprocessable(
                    "token",
                    "push_token",
                    "a device token, not a user id",
                ))
            }
            Err(e) => return Err(unprocessable(&e.field, e.rule, e.message)),
        };
    let registered_elsewhere = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "this token is registered by another service",
        )
        .field("token")
        .rule("registered_elsewhere")
    };
    let mut device = Device::new(&user, platform, &token);
    device.service = caller.service.clone();
    // Checked here before a vendor endpoint is made for the token, and again
    // by the registry's write, which leaves another service's device alone.
    if let Some(known) = state.devices.by_token(&token).await.map_err(unavailable)? {
        if !caller.owns(known.service.as_deref()) {
            return Err(registered_elsewhere());
        }
        // An admin updates the device for the service that owns it.
        device.service = known.service;
    }
    if let Some(provider) = state.push_endpoints.iter().find(|p| p.serves(platform)) {
        device.endpoint = Some(
            provider
                .endpoint(platform, &token)
                .await
                .map_err(|e| match e {
                    ProviderError::Permanent { message, .. } => {
                        unprocessable("token", "push_endpoint", message)
                    }
                    other => unavailable(other),
                })?,
        );
    }
    let (mut stored, mut new) = state.devices.register(&device).await.map_err(unavailable)?;
    if stored.service != device.service && caller.is_admin() {
        // Registered by a service meanwhile: an admin updates it for that one.
        device.service = stored.service.clone();
        (stored, new) = state.devices.register(&device).await.map_err(unavailable)?;
    }
    if stored.service != device.service {
        return Err(registered_elsewhere());
    }
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(stored))
}

#[utoipa::path(get, path = "/v1/devices/{id}", tag = "devices", params(("id" = String, Path, description = "dev_…")), responses((status = 200, description = "The device", body = crate::openapi::Device), (status = 404, description = "No such device (or another service's)", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn get_device(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    match state.devices.get(&path).await.map_err(unavailable)? {
        Some(device) if caller.owns(device.service.as_deref()) => {
            Ok(HttpResponse::Ok().json(device))
        }
        _ => Err(not_found("no such device").field("id")),
    }
}

#[utoipa::path(delete, path = "/v1/devices/{id}", tag = "devices", params(("id" = String, Path, description = "dev_…")), responses((status = 204, description = "Deleted"), (status = 404, description = "No such device (or another service's)", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
pub(crate) async fn remove_device(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Send)?;
    let owned = state
        .devices
        .get(&path)
        .await
        .map_err(unavailable)?
        .is_some_and(|d| caller.owns(d.service.as_deref()));
    if owned && state.devices.remove(&path).await.map_err(unavailable)? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(not_found("no such device").field("id"))
    }
}
