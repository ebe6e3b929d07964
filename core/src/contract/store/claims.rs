//! Claims and leases, retries falling due, and statuses that only move forward.

use super::*;

pub async fn concurrent_claims_yield_one_owner(store: Arc<dyn Store>) {
    let record = stored(&store, "+14155550102").await;
    let now = crate::now();
    let lease = now + Duration::seconds(30);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let id = record.message.id.clone();
        tasks.push(tokio::spawn(async move {
            store.claim(&id, now, lease, "test").await
        }));
    }
    let mut claimed = 0;
    for task in tasks {
        match task.await.expect("join").expect("claim") {
            Claim::Claimed { record, verify } => {
                claimed += 1;
                assert_eq!(record.attempts, 1);
                assert_eq!(record.status, Status::Sending);
                assert_eq!(verify, Verify::No);
            }
            Claim::Busy { lease_until } => assert_eq!(lease_until, lease),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(claimed, 1);
}

/// A claim by a caller holding the message (the dispatcher, from the
/// queue) is a claim like any other, and its record carries the caller's
/// copy: a store need not read its own.
pub async fn a_claim_by_message_hands_out_the_callers_message(store: Arc<dyn Store>) {
    let stored = stored(&store, "+14155550131").await;
    let mut copy = stored.message.clone();
    copy.reference = Some("the caller's copy".into());
    let now = crate::now();
    let lease = now + Duration::seconds(30);
    match store
        .claim_message(&copy, now, lease, "test")
        .await
        .expect("claim")
    {
        Claim::Claimed { record, verify } => {
            assert_eq!(record.message, copy);
            assert_eq!(record.status, Status::Sending);
            assert_eq!(record.attempts, 1);
            assert_eq!(record.lease_until, Some(lease));
            assert_eq!(verify, Verify::No);
        }
        other => panic!("expected a claim, got {other:?}"),
    }
    // Claimed in the store; its own copy is as it was.
    let got = store.get(&copy.id).await.expect("get").expect("found");
    assert_eq!(got.status, Status::Sending);
    assert_eq!(got.message, stored.message);
    assert!(matches!(
        store
            .claim_message(&copy, now, lease, "test")
            .await
            .expect("claim"),
        Claim::Busy { .. }
    ));
    let unknown = record("+14155550132").message;
    assert_eq!(
        store
            .claim_message(&unknown, now, lease, "test")
            .await
            .expect("claim"),
        Claim::NotFound
    );
}

pub async fn sent_and_terminal_messages_are_not_claimed(store: Arc<dyn Store>) {
    let record = stored(&store, "+14155550103").await;
    let id = &record.message.id;
    let now = crate::now();
    assert!(matches!(
        store
            .claim(id, now, now + Duration::seconds(30), "test")
            .await
            .expect("claim"),
        Claim::Claimed { .. }
    ));
    let sent = Transition::Sent {
        attempt: 1,
        provider: "sim".into(),
        provider_message_id: "p-1".into(),
        event: Event::new("dispatcher", "sent"),
    };
    assert_eq!(
        store.update(id, sent).await.expect("update"),
        Updated::Applied {
            status: Status::Sent
        }
    );
    let later = now + Duration::minutes(5);
    assert_eq!(
        store.claim(id, later, later, "test").await.expect("claim"),
        Claim::Finished {
            status: Status::Sent
        }
    );
    assert_eq!(
        store
            .claim(&MessageId::generate(), now, now, "test")
            .await
            .expect("claim"),
        Claim::NotFound
    );
}

pub async fn a_message_s_channel_told_in_advance_finds_it(store: Arc<dyn Store>) {
    let now = crate::now();
    let lease = now + Duration::seconds(30);
    let email = email_record("c@example.com");
    let id = &email.message.id;
    // Told before it is stored: not found, and found once it is.
    store.remember_channel(id, Channel::Email);
    assert_eq!(
        store.claim(id, now, lease, "test").await.expect("claim"),
        Claim::NotFound
    );
    assert_eq!(store.create(&email).await.expect("create"), Created::New);
    store.remember_channel(id, Channel::Email);
    match store.claim(id, now, lease, "test").await.expect("claim") {
        Claim::Claimed { record, .. } => {
            assert_eq!(record.message.id, email.message.id);
            assert_eq!(record.attempts, 1);
        }
        other => panic!("expected a claim, got {other:?}"),
    }
    let sent = Transition::Sent {
        attempt: 1,
        provider: "sim".into(),
        provider_message_id: "p-claim".into(),
        event: Event::new("dispatcher", "sent"),
    };
    assert_eq!(
        store.update(id, sent).await.expect("update"),
        Updated::Applied {
            status: Status::Sent
        }
    );
    assert_eq!(
        store.claim(id, now, lease, "test").await.expect("claim"),
        Claim::Finished {
            status: Status::Sent
        }
    );
    let got = store.get_recent(id, 1).await.expect("get").expect("found");
    assert_eq!(got.status, Status::Sent);
    assert_eq!(got.events.len(), 1);
}

pub async fn expired_lease_is_taken_over_with_verification(store: Arc<dyn Store>) {
    let record = stored(&store, "+14155550104").await;
    let id = &record.message.id;
    let now = crate::now();
    let lease = now + Duration::seconds(10);
    assert!(matches!(
        store.claim(id, now, lease, "a").await.expect("claim"),
        Claim::Claimed { .. }
    ));
    let after = lease + Duration::seconds(1);
    match store
        .claim(id, after, after + Duration::seconds(10), "b")
        .await
        .expect("claim")
    {
        Claim::Claimed { record, verify } => {
            assert_eq!(
                verify,
                Verify::Any,
                "the dead attempt may have reached any vendor"
            );
            assert_eq!(record.attempts, 2);
        }
        other => panic!("expected a takeover, got {other:?}"),
    }
}

pub async fn pending_retry_is_claimed_only_when_due(store: Arc<dyn Store>) {
    let record = stored(&store, "+14155550105").await;
    let id = &record.message.id;
    let now = crate::now();
    assert!(matches!(
        store
            .claim(id, now, now + Duration::seconds(30), "t")
            .await
            .expect("claim"),
        Claim::Claimed { .. }
    ));
    let due = now + Duration::seconds(60);
    let retry = Transition::AttemptFailed {
        attempt: 1,
        provider: "sim".into(),
        next_attempt_at: due,
        verify_first: false,
        event: Event::new("dispatcher", "transient"),
    };
    assert!(matches!(
        store.update(id, retry).await.expect("update"),
        Updated::Applied { .. }
    ));
    assert_eq!(
        store
            .claim(id, now, now + Duration::seconds(30), "t")
            .await
            .expect("claim"),
        Claim::NotDue { at: due }
    );
    match store
        .claim(id, due, due + Duration::seconds(30), "t")
        .await
        .expect("claim")
    {
        Claim::Claimed { record, verify } => {
            assert_eq!(record.attempts, 2);
            assert_eq!(verify, Verify::No);
        }
        other => panic!("expected claim when due, got {other:?}"),
    }
}

pub async fn statuses_only_move_forward(store: Arc<dyn Store>) {
    let record = stored_and_claimed(&store, "+14155550106").await;
    let id = &record.message.id;
    let delivered = Transition::to(
        Status::Delivered,
        Event::new("response-handler", "delivered"),
    );
    assert_eq!(
        store.update(id, delivered).await.expect("update"),
        Updated::Applied {
            status: Status::Delivered
        }
    );
    // The attempt's own outcome arrives after the vendor's report.
    let late = Transition::Sent {
        attempt: 1,
        provider: "vendor".into(),
        provider_message_id: "v-106".into(),
        event: Event::new("dispatcher", "sent"),
    };
    assert_eq!(
        store.update(id, late).await.expect("update"),
        Updated::Ignored {
            current: Status::Delivered
        }
    );
    let got = store.get(id).await.expect("get").expect("present");
    assert_eq!(got.status, Status::Delivered);
    assert_eq!(
        got.provider_message_id.as_deref(),
        Some("v-106"),
        "the vendor's id is kept even when the status is not"
    );
    assert_eq!(got.provider.as_deref(), Some("vendor"));
    let details: Vec<&str> = got.events.iter().map(|e| e.details.as_str()).collect();
    assert_eq!(details.len(), 4, "{details:?}");
    assert!(details[3].starts_with("sent (ignored"), "{details:?}");
    assert_eq!(
        store
            .update(
                &MessageId::generate(),
                Transition::event(Event::new("t", "x"))
            )
            .await
            .expect("update"),
        Updated::NotFound
    );
}

pub async fn stale_attempt_outcomes_are_ignored(store: Arc<dyn Store>) {
    let record = stored_and_claimed(&store, "+14155550107").await;
    let id = &record.message.id;
    let failed = Transition::Ended {
        attempt: 7,
        status: Status::Failed,
        provider: None,
        event: Event::new("dispatcher", "late outcome"),
    };
    assert_eq!(
        store.update(id, failed).await.expect("update"),
        Updated::Ignored {
            current: Status::Sending
        }
    );
}

/// A lease grows only for the attempt that holds it, and never shrinks.
pub async fn a_lease_is_extended_only_by_its_attempt(store: Arc<dyn Store>) {
    let record = stored(&store, "+14155550111").await;
    let id = &record.message.id;
    let now = crate::now();
    let lease = now + Duration::seconds(30);
    assert!(matches!(
        store.claim(id, now, lease, "t").await.expect("claim"),
        Claim::Claimed { .. }
    ));
    let longer = now + Duration::seconds(90);
    assert_eq!(
        store
            .update(
                id,
                Transition::LeaseExtended {
                    attempt: 1,
                    until: longer
                }
            )
            .await
            .expect("extend"),
        Updated::Applied {
            status: Status::Sending
        }
    );
    // Past the first lease, the message is still held.
    let later = now + Duration::seconds(60);
    assert_eq!(
        store.claim(id, later, later, "t").await.expect("claim"),
        Claim::Busy {
            lease_until: longer
        }
    );
    // Another attempt's extension, and a shorter one, change nothing.
    assert!(matches!(
        store
            .update(
                id,
                Transition::LeaseExtended {
                    attempt: 2,
                    until: now + Duration::hours(1)
                }
            )
            .await
            .expect("extend"),
        Updated::Ignored { .. }
    ));
    store
        .update(
            id,
            Transition::LeaseExtended {
                attempt: 1,
                until: lease,
            },
        )
        .await
        .expect("extend");
    let got = store.get(id).await.expect("get").expect("present");
    assert_eq!(got.lease_until, Some(longer));
    assert_eq!(got.events.len(), 2, "extensions add no events");
    // Once the attempt has ended, its lease is not brought back.
    store
        .update(
            id,
            Transition::Sent {
                attempt: 1,
                provider: "sim".into(),
                provider_message_id: "p-111".into(),
                event: Event::new("dispatcher", "sent"),
            },
        )
        .await
        .expect("sent");
    assert!(matches!(
        store
            .update(
                id,
                Transition::LeaseExtended {
                    attempt: 1,
                    until: now + Duration::hours(1)
                }
            )
            .await
            .expect("extend"),
        Updated::Ignored { .. }
    ));
    assert_eq!(
        store
            .get(id)
            .await
            .expect("get")
            .expect("present")
            .lease_until,
        None
    );
}
