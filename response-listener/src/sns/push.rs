//! SNS mobile push events: what a platform application's
//! `EventDeliveryFailure`, `EventEndpointUpdated` and `EventEndpointDeleted`
//! topics carry.
//!
//! | event | MDC |
//! |---|---|
//! | `EndpointDeleted` | the device is deactivated and its token suppressed |
//! | `EndpointUpdated` | the same, unless the event shows the endpoint still enabled: the token MDC holds is no longer the endpoint's |
//! | `DeliveryFailure` with `FailureType` `EndpointDisabled` or `InvalidPlatformToken` | the same |
//! | `DeliveryFailure` of another kind (an expired TTL, a platform outage), `EndpointCreated` | ignored |

use serde_json::Value;

/// A push endpoint that no longer reaches its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointGone {
    /// The endpoint ARN.
    pub endpoint: String,
    /// Why, for the suppression list.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    Gone(EndpointGone),
    /// A push event that changes nothing, by its `EventType`.
    Other(String),
}

fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// Whether the event says the endpoint is enabled (`Enabled`, at the top
/// or under `Attributes`, as "true" or true).
fn says_enabled(event: &Value) -> bool {
    [event.get("Enabled"), event.pointer("/Attributes/Enabled")]
        .into_iter()
        .flatten()
        .any(|v| v == "true" || v == true)
}

/// The push event in an SNS notification's `Message`, or None when it is
/// not one (an SES event, say).
pub fn parse(message: &Value) -> Option<PushEvent> {
    let kind = text(message, "EventType")?;
    let endpoint = text(message, "EndpointArn")?.to_owned();
    let gone = |reason: String| Some(PushEvent::Gone(EndpointGone { endpoint, reason }));
    match kind {
        "EndpointDeleted" => gone("push endpoint deleted".into()),
        "EndpointUpdated" if !says_enabled(message) => gone("push endpoint updated".into()),
        "DeliveryFailure" => match text(message, "FailureType") {
            Some(failure @ ("EndpointDisabled" | "InvalidPlatformToken")) => {
                gone(format!("push endpoint disabled ({failure})"))
            }
            _ => Some(PushEvent::Other(kind.to_owned())),
        },
        other => Some(PushEvent::Other(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ARN: &str = "arn:aws:sns:us-east-1:123456789012:endpoint/GCM/app/3f0b";

    fn gone(reason: &str) -> Option<PushEvent> {
        Some(PushEvent::Gone(EndpointGone {
            endpoint: ARN.into(),
            reason: reason.into(),
        }))
    }

    #[test]
    fn maps_every_push_event() {
        let cases = [
            (
                json!({"EventType": "DeliveryFailure", "EndpointArn": ARN, "FailureType": "EndpointDisabled", "FailureMessage": "Endpoint is disabled", "Resource": "arn:aws:sns:us-east-1:123456789012:app/GCM/app", "Service": "SNS", "Time": "2026-11-30T10:00:00.000Z", "DeliveryAttempts": 1}),
                gone("push endpoint disabled (EndpointDisabled)"),
            ),
            (
                json!({"EventType": "DeliveryFailure", "EndpointArn": ARN, "FailureType": "InvalidPlatformToken"}),
                gone("push endpoint disabled (InvalidPlatformToken)"),
            ),
            (
                json!({"EventType": "DeliveryFailure", "EndpointArn": ARN, "FailureType": "DeliveryFailedPerMessageTTL"}),
                Some(PushEvent::Other("DeliveryFailure".into())),
            ),
            (
                json!({"EventType": "EndpointDeleted", "EndpointArn": ARN}),
                gone("push endpoint deleted"),
            ),
            (
                json!({"EventType": "EndpointUpdated", "EndpointArn": ARN, "Attributes": {"Enabled": "false"}}),
                gone("push endpoint updated"),
            ),
            (
                json!({"EventType": "EndpointUpdated", "EndpointArn": ARN, "Attributes": {"Enabled": "true"}}),
                Some(PushEvent::Other("EndpointUpdated".into())),
            ),
            (
                json!({"EventType": "EndpointCreated", "EndpointArn": ARN}),
                Some(PushEvent::Other("EndpointCreated".into())),
            ),
            (json!({"eventType": "Delivery", "mail": {}}), None),
            (json!({"EventType": "EndpointDeleted"}), None),
        ];
        for (event, expected) in cases {
            assert_eq!(parse(&event), expected, "{event}");
        }
    }
}
