//! Parsers for everything a caller sends: each returns the normalised value or
//! an error naming the field and the rule it broke.

mod attachment;
mod email;
mod phone;
mod push;
mod text;

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use attachment::attachments;
pub use email::email_address;
pub use phone::{load_phone_metadata, phone_number};
pub use push::{push_payload, push_target};
pub use text::{email_subject, sms_body, SmsShape, SMS_GSM7_SEGMENT, SMS_UCS2_SEGMENT};

/// Input MDC cannot accept. `field` is the request field; `rule` a stable
/// machine-readable name of the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub rule: Cow<'static, str>,
    pub message: String,
}

impl ValidationError {
    pub fn new(
        field: &str,
        rule: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.to_owned(),
            rule: rule.into(),
            message: message.into(),
        }
    }
}

/// Accepted, but worth knowing (a fixed-line number, a multi-part SMS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub field: String,
    pub message: String,
}

impl Warning {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
