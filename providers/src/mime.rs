//! Builds the MIME message of an email (text, HTML alternative, attachments),
//! shared by the SMTP adapter and SES raw sends.

use base64::Engine;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment as MimeAttachment, Mailbox, MultiPart, SinglePart};
use mdc_core::message::Attachment;
use mdc_core::{Content, Message};

use crate::error::BuildError;

/// The Message-ID MDC gives an email: it correlates bounces and replies.
pub fn message_id(message: &Message) -> String {
    format!("<{}@mdc>", message.id)
}

pub fn build(message: &Message) -> Result<lettre::Message, BuildError> {
    let Content::Email {
        from,
        subject,
        text,
        html,
        attachments,
    } = &message.content
    else {
        return Err(BuildError("not an email".into()));
    };
    let from: Mailbox = from.parse().map_err(|e| BuildError(format!("from: {e}")))?;
    let to: Mailbox = message
        .to
        .parse()
        .map_err(|e| BuildError(format!("to: {e}")))?;
    let mut builder = lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .message_id(Some(message_id(message)));
    builder = builder.header(MdcId(message.id.to_string()));
    let body = match (text, html) {
        (Some(text), Some(html)) => MultiPart::alternative_plain_html(text.clone(), html.clone()),
        (Some(text), None) => MultiPart::mixed().singlepart(SinglePart::plain(text.clone())),
        (None, Some(html)) => MultiPart::mixed().singlepart(SinglePart::html(html.clone())),
        (None, None) => MultiPart::mixed().singlepart(SinglePart::plain(String::new())),
    };
    let email = if attachments.is_empty() {
        builder.multipart(body)
    } else {
        let mut mixed = MultiPart::mixed().multipart(body);
        for attachment in attachments {
            mixed = mixed.singlepart(part(attachment)?);
        }
        builder.multipart(mixed)
    };
    email.map_err(|e| BuildError(e.to_string()))
}

fn part(attachment: &Attachment) -> Result<SinglePart, BuildError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(attachment.content_base64.as_bytes())
        .map_err(|e| BuildError(format!("attachment {}: {e}", attachment.filename)))?;
    let kind = ContentType::parse(&attachment.content_type)
        .map_err(|e| BuildError(format!("attachment {}: {e}", attachment.filename)))?;
    Ok(MimeAttachment::new(attachment.filename.clone()).body(bytes, kind))
}

/// `X-MDC-Message-Id`, so any copy of the mail leads back to its message.
#[derive(Clone)]
struct MdcId(String);

impl lettre::message::header::Header for MdcId {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-MDC-Message-Id")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}
