use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A message id: `msg_` followed by a ULID, so ids sort by creation time.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageId(String);

const PREFIX: &str = "msg_";

impl MessageId {
    /// A new id whose time part is now.
    pub fn generate() -> Self {
        Self(format!("{PREFIX}{}", ulid::Ulid::new()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
#[error("message id must be `msg_` followed by a 26-character ULID")]
pub struct InvalidMessageId;

impl FromStr for MessageId {
    type Err = InvalidMessageId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(PREFIX).ok_or(InvalidMessageId)?;
        let ulid = ulid::Ulid::from_string(rest).map_err(|_| InvalidMessageId)?;
        Ok(Self(format!("{PREFIX}{ulid}")))
    }
}

impl TryFrom<String> for MessageId {
    type Error = InvalidMessageId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MessageId> for String {
    fn from(id: MessageId) -> Self {
        id.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_sort_by_time() {
        let a = MessageId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = MessageId::generate();
        assert!(a < b);
        assert_eq!(a.as_str().parse::<MessageId>().ok(), Some(a.clone()));
        assert!(a.as_str().starts_with("msg_"));
    }

    #[test]
    fn rejects_ids_without_prefix_or_with_bad_ulid() {
        assert!("01ARZ3NDEKTSV4RRFFQ69G5FAV".parse::<MessageId>().is_err());
        assert!("msg_not-a-ulid".parse::<MessageId>().is_err());
        assert!("msg_".parse::<MessageId>().is_err());
    }
}
