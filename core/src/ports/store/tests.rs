use super::*;
use crate::{Event, Message, MessageRecord};

fn record(status: Status) -> MessageRecord {
    let message: Message = serde_json::from_value(serde_json::json!({
        "id": "msg_01KAAAAAAAAAAAAAAAAAAAAAAA", "priority": "normal", "type": "transactional",
        "to": "+14155550123", "content": {"channel": "sms", "body": "hi", "encoding": "gsm7", "segments": 1},
        "idempotency_key": "k", "created_at": "2026-12-01T10:00:00Z", "deadline": "2026-12-02T10:00:00Z"
    }))
    .expect("message");
    let mut record = MessageRecord::new(message, Status::Queued, Event::new("ingest", "queued"));
    record.status = status;
    record.attempts = 1;
    record
}

/// A backend may store an update's event before the write reaches the
/// rule: what the transition says it appends must be what the rule
/// appends, for every kind of transition that carries an event.
#[test]
fn an_applied_transition_appends_the_event_it_announces() {
    let event = || {
        Event::new("dispatcher", "something happened")
            .error("detail")
            .raw(serde_json::json!({"vendor": "payload"}))
    };
    let at = crate::now();
    let cases = [
        (
            Status::Sending,
            Transition::Sent {
                attempt: 1,
                provider: "kaleyra".into(),
                provider_message_id: "k-1".into(),
                event: event(),
            },
        ),
        (
            Status::Sending,
            Transition::SentUnconfirmed {
                attempt: 1,
                provider: "sns".into(),
                event: event(),
            },
        ),
        (
            Status::Sending,
            Transition::AttemptFailed {
                attempt: 1,
                provider: "ses".into(),
                next_attempt_at: at,
                verify_first: true,
                event: event(),
            },
        ),
        (
            Status::Sending,
            Transition::Ended {
                attempt: 1,
                status: Status::Failed,
                provider: None,
                event: event(),
            },
        ),
        (
            Status::Sent,
            Transition::Reported {
                status: Status::Delivered,
                provider: "kaleyra".into(),
                provider_message_id: "k-1".into(),
                event: event(),
            },
        ),
        (
            Status::Sent,
            Transition::VendorNoted {
                provider: "kaleyra".into(),
                provider_message_id: "k-1".into(),
                event: event(),
            },
        ),
        (Status::Queued, Transition::to(Status::Expired, event())),
        (Status::Delivered, Transition::event(event())),
        (
            Status::Queued,
            Transition::NotedWhileUnsent { event: event() },
        ),
    ];
    // The status each moves the message to, as its event says.
    let moves = [
        Some(Status::Sent),
        Some(Status::Sent),
        Some(Status::Sending),
        Some(Status::Failed),
        Some(Status::Delivered),
        None,
        Some(Status::Expired),
        None,
        None,
    ];
    assert_eq!(moves.len(), cases.len());
    for ((status, transition), moves_to) in cases.into_iter().zip(moves) {
        let mut record = record(status);
        if matches!(transition, Transition::NotedWhileUnsent { .. }) {
            record.attempts = 0;
        }
        record.provider = Some("kaleyra".into());
        record.provider_message_id = Some("k-1".into());
        if status == Status::Sending {
            record.lease_until = Some(at + chrono::Duration::seconds(30));
        }
        let announced = transition.event_when_applied();
        assert_eq!(
            announced.as_ref().map(|e| e.status),
            Some(moves_to),
            "{transition:?}"
        );
        let mut lent = transition.clone();
        assert_eq!(
            lent.prepare_event(Event::clone),
            announced,
            "{transition:?}"
        );
        assert_eq!(lent, transition, "prepare_event left it as it was");
        let outcome = apply_update(&mut record, transition.clone());
        assert!(
            matches!(outcome, Updated::Applied { .. }),
            "{transition:?} gave {outcome:?}"
        );
        assert_eq!(record.events.last(), announced.as_ref(), "{transition:?}");
        assert_eq!(record.events.len(), 2, "{transition:?}");
    }
    let extend = Transition::LeaseExtended {
        attempt: 1,
        until: at,
    };
    assert_eq!(extend.event_when_applied(), None);
}

/// A move that does not apply is kept as an event with its status taken
/// out and its details saying why, its vendor payload as given: a backend
/// that prepared the event's stored form matches it without comparing
/// payloads.
#[test]
fn a_transition_that_does_not_apply_keeps_its_vendor_payload() {
    let payload = serde_json::json!({"status": "DELIVRD", "id": "k-1"});
    let mut record = record(Status::Delivered);
    record.provider = Some("kaleyra".into());
    record.provider_message_id = Some("k-1".into());
    let transition = Transition::Sent {
        attempt: 1,
        provider: "kaleyra".into(),
        provider_message_id: "k-1".into(),
        event: Event::new("response-handler", "sent").raw(payload.clone()),
    };
    let outcome = apply_update(&mut record, transition);
    assert!(matches!(outcome, Updated::Ignored { .. }), "{outcome:?}");
    let kept = record.events.last().expect("kept as an event");
    assert!(kept.details.contains("ignored"), "{}", kept.details);
    assert_eq!(kept.status, None);
    assert_eq!(kept.raw.as_ref(), Some(&payload));
}

/// A note while unsent applies only to a message no attempt picked up.
#[test]
fn a_note_while_unsent_applies_only_before_the_first_attempt() {
    let note = || Transition::NotedWhileUnsent {
        event: Event::new("ingest", "queued again"),
    };
    for status in [Status::Accepted, Status::Queued] {
        let mut unsent = record(status);
        unsent.attempts = 0;
        assert_eq!(
            apply_update(&mut unsent, note()),
            Updated::Applied { status },
            "{status:?}"
        );
        assert_eq!(unsent.events.len(), 2, "{status:?}");
    }
    for status in [
        Status::Queued,
        Status::Sending,
        Status::Delivered,
        Status::Cancelled,
    ] {
        let mut picked_up = record(status);
        if status == Status::Cancelled {
            picked_up.attempts = 0;
        }
        assert_eq!(
            apply_update(&mut picked_up, note()),
            Updated::Ignored { current: status },
            "{status:?}"
        );
        assert_eq!(picked_up.events.len(), 1, "{status:?}: nothing added");
    }
}

/// The claim's event is the one [`claim_event`] makes for the attempt it
/// starts.
#[test]
fn a_claim_appends_its_attempts_event() {
    let now = crate::now();
    let lease = now + chrono::Duration::seconds(30);
    let mut fresh = record(Status::Queued);
    fresh.attempts = 0;
    assert!(matches!(
        apply_claim(&mut fresh, now, lease, "dispatcher"),
        Claim::Claimed { .. }
    ));
    assert_eq!(
        fresh.events.last(),
        Some(&claim_event(1, now, "dispatcher", false))
    );
    // A sender that died mid-attempt: the next one verifies first.
    let mut taken = record(Status::Sending);
    taken.lease_until = Some(now - chrono::Duration::seconds(1));
    assert!(matches!(
        apply_claim(&mut taken, now, lease, "dispatcher"),
        Claim::Claimed { .. }
    ));
    let event = claim_event(2, now, "dispatcher", true);
    assert!(event.details.contains("verifying first"));
    assert_eq!(taken.events.last(), Some(&event));
}
