//! Trail events encoded before their write reaches the store writer (a
//! creation's message is encoded ahead too, by the create itself). The
//! writer is one thread that applies every write of a group commit in turn
//! and then waits for the disk; encoding a value (JSON, then zstd) was a
//! fifth of its time, and the caller's thread can do it while the writer
//! is busy with the writes before.

use mdc_core::Event;

use super::event_codec;
use crate::db::DbError;

/// Events encoded ahead of a write, as the write expects to append them.
/// The write takes the bytes of an event it appends that equals one of
/// them, and encodes any other itself (a transition that did not apply as
/// expected appends a different event).
#[derive(Default)]
pub(super) struct Prepared(Vec<(Event, Vec<u8>)>);

impl Prepared {
    /// Encodes `events`, on the caller's thread.
    pub fn of(events: impl IntoIterator<Item = Event>) -> Result<Self, DbError> {
        let mut prepared = Vec::new();
        for event in events {
            let bytes = event_codec::encode(&event)?;
            prepared.push((event, bytes));
        }
        Ok(Self(prepared))
    }

    /// The stored form of `event`: prepared if it was, encoded now if not.
    pub fn bytes(&mut self, event: &Event) -> Result<Vec<u8>, DbError> {
        match self.0.iter().position(|(e, _)| e == event) {
            Some(i) => Ok(self.0.swap_remove(i).1),
            None => event_codec::encode(event),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prepared_event_is_used_once_and_any_other_is_encoded() {
        let sent = Event::new("dispatcher", "sent");
        let other = Event::new("dispatcher", "sent (ignored: message is delivered)");
        // Marked bytes show which were prepared.
        let mut prepared = Prepared(vec![(sent.clone(), b"prepared".to_vec())]);
        assert_eq!(prepared.bytes(&sent).expect("bytes"), b"prepared");
        let bytes = prepared.bytes(&other).expect("bytes");
        assert_eq!(event_codec::decode(&bytes).expect("decodes"), other);
        // Taken once: asked again, it is encoded.
        let again = prepared.bytes(&sent).expect("bytes");
        assert_eq!(event_codec::decode(&again).expect("decodes"), sent);

        let mut prepared = Prepared::of([sent.clone(), other.clone()]).expect("encodes");
        for event in [other, sent] {
            let bytes = prepared.bytes(&event).expect("bytes");
            assert_eq!(event_codec::decode(&bytes).expect("decodes"), event);
        }
        assert!(prepared.0.is_empty());
    }
}
