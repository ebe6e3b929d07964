//! Claims and status updates as the store writer applies them: the
//! record's state read, changed and written back in the group commit
//! ([`modify`]), and what each hands out once the commit is durable.

use mdc_core::ports::store::{apply_claim, apply_update, claim_event};
use mdc_core::ports::{Brief, Claim, StoreError, Transition, Updated};
use mdc_core::{MessageId, MessageRecord, Timestamp};

use super::modify::{modify, Claiming, Handed, Modified};
use super::record::State;
use super::{EmbeddedStore, Prepared};
use crate::db::DbError;

impl EmbeddedStore {
    /// A claim; its record gets `given` as its message when there is one,
    /// else the stored message (decoded once the write is committed).
    pub(super) async fn write_claim(
        &self,
        id: MessageId,
        given: Option<mdc_core::Message>,
        now: Timestamp,
        lease_until: Timestamp,
        component: &str,
    ) -> Result<Claim, StoreError> {
        let component = component.to_owned();
        // A message's first claim, the usual one, appends this event.
        let prepared = Prepared::of([claim_event(1, now, &component, false)])?;
        let claim = self
            .apply(move |t| {
                let claim = modify(t, &id, prepared, |record| {
                    apply_claim(record, now, lease_until, &component)
                })?;
                Ok(match claim {
                    Some(Modified {
                        out: Claim::Claimed { record, verify },
                        whole,
                        ..
                    }) => {
                        let message = match given {
                            Some(message) => Handed::Message(Box::new(message)),
                            None => Handed::of(t, id.bits(), whole)?,
                        };
                        Claiming::Claimed(record, verify, message)
                    }
                    Some(other) => Claiming::Other(other.out),
                    None => Claiming::Other(Claim::NotFound),
                })
            })
            .await?;
        Ok(match claim {
            Claiming::Other(other) => other,
            Claiming::Claimed(mut record, verify, message) => {
                record.message = message.message()?;
                Claim::Claimed { record, verify }
            }
        })
    }

    /// An update; when it applies, what `hand` asks of the record as the
    /// write left it: its state, and its message when `hand` needs it
    /// (read by the write, decoded once the commit is durable).
    pub(super) async fn write_update(
        &self,
        id: &MessageId,
        update: Transition,
        hand: Hand,
    ) -> Result<(Updated, Option<(State, Option<Handed>)>), StoreError> {
        let id = id.clone();
        let mut update = update;
        let prepared = Prepared::of_update(&mut update)?;
        Ok(self
            .apply(move |t| {
                let modified = modify(t, &id, prepared, |record| apply_update(record, update))?;
                Ok(match modified {
                    Some(Modified {
                        out: applied @ Updated::Applied { .. },
                        state,
                        whole,
                    }) if hand != Hand::Nothing => {
                        let message = match hand {
                            Hand::Brief if state.channel.is_some() => None,
                            _ => Some(Handed::of(t, id.bits(), whole)?),
                        };
                        (applied, Some((state, message)))
                    }
                    Some(other) => (other.out, None),
                    None => (Updated::NotFound, None),
                })
            })
            .await?)
    }
}

/// What an update hands out when it applies ([`EmbeddedStore::write_update`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Hand {
    Nothing,
    /// The record: the state and the message.
    Record,
    /// What a [`Brief`] needs: the state, and the message only when the
    /// state does not keep its channel.
    Brief,
}

/// The record the write left, of its state and message.
pub(super) fn record_of(
    after: Option<(State, Option<Handed>)>,
) -> Result<Option<MessageRecord>, DbError> {
    let Some((state, message)) = after else {
        return Ok(None);
    };
    let message = message.ok_or_else(|| {
        DbError::Storage("an update handed out a state without its message".into())
    })?;
    Ok(Some(state.with(message.message()?)))
}

/// The brief of the record the write left: the channel from its state,
/// or else from its message.
pub(super) fn brief_of(after: Option<(State, Option<Handed>)>) -> Result<Option<Brief>, DbError> {
    let Some((state, message)) = after else {
        return Ok(None);
    };
    let channel = match (state.channel, message) {
        (Some(channel), _) => channel,
        (None, Some(message)) => message.message()?.channel(),
        (None, None) => {
            return Err(DbError::Storage(
                "an update handed out a state without its channel or message".into(),
            ))
        }
    };
    Ok(Some(Brief {
        channel,
        status: state.status,
        created_at: state.created_at,
        updated_at: state.updated_at,
    }))
}
