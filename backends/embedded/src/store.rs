use std::collections::HashMap;

use async_trait::async_trait;
use mdc_core::ports::store::{apply_claim, apply_update};
use mdc_core::ports::{
    Claim, Created, Expired, ListFilter, Store, StoreError, Transition, Updated,
};
use mdc_core::{trail, Event, MessageId, MessageRecord, Status, Timestamp};
use redb::{ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction};

use crate::db::{Db, DbError};

/// id → record without its events (JSON).
const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("messages");
/// (id, sequence) → event (JSON): the append-only trail.
const EVENTS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("events");
const IDEMPOTENCY: TableDefinition<&str, &str> = TableDefinition::new("idempotency_keys");
/// `provider \x1f provider message id` → id.
const PROVIDER_IDS: TableDefinition<&str, &str> = TableDefinition::new("provider_message_ids");
const BY_CREATED: TableDefinition<(i64, &str), ()> = TableDefinition::new("by_created");
const BY_STATUS: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("by_status");
const BY_RECIPIENT: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("by_recipient");
/// status → how many messages are in it, kept with every write so counts
/// never scan.
const STATUS_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("status_counts");
/// (updated ms, id): lists by last change.
const BY_UPDATED: TableDefinition<(i64, &str), ()> = TableDefinition::new("by_updated");
/// Retention's progress: `bodies_before` → creation time (ms) before which
/// every finished message's bodies are cleared.
const RETENTION: TableDefinition<&str, i64> = TableDefinition::new("retention");
/// At most this many index entries are looked at per retention call, so a
/// long run of unfinished old messages cannot make one call unbounded.
const RETENTION_SCAN_FACTOR: usize = 4;

/// The message store on the embedded database.
pub struct EmbeddedStore {
    db: Db,
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Closed => StoreError::Unavailable(e.into()),
            other => StoreError::Other(other.into()),
        }
    }
}

fn provider_key(provider: &str, provider_message_id: &str) -> String {
    format!("{provider}\u{1f}{provider_message_id}")
}

fn load(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<MessageRecord>, DbError> {
    match table.get(id)? {
        Some(bytes) => Ok(Some(serde_json::from_slice(bytes.value())?)),
        None => Ok(None),
    }
}

/// Writes the record (events go to their own table) and keeps the indexes in step.
fn save(
    txn: &WriteTransaction,
    messages: &mut Table<&str, &[u8]>,
    record: &mut MessageRecord,
    previous: Option<(&str, i64)>,
    first_event_seq: u32,
) -> Result<(), DbError> {
    let id = record.message.id.as_str();
    let created = record.message.created_at.timestamp_millis();
    let previous_status = previous.map(|(status, _)| status);
    let updated = record.updated_at.timestamp_millis();
    if previous.map(|(_, at)| at) != Some(updated) {
        let mut by_updated = txn.open_table(BY_UPDATED)?;
        if let Some((_, at)) = previous {
            by_updated.remove((at, id))?;
        }
        by_updated.insert((updated, id), ())?;
    }
    {
        let mut events = txn.open_table(EVENTS)?;
        let added = record.events.len() as u32;
        for (i, event) in record.events.drain(..).enumerate() {
            events.insert(
                (id, first_event_seq + i as u32),
                serde_json::to_vec(&event)?.as_slice(),
            )?;
        }
        // Sequence numbers only grow and are renumbered from 0 when the
        // trail is compacted, so the next one bounds the trail's length.
        if (first_event_seq + added) as usize > trail::MAX_TRAIL {
            compact_events(&mut events, id)?;
        }
    }
    let status = record.status.as_str();
    if previous_status != Some(status) {
        let mut counts = txn.open_table(STATUS_COUNTS)?;
        if let Some(previous) = previous_status {
            add_count(&mut counts, previous, -1)?;
        }
        add_count(&mut counts, status, 1)?;
        let mut by_status = txn.open_table(BY_STATUS)?;
        if let Some(previous) = previous_status {
            by_status.remove((previous, created, id))?;
        }
        by_status.insert((status, created, id), ())?;
    }
    if let (Some(provider), Some(pmid)) = (&record.provider, &record.provider_message_id) {
        txn.open_table(PROVIDER_IDS)?
            .insert(provider_key(provider, pmid).as_str(), id)?;
    }
    messages.insert(id, serde_json::to_vec(record)?.as_slice())?;
    Ok(())
}

/// Removes every event row of `id`.
fn clear_events(events: &mut Table<(&str, u32), &[u8]>, id: &str) -> Result<(), DbError> {
    let seqs: Vec<u32> = events
        .range((id, 0)..=(id, u32::MAX))?
        .map(|entry| entry.map(|(key, _)| key.value().1))
        .collect::<Result<_, _>>()?;
    for seq in seqs {
        events.remove((id, seq))?;
    }
    Ok(())
}

/// Removes a record, its trail and every index entry of it.
fn remove_record(
    txn: &WriteTransaction,
    messages: &mut Table<&str, &[u8]>,
    record: &MessageRecord,
) -> Result<(), DbError> {
    let id = record.message.id.as_str();
    messages.remove(id)?;
    let created = record.message.created_at.timestamp_millis();
    clear_events(&mut txn.open_table(EVENTS)?, id)?;
    let key = record.message.idempotency_scope();
    let key = key.as_str();
    let mut keys = txn.open_table(IDEMPOTENCY)?;
    let ours = keys.get(key)?.is_some_and(|v| v.value() == id);
    if ours {
        keys.remove(key)?;
    }
    txn.open_table(BY_CREATED)?.remove((created, id))?;
    txn.open_table(BY_UPDATED)?
        .remove((record.updated_at.timestamp_millis(), id))?;
    txn.open_table(BY_STATUS)?
        .remove((record.status.as_str(), created, id))?;
    add_count(
        &mut txn.open_table(STATUS_COUNTS)?,
        record.status.as_str(),
        -1,
    )?;
    txn.open_table(BY_RECIPIENT)?
        .remove((record.message.to.as_str(), created, id))?;
    if let (Some(provider), Some(pmid)) = (&record.provider, &record.provider_message_id) {
        let key = provider_key(provider, pmid);
        let mut ids = txn.open_table(PROVIDER_IDS)?;
        let ours = ids.get(key.as_str())?.is_some_and(|v| v.value() == id);
        if ours {
            ids.remove(key.as_str())?;
        }
    }
    Ok(())
}

fn add_count(counts: &mut Table<&str, u64>, status: &str, by: i64) -> Result<(), DbError> {
    let current = counts.get(status)?.map_or(0, |v| v.value());
    let next = current.saturating_add_signed(by);
    if next == 0 {
        counts.remove(status)?;
    } else {
        counts.insert(status, next)?;
    }
    Ok(())
}

/// Folds the middle of an over-long trail into a summary and renumbers it.
fn compact_events(events: &mut Table<(&str, u32), &[u8]>, id: &str) -> Result<(), DbError> {
    let mut all = Vec::new();
    for entry in events.range((id, 0)..=(id, u32::MAX))? {
        let (_, value) = entry?;
        all.push(serde_json::from_slice::<Event>(value.value())?);
    }
    if all.len() <= trail::MAX_TRAIL {
        return Ok(());
    }
    clear_events(events, id)?;
    for (seq, event) in trail::compact(all).iter().enumerate() {
        events.insert((id, seq as u32), serde_json::to_vec(event)?.as_slice())?;
    }
    Ok(())
}

fn next_event_seq(txn: &WriteTransaction, id: &str) -> Result<u32, DbError> {
    let events = txn.open_table(EVENTS)?;
    let last = events
        .range((id, 0)..=(id, u32::MAX))?
        .next_back()
        .transpose()?;
    Ok(last.map_or(0, |(key, _)| key.value().1 + 1))
}

impl EmbeddedStore {
    pub fn open(db: Db) -> Result<Self, DbError> {
        db.write_now(|txn| {
            txn.open_table(MESSAGES)?;
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
                for entry in messages.iter()? {
                    let (id, bytes) = entry?;
                    let record: MessageRecord = serde_json::from_slice(bytes.value())?;
                    by_updated.insert((record.updated_at.timestamp_millis(), id.value()), ())?;
                }
            }
            drop(by_updated);
            // A store written before the counts were kept: count once.
            let mut counts = txn.open_table(STATUS_COUNTS)?;
            if counts.is_empty()? {
                let by_status = txn.open_table(BY_STATUS)?;
                for status in Status::ALL {
                    let name = status.as_str();
                    let n = by_status
                        .range((name, i64::MIN, "")..=(name, i64::MAX, "\u{10ffff}"))?
                        .count() as u64;
                    if n > 0 {
                        counts.insert(name, n)?;
                    }
                }
            }
            Ok(())
        })?;
        Ok(Self { db })
    }

    /// Read-modify-write of one record inside the group commit.
    async fn modify<T, F>(&self, id: &MessageId, f: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut MessageRecord) -> T + Send + 'static,
    {
        let id = id.clone();
        let result = self
            .db
            .write(true, move |txn| {
                let mut messages = txn.open_table(MESSAGES)?;
                let Some(mut record) = load(&messages, id.as_str())? else {
                    return Ok(None);
                };
                let before = record.clone();
                let out = f(&mut record);
                if record == before {
                    return Ok(Some(out));
                }
                let seq = next_event_seq(txn, id.as_str())?;
                save(
                    txn,
                    &mut messages,
                    &mut record,
                    Some((before.status.as_str(), before.updated_at.timestamp_millis())),
                    seq,
                )?;
                Ok(Some(out))
            })
            .await?;
        Ok(result)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn create(&self, record: &MessageRecord) -> Result<Created, StoreError> {
        let mut record = record.clone();
        let created = self
            .db
            .write(true, move |txn| {
                let key = record.message.idempotency_scope();
                let existing_id = txn
                    .open_table(IDEMPOTENCY)?
                    .get(key.as_str())?
                    .map(|v| v.value().to_owned());
                let mut messages = txn.open_table(MESSAGES)?;
                if let Some(existing_id) = existing_id {
                    let existing = load(&messages, &existing_id)?.ok_or_else(|| {
                        DbError::Storage(format!("idempotency key points at missing {existing_id}"))
                    })?;
                    return Ok(Created::Existing(Box::new(existing)));
                }
                let id = record.message.id.as_str().to_owned();
                if messages.get(id.as_str())?.is_some() {
                    return Err(DbError::Storage(format!("duplicate message id {id}")));
                }
                txn.open_table(IDEMPOTENCY)?
                    .insert(key.as_str(), id.as_str())?;
                let created = record.message.created_at.timestamp_millis();
                txn.open_table(BY_CREATED)?
                    .insert((created, id.as_str()), ())?;
                txn.open_table(BY_RECIPIENT)?
                    .insert((record.message.to.as_str(), created, id.as_str()), ())?;
                save(txn, &mut messages, &mut record, None, 0)?;
                Ok(Created::New)
            })
            .await?;
        Ok(created)
    }

    async fn discard(&self, message: &mdc_core::Message) -> Result<bool, StoreError> {
        let id = message.id.as_str().to_owned();
        let removed = self
            .db
            .write(true, move |txn| {
                let mut messages = txn.open_table(MESSAGES)?;
                let Some(record) = load(&messages, &id)? else {
                    return Ok(false);
                };
                let untouched = matches!(record.status, Status::Accepted | Status::Queued)
                    && record.attempts == 0;
                if !untouched {
                    return Ok(false);
                }
                remove_record(txn, &mut messages, &record)?;
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
        let component = component.to_owned();
        let claim = self
            .modify(id, move |record| {
                apply_claim(record, now, lease_until, &component)
            })
            .await?;
        Ok(claim.unwrap_or(Claim::NotFound))
    }

    async fn update(&self, id: &MessageId, update: Transition) -> Result<Updated, StoreError> {
        let updated = self
            .modify(id, move |record| apply_update(record, update))
            .await?;
        Ok(updated.unwrap_or(Updated::NotFound))
    }

    async fn get(&self, id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
        let txn = self.db.read()?;
        let messages = match txn.open_table(MESSAGES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(DbError::from(e).into()),
        };
        let Some(mut record) = load(&messages, id.as_str())? else {
            return Ok(None);
        };
        let events = txn.open_table(EVENTS).map_err(DbError::from)?;
        for entry in events
            .range((id.as_str(), 0)..=(id.as_str(), u32::MAX))
            .map_err(DbError::from)?
        {
            let (_, value) = entry.map_err(DbError::from)?;
            let event: Event = serde_json::from_slice(value.value()).map_err(DbError::from)?;
            record.events.push(event);
        }
        Ok(Some(record))
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
        Ok(found.and_then(|v| v.value().parse().ok()))
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
            .db
            .write(true, move |txn| {
                let mut done = Expired::default();
                if let Some(before) = records_before {
                    let old: Vec<String> = txn
                        .open_table(BY_CREATED)?
                        .range(..(before, ""))?
                        .take(scan)
                        .map(|entry| entry.map(|(key, _)| key.value().1.to_owned()))
                        .collect::<Result<_, _>>()?;
                    let mut messages = txn.open_table(MESSAGES)?;
                    for id in old {
                        if done.removed >= limit {
                            break;
                        }
                        let Some(record) = load(&messages, &id)? else {
                            continue;
                        };
                        if record.status.is_terminal() {
                            remove_record(txn, &mut messages, &record)?;
                            done.removed += 1;
                        }
                    }
                }
                if let Some(before) = bodies_before {
                    let mut progress = txn.open_table(RETENTION)?;
                    let from = progress
                        .get("bodies_before")?
                        .map_or(i64::MIN, |v| v.value())
                        .max(records_before.unwrap_or(i64::MIN));
                    // Bodies kept longer than records, or a retention made
                    // longer since the last sweep: nothing below `from` is
                    // left to clear.
                    let window: Vec<(i64, String)> = if from < before {
                        txn.open_table(BY_CREATED)?
                            .range((from, "")..(before, ""))?
                            .take(scan)
                            .map(|entry| {
                                entry.map(|(key, _)| {
                                    let (at, id) = key.value();
                                    (at, id.to_owned())
                                })
                            })
                            .collect::<Result<_, _>>()?
                    } else {
                        Vec::new()
                    };
                    let mut reached = if window.len() < scan {
                        before.max(from)
                    } else {
                        from
                    };
                    let mut messages = txn.open_table(MESSAGES)?;
                    let mut events = txn.open_table(EVENTS)?;
                    for (at, id) in window {
                        if done.redacted >= limit {
                            reached = at;
                            break;
                        }
                        reached = reached.max(at);
                        let Some(mut record) = load(&messages, &id)? else {
                            continue;
                        };
                        // Unfinished ones are passed over (deadlines end
                        // long before any sensible retention).
                        if !record.status.is_terminal() {
                            continue;
                        }
                        let mut changed = record.message.content.redact();
                        let trail: Vec<(u32, Event)> = events
                            .range((id.as_str(), 0)..=(id.as_str(), u32::MAX))?
                            .map(|entry| {
                                let (key, value) = entry?;
                                Ok((key.value().1, serde_json::from_slice(value.value())?))
                            })
                            .collect::<Result<_, DbError>>()?;
                        for (seq, mut event) in trail {
                            if event.raw.take().is_some() {
                                events.insert(
                                    (id.as_str(), seq),
                                    serde_json::to_vec(&event)?.as_slice(),
                                )?;
                                changed = true;
                            }
                        }
                        if changed {
                            messages
                                .insert(id.as_str(), serde_json::to_vec(&record)?.as_slice())?;
                            done.redacted += 1;
                        }
                    }
                    progress.insert("bodies_before", reached)?;
                }
                Ok(done)
            })
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
        let filter = filter.clone();
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || list(&db, &filter))
            .await
            .map_err(|e| StoreError::Other(e.into()))?
            .map_err(StoreError::from)
    }
}

type Ids<'a> = Box<dyn Iterator<Item = Result<String, DbError>> + 'a>;

/// The ids of an index range in the list's order.
fn ordered<'a, K: redb::Key + 'static>(
    range: redb::Range<'a, K, ()>,
    descending: bool,
    id: impl Fn(&K::SelfType<'_>) -> String + 'a,
) -> Ids<'a> {
    let id = std::rc::Rc::new(id);
    let map = move |r: Result<
        (redb::AccessGuard<'_, K>, redb::AccessGuard<'_, ()>),
        redb::StorageError,
    >| { r.map(|(k, _)| id(&k.value())).map_err(DbError::from) };
    if descending {
        Box::new(range.rev().map(map))
    } else {
        Box::new(range.map(map))
    }
}

/// Walks the most selective index in the list's order, from the cursor on,
/// loading and filtering records.
fn list(db: &Db, filter: &ListFilter) -> Result<Vec<MessageRecord>, DbError> {
    let txn = db.read()?;
    let messages = match txn.open_table(MESSAGES) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let descending = filter.sort.descending();
    let mut lo = filter
        .created_after
        .map_or(i64::MIN, |t| t.timestamp_millis());
    let mut hi = filter
        .created_before
        .map_or(i64::MAX, |t| t.timestamp_millis());
    // The cursor narrows the range to its millisecond; `matches` drops
    // what is at or before it within that millisecond.
    if let (Some((at, _)), false) = (&filter.after, filter.sort.by_updated()) {
        if descending {
            hi = hi.min(*at);
        } else {
            lo = lo.max(*at);
        }
    }
    let mut ids: Ids<'_> = if filter.sort.by_updated() {
        let table = txn.open_table(BY_UPDATED)?;
        let (ulo, uhi) = match &filter.after {
            Some((at, _)) if descending => (i64::MIN, *at),
            Some((at, _)) => (*at, i64::MAX),
            None => (i64::MIN, i64::MAX),
        };
        let range = table.range((ulo, "")..=(uhi, "\u{10ffff}"))?;
        ordered(range, descending, |k| k.1.to_owned())
    } else if let Some(to) = &filter.to {
        let table = txn.open_table(BY_RECIPIENT)?;
        let range = table.range((to.as_str(), lo, "")..=(to.as_str(), hi, "\u{10ffff}"))?;
        ordered(range, descending, |k| k.2.to_owned())
    } else if let Some(status) = filter.status {
        let table = txn.open_table(BY_STATUS)?;
        let range = table.range((status.as_str(), lo, "")..=(status.as_str(), hi, "\u{10ffff}"))?;
        ordered(range, descending, |k| k.2.to_owned())
    } else {
        let table = txn.open_table(BY_CREATED)?;
        let range = table.range((lo, "")..=(hi, "\u{10ffff}"))?;
        ordered(range, descending, |k| k.1.to_owned())
    };
    let mut out = Vec::new();
    while out.len() < filter.limit {
        let Some(id) = ids.next().transpose()? else {
            break;
        };
        if let Some(record) = load(&messages, &id)? {
            if filter.matches(&record) {
                out.push(record);
            }
        }
    }
    Ok(out)
}
