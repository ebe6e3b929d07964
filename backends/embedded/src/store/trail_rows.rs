//! The trail's rows: one per event, keyed by (id, number), numbered from 0
//! and renumbered when an over-long trail is compacted; and its newest
//! events, kept in the record's state until they are too many for it.

use std::ops::RangeInclusive;

use mdc_core::trail;
use redb::{ReadableTable, Table};

use super::event_codec;
use crate::db::DbError;

/// At most this many events are kept in a state; a message's usual way
/// (accepted, queued, sending, sent, delivered) has five.
pub(super) const STATE_EVENTS: usize = 8;
/// At most this many bytes of events, each with its 4-byte length, are
/// kept in a state (a vendor's report with its payload takes a few
/// hundred), so states stay small beside the others in their pages.
pub(super) const STATE_EVENT_BYTES: usize = 1024;

/// A record's trail as stored: `next_row` rows, then the events of
/// `in_state`, the newest, oldest first.
#[derive(Debug, Default)]
pub(super) struct Trail {
    pub next_row: u32,
    pub in_state: Vec<Vec<u8>>,
}

impl Trail {
    /// Appends `added` (stored forms). When the events kept in the state
    /// would be more than it keeps, or the trail longer than
    /// [`trail::MAX_TRAIL`], they are all written as rows, and an
    /// over-long trail is compacted.
    pub fn append(
        mut self,
        events: &mut Table<(u128, u32), &[u8]>,
        id: u128,
        added: Vec<Vec<u8>>,
    ) -> Result<Self, DbError> {
        self.in_state.extend(added);
        let bytes: usize = self.in_state.iter().map(|e| 4 + e.len()).sum();
        let total = self.next_row as usize + self.in_state.len();
        if self.in_state.len() <= STATE_EVENTS
            && bytes <= STATE_EVENT_BYTES
            && total <= trail::MAX_TRAIL
        {
            return Ok(self);
        }
        for event in self.in_state.drain(..) {
            events.insert((id, self.next_row), event.as_slice())?;
            self.next_row += 1;
        }
        // Row numbers only grow and are renumbered from 0 when the trail
        // is compacted, so the next one bounds the trail's length.
        if self.next_row as usize > trail::MAX_TRAIL {
            self.next_row = compact_events(events, id)?;
        }
        Ok(self)
    }
}

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
