//! How the store writes trail events. The usual events of a message's
//! way (its creation, its queuing, each attempt's start) are written in a
//! fixed binary layout (tag [`EVENT_V1`]): their JSON compressed with the
//! dictionary ([`codec`]) took about 1.2 µs to make, the layout takes
//! about 0.2, and it is smaller, as a known component is one byte and the
//! time eight. An event carrying a vendor payload (`sent`, a delivery
//! report) or an error is still JSON compressed with the dictionary: the
//! payload repeats the vendor's id and field names and an error's text
//! names times and causes, which the dictionary squeezes to half of what
//! a plain layout keeps (every event in the layout took a fifth more disk
//! per message, above the target; docs/benchmarks.md).
//!
//! Events written before (JSON, compressed or plain) are read as they
//! are; an event the layout cannot hold (a text over 64 KiB, a time
//! outside 1677-2262) is written as JSON.

use mdc_core::Event;

use super::codec;
use super::record::{nanos, status_code, status_of, Reader};
use crate::db::DbError;

/// Tag of an event in the binary layout.
const EVENT_V1: u8 = 3;

/// Flags: which of the optional fields follow.
const HAS_PROVIDER: u8 = 1;
const HAS_PROVIDER_MESSAGE_ID: u8 = 1 << 1;
const KNOWN_FLAGS: u8 = HAS_PROVIDER | HAS_PROVIDER_MESSAGE_ID;

/// The status byte of an event that moved no status.
const NO_STATUS: u8 = u8::MAX;

/// Components by their stored code; code 0 means the component's text
/// follows. Fixed: codes on disk keep their meaning; a new one takes the
/// next code.
const COMPONENTS: [&str; 6] = [
    "ingest",
    "dispatcher",
    "response-handler",
    "reconciler",
    "support",
    "trail",
];

/// The stored form of `event`.
pub(super) fn encode(event: &Event) -> Result<Vec<u8>, DbError> {
    match binary(event)? {
        Some(bytes) => Ok(bytes),
        None => codec::encode(event),
    }
}

/// An event as [`encode`] wrote it, or as it was written before.
pub(super) fn decode(bytes: &[u8]) -> Result<Event, DbError> {
    match bytes.first() {
        Some(&EVENT_V1) => from_binary(&bytes[1..]),
        _ => codec::decode(bytes),
    }
}

/// Tag, flags, status code, component code, time (ns), the component's
/// text (when its code is 0), details, then what the flags say is there:
/// provider and its message id; each text a u16 length and UTF-8. None
/// for an event with a vendor payload or an error, or a field the layout
/// cannot hold.
fn binary(event: &Event) -> Result<Option<Vec<u8>>, DbError> {
    // Every field named: a new one cannot be left out of the layout.
    let Event {
        at,
        component,
        status,
        details,
        provider,
        provider_message_id,
        error,
        raw,
    } = event;
    if raw.is_some() || error.is_some() {
        return Ok(None);
    }
    let Ok(at) = nanos(*at) else {
        return Ok(None);
    };
    let mut flags = 0;
    for (present, flag) in [
        (provider.is_some(), HAS_PROVIDER),
        (provider_message_id.is_some(), HAS_PROVIDER_MESSAGE_ID),
    ] {
        if present {
            flags |= flag;
        }
    }
    let status = match status {
        Some(status) => status_code(*status)?,
        None => NO_STATUS,
    };
    let known = COMPONENTS.iter().position(|c| c == component);
    let mut out = Vec::with_capacity(48);
    out.extend_from_slice(&[EVENT_V1, flags, status, known.map_or(0, |i| i as u8 + 1)]);
    out.extend_from_slice(&at);
    for text in [
        known.is_none().then_some(component),
        Some(details),
        provider.as_ref(),
        provider_message_id.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let Ok(len) = u16::try_from(text.len()) else {
            return Ok(None);
        };
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    Ok(Some(out))
}

fn from_binary(bytes: &[u8]) -> Result<Event, DbError> {
    let mut r = Reader(bytes);
    let flags = r.byte()?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(DbError::Storage(format!(
            "stored event has unknown flags ({flags:#04x})"
        )));
    }
    let has = |flag: u8| flags & flag != 0;
    let status = match r.byte()? {
        NO_STATUS => None,
        code => Some(status_of(code)?),
    };
    let known =
        match r.byte()? {
            0 => None,
            code => Some(*COMPONENTS.get(code as usize - 1).ok_or_else(|| {
                DbError::Storage(format!("unknown stored component code {code}"))
            })?),
        };
    let at = r.time()?;
    let component = match known {
        Some(component) => component.to_owned(),
        None => r.text()?,
    };
    let details = r.text()?;
    let provider = has(HAS_PROVIDER).then(|| r.text()).transpose()?;
    let provider_message_id = has(HAS_PROVIDER_MESSAGE_ID).then(|| r.text()).transpose()?;
    if !r.0.is_empty() {
        return Err(DbError::Storage(format!(
            "stored event has {} bytes past its end",
            r.0.len()
        )));
    }
    Ok(Event {
        at,
        component,
        status,
        details,
        provider,
        provider_message_id,
        error: None,
        raw: None,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use mdc_core::Status;
    use serde_json::json;

    use super::*;
    use crate::store::samples;

    /// Every channel's and vendor's trails: events without a vendor
    /// payload or an error in the layout, the others compressed, all read
    /// back as written; the layout's events take less space than
    /// compressing them would.
    #[test]
    fn events_come_back_as_written_in_no_more_space() {
        let (mut in_layout, mut binary, mut compressed) = (0, 0, 0);
        for record in samples::records(11, 500) {
            for event in &record.events {
                let bytes = encode(event).expect("encodes");
                let plain = event.raw.is_none() && event.error.is_none();
                assert_eq!(bytes[0] == EVENT_V1, plain);
                assert_eq!(decode(&bytes).expect("decodes"), *event);
                if bytes[0] == EVENT_V1 {
                    in_layout += 1;
                    binary += bytes.len();
                    compressed += codec::encode(event).expect("encodes").len();
                }
            }
        }
        assert!(in_layout > 1000, "{in_layout} events in the layout");
        assert!(
            binary < compressed,
            "{binary} bytes in the layout, {compressed} compressed"
        );
    }

    #[test]
    fn every_field_of_an_event_is_kept() {
        let mut event =
            Event::new("response-handler", "a report for attempt 2").status(Status::Sent);
        event.provider = Some("kaleyra".into());
        event.provider_message_id = Some("k-77".into());
        let bytes = encode(&event).expect("encodes");
        assert_eq!(bytes[0], EVENT_V1);
        assert_eq!(decode(&bytes).expect("decodes"), event);
    }

    #[test]
    fn a_component_without_a_code_is_kept_as_text() {
        for component in ["dispatcher", "billing-sync", ""] {
            let event = Event::new(component, "noted");
            let bytes = encode(&event).expect("encodes");
            assert_eq!(bytes[3] == 0, !COMPONENTS.contains(&component));
            assert_eq!(decode(&bytes).expect("decodes"), event);
        }
    }

    #[test]
    fn events_the_layout_does_not_hold_are_written_as_json() {
        let mut far = Event::new("ingest", "accepted");
        far.at = Utc.with_ymd_and_hms(2300, 1, 1, 0, 0, 0).unwrap();
        let long = Event::new("ingest", "x".repeat(70_000));
        let vendor = Event::new("response-handler", "delivered").raw(json!({ "id": "k-1" }));
        let failed = Event::new("dispatcher", "attempt 1 failed").error("connection reset");
        for event in [far, long, vendor, failed] {
            let bytes = encode(&event).expect("encodes");
            assert_ne!(bytes[0], EVENT_V1);
            assert_eq!(decode(&bytes).expect("decodes"), event);
        }
    }

    /// Trails written before the layout: JSON, compressed or plain.
    #[test]
    fn events_written_as_json_are_still_read() {
        let event = Event::new("ingest", "queued on sms.bulk").status(Status::Queued);
        let compressed = codec::encode(&event).expect("encodes");
        let plain = serde_json::to_vec(&event).expect("serialises");
        for bytes in [compressed, plain] {
            assert_eq!(decode(&bytes).expect("decodes"), event);
        }
    }

    #[test]
    fn damaged_events_are_errors_not_panics() {
        let mut event = Event::new("dispatcher", "attempt 1 started").status(Status::Sending);
        event.provider = Some("kaleyra".into());
        let bytes = encode(&event).expect("encodes");
        let mut longer = bytes.clone();
        longer.push(0);
        let mut unknown_flag = bytes.clone();
        unknown_flag[1] |= 1 << 7;
        let mut bad_status = bytes.clone();
        bad_status[2] = 200;
        let mut bad_component = bytes.clone();
        bad_component[3] = 200;
        let mut bad_text = bytes.clone();
        // The first byte of the details' text.
        bad_text[4 + 8 + 2] = 0xff;
        for broken in [
            &[EVENT_V1][..],
            &bytes[..bytes.len() - 1],
            &bytes[..12],
            &longer,
            &unknown_flag,
            &bad_status,
            &bad_component,
            &bad_text,
        ] {
            assert!(decode(broken).is_err(), "{broken:?}");
        }
    }
}
