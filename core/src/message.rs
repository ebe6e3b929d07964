use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{MessageId, Status, Timestamp};

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "must be one of: {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

named_enum!(
    /// The way a message reaches its recipient.
    Channel { Sms => "sms", Email => "email", Push => "push" }
);

named_enum!(
    /// Urgency lane. Each priority has its own topic per channel, with its own
    /// partition and consumer counts.
    Priority { Critical => "critical", Normal => "normal", Bulk => "bulk" }
);

named_enum!(
    /// What the message is for; selects the sender id, the default deadline and
    /// the vendor's message class (OTP / transactional / promotional).
    MessageType { Otp => "otp", Transactional => "transactional", Marketing => "marketing" }
);

/// How an SMS body is encoded on the air interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmsEncoding {
    Gsm7,
    Ucs2,
}

/// Who a push notification goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum PushTarget {
    DeviceToken(String),
    UserId(String),
}

/// An email attachment; `content_base64` is validated base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub content_base64: String,
}

/// The channel-specific part of a message, already validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "channel")]
pub enum Content {
    Sms {
        body: String,
        encoding: SmsEncoding,
        segments: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template_id: Option<String>,
    },
    Email {
        from: String,
        subject: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        html: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<Attachment>,
    },
    Push {
        target: PushTarget,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        body: String,
        #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
        data: serde_json::Map<String, serde_json::Value>,
    },
}

/// What replaces a body the retention removed.
pub const REMOVED_BODY: &str = "[removed by retention]";

impl Content {
    /// Drops what the recipient reads (bodies, HTML, attachments, push
    /// title and data), keeping the shape; for retention. True when
    /// something was left to drop.
    pub fn redact(&mut self) -> bool {
        let before = self.clone();
        match self {
            Content::Sms { body, .. } => *body = REMOVED_BODY.to_owned(),
            Content::Email {
                subject,
                text,
                html,
                attachments,
                ..
            } => {
                *subject = REMOVED_BODY.to_owned();
                *text = Some(REMOVED_BODY.to_owned());
                *html = None;
                attachments.clear();
            }
            Content::Push {
                title, body, data, ..
            } => {
                *title = None;
                *body = REMOVED_BODY.to_owned();
                data.clear();
            }
        }
        *self != before
    }

    pub fn channel(&self) -> Channel {
        match self {
            Content::Sms { .. } => Channel::Sms,
            Content::Email { .. } => Channel::Email,
            Content::Push { .. } => Channel::Push,
        }
    }
}

/// A validated, enriched message: what producers put on a priority topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub priority: Priority,
    #[serde(rename = "type")]
    pub message_type: MessageType,
    /// Normalised recipient: E.164 number, lower-cased address domain, device
    /// token or `user:` id. Also the queue key, so one recipient's messages
    /// keep their order.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    pub content: Content,
    pub idempotency_key: String,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub created_at: Timestamp,
    /// After this instant the message is `expired`, never sent late.
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub deadline: Timestamp,
    /// The caller's own reference, returned with every outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The caller's key-value data, returned with every outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The internal service whose API key submitted it; none when the API
    /// runs without keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Produced straight to its priority topic by a linking service (the
    /// client's direct transport), with no record stored yet: the dispatcher
    /// records it before anything else.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
}

const OWN_KEY_PREFIX: &str = "auto:";

impl Message {
    pub fn channel(&self) -> Channel {
        self.content.channel()
    }

    /// The idempotency key of a message sent without one: `auto:` and its
    /// own id, so every such submission is new.
    pub fn own_idempotency_key(id: &MessageId) -> String {
        format!("{OWN_KEY_PREFIX}{id}")
    }

    /// The message whose own key ([`Message::own_idempotency_key`]) this
    /// message's key is, if it is one. A store can find that message by
    /// its id and need not index such keys.
    pub fn idempotency_key_owner(&self) -> Option<MessageId> {
        self.idempotency_key
            .strip_prefix(OWN_KEY_PREFIX)?
            .parse()
            .ok()
    }

    /// The idempotency key as stores keep it unique: per service, so two
    /// services' keys never collide.
    pub fn idempotency_scope(&self) -> String {
        match &self.service {
            Some(service) => [service, "\u{1f}", &self.idempotency_key].concat(),
            None => self.idempotency_key.clone(),
        }
    }

    /// Whether `other` asks for the same message: same recipient, content,
    /// priority, type, sender, reference and metadata. A reused idempotency
    /// key with a different request is refused.
    pub fn same_request(&self, other: &Message) -> bool {
        self.to == other.to
            && self.content == other.content
            && self.priority == other.priority
            && self.message_type == other.message_type
            && self.sender == other.sender
            && self.reference == other.reference
            && self.metadata == other.metadata
            && self.service == other.service
    }
}

/// One entry of a message's append-only trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub at: Timestamp,
    /// The part of MDC that recorded it: `ingest`, `dispatcher`, `response-handler`, ...
    pub component: String,
    /// The status the message moved to, when the event moved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    pub details: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The vendor's own payload, verbatim, when the event came from a vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<serde_json::Value>,
}

impl Event {
    pub fn new(component: &str, details: impl Into<String>) -> Self {
        Self {
            at: crate::now(),
            component: component.to_owned(),
            status: None,
            details: details.into(),
            provider: None,
            provider_message_id: None,
            error: None,
            raw: None,
        }
    }

    pub fn status(mut self, status: Status) -> Self {
        self.status = Some(status);
        self
    }

    pub fn provider(mut self, provider: &str, provider_message_id: Option<&str>) -> Self {
        self.provider = Some(provider.to_owned());
        self.provider_message_id = provider_message_id.map(str::to_owned);
        self
    }

    pub fn error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    pub fn raw(mut self, raw: serde_json::Value) -> Self {
        self.raw = Some(raw);
        self
    }
}

/// The stored state of a message: the message itself, where it is, and its trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub message: Message,
    pub status: Status,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub updated_at: Timestamp,
    /// Send attempts started so far.
    pub attempts: u32,
    /// While an attempt is in flight: the time after which its sender is presumed dead.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::rfc3339::serialize_option"
    )]
    pub lease_until: Option<Timestamp>,
    /// When the next attempt is due, while a retry is pending.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::rfc3339::serialize_option"
    )]
    pub next_attempt_at: Option<Timestamp>,
    /// Set after an ambiguous outcome: ask the vendor before sending again.
    #[serde(default)]
    pub verify_before_send: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(default)]
    pub events: Vec<Event>,
}

impl MessageRecord {
    /// Retention: the content's bodies and the vendors' payloads in the
    /// trail go; status, times and ids stay. True when anything changed.
    pub fn redact(&mut self) -> bool {
        let mut changed = self.message.content.redact();
        for event in &mut self.events {
            changed |= event.raw.take().is_some();
        }
        changed
    }

    pub fn new(message: Message, status: Status, event: Event) -> Self {
        Self {
            updated_at: event.at,
            message,
            status,
            attempts: 0,
            lease_until: None,
            next_attempt_at: None,
            verify_before_send: false,
            provider: None,
            provider_message_id: None,
            events: vec![event],
        }
    }

    /// A newly accepted message, `queued` on its priority topic, as the
    /// accept path records it: `component` accepted it `how`.
    pub fn accepted(message: Message, component: &str, how: &str) -> Self {
        let queued = [
            "queued on ",
            message.channel().as_str(),
            ".",
            message.priority.as_str(),
        ]
        .concat();
        let mut record = Self::new(
            message,
            Status::Queued,
            Event::new(component, how).status(Status::Accepted),
        );
        record
            .events
            .push(Event::new(component, queued).status(Status::Queued));
        record
    }
}

impl Message {
    /// The record a producer puts on a priority topic.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Counts the message in `mdc_messages_accepted_total`, once its record
    /// is new (by the accept path or, for one produced directly, the
    /// dispatcher).
    pub fn count_accepted(&self) {
        metrics::counter!(
            "mdc_messages_accepted_total",
            "channel" => self.channel().as_str(),
            "priority" => self.priority.as_str(),
        )
        .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores keep keys unique under this text; a store written by an
    /// earlier version must still find them.
    #[test]
    fn an_idempotency_key_is_scoped_by_its_service() {
        let mut message: Message = serde_json::from_value(serde_json::json!({
            "id": "msg_01KAAAAAAAAAAAAAAAAAAAAAAA", "priority": "normal", "type": "transactional",
            "to": "+14155550123", "content": {"channel": "sms", "body": "hi", "encoding": "gsm7", "segments": 1},
            "idempotency_key": "order-7", "created_at": "2026-12-01T10:00:00Z", "deadline": "2026-12-02T10:00:00Z"
        }))
        .expect("message");
        assert_eq!(message.idempotency_scope(), "order-7");
        message.service = Some("billing".into());
        assert_eq!(message.idempotency_scope(), "billing\u{1f}order-7");
    }
}
