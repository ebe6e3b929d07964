//! SES events, as they reach MDC through SNS (to an SQS queue or an HTTPS
//! endpoint): parsed into MDC's report shape.
//!
//! Accepted shapes: the SNS envelope with the SES JSON as the `Message`
//! string (or, as some emulators send it, an object), and raw message
//! delivery (the SES JSON itself). Both the event-publishing format
//! (`eventType`, configuration sets) and the older identity notifications
//! (`notificationType`) are read; unknown fields are ignored. The message is
//! found by `mail.messageId` (the id SendEmail returned) and, when the send
//! carried it, the `mdc_message_id` tag.
//!
//! | SES event | MDC |
//! |---|---|
//! | Delivery | `delivered` |
//! | Bounce, Permanent | `failed` (type, sub-type, diagnostic code) and the address suppressed |
//! | Bounce, Transient or Undetermined | `failed` as a soft bounce, not suppressed |
//! | Complaint | an event, and the address suppressed (a delivered message stays delivered) |
//! | Reject, Rendering Failure | `failed` |
//! | Send, DeliveryDelay, Open, Click, Subscription | an event only |

use mdc_core::{DeliveryReport, MessageId, ReportOutcome, Timestamp};
use serde_json::Value;

/// The message tag that carries MDC's message id on SES sends.
pub const MDC_ID_TAG: &str = mdc_core::report::MESSAGE_ID_TAG;

/// Why a body is not an SES event MDC can use.
#[derive(Debug, thiserror::Error)]
pub enum SesEventError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not an SES event: {0}")]
    Shape(&'static str),
    /// A well-formed event of a type MDC does not know: acknowledged and
    /// ignored.
    #[error("an SES event of unknown type {0:?}")]
    UnknownType(String),
}

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn time(value: &Value, pointer: &str) -> Option<Timestamp> {
    text(value, pointer)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Unwraps the SNS envelope if there is one.
fn ses_json(body: &str) -> Result<Value, SesEventError> {
    let value: Value = serde_json::from_str(body)?;
    if value.get("Type").and_then(Value::as_str) == Some("Notification") {
        return match value.get("Message") {
            Some(Value::String(inner)) => Ok(serde_json::from_str(inner)?),
            Some(inner @ Value::Object(_)) => Ok(inner.clone()),
            _ => Err(SesEventError::Shape("SNS notification without a Message")),
        };
    }
    Ok(value)
}

/// The report for one SES event (MDC sends one recipient per message, so
/// one report covers the event). `provider` is the SES provider's name in
/// MDC's config; `received` when MDC got the event.
pub fn parse(
    body: &str,
    provider: &str,
    received: Timestamp,
) -> Result<DeliveryReport, SesEventError> {
    let event = ses_json(body)?;
    let kind = text(&event, "/eventType")
        .or_else(|| text(&event, "/notificationType"))
        .ok_or(SesEventError::Shape(
            "neither eventType nor notificationType",
        ))?
        .to_owned();
    let message_id = text(&event, "/mail/messageId")
        .ok_or(SesEventError::Shape("no mail.messageId"))?
        .to_owned();
    let reference = event
        .pointer(&format!("/mail/tags/{MDC_ID_TAG}/0"))
        .and_then(Value::as_str)
        .and_then(|id| id.parse::<MessageId>().ok());
    let noted = |details: String| ReportOutcome::Noted {
        details,
        suppress: false,
    };
    let (outcome, vendor_at) = match kind.as_str() {
        "Delivery" => (
            ReportOutcome::Delivered,
            time(&event, "/delivery/timestamp"),
        ),
        "Bounce" => {
            let kind = text(&event, "/bounce/bounceType").unwrap_or("Undetermined");
            let sub_kind = text(&event, "/bounce/bounceSubType").unwrap_or("General");
            let diagnostic = text(&event, "/bounce/bouncedRecipients/0/diagnosticCode")
                .map(|code| format!(": {code}"))
                .unwrap_or_default();
            let permanent = kind == "Permanent";
            let reason = if permanent {
                format!("bounce {kind}/{sub_kind}{diagnostic}")
            } else {
                format!("soft bounce {kind}/{sub_kind}{diagnostic}")
            };
            (
                ReportOutcome::Failed {
                    reason,
                    suppress: permanent,
                },
                time(&event, "/bounce/timestamp"),
            )
        }
        "Complaint" => {
            let feedback =
                text(&event, "/complaint/complaintFeedbackType").unwrap_or("unspecified");
            (
                ReportOutcome::Noted {
                    details: format!("complaint ({feedback})"),
                    suppress: true,
                },
                time(&event, "/complaint/timestamp"),
            )
        }
        "Reject" => (
            ReportOutcome::Failed {
                reason: format!(
                    "rejected by SES: {}",
                    text(&event, "/reject/reason").unwrap_or("no reason given")
                ),
                suppress: false,
            },
            None,
        ),
        "Rendering Failure" => (
            ReportOutcome::Failed {
                reason: format!(
                    "template rendering failed: {}",
                    text(&event, "/failure/errorMessage").unwrap_or("no message given")
                ),
                suppress: false,
            },
            None,
        ),
        "Send" => (noted("accepted by SES".into()), None),
        "DeliveryDelay" => (
            noted(format!(
                "delivery delayed ({})",
                text(&event, "/deliveryDelay/delayType").unwrap_or("unspecified")
            )),
            time(&event, "/deliveryDelay/timestamp"),
        ),
        "Open" => (noted("opened".into()), time(&event, "/open/timestamp")),
        "Click" => (
            noted("link clicked".into()),
            time(&event, "/click/timestamp"),
        ),
        "Subscription" => (
            noted("subscription preferences changed".into()),
            time(&event, "/subscription/timestamp"),
        ),
        _ => return Err(SesEventError::UnknownType(kind)),
    };
    Ok(DeliveryReport {
        provider: provider.to_owned(),
        provider_message_id: message_id,
        reference,
        outcome,
        at: received,
        vendor_at: vendor_at.or_else(|| time(&event, "/mail/timestamp")),
        raw: event,
        note: None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const MDC_ID: &str = "msg_01KAAAAAAAAAAAAAAAAAAAAAAA";

    fn mail() -> Value {
        json!({
            "timestamp": "2026-11-30T10:00:00.000Z",
            "source": "noreply@example.com",
            "messageId": "0100018a-ses-id",
            "destination": ["alice@example.com"],
            "tags": { MDC_ID_TAG: [MDC_ID], "ses:configuration-set": ["mdc"] }
        })
    }

    /// The SNS envelope around `event`, `Message` as a string.
    fn enveloped(event: &Value) -> String {
        json!({
            "Type": "Notification",
            "MessageId": "sns-1",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-events",
            "Message": event.to_string(),
            "Timestamp": "2026-11-30T10:00:02.000Z",
            "SignatureVersion": "1",
            "Signature": "…",
            "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/cert.pem",
            "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe"
        })
        .to_string()
    }

    fn parsed(body: &str) -> DeliveryReport {
        parse(body, "ses", mdc_core::now()).expect("parses")
    }

    #[test]
    fn maps_every_event_type() {
        let cases: Vec<(Value, ReportOutcome)> = vec![
            (
                json!({"eventType": "Delivery", "mail": mail(), "delivery": {"timestamp": "2026-11-30T10:00:01.000Z", "recipients": ["alice@example.com"], "smtpResponse": "250 ok"}}),
                ReportOutcome::Delivered,
            ),
            (
                json!({"eventType": "Bounce", "mail": mail(), "bounce": {"bounceType": "Permanent", "bounceSubType": "NoEmail", "bouncedRecipients": [{"emailAddress": "alice@example.com", "diagnosticCode": "smtp; 550 5.1.1 unknown user"}], "timestamp": "2026-11-30T10:00:01.000Z"}}),
                ReportOutcome::Failed {
                    reason: "bounce Permanent/NoEmail: smtp; 550 5.1.1 unknown user".into(),
                    suppress: true,
                },
            ),
            (
                json!({"eventType": "Bounce", "mail": mail(), "bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull", "bouncedRecipients": [{"emailAddress": "alice@example.com"}]}}),
                ReportOutcome::Failed {
                    reason: "soft bounce Transient/MailboxFull".into(),
                    suppress: false,
                },
            ),
            (
                json!({"eventType": "Bounce", "mail": mail(), "bounce": {"bounceType": "Undetermined", "bounceSubType": "Undetermined"}}),
                ReportOutcome::Failed {
                    reason: "soft bounce Undetermined/Undetermined".into(),
                    suppress: false,
                },
            ),
            (
                json!({"eventType": "Complaint", "mail": mail(), "complaint": {"complaintFeedbackType": "abuse", "complainedRecipients": [{"emailAddress": "alice@example.com"}]}}),
                ReportOutcome::Noted {
                    details: "complaint (abuse)".into(),
                    suppress: true,
                },
            ),
            (
                json!({"eventType": "Reject", "mail": mail(), "reject": {"reason": "Bad content"}}),
                ReportOutcome::Failed {
                    reason: "rejected by SES: Bad content".into(),
                    suppress: false,
                },
            ),
            (
                json!({"eventType": "Rendering Failure", "mail": mail(), "failure": {"errorMessage": "Attribute 'name' is not present", "templateName": "welcome"}}),
                ReportOutcome::Failed {
                    reason: "template rendering failed: Attribute 'name' is not present".into(),
                    suppress: false,
                },
            ),
            (
                json!({"eventType": "Send", "mail": mail(), "send": {}}),
                ReportOutcome::Noted {
                    details: "accepted by SES".into(),
                    suppress: false,
                },
            ),
            (
                json!({"eventType": "DeliveryDelay", "mail": mail(), "deliveryDelay": {"delayType": "MailboxFull", "timestamp": "2026-11-30T11:00:00.000Z"}}),
                ReportOutcome::Noted {
                    details: "delivery delayed (MailboxFull)".into(),
                    suppress: false,
                },
            ),
            (
                json!({"eventType": "Open", "mail": mail(), "open": {"timestamp": "2026-11-30T12:00:00.000Z"}}),
                ReportOutcome::Noted {
                    details: "opened".into(),
                    suppress: false,
                },
            ),
            (
                json!({"eventType": "Click", "mail": mail(), "click": {"link": "https://example.com"}}),
                ReportOutcome::Noted {
                    details: "link clicked".into(),
                    suppress: false,
                },
            ),
            (
                json!({"eventType": "Subscription", "mail": mail(), "subscription": {}}),
                ReportOutcome::Noted {
                    details: "subscription preferences changed".into(),
                    suppress: false,
                },
            ),
        ];
        for (event, expected) in cases {
            // Through the SNS envelope and as raw message delivery alike.
            for body in [enveloped(&event), event.to_string()] {
                let report = parsed(&body);
                assert_eq!(report.outcome, expected, "{body}");
                assert_eq!(report.provider, "ses");
                assert_eq!(report.provider_message_id, "0100018a-ses-id");
                assert_eq!(report.reference.as_ref().map(|r| r.as_str()), Some(MDC_ID));
                assert_eq!(report.raw, event);
                assert!(report.vendor_at.is_some(), "{body}");
            }
        }
    }

    #[test]
    fn reads_identity_notifications_and_envelopes_with_an_object() {
        let mut mail = mail();
        mail.as_object_mut().expect("object").remove("tags");
        let event = json!({
            "notificationType": "Delivery",
            "mail": mail,
            "delivery": {"timestamp": "2026-11-30T10:00:01.000Z"},
            "aFieldAddedNextYear": {"x": 1}
        });
        let report = parsed(&enveloped(&event));
        assert_eq!(report.outcome, ReportOutcome::Delivered);
        assert_eq!(
            report.reference, None,
            "no tags without a configuration set"
        );
        let as_object = json!({"Type": "Notification", "Message": event}).to_string();
        assert_eq!(parsed(&as_object).outcome, ReportOutcome::Delivered);
        assert_eq!(
            parsed(&event.to_string()).vendor_at.map(|t| t.to_rfc3339()),
            Some("2026-11-30T10:00:01+00:00".to_owned())
        );
    }

    #[test]
    fn refuses_what_is_not_an_ses_event() {
        let cases = [
            "not json",
            r#"{"Type": "Notification"}"#,
            r#"{"Type": "Notification", "Message": "not json either"}"#,
            r#"{"mail": {"messageId": "x"}}"#,
            r#"{"eventType": "Delivery", "mail": {}}"#,
        ];
        for body in cases {
            assert!(
                !matches!(
                    parse(body, "ses", mdc_core::now()),
                    Ok(_) | Err(SesEventError::UnknownType(_))
                ),
                "{body}"
            );
        }
        assert!(matches!(
            parse(
                &json!({"eventType": "Teleport", "mail": mail()}).to_string(),
                "ses",
                mdc_core::now()
            ),
            Err(SesEventError::UnknownType(kind)) if kind == "Teleport"
        ));
    }
}
