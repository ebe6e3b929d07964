//! SNS notifications over HTTPS: `POST /v1/callbacks/sns/{provider}`, the
//! endpoint of an SNS topic's HTTPS subscription.
//!
//! Every message is verified ([`verify`]) and its `TopicArn` must be one of
//! the provider's `events_topic_arns`; anything else gets 400 (unreadable,
//! unknown type) or 403 (unsigned, tampered, another topic, a certificate
//! URL off SNS's hosts) and changes nothing. Then, by type:
//!
//! - `SubscriptionConfirmation`: MDC fetches the `SubscribeURL` (same host
//!   check), which confirms the subscription.
//! - `UnsubscribeConfirmation`: logged; MDC does not resubscribe.
//! - `Notification` carrying an SES event: parsed as on the SQS path
//!   ([`crate::ses`]) and put on the responses topic before the 2xx.
//! - `Notification` carrying a mobile push event ([`push`]): the device of
//!   that endpoint is deactivated and its token suppressed, before the 2xx.
//! - any other notification: acknowledged and counted as ignored.
//!
//! A 5xx (the certificate could not be fetched, the report could not be
//! stored) makes SNS deliver the message again later.

pub mod push;
#[cfg(feature = "testing")]
pub mod testing;
pub mod verify;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use mdc_core::ports::{DeviceRegistry, ReportSink, Suppression, SuppressionList};
use mdc_core::Channel;
use serde_json::{json, Value};

use self::verify::{MessageType, Rejected, SnsMessage, Verifier};
use crate::ses::SesEventError;
use crate::{Intake, IntakeCounts};

/// The HTTPS endpoint of every provider with SNS topics.
pub struct SnsHttpIntake {
    /// Topic ARNs per provider name.
    topics: HashMap<String, HashSet<String>>,
    verifier: Verifier,
    sink: Arc<dyn ReportSink>,
    devices: Arc<dyn DeviceRegistry>,
    suppressions: Arc<dyn SuppressionList>,
    counts: IntakeCounts,
}

impl SnsHttpIntake {
    pub fn new(
        topics: HashMap<String, HashSet<String>>,
        verifier: Verifier,
        sink: Arc<dyn ReportSink>,
        devices: Arc<dyn DeviceRegistry>,
        suppressions: Arc<dyn SuppressionList>,
    ) -> Self {
        Self {
            topics,
            verifier,
            sink,
            devices,
            suppressions,
            counts: IntakeCounts::default(),
        }
    }

    /// Deactivates the device behind a disabled or deleted endpoint and
    /// suppresses its token.
    async fn endpoint_gone(
        &self,
        provider: &str,
        event: &push::EndpointGone,
    ) -> Result<(), mdc_core::ports::StoreError> {
        let Some(device) = self.devices.by_endpoint(&event.endpoint).await? else {
            tracing::info!(%provider, endpoint = %event.endpoint, "A push endpoint MDC does not know is gone");
            self.counts.ignored();
            return Ok(());
        };
        self.devices.deactivate(&device.token).await?;
        self.suppressions
            .add(&Suppression {
                channel: Channel::Push,
                recipient: device.token.clone(),
                reason: event.reason.clone(),
                source: format!("report:{provider}"),
                message_id: None,
                at: mdc_core::now(),
            })
            .await?;
        tracing::info!(%provider, device = %device.id, reason = %event.reason, "Deactivated a device whose push endpoint is gone");
        self.counts.accepted();
        Ok(())
    }
}

impl Intake for SnsHttpIntake {
    fn name(&self) -> &str {
        "sns"
    }

    fn routes(self: Arc<Self>, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::from(self))
            .route("/v1/callbacks/sns/{provider}", web::post().to(notify));
    }

    fn counts(&self) -> &IntakeCounts {
        &self.counts
    }
}

fn answer(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "status": message }))
}

/// Refuses a message: counted, logged without its body.
fn refuse(intake: &SnsHttpIntake, provider: &str, status: StatusCode, why: &str) -> HttpResponse {
    intake.counts.refused();
    tracing::warn!(%provider, %why, "Refused an SNS message");
    answer(status, why)
}

async fn notify(
    intake: web::Data<SnsHttpIntake>,
    provider: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let provider = provider.into_inner();
    let Some(topics) = intake.topics.get(&provider) else {
        return refuse(
            &intake,
            &provider,
            StatusCode::NOT_FOUND,
            "no provider with SNS topics by that name",
        );
    };
    let message: SnsMessage = match serde_json::from_slice(&body) {
        Ok(message) => message,
        Err(_) => {
            return refuse(
                &intake,
                &provider,
                StatusCode::BAD_REQUEST,
                "not an SNS message",
            )
        }
    };
    let Some(kind) = message.message_type() else {
        return refuse(
            &intake,
            &provider,
            StatusCode::BAD_REQUEST,
            "unknown SNS message type",
        );
    };
    let header = request
        .headers()
        .get("x-amz-sns-message-type")
        .and_then(|v| v.to_str().ok());
    if header.is_some_and(|header| header != message.kind) {
        return refuse(
            &intake,
            &provider,
            StatusCode::BAD_REQUEST,
            "x-amz-sns-message-type does not match the body",
        );
    }
    if !topics.contains(&message.topic_arn) {
        return refuse(
            &intake,
            &provider,
            StatusCode::FORBIDDEN,
            "the topic is not one of this provider's",
        );
    }
    match intake.verifier.verify(&message).await {
        Ok(()) => {}
        Err(Rejected::Unreachable(e)) => {
            tracing::warn!(%provider, error = %e, "Could not fetch an SNS signing certificate; SNS will retry");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "signing certificate unavailable",
            );
        }
        Err(e @ (Rejected::Malformed(_) | Rejected::UnknownType)) => {
            return refuse(&intake, &provider, StatusCode::BAD_REQUEST, &e.to_string())
        }
        Err(e) => return refuse(&intake, &provider, StatusCode::FORBIDDEN, &e.to_string()),
    }
    match kind {
        MessageType::SubscriptionConfirmation => {
            let url = message.subscribe_url.as_deref().unwrap_or_default();
            match intake.verifier.confirm(url).await {
                Ok(()) => {
                    tracing::info!(%provider, topic = %message.topic_arn, "Confirmed an SNS subscription");
                    intake.counts.ignored();
                    answer(StatusCode::OK, "confirmed")
                }
                Err(e @ Rejected::UntrustedUrl(_)) => {
                    refuse(&intake, &provider, StatusCode::FORBIDDEN, &e.to_string())
                }
                Err(e) => {
                    tracing::warn!(%provider, error = %e, "Could not confirm an SNS subscription; SNS will retry");
                    answer(StatusCode::SERVICE_UNAVAILABLE, "confirmation failed")
                }
            }
        }
        MessageType::UnsubscribeConfirmation => {
            tracing::warn!(%provider, topic = %message.topic_arn, "An SNS topic unsubscribed MDC's endpoint");
            intake.counts.ignored();
            answer(StatusCode::OK, "noted")
        }
        MessageType::Notification => notification(&intake, &provider, &message).await,
    }
}

async fn notification(
    intake: &SnsHttpIntake,
    provider: &str,
    message: &SnsMessage,
) -> HttpResponse {
    let Ok(inner) = serde_json::from_str::<Value>(&message.message) else {
        intake.counts.ignored();
        tracing::info!(%provider, sns_message_id = %message.message_id, "Ignored an SNS notification that is not JSON");
        return answer(StatusCode::OK, "ignored");
    };
    if let Some(event) = push::parse(&inner) {
        return match event {
            push::PushEvent::Gone(gone) => match intake.endpoint_gone(provider, &gone).await {
                Ok(()) => answer(StatusCode::OK, "accepted"),
                Err(e) => {
                    tracing::warn!(%provider, error = %e, "Could not deactivate a device; SNS will retry");
                    answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "could not record the event",
                    )
                }
            },
            push::PushEvent::Other(kind) => {
                intake.counts.ignored();
                tracing::info!(%provider, %kind, "Ignored a push event that changes nothing");
                answer(StatusCode::OK, "ignored")
            }
        };
    }
    match crate::ses::parse(&message.message, provider, mdc_core::now()) {
        Ok(report) => match intake.sink.submit(report).await {
            Ok(()) => {
                intake.counts.accepted();
                answer(StatusCode::OK, "accepted")
            }
            Err(e) => {
                tracing::warn!(%provider, error = %e, "Could not queue an SES event; SNS will retry");
                answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "could not queue the report",
                )
            }
        },
        Err(SesEventError::UnknownType(kind)) => {
            intake.counts.ignored();
            tracing::info!(%provider, %kind, "Ignored an SES event of a type MDC does not use");
            answer(StatusCode::OK, "ignored")
        }
        Err(e) => {
            // Authentic, so SNS must not retry it for ever: acknowledged.
            intake.counts.ignored();
            tracing::info!(%provider, error = %e, sns_message_id = %message.message_id, "Ignored an SNS notification MDC does not read");
            answer(StatusCode::OK, "ignored")
        }
    }
}
