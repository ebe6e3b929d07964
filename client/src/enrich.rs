use chrono::Duration;
use mdc_core::message::PushTarget;
use mdc_core::{Channel, Content, Message, MessageId, MessageType, Priority};

use crate::validate::{self, ValidationError, Warning};
use crate::{ClientConfig, SubmitRequest};

const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Longest caller reference.
const MAX_REFERENCE: usize = 255;
/// Largest caller metadata, as JSON.
const MAX_METADATA_BYTES: usize = 4096;
const MAX_TEMPLATE_ID: usize = 64;
const MAX_PUSH_TITLE: usize = 256;

fn required<'a>(field: &str, value: &'a Option<String>) -> Result<&'a str, ValidationError> {
    match value.as_deref() {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(ValidationError::new(
            field,
            "required",
            format!("{field} is required"),
        )),
    }
}

fn parse_enum<T: std::str::FromStr<Err = String>>(
    field: &str,
    value: &Option<String>,
    default: T,
) -> Result<T, ValidationError> {
    match value.as_deref() {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|allowed| ValidationError::new(field, "one_of", allowed)),
    }
}

/// Fields that make no sense for the channel are refused rather than ignored,
/// so a caller learns of a mistake (a subject on an SMS) at once.
fn forbid(channel: Channel, fields: &[(&str, bool)]) -> Result<(), ValidationError> {
    match fields.iter().find(|(_, present)| *present) {
        Some((field, _)) => Err(ValidationError::new(
            field,
            "not_allowed",
            format!("{field} does not apply to {channel} messages"),
        )),
        None => Ok(()),
    }
}

/// An SMS sender id: 1-11 letters/digits (alphanumeric) or up to 15 digits.
fn sender_id(value: &str) -> Result<String, ValidationError> {
    let numeric = value.strip_prefix('+').unwrap_or(value);
    let ok = (!value.is_empty()
        && value.len() <= 11
        && value.chars().all(|c| c.is_ascii_alphanumeric()))
        || (!numeric.is_empty()
            && numeric.len() <= 15
            && numeric.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(ValidationError::new(
            "from",
            "sms_sender_id",
            "an SMS sender id is 1-11 letters and digits, or a number of up to 15 digits",
        ))
    }
}

/// Validates a request and turns it into a message ready to queue, with any
/// warnings. Pure: the same request and config always give the same verdict.
pub fn enrich(
    request: &SubmitRequest,
    config: &ClientConfig,
) -> Result<(Message, Vec<Warning>), ValidationError> {
    let channel: Channel = parse_enum("channel", &request.channel, Channel::Sms)
        .and_then(|c| required("channel", &request.channel).map(|_| c))?;
    let priority: Priority = parse_enum("priority", &request.priority, Priority::Normal)?;
    let message_type: MessageType =
        parse_enum("type", &request.message_type, MessageType::Transactional)?;
    let to_input = required("to", &request.to)?;
    let mut warnings = Vec::new();

    let idempotency_key = match request.idempotency_key.as_deref() {
        None => None,
        Some(key)
            if key.is_empty()
                || key.len() > MAX_IDEMPOTENCY_KEY
                || key.chars().any(char::is_control) =>
        {
            return Err(ValidationError::new(
                "idempotency_key",
                "idempotency_key_format",
                format!("must be 1-{MAX_IDEMPOTENCY_KEY} bytes without control characters"),
            ))
        }
        Some(key) => Some(key.to_owned()),
    };

    let reference = match request.reference.as_deref() {
        None => None,
        Some(reference)
            if reference.is_empty()
                || reference.len() > MAX_REFERENCE
                || reference.chars().any(char::is_control) =>
        {
            return Err(ValidationError::new(
                "reference",
                "reference_format",
                format!("must be 1-{MAX_REFERENCE} bytes without control characters"),
            ))
        }
        Some(reference) => Some(reference.to_owned()),
    };
    if let Some(metadata) = &request.metadata {
        let size = serde_json::to_vec(metadata).map_or(usize::MAX, |v| v.len());
        if size > MAX_METADATA_BYTES {
            return Err(ValidationError::new(
                "metadata",
                "metadata_too_large",
                format!("must be at most {MAX_METADATA_BYTES} bytes as JSON, not {size}"),
            ));
        }
    }

    let mut sender = None;
    let (to, content) = match channel {
        Channel::Sms => {
            forbid(
                channel,
                &[
                    ("subject", request.subject.is_some()),
                    ("html", request.html.is_some()),
                    ("title", request.title.is_some()),
                    ("data", request.data.is_some()),
                    ("attachments", request.attachments.is_some()),
                ],
            )?;
            let (to, warning) = validate::phone_number("to", to_input)?;
            warnings.extend(warning);
            let body = request.body.as_deref().unwrap_or_default();
            let (shape, warning) = validate::sms_body(body, config.sms_max_segments)?;
            warnings.extend(warning);
            sender = match request.from.as_deref() {
                Some(from) => Some(sender_id(from)?),
                None => config.senders.get(&message_type).cloned(),
            };
            let template_id = match request.template_id.as_deref() {
                Some(t)
                    if t.is_empty()
                        || t.len() > MAX_TEMPLATE_ID
                        || !t
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
                {
                    return Err(ValidationError::new(
                        "template_id",
                        "template_id_format",
                        format!("must be 1-{MAX_TEMPLATE_ID} letters, digits, - or _"),
                    ))
                }
                other => other.map(str::to_owned),
            };
            (
                to,
                Content::Sms {
                    body: body.to_owned(),
                    encoding: shape.encoding,
                    segments: shape.segments,
                    template_id,
                },
            )
        }
        Channel::Email => {
            forbid(
                channel,
                &[
                    ("title", request.title.is_some()),
                    ("data", request.data.is_some()),
                    ("template_id", request.template_id.is_some()),
                ],
            )?;
            let to = validate::email_address("to", to_input)?;
            let from = validate::email_address("from", required("from", &request.from)?)?;
            let subject = required("subject", &request.subject)?;
            validate::email_subject(subject)?;
            let text = request.body.clone().filter(|b| !b.trim().is_empty());
            let html = request.html.clone().filter(|b| !b.trim().is_empty());
            if text.is_none() && html.is_none() {
                return Err(ValidationError::new(
                    "body",
                    "required",
                    "an email needs a body (text) or html",
                ));
            }
            let size = text.as_ref().map_or(0, String::len) + html.as_ref().map_or(0, String::len);
            if size > config.email_max_body_bytes {
                return Err(ValidationError::new(
                    "body",
                    "email_body_size",
                    format!(
                        "body and html come to {size} bytes; the limit is {}",
                        config.email_max_body_bytes
                    ),
                ));
            }
            let attachments = validate::attachments(
                request.attachments.as_deref().unwrap_or_default(),
                config.email_max_attachment_bytes,
            )?;
            (
                to,
                Content::Email {
                    from,
                    subject: subject.to_owned(),
                    text,
                    html,
                    attachments,
                },
            )
        }
        Channel::Push => {
            forbid(
                channel,
                &[
                    ("subject", request.subject.is_some()),
                    ("html", request.html.is_some()),
                    ("from", request.from.is_some()),
                    ("template_id", request.template_id.is_some()),
                    ("attachments", request.attachments.is_some()),
                ],
            )?;
            let target = validate::push_target("to", to_input)?;
            if request
                .title
                .as_ref()
                .is_some_and(|t| t.len() > MAX_PUSH_TITLE)
            {
                return Err(ValidationError::new(
                    "title",
                    "push_title_length",
                    format!("must be at most {MAX_PUSH_TITLE} bytes"),
                ));
            }
            let body = request.body.clone().unwrap_or_default();
            let data = request.data.clone().unwrap_or_default();
            validate::push_payload(request.title.as_deref(), &body, &data)?;
            let to = match &target {
                PushTarget::DeviceToken(token) => token.clone(),
                PushTarget::UserId(user) => format!("user:{user}"),
            };
            (
                to,
                Content::Push {
                    target,
                    title: request.title.clone(),
                    body,
                    data,
                },
            )
        }
    };

    let id = MessageId::generate();
    let created_at = mdc_core::now();
    let deadline = created_at
        + Duration::from_std(config.deadline(message_type, priority)).unwrap_or(Duration::days(1));
    let message = Message {
        // Without a caller's key, the message is its own identity: every
        // submission is new. Callers that retry must pass a key.
        idempotency_key: idempotency_key.unwrap_or_else(|| Message::own_idempotency_key(&id)),
        id,
        priority,
        message_type,
        to,
        sender,
        content,
        created_at,
        deadline,
        reference,
        metadata: request.metadata.clone(),
        service: None,
        direct: false,
    };
    Ok((message, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sms(to: &str, body: &str) -> SubmitRequest {
        SubmitRequest {
            channel: Some("sms".into()),
            to: Some(to.into()),
            body: Some(body.into()),
            ..Default::default()
        }
    }

    #[test]
    fn enriches_an_otp_sms() {
        let mut request = sms("+1 415 555 0123", "Your code is 123456");
        request.message_type = Some("otp".into());
        request.priority = Some("critical".into());
        let (message, warnings) = enrich(&request, &ClientConfig::default()).expect("valid");
        assert!(warnings.is_empty());
        assert_eq!(message.to, "+14155550123");
        assert_eq!(message.sender.as_deref(), Some("MDCOTP"));
        assert_eq!(message.priority, Priority::Critical);
        assert!(message.id.as_str().starts_with("msg_"));
        assert_eq!(message.idempotency_key, format!("auto:{}", message.id));
        assert_eq!(message.deadline - message.created_at, Duration::minutes(10));
    }

    #[test]
    fn priority_caps_shorten_deadlines() {
        let mut config = ClientConfig::default();
        config
            .priority_deadline_caps
            .insert(Priority::Critical, std::time::Duration::from_secs(60));
        let mut request = sms("+14155550123", "hi");
        request.priority = Some("critical".into());
        let (message, _) = enrich(&request, &config).expect("valid");
        assert_eq!(message.deadline - message.created_at, Duration::minutes(1));
    }

    #[test]
    fn errors_name_the_field() {
        let config = ClientConfig::default();
        let cases: Vec<(SubmitRequest, &str, &str)> = vec![
            (SubmitRequest::default(), "channel", "required"),
            (
                SubmitRequest {
                    channel: Some("fax".into()),
                    ..sms("+14155550123", "x")
                },
                "channel",
                "one_of",
            ),
            (
                SubmitRequest {
                    priority: Some("urgent".into()),
                    ..sms("+14155550123", "x")
                },
                "priority",
                "one_of",
            ),
            (
                SubmitRequest {
                    message_type: Some("spam".into()),
                    ..sms("+14155550123", "x")
                },
                "type",
                "one_of",
            ),
            (
                SubmitRequest {
                    reference: Some("r".repeat(256)),
                    ..sms("+14155550123", "x")
                },
                "reference",
                "reference_format",
            ),
            (
                SubmitRequest {
                    metadata: Some(
                        [("big".to_owned(), serde_json::json!("x".repeat(5000)))]
                            .into_iter()
                            .collect(),
                    ),
                    ..sms("+14155550123", "x")
                },
                "metadata",
                "metadata_too_large",
            ),
            (sms("", "x"), "to", "required"),
            (sms("+14155550123", ""), "body", "required"),
            (
                SubmitRequest {
                    subject: Some("s".into()),
                    ..sms("+14155550123", "x")
                },
                "subject",
                "not_allowed",
            ),
            (
                SubmitRequest {
                    from: Some("WAY-TOO-LONG-SENDER".into()),
                    ..sms("+14155550123", "x")
                },
                "from",
                "sms_sender_id",
            ),
            (
                SubmitRequest {
                    idempotency_key: Some(String::new()),
                    ..sms("+14155550123", "x")
                },
                "idempotency_key",
                "idempotency_key_format",
            ),
            (
                SubmitRequest {
                    channel: Some("email".into()),
                    to: Some("a@example.com".into()),
                    subject: Some("s".into()),
                    body: Some("b".into()),
                    ..Default::default()
                },
                "from",
                "required",
            ),
            (
                SubmitRequest {
                    channel: Some("email".into()),
                    to: Some("a@example.com".into()),
                    from: Some("n@example.com".into()),
                    body: Some("b".into()),
                    ..Default::default()
                },
                "subject",
                "required",
            ),
            (
                SubmitRequest {
                    channel: Some("email".into()),
                    to: Some("a@example.com".into()),
                    from: Some("n@example.com".into()),
                    subject: Some("s".into()),
                    ..Default::default()
                },
                "body",
                "required",
            ),
            (
                SubmitRequest {
                    channel: Some("push".into()),
                    to: Some("tok".into()),
                    body: Some("b".into()),
                    ..Default::default()
                },
                "to",
                "push_token",
            ),
        ];
        for (request, field, rule) in cases {
            let err = enrich(&request, &config).expect_err(&format!("{request:?}"));
            assert_eq!((err.field.as_str(), &*err.rule), (field, rule), "{err}");
        }
    }

    #[test]
    fn reference_and_metadata_are_kept() {
        let (message, _) = enrich(
            &SubmitRequest {
                reference: Some("order-77".into()),
                metadata: Some(
                    [("tenant".to_owned(), serde_json::json!("acme"))]
                        .into_iter()
                        .collect(),
                ),
                ..sms("+14155550123", "x")
            },
            &ClientConfig::default(),
        )
        .expect("valid");
        assert_eq!(message.reference.as_deref(), Some("order-77"));
        assert_eq!(
            message.metadata.as_ref().and_then(|m| m.get("tenant")),
            Some(&serde_json::json!("acme"))
        );
    }

    #[test]
    fn a_given_idempotency_key_is_kept() {
        let request = SubmitRequest {
            idempotency_key: Some("order-77".into()),
            ..sms("+14155550123", "x")
        };
        let (message, _) = enrich(&request, &ClientConfig::default()).expect("valid");
        assert_eq!(message.idempotency_key, "order-77");
    }

    #[test]
    fn push_to_a_user_and_email_with_html_only() {
        let push = SubmitRequest {
            channel: Some("push".into()),
            to: Some("user:alice".into()),
            title: Some("Hi".into()),
            body: Some("Your order shipped".into()),
            ..Default::default()
        };
        let (message, _) = enrich(&push, &ClientConfig::default()).expect("valid");
        assert_eq!(message.to, "user:alice");
        let email = SubmitRequest {
            channel: Some("email".into()),
            to: Some("a@EXAMPLE.com".into()),
            from: Some("noreply@example.com".into()),
            subject: Some("Receipt".into()),
            html: Some("<p>Thanks</p>".into()),
            ..Default::default()
        };
        let (message, _) = enrich(&email, &ClientConfig::default()).expect("valid");
        assert_eq!(message.to, "a@example.com");
        assert_eq!(message.sender, None);
    }
}
