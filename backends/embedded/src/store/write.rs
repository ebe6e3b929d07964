//! A record's writes inside the group commit: its state and trail
//! saved with its index entries kept in step, the owner of an
//! idempotency key found, a record removed with all of it.

use mdc_core::{Event, MessageId, MessageRecord};
use redb::ReadableTable;

use super::index_moves::Place;
use super::record::{status_code, State};
use super::trail_rows::{clear_events, Trail};
use super::{Prepared, Tables};
use crate::db::DbError;

pub(super) fn provider_key(provider: &str, provider_message_id: &str) -> String {
    [provider, "\u{1f}", provider_message_id].concat()
}

/// Writes a record's state and new trail events and keeps the indexes in
/// step. `previous` is the stored state (none for a new record), `trail`
/// the stored trail (empty for a new record); events found in `prepared`
/// are not encoded again.
pub(super) fn save(
    t: &mut Tables<'_>,
    id: u128,
    mut state: State,
    previous: Option<&State>,
    events: Vec<Event>,
    prepared: &mut Prepared,
    trail: Trail,
) -> Result<(), DbError> {
    let created = state.created_at.timestamp_millis();
    let place = Place::of(&state)?;
    let previous_place = previous.map(Place::of).transpose()?;
    let added = events
        .iter()
        .map(|event| prepared.bytes(event))
        .collect::<Result<_, _>>()?;
    let trail = trail.append(&mut t.events, id, added)?;
    let previous_status = previous.map(|p| p.status);
    if previous_status != Some(state.status) {
        if let Some(previous) = previous_status {
            t.count(previous, -1);
        }
        t.count(state.status, 1);
    }
    if let (Some(provider), Some(pmid)) = (&state.provider, &state.provider_message_id) {
        let known = previous.is_some_and(|p| {
            p.provider.as_ref() == Some(provider) && p.provider_message_id.as_ref() == Some(pmid)
        });
        if !known {
            t.provider_ids
                .insert(provider_key(provider, pmid).as_str(), id)?;
        }
    }
    state.next_event = Some(trail.next_row);
    state.trail = trail.in_state;
    t.states.insert(id, state.encode()?.as_slice())?;
    if previous_place != Some(place) {
        t.held.note(id, created, previous_place, place);
    }
    Ok(())
}

/// The stored message `message`'s idempotency key (`key`, in its scope)
/// belongs to: the owner of an own key (`auto:` and an id) by that id, any
/// other through the key index.
pub(super) fn with_key(
    t: &Tables<'_>,
    message: &mdc_core::Message,
    key: &str,
) -> Result<Option<MessageRecord>, DbError> {
    if let Some(owner) = message.idempotency_key_owner() {
        if let Some(existing) = t.load(owner.bits())? {
            if existing.message.idempotency_scope() == key {
                return Ok(Some(existing));
            }
        }
    }
    let Some(existing_id) = t.idempotency.get(key)?.map(|v| v.value()) else {
        return Ok(None);
    };
    let existing = t.load(existing_id)?.ok_or_else(|| {
        DbError::Storage(format!(
            "idempotency key points at missing {}",
            MessageId::from_bits(existing_id)
        ))
    })?;
    Ok(Some(existing))
}

/// Removes a record, its trail and every index entry of it.
pub(super) fn remove_record(t: &mut Tables<'_>, record: &MessageRecord) -> Result<(), DbError> {
    let id = record.message.id.bits();
    t.messages.remove(id)?;
    t.states.remove(id)?;
    let created = record.message.created_at.timestamp_millis();
    clear_events(&mut t.events, id)?;
    let key = record.message.idempotency_scope();
    let key = key.as_str();
    let ours = t.idempotency.get(key)?.is_some_and(|v| v.value() == id);
    if ours {
        t.idempotency.remove(key)?;
    }
    t.by_created.remove((created, id))?;
    // Where its entries are: where it was when first held, if it is.
    let indexed = match t.held.forget(id) {
        Some(indexed) => indexed,
        None => Some(Place {
            code: status_code(record.status)?,
            updated: record.updated_at.timestamp_millis(),
        }),
    };
    t.indexes().place(id, created, indexed, None)?;
    t.count(record.status, -1);
    t.by_recipient
        .remove((record.message.to.as_str(), created, id))?;
    if let (Some(provider), Some(pmid)) = (&record.provider, &record.provider_message_id) {
        let key = provider_key(provider, pmid);
        let ours = t
            .provider_ids
            .get(key.as_str())?
            .is_some_and(|v| v.value() == id);
        if ours {
            t.provider_ids.remove(key.as_str())?;
        }
    }
    Ok(())
}
