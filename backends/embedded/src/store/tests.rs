//! Unit tests of the store's own encoding and key handling; the shared
//! contract runs in tests/it.

use super::*;
use mdc_core::contract::sample_message;

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
        let key = id.as_str();
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

    // The changed record and the new event are stored compressed; the
    // old event row is left as it was.
    let txn = db.read().expect("store answers");
    let messages = txn.open_table(MESSAGES).expect("store answers");
    assert_ne!(
        messages
            .get(id.as_str())
            .expect("store answers")
            .expect("store answers")
            .value()[0],
        b'{'
    );
    let events = txn.open_table(EVENTS).expect("store answers");
    assert_eq!(
        events
            .get((id.as_str(), 0))
            .expect("store answers")
            .expect("store answers")
            .value()[0],
        b'{'
    );
    assert_ne!(
        events
            .get((id.as_str(), 1))
            .expect("store answers")
            .expect("store answers")
            .value()[0],
        b'{'
    );
}
