//! Unit tests of the store's own encoding and key handling; the shared
//! contract runs in tests/it.

use super::*;
use mdc_core::contract::sample_message;
use mdc_core::Event;

fn fresh() -> (tempfile::TempDir, Db, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = Db::open(&dir.path().join("store.redb")).expect("database opens");
    let store = EmbeddedStore::open(db.clone()).expect("store opens");
    (dir, db, store)
}

async fn stored(store: &EmbeddedStore, id: &MessageId) -> MessageRecord {
    store
        .get(id)
        .await
        .expect("store answers")
        .expect("record present")
}

/// A message sent without a key is found again by its id, so its own
/// key takes no index entry; a caller's key does.
#[tokio::test]
async fn only_callers_keys_are_indexed() {
    let (_dir, db, store) = fresh();
    let queued = || Event::new("ingest", "queued").status(Status::Queued);
    let own = MessageRecord::new(sample_message("+14155550100"), Status::Queued, queued());
    let mut keyed = MessageRecord::new(sample_message("+14155550100"), Status::Queued, queued());
    keyed.message.idempotency_key = "order-7".into();
    assert_eq!(
        store.create(&own).await.expect("store answers"),
        Created::New
    );
    assert_eq!(
        store.create(&keyed).await.expect("store answers"),
        Created::New
    );
    let keys: Vec<String> = {
        let txn = db.read().expect("store answers");
        let table = txn.open_table(IDEMPOTENCY).expect("store answers");
        table
            .iter()
            .expect("store answers")
            .map(|row| row.expect("store answers").0.value().to_owned())
            .collect()
    };
    assert_eq!(keys, vec!["order-7".to_owned()]);
    // Submitting either again finds the stored message.
    for record in [&own, &keyed] {
        match store.create(record).await.expect("store answers") {
            Created::Existing(existing) => assert_eq!(existing.message, record.message),
            other => panic!("expected the stored message, got {other:?}"),
        }
    }
}

/// An id already stored under another key (or service) is refused,
/// whether the new key is the message's own or a caller's.
#[tokio::test]
async fn a_stored_id_under_another_key_is_refused() {
    let (_dir, _db, store) = fresh();
    let queued = Event::new("ingest", "queued").status(Status::Queued);
    let first = MessageRecord::new(sample_message("+14155550100"), Status::Queued, queued);
    assert_eq!(
        store.create(&first).await.expect("store answers"),
        Created::New
    );
    let mut other_service = first.clone();
    other_service.message.service = Some("billing".into());
    let mut callers_key = first.clone();
    callers_key.message.idempotency_key = "order-8".into();
    for record in [other_service, callers_key] {
        assert!(store.create(&record).await.is_err(), "{:?}", record.message);
    }
    assert_eq!(
        stored(&store, &first.message.id).await.message,
        first.message
    );
}

/// A data directory written before records were compressed holds plain
/// JSON rows: they are read, and changed records are written anew.
#[tokio::test]
async fn records_written_as_plain_json_are_read_and_updated() {
    let (_dir, db, store) = fresh();
    let message = sample_message("+14155550100");
    let id = message.id.clone();
    let accepted = Event::new("ingest", "accepted").status(Status::Queued);
    let mut record = MessageRecord::new(message, Status::Queued, accepted.clone());
    record.events.clear();
    db.write_now(|txn| {
        let key = id.bits();
        txn.open_table(MESSAGES)?
            .insert(key, serde_json::to_vec(&record)?.as_slice())?;
        txn.open_table(EVENTS)?
            .insert((key, 0), serde_json::to_vec(&accepted)?.as_slice())?;
        Ok(())
    })
    .expect("store answers");

    let read = stored(&store, &id).await;
    assert_eq!(read.status, Status::Queued);
    assert_eq!(read.events, vec![accepted.clone()]);

    let cancelled = Event::new("support", "cancelled").status(Status::Cancelled);
    store
        .update(&id, Transition::to(Status::Cancelled, cancelled.clone()))
        .await
        .expect("store answers");
    let read = stored(&store, &id).await;
    assert_eq!(read.status, Status::Cancelled);
    assert_eq!(read.events, vec![accepted, cancelled]);

    // The changed record is stored compressed and the new event, kept in
    // its state, in the current layout; the old event row is left as it
    // was.
    assert_ne!(raw(&db, MESSAGES, &id).expect("message stored")[0], b'{');
    let rows = trail_rows(&db, &id);
    assert_eq!(rows.len(), 1);
    let txn = db.read().expect("store answers");
    let table = txn.open_table(EVENTS).expect("store answers");
    let row = table.get((id.bits(), 0)).expect("store answers");
    assert_eq!(row.expect("row present").value()[0], b'{');
    let state = state_of(&db, &id);
    assert_eq!(state.next_event, Some(1));
    assert_eq!(state.trail.len(), 1);
    assert_ne!(state.trail[0][0], b'{');
}

/// The raw value of `id` in `table`.
fn raw(db: &Db, table: TableDefinition<u128, &[u8]>, id: &MessageId) -> Option<Vec<u8>> {
    let txn = db.read().expect("store answers");
    let table = txn.open_table(table).expect("store answers");
    let value = table.get(id.bits()).expect("store answers");
    value.map(|v| v.value().to_vec())
}

async fn claim_now(store: &EmbeddedStore, id: &MessageId) -> MessageRecord {
    let now = mdc_core::now();
    match store
        .claim(id, now, now + chrono::Duration::seconds(30), "dispatcher")
        .await
        .expect("store answers")
    {
        Claim::Claimed { record, .. } => *record,
        other => panic!("expected a claim, got {other:?}"),
    }
}

fn sent(attempt: u32) -> Transition {
    Transition::Sent {
        attempt,
        provider: "kaleyra".into(),
        provider_message_id: "kal-1".into(),
        event: Event::new("dispatcher", "sent").status(Status::Sent),
    }
}

/// A claim and `sent` write only the small state: the message's stored
/// value stays as created, and the claim still hands out the whole
/// message.
#[tokio::test]
async fn a_status_change_leaves_the_stored_message_alone() {
    let (_dir, db, store) = fresh();
    let mut message = sample_message("+14155550100");
    message.reference = Some("order-9".into());
    let id = message.id.clone();
    let queued = Event::new("ingest", "queued").status(Status::Queued);
    let record = MessageRecord::new(message.clone(), Status::Queued, queued);
    assert_eq!(
        store.create(&record).await.expect("store answers"),
        Created::New
    );
    let written = raw(&db, MESSAGES, &id).expect("message stored");
    let state = raw(&db, STATES, &id).expect("state stored");
    assert!(
        state.len() < written.len(),
        "{} {}",
        state.len(),
        written.len()
    );

    let claimed = claim_now(&store, &id).await;
    assert_eq!(claimed.message, message);
    assert_eq!(claimed.status, Status::Sending);
    assert!(matches!(
        store.update(&id, sent(1)).await.expect("store answers"),
        Updated::Applied {
            status: Status::Sent
        }
    ));

    assert_eq!(raw(&db, MESSAGES, &id), Some(written));
    assert_ne!(raw(&db, STATES, &id), Some(state));
    let read = stored(&store, &id).await;
    assert_eq!(read.message, message);
    assert_eq!(read.status, Status::Sent);
    assert_eq!(read.attempts, 1);
    assert_eq!(read.provider_message_id.as_deref(), Some("kal-1"));
    assert_eq!(read.events.len(), 3);
    assert_eq!(
        store
            .find_by_provider_message_id("kaleyra", "kal-1")
            .await
            .expect("store answers"),
        Some(id)
    );
}

/// A data directory written before states were kept apart holds whole
/// records (compressed, no state row): they are read and listed as they
/// are, claimed with their message, and split by their first change.
/// Writes `message`, queued, as records were stored before states were
/// kept apart: whole in the messages table; returns its one event.
fn store_whole(db: &Db, message: &mdc_core::Message) -> Event {
    let id = &message.id;
    let queued = Event::new("ingest", "queued").status(Status::Queued);
    let mut record = MessageRecord::new(message.clone(), Status::Queued, queued.clone());
    record.events.clear();
    let created = message.created_at.timestamp_millis();
    db.write_now(|txn| {
        let key = id.bits();
        txn.open_table(MESSAGES)?
            .insert(key, codec::encode(&record)?.as_slice())?;
        txn.open_table(EVENTS)?
            .insert((key, 0), codec::encode(&queued)?.as_slice())?;
        txn.open_table(BY_CREATED)?.insert((created, key), ())?;
        txn.open_table(BY_STATUS)?
            .insert((status_code(Status::Queued)?, created, key), ())?;
        Ok(())
    })
    .expect("store answers");
    assert_eq!(raw(db, STATES, id), None);
    queued
}

#[tokio::test]
async fn records_stored_whole_are_read_and_split_by_their_next_change() {
    let (_dir, db, store) = fresh();
    let message = sample_message("+14155550100");
    let id = message.id.clone();
    let queued = store_whole(&db, &message);

    let read = stored(&store, &id).await;
    assert_eq!(read.message, message);
    assert_eq!(read.events, vec![queued.clone()]);
    let listed = store
        .list(&ListFilter {
            status: Some(Status::Queued),
            limit: 10,
            ..ListFilter::default()
        })
        .await
        .expect("store answers");
    assert_eq!(
        listed.iter().map(|r| &r.message).collect::<Vec<_>>(),
        vec![&message]
    );

    let claimed = claim_now(&store, &id).await;
    assert_eq!(claimed.message, message);
    assert!(raw(&db, STATES, &id).is_some());
    let split: mdc_core::Message =
        codec::decode(&raw(&db, MESSAGES, &id).expect("message stored")).expect("a message");
    assert_eq!(split, message);

    store.update(&id, sent(1)).await.expect("store answers");
    let read = stored(&store, &id).await;
    assert_eq!(read.message, message);
    assert_eq!(read.status, Status::Sent);
    assert_eq!(read.events.len(), 3);
    assert_eq!(read.events[0], queued);
}

/// The trail rows of `id`, by number.
fn trail_rows(db: &Db, id: &MessageId) -> Vec<(u32, Event)> {
    let txn = db.read().expect("store answers");
    let table = txn.open_table(EVENTS).expect("store answers");
    table
        .range(rows_of(id.bits()))
        .expect("store answers")
        .map(|row| {
            let (key, value) = row.expect("store answers");
            (
                key.value().1,
                event_codec::decode(value.value()).expect("an event"),
            )
        })
        .collect()
}

fn state_of(db: &Db, id: &MessageId) -> State {
    State::decode(&raw(db, STATES, id).expect("state stored")).expect("a state")
}

/// A new message, accepted and queued, as the accept path stores it.
async fn accepted(store: &EmbeddedStore) -> (MessageId, MessageRecord) {
    let message = sample_message("+14155550100");
    let record = MessageRecord::accepted(message, "ingest", "accepted");
    store.create(&record).await.expect("store answers");
    (record.message.id.clone(), record)
}

/// Reads of the whole trail and of its last `n` events, for every `n`,
/// agree with `expected`.
async fn trail_reads_as(store: &EmbeddedStore, id: &MessageId, expected: &[Event]) {
    assert_eq!(stored(store, id).await.events, expected);
    for n in 0..=expected.len() + 2 {
        let recent = store
            .get_recent(id, n)
            .await
            .expect("store answers")
            .expect("record present")
            .events;
        assert_eq!(
            recent,
            expected[expected.len().saturating_sub(n)..],
            "last {n}"
        );
    }
}

/// A message's usual way (created, claimed, sent, delivered) writes no
/// trail row: its events are kept in its state, in order.
#[tokio::test]
async fn a_usual_trail_is_kept_in_the_state() {
    let (_dir, db, store) = fresh();
    let (id, record) = accepted(&store).await;
    assert_eq!(state_of(&db, &id).next_event, Some(0));
    assert_eq!(state_of(&db, &id).trail.len(), 2);

    let sending = claim_now(&store, &id).await.events;
    assert_eq!(sending.len(), 1, "the claim's own event");
    store.update(&id, sent(1)).await.expect("store answers");
    let delivered = Event::new("response-handler", "delivered")
        .status(Status::Delivered)
        .raw(serde_json::json!({"status": "DELIVRD", "id": "kal-1"}));
    store
        .update(&id, Transition::to(Status::Delivered, delivered))
        .await
        .expect("store answers");
    assert!(trail_rows(&db, &id).is_empty());
    let state = state_of(&db, &id);
    assert_eq!((state.next_event, state.trail.len()), (Some(0), 5));
    let all = stored(&store, &id).await.events;
    assert_eq!(all.len(), 5);
    assert_eq!(all[..2], record.events[..]);
    assert_eq!(all[2], sending[0]);
    assert_eq!(all[3].status, Some(Status::Sent));
    assert_eq!(all[4].status, Some(Status::Delivered));
    trail_reads_as(&store, &id, &all).await;
}

/// Past what a state keeps (by count or by bytes), its events move to
/// rows after the rows before, and the next ones are kept in the state
/// again: the trail reads in the order it was written.
#[tokio::test]
async fn events_past_what_a_state_keeps_move_to_rows_in_order() {
    let (_dir, db, store) = fresh();
    let (id, record) = accepted(&store).await;
    let mut expected = record.events.clone();
    for i in 0..trail_rows::STATE_EVENTS + 3 {
        let note = Event::new("support", format!("note {i}"));
        store
            .update(&id, Transition::event(note.clone()))
            .await
            .expect("store answers");
        expected.push(note);
        let state = state_of(&db, &id);
        let rows = trail_rows(&db, &id);
        assert_eq!(
            rows.len() + state.trail.len(),
            expected.len(),
            "after note {i}"
        );
        assert!(state.trail.len() <= trail_rows::STATE_EVENTS);
        assert_eq!(state.next_event, Some(rows.len() as u32));
    }
    // The first STATE_EVENTS + 1 went to rows together; the rest wait in
    // the state.
    let rows = trail_rows(&db, &id);
    assert_eq!(
        rows.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        (0..=trail_rows::STATE_EVENTS as u32).collect::<Vec<_>>()
    );
    assert_eq!(state_of(&db, &id).trail.len(), 4);
    trail_reads_as(&store, &id, &expected).await;

    // An event larger than a state keeps goes to rows with those before
    // (a payload that does not compress: hex of a pseudo-random walk).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let text: String = (0..trail_rows::STATE_EVENT_BYTES)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            format!("{:02x}", (x >> 56) as u8)
        })
        .collect();
    let big = Event::new("response-handler", "report").raw(serde_json::json!({ "text": text }));
    assert!(event_codec::encode(&big).expect("encodes").len() > trail_rows::STATE_EVENT_BYTES);
    store
        .update(&id, Transition::event(big.clone()))
        .await
        .expect("store answers");
    expected.push(big);
    assert!(state_of(&db, &id).trail.is_empty());
    assert_eq!(trail_rows(&db, &id).len(), expected.len());
    trail_reads_as(&store, &id, &expected).await;
}

/// A state written before it kept the next trail row's number (or
/// rewritten without it) keeps no events: the next ones go after the
/// last row, none is overwritten.
#[tokio::test]
async fn a_state_without_the_next_event_number_appends_after_the_last_row() {
    let (_dir, db, store) = fresh();
    let (id, record) = accepted(&store).await;
    claim_now(&store, &id).await;
    // As such a state's record was stored: its events in rows.
    let mut state = state_of(&db, &id);
    let kept = std::mem::take(&mut state.trail);
    state.next_event = None;
    db.write_now(|txn| {
        let mut events = txn.open_table(EVENTS)?;
        for (seq, event) in kept.iter().enumerate() {
            events.insert((id.bits(), seq as u32), event.as_slice())?;
        }
        txn.open_table(STATES)?
            .insert(id.bits(), state.encode()?.as_slice())?;
        Ok(())
    })
    .expect("store answers");

    store.update(&id, sent(1)).await.expect("store answers");
    let rows = trail_rows(&db, &id);
    assert_eq!(
        rows.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let state = state_of(&db, &id);
    assert_eq!((state.next_event, state.trail.len()), (Some(3), 1));
    let read = stored(&store, &id).await;
    assert_eq!(read.events.len(), 4);
    assert_eq!(read.events[..2], record.events[..]);
    assert_eq!(read.events[3].status, Some(Status::Sent));
    trail_reads_as(&store, &id, &read.events).await;
}

/// The write that splits a record stored whole hands out its message too,
/// with the state it wrote.
#[tokio::test]
async fn an_update_of_a_record_stored_whole_hands_out_the_record() {
    let (_dir, db, store) = fresh();
    let message = sample_message("+14155550100");
    let id = message.id.clone();
    store_whole(&db, &message);
    let expired = Transition::to(Status::Expired, Event::new("dispatcher", "deadline passed"));
    let (updated, after) = store
        .update_and_read(&id, expired)
        .await
        .expect("store answers");
    assert_eq!(
        updated,
        Updated::Applied {
            status: Status::Expired
        }
    );
    let after = after.expect("the record after the write");
    assert_eq!(after.message, message);
    assert_eq!(after.status, Status::Expired);
    assert!(after.events.is_empty());
    let now = store
        .get_recent(&id, 0)
        .await
        .expect("store answers")
        .expect("record present");
    assert_eq!(after, now);
}

/// A claim by a caller holding the message leaves the stored one unread:
/// with its row gone, a claim by id fails and a claim by message works.
#[tokio::test]
async fn a_claim_by_message_reads_no_stored_message() {
    let (_dir, db, store) = fresh();
    let queued = Event::new("ingest", "queued").status(Status::Queued);
    let first = MessageRecord::new(
        sample_message("+14155550140"),
        Status::Queued,
        queued.clone(),
    );
    let second = MessageRecord::new(sample_message("+14155550141"), Status::Queued, queued);
    for record in [&first, &second] {
        assert_eq!(
            store.create(record).await.expect("store answers"),
            Created::New
        );
    }
    db.write_now(|txn| {
        let mut messages = txn.open_table(MESSAGES)?;
        for record in [&first, &second] {
            messages.remove(record.message.id.bits())?;
        }
        Ok(())
    })
    .expect("rows removed");
    let now = mdc_core::now();
    let lease = now + chrono::Duration::seconds(30);
    assert!(store
        .claim(&first.message.id, now, lease, "dispatcher")
        .await
        .is_err());
    match store
        .claim_message(&second.message, now, lease, "dispatcher")
        .await
        .expect("store answers")
    {
        Claim::Claimed { record, .. } => {
            assert_eq!(record.message, second.message);
            assert_eq!(record.status, Status::Sending);
        }
        other => panic!("expected a claim, got {other:?}"),
    }
}

mod brief;
mod held;

/// The vendor-id index is keyed by provider and vendor id, split by the
/// unit separator; a store written by an earlier version must still be
/// found.
#[test]
fn vendor_ids_are_keyed_by_provider_and_id() {
    assert_eq!(provider_key("kaleyra", "abc-1"), "kaleyra\u{1f}abc-1");
}
