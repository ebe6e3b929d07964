use async_trait::async_trait;

use crate::{Channel, MessageId, MessageRecord, Status, Timestamp};

mod rules;

pub use rules::{apply_claim, apply_update, claim_event, Transition};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached now; trying again later can succeed.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] super::BoxError),
    #[error("store error: {0}")]
    Other(#[source] super::BoxError),
}

/// The result of [`Store::create`].
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    New,
    /// A message with the same idempotency key exists; here it is.
    Existing(Box<MessageRecord>),
}

/// Whether a claimed attempt must first ask whether a vendor already has
/// the message, and which vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// No earlier attempt can have reached a vendor.
    No,
    /// The last attempt ended unsure whether `record.provider` took the
    /// message: ask that provider.
    Provider,
    /// The last attempt's dispatcher died mid-send. It may have failed over
    /// or been routed to any member, and `record.provider` names only an
    /// earlier attempt's vendor: ask every member.
    Any,
}

impl Verify {
    /// Whether any vendor must be asked.
    pub fn first(self) -> bool {
        self != Self::No
    }
}

/// The result of [`Store::claim`]: whether this dispatcher may send now.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The caller owns attempt `record.attempts` until `record.lease_until`.
    /// `verify` says whether an earlier attempt may have reached a vendor,
    /// which must then be asked before sending.
    Claimed {
        record: Box<MessageRecord>,
        verify: Verify,
    },
    /// Another attempt is in flight until then.
    Busy {
        lease_until: Timestamp,
    },
    /// A retry is scheduled for later.
    NotDue {
        at: Timestamp,
    },
    /// Sent or finished: nothing left to send.
    Finished {
        status: Status,
    },
    NotFound,
}

/// What an outcome's metrics need of the message a write moved
/// ([`Store::update_and_brief`]): less than its record, so a store can
/// hand it out without reading and decoding the message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Brief {
    pub channel: Channel,
    pub status: Status,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Brief {
    pub fn of(record: &MessageRecord) -> Self {
        Self {
            channel: record.message.channel(),
            status: record.status,
            created_at: record.message.created_at,
            updated_at: record.updated_at,
        }
    }
}

/// The result of [`Store::update`].
#[derive(Debug, Clone, PartialEq)]
pub enum Updated {
    Applied {
        status: Status,
    },
    /// The move was not allowed (e.g. a late `sent` after `delivered`); the
    /// event was still appended so support sees it.
    Ignored {
        current: Status,
    },
    /// A vendor report for a message that was not sent through that
    /// provider under that id: nothing changed, no event.
    Mismatched,
    /// A vendor report that overtook the message's own `sent` write:
    /// nothing changed yet; apply it again once the message is sent.
    NotSentYet,
    NotFound,
}

/// The order of a list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Newest first.
    #[default]
    CreatedDesc,
    CreatedAsc,
    /// Most recently changed first.
    UpdatedDesc,
    UpdatedAsc,
}

impl SortOrder {
    pub const ALL: [SortOrder; 4] = [
        SortOrder::CreatedAsc,
        SortOrder::CreatedDesc,
        SortOrder::UpdatedAsc,
        SortOrder::UpdatedDesc,
    ];

    /// As the API names it: `created_at`, `-created_at`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            SortOrder::CreatedDesc => "-created_at",
            SortOrder::CreatedAsc => "created_at",
            SortOrder::UpdatedDesc => "-updated_at",
            SortOrder::UpdatedAsc => "updated_at",
        }
    }

    pub fn by_updated(self) -> bool {
        matches!(self, SortOrder::UpdatedDesc | SortOrder::UpdatedAsc)
    }

    pub fn descending(self) -> bool {
        matches!(self, SortOrder::CreatedDesc | SortOrder::UpdatedDesc)
    }

    /// The record's position in this order: (milliseconds, id).
    pub fn key(self, record: &MessageRecord) -> (i64, String) {
        let at = if self.by_updated() {
            record.updated_at
        } else {
            record.message.created_at
        };
        (at.timestamp_millis(), record.message.id.as_str().to_owned())
    }
}

impl std::str::FromStr for SortOrder {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SortOrder::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| "must be created_at, -created_at, updated_at or -updated_at".into())
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub channel: Option<Channel>,
    pub to: Option<String>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
    /// Only this service's messages.
    pub service: Option<String>,
    pub provider: Option<String>,
    pub message_type: Option<crate::MessageType>,
    pub priority: Option<crate::Priority>,
    pub reference: Option<String>,
    pub sort: SortOrder,
    /// Keyset paging: only records after this position in `sort` order
    /// (see [`SortOrder::key`]).
    pub after: Option<(i64, String)>,
    pub limit: usize,
}

impl ListFilter {
    pub fn matches(&self, record: &MessageRecord) -> bool {
        let message = &record.message;
        self.status.is_none_or(|s| record.status == s)
            && self.channel.is_none_or(|c| message.channel() == c)
            && self.to.as_ref().is_none_or(|to| &message.to == to)
            && self.created_after.is_none_or(|t| message.created_at >= t)
            && self.created_before.is_none_or(|t| message.created_at < t)
            && self
                .service
                .as_ref()
                .is_none_or(|s| message.service.as_ref() == Some(s))
            && self
                .provider
                .as_ref()
                .is_none_or(|p| record.provider.as_ref() == Some(p))
            && self.message_type.is_none_or(|t| message.message_type == t)
            && self.priority.is_none_or(|p| message.priority == p)
            && self
                .reference
                .as_ref()
                .is_none_or(|r| message.reference.as_ref() == Some(r))
            && self.is_after(record)
    }

    /// Whether `record` comes after the cursor in the list's order.
    pub fn is_after(&self, record: &MessageRecord) -> bool {
        let Some(cursor) = &self.after else {
            return true;
        };
        let key = self.sort.key(record);
        if self.sort.descending() {
            key < *cursor
        } else {
            key > *cursor
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new message; unique on id and on idempotency key.
    async fn create(&self, record: &MessageRecord) -> Result<Created, StoreError>;

    /// [`Store::create`] for a caller that holds the message's JSON
    /// ([`crate::Message::encode`]) already: the accept path, which queues
    /// those bytes too. A store that keeps the message as JSON takes them
    /// instead of encoding the message again; `message_json` must be the
    /// encoding of `record.message`.
    async fn create_encoded(
        &self,
        record: &MessageRecord,
        message_json: &[u8],
    ) -> Result<Created, StoreError> {
        let _ = message_json;
        self.create(record).await
    }

    /// Claims the message for one send attempt (see [`Claim`]); atomic, so two
    /// dispatchers never both get `Claimed` for the same attempt.
    async fn claim(
        &self,
        id: &MessageId,
        now: Timestamp,
        lease_until: Timestamp,
        component: &str,
    ) -> Result<Claim, StoreError>;

    /// [`Store::claim`] for a caller that holds the message already (the
    /// dispatcher has it from the queue): a claimed record comes with
    /// `message`, not the stored copy. A message does not change once
    /// stored (retention clears only finished ones, which are not
    /// claimed), so a store can leave its copy unread and undecoded; the
    /// default claims as usual and swaps the message.
    async fn claim_message(
        &self,
        message: &crate::Message,
        now: Timestamp,
        lease_until: Timestamp,
        component: &str,
    ) -> Result<Claim, StoreError> {
        let mut claim = self.claim(&message.id, now, lease_until, component).await?;
        if let Claim::Claimed { record, .. } = &mut claim {
            record.message = message.clone();
        }
        Ok(claim)
    }

    /// Tells the store that `id` is a message of `channel` (a message never
    /// changes channel), for a caller that knows it before a claim or an
    /// update: a store that keeps channels apart then looks for `id` only in
    /// that channel's. The default ignores it.
    fn remember_channel(&self, id: &MessageId, channel: Channel) {
        let _ = (id, channel);
    }

    async fn update(&self, id: &MessageId, transition: Transition) -> Result<Updated, StoreError>;

    /// [`Store::update`], and when the transition applies, the record as
    /// that write left it, without its trail: what an outcome event is
    /// made of. The default reads it back after the write (another write
    /// may have come in between); a store that can hand it out from the
    /// write itself does.
    async fn update_and_read(
        &self,
        id: &MessageId,
        transition: Transition,
    ) -> Result<(Updated, Option<MessageRecord>), StoreError> {
        let updated = self.update(id, transition).await?;
        let after = match updated {
            Updated::Applied { .. } => self.get_recent(id, 0).await?,
            _ => None,
        };
        Ok((updated, after))
    }

    /// [`Store::update_and_read`], handing out only the [`Brief`] of the
    /// record the write left: for a move whose outcome no reader wants
    /// (its metrics are still counted). The default takes it from the
    /// record; a store that keeps the message's channel with its state
    /// hands it out without decoding the message.
    async fn update_and_brief(
        &self,
        id: &MessageId,
        transition: Transition,
    ) -> Result<(Updated, Option<Brief>), StoreError> {
        let (updated, after) = self.update_and_read(id, transition).await?;
        Ok((updated, after.as_ref().map(Brief::of)))
    }

    /// Removes `record`, as [`Store::create`] stored it, if nothing has
    /// touched it since: no attempt has started (it is still `accepted` or
    /// `queued`) and its trail holds only the events it was created with.
    /// Its idempotency key is freed. For a submit that could not queue the
    /// message: the caller was told it failed, so nothing of it stays. A
    /// repeated submission that answered for the message in the meantime
    /// added an event to its trail, so the message it answered for is kept.
    /// Returns whether it was removed.
    async fn discard(&self, record: &crate::MessageRecord) -> Result<bool, StoreError>;

    /// The id of the stored message holding `message`'s idempotency key (in
    /// its scope), if any: for a queued copy whose record is missing, tells
    /// a submission answered with an earlier message (its copy is never
    /// stored) from one whose record is still being written.
    async fn key_holder(&self, message: &crate::Message) -> Result<Option<MessageId>, StoreError>;

    /// The message with its whole event trail.
    async fn get(&self, id: &MessageId) -> Result<Option<MessageRecord>, StoreError>;

    /// The message with only the last `events` events of its trail (all of
    /// them when it has fewer), oldest first: for readers that need the
    /// latest ones, such as outcome events, on every status change. The
    /// default reads the whole trail; a backend that keeps events apart
    /// reads only the last ones.
    async fn get_recent(
        &self,
        id: &MessageId,
        events: usize,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let mut record = self.get(id).await?;
        if let Some(record) = &mut record {
            let older = record.events.len().saturating_sub(events);
            record.events.drain(..older);
        }
        Ok(record)
    }

    async fn find_by_provider_message_id(
        &self,
        provider: &str,
        provider_message_id: &str,
    ) -> Result<Option<MessageId>, StoreError>;

    /// In `filter.sort` order (newest first by default), at most
    /// `filter.limit`, after `filter.after`; event trails are left empty.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<MessageRecord>, StoreError>;

    /// How many messages are in each status (statuses with none are omitted).
    async fn count_by_status(&self) -> Result<std::collections::HashMap<Status, u64>, StoreError>;

    /// Retention: removes finished messages created before `records_before`
    /// (their idempotency keys are freed) and clears the bodies of finished
    /// messages created before `bodies_before` ([`MessageRecord::redact`]);
    /// at most `limit` of each per call, so call again while a count
    /// reaches it. Messages not yet finished are left alone.
    async fn expire(
        &self,
        records_before: Option<Timestamp>,
        bodies_before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Expired, StoreError>;
}

/// What one [`Store::expire`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    pub removed: usize,
    pub redacted: usize,
}

#[cfg(test)]
mod tests;
