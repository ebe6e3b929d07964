//! The trail's rows: one per event, keyed by (id, number), numbered from 0
//! and renumbered when an over-long trail is compacted.

use std::ops::RangeInclusive;

use mdc_core::trail;
use redb::{ReadableTable, Table};

use super::event_codec;
use crate::db::DbError;

/// The keys of every trail row of `id`.
pub(super) fn rows_of(id: u128) -> RangeInclusive<(u128, u32)> {
    (id, 0)..=(id, u32::MAX)
}

/// Removes every event row of `id`.
pub(super) fn clear_events(
    events: &mut Table<(u128, u32), &[u8]>,
    id: u128,
) -> Result<(), DbError> {
    let seqs: Vec<u32> = events
        .range(rows_of(id))?
        .map(|entry| entry.map(|(key, _)| key.value().1))
        .collect::<Result<_, _>>()?;
    for seq in seqs {
        events.remove((id, seq))?;
    }
    Ok(())
}

/// Folds the middle of an over-long trail into a summary and renumbers it;
/// returns the next row's number.
pub(super) fn compact_events(
    events: &mut Table<(u128, u32), &[u8]>,
    id: u128,
) -> Result<u32, DbError> {
    let mut all = Vec::new();
    let mut next = 0;
    for entry in events.range(rows_of(id))? {
        let (key, value) = entry?;
        next = key.value().1 + 1;
        all.push(event_codec::decode(value.value())?);
    }
    if all.len() <= trail::MAX_TRAIL {
        return Ok(next);
    }
    clear_events(events, id)?;
    let compacted = trail::compact(all);
    for (seq, event) in compacted.iter().enumerate() {
        events.insert((id, seq as u32), event_codec::encode(event)?.as_slice())?;
    }
    Ok(compacted.len() as u32)
}
