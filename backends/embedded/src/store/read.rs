//! The store's reads outside the writer: a record with its trail, and
//! lists walked along an index.

use mdc_core::ports::ListFilter;
use mdc_core::{MessageId, MessageRecord};

use super::record::{load_message, stored, Stored};
use super::{
    event_codec, load, rows_of, status_code, BY_CREATED, BY_RECIPIENT, BY_STATUS, BY_UPDATED,
    EVENTS, IDEMPOTENCY, MESSAGES, STATES,
};
use crate::db::{Db, DbError};

/// The id of the stored message holding `message`'s idempotency key (in
/// its scope): for an own key (not indexed) the message it names, if
/// stored; for any other, the key index's entry.
pub(super) fn key_holder(
    db: &Db,
    message: &mdc_core::Message,
) -> Result<Option<MessageId>, DbError> {
    let scope = message.idempotency_scope();
    if let Some(owner) = message.idempotency_key_owner() {
        let held = read_record(db, &owner, Some(0))?
            .is_some_and(|record| record.message.idempotency_scope() == scope);
        if held {
            return Ok(Some(owner));
        }
    }
    let txn = db.read()?;
    let table = match txn.open_table(IDEMPOTENCY) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let found = table.get(scope.as_str())?;
    Ok(found.map(|v| MessageId::from_bits(v.value())))
}

/// The record with its trail, or only the trail's last `last` events
/// (read backwards), oldest first.
pub(super) fn read_record(
    db: &Db,
    id: &MessageId,
    last: Option<usize>,
) -> Result<Option<MessageRecord>, DbError> {
    let txn = db.read()?;
    let messages = match txn.open_table(MESSAGES) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let states = txn.open_table(STATES)?;
    // A state that knows its trail has no rows spares the rows' lookup.
    let (mut record, in_state, no_rows) = match stored(&messages, &states, id.bits())? {
        Some(Stored::Split(mut state)) => {
            let in_state = std::mem::take(&mut state.trail);
            let no_rows = state.next_event == Some(0);
            (
                state.with(load_message(&messages, id.bits())?),
                in_state,
                no_rows,
            )
        }
        Some(Stored::Whole(record)) => (*record, Vec::new(), false),
        None => return Ok(None),
    };
    // The trail: its rows, then the newest events, kept in the state.
    let wanted = last.unwrap_or(usize::MAX);
    if wanted == 0 {
        return Ok(Some(record));
    }
    let from_state = in_state.len().min(wanted);
    let from_rows = wanted - from_state;
    if from_rows > 0 && !no_rows {
        let table = txn.open_table(EVENTS)?;
        let range = table.range(rows_of(id.bits()))?;
        let rows: Box<dyn Iterator<Item = _>> = match last {
            Some(_) => Box::new(range.rev().take(from_rows)),
            None => Box::new(range),
        };
        for entry in rows {
            let (_, value) = entry?;
            record.events.push(event_codec::decode(value.value())?);
        }
        if last.is_some() {
            record.events.reverse();
        }
    }
    for event in &in_state[in_state.len() - from_state..] {
        record.events.push(event_codec::decode(event)?);
    }
    Ok(Some(record))
}

type Ids<'a> = Box<dyn Iterator<Item = Result<u128, DbError>> + 'a>;

/// The ids of an index range in the list's order.
fn ordered<'a, K: redb::Key + 'static>(
    range: redb::Range<'a, K, ()>,
    descending: bool,
    id: impl Fn(&K::SelfType<'_>) -> u128 + 'a,
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
pub(super) fn list(db: &Db, filter: &ListFilter) -> Result<Vec<MessageRecord>, DbError> {
    let txn = db.read()?;
    let messages = match txn.open_table(MESSAGES) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let states = txn.open_table(STATES)?;
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
        let range = table.range((ulo, 0)..=(uhi, u128::MAX))?;
        ordered(range, descending, |k| k.1)
    } else if let Some(to) = &filter.to {
        let table = txn.open_table(BY_RECIPIENT)?;
        let range = table.range((to.as_str(), lo, 0)..=(to.as_str(), hi, u128::MAX))?;
        ordered(range, descending, |k| k.2)
    } else if let Some(status) = filter.status {
        let code = status_code(status)?;
        let table = txn.open_table(BY_STATUS)?;
        let range = table.range((code, lo, 0)..=(code, hi, u128::MAX))?;
        ordered(range, descending, |k| k.2)
    } else {
        let table = txn.open_table(BY_CREATED)?;
        let range = table.range((lo, 0)..=(hi, u128::MAX))?;
        ordered(range, descending, |k| k.1)
    };
    let mut out = Vec::new();
    while out.len() < filter.limit {
        let Some(id) = ids.next().transpose()? else {
            break;
        };
        if let Some(record) = load(&messages, &states, id)? {
            if filter.matches(&record) {
                out.push(record);
            }
        }
    }
    Ok(out)
}
