//! A status change inside the group commit: the record's state read,
//! changed by the shared rule and written back, and what the write hands
//! out to its caller.

use mdc_core::ports::{Claim, Verify};
use mdc_core::{MessageId, MessageRecord};

use super::record::{message_bytes, next_event_seq, stored, State, Stored};
use super::{codec, save, Prepared, Tables, Trail};
use crate::db::DbError;

/// What [`modify`] left: the rule's answer and the record's state after
/// the change (as written, but for the next trail row's number and the
/// events kept in it, which a record does not show); the message too
/// when the record was stored whole (it was read whole).
pub(super) struct Modified<T> {
    pub out: T,
    pub state: State,
    pub whole: Option<mdc_core::Message>,
}

/// Read-modify-write of one record's state inside the group commit: `f`
/// gets the record with a stand-in message ([`State::stand_in`]) unless the
/// record is still stored whole, which this change splits. The events `f`
/// appends are taken from `prepared` where they were encoded before.
pub(super) fn modify<T>(
    t: &mut Tables<'_>,
    id: &MessageId,
    mut prepared: Prepared,
    f: impl FnOnce(&mut MessageRecord) -> T,
) -> Result<Option<Modified<T>>, DbError> {
    let key = id.bits();
    let (mut record, whole, next_event, in_state, channel) =
        match stored(&t.messages, &t.states, key)? {
            Some(Stored::Split(mut state)) => {
                let next_event = state.next_event;
                let in_state = std::mem::take(&mut state.trail);
                let channel = state.channel;
                (state.stand_in(id), false, next_event, in_state, channel)
            }
            Some(Stored::Whole(record)) => {
                let channel = Some(record.message.channel());
                (*record, true, None, Vec::new(), channel)
            }
            None => return Ok(None),
        };
    // The stand-in's content is not the message's: the channel is the one
    // the state keeps (none in a state written before it was kept).
    let state_of = |record: &MessageRecord| State {
        channel,
        ..State::of(record)
    };
    let before = state_of(&record);
    let out = f(&mut record);
    let after = state_of(&record);
    if after != before || !record.events.is_empty() {
        if whole {
            t.messages
                .insert(key, codec::encode(&record.message)?.as_slice())?;
        }
        let next_row = match next_event {
            Some(seq) => seq,
            None => next_event_seq(&t.events, key)?,
        };
        save(
            t,
            key,
            after.clone(),
            Some(&before),
            std::mem::take(&mut record.events),
            &mut prepared,
            Trail { next_row, in_state },
        )?;
    }
    Ok(Some(Modified {
        out,
        state: after,
        whole: whole.then_some(record.message),
    }))
}

/// A claim as the writer answers it: claimed, with the message still to
/// decode, or any other answer.
pub(super) enum Claiming {
    Claimed(Box<MessageRecord>, Verify, Handed),
    Other(Claim),
}

/// The message a write hands out: read whole already, or its stored
/// bytes, decoded once the write is committed, off the writer's thread.
pub(super) enum Handed {
    Message(Box<mdc_core::Message>),
    Bytes(Vec<u8>),
}

impl Handed {
    pub fn of(t: &Tables<'_>, id: u128, whole: Option<mdc_core::Message>) -> Result<Self, DbError> {
        Ok(match whole {
            Some(message) => Self::Message(Box::new(message)),
            None => Self::Bytes(message_bytes(&t.messages, id)?),
        })
    }

    pub fn message(self) -> Result<mdc_core::Message, DbError> {
        match self {
            Self::Message(message) => Ok(*message),
            Self::Bytes(bytes) => codec::decode(&bytes),
        }
    }
}
