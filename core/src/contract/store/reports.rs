//! Vendor reports, and which write may end a message a vendor may have.

use super::*;

pub async fn finds_messages_by_provider_message_id(store: Arc<dyn Store>) {
    let record = stored(&store, "+14155550108").await;
    let id = &record.message.id;
    let sent = Transition::Sent {
        attempt: 0,
        provider: "sim-sms".into(),
        provider_message_id: "vendor-42".into(),
        event: Event::new("dispatcher", "sent"),
    };
    store.update(id, sent).await.expect("update");
    assert_eq!(
        store
            .find_by_provider_message_id("sim-sms", "vendor-42")
            .await
            .expect("find"),
        Some(id.clone())
    );
    assert_eq!(
        store
            .find_by_provider_message_id("other", "vendor-42")
            .await
            .expect("find"),
        None
    );
}

/// A vendor report moves only a message sent through that vendor under that
/// id; one that overtook the `sent` write waits for it.
pub async fn a_report_applies_only_to_its_providers_message(store: Arc<dyn Store>) {
    let record = stored(&store, "+14155550113").await;
    let id = &record.message.id;
    let report = |provider: &str, vendor_id: &str| Transition::Reported {
        status: Status::Delivered,
        provider: provider.into(),
        provider_message_id: vendor_id.into(),
        event: Event::new("response-handler", "delivered"),
    };
    assert_eq!(
        store
            .update(id, report("sim", "p-113"))
            .await
            .expect("update"),
        Updated::Mismatched,
        "never sent"
    );
    let now = crate::now();
    store
        .claim(id, now, now + Duration::seconds(30), "t")
        .await
        .expect("claim");
    assert_eq!(
        store
            .update(id, report("sim", "p-113"))
            .await
            .expect("update"),
        Updated::NotSentYet
    );
    store
        .update(
            id,
            Transition::Sent {
                attempt: 1,
                provider: "sim".into(),
                provider_message_id: "p-113".into(),
                event: Event::new("dispatcher", "sent"),
            },
        )
        .await
        .expect("sent");
    for (provider, vendor_id) in [("kaleyra", "p-113"), ("sim", "p-other")] {
        assert_eq!(
            store
                .update(id, report(provider, vendor_id))
                .await
                .expect("update"),
            Updated::Mismatched,
            "{provider} {vendor_id}"
        );
    }
    let got = store.get(id).await.expect("get").expect("present");
    assert_eq!(got.status, Status::Sent);
    assert_eq!(got.provider.as_deref(), Some("sim"));
    assert_eq!(got.events.len(), 3, "mismatched reports add no event");
    assert_eq!(
        store
            .update(id, report("sim", "p-113"))
            .await
            .expect("update"),
        Updated::Applied {
            status: Status::Delivered
        }
    );
}

/// A send that may have reached a vendor that cannot be asked is recorded
/// as sent without the vendor's id; that vendor's report (found by the MDC
/// id it echoes) settles it and brings the id; another vendor's does not.
pub async fn an_unconfirmed_send_is_settled_by_its_providers_report(store: Arc<dyn Store>) {
    let record = stored_and_claimed(&store, "+14155550114").await;
    let id = &record.message.id;
    assert_eq!(
        store
            .update(
                id,
                Transition::SentUnconfirmed {
                    attempt: 1,
                    provider: "kaleyra".into(),
                    event: Event::new("dispatcher", "not resent"),
                },
            )
            .await
            .expect("unconfirmed"),
        Updated::Applied {
            status: Status::Sent
        }
    );
    let got = store.get(id).await.expect("get").expect("present");
    assert_eq!(got.provider.as_deref(), Some("kaleyra"));
    assert_eq!(got.provider_message_id, None);
    assert_eq!(got.lease_until, None, "the attempt is over");
    let report = |provider: &str| Transition::Reported {
        status: Status::Delivered,
        provider: provider.into(),
        provider_message_id: "k-114".into(),
        event: Event::new("response-handler", "delivered"),
    };
    assert_eq!(
        store.update(id, report("sim")).await.expect("update"),
        Updated::Mismatched
    );
    assert_eq!(
        store.update(id, report("kaleyra")).await.expect("update"),
        Updated::Applied {
            status: Status::Delivered
        }
    );
    let got = store.get(id).await.expect("get").expect("present");
    assert_eq!(got.provider_message_id.as_deref(), Some("k-114"));
}

/// A stored message claimed a minute ago by a dispatcher that died: its
/// 30 s lease has run out.
async fn claimed_by_a_dead_dispatcher(store: &Arc<dyn Store>, to: &str) -> MessageRecord {
    let record = stored(store, to).await;
    let before = crate::now() - Duration::seconds(60);
    store
        .claim(
            &record.message.id,
            before,
            before + Duration::seconds(30),
            "t",
        )
        .await
        .expect("claim");
    record
}

/// A vendor's outcome, found by the MDC id it echoes, settles a message no
/// attempt is sending: the last one ended without knowing whether the
/// vendor took it, or its dispatcher died (the lease ran out). While an
/// attempt is in flight, the report waits for its outcome instead.
pub async fn a_report_settles_a_message_no_attempt_is_sending(store: Arc<dyn Store>) {
    let report = |provider: &str, vendor_id: &str| Transition::Reported {
        status: Status::Delivered,
        provider: provider.into(),
        provider_message_id: vendor_id.into(),
        event: Event::new("response-handler", "delivered"),
    };
    let ambiguous = |attempt: u32, now: crate::Timestamp| Transition::AttemptFailed {
        attempt,
        provider: "sim".into(),
        next_attempt_at: now + Duration::seconds(1),
        verify_first: true,
        event: Event::new("dispatcher", "timed out"),
    };
    let record = stored(&store, "+14155550115").await;
    let id = &record.message.id;
    let now = crate::now();
    let lease = now + Duration::seconds(30);
    store.claim(id, now, lease, "t").await.expect("claim");
    assert_eq!(
        store
            .update(id, report("sim", "p-115"))
            .await
            .expect("update"),
        Updated::NotSentYet,
        "attempt 1 in flight"
    );
    store.update(id, ambiguous(1, now)).await.expect("failed");
    let due = now + Duration::seconds(2);
    assert!(matches!(
        store
            .claim(id, due, due + Duration::seconds(30), "t")
            .await
            .expect("claim"),
        Claim::Claimed {
            verify: Verify::Provider,
            ..
        }
    ));
    assert_eq!(
        store
            .update(id, report("sim", "p-115"))
            .await
            .expect("update"),
        Updated::NotSentYet,
        "attempt 2 in flight: it verifies first"
    );
    store.update(id, ambiguous(2, now)).await.expect("failed");
    let noted = Transition::VendorNoted {
        provider: "sim".into(),
        provider_message_id: "p-115".into(),
        event: Event::new("response-handler", "accepted"),
    };
    assert_eq!(
        store.update(id, noted).await.expect("update"),
        Updated::NotSentYet,
        "a note without an outcome waits"
    );
    assert_eq!(
        store
            .update(id, report("sim", "p-115"))
            .await
            .expect("update"),
        Updated::Applied {
            status: Status::Delivered
        }
    );
    let got = store.get(id).await.expect("get").expect("present");
    assert_eq!(got.status, Status::Delivered);
    assert_eq!(got.provider.as_deref(), Some("sim"));
    assert_eq!(got.provider_message_id.as_deref(), Some("p-115"));
    assert_eq!(got.lease_until, None);
    assert_eq!(
        store.claim(id, due, lease, "t").await.expect("claim"),
        Claim::Finished {
            status: Status::Delivered
        },
        "the retry that was due finds it settled"
    );

    // A dispatcher died mid-send: its lease ran out, no provider stored.
    let record = claimed_by_a_dead_dispatcher(&store, "+14155550116").await;
    let id = &record.message.id;
    assert_eq!(
        store
            .update(id, report("kaleyra", "k-116"))
            .await
            .expect("update"),
        Updated::Applied {
            status: Status::Delivered
        }
    );
    let got = store.get(id).await.expect("get").expect("present");
    assert_eq!(got.provider.as_deref(), Some("kaleyra"));
    assert_eq!(got.provider_message_id.as_deref(), Some("k-116"));
}

/// A deadline seen outside any attempt (another copy of the lane record, a
/// late redelivery) does not expire a message a vendor may have: the
/// attempt in flight decides, or, after one that died or ended ambiguous,
/// an attempt that asks the vendor first. When no attempt can have
/// reached a vendor, it does.
pub async fn only_the_attempt_in_flight_ends_its_message(store: Arc<dyn Store>) {
    let record = stored_and_claimed(&store, "+14155550117").await;
    let id = &record.message.id;
    let expire = || Transition::to(Status::Expired, Event::new("dispatcher", "deadline passed"));
    assert_eq!(
        store.update(id, expire()).await.expect("update"),
        Updated::Ignored {
            current: Status::Sending
        }
    );
    let sent = Transition::Sent {
        attempt: 1,
        provider: "sim".into(),
        provider_message_id: "p-117".into(),
        event: Event::new("dispatcher", "sent"),
    };
    assert_eq!(
        store.update(id, sent).await.expect("update"),
        Updated::Applied {
            status: Status::Sent
        }
    );

    // The lease ran out (its dispatcher died mid-send): the dead attempt
    // may have reached a vendor, so the deadline is left to an attempt that
    // asks it first.
    let record = claimed_by_a_dead_dispatcher(&store, "+14155550118").await;
    let id = &record.message.id;
    assert_eq!(
        store.update(id, expire()).await.expect("update"),
        Updated::Ignored {
            current: Status::Sending
        }
    );
    // So after an attempt that ended ambiguous; after one that failed
    // without reaching a vendor, the deadline ends the message.
    for (to, verify_first, status) in [
        ("+14155550119", true, Status::Sending),
        ("+14155550120", false, Status::Expired),
    ] {
        let record = stored(&store, to).await;
        let id = &record.message.id;
        let now = crate::now();
        store
            .claim(id, now, now + Duration::seconds(30), "t")
            .await
            .expect("claim");
        let failed = Transition::AttemptFailed {
            attempt: 1,
            provider: "sim".into(),
            next_attempt_at: now,
            verify_first,
            event: Event::new("dispatcher", "attempt 1 failed"),
        };
        store.update(id, failed).await.expect("update");
        store.update(id, expire()).await.expect("update");
        let got = store.get(id).await.expect("get").expect("present");
        assert_eq!(got.status, status, "verify_first = {verify_first}");
    }
}

/// An update that applies hands out the record as that write left it
/// (its message and state, no trail); one that does not, nothing.
pub async fn an_applied_update_hands_out_the_record_it_left(store: Arc<dyn Store>) {
    let record = stored_and_claimed(&store, "+14155550178").await;
    let id = &record.message.id;
    let sent = Transition::Sent {
        attempt: 1,
        provider: "sim-sms".into(),
        provider_message_id: "vendor-43".into(),
        event: Event::new("dispatcher", "sent"),
    };
    assert_eq!(
        store.update(id, sent).await.expect("update"),
        Updated::Applied {
            status: Status::Sent
        }
    );
    let report = |provider: &str| Transition::Reported {
        status: Status::Delivered,
        provider: provider.into(),
        provider_message_id: "vendor-43".into(),
        event: Event::new("response-handler", "delivered (vendor report)"),
    };
    let delivered = report("sim-sms");
    let moved = delivered.event_when_applied().expect("an event");
    let (updated, after) = store.update_and_read(id, delivered).await.expect("update");
    assert_eq!(
        updated,
        Updated::Applied {
            status: Status::Delivered
        }
    );
    let after = after.expect("the record after the write");
    assert_eq!(after.message, record.message);
    assert_eq!(after.status, Status::Delivered);
    assert_eq!(after.provider.as_deref(), Some("sim-sms"));
    assert_eq!(after.provider_message_id.as_deref(), Some("vendor-43"));
    // Backends keep times to the millisecond or finer.
    assert!((after.updated_at - moved.at).num_milliseconds().abs() < 1);
    assert!(after.events.is_empty());
    let now = store
        .get_recent(id, 0)
        .await
        .expect("get_recent")
        .expect("present");
    assert_eq!(after, now);

    let (again, none) = store
        .update_and_read(id, report("sim-sms"))
        .await
        .expect("update");
    assert_eq!(
        again,
        Updated::Ignored {
            current: Status::Delivered
        }
    );
    assert_eq!(none, None);
    let (other, none) = store
        .update_and_read(id, report("other"))
        .await
        .expect("update");
    assert_eq!(other, Updated::Mismatched);
    assert_eq!(none, None);
    let (missing, none) = store
        .update_and_read(&MessageId::generate(), report("sim-sms"))
        .await
        .expect("update");
    assert_eq!(missing, Updated::NotFound);
    assert_eq!(none, None);
}

/// An update that applies hands out the brief of the record it left (what
/// an outcome's metrics need); one that does not, nothing.
pub async fn an_applied_update_hands_out_the_brief_it_left(store: Arc<dyn Store>) {
    let record = email_record("ada@example.com");
    let id = &record.message.id;
    assert_eq!(store.create(&record).await.expect("create"), Created::New);
    let now = crate::now();
    store
        .claim(id, now, now + Duration::seconds(30), "t")
        .await
        .expect("claim");
    let sent = Transition::Sent {
        attempt: 1,
        provider: "sim-email".into(),
        provider_message_id: "vendor-44".into(),
        event: Event::new("dispatcher", "sent"),
    };
    let (updated, brief) = store.update_and_brief(id, sent).await.expect("update");
    assert_eq!(
        updated,
        Updated::Applied {
            status: Status::Sent
        }
    );
    let brief = brief.expect("the brief after the write");
    assert_eq!(
        (brief.channel, brief.status),
        (Channel::Email, Status::Sent)
    );
    let delivered = |provider: &str| Transition::Reported {
        status: Status::Delivered,
        provider: provider.into(),
        provider_message_id: "vendor-44".into(),
        event: Event::new("response-handler", "delivered (vendor report)"),
    };
    let report = delivered("sim-email");
    let moved = report.event_when_applied().expect("an event");
    let (updated, brief) = store.update_and_brief(id, report).await.expect("update");
    assert_eq!(
        updated,
        Updated::Applied {
            status: Status::Delivered
        }
    );
    let brief = brief.expect("the brief after the write");
    assert_eq!(
        (brief.channel, brief.status),
        (Channel::Email, Status::Delivered)
    );
    // Backends keep times to the millisecond or finer.
    assert!((brief.updated_at - moved.at).num_milliseconds().abs() < 1);
    assert!(
        (brief.created_at - record.message.created_at)
            .num_milliseconds()
            .abs()
            < 1
    );
    let now = store
        .get_recent(id, 0)
        .await
        .expect("get_recent")
        .expect("present");
    assert_eq!(brief, Brief::of(&now));

    let (ignored, none) = store
        .update_and_brief(id, delivered("sim-email"))
        .await
        .expect("update");
    assert_eq!(
        ignored,
        Updated::Ignored {
            current: Status::Delivered
        }
    );
    assert_eq!(none, None);
    let (other, none) = store
        .update_and_brief(id, delivered("other"))
        .await
        .expect("update");
    assert_eq!(other, Updated::Mismatched);
    assert_eq!(none, None);
    let (missing, none) = store
        .update_and_brief(&MessageId::generate(), delivered("sim-email"))
        .await
        .expect("update");
    assert_eq!(missing, Updated::NotFound);
    assert_eq!(none, None);
}
