//! Retention: old records removed, old bodies cleared, in bounded steps.

use super::*;

/// A stored message created `age` ago, moved to `status` by a report that
/// carries the vendor's payload (claimed first unless `status` is
/// `queued`); for retention tests.
pub async fn aged(
    store: &Arc<dyn Store>,
    to: &str,
    age: Duration,
    status: Status,
) -> MessageRecord {
    aged_record(store, record(to), age, status).await
}

/// [`aged`] for a record of the caller's.
pub async fn aged_record(
    store: &Arc<dyn Store>,
    mut record: MessageRecord,
    age: Duration,
    status: Status,
) -> MessageRecord {
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
    // With a caller's key, which a store may index apart from the message.
    let mut keyed = record("+14155550121");
    keyed.message.idempotency_key = "order-old".into();
    let old = aged_record(&store, keyed, Duration::days(40), Status::Delivered).await;
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

    // The removed message's idempotency key is free again, in every
    // channel.
    let mut again = email_record("ana@example.com");
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
