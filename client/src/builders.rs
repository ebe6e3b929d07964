//! Typed builders for the three channels. Each turns into a
//! [`SubmitRequest`]; nothing is checked until [`crate::Client::send`]
//! validates it, so a mistake is reported with the field it concerns.

use base64::Engine as _;
use mdc_core::message::Attachment;
use mdc_core::{MessageType, Priority};
use serde_json::{Map, Value};

use crate::SubmitRequest;

/// What every channel's builder offers.
macro_rules! common {
    ($name:ident) => {
        impl $name {
            /// The lane: `critical` overtakes `normal`, which overtakes `bulk`.
            pub fn priority(mut self, priority: Priority) -> Self {
                self.0.priority = Some(priority.as_str().to_owned());
                self
            }

            /// What the message is for (OTP, transactional, marketing): it
            /// picks the sender id, the deadline and the vendor's class.
            pub fn kind(mut self, kind: MessageType) -> Self {
                self.0.message_type = Some(kind.as_str().to_owned());
                self
            }

            /// Makes sending again safe: MDC accepts one message per key and
            /// service. Without one, the client makes one per `send` call,
            /// which covers its own retries.
            pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
                self.0.idempotency_key = Some(key.into());
                self
            }

            /// Your own reference (an order id, say), returned with every outcome.
            pub fn reference(mut self, reference: impl Into<String>) -> Self {
                self.0.reference = Some(reference.into());
                self
            }

            /// A key-value pair of your own, returned with every outcome.
            pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
                self.0
                    .metadata
                    .get_or_insert_with(Map::new)
                    .insert(key.into(), value.into());
                self
            }
        }

        impl From<$name> for SubmitRequest {
            fn from(builder: $name) -> SubmitRequest {
                builder.0
            }
        }
    };
}

fn request(channel: &str, to: String) -> SubmitRequest {
    SubmitRequest {
        channel: Some(channel.to_owned()),
        to: Some(to),
        ..SubmitRequest::default()
    }
}

/// An SMS: `Sms::to("+14155550123").body("Your code is 123456").kind(MessageType::Otp)`.
#[derive(Debug, Clone)]
#[must_use]
pub struct Sms(SubmitRequest);

impl Sms {
    /// A phone number, best in E.164 (`+14155550123`).
    pub fn to(number: impl Into<String>) -> Self {
        Sms(request("sms", number.into()))
    }

    pub fn body(mut self, text: impl Into<String>) -> Self {
        self.0.body = Some(text.into());
        self
    }

    /// A sender id of its own instead of the one configured for the type.
    pub fn sender(mut self, sender: impl Into<String>) -> Self {
        self.0.from = Some(sender.into());
        self
    }

    /// The registered template (India DLT).
    pub fn template_id(mut self, id: impl Into<String>) -> Self {
        self.0.template_id = Some(id.into());
        self
    }
}

common!(Sms);

/// An email: `Email::to("ada@example.com").from("shop@example.com").subject("Receipt").body("Thanks")`.
#[derive(Debug, Clone)]
#[must_use]
pub struct Email(SubmitRequest);

impl Email {
    pub fn to(address: impl Into<String>) -> Self {
        Email(request("email", address.into()))
    }

    pub fn from(mut self, address: impl Into<String>) -> Self {
        self.0.from = Some(address.into());
        self
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.0.subject = Some(subject.into());
        self
    }

    /// The plain-text body.
    pub fn body(mut self, text: impl Into<String>) -> Self {
        self.0.body = Some(text.into());
        self
    }

    /// An HTML alternative to the text body.
    pub fn html(mut self, html: impl Into<String>) -> Self {
        self.0.html = Some(html.into());
        self
    }

    /// Attaches a file (its bytes; sizes are checked when sent).
    pub fn attach(
        mut self,
        filename: impl Into<String>,
        content_type: impl Into<String>,
        content: &[u8],
    ) -> Self {
        self.0
            .attachments
            .get_or_insert_with(Vec::new)
            .push(Attachment {
                filename: filename.into(),
                content_type: content_type.into(),
                content_base64: base64::engine::general_purpose::STANDARD.encode(content),
            });
        self
    }
}

common!(Email);

/// A mobile push: to a device token (`Push::to(token)`) or to every device
/// a user registered (`Push::to_user("42")`).
#[derive(Debug, Clone)]
#[must_use]
pub struct Push(SubmitRequest);

impl Push {
    /// A device token (APNs or FCM) or an SNS endpoint ARN.
    pub fn to(target: impl Into<String>) -> Self {
        Push(request("push", target.into()))
    }

    /// Every device registered for the user.
    pub fn to_user(user: impl AsRef<str>) -> Self {
        Push(request("push", format!("user:{}", user.as_ref())))
    }

    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.0.title = Some(title.into());
        self
    }

    pub fn body(mut self, text: impl Into<String>) -> Self {
        self.0.body = Some(text.into());
        self
    }

    /// A key-value pair delivered to the app with the notification.
    pub fn data(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.0
            .data
            .get_or_insert_with(Map::new)
            .insert(key.into(), value.into());
        self
    }
}

common!(Push);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{enrich, ClientConfig};
    use mdc_core::Content;

    #[test]
    fn builders_fill_the_request_the_api_takes() {
        let sms: SubmitRequest = Sms::to("+14155550123")
            .body("Your code is 123456")
            .priority(Priority::Critical)
            .kind(MessageType::Otp)
            .reference("order-7")
            .metadata("attempt", 2)
            .into();
        let (message, _) = enrich(&sms, &ClientConfig::default()).expect("valid");
        assert_eq!(message.priority, Priority::Critical);
        assert_eq!(message.message_type, MessageType::Otp);
        assert_eq!(message.sender.as_deref(), Some("MDCOTP"));
        assert_eq!(message.reference.as_deref(), Some("order-7"));
        assert_eq!(message.metadata.expect("metadata")["attempt"], 2);

        let email: SubmitRequest = Email::to("Ada@Example.COM")
            .from("shop@example.com")
            .subject("Receipt")
            .body("Thanks")
            .html("<p>Thanks</p>")
            .attach("receipt.txt", "text/plain", b"paid")
            .into();
        let (message, _) = enrich(&email, &ClientConfig::default()).expect("valid");
        assert_eq!(message.to, "Ada@example.com");
        let Content::Email { attachments, .. } = message.content else {
            panic!("not an email: {:?}", message.content);
        };
        assert_eq!(attachments[0].content_base64, "cGFpZA==");

        let push: SubmitRequest = Push::to_user("42")
            .title("Shipped")
            .data("order", 42)
            .into();
        assert_eq!(push.to.as_deref(), Some("user:42"));
        assert_eq!(push.data.expect("data")["order"], 42);
    }

    #[test]
    fn a_missing_field_is_named() {
        let e =
            enrich(&Sms::to("+14155550123").into(), &ClientConfig::default()).expect_err("no body");
        assert_eq!(e.field, "body");
    }
}
