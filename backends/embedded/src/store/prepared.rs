//! Trail events encoded before their write reaches the store writer (a
//! creation's message is encoded ahead too, by the create itself). The
//! writer is one thread that applies every write of a group commit in turn
//! and then waits for the disk; encoding a value (JSON, then zstd) was a
//! fifth of its time, and the caller's thread can do it while the writer
//! is busy with the writes before.

use mdc_core::ports::Transition;
use mdc_core::Event;

use super::event_codec;
use crate::db::DbError;

/// Events encoded ahead of a write, as the write expects to append them.
/// The write takes the bytes of an event it appends that equals one of
/// them, and encodes any other itself (a transition that did not apply as
/// expected appends a different event). Vendor payloads are not compared
/// ([`same_but_payload`]).
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

    /// The event `update` appends when it applies, encoded on the caller's
    /// thread without copying its vendor payload: what is kept to match it
    /// is the event without the payload ([`same_but_payload`]).
    pub fn of_update(update: &mut Transition) -> Result<Self, DbError> {
        let prepared = update.prepare_event(|event| {
            let bytes = event_codec::encode(event)?;
            Ok::<_, DbError>((without_payload(event), bytes))
        });
        Ok(Self(prepared.transpose()?.into_iter().collect()))
    }

    /// The stored form of `event`: prepared if it was, encoded now if not.
    pub fn bytes(&mut self, event: &Event) -> Result<Vec<u8>, DbError> {
        match self.0.iter().position(|(e, _)| same_but_payload(e, event)) {
            Some(i) => Ok(self.0.swap_remove(i).1),
            None => event_codec::encode(event),
        }
    }
}

/// Whether `a` and `b` are the same event, their vendor payloads (`raw`)
/// aside. A write's prepared events come from the write itself (the
/// transition it applies, the record it creates, its claim), and the rules
/// change at most an event's status and details, never its payload
/// (`mdc_core::ports::store` tests it); comparing the payloads, a JSON tree
/// each, was most of the matching's cost in the store writer.
fn same_but_payload(a: &Event, b: &Event) -> bool {
    // Every field named, so a new one is not left out unseen.
    let Event {
        at,
        component,
        status,
        details,
        provider,
        provider_message_id,
        error,
        raw: _,
    } = a;
    *at == b.at
        && *status == b.status
        && *details == b.details
        && *component == b.component
        && *provider == b.provider
        && *provider_message_id == b.provider_message_id
        && *error == b.error
        && a.raw.is_some() == b.raw.is_some()
}

/// `event` with a stand-in for its payload, enough for
/// [`same_but_payload`].
fn without_payload(event: &Event) -> Event {
    Event {
        at: event.at,
        component: event.component.clone(),
        status: event.status,
        details: event.details.clone(),
        provider: event.provider.clone(),
        provider_message_id: event.provider_message_id.clone(),
        error: event.error.clone(),
        raw: event.raw.as_ref().map(|_| serde_json::Value::Null),
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

    /// An event is matched whatever its payload holds, but one with a
    /// payload never matches one without.
    #[test]
    fn events_are_matched_without_comparing_their_payloads() {
        let sent = Event::new("response-handler", "sent").raw(serde_json::json!({"id": "k-1"}));
        let mut other_payload = sent.clone();
        other_payload.raw = Some(serde_json::json!({"id": "k-2"}));
        let mut none = sent.clone();
        none.raw = None;
        assert!(same_but_payload(&sent, &other_payload));
        assert!(!same_but_payload(&sent, &none));
        let mut later = sent.clone();
        later.at += chrono::Duration::nanoseconds(1);
        assert!(!same_but_payload(&sent, &later));
        let mut ignored = sent.clone();
        ignored.details.push_str(" (ignored: message is delivered)");
        assert!(!same_but_payload(&sent, &ignored));
    }

    /// An update's event is prepared as it will be appended (with the
    /// status the update moves to, its payload encoded), and the update is
    /// left as it was.
    #[test]
    fn an_update_s_event_is_prepared_as_it_will_be_appended() {
        let event = Event::new("response-handler", "delivered")
            .raw(serde_json::json!({"status": "DELIVRD"}));
        let update = Transition::Reported {
            status: mdc_core::Status::Delivered,
            provider: "kaleyra".into(),
            provider_message_id: "k-1".into(),
            event,
        };
        let appended = update.event_when_applied().expect("an event");
        let mut lent = update.clone();
        let mut prepared = Prepared::of_update(&mut lent).expect("encodes");
        assert_eq!(lent, update, "left as it was");
        assert_eq!(prepared.0.len(), 1);
        let bytes = prepared.bytes(&appended).expect("bytes");
        assert!(prepared.0.is_empty(), "the prepared bytes were taken");
        assert_eq!(event_codec::decode(&bytes).expect("decodes"), appended);

        let mut extend = Transition::LeaseExtended {
            attempt: 1,
            until: mdc_core::now(),
        };
        assert!(Prepared::of_update(&mut extend)
            .expect("nothing to encode")
            .0
            .is_empty());
    }
}
