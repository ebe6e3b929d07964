//! Status and update-time index moves held for a while
//! ([`super::super::index_moves`]).

use std::time::Duration;

use super::*;
use index_moves::{Place, INDEX_MOVES};

/// A store holding index moves for an hour, so a test sees them held.
fn holding() -> (tempfile::TempDir, Db, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (db, store) = open_holding(&dir.path().join("store.redb"));
    (dir, db, store)
}

/// The store at `path`, opened (again) holding index moves for an hour.
fn open_holding(path: &std::path::Path) -> (Db, EmbeddedStore) {
    let db = Db::open(path).expect("database opens");
    let store = EmbeddedStore::open(db.clone()).expect("store opens");
    store
        .held
        .lock()
        .expect("held")
        .set_hold(Duration::from_secs(3600));
    (db, store)
}

/// Entries of both indexes: (status, created, id) and (updated, id).
type Entries = (Vec<(Status, i64, u128)>, Vec<(i64, u128)>);

/// Every entry of both indexes.
fn entries(db: &Db) -> Entries {
    let txn = db.read().expect("store answers");
    let by_status = txn
        .open_table(BY_STATUS)
        .expect("store answers")
        .iter()
        .expect("store answers")
        .map(|row| {
            let (code, created, id) = row.expect("store answers").0.value();
            (record::status_of(code).expect("a status"), created, id)
        })
        .collect();
    let by_updated = txn
        .open_table(BY_UPDATED)
        .expect("store answers")
        .iter()
        .expect("store answers")
        .map(|row| row.expect("store answers").0.value())
        .collect();
    (by_status, by_updated)
}

/// How many rows of held moves are stored.
fn held_rows(db: &Db) -> u64 {
    let txn = db.read().expect("store answers");
    txn.open_table(INDEX_MOVES)
        .expect("store answers")
        .len()
        .expect("store answers")
}

/// The entries `record`, as stored now, has in both indexes, alone.
fn only(record: &MessageRecord) -> Entries {
    let id = record.message.id.bits();
    (
        vec![(
            record.status,
            record.message.created_at.timestamp_millis(),
            id,
        )],
        vec![(record.updated_at.timestamp_millis(), id)],
    )
}

async fn listed(store: &EmbeddedStore, status: Status) -> Vec<MessageId> {
    store
        .list(&ListFilter {
            status: Some(status),
            limit: 10,
            ..ListFilter::default()
        })
        .await
        .expect("store answers")
        .into_iter()
        .map(|r| r.message.id)
        .collect()
}

async fn delivered(store: &EmbeddedStore, id: &MessageId) {
    claim_now(store, id).await;
    store.update(id, sent(1)).await.expect("store answers");
    let report = Transition::Reported {
        status: Status::Delivered,
        provider: "kaleyra".into(),
        provider_message_id: "kal-1".into(),
        event: Event::new("responses", "delivered").status(Status::Delivered),
    };
    assert!(matches!(
        store.update(id, report).await.expect("store answers"),
        Updated::Applied { .. }
    ));
}

/// Retention removing every finished message: how many it removed.
async fn expire_all(store: &EmbeddedStore) -> usize {
    let future = mdc_core::now() + chrono::Duration::days(1);
    let expired = store
        .expire(Some(future), None, 10)
        .await
        .expect("store answers");
    expired.removed
}

/// A message that goes its whole way while held writes no index entry on
/// the way: its entries are written once, where it ended, when a list
/// (or the hold running out) moves them. The list sees every change.
#[tokio::test]
async fn a_message_that_goes_its_way_while_held_is_indexed_once_where_it_ended() {
    let (_dir, db, store) = holding();
    let (id, _) = accepted(&store).await;
    delivered(&store, &id).await;
    assert_eq!(entries(&db), (vec![], vec![]), "no entry was written yet");
    assert_eq!(held_rows(&db), 1, "the held message is named in one row");
    // The status counts are kept with every write.
    let counts = store.count_by_status().await.expect("store answers");
    assert_eq!(counts.get(&Status::Delivered), Some(&1));

    assert_eq!(listed(&store, Status::Delivered).await, vec![id.clone()]);
    for status in [
        Status::Accepted,
        Status::Queued,
        Status::Sending,
        Status::Sent,
    ] {
        assert_eq!(listed(&store, status).await, vec![], "{status}");
    }
    assert_eq!(entries(&db), only(&stored(&store, &id).await));
    assert_eq!(held_rows(&db), 0);
}

/// The hold running out moves entries with the next write, without a
/// list.
#[tokio::test]
async fn entries_move_with_the_first_write_after_the_hold() {
    let (_dir, db, store) = fresh();
    store.held.lock().expect("held").set_hold(Duration::ZERO);
    let (first, _) = accepted(&store).await;
    // Held for no time: moved at the end of its own commit.
    assert_eq!(entries(&db), only(&stored(&store, &first).await));
    assert_eq!(held_rows(&db), 0);
    delivered(&store, &first).await;
    assert_eq!(entries(&db), only(&stored(&store, &first).await));
}

/// Moves held when the store stopped are made when it opens again: a
/// message moved on since it was indexed, one created while held, and
/// one removed while held leave the indexes as if nothing was held.
#[tokio::test]
async fn held_moves_are_made_when_the_store_opens_again() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("store.redb");
    let (moved, created, removed) = {
        let (db, store) = open_holding(&path);
        let (moved, _) = accepted(&store).await;
        let (removed, _) = accepted(&store).await;
        // Indexed as queued, then held.
        assert_eq!(listed(&store, Status::Queued).await.len(), 2);
        claim_now(&store, &moved).await;
        store.update(&moved, sent(1)).await.expect("store answers");
        delivered(&store, &removed).await;
        let (created, _) = accepted(&store).await;
        // Removes the one finished message.
        assert_eq!(expire_all(&store).await, 1);
        assert!(held_rows(&db) > 0);
        (moved, created, removed)
    };
    // The first store and its database are gone without moving anything.
    let (db, store) = open_holding(&path);
    assert_eq!(held_rows(&db), 0);
    let (by_status, by_updated) = entries(&db);
    let mut expected = (vec![], vec![]);
    for id in [&moved, &created] {
        let (status, updated) = only(&stored(&store, id).await);
        expected.0.extend(status);
        expected.1.extend(updated);
    }
    let order = |&(status, created, id): &(Status, i64, u128)| {
        (status_code(status).expect("a code"), created, id)
    };
    expected.0.sort_unstable_by_key(order);
    expected.1.sort_unstable();
    let mut found = (by_status, by_updated);
    found.0.sort_unstable_by_key(order);
    found.1.sort_unstable();
    assert_eq!(found, expected);
    assert!(store.get(&removed).await.expect("store answers").is_none());
    assert_eq!(listed(&store, Status::Sent).await, vec![moved]);
    assert_eq!(listed(&store, Status::Queued).await, vec![created]);
    assert_eq!(listed(&store, Status::Delivered).await, vec![]);
}

/// A message removed while held takes its entries with it, from where
/// they are (not where it was going).
#[tokio::test]
async fn a_message_removed_while_held_leaves_no_entries() {
    let (_dir, db, store) = holding();
    let (indexed, _) = accepted(&store).await;
    assert_eq!(listed(&store, Status::Queued).await, vec![indexed.clone()]);
    delivered(&store, &indexed).await;
    let (fresh, record) = accepted(&store).await;
    assert!(store.discard(&record).await.expect("store answers"));
    assert_eq!(expire_all(&store).await, 1);
    assert_eq!(entries(&db), (vec![], vec![]));
    assert_eq!(listed(&store, Status::Delivered).await, vec![]);
    assert_eq!(entries(&db), (vec![], vec![]));
    assert_eq!(held_rows(&db), 0);
    assert!(store.get(&fresh).await.expect("store answers").is_none());
}

/// After a commit that failed, what the writer held in memory may not be
/// stored, and what is stored may lack its row: before the next write,
/// every message the rows or the memory name is placed where it is
/// stored, so no entry is made for a change that was lost and none is
/// missed for a row that was.
#[tokio::test]
async fn after_a_failed_commit_held_messages_are_placed_where_they_are_stored() {
    let (_dir, db, store) = holding();
    let (id, _) = accepted(&store).await;
    // As a failed commit can leave it: the change stored without its row
    // (a job's error after the writes), and a change noted but not stored.
    db.write_now(|txn| {
        txn.open_table(INDEX_MOVES)?.retain(|_, _| false)?;
        Ok(())
    })
    .expect("store answers");
    let lost = MessageId::generate().bits();
    {
        let mut held = store.held.lock().expect("held");
        let place = Place {
            code: status_code(Status::Queued).expect("a code"),
            updated: 1,
        };
        held.note(lost, 1, None, place);
        held.mark_stale();
    }
    let (second, _) = accepted(&store).await;
    let (by_status, by_updated) = entries(&db);
    assert_eq!(
        by_status.iter().map(|e| e.2).collect::<Vec<_>>(),
        vec![id.bits()],
        "the first message, placed before the write; the second held"
    );
    assert!(!by_updated.iter().any(|e| e.1 == lost));
    assert_eq!(listed(&store, Status::Queued).await.len(), 2);
    let mut ids: Vec<u128> = entries(&db).0.iter().map(|e| e.2).collect();
    ids.sort_unstable();
    let mut expected = vec![id.bits(), second.bits()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert_eq!(held_rows(&db), 0);
}

/// A failed commit that had emptied the memory (a list's own move, say)
/// leaves rows to move: the next list moves them before it reads.
#[tokio::test]
async fn a_list_after_a_failed_commit_moves_what_the_rows_name() {
    let (_dir, db, store) = holding();
    let (id, _) = accepted(&store).await;
    {
        let mut held = store.held.lock().expect("held");
        *held = Held::holding_for(Duration::from_secs(3600));
        held.mark_stale();
    }
    assert_eq!(listed(&store, Status::Queued).await, vec![id.clone()]);
    assert_eq!(entries(&db), only(&stored(&store, &id).await));
    assert_eq!(held_rows(&db), 0);
}

/// A store left idle moves what it holds (its writer's idle work), so
/// lists by another reader of the file, and the memory, do not wait for
/// the next write.
#[tokio::test]
async fn an_idle_store_moves_what_it_holds() {
    let (_dir, db, store) = fresh();
    store
        .held
        .lock()
        .expect("held")
        .set_hold(Duration::from_millis(10));
    let (id, _) = accepted(&store).await;
    assert_eq!(entries(&db), (vec![], vec![]), "held at first");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while entries(&db).0.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing moved the held entries"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(entries(&db), only(&stored(&store, &id).await));
    assert_eq!(held_rows(&db), 0);
    assert!(index_moves::lock(&store.held).is_empty());
}

/// A damaged row of held moves is left out with a warning when the store
/// opens; the others are moved and every row deleted. A row's entry that
/// reads but is wrong (another creation time, a place it never had) makes
/// no entry: messages are placed with what is stored of them.
#[tokio::test]
async fn a_damaged_row_of_held_moves_is_left_out() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("store.redb");
    let id = {
        let (db, store) = open_holding(&path);
        let (id, _) = accepted(&store).await;
        let mut wrong = Vec::new();
        let place = Place {
            code: status_code(Status::Failed).expect("a code"),
            updated: 7,
        };
        index_moves::encode(&mut wrong, id.bits(), 42, Some(place));
        db.write_now(|txn| {
            let mut rows = txn.open_table(INDEX_MOVES)?;
            rows.insert(u64::MAX, [7u8; 10].as_slice())?;
            rows.insert(u64::MAX - 1, wrong.as_slice())?;
            Ok(())
        })
        .expect("store answers");
        assert_eq!(held_rows(&db), 3);
        id
    };
    let (db, store) = open_holding(&path);
    assert_eq!(held_rows(&db), 0);
    assert_eq!(entries(&db), only(&stored(&store, &id).await));
}
