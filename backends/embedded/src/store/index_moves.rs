//! The status and update-time indexes, moved a while after a change rather
//! than with it.
//!
//! A message's usual way (queued, sending, sent, delivered) takes a few
//! hundred milliseconds, and moving its entries in both indexes with each
//! change cost four of the five B-tree writes a change made. A change now
//! notes the message here; its entries move once it has been held for
//! [`HOLD`], to where the message is then, so a message that goes its way
//! within that time writes its entries once. Lists move everything held
//! first, so they see every change made before them.
//!
//! What is held is also in the `index_moves` table, one row per group
//! commit that began holding messages, naming each with the entries it
//! has: a store that stopped before moving them moves them when it opens
//! ([`recover`]). The status counts are kept with every write, as before.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::record::{status_code, stored, State, Stored};
use super::{BY_STATUS, BY_UPDATED, MESSAGES, STATES};
use crate::db::{DbError, IdleWork, Job};

/// Group commit number → the messages it began holding (see [`Held`]'s
/// rows).
pub(super) const INDEX_MOVES: TableDefinition<u64, &[u8]> = TableDefinition::new("index_moves");

/// How long a change is held before its index entries move.
pub(super) const HOLD: Duration = Duration::from_secs(1);
/// Held messages past this many are moved at once, oldest first, so a
/// burst of changes cannot grow the memory held without bound.
const MOST_HELD: usize = 100_000;
/// Held messages an idle store keeps room for.
const SMALL: usize = 1024;

/// Where a message's entries are in both indexes: its status code and its
/// update time (ms); its creation time (ms) is in the status index's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub code: u8,
    pub updated: i64,
}

/// A held message: where its entries are (none for a message created
/// while held) and where they go.
struct Entry {
    indexed: Option<Place>,
    now: Place,
    created: i64,
    /// The group commit whose row names it.
    commit: u64,
}

struct Batch {
    commit: u64,
    at: Instant,
    ids: Vec<u128>,
}

/// The messages whose index entries are held, in the order they began to
/// be held.
pub(super) struct Held {
    entries: HashMap<u128, Entry>,
    batches: VecDeque<Batch>,
    /// The ids this group commit began holding, for its row.
    fresh: Vec<u128>,
    next_commit: u64,
    hold: Duration,
    /// A commit failed after this memory took its changes: it no longer
    /// matches the rows, and is read from them again before the next write.
    stale: bool,
}

impl Default for Held {
    fn default() -> Self {
        Self::holding_for(HOLD)
    }
}

impl Held {
    pub fn holding_for(hold: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            batches: VecDeque::new(),
            fresh: Vec::new(),
            next_commit: 0,
            hold,
            stale: false,
        }
    }

    #[cfg(test)]
    pub fn set_hold(&mut self, hold: Duration) {
        self.hold = hold;
    }

    /// Nothing held, no row left to delete, and no failed commit whose
    /// rows are still to be moved.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.batches.is_empty() && !self.stale
    }

    /// Whether the oldest held batch has been held long enough, or a
    /// failed commit left rows to move.
    fn due(&self) -> bool {
        self.stale
            || self
                .batches
                .front()
                .is_some_and(|batch| batch.at.elapsed() >= self.hold)
    }

    /// The commit that took this memory's changes failed.
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// Notes that message `id` (created at `created`) moved from
    /// `previous` (none for a new message) to `now`.
    pub fn note(&mut self, id: u128, created: i64, previous: Option<Place>, now: Place) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.now = now;
            return;
        }
        self.entries.insert(
            id,
            Entry {
                indexed: previous,
                now,
                created,
                commit: self.next_commit,
            },
        );
        self.fresh.push(id);
    }

    /// Where message `id`'s entries are, when it is held; they stay there
    /// (for a message being removed, which removes them).
    pub fn forget(&mut self, id: u128) -> Option<Option<Place>> {
        self.entries.remove(&id).map(|entry| entry.indexed)
    }
}

/// Both indexes, open in a write transaction.
pub(super) struct Indexes<'a, 't> {
    pub by_status: &'a mut Table<'t, (u8, i64, u128), ()>,
    pub by_updated: &'a mut Table<'t, (i64, u128), ()>,
}

impl Place {
    pub fn of(state: &State) -> Result<Self, DbError> {
        Ok(Self {
            code: status_code(state.status)?,
            updated: state.updated_at.timestamp_millis(),
        })
    }
}

impl Indexes<'_, '_> {
    /// Moves message `id`'s entries from `from` to `to` (either none).
    pub fn place(
        &mut self,
        id: u128,
        created: i64,
        from: Option<Place>,
        to: Option<Place>,
    ) -> Result<(), DbError> {
        if from == to {
            return Ok(());
        }
        if let Some(from) = from {
            self.by_status.remove((from.code, created, id))?;
            self.by_updated.remove((from.updated, id))?;
        }
        if let Some(to) = to {
            self.by_status.insert((to.code, created, id), ())?;
            self.by_updated.insert((to.updated, id), ())?;
        }
        Ok(())
    }
}

impl Held {
    /// At the end of a group commit: writes the row of the messages it
    /// began holding, then moves the entries of those held for the hold
    /// (all of them with `all`) and deletes their rows.
    pub fn finish(
        &mut self,
        txn: &WriteTransaction,
        indexes: &mut Indexes<'_, '_>,
        all: bool,
    ) -> Result<(), DbError> {
        // Most commits of a busy store have a row to write; an idle one's
        // often nothing at all, and opens no table.
        let any_due = self.batches.front().is_some_and(|batch| {
            all || batch.at.elapsed() >= self.hold || self.entries.len() > MOST_HELD
        });
        if self.fresh.is_empty() && !any_due {
            return Ok(());
        }
        let mut rows = txn.open_table(INDEX_MOVES)?;
        if !self.fresh.is_empty() {
            let ids = std::mem::take(&mut self.fresh);
            let mut row = Vec::with_capacity(ids.len() * ROW_ENTRY);
            for id in &ids {
                // Not one removed in this commit since.
                if let Some(entry) = self.entries.get(id) {
                    encode(&mut row, *id, entry.created, entry.indexed);
                }
            }
            if !row.is_empty() {
                rows.insert(self.next_commit, row.as_slice())?;
            }
            self.batches.push_back(Batch {
                commit: self.next_commit,
                at: Instant::now(),
                ids,
            });
            self.next_commit += 1;
        }
        while let Some(batch) = self.batches.front() {
            let due = all || batch.at.elapsed() >= self.hold || self.entries.len() > MOST_HELD;
            if !due {
                break;
            }
            let batch = self.batches.pop_front().expect("a front batch");
            for id in batch.ids {
                // Gone (removed), or named again by a later row (removed
                // and made again).
                let ours = self
                    .entries
                    .get(&id)
                    .is_some_and(|e| e.commit == batch.commit);
                if !ours {
                    continue;
                }
                let entry = self.entries.remove(&id).expect("checked");
                indexes.place(id, entry.created, entry.indexed, Some(entry.now))?;
            }
            rows.remove(batch.commit)?;
        }
        // A burst's memory is given back once all of it has moved.
        if self.is_empty() && self.entries.capacity() > SMALL {
            self.entries = HashMap::new();
            self.batches = VecDeque::new();
        }
        Ok(())
    }

    /// Before a group commit's writes: after a failed commit, moves what
    /// the rows and this memory name to where each message is stored now
    /// ([`recover`]; a change noted but lost is then no move), and starts
    /// afresh.
    pub fn refresh(&mut self, txn: &WriteTransaction) -> Result<(), DbError> {
        if self.stale {
            // Where a held message's entries are is known here even when
            // the row naming it was not stored.
            let known = self
                .entries
                .iter()
                .map(|(id, entry)| (*id, entry.created, entry.indexed))
                .collect();
            recover(txn, known)?;
            *self = Self::holding_for(self.hold);
        }
        Ok(())
    }
}

/// The store writer's work when it has nothing else to write: moves what
/// has been held long enough, so that a store left idle holds nothing
/// (and gives its memory back).
pub(super) fn idle_work(held: Arc<Mutex<Held>>) -> IdleWork {
    Box::new(move || {
        if !lock(&held).due() {
            return None;
        }
        let held = held.clone();
        let job: Job = Box::new(move |txn| {
            let mut holding = lock(&held);
            let outcome = holding.refresh(txn).and_then(|()| {
                let mut by_status = txn.open_table(BY_STATUS)?;
                let mut by_updated = txn.open_table(BY_UPDATED)?;
                let mut indexes = Indexes {
                    by_status: &mut by_status,
                    by_updated: &mut by_updated,
                };
                holding.finish(txn, &mut indexes, false)
            });
            drop(holding);
            Box::new(move |commit: Result<(), DbError>| after_commit(&held, commit.and(outcome)))
        });
        Some(job)
    })
}

/// A commit that failed may have lost what `held` took from it.
pub(super) fn after_commit(held: &Mutex<Held>, commit: Result<(), DbError>) {
    if commit.is_err() {
        lock(held).mark_stale();
    }
}

/// A panic while held leaves at worst what a failed commit does, which a
/// later write finds marked.
pub(super) fn lock(held: &Mutex<Held>) -> std::sync::MutexGuard<'_, Held> {
    held.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One held message in a row: id (16 bytes), created (8), then its
/// entries' status code (1, [`NOT_INDEXED`] for none) and update time (8),
/// all little-endian.
const ROW_ENTRY: usize = 16 + 8 + 1 + 8;
const NOT_INDEXED: u8 = u8::MAX;

pub(super) fn encode(row: &mut Vec<u8>, id: u128, created: i64, indexed: Option<Place>) {
    row.extend_from_slice(&id.to_le_bytes());
    row.extend_from_slice(&created.to_le_bytes());
    let (code, updated) = indexed.map_or((NOT_INDEXED, 0), |p| (p.code, p.updated));
    row.push(code);
    row.extend_from_slice(&updated.to_le_bytes());
}

fn decode(row: &[u8]) -> Result<Vec<(u128, i64, Option<Place>)>, DbError> {
    if !row.len().is_multiple_of(ROW_ENTRY) {
        return Err(DbError::Storage(format!(
            "index_moves row of {} bytes is not whole entries of {ROW_ENTRY}",
            row.len()
        )));
    }
    Ok(row
        .chunks_exact(ROW_ENTRY)
        .map(|entry| {
            let id = u128::from_le_bytes(entry[..16].try_into().expect("16 bytes"));
            let created = i64::from_le_bytes(entry[16..24].try_into().expect("8 bytes"));
            let code = entry[24];
            let updated = i64::from_le_bytes(entry[25..33].try_into().expect("8 bytes"));
            let indexed = (code != NOT_INDEXED).then_some(Place { code, updated });
            (id, created, indexed)
        })
        .collect())
}

/// Moves the entries of every message the rows (and `known`, held in
/// memory) name to where the message is stored now (none, for one since
/// removed), and deletes the rows: for a store that stopped, or a commit
/// that failed, while holding some. Entries are first taken from where
/// each says they are, then put once where the message is, with its
/// stored creation time. A message whose state cannot be read keeps no
/// entry, with a warning (a list checks each message's status anyway).
/// Returns how many messages it placed.
pub(super) fn recover(
    txn: &WriteTransaction,
    known: Vec<(u128, i64, Option<Place>)>,
) -> Result<usize, DbError> {
    let mut rows = txn.open_table(INDEX_MOVES)?;
    let mut named = known;
    for row in rows.iter()? {
        let (commit, value) = row?;
        // Like an index entry that cannot be moved when a store's layout
        // changes: left out with a warning.
        match decode(value.value()) {
            Ok(held) => named.extend(held),
            Err(e) => {
                tracing::warn!(row = commit.value(), error = %e, "Left out a damaged row of held index moves")
            }
        }
    }
    let messages = txn.open_table(MESSAGES)?;
    let states = txn.open_table(STATES)?;
    let mut by_status = txn.open_table(BY_STATUS)?;
    let mut by_updated = txn.open_table(BY_UPDATED)?;
    let mut indexes = Indexes {
        by_status: &mut by_status,
        by_updated: &mut by_updated,
    };
    let mut ids = Vec::with_capacity(named.len());
    for (id, created, indexed) in named {
        indexes.place(id, created, indexed, None)?;
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    let mut placed = 0;
    for id in ids {
        let state = match stored(&messages, &states, id) {
            Ok(Some(Stored::Split(state))) => state,
            Ok(Some(Stored::Whole(record))) => State::of(&record),
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(message_id = %mdc_core::MessageId::from_bits(id), error = %e, "Left a message whose state cannot be read out of the status indexes");
                continue;
            }
        };
        let created = state.created_at.timestamp_millis();
        indexes.place(id, created, None, Some(Place::of(&state)?))?;
        placed += 1;
    }
    rows.retain(|_, _| false)?;
    Ok(placed)
}
