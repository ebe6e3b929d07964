//! Creating a record, idempotency keys, and discarding what nothing touched.

use super::*;

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

/// A message created from its JSON (the accept path) is stored as
/// [`Store::create`] stores it: an email's and an SMS's, with their own
/// key or a caller's, read back whole, and the key still finds them.
pub async fn a_message_created_from_its_json_reads_back_whole(store: Arc<dyn Store>) {
    let mut keyed = record("+14155550108");
    keyed.message.idempotency_key = "order-json".into();
    for record in [
        keyed,
        record("+14155550109"),
        email_record("ana@example.com"),
    ] {
        let json = record.message.encode();
        assert_eq!(
            store.create_encoded(&record, &json).await.expect("create"),
            Created::New
        );
        let got = store
            .get(&record.message.id)
            .await
            .expect("get")
            .expect("present");
        assert_eq!(got.message, record.message);
        assert_eq!(got.events, record.events);
        match store.create(&record).await.expect("create") {
            Created::Existing(existing) => assert_eq!(existing.message, record.message),
            other => panic!("expected the stored message, got {other:?}"),
        }
    }
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
    assert!(store.discard(&shipping).await.expect("discard"));
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
    assert!(store.discard(&callers).await.expect("discard"));
    assert_eq!(
        store.key_holder(&callers.message).await.expect("holder"),
        None,
        "discarding frees the key"
    );
}

pub async fn discarding_removes_only_messages_nothing_has_touched(store: Arc<dyn Store>) {
    let unsent = stored(&store, "+14155550111").await;
    let claimed = stored(&store, "+14155550112").await;
    let now = crate::now();
    let claim = store
        .claim(&claimed.message.id, now, now + Duration::seconds(30), "t")
        .await
        .expect("claim");
    assert!(matches!(claim, Claim::Claimed { .. }), "{claim:?}");

    // A repeated submission that answered for a message notes it on the
    // trail: the message is kept.
    let answered = stored(&store, "+14155550113").await;
    let noted = Transition::event(Event::new("ingest", "submitted again"));
    store
        .update(&answered.message.id, noted)
        .await
        .expect("note");

    assert!(store.discard(&unsent).await.expect("discard"));
    assert!(!store.discard(&claimed).await.expect("discard"));
    assert!(!store.discard(&answered).await.expect("discard"));
    assert!(!store.discard(&unsent).await.expect("again"));
    assert!(store.get(&unsent.message.id).await.expect("get").is_none());
    assert!(store.get(&claimed.message.id).await.expect("get").is_some());
    let listed = store
        .list(&ListFilter {
            limit: 100,
            ..ListFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(
        listed.len(),
        2,
        "the claimed and the answered one are listed"
    );
    let counts = store.count_by_status().await.expect("count");
    assert_eq!(counts.get(&Status::Queued), Some(&1), "{counts:?}");

    // The idempotency key is free again: a retry makes a new message.
    let mut retry = record("+14155550111");
    retry.message.idempotency_key = unsent.message.idempotency_key.clone();
    assert_eq!(store.create(&retry).await.expect("create"), Created::New);
}

/// A submission under a key whose holder is being discarded (its own
/// submit failed) finds the holder or stores its own message: it never
/// fails for having come in between.
pub async fn a_create_racing_its_key_holders_discard_stores_or_finds(store: Arc<dyn Store>) {
    for round in 0..200 {
        let mut holder = record("+14155550114");
        holder.message.idempotency_key = format!("race-{round}");
        assert_eq!(store.create(&holder).await.expect("create"), Created::New);
        let mut second = record("+14155550114");
        second.message.idempotency_key = holder.message.idempotency_key.clone();
        let (discarded, created) = tokio::join!(store.discard(&holder), store.create(&second));
        assert!(discarded.expect("discard"), "round {round}");
        match created {
            Ok(Created::New) => {
                let got = store.get(&second.message.id).await.expect("get");
                assert!(got.is_some(), "round {round}: stored");
            }
            Ok(Created::Existing(existing)) => {
                assert_eq!(existing.message.id, holder.message.id, "round {round}");
            }
            Err(e) => panic!("round {round}: {e}"),
        }
    }
}

/// A caller's message under `key` for the billing service.
fn keyed(mut record: MessageRecord, key: &str) -> MessageRecord {
    record.message.service = Some("billing".into());
    record.message.idempotency_key = key.into();
    record
}

/// An idempotency key is one message whatever its channel: an email under
/// the key of a stored SMS finds the SMS (which the accept path then
/// refuses as another message), and the key's holder is the SMS.
pub async fn a_key_holds_one_message_across_channels(store: Arc<dyn Store>) {
    let sms = keyed(record("+14155550115"), "order-11");
    assert_eq!(store.create(&sms).await.expect("create"), Created::New);
    let email = keyed(email_record("ana@example.com"), "order-11");
    match store.create(&email).await.expect("create") {
        Created::Existing(existing) => assert_eq!(existing.message.id, sms.message.id),
        other => panic!("expected the SMS under the key, got {other:?}"),
    }
    assert!(store.get(&email.message.id).await.expect("get").is_none());
    assert_eq!(
        store.key_holder(&email.message).await.expect("holder"),
        Some(sms.message.id.clone())
    );
    let listed = store
        .list(&ListFilter {
            limit: 100,
            ..ListFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "only the SMS is stored: {listed:?}");
}

/// A key freed by discarding its holder is free in every channel: an
/// email under a discarded SMS's key is a new message, and holds the key.
pub async fn a_key_freed_in_one_channel_is_free_in_all(store: Arc<dyn Store>) {
    let sms = keyed(record("+14155550116"), "order-12");
    assert_eq!(store.create(&sms).await.expect("create"), Created::New);
    assert!(store.discard(&sms).await.expect("discard"));
    let email = keyed(email_record("bo@example.com"), "order-12");
    assert_eq!(store.create(&email).await.expect("create"), Created::New);
    assert_eq!(
        store.key_holder(&sms.message).await.expect("holder"),
        Some(email.message.id.clone())
    );
    let sms_again = keyed(record("+14155550116"), "order-12");
    match store.create(&sms_again).await.expect("create") {
        Created::Existing(existing) => assert_eq!(existing.message.id, email.message.id),
        other => panic!("expected the email under the key, got {other:?}"),
    }
}

/// Two submissions under one key on different channels at the same moment:
/// one is stored, the other finds it, and nothing of the other stays.
pub async fn creates_on_two_channels_under_one_key_keep_one_message(store: Arc<dyn Store>) {
    for round in 0..100 {
        let key = format!("both-{round}");
        let sms = keyed(record("+14155550117"), &key);
        let email = keyed(email_record("cy@example.com"), &key);
        let (a, b) = tokio::join!(store.create(&sms), store.create(&email));
        let (a, b) = (a.expect("sms"), b.expect("email"));
        let (kept, lost, found) = match (a, b) {
            (Created::New, Created::Existing(found)) => (&sms, &email, found),
            (Created::Existing(found), Created::New) => (&email, &sms, found),
            other => panic!("round {round}: exactly one is new, got {other:?}"),
        };
        assert_eq!(found.message.id, kept.message.id, "round {round}");
        assert!(
            store.get(&lost.message.id).await.expect("get").is_none(),
            "round {round}: the other is not stored"
        );
        assert_eq!(
            store.key_holder(&lost.message).await.expect("holder"),
            Some(kept.message.id.clone()),
            "round {round}"
        );
    }
}
