//! Claims and status updates as the store writer applies them: the
//! record's state read, changed and written back in the group commit
//! ([`modify`]), and what each hands out once the commit is durable.

use mdc_core::ports::store::{apply_claim, apply_update, claim_event};
use mdc_core::ports::{Claim, StoreError, Transition, Updated};
use mdc_core::{MessageId, MessageRecord, Timestamp};

use super::modify::{modify, Claiming, Handed, Modified};
use super::{EmbeddedStore, Prepared};

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

    /// An update; with `read`, and when it applies, the record as the write
    /// left it (its state and message, handed out by the write).
    pub(super) async fn write_update(
        &self,
        id: &MessageId,
        update: Transition,
        read: bool,
    ) -> Result<(Updated, Option<MessageRecord>), StoreError> {
        let id = id.clone();
        let prepared = Prepared::of(update.event_when_applied())?;
        let (updated, after) = self
            .apply(move |t| {
                let modified = modify(t, &id, prepared, |record| apply_update(record, update))?;
                Ok(match modified {
                    Some(Modified {
                        out: applied @ Updated::Applied { .. },
                        state,
                        whole,
                    }) if read => {
                        let message = Handed::of(t, id.bits(), whole)?;
                        (applied, Some((state, message)))
                    }
                    Some(other) => (other.out, None),
                    None => (Updated::NotFound, None),
                })
            })
            .await?;
        let after = match after {
            Some((state, message)) => Some(state.with(message.message()?)),
            None => None,
        };
        Ok((updated, after))
    }
}
