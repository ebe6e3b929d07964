//! The state's binary layout: what it keeps, its fixed codes, and damage.

use super::*;

fn state() -> State {
    let at = mdc_core::now();
    State {
        status: Status::Queued,
        updated_at: at,
        created_at: at - chrono::Duration::milliseconds(3),
        attempts: 0,
        lease_until: None,
        next_attempt_at: None,
        verify_before_send: false,
        provider: None,
        provider_message_id: None,
        next_event: None,
        trail: Vec::new(),
        channel: None,
    }
}

#[test]
fn states_come_back_as_written() {
    let at = mdc_core::now();
    let mut cases = vec![state()];
    for (i, status) in Status::ALL.into_iter().enumerate() {
        let mut s = state();
        s.status = status;
        s.attempts = i as u32 * 1_000_000;
        s.lease_until = (i % 2 == 0).then_some(at + chrono::Duration::seconds(30));
        s.next_attempt_at = (i % 3 == 0).then_some(at + chrono::Duration::minutes(2));
        s.verify_before_send = i % 2 == 1;
        s.provider = (i > 2).then(|| "kaleyra".to_owned());
        s.provider_message_id = (i > 3).then(|| format!("ñ-{}", "x".repeat(i * 300)));
        s.next_event = (i % 2 == 1).then_some(u32::MAX - i as u32);
        if i % 4 == 1 {
            s.trail = (0..i).map(|n| vec![n as u8; n * 40]).collect();
        }
        s.channel = (i % 4).checked_sub(1).map(|c| Channel::ALL[c % 3]);
        cases.push(s);
    }
    for s in cases {
        let bytes = s.encode().expect("encodes");
        assert_eq!(State::decode(&bytes).expect("decodes"), s);
    }
}

/// Codes on disk keep their meaning, and every status has one.
#[test]
fn status_codes_are_fixed() {
    let names: Vec<&str> = STATUS_CODES.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "accepted",
            "queued",
            "sending",
            "sent",
            "delivered",
            "failed",
            "expired",
            "rejected",
            "cancelled"
        ]
    );
    for status in Status::ALL {
        assert!(STATUS_CODES.contains(&status), "{status} has no code");
    }
}

/// Channel codes on disk keep their meaning, and every channel has one.
#[test]
fn channel_codes_are_fixed() {
    let names: Vec<&str> = CHANNEL_CODES.iter().map(|c| c.as_str()).collect();
    assert_eq!(names, ["sms", "email", "push"]);
    for channel in Channel::ALL {
        assert!(CHANNEL_CODES.contains(channel), "{channel} has no code");
    }
}

/// The channel is the last byte, so a reader that predates it reads the
/// rest as it was; a cut or unknown channel is an error.
#[test]
fn a_states_channel_comes_last() {
    let mut s = state();
    s.next_event = Some(2);
    s.trail = vec![b"event".to_vec()];
    let without = s.encode().expect("encodes");
    s.channel = Some(Channel::Push);
    let with = s.encode().expect("encodes");
    assert_eq!(with.len(), without.len() + 1);
    assert_eq!(with[2] & !HAS_CHANNEL, without[2]);
    assert_eq!(with[3..with.len() - 1], without[3..]);
    assert!(State::decode(&with[..with.len() - 1]).is_err());
    let mut unknown = with.clone();
    let last = unknown.len() - 1;
    unknown[last] = 3;
    assert!(State::decode(&unknown).is_err());
}

#[test]
fn damaged_states_are_errors_not_panics() {
    let mut s = state();
    s.provider = Some("ses".into());
    s.provider_message_id = Some("0100018c".into());
    s.lease_until = Some(s.updated_at);
    let bytes = s.encode().expect("encodes");
    for len in 0..bytes.len() {
        assert!(State::decode(&bytes[..len]).is_err(), "cut at {len}");
    }
    let mut version = bytes.clone();
    version[0] = 9;
    let mut status = bytes.clone();
    status[1] = 200;
    let mut text = bytes.clone();
    let last = text.len() - 1;
    text[last] = 0xff;
    for broken in [version, status, text] {
        assert!(State::decode(&broken).is_err(), "{broken:?}");
    }
    s.next_event = Some(3);
    let bytes = s.encode().expect("encodes");
    for len in 0..bytes.len() {
        assert!(State::decode(&bytes[..len]).is_err(), "cut at {len}");
    }
    s.trail = vec![b"event".to_vec(), Vec::new(), vec![7; 300]];
    let bytes = s.encode().expect("encodes");
    assert_eq!(bytes[0], STATE_V2);
    for len in 0..bytes.len() {
        assert!(State::decode(&bytes[..len]).is_err(), "cut at {len}");
    }
    // The layout and the flag disagree, or the trail is empty.
    let mut first_layout = bytes.clone();
    first_layout[0] = STATE_V1;
    let mut unflagged = bytes.clone();
    unflagged[2] &= !HAS_TRAIL;
    let mut empty = s.clone();
    empty.trail = vec![Vec::new()];
    let mut empty = empty.encode().expect("encodes");
    let count = empty.len() - 6;
    empty[count..count + 2].copy_from_slice(&0u16.to_le_bytes());
    for broken in [first_layout, unflagged, empty] {
        assert!(State::decode(&broken).is_err(), "{broken:?}");
    }
    // Trail events need the next row's number, which they follow.
    s.next_event = None;
    assert!(s.encode().is_err());
}

/// A state without trail events is written in the first layout, so a
/// reader that knows only it reads what it can; with them, in the
/// second, after the same fields.
#[test]
fn a_state_keeps_its_first_layout_until_it_keeps_events() {
    let mut s = state();
    s.next_event = Some(0);
    let without = s.encode().expect("encodes");
    assert_eq!(without[0], STATE_V1);
    s.trail = vec![b"queued".to_vec()];
    let with = s.encode().expect("encodes");
    assert_eq!(with[0], STATE_V2);
    assert_eq!(with[2], without[2] | HAS_TRAIL);
    assert_eq!(with[3..without.len()], without[3..]);
    assert_eq!(with.len(), without.len() + 2 + 4 + 6);
    assert_eq!(State::decode(&with).expect("decodes"), s);
}

/// The next trail row's number is added after everything else, behind
/// its own flag: the state without it is the same bytes up to there.
#[test]
fn the_next_event_number_comes_last() {
    let mut s = state();
    s.provider = Some("kaleyra".into());
    let without = s.encode().expect("encodes");
    s.next_event = Some(2);
    let with = s.encode().expect("encodes");
    assert_eq!(with.len(), without.len() + 4);
    assert_eq!(with[2], without[2] | HAS_NEXT_EVENT);
    assert_eq!(with[3..without.len()], without[3..]);
    assert_eq!(State::decode(&with).expect("decodes"), s);
}
