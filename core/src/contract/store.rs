//! The [`Store`] contract.

use std::sync::Arc;

use chrono::Duration;

use super::sample_message;
use crate::message::Content;
use crate::ports::store::{Claim, Created, ListFilter, Store, Transition, Updated, Verify};
use crate::{Channel, Event, MessageId, MessageRecord, Status};

fn record(to: &str) -> MessageRecord {
    MessageRecord::new(
        sample_message(to),
        Status::Queued,
        Event::new("ingest", "accepted").status(Status::Queued),
    )
}

async fn stored(store: &Arc<dyn Store>, to: &str) -> MessageRecord {
    let record = record(to);
    assert_eq!(store.create(&record).await.expect("create"), Created::New);
    record
}

/// A new message stored and claimed for its first attempt (a 30 s lease).
async fn stored_and_claimed(store: &Arc<dyn Store>, to: &str) -> MessageRecord {
    let record = stored(store, to).await;
    let now = crate::now();
    store
        .claim(&record.message.id, now, now + Duration::seconds(30), "t")
        .await
        .expect("claim");
    record
}

pub async fn create_then_get_round_trips(store: Arc<dyn Store>) {
    let record = stored(&store, "+14155550100").await;
    let got = store
        .get(&record.message.id)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.message, record.message);
    assert_eq!(got.status, Status::Queued);
    assert_eq!(got.events.len(), 1);
    assert_eq!(got.events[0].details, "accepted");
    assert!(store
        .get(&MessageId::generate())
        .await
        .expect("get")
        .is_none());
}

pub async fn same_idempotency_key_returns_the_existing_message(store: Arc<dyn Store>) {
    let first = stored(&store, "+14155550101").await;
    let mut second = record("+14155550101");
    second.message.idempotency_key = first.message.idempotency_key.clone();
    match store.create(&second).await.expect("create") {
        Created::Existing(existing) => assert_eq!(existing.message.id, first.message.id),
        other => panic!("expected the existing message, got {other:?}"),
    }
    assert!(store.get(&second.message.id).await.expect("get").is_none());
}

pub async fn idempotency_keys_are_per_service(store: Arc<dyn Store>) {
    let mut billing = record("+14155550102");
    billing.message.service = Some("billing".to_owned());
    billing.message.idempotency_key = "order-7".to_owned();
    assert_eq!(store.create(&billing).await.expect("create"), Created::New);
    let mut shipping = record("+14155550102");
    shipping.message.service = Some("shipping".to_owned());
    shipping.message.idempotency_key = "order-7".to_owned();
    assert_eq!(
        store.create(&shipping).await.expect("create"),
        Created::New,
        "another service's key is its own"
    );
    let mut again = record("+14155550102");
    again.message.service = Some("billing".to_owned());
    again.message.idempotency_key = "order-7".to_owned();
    match store.create(&again).await.expect("create") {
        Created::Existing(existing) => assert_eq!(existing.message.id, billing.message.id),
        other => panic!("expected billing's message, got {other:?}"),
    }
    let got = store
        .get(&shipping.message.id)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.message.service.as_deref(), Some("shipping"));
    // Discarding one service's message frees only its key.
    assert!(store.discard(&shipping.message).await.expect("discard"));
    let mut billing_again = record("+14155550102");
    billing_again.message.service = Some("billing".to_owned());
    billing_again.message.idempotency_key = "order-7".to_owned();
    assert!(matches!(
        store.create(&billing_again).await.expect("create"),
        Created::Existing(_)
    ));
}

pub async fn the_key_holder_is_the_message_stored_under_the_key(store: Arc<dyn Store>) {
    // An own key (made for a message without one) and a caller's.
    let own = stored(&store, "+14155550103").await;
    assert_eq!(
        store.key_holder(&own.message).await.expect("holder"),
        Some(own.message.id.clone())
    );
    let mut callers = record("+14155550103");
    callers.message.service = Some("billing".to_owned());
    callers.message.idempotency_key = "order-9".to_owned();
    assert_eq!(
        store.key_holder(&callers.message).await.expect("holder"),
        None,
        "not stored yet"
    );
    assert_eq!(store.create(&callers).await.expect("create"), Created::New);
    // A later submission under each key: its copy is never stored, the key
    // is the earlier message's.
    for earlier in [&own, &callers] {
        let mut again = record("+14155550103");
        again.message.service = earlier.message.service.clone();
        again.message.idempotency_key = earlier.message.idempotency_key.clone();
        assert_eq!(
            store.key_holder(&again.message).await.expect("holder"),
            Some(earlier.message.id.clone())
        );
    }
    let mut other_service = record("+14155550103");
    other_service.message.service = Some("shipping".to_owned());
    other_service.message.idempotency_key = "order-9".to_owned();
    assert_eq!(
        store
            .key_holder(&other_service.message)
            .await
            .expect("holder"),
        None,
        "keys are per service"
    );
    assert!(store.discard(&callers.message).await.expect("discard"));
    assert_eq!(
        store.key_holder(&callers.message).await.expect("holder"),
        None,
        "discarding frees the key"
    );
}

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
    let mut email = record("c@example.com");
    email.message.content = Content::Email {
        from: "noreply@example.com".into(),
        subject: "Hi".into(),
        text: Some("Hello".into()),
        html: None,
        attachments: Vec::new(),
    };
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

pub async fn lists_by_filters_newest_first(store: Arc<dyn Store>) {
    let a = stored(&store, "+14155550109").await;
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let mut email = record("b@example.com");
    email.message.content = Content::Email {
        from: "noreply@example.com".into(),
        subject: "Hi".into(),
        text: Some("Hello".into()),
        html: None,
        attachments: Vec::new(),
    };
    store.create(&email).await.expect("create");
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let c = stored(&store, "+14155550109").await;
    store
        .update(
            &c.message.id,
            Transition::to(Status::Cancelled, Event::new("support", "cancelled")),
        )
        .await
        .expect("update");

    let all = store
        .list(&ListFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    let ids: Vec<_> = all.iter().map(|r| r.message.id.clone()).collect();
    assert_eq!(
        ids,
        vec![
            c.message.id.clone(),
            email.message.id.clone(),
            a.message.id.clone()
        ]
    );

    let sms = ListFilter {
        channel: Some(Channel::Sms),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.list(&sms).await.expect("list").len(), 2);
    let queued = ListFilter {
        status: Some(Status::Queued),
        to: Some("+14155550109".into()),
        limit: 10,
        ..Default::default()
    };
    let got = store.list(&queued).await.expect("list");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.id, a.message.id);
    let limited = store
        .list(&ListFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(limited.len(), 1);
    let since = ListFilter {
        created_after: Some(email.message.created_at),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.list(&since).await.expect("list").len(), 2);
}

/// Walks the whole list page by page with the cursor of each page's last
/// record.
async fn walk(store: &Arc<dyn Store>, mut filter: ListFilter) -> Vec<MessageRecord> {
    let mut seen = Vec::new();
    loop {
        let page = store.list(&filter).await.expect("list");
        let Some(last) = page.last() else {
            return seen;
        };
        filter.after = Some(filter.sort.key(last));
        let full = page.len() == filter.limit;
        seen.extend(page);
        if !full {
            return seen;
        }
    }
}

pub async fn pages_walk_every_message_once_in_each_order(store: Arc<dyn Store>) {
    use crate::ports::SortOrder;
    // Many in the same millisecond: the cursor must tell them apart by id.
    let mut ids = Vec::new();
    for i in 0..23 {
        let mut r = record("+14155550150");
        r.message.service = Some(if i % 2 == 0 { "billing" } else { "shipping" }.to_owned());
        r.message.reference = Some(format!("order-{}", i % 5));
        r.message.message_type = if i % 3 == 0 {
            crate::MessageType::Otp
        } else {
            crate::MessageType::Transactional
        };
        r.message.priority = if i % 4 == 0 {
            crate::Priority::Bulk
        } else {
            crate::Priority::Normal
        };
        assert_eq!(store.create(&r).await.expect("create"), Created::New);
        ids.push(r.message.id);
    }
    for sort in [SortOrder::CreatedDesc, SortOrder::CreatedAsc] {
        let seen = walk(
            &store,
            ListFilter {
                sort,
                limit: 4,
                ..Default::default()
            },
        )
        .await;
        let got: Vec<MessageId> = seen.iter().map(|r| r.message.id.clone()).collect();
        let mut expected = ids.clone();
        if sort.descending() {
            expected.reverse();
        }
        assert_eq!(got, expected, "{sort:?}");
    }
    let billing = walk(
        &store,
        ListFilter {
            service: Some("billing".into()),
            limit: 5,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(billing.len(), 12);
    assert!(billing
        .iter()
        .all(|r| r.message.service.as_deref() == Some("billing")));
    let one = ListFilter {
        reference: Some("order-3".into()),
        message_type: Some(crate::MessageType::Transactional),
        priority: Some(crate::Priority::Normal),
        limit: 50,
        ..Default::default()
    };
    let found = store.list(&one).await.expect("list");
    // i in {3, 8, 13, 18}: i % 3 != 0 and i % 4 != 0 leaves 13 and 18? 3 is
    // OTP, 8 is bulk, 18 is OTP: only 13.
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].message.id, ids[13]);

    // By last change: the changed ones come first, newest change first.
    for &i in &[5usize, 2, 9] {
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        let now = crate::now();
        store
            .claim(&ids[i], now, now + Duration::seconds(30), "t")
            .await
            .expect("claim");
        store
            .update(
                &ids[i],
                Transition::Sent {
                    attempt: 1,
                    provider: "kaleyra".into(),
                    provider_message_id: format!("k-{i}"),
                    event: Event::new("t", "sent"),
                },
            )
            .await
            .expect("update");
    }
    let by_change = walk(
        &store,
        ListFilter {
            sort: SortOrder::UpdatedDesc,
            limit: 4,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_change.len(), 23);
    let first: Vec<MessageId> = by_change[..3]
        .iter()
        .map(|r| r.message.id.clone())
        .collect();
    assert_eq!(first, vec![ids[9].clone(), ids[2].clone(), ids[5].clone()]);
    let through = store
        .list(&ListFilter {
            provider: Some("kaleyra".into()),
            sort: SortOrder::UpdatedAsc,
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    let through: Vec<MessageId> = through.iter().map(|r| r.message.id.clone()).collect();
    assert_eq!(
        through,
        vec![ids[5].clone(), ids[2].clone(), ids[9].clone()]
    );
}

/// Creates `n` messages, then walks them newest first with `limit=100`
/// while as many again are created: every message of the window is seen
/// once. Not in the suite (it is long); backends call it.
pub async fn walk_while_creating(store: Arc<dyn Store>, n: usize) {
    // 50 at a time: group-committing backends share their syncs.
    let mut window = std::collections::HashSet::new();
    for _ in 0..n.div_ceil(50) {
        let batch = (0..50).map(|_| stored(&store, "+14155550151"));
        for record in futures::future::join_all(batch).await {
            window.insert(record.message.id);
        }
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..n.div_ceil(50) {
                futures::future::join_all((0..50).map(|_| stored(&store, "+14155550152"))).await;
            }
        })
    };
    let mut filter = ListFilter {
        limit: 100,
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.list(&filter).await.expect("list");
        let Some(last) = page.last() else { break };
        filter.after = Some(filter.sort.key(last));
        let full = page.len() == filter.limit;
        seen.extend(page.into_iter().map(|r| r.message.id));
        if !full {
            break;
        }
    }
    writer.await.expect("writer");
    let unique: std::collections::HashSet<&MessageId> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a message was listed twice");
    assert!(
        window.iter().all(|id| unique.contains(id)),
        "a message was skipped"
    );
}

pub async fn counts_messages_by_status(store: Arc<dyn Store>) {
    assert!(store.count_by_status().await.expect("count").is_empty());
    for _ in 0..3 {
        stored(&store, "+14155550110").await;
    }
    let failed = stored(&store, "+14155550110").await;
    store
        .update(
            &failed.message.id,
            Transition::to(Status::Failed, Event::new("t", "failed")),
        )
        .await
        .expect("update");
    let counts = store.count_by_status().await.expect("count");
    assert_eq!(counts.get(&Status::Queued), Some(&3));
    assert_eq!(counts.get(&Status::Failed), Some(&1));
    assert_eq!(counts.len(), 2, "{counts:?}");
}

pub async fn discarding_removes_only_messages_no_attempt_has_touched(store: Arc<dyn Store>) {
    let unsent = stored(&store, "+14155550111").await;
    let claimed = stored(&store, "+14155550112").await;
    let now = crate::now();
    let claim = store
        .claim(&claimed.message.id, now, now + Duration::seconds(30), "t")
        .await
        .expect("claim");
    assert!(matches!(claim, Claim::Claimed { .. }), "{claim:?}");

    assert!(store.discard(&unsent.message).await.expect("discard"));
    assert!(!store.discard(&claimed.message).await.expect("discard"));
    assert!(!store.discard(&unsent.message).await.expect("again"));
    assert!(store.get(&unsent.message.id).await.expect("get").is_none());
    assert!(store.get(&claimed.message.id).await.expect("get").is_some());
    let listed = store
        .list(&ListFilter {
            limit: 100,
            ..ListFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "only the claimed one is listed");
    let counts = store.count_by_status().await.expect("count");
    assert_eq!(counts.get(&Status::Queued), None, "{counts:?}");

    // The idempotency key is free again: a retry makes a new message.
    let mut retry = record("+14155550111");
    retry.message.idempotency_key = unsent.message.idempotency_key.clone();
    assert_eq!(store.create(&retry).await.expect("create"), Created::New);
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

/// A trail that keeps growing is compacted: its start and its latest events
/// stay, the middle is summarised, and the record stays readable.
pub async fn a_long_trail_is_compacted(store: Arc<dyn Store>) {
    let record = stored(&store, "+14155550112").await;
    let id = &record.message.id;
    let total = crate::trail::MAX_TRAIL + 100;
    for i in 0..total {
        store
            .update(
                id,
                Transition::event(Event::new("test", format!("note {i}"))),
            )
            .await
            .expect("update");
    }
    let got = store.get(id).await.expect("get").expect("present");
    assert!(
        got.events.len() <= crate::trail::MAX_TRAIL + 16,
        "{} events kept",
        got.events.len()
    );
    assert_eq!(got.events[0].details, "accepted", "the start is kept");
    assert_eq!(
        got.events.last().map(|e| e.details.clone()),
        Some(format!("note {}", total - 1)),
        "the latest event is kept"
    );
    let summaries: Vec<_> = got
        .events
        .iter()
        .filter(|e| e.component == crate::trail::SUMMARY_COMPONENT)
        .collect();
    assert_eq!(summaries.len(), 1, "one summary");
    let summarised = summaries[0].raw.as_ref().expect("raw")["summarised"]["events"]
        .as_u64()
        .expect("count") as usize;
    assert_eq!(
        summarised + got.events.len() - 1,
        total + 1,
        "every event is kept or counted"
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

/// A stored message created `age` ago, moved to `status` by a report that
/// carries the vendor's payload (claimed first unless `status` is
/// `queued`); for retention tests.
pub async fn aged(
    store: &Arc<dyn Store>,
    to: &str,
    age: Duration,
    status: Status,
) -> MessageRecord {
    let mut record = record(to);
    record.message.created_at = crate::now() - age;
    assert_eq!(store.create(&record).await.expect("create"), Created::New);
    if status != Status::Queued {
        let now = crate::now();
        store
            .claim(&record.message.id, now, now + Duration::seconds(30), "test")
            .await
            .expect("claim");
        let report = Transition::to(
            status,
            Event::new("response-handler", status.as_str())
                .raw(serde_json::json!({ "vendor": "payload" })),
        );
        assert_eq!(
            store
                .update(&record.message.id, report)
                .await
                .expect("update"),
            Updated::Applied { status }
        );
    }
    record
}

/// Retention removes old finished records (freeing their keys), clears the
/// bodies of younger finished ones, leaves unfinished and new ones alone,
/// and a second sweep finds nothing more to do.
pub async fn retention_removes_old_records_and_clears_old_bodies(store: Arc<dyn Store>) {
    let old = aged(
        &store,
        "+14155550121",
        Duration::days(40),
        Status::Delivered,
    )
    .await;
    let old_unfinished = aged(&store, "+14155550122", Duration::days(40), Status::Queued).await;
    let middle = aged(&store, "+14155550123", Duration::days(10), Status::Failed).await;
    let recent = aged(&store, "+14155550124", Duration::days(1), Status::Delivered).await;
    let now = crate::now();
    let records_before = Some(now - Duration::days(30));
    let bodies_before = Some(now - Duration::days(7));

    let first = store
        .expire(records_before, bodies_before, 100)
        .await
        .expect("expire");
    assert_eq!(first.removed, 1, "{first:?}");
    assert_eq!(first.redacted, 1, "{first:?}");

    assert!(store.get(&old.message.id).await.expect("get").is_none());
    let kept = store
        .get(&old_unfinished.message.id)
        .await
        .expect("get")
        .expect("an unfinished message stays");
    assert_eq!(kept.message.content, old_unfinished.message.content);

    let cleared = store
        .get(&middle.message.id)
        .await
        .expect("get")
        .expect("a younger finished message stays");
    assert_eq!(cleared.status, Status::Failed);
    assert_ne!(cleared.message.content, middle.message.content);
    match &cleared.message.content {
        Content::Sms { body, .. } => assert_eq!(body, crate::message::REMOVED_BODY),
        other => panic!("expected an SMS, got {other:?}"),
    }
    assert!(cleared.events.len() >= 2, "{:?}", cleared.events);
    assert!(
        cleared.events.iter().all(|e| e.raw.is_none()),
        "{:?}",
        cleared.events
    );

    let untouched = store
        .get(&recent.message.id)
        .await
        .expect("get")
        .expect("a new message stays");
    assert_eq!(untouched.message.content, recent.message.content);
    assert!(untouched.events.iter().any(|e| e.raw.is_some()));

    let counts = store.count_by_status().await.expect("count");
    assert_eq!(counts.get(&Status::Delivered), Some(&1), "{counts:?}");

    let second = store
        .expire(records_before, bodies_before, 100)
        .await
        .expect("expire again");
    assert_eq!(second, crate::ports::Expired::default());

    // The removed message's idempotency key is free again.
    let mut again = record("+14155550121");
    again.message.idempotency_key = old.message.idempotency_key.clone();
    assert_eq!(store.create(&again).await.expect("create"), Created::New);
}

/// One call does at most `limit` of each; repeated calls finish the work.
pub async fn retention_works_in_bounded_steps(store: Arc<dyn Store>) {
    for i in 0..5 {
        aged(
            &store,
            &format!("+1415555013{i}"),
            Duration::days(40),
            Status::Delivered,
        )
        .await;
    }
    let before = Some(crate::now() - Duration::days(30));
    let mut removed = Vec::new();
    loop {
        let step = store.expire(before, None, 2).await.expect("expire");
        assert!(step.removed <= 2, "{step:?}");
        if step.removed == 0 {
            break;
        }
        removed.push(step.removed);
    }
    assert_eq!(removed.iter().sum::<usize>(), 5, "{removed:?}");
    assert!(removed.len() >= 3, "{removed:?}");
}

/// Bodies kept longer than records, and retention made longer after a
/// sweep, are settings a sweep must take without failing or clearing
/// anything younger than the bodies' retention.
pub async fn retention_takes_bodies_kept_longer_than_records(store: Arc<dyn Store>) {
    let young = aged(
        &store,
        "+14155550141",
        Duration::days(20),
        Status::Delivered,
    )
    .await;
    let now = crate::now();
    let cleared = store
        .expire(
            Some(now - Duration::days(30)),
            Some(now - Duration::days(7)),
            100,
        )
        .await
        .expect("expire with bodies at 7 days");
    assert_eq!(cleared.redacted, 1, "{cleared:?}");
    let old = aged(
        &store,
        "+14155550142",
        Duration::days(35),
        Status::Delivered,
    )
    .await;
    // Now bodies for 40 days, records for 30: the watermark of the first
    // sweep is ahead of the new one.
    let swept = store
        .expire(
            Some(now - Duration::days(30)),
            Some(now - Duration::days(40)),
            100,
        )
        .await
        .expect("expire with bodies kept longer than records");
    assert_eq!(swept.removed, 1, "{swept:?}");
    assert_eq!(swept.redacted, 0, "{swept:?}");
    assert!(store.get(&old.message.id).await.expect("get").is_none());
    let kept = store
        .get(&young.message.id)
        .await
        .expect("get")
        .expect("a 20-day-old message stays");
    assert_eq!(kept.status, Status::Delivered);
}

/// `get_recent` gives the record as `get` does, with only the last events
/// of its trail, oldest first.
pub async fn recent_events_are_the_last_of_the_trail(store: Arc<dyn Store>) {
    let record = stored(&store, "+14155550177").await;
    let id = &record.message.id;
    for i in 0..3 {
        let note = Transition::event(Event::new("support", format!("note {i}")));
        store.update(id, note).await.expect("note");
    }
    let whole = store.get(id).await.expect("get").expect("present");
    assert_eq!(whole.events.len(), 4);
    let recent = store
        .get_recent(id, 2)
        .await
        .expect("get_recent")
        .expect("present");
    let details: Vec<_> = recent.events.iter().map(|e| e.details.as_str()).collect();
    assert_eq!(details, ["note 1", "note 2"]);
    assert_eq!(
        MessageRecord {
            events: Vec::new(),
            ..recent
        },
        MessageRecord {
            events: Vec::new(),
            ..whole.clone()
        }
    );
    let all = store
        .get_recent(id, 10)
        .await
        .expect("get_recent")
        .expect("present");
    assert_eq!(all.events, whole.events);
    let bare = store
        .get_recent(id, 0)
        .await
        .expect("get_recent")
        .expect("present");
    assert_eq!(
        bare,
        MessageRecord {
            events: Vec::new(),
            ..whole.clone()
        },
        "no events, the rest as stored"
    );
    assert!(store
        .get_recent(&MessageId::generate(), 0)
        .await
        .expect("get_recent")
        .is_none());
    assert!(store
        .get_recent(&MessageId::generate(), 2)
        .await
        .expect("get_recent")
        .is_none());
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

/// Expands to one test per case of the store contract. `$make` is an
/// expression yielding a future of a fresh `Arc<dyn Store>`.
#[macro_export]
macro_rules! store_contract {
    ($make:expr) => {
        $crate::__contract_cases!(
            store,
            $make,
            [
                create_then_get_round_trips,
                same_idempotency_key_returns_the_existing_message,
                idempotency_keys_are_per_service,
                the_key_holder_is_the_message_stored_under_the_key,
                concurrent_claims_yield_one_owner,
                sent_and_terminal_messages_are_not_claimed,
                a_message_s_channel_told_in_advance_finds_it,
                expired_lease_is_taken_over_with_verification,
                pending_retry_is_claimed_only_when_due,
                statuses_only_move_forward,
                stale_attempt_outcomes_are_ignored,
                finds_messages_by_provider_message_id,
                lists_by_filters_newest_first,
                counts_messages_by_status,
                pages_walk_every_message_once_in_each_order,
                discarding_removes_only_messages_no_attempt_has_touched,
                a_lease_is_extended_only_by_its_attempt,
                a_long_trail_is_compacted,
                a_report_applies_only_to_its_providers_message,
                an_unconfirmed_send_is_settled_by_its_providers_report,
                a_report_settles_a_message_no_attempt_is_sending,
                only_the_attempt_in_flight_ends_its_message,
                retention_removes_old_records_and_clears_old_bodies,
                retention_works_in_bounded_steps,
                retention_takes_bodies_kept_longer_than_records,
                recent_events_are_the_last_of_the_trail,
                an_applied_update_hands_out_the_record_it_left,
            ]
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_cases {
    ($suite:ident, $make:expr, [$($case:ident),+ $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $make.await;
                $crate::contract::$suite::$case(backend).await;
            }
        )+
    };
}
