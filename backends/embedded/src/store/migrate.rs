//! The store's first layout keyed messages by their id's text (`msg_` and
//! a 26-character ULID, in eleven keys per message); the second keys them
//! by the id's 128 bits and the status index by the status's code: about a
//! quarter less disk per message and cheaper key comparisons. A store of the
//! first layout is moved to the second when it opens, a batch of rows per
//! commit, each row removed from its old table in the commit that writes
//! it to the new one: a crash part-way loses nothing, and the next start
//! carries on.

use std::time::{Duration, Instant};

use mdc_core::{MessageId, Status};
use redb::{ReadableTableMetadata, TableDefinition, TableHandle, WriteTransaction};

use super::{
    status_code, BY_CREATED, BY_RECIPIENT, BY_STATUS, BY_UPDATED, EVENTS, IDEMPOTENCY, MESSAGES,
    PROVIDER_IDS, STATES,
};
use crate::db::{Db, DbError};

pub(super) const OLD_MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("messages");
pub(super) const OLD_STATES: TableDefinition<&str, &[u8]> = TableDefinition::new("states");
pub(super) const OLD_EVENTS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("events");
pub(super) const OLD_IDEMPOTENCY: TableDefinition<&str, &str> =
    TableDefinition::new("idempotency_keys");
pub(super) const OLD_PROVIDER_IDS: TableDefinition<&str, &str> =
    TableDefinition::new("provider_message_ids");
pub(super) const OLD_BY_CREATED: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("by_created");
pub(super) const OLD_BY_STATUS: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("by_status");
pub(super) const OLD_BY_RECIPIENT: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("by_recipient");
pub(super) const OLD_BY_UPDATED: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("by_updated");

/// Rows moved per commit, at most; and at most about this many bytes of
/// values (bodies can be large).
pub(super) const BATCH: usize = 20_000;
const BATCH_BYTES: usize = 32 << 20;

/// How often progress is logged while a large store moves.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Where the first layout kept its messages, this table of another type
/// marks the second: an older `mdc` (which opens `messages` with text keys)
/// then fails at start-up instead of showing an empty store.
const SECOND_LAYOUT: TableDefinition<u128, ()> = TableDefinition::new("messages");

/// One table's move: moves rows from the old table to the new in the
/// transaction, at most the given number, and returns how many it took
/// from the old table.
type Step = fn(&WriteTransaction, usize) -> Result<usize, DbError>;

/// Moves every table of the first layout that `db` still holds to the
/// second, up to `batch` rows per commit, removes the emptied old tables
/// and marks the store as of the second layout.
pub(super) fn migrate(db: &Db, batch: usize) -> Result<(), DbError> {
    debug_assert!(batch > 0);
    let batch = batch.max(1);
    let steps: [(&str, Step); 9] = [
        (OLD_MESSAGES.name(), move_messages),
        (OLD_STATES.name(), move_states),
        (OLD_EVENTS.name(), move_events),
        (OLD_IDEMPOTENCY.name(), move_idempotency),
        (OLD_PROVIDER_IDS.name(), move_provider_ids),
        (OLD_BY_CREATED.name(), move_by_created),
        (OLD_BY_STATUS.name(), move_by_status),
        (OLD_BY_RECIPIENT.name(), move_by_recipient),
        (OLD_BY_UPDATED.name(), move_by_updated),
    ];
    let present: Vec<String> = {
        let txn = db.read()?;
        let marked = match txn.open_table(SECOND_LAYOUT) {
            Ok(_) => true,
            Err(
                redb::TableError::TableDoesNotExist(_) | redb::TableError::TableTypeMismatch { .. },
            ) => false,
            Err(e) => return Err(e.into()),
        };
        let names = txn
            .list_tables()?
            .map(|t| t.name().to_owned())
            .filter(|name| !(marked && name == SECOND_LAYOUT.name()))
            .collect();
        names
    };
    let todo: Vec<_> = steps
        .into_iter()
        .filter(|(name, _)| present.iter().any(|p| p == name))
        .collect();
    if !todo.is_empty() {
        tracing::info!(
            tables = todo.len(),
            "The message store has ids as text (its first layout); moving it to binary ids"
        );
        let started = Instant::now();
        for (name, step) in todo {
            move_table(db, name, step, batch)?;
        }
        tracing::info!(took = ?started.elapsed(), "The message store now has binary ids");
    }
    db.write_now(|txn| {
        txn.open_table(SECOND_LAYOUT)?;
        Ok(())
    })
}

/// Moves one table to the end, a commit per batch, deleting the old table
/// in the commit that finds it empty.
fn move_table(db: &Db, name: &str, step: Step, batch: usize) -> Result<(), DbError> {
    let total = {
        let txn = db.read()?;
        let n = txn.open_untyped_table(untyped(name))?.len()?;
        n
    };
    let mut moved: u64 = 0;
    let mut logged = Instant::now();
    loop {
        let n = db.write_now(|txn| {
            let n = step(txn, batch)?;
            if n == 0 {
                txn.delete_table(untyped(name))?;
            }
            Ok(n)
        })?;
        if n == 0 {
            break;
        }
        moved += n as u64;
        if logged.elapsed() >= PROGRESS_EVERY {
            tracing::info!(table = name, moved, of = total, "Moving the message store");
            logged = Instant::now();
        }
    }
    tracing::debug!(table = name, moved, "Table moved");
    Ok(())
}

fn untyped(name: &str) -> redb::TableDefinition<'_, &'static [u8], &'static [u8]> {
    // Only the name counts for counting and deleting.
    TableDefinition::new(name)
}

/// The 128 bits of an id stored as text in `table`.
fn bits(table: &str, text: &str) -> Result<u128, DbError> {
    text.parse::<MessageId>().map(|id| id.bits()).map_err(|_| {
        DbError::Open(format!(
            "the store's {table} table holds {text:?}, which is not a message id"
        ))
    })
}

fn code(table: &str, status: &str) -> Result<u8, DbError> {
    let status: Status = status.parse().map_err(|_| {
        DbError::Open(format!(
            "the store's {table} table holds the unknown status {status:?}"
        ))
    })?;
    status_code(status)
}

/// The bytes of a stored value, for the batch's bound.
trait StoredLen {
    fn stored_len(&self) -> usize;
}

impl StoredLen for &[u8] {
    fn stored_len(&self) -> usize {
        self.len()
    }
}

impl StoredLen for &str {
    fn stored_len(&self) -> usize {
        self.len()
    }
}

impl StoredLen for () {
    fn stored_len(&self) -> usize {
        0
    }
}

/// What a row that cannot be moved does: stops the move (a message, state,
/// trail row or idempotency key), or is dropped with a warning (an entry of
/// an index the store keeps for lists and vendor reports, without which
/// the message is still there).
#[derive(Clone, Copy, PartialEq)]
enum Unreadable {
    Fails,
    Dropped,
}

/// One step per table: pops the old table's first rows and writes each,
/// its key and value converted by `$put` (a `Result`, given the old table's
/// name as `$t`), to the new table.
macro_rules! step {
    ($name:ident, $old:expr, $new:expr, $unreadable:expr, |$t:ident, $k:ident, $v:ident| $put:expr) => {
        fn $name(txn: &WriteTransaction, batch: usize) -> Result<usize, DbError> {
            let mut old = txn.open_table($old)?;
            let mut new = txn.open_table($new)?;
            let $t = $old.name();
            let (mut n, mut bytes) = (0, 0);
            while n < batch && bytes < BATCH_BYTES {
                let Some((key, value)) = old.pop_first()? else {
                    break;
                };
                let ($k, $v) = (key.value(), value.value());
                n += 1;
                bytes += $v.stored_len();
                match $put {
                    Ok((k, v)) => {
                        new.insert(k, v)?;
                    }
                    Err(error) if $unreadable == Unreadable::Dropped => {
                        tracing::warn!(%error, "Dropping an index entry that cannot be moved");
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok(n)
        }
    };
}

use Unreadable::{Dropped, Fails};

step!(move_messages, OLD_MESSAGES, MESSAGES, Fails, |t, k, v| {
    bits(t, k).map(|id| (id, v))
});
step!(move_states, OLD_STATES, STATES, Fails, |t, k, v| bits(t, k)
    .map(|id| (id, v)));
step!(move_events, OLD_EVENTS, EVENTS, Fails, |t, k, v| {
    bits(t, k.0).map(|id| ((id, k.1), v))
});
step!(
    move_idempotency,
    OLD_IDEMPOTENCY,
    IDEMPOTENCY,
    Fails,
    |t, k, v| { bits(t, v).map(|id| (k, id)) }
);
step!(
    move_provider_ids,
    OLD_PROVIDER_IDS,
    PROVIDER_IDS,
    Dropped,
    |t, k, v| { bits(t, v).map(|id| (k, id)) }
);
step!(
    move_by_created,
    OLD_BY_CREATED,
    BY_CREATED,
    Dropped,
    |t, k, v| { bits(t, k.1).map(|id| ((k.0, id), v)) }
);
step!(
    move_by_status,
    OLD_BY_STATUS,
    BY_STATUS,
    Dropped,
    |t, k, v| { code(t, k.0).and_then(|code| Ok(((code, k.1, bits(t, k.2)?), v))) }
);
step!(
    move_by_recipient,
    OLD_BY_RECIPIENT,
    BY_RECIPIENT,
    Dropped,
    |t, k, v| { bits(t, k.2).map(|id| ((k.0, k.1, id), v)) }
);
step!(
    move_by_updated,
    OLD_BY_UPDATED,
    BY_UPDATED,
    Dropped,
    |t, k, v| { bits(t, k.1).map(|id| ((k.0, id), v)) }
);

#[cfg(test)]
mod tests {
    use mdc_core::contract::sample_message;
    use mdc_core::ports::{Claim, Created, ListFilter, SortOrder, Store};
    use mdc_core::{Event, MessageRecord};

    use super::super::record::State;
    use super::super::{codec, provider_key, EmbeddedStore};
    use super::*;

    /// Writes `record` as the first layout kept it: its message and state
    /// apart (or, with `whole`, the record whole, as before states were
    /// kept apart), its trail and its index entries, keyed by the id's text.
    fn write_first_layout(
        txn: &WriteTransaction,
        record: &MessageRecord,
        whole: bool,
    ) -> Result<(), DbError> {
        let id = record.message.id.as_str();
        let created = record.message.created_at.timestamp_millis();
        let mut messages = txn.open_table(OLD_MESSAGES)?;
        if whole {
            let mut bare = record.clone();
            bare.events.clear();
            messages.insert(id, codec::encode(&bare)?.as_slice())?;
        } else {
            messages.insert(id, codec::encode(&record.message)?.as_slice())?;
            let mut state = State::of(record);
            state.next_event = Some(record.events.len() as u32);
            txn.open_table(OLD_STATES)?
                .insert(id, state.encode()?.as_slice())?;
        }
        let mut events = txn.open_table(OLD_EVENTS)?;
        for (seq, event) in record.events.iter().enumerate() {
            events.insert((id, seq as u32), codec::encode(event)?.as_slice())?;
        }
        if record.message.idempotency_key_owner().as_ref() != Some(&record.message.id) {
            txn.open_table(OLD_IDEMPOTENCY)?
                .insert(record.message.idempotency_scope().as_str(), id)?;
        }
        if let (Some(provider), Some(pmid)) = (&record.provider, &record.provider_message_id) {
            txn.open_table(OLD_PROVIDER_IDS)?
                .insert(provider_key(provider, pmid).as_str(), id)?;
        }
        txn.open_table(OLD_BY_CREATED)?.insert((created, id), ())?;
        txn.open_table(OLD_BY_STATUS)?
            .insert((record.status.as_str(), created, id), ())?;
        txn.open_table(OLD_BY_RECIPIENT)?
            .insert((record.message.to.as_str(), created, id), ())?;
        txn.open_table(OLD_BY_UPDATED)?
            .insert((record.updated_at.timestamp_millis(), id), ())?;
        Ok(())
    }

    /// `record` moved on to `status`, created `created` and last changed
    /// `updated` milliseconds after `base`.
    fn moved_on(
        mut record: MessageRecord,
        status: Status,
        base: mdc_core::Timestamp,
        (created, updated): (i64, i64),
    ) -> MessageRecord {
        record.status = status;
        record.message.created_at = base + chrono::Duration::milliseconds(created);
        record.updated_at = base + chrono::Duration::milliseconds(updated);
        record
            .events
            .push(Event::new("dispatcher", status.as_str()).status(status));
        record
    }

    fn table_names(db: &Db) -> Vec<String> {
        let txn = db.read().expect("store answers");
        let names = txn
            .list_tables()
            .expect("store answers")
            .map(|t| t.name().to_owned())
            .collect();
        names
    }

    async fn ids(store: &EmbeddedStore, filter: ListFilter) -> Vec<MessageId> {
        let listed = store.list(&filter).await.expect("store answers");
        listed.into_iter().map(|r| r.message.id).collect()
    }

    /// Three messages written in the first layout (one sent with a vendor
    /// id and a caller's key, one stored whole, one delivered), part of
    /// them moved before a crash, are moved two rows per commit and read,
    /// listed, found, changed and expired as before; an older `mdc` would
    /// now refuse the store rather than find it empty.
    #[tokio::test]
    async fn a_store_with_ids_as_text_moves_to_binary_ids_and_answers_the_same() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = Db::open(&dir.path().join("store.redb")).expect("database opens");
        let accepted = |to| MessageRecord::accepted(sample_message(to), "ingest", "accepted");
        let base = mdc_core::now();
        let mut sent = moved_on(accepted("+14155550100"), Status::Sent, base, (0, 5));
        sent.message.idempotency_key = "order-7".into();
        sent.attempts = 1;
        sent.provider = Some("kaleyra".into());
        sent.provider_message_id = Some("kal-1".into());
        let queued = moved_on(accepted("+14155550101"), Status::Queued, base, (1, 2));
        let delivered = moved_on(accepted("+14155550100"), Status::Delivered, base, (3, 9));
        db.write_now(|txn| {
            write_first_layout(txn, &sent, false)?;
            write_first_layout(txn, &queued, true)?;
            write_first_layout(txn, &delivered, false)
        })
        .expect("store answers");

        // A start that crashed part-way: some rows in each layout.
        db.write_now(|txn| {
            move_events(txn, 2)?;
            move_by_created(txn, 1)
        })
        .expect("store answers");
        migrate(&db, 2).expect("the store moves");
        let store = EmbeddedStore::open(db.clone()).expect("store opens");
        let names = table_names(&db);
        for old in [
            OLD_STATES.name(),
            OLD_EVENTS.name(),
            OLD_IDEMPOTENCY.name(),
            OLD_PROVIDER_IDS.name(),
            OLD_BY_CREATED.name(),
            OLD_BY_STATUS.name(),
            OLD_BY_RECIPIENT.name(),
            OLD_BY_UPDATED.name(),
        ] {
            assert!(!names.iter().any(|n| n == old), "{old} left in {names:?}");
        }
        {
            let txn = db.read().expect("store answers");
            assert!(matches!(
                txn.open_table(OLD_MESSAGES),
                Err(redb::TableError::TableTypeMismatch { .. })
            ));
        }

        for record in [&sent, &queued, &delivered] {
            let read = store.get(&record.message.id).await.expect("store answers");
            assert_eq!(read.as_ref(), Some(record));
        }
        assert_eq!(
            store
                .find_by_provider_message_id("kaleyra", "kal-1")
                .await
                .expect("store answers"),
            Some(sent.message.id.clone())
        );
        let by_status = |status| ListFilter {
            status: Some(status),
            limit: 10,
            ..ListFilter::default()
        };
        assert_eq!(
            ids(&store, by_status(Status::Sent)).await,
            [sent.message.id.clone()]
        );
        assert_eq!(
            ids(&store, by_status(Status::Queued)).await,
            std::slice::from_ref(&queued.message.id)
        );
        let to = ListFilter {
            to: Some("+14155550100".into()),
            sort: SortOrder::CreatedAsc,
            limit: 10,
            ..ListFilter::default()
        };
        assert_eq!(
            ids(&store, to).await,
            [sent.message.id.clone(), delivered.message.id.clone()]
        );
        let by_update = ListFilter {
            sort: SortOrder::UpdatedDesc,
            limit: 10,
            ..ListFilter::default()
        };
        assert_eq!(
            ids(&store, by_update).await,
            [
                delivered.message.id.clone(),
                sent.message.id.clone(),
                queued.message.id.clone()
            ]
        );
        let counts = store.count_by_status().await.expect("store answers");
        assert_eq!(
            (
                counts[&Status::Sent],
                counts[&Status::Queued],
                counts[&Status::Delivered]
            ),
            (1, 1, 1)
        );

        // The caller's key still finds its message.
        let mut again = accepted("+14155550100");
        again.message.idempotency_key = "order-7".into();
        match store.create(&again).await.expect("store answers") {
            Created::Existing(existing) => assert_eq!(existing.message.id, sent.message.id),
            other => panic!("expected the stored message, got {other:?}"),
        }
        // The record stored whole is claimed with its message.
        let now = mdc_core::now();
        match store
            .claim(
                &queued.message.id,
                now,
                now + chrono::Duration::seconds(30),
                "dispatcher",
            )
            .await
            .expect("store answers")
        {
            Claim::Claimed { record, .. } => assert_eq!(record.message, queued.message),
            other => panic!("expected a claim, got {other:?}"),
        }

        // Opening again moves nothing and loses nothing; retention finds
        // the finished message by its creation.
        drop(store);
        let store = EmbeddedStore::open(db.clone()).expect("store opens again");
        let read = store
            .get(&delivered.message.id)
            .await
            .expect("store answers");
        assert_eq!(read.as_ref(), Some(&delivered));
        let expired = store
            .expire(Some(base + chrono::Duration::seconds(1)), None, 10)
            .await
            .expect("store answers");
        assert_eq!(expired.removed, 1);
        let read = store
            .get(&delivered.message.id)
            .await
            .expect("store answers");
        assert_eq!(read, None);
    }

    /// A database holding one accepted message in the first layout and
    /// whatever `more` writes beside it.
    fn one_record_and(
        more: impl FnOnce(&WriteTransaction) -> Result<(), DbError>,
    ) -> (tempfile::TempDir, Db, MessageRecord) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = Db::open(&dir.path().join("store.redb")).expect("database opens");
        let record = MessageRecord::accepted(sample_message("+14155550100"), "ingest", "accepted");
        db.write_now(|txn| {
            write_first_layout(txn, &record, false)?;
            more(txn)
        })
        .expect("store answers");
        (dir, db, record)
    }

    /// A first-layout state whose key is no message id stops the store from
    /// opening, with an error naming the table and the key; the commit it
    /// was in is not made, so its rows stay in the old table.
    #[test]
    fn a_state_that_is_no_message_id_stops_the_store_opening() {
        let (_dir, db, _) = one_record_and(|txn| {
            txn.open_table(OLD_STATES)?
                .insert("msg_garbled", [1u8].as_slice())?;
            Ok(())
        });

        let error = EmbeddedStore::open(db.clone())
            .err()
            .expect("the store refuses to open");
        let text = error.to_string();
        assert!(
            text.contains("states") && text.contains("msg_garbled"),
            "{text}"
        );
        let txn = db.read().expect("store answers");
        let states = txn.open_table(OLD_STATES).expect("old states kept");
        assert_eq!(states.len().expect("store answers"), 2);
    }

    /// An index entry that cannot be moved is dropped with a warning: the
    /// store opens, and its message is still there.
    #[tokio::test]
    async fn an_index_entry_that_cannot_be_moved_is_dropped() {
        let (_dir, db, record) = one_record_and(|txn| {
            txn.open_table(OLD_BY_RECIPIENT)?
                .insert(("+14155550100", 0, "msg_garbled"), ())?;
            Ok(())
        });

        let store = EmbeddedStore::open(db.clone()).expect("store opens");
        let read = store.get(&record.message.id).await.expect("store answers");
        assert_eq!(read.as_ref(), Some(&record));
        let listed = store
            .list(&ListFilter {
                to: Some("+14155550100".into()),
                limit: 10,
                ..ListFilter::default()
            })
            .await
            .expect("store answers");
        assert_eq!(listed.len(), 1);
    }
}
