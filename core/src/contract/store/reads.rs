//! Lists, pages, counts and trails.

use super::*;

pub async fn lists_by_filters_newest_first(store: Arc<dyn Store>) {
    let a = stored(&store, "+14155550109").await;
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let email = email_record("b@example.com");
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
