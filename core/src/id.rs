use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A message id: `msg_` followed by a ULID, so ids sort by creation time.
/// It keeps the ULID's 128 bits beside its text, for stores that key by
/// them ([`MessageId::bits`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageId {
    text: String,
    bits: u128,
}

const PREFIX: &str = "msg_";

impl MessageId {
    /// A new id whose time part is now.
    pub fn generate() -> Self {
        Self::from_ulid(ulid::Ulid::new())
    }

    fn from_ulid(ulid: ulid::Ulid) -> Self {
        Self {
            text: format!("{PREFIX}{ulid}"),
            bits: ulid.0,
        }
    }

    /// The id whose ULID is `bits` (every value is one).
    pub fn from_bits(bits: u128) -> Self {
        Self::from_ulid(ulid::Ulid(bits))
    }

    /// The ULID's 128 bits: they sort as the ids do.
    pub fn bits(&self) -> u128 {
        self.bits
    }

    pub fn as_str(&self) -> &str {
        &self.text
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
        Ok(Self::from_ulid(ulid))
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
        id.text
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
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

    #[test]
    fn bits_name_the_id_and_sort_as_it_does() {
        let a = MessageId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = MessageId::generate();
        assert!(a.bits() < b.bits());
        assert_eq!(MessageId::from_bits(a.bits()), a);
        // Within one millisecond too (the random part decides).
        let mut by_text: Vec<MessageId> = (0..200).map(|_| MessageId::generate()).collect();
        let mut by_bits = by_text.clone();
        by_text.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        by_bits.sort_by_key(MessageId::bits);
        assert_eq!(by_text, by_bits);
        let parsed: MessageId = "msg_01ARZ3NDEKTSV4RRFFQ69G5FAV"
            .parse()
            .expect("a valid id");
        assert_eq!(parsed.bits(), 0x0156_3e3a_b5d3_d676_4c61_efb9_9302_bd5b);
        assert_eq!(
            MessageId::from_bits(0).as_str(),
            "msg_00000000000000000000000000"
        );
        assert_eq!(
            MessageId::from_bits(u128::MAX).as_str(),
            "msg_7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
        );
    }
}
