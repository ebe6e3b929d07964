use std::borrow::Cow;
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

    /// Written without the formatting machinery: ids are made and read
    /// several times for every message.
    fn from_ulid(ulid: ulid::Ulid) -> Self {
        let mut encoded = [0; ulid::ULID_LEN];
        let mut text = String::with_capacity(PREFIX.len() + ulid::ULID_LEN);
        text.push_str(PREFIX);
        text.push_str(ulid.array_to_str(&mut encoded));
        Self { text, bits: ulid.0 }
    }

    /// The id `text` names, keeping `text` itself when it is already
    /// written as ids are (upper case), else written again.
    fn parse(text: Cow<'_, str>) -> Result<Self, InvalidMessageId> {
        let rest = text.strip_prefix(PREFIX).ok_or(InvalidMessageId)?;
        let ulid = ulid::Ulid::from_string(rest).map_err(|_| InvalidMessageId)?;
        let mut encoded = [0; ulid::ULID_LEN];
        if ulid.array_to_str(&mut encoded) != rest {
            return Ok(Self::from_ulid(ulid));
        }
        Ok(Self {
            text: text.into_owned(),
            bits: ulid.0,
        })
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
        Self::parse(Cow::Borrowed(s))
    }
}

impl TryFrom<String> for MessageId {
    type Error = InvalidMessageId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(Cow::Owned(s))
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

    /// An id read in another case is written as ids are, whichever way it
    /// is read; one already written so keeps its text.
    #[test]
    fn ids_read_in_lower_case_are_written_in_upper_case() {
        let canonical = "msg_01ARZ3NDEKTSV4RRFFQ69G5FAV";
        let lower = "msg_01arz3ndektsv4rrffq69g5fav";
        let parsed: MessageId = lower.parse().expect("a valid id");
        assert_eq!(parsed.as_str(), canonical);
        let read: MessageId = serde_json::from_str(&format!("\"{lower}\"")).expect("a valid id");
        assert_eq!(read.as_str(), canonical);
        assert_eq!(read, parsed);
        let kept = MessageId::try_from(canonical.to_owned()).expect("a valid id");
        assert_eq!(kept, parsed);
        assert_eq!(kept.to_string(), canonical);
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
