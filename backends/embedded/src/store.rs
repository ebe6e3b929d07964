use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use mdc_core::ports::{
    Brief, Claim, Created, Expired, ListFilter, Store, StoreError, Transition, Updated,
};
use mdc_core::{MessageId, MessageRecord, Status, Timestamp};
use redb::{ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction};

use tokio::sync::oneshot;

use crate::db::{wait_with, Completer, Db, DbError, Taker, Waiting};

mod codec;
mod event_codec;
mod index_moves;
mod migrate;
mod modify;
mod prepared;
mod read;
mod record;
mod retention;
#[cfg(test)]
mod samples;
mod trail_rows;
mod transitions;
mod write;
use index_moves::{Held, Indexes};
use prepared::Prepared;
use read::{list, read_record};
use record::{load, status_code, State};
use retention::{RETENTION, RETENTION_SCAN_FACTOR};
use trail_rows::{rows_of, Trail};
use transitions::Hand;
use write::{provider_key, remove_record, save, with_key};

// Messages are keyed by their id's 128 bits ([`MessageId::bits`]), which
// sort as the ids do; the tables' names end in `.2` for this layout. A
// store of the first layout (ids as text) is moved over when it opens
// ([`migrate`]).

/// id → the message, written when it is created (a record written before
/// states were kept apart: the whole record without its events).
const MESSAGES: TableDefinition<u128, &[u8]> = TableDefinition::new("messages.2");
/// id → the message's changing part ([`State`]).
const STATES: TableDefinition<u128, &[u8]> = TableDefinition::new("states.2");
/// (id, sequence) → event: the append-only trail.
const EVENTS: TableDefinition<(u128, u32), &[u8]> = TableDefinition::new("events.2");
/// idempotency key (in its scope) → id.
const IDEMPOTENCY: TableDefinition<&str, u128> = TableDefinition::new("idempotency_keys.2");
/// `provider \x1f provider message id` → id.
const PROVIDER_IDS: TableDefinition<&str, u128> = TableDefinition::new("provider_message_ids.2");
const BY_CREATED: TableDefinition<(i64, u128), ()> = TableDefinition::new("by_created.2");
/// (status code ([`status_code`]), created ms, id). Moved a while after a
/// change, with [`BY_UPDATED`] ([`index_moves`]).
const BY_STATUS: TableDefinition<(u8, i64, u128), ()> = TableDefinition::new("by_status.2");
const BY_RECIPIENT: TableDefinition<(&str, i64, u128), ()> = TableDefinition::new("by_recipient.2");
/// status → how many messages are in it, kept with every write so counts
/// never scan.
const STATUS_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("status_counts");
/// (updated ms, id): lists by last change. Moved with [`BY_STATUS`].
const BY_UPDATED: TableDefinition<(i64, u128), ()> = TableDefinition::new("by_updated.2");

/// The message store on the embedded database.
pub struct EmbeddedStore {
    db: Db,
    /// Writes waiting for the next group commit, applied together there
    /// with the tables opened once (see [`EmbeddedStore::apply`]).
    pending: Waiting<Op>,
    /// Messages whose status and update-time index entries are yet to
    /// move; taken by the writer only, and to see whether lists must wait.
    held: Arc<std::sync::Mutex<Held>>,
}

/// A store write: applied to the open tables, returns what to do with the
/// commit's outcome.
type Op = Box<dyn FnOnce(&mut Tables<'_>) -> Completer + Send>;

/// The store's tables, open for one group commit, the status counts'
/// changes, written once at its end, and the held index moves.
struct Tables<'t> {
    txn: &'t WriteTransaction,
    messages: Table<'t, u128, &'static [u8]>,
    states: Table<'t, u128, &'static [u8]>,
    events: Table<'t, (u128, u32), &'static [u8]>,
    idempotency: Table<'t, &'static str, u128>,
    provider_ids: Table<'t, &'static str, u128>,
    by_created: Table<'t, (i64, u128), ()>,
    by_status: Table<'t, (u8, i64, u128), ()>,
    by_recipient: Table<'t, (&'static str, i64, u128), ()>,
    by_updated: Table<'t, (i64, u128), ()>,
    counts: HashMap<&'static str, i64>,
    held: &'t mut Held,
    /// Move every held index entry at the end (for a list).
    move_all: bool,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction, held: &'t mut Held) -> Result<Self, DbError> {
        Ok(Self {
            txn,
            messages: txn.open_table(MESSAGES)?,
            states: txn.open_table(STATES)?,
            events: txn.open_table(EVENTS)?,
            idempotency: txn.open_table(IDEMPOTENCY)?,
            provider_ids: txn.open_table(PROVIDER_IDS)?,
            by_created: txn.open_table(BY_CREATED)?,
            by_status: txn.open_table(BY_STATUS)?,
            by_recipient: txn.open_table(BY_RECIPIENT)?,
            by_updated: txn.open_table(BY_UPDATED)?,
            counts: HashMap::new(),
            held,
            move_all: false,
        })
    }

    fn indexes(&mut self) -> Indexes<'_, 't> {
        Indexes {
            by_status: &mut self.by_status,
            by_updated: &mut self.by_updated,
        }
    }

    fn count(&mut self, status: Status, by: i64) {
        *self.counts.entry(status.as_str()).or_default() += by;
    }

    /// Writes the status counts' net changes and moves the index entries
    /// held long enough.
    fn finish(mut self) -> Result<(), DbError> {
        let all = self.move_all;
        let txn = self.txn;
        let mut indexes = Indexes {
            by_status: &mut self.by_status,
            by_updated: &mut self.by_updated,
        };
        self.held.finish(txn, &mut indexes, all)?;
        let mut counts = self.txn.open_table(STATUS_COUNTS)?;
        for (status, by) in self.counts {
            if by == 0 {
                continue;
            }
            let current = counts.get(status)?.map_or(0, |v| v.value());
            let next = current.saturating_add_signed(by);
            if next == 0 {
                counts.remove(status)?;
            } else {
                counts.insert(status, next)?;
            }
        }
        Ok(())
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Closed => StoreError::Unavailable(e.into()),
            other => StoreError::Other(other.into()),
        }
    }
}

impl EmbeddedStore {
    pub fn open(db: Db) -> Result<Self, DbError> {
        migrate::migrate(&db, migrate::BATCH)?;
        db.write_now(|txn| {
            // Index moves held when the store last stopped.
            let moved = index_moves::recover(txn, Vec::new())?;
            if moved > 0 {
                tracing::info!(
                    messages = moved,
                    "Moved the index entries of messages changed just before the store stopped"
                );
            }
            txn.open_table(MESSAGES)?;
            txn.open_table(STATES)?;
            txn.open_table(EVENTS)?;
            txn.open_table(IDEMPOTENCY)?;
            txn.open_table(PROVIDER_IDS)?;
            txn.open_table(BY_CREATED)?;
            txn.open_table(BY_STATUS)?;
            txn.open_table(BY_RECIPIENT)?;
            txn.open_table(RETENTION)?;
            // A store written before the update index: fill it once.
            let mut by_updated = txn.open_table(BY_UPDATED)?;
            if by_updated.is_empty()? {
                let messages = txn.open_table(MESSAGES)?;
                let states = txn.open_table(STATES)?;
                for entry in messages.iter()? {
                    let (id, _) = entry?;
                    if let Some(record) = load(&messages, &states, id.value())? {
                        by_updated
                            .insert((record.updated_at.timestamp_millis(), id.value()), ())?;
                    }
                }
            }
            drop(by_updated);
            // A store written before the counts were kept: count once.
            let mut counts = txn.open_table(STATUS_COUNTS)?;
            if counts.is_empty()? {
                let by_status = txn.open_table(BY_STATUS)?;
                for status in Status::ALL {
                    let code = status_code(status)?;
                    let n = by_status
                        .range((code, i64::MIN, 0)..=(code, i64::MAX, u128::MAX))?
                        .count() as u64;
                    if n > 0 {
                        counts.insert(status.as_str(), n)?;
                    }
                }
            }
            Ok(())
        })?;
        let held = Arc::default();
        db.when_idle(index_moves::idle_work(Arc::clone(&held)));
        Ok(Self {
            db,
            pending: Arc::default(),
            held,
        })
    }

    /// Applies `f` in the next group commit and returns its result once
    /// that commit is durable. Writes waiting together share one job in the
    /// commit: the tables are opened once for all of them and the status
    /// counts written once.
    async fn apply<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tables<'_>) -> Result<T, DbError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |tables| {
            let result = f(tables);
            Box::new(move |commit: Result<(), DbError>| {
                let _ = tx.send(commit.and(result));
            })
        });
        // The first write to wait queues the job that takes all waiting
        // when it runs; later ones join it until then.
        if wait_with(&self.pending, op) {
            let taker = Taker::new(&self.pending);
            let held = self.held.clone();
            let submitted = self.db.submit(
                true,
                Box::new(move |txn| {
                    let ops = taker.take();
                    let mut completers = Vec::with_capacity(ops.len());
                    let mut holding = index_moves::lock(&held);
                    let outcome = holding.refresh(txn).and_then(|()| {
                        let mut tables = Tables::open(txn, &mut holding)?;
                        for op in ops {
                            completers.push(op(&mut tables));
                        }
                        tables.finish()
                    });
                    drop(holding);
                    Box::new(move |commit: Result<(), DbError>| {
                        let commit = commit.and(outcome);
                        index_moves::after_commit(&held, commit.clone());
                        for completer in completers {
                            completer(commit.clone());
                        }
                    })
                }),
            );
            // Not submitted, the job is dropped and every waiting write
            // fails.
            submitted?;
        }
        rx.await.map_err(|_| DbError::Closed)?
    }

    /// Stores a new message whose stored form is `message`.
    async fn create_stored(
        &self,
        record: &MessageRecord,
        message: Vec<u8>,
    ) -> Result<Created, StoreError> {
        let mut record = record.clone();
        let mut prepared = Prepared::of(record.events.iter().cloned())?;
        let created = self
            .apply(move |t| {
                let key = record.message.idempotency_scope();
                let id = record.message.id.bits();
                let duplicate_id = || {
                    DbError::Storage(format!("duplicate message id {}", MessageId::from_bits(id)))
                };
                if record.message.idempotency_key_owner().as_ref() == Some(&record.message.id) {
                    // Its own key: found through the id, not indexed. Every
                    // record has a message row, so a new id (the usual
                    // case) costs one lookup, not one for each part.
                    let existing = match t.messages.get(id)? {
                        Some(_) => t.load(id)?,
                        None => None,
                    };
                    if let Some(existing) = existing {
                        if existing.message.idempotency_scope() != key {
                            return Err(duplicate_id());
                        }
                        return Ok(Created::Existing(Box::new(existing)));
                    }
                } else {
                    if let Some(existing) = with_key(t, &record.message, &key)? {
                        return Ok(Created::Existing(Box::new(existing)));
                    }
                    if t.messages.get(id)?.is_some() {
                        return Err(duplicate_id());
                    }
                    t.idempotency.insert(key.as_str(), id)?;
                }
                let created = record.message.created_at.timestamp_millis();
                t.by_created.insert((created, id), ())?;
                t.by_recipient
                    .insert((record.message.to.as_str(), created, id), ())?;
                t.messages.insert(id, message.as_slice())?;
                let events = std::mem::take(&mut record.events);
                let trail = Trail::default();
                save(
                    t,
                    id,
                    State::of(&record),
                    None,
                    events,
                    &mut prepared,
                    trail,
                )?;
                Ok(Created::New)
            })
            .await?;
        Ok(created)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn create(&self, record: &MessageRecord) -> Result<Created, StoreError> {
        // Encoded here, not on the writer's thread.
        let message = codec::encode(&record.message)?;
        self.create_stored(record, message).await
    }

    /// The message's JSON is only compressed, not made again.
    async fn create_encoded(
        &self,
        record: &MessageRecord,
        message_json: &[u8],
    ) -> Result<Created, StoreError> {
        debug_assert_eq!(message_json, record.message.encode().as_slice());
        let message = if message_json.is_empty() {
            codec::encode(&record.message)?
        } else {
            codec::compress(message_json)?
        };
        self.create_stored(record, message).await
    }

    async fn discard(&self, created: &MessageRecord) -> Result<bool, StoreError> {
        let id = created.message.id.bits();
        let created_events = created.events.len();
        let removed = self
            .apply(move |t| {
                let Some(record) = t.load(id)? else {
                    return Ok(false);
                };
                let untouched = matches!(record.status, Status::Accepted | Status::Queued)
                    && record.attempts == 0
                    && t.trail_len(id)? == created_events;
                if !untouched {
                    return Ok(false);
                }
                remove_record(t, &record)?;
                Ok(true)
            })
            .await?;
        Ok(removed)
    }

    async fn claim(
        &self,
        id: &MessageId,
        now: Timestamp,
        lease_until: Timestamp,
        component: &str,
    ) -> Result<Claim, StoreError> {
        self.write_claim(id.clone(), None, now, lease_until, component)
            .await
    }

    /// The caller's message goes into the record; the stored one is left
    /// unread (but for a record still stored whole, from before states
    /// were kept apart, which is read whole as before).
    async fn claim_message(
        &self,
        message: &mdc_core::Message,
        now: Timestamp,
        lease_until: Timestamp,
        component: &str,
    ) -> Result<Claim, StoreError> {
        self.write_claim(
            message.id.clone(),
            Some(message.clone()),
            now,
            lease_until,
            component,
        )
        .await
    }

    async fn update(&self, id: &MessageId, update: Transition) -> Result<Updated, StoreError> {
        Ok(self.write_update(id, update, Hand::Nothing).await?.0)
    }

    /// The record after the update comes from the write itself: its state
    /// as written and its message, with no read of its own.
    async fn update_and_read(
        &self,
        id: &MessageId,
        update: Transition,
    ) -> Result<(Updated, Option<MessageRecord>), StoreError> {
        let (updated, after) = self.write_update(id, update, Hand::Record).await?;
        Ok((updated, transitions::record_of(after)?))
    }

    /// The brief comes from the write itself, its channel from the state
    /// (from the message only in a state written before it was kept).
    async fn update_and_brief(
        &self,
        id: &MessageId,
        update: Transition,
    ) -> Result<(Updated, Option<Brief>), StoreError> {
        let (updated, after) = self.write_update(id, update, Hand::Brief).await?;
        Ok((updated, transitions::brief_of(after)?))
    }

    async fn key_holder(
        &self,
        message: &mdc_core::Message,
    ) -> Result<Option<MessageId>, StoreError> {
        Ok(read::key_holder(&self.db, message)?)
    }

    async fn get(&self, id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
        Ok(read_record(&self.db, id, None)?)
    }

    async fn get_recent(
        &self,
        id: &MessageId,
        events: usize,
    ) -> Result<Option<MessageRecord>, StoreError> {
        Ok(read_record(&self.db, id, Some(events))?)
    }

    async fn find_by_provider_message_id(
        &self,
        provider: &str,
        provider_message_id: &str,
    ) -> Result<Option<MessageId>, StoreError> {
        let txn = self.db.read()?;
        let table = match txn.open_table(PROVIDER_IDS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(DbError::from(e).into()),
        };
        let found = table
            .get(provider_key(provider, provider_message_id).as_str())
            .map_err(DbError::from)?;
        Ok(found.map(|v| MessageId::from_bits(v.value())))
    }

    async fn expire(
        &self,
        records_before: Option<Timestamp>,
        bodies_before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Expired, StoreError> {
        let records_before = records_before.map(|t| t.timestamp_millis());
        let bodies_before = bodies_before.map(|t| t.timestamp_millis());
        let scan = limit.saturating_mul(RETENTION_SCAN_FACTOR).max(1);
        let done = self
            .apply(move |t| retention::expire(t, records_before, bodies_before, limit, scan))
            .await?;
        Ok(done)
    }

    async fn count_by_status(&self) -> Result<HashMap<Status, u64>, StoreError> {
        let txn = self.db.read()?;
        let counts = txn.open_table(STATUS_COUNTS).map_err(DbError::from)?;
        let mut out = HashMap::new();
        for status in Status::ALL {
            if let Some(n) = counts.get(status.as_str()).map_err(DbError::from)? {
                if n.value() > 0 {
                    out.insert(status, n.value());
                }
            }
        }
        Ok(out)
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<MessageRecord>, StoreError> {
        // Every change made before the list shows in it.
        // Not waiting on the writer, which holds it through a commit's
        // writes: then it is holding something.
        let holding = match self.held.try_lock() {
            Ok(held) => !held.is_empty(),
            Err(std::sync::TryLockError::WouldBlock) => true,
            Err(std::sync::TryLockError::Poisoned(held)) => !held.into_inner().is_empty(),
        };
        if holding {
            self.apply(|t| {
                t.move_all = true;
                Ok(())
            })
            .await?;
        }
        let filter = filter.clone();
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || list(&db, &filter))
            .await
            .map_err(|e| StoreError::Other(e.into()))?
            .map_err(StoreError::from)
    }
}

#[cfg(test)]
mod tests;
