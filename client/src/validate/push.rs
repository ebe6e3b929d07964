use mdc_core::message::PushTarget;

use super::ValidationError;

/// APNs and FCM payloads are capped at 4 KB.
pub const MAX_PUSH_PAYLOAD: usize = 4096;
const MAX_TOKEN: usize = 4096;
const MIN_TOKEN: usize = 8;
const MAX_USER_ID: usize = 128;
/// Keys of `data` that would replace the notification MDC builds (APNs
/// `aps`, FCM `notification`).
pub const RESERVED_DATA_KEYS: &[&str] = &["aps", "notification"];

/// `user:<id>` addresses every device of a user; anything else is a device
/// token (APNs hex or FCM registration token). An SNS ARN is refused: it
/// could name any topic or endpoint MDC's AWS role may publish to.
pub fn push_target(field: &str, input: &str) -> Result<PushTarget, ValidationError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(ValidationError::new(
            field,
            "required",
            "a device token or user:<id> is required",
        ));
    }
    if let Some(user) = input.strip_prefix("user:") {
        let ok = !user.is_empty()
            && user.len() <= MAX_USER_ID
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c));
        return if ok {
            Ok(PushTarget::UserId(user.to_owned()))
        } else {
            Err(ValidationError::new(
                field,
                "push_user_id",
                format!("user ids are 1-{MAX_USER_ID} characters of letters, digits and - _ . @ :"),
            ))
        };
    }
    if input.starts_with("arn:") {
        return Err(ValidationError::new(
            field,
            "push_token_arn",
            "an SNS ARN is not a push target: send to the device token or user:<id>",
        ));
    }
    let ok = (MIN_TOKEN..=MAX_TOKEN).contains(&input.len())
        && input
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_:./".contains(c));
    if ok {
        Ok(PushTarget::DeviceToken(input.to_owned()))
    } else {
        Err(ValidationError::new(
            field,
            "push_token",
            format!("device tokens are {MIN_TOKEN}-{MAX_TOKEN} characters of letters, digits and - _ : . /"),
        ))
    }
}

/// The notification as the vendor would carry it must fit in 4 KB.
pub fn push_payload(
    title: Option<&str>,
    body: &str,
    data: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), ValidationError> {
    if body.trim().is_empty() {
        return Err(ValidationError::new(
            "body",
            "required",
            "a push notification needs a body",
        ));
    }
    for key in RESERVED_DATA_KEYS {
        if data.contains_key(*key) {
            return Err(ValidationError::new(
                &format!("data.{key}"),
                "push_data_reserved",
                format!("`{key}` is built by MDC from title and body; use another key"),
            ));
        }
    }
    let payload = serde_json::json!({ "title": title, "body": body, "data": data });
    let size = payload.to_string().len();
    if size > MAX_PUSH_PAYLOAD {
        return Err(ValidationError::new(
            "data",
            "push_payload_size",
            format!("title, body and data come to {size} bytes; the limit is {MAX_PUSH_PAYLOAD}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_users_from_device_tokens() {
        assert_eq!(
            push_target("to", "user:alice-42"),
            Ok(PushTarget::UserId("alice-42".into()))
        );
        let apns = "a".repeat(64);
        assert_eq!(
            push_target("to", &apns),
            Ok(PushTarget::DeviceToken(apns.clone()))
        );
        assert_eq!(
            push_target("to", "user:").map_err(|e| e.rule),
            Err("push_user_id".into())
        );
        assert_eq!(
            push_target("to", "short").map_err(|e| e.rule),
            Err("push_token".into())
        );
        assert_eq!(
            push_target("to", "has spaces in it").map_err(|e| e.rule),
            Err("push_token".into())
        );
        assert_eq!(
            push_target("to", "arn:aws:sns:us-east-1:123456789012:any-topic").map_err(|e| e.rule),
            Err("push_token_arn".into())
        );
    }

    #[test]
    fn data_cannot_carry_the_notification_blocks() {
        for key in ["aps", "notification"] {
            let mut data = serde_json::Map::new();
            data.insert(key.into(), serde_json::json!({ "alert": "spoofed" }));
            let error = push_payload(Some("t"), "b", &data).expect_err("reserved");
            assert_eq!(error.field, format!("data.{key}"));
            assert_eq!(error.rule, "push_data_reserved");
        }
    }

    #[test]
    fn payload_over_4kb_is_rejected() {
        let mut data = serde_json::Map::new();
        data.insert("blob".into(), serde_json::Value::String("x".repeat(4100)));
        assert!(push_payload(Some("t"), "b", &data).is_err());
        data.insert("blob".into(), serde_json::Value::String("x".repeat(3000)));
        assert!(push_payload(Some("t"), "b", &data).is_ok());
        assert_eq!(
            push_payload(None, " ", &serde_json::Map::new()).map_err(|e| e.field),
            Err("body".to_owned())
        );
    }
}
