//! Retention inside the group commit: finished messages removed once
//! older than the records' retention, their bodies and vendor payloads
//! cleared once older than the bodies'.

use mdc_core::ports::Expired;
use mdc_core::Event;
use redb::{ReadableTable, TableDefinition};

use super::record::{load_message, stored, Stored};
use super::{codec, event_codec, remove_record, rows_of, Tables};
use crate::db::DbError;

/// Retention's progress: `bodies_before` → creation time (ms) before which
/// every finished message's bodies are cleared.
pub(super) const RETENTION: TableDefinition<&str, i64> = TableDefinition::new("retention");
/// At most this many index entries are looked at per retention call, so a
/// long run of unfinished old messages cannot make one call unbounded.
pub(super) const RETENTION_SCAN_FACTOR: usize = 4;

/// One bounded step of retention: at most `limit` messages removed and
/// `limit` cleared, looking at most `scan` index entries for each (times
/// in ms).
pub(super) fn expire(
    t: &mut Tables<'_>,
    records_before: Option<i64>,
    bodies_before: Option<i64>,
    limit: usize,
    scan: usize,
) -> Result<Expired, DbError> {
    let mut done = Expired::default();
    if let Some(before) = records_before {
        let old: Vec<u128> = t
            .by_created
            .range(..(before, 0))?
            .take(scan)
            .map(|entry| entry.map(|(key, _)| key.value().1))
            .collect::<Result<_, _>>()?;
        for id in old {
            if done.removed >= limit {
                break;
            }
            let Some(record) = t.load(id)? else {
                continue;
            };
            if record.status.is_terminal() {
                remove_record(t, &record)?;
                done.removed += 1;
            }
        }
    }
    if let Some(before) = bodies_before {
        let mut progress = t.txn.open_table(RETENTION)?;
        let from = progress
            .get("bodies_before")?
            .map_or(i64::MIN, |v| v.value())
            .max(records_before.unwrap_or(i64::MIN));
        // Bodies kept longer than records, or a retention made
        // longer since the last sweep: nothing below `from` is
        // left to clear.
        let window: Vec<(i64, u128)> = if from < before {
            t.by_created
                .range((from, 0)..(before, 0))?
                .take(scan)
                .map(|entry| entry.map(|(key, _)| key.value()))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let mut reached = if window.len() < scan {
            before.max(from)
        } else {
            from
        };
        for (at, id) in window {
            if done.redacted >= limit {
                reached = at;
                break;
            }
            reached = reached.max(at);
            let (mut record, mut state) = match stored(&t.messages, &t.states, id)? {
                Some(Stored::Split(state)) => (
                    state.clone().with(load_message(&t.messages, id)?),
                    Some(state),
                ),
                Some(Stored::Whole(record)) => (*record, None),
                None => continue,
            };
            // Unfinished ones are passed over (deadlines end
            // long before any sensible retention).
            if !record.status.is_terminal() {
                continue;
            }
            let mut changed = record.message.content.redact();
            for stored in state.iter_mut().flat_map(|s| s.trail.iter_mut()) {
                let mut event = event_codec::decode(stored)?;
                if event.raw.take().is_some() {
                    *stored = event_codec::encode(&event)?;
                    changed = true;
                }
            }
            let trail: Vec<(u32, Event)> = t
                .events
                .range(rows_of(id))?
                .map(|entry| {
                    let (key, value) = entry?;
                    Ok((key.value().1, event_codec::decode(value.value())?))
                })
                .collect::<Result<_, DbError>>()?;
            for (seq, mut event) in trail {
                if event.raw.take().is_some() {
                    t.events
                        .insert((id, seq), event_codec::encode(&event)?.as_slice())?;
                    changed = true;
                }
            }
            if changed {
                match state {
                    // The state as it was but for its events' payloads.
                    Some(state) => {
                        t.messages
                            .insert(id, codec::encode(&record.message)?.as_slice())?;
                        t.states.insert(id, state.encode()?.as_slice())?;
                    }
                    None => t.put_parts(&record)?,
                }
                done.redacted += 1;
            }
        }
        progress.insert("bodies_before", reached)?;
    }
    Ok(done)
}
