//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers'
//! annotations and served at `/openapi.json`. The shapes below describe
//! answers built as JSON in the handlers.

use std::collections::HashMap;

use actix_web::HttpResponse;
use serde_json::{Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error answer.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    /// The request field at fault.
    pub field: Option<String>,
    /// The rule it broke (`phone_invalid`, `scope`, `reused`, …).
    pub rule: Option<String>,
}

/// A message to send (`POST /v1/messages`); which fields apply depends on
/// the channel (see docs/api.md).
#[derive(ToSchema)]
pub struct SubmitBody {
    /// `sms`, `email` or `push`.
    pub channel: String,
    pub to: String,
    pub body: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub html: Option<String>,
    pub title: Option<String>,
    pub data: Option<Map<String, Value>>,
    /// `critical`, `normal` or `bulk`.
    pub priority: Option<String>,
    /// `otp`, `transactional` or `marketing`.
    #[schema(rename = "type")]
    pub message_type: Option<String>,
    pub idempotency_key: Option<String>,
    pub template_id: Option<String>,
    pub attachments: Option<Vec<Attachment>>,
    pub reference: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

#[derive(ToSchema)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub content_base64: String,
}

#[derive(ToSchema)]
pub struct Warning {
    pub field: String,
    pub message: String,
}

/// The answer to a submit.
#[derive(ToSchema)]
pub struct Submitted {
    pub id: String,
    pub status: String,
    pub warnings: Vec<Warning>,
    /// True when the idempotency key matched an earlier submission.
    pub duplicate: Option<bool>,
}

/// Messages to send at once (`POST /v1/messages/batch`).
#[derive(ToSchema)]
pub struct BatchBody {
    /// 1 to 500 messages, each as `POST /v1/messages` takes it.
    #[schema(min_items = 1, max_items = 500)]
    pub messages: Vec<SubmitBody>,
}

/// The answer to a batch: one result per message, in the request's order.
#[derive(ToSchema)]
pub struct BatchAnswer {
    pub results: Vec<BatchResult>,
}

/// What became of one message of a batch.
#[derive(ToSchema)]
pub struct BatchResult {
    /// The status a single submit of this message would have answered:
    /// 202, or 409, 422, 429 or 503.
    pub status: u16,
    /// With 202.
    pub accepted: Option<Submitted>,
    /// With any other status.
    pub error: Option<ErrorDetail>,
    /// With 429: seconds to wait before sending this message again.
    pub retry_after: Option<u64>,
}

/// A message as support sees it.
#[derive(ToSchema)]
pub struct MessageView {
    pub id: String,
    pub status: String,
    pub channel: String,
    pub priority: String,
    #[schema(rename = "type")]
    pub message_type: String,
    /// Masked without `read:pii`.
    pub to: String,
    pub sender: Option<String>,
    pub service: Option<String>,
    pub idempotency_key: String,
    pub reference: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub created_at: String,
    pub updated_at: String,
    pub deadline: String,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    /// The channel's content; bodies hidden without `read:pii`.
    pub content: Value,
    /// The trail, oldest first (`GET /v1/messages/{id}` only).
    pub events: Option<Vec<Value>>,
}

#[derive(ToSchema)]
pub struct MessagePage {
    pub messages: Vec<MessageView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

#[derive(ToSchema)]
pub struct Stats {
    pub statuses: HashMap<String, u64>,
    pub total: u64,
}

#[derive(ToSchema)]
pub struct Summary {
    pub from: String,
    pub to: String,
    pub interval: Option<String>,
    pub group_by: Vec<String>,
    /// Per bucket and group: `bucket`, the group's values, `count`,
    /// `delivered`, `finished`, `delivery_rate`, `time_to_delivered_ms`.
    pub groups: Vec<Map<String, Value>>,
    pub total: Map<String, Value>,
}

#[derive(ToSchema)]
pub struct Device {
    pub id: String,
    pub user_id: String,
    pub platform: String,
    pub token: String,
    pub endpoint: Option<String>,
    pub active: bool,
    pub service: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(ToSchema)]
pub struct Suppression {
    pub channel: String,
    pub recipient: String,
    pub reason: String,
    pub source: String,
    pub message_id: Option<String>,
    pub at: String,
}

#[derive(ToSchema)]
pub struct Suppressions {
    pub suppressions: Vec<Suppression>,
}

#[derive(ToSchema)]
pub struct Webhook {
    pub id: String,
    pub service: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    pub channels: Vec<String>,
    pub description: String,
    pub enabled: bool,
    pub disabled: Option<Map<String, Value>>,
    pub failing_since: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Only when created or rotated: the signing secret, shown once.
    pub secret: Option<String>,
}

#[derive(ToSchema)]
pub struct Webhooks {
    pub webhooks: Vec<Webhook>,
}

#[derive(ToSchema)]
pub struct Attempts {
    pub attempts: Vec<Map<String, Value>>,
}

#[derive(ToSchema)]
pub struct Redriven {
    pub redriven: u64,
}

#[derive(ToSchema)]
pub struct Recovering {
    pub recovering: u64,
}

#[derive(ToSchema)]
pub struct Key {
    pub id: String,
    pub service: String,
    pub scopes: Vec<String>,
    pub description: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// Only when created: the key itself, shown once.
    pub secret: Option<String>,
}

#[derive(ToSchema)]
pub struct Keys {
    pub keys: Vec<Key>,
}

#[derive(ToSchema)]
pub struct Health {
    pub status: String,
    pub restarts: u64,
    pub last_restart: Option<String>,
    pub parked_reports: u64,
    pub mismatched_reports: u64,
    pub intakes: Map<String, Value>,
}

#[derive(ToSchema)]
pub struct Readiness {
    /// `ready` or `not ready`.
    pub status: String,
    /// What is not ready (503 only).
    pub failing: Option<Vec<String>>,
    pub checks: Map<String, Value>,
}

/// What a vendor callback answers: `{"status": "…"}`.
#[derive(ToSchema)]
pub struct CallbackAnswer {
    pub status: String,
}

/// The vendor callbacks, served by the response listener's intakes (not
/// annotated there): documented here, authenticated by the vendor's own
/// means (a token in the URL, SNS signatures), not by API keys.
struct Callbacks;

impl Modify for Callbacks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
        use utoipa::openapi::{PathItem, Ref, Required, ResponseBuilder, ResponsesBuilder};
        let answer = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("CallbackAnswer")))
                        .build(),
                )
                .build()
        };
        let responses = || {
            ResponsesBuilder::new()
                .response("200", answer("Taken (or nothing to record)"))
                .response("400", answer("Unreadable"))
                .response("401", answer("Missing or wrong token"))
                .response("403", answer("Not signed by the vendor, or not its topic"))
                // The intake's own answer, or the API's error when no
                // intake is mounted: either shape.
                .response(
                    "404",
                    ResponseBuilder::new()
                        .description("No such provider, or no intake configured")
                        .build(),
                )
                .response(
                    "503",
                    answer("Cannot queue the report now; the vendor retries"),
                )
                .build()
        };
        let string = || {
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .build()
        };
        let provider = || {
            ParameterBuilder::new()
                .name("provider")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(string()))
                .description(Some("The provider's name in the config"))
                .build()
        };
        let operation = |summary: &str, query_token: bool| {
            let mut builder = OperationBuilder::new()
                .summary(Some(summary))
                .tag("callbacks")
                .parameter(provider())
                .securities(Some(
                    Vec::<utoipa::openapi::security::SecurityRequirement>::new(),
                ))
                .responses(responses());
            if query_token {
                builder = builder.parameter(
                    ParameterBuilder::new()
                        .name("token")
                        .parameter_in(ParameterIn::Query)
                        .required(Required::False)
                        .schema(Some(string()))
                        .description(Some("The callback token of the provider"))
                        .build(),
                );
            }
            builder.build()
        };
        let mut kaleyra = PathItem::new(
            HttpMethod::Get,
            operation("A Kaleyra delivery report (query string)", true),
        );
        kaleyra.post = Some(operation(
            "A Kaleyra delivery report (form or JSON body)",
            true,
        ));
        openapi
            .paths
            .paths
            .insert("/v1/callbacks/kaleyra/{provider}".into(), kaleyra);
        openapi.paths.paths.insert(
            "/v1/callbacks/sns/{provider}".into(),
            PathItem::new(
                HttpMethod::Post,
                operation(
                    "An SNS notification or subscription confirmation (signed)",
                    false,
                ),
            ),
        );
    }
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("mdc_sk_…")
                    .description(Some("An MDC API key (mdc keys create)"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "MDC: Message Distribution Center",
        description = "Send SMS, email and push, and see what became of each message. See docs/api.md."
    ),
    paths(
        crate::api::healthz,
        crate::api::readyz,
        crate::api::metrics,
        crate::submit_api::submit,
        crate::submit_api::submit_batch,
        crate::messages_api::list,
        crate::messages_api::get,
        crate::messages_api::cancel,
        crate::messages_api::stats,
        crate::simulator_api::simulator_sends,
        crate::devices_api::register_device,
        crate::devices_api::get_device,
        crate::devices_api::remove_device,
        crate::suppressions_api::list_suppressions,
        crate::suppressions_api::add_suppression,
        crate::suppressions_api::remove_suppression,
        crate::reports_api::summary,
        crate::reports_api::export_csv,
        crate::webhooks_api::create,
        crate::webhooks_api::list,
        crate::webhooks_api::get,
        crate::webhooks_api::update,
        crate::webhooks_api::delete,
        crate::webhooks_api::rotate_secret,
        crate::webhooks_api::attempts,
        crate::webhooks_api::recover,
        crate::keys_api::create,
        crate::keys_api::list,
        crate::keys_api::revoke,
        crate::parked_api::redrive,
        openapi_json,
    ),
    components(schemas(CallbackAnswer)),
    modifiers(&Bearer, &Callbacks),
    security(("api_key" = []))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", security(()), tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> HttpResponse {
    match ApiDoc::openapi().to_json() {
        Ok(json) => HttpResponse::Ok()
            .content_type("application/json")
            .body(json),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}
