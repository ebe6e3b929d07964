use async_trait::async_trait;

use crate::{Channel, Event, MessageId, MessageRecord, Status, Timestamp};

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

/// A move of a stored message, named for what happened. Every move but
/// [`Transition::LeaseExtended`] appends its event to the trail, even when
/// the status cannot move (a late `sent` after `delivered` is kept as an
/// event so support sees it). Moves that belong to one send attempt apply
/// only while that attempt is the message's latest ([`Claim::Claimed`]
/// hands out the attempt number).
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The vendor accepted attempt `attempt` and gave its id for the message.
    Sent {
        attempt: u32,
        provider: String,
        provider_message_id: String,
        event: Event,
    },
    /// An earlier attempt may have reached `provider`, which cannot be asked
    /// and reports back: the message counts as sent, unconfirmed (no vendor
    /// id yet), and the vendor's report, matched by MDC's id, settles it.
    SentUnconfirmed {
        attempt: u32,
        provider: String,
        event: Event,
    },
    /// Attempt `attempt` failed in a way another attempt can fix; the next
    /// one is due at `next_attempt_at`. With `verify_first`, the failed
    /// attempt may have reached `provider`: ask it before sending again.
    AttemptFailed {
        attempt: u32,
        provider: String,
        next_attempt_at: Timestamp,
        verify_first: bool,
        event: Event,
    },
    /// Attempt `attempt` ended the message for good: `failed` (refused,
    /// retries used up, no route) or `expired` (the deadline passed).
    Ended {
        attempt: u32,
        status: Status,
        provider: Option<String>,
        event: Event,
    },
    /// The attempt is still in flight: its lease now runs until `until`.
    LeaseExtended { attempt: u32, until: Timestamp },
    /// A vendor reported on the message (`delivered`, `failed`). It applies
    /// only to a message sent through `provider` under
    /// `provider_message_id` ([`Updated::Mismatched`] otherwise); one whose
    /// `sent` is not stored yet gets [`Updated::NotSentYet`], to be applied
    /// again once it is.
    Reported {
        status: Status,
        provider: String,
        provider_message_id: String,
        event: Event,
    },
    /// A vendor observed something that moves no status (a complaint, a
    /// delay): an event, under the same check as [`Transition::Reported`].
    VendorNoted {
        provider: String,
        provider_message_id: String,
        event: Event,
    },
    /// A move outside any attempt: expired before it was claimed, cancelled
    /// by support, ...
    Moved { status: Status, event: Event },
    /// Only an event on the trail.
    Noted { event: Event },
}

impl Transition {
    /// A move outside any attempt.
    pub fn to(status: Status, event: Event) -> Self {
        Self::Moved { status, event }
    }

    /// Only an event.
    pub fn event(event: Event) -> Self {
        Self::Noted { event }
    }

    /// The event [`apply_update`] appends to the trail when this transition
    /// applies (none for a lease extension): a backend may prepare its
    /// stored form before the write.
    pub fn event_when_applied(&self) -> Option<Event> {
        Change::from(self.clone()).event
    }
}

/// What a [`Transition`] asks of the record, field by field.
struct Change {
    status: Option<Status>,
    event: Option<Event>,
    expect_attempt: Option<u32>,
    provider: Option<String>,
    provider_message_id: Option<String>,
    /// Ends the in-flight attempt (clears its lease).
    end_attempt: bool,
    next_attempt_at: Option<Timestamp>,
    verify_before_send: Option<bool>,
    extend_lease: Option<Timestamp>,
    /// A vendor report's provider and id, which must be the message's.
    reported_by: Option<(String, String)>,
}

impl Change {
    fn new(status: Option<Status>, event: Event) -> Self {
        Self {
            event: Some(match status {
                Some(status) => event.status(status),
                None => event,
            }),
            status,
            expect_attempt: None,
            provider: None,
            provider_message_id: None,
            end_attempt: false,
            next_attempt_at: None,
            verify_before_send: None,
            extend_lease: None,
            reported_by: None,
        }
    }
}

impl From<Transition> for Change {
    fn from(transition: Transition) -> Self {
        match transition {
            Transition::Sent {
                attempt,
                provider,
                provider_message_id,
                event,
            } => Change {
                expect_attempt: Some(attempt),
                provider: Some(provider),
                provider_message_id: Some(provider_message_id),
                verify_before_send: Some(false),
                ..Change::new(Some(Status::Sent), event)
            },
            Transition::SentUnconfirmed {
                attempt,
                provider,
                event,
            } => Change {
                expect_attempt: Some(attempt),
                provider: Some(provider),
                verify_before_send: Some(false),
                ..Change::new(Some(Status::Sent), event)
            },
            Transition::AttemptFailed {
                attempt,
                provider,
                next_attempt_at,
                verify_first,
                event,
            } => Change {
                expect_attempt: Some(attempt),
                provider: Some(provider),
                end_attempt: true,
                next_attempt_at: Some(next_attempt_at),
                verify_before_send: Some(verify_first),
                ..Change::new(Some(Status::Sending), event)
            },
            Transition::Ended {
                attempt,
                status,
                provider,
                event,
            } => Change {
                expect_attempt: Some(attempt),
                provider,
                end_attempt: true,
                ..Change::new(Some(status), event)
            },
            Transition::LeaseExtended { attempt, until } => Change {
                status: None,
                event: None,
                expect_attempt: Some(attempt),
                provider: None,
                provider_message_id: None,
                end_attempt: false,
                next_attempt_at: None,
                verify_before_send: None,
                extend_lease: Some(until),
                reported_by: None,
            },
            Transition::Reported {
                status,
                provider,
                provider_message_id,
                event,
            } => Change {
                reported_by: Some((provider.clone(), provider_message_id.clone())),
                provider: Some(provider),
                provider_message_id: Some(provider_message_id),
                ..Change::new(Some(status), event)
            },
            Transition::VendorNoted {
                provider,
                provider_message_id,
                event,
            } => Change {
                reported_by: Some((provider.clone(), provider_message_id.clone())),
                provider: Some(provider),
                provider_message_id: Some(provider_message_id),
                ..Change::new(None, event)
            },
            Transition::Moved { status, event } => Change::new(Some(status), event),
            Transition::Noted { event } => Change::new(None, event),
        }
    }
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

/// The claim rule, for backends that read-modify-write under a lock or
/// transaction. Mutates `record` when it returns `Claimed`.
pub fn apply_claim(
    record: &mut MessageRecord,
    now: Timestamp,
    lease_until: Timestamp,
    component: &str,
) -> Claim {
    // Another process's clock may run slightly ahead of ours.
    let slack = chrono::Duration::seconds(1);
    let verify = match record.status {
        Status::Accepted | Status::Queued => Verify::No,
        Status::Sending => match (record.lease_until, record.next_attempt_at) {
            (Some(lease), _) if lease > now => return Claim::Busy { lease_until: lease },
            // The previous sender died mid-attempt: it may have reached a vendor.
            (Some(_), _) => Verify::Any,
            (None, Some(at)) if at > now + slack => return Claim::NotDue { at },
            (None, _) if record.verify_before_send => Verify::Provider,
            (None, _) => Verify::No,
        },
        status => return Claim::Finished { status },
    };
    let verify_first = verify.first();
    record.attempts += 1;
    record.status = Status::Sending;
    record.lease_until = Some(lease_until);
    record.next_attempt_at = None;
    record.verify_before_send = verify_first;
    record.updated_at = now;
    record
        .events
        .push(claim_event(record.attempts, now, component, verify_first));
    Claim::Claimed {
        record: Box::new(record.clone()),
        verify,
    }
}

/// The event a claim appends when it starts attempt `attempt` at `now`
/// ([`apply_claim`]); `verify_first` when the attempt asks the vendor
/// before sending.
pub fn claim_event(attempt: u32, now: Timestamp, component: &str, verify_first: bool) -> Event {
    let mut event =
        Event::new(component, format!("attempt {attempt} started")).status(Status::Sending);
    event.at = now;
    if verify_first {
        event
            .details
            .push_str("; an earlier attempt may have reached the vendor, verifying first");
    }
    event
}

/// The update rule, shared by read-modify-write backends.
pub fn apply_update(record: &mut MessageRecord, transition: Transition) -> Updated {
    let update = Change::from(transition);
    if let Some((provider, id)) = &update.reported_by {
        match (&record.provider, &record.provider_message_id) {
            (Some(p), Some(i)) if p == provider && i == id => {}
            // Sent unconfirmed through this provider: found by the MDC id
            // the vendor echoed; the report brings the vendor's id.
            (Some(p), None) if p == provider && record.status == Status::Sent => {}
            // No attempt is in flight (the last one ended without knowing
            // whether the vendor took the message, or its dispatcher died
            // and the lease ran out): the vendor's outcome, found by the MDC
            // id it echoes, shows that it has the message and settles it.
            // Waiting would leave it to a retry that, after a crash, comes
            // only once the lease has run out or with the reconciler.
            (_, None)
                if record.status == Status::Sending
                    && update.status.is_some()
                    && !attempt_in_flight(record, update.event.as_ref()) => {}
            // An attempt in flight: its `sent` is not stored yet.
            (_, None) if record.status == Status::Sending => return Updated::NotSentYet,
            _ => return Updated::Mismatched,
        }
    }
    let attempt_matches = update.expect_attempt.is_none_or(|n| n == record.attempts);
    if let Some(until) = update.extend_lease {
        // Only a lease still held by this attempt grows; one that ended or
        // was taken over stays as it is.
        return match record.lease_until {
            Some(lease) if attempt_matches && record.status == Status::Sending => {
                if until > lease {
                    record.lease_until = Some(until);
                }
                Updated::Applied {
                    status: record.status,
                }
            }
            _ => Updated::Ignored {
                current: record.status,
            },
        };
    }
    // A deadline seen outside any attempt is left to an attempt whenever
    // one may have reached a vendor: the attempt in flight (another copy of
    // the lane record saw the deadline), or, after one that died or ended
    // ambiguous, a claimed attempt that asks the vendor first and sends
    // nothing; expired blind, the message would ignore the vendor's report.
    let taken_from_an_attempt = update.expect_attempt.is_none()
        && update.reported_by.is_none()
        && record.status == Status::Sending
        && update.status == Some(Status::Expired)
        && (record.lease_until.is_some() || record.verify_before_send);
    let allowed = attempt_matches
        && !taken_from_an_attempt
        && update
            .status
            .is_none_or(|s| s == record.status && !s.is_terminal() || record.status.can_move_to(s));
    let Some(mut event) = update.event else {
        return Updated::Ignored {
            current: record.status,
        };
    };
    if !allowed {
        if attempt_matches {
            // A report overtook this attempt's own outcome: the status stays,
            // but which vendor has the message, and under what id, is kept.
            if record.provider_message_id.is_none() && update.provider_message_id.is_some() {
                record.provider = update.provider.or(record.provider.take());
                record.provider_message_id = update.provider_message_id;
            }
            if update.end_attempt || update.status == Some(Status::Sent) {
                record.lease_until = None;
            }
        }
        event.status = None;
        event.details = format!("{} (ignored: message is {})", event.details, record.status);
        push_event(record, event);
        return Updated::Ignored {
            current: record.status,
        };
    }
    if let Some(status) = update.status {
        record.status = status;
    }
    if update.provider.is_some() {
        record.provider = update.provider;
    }
    if update.provider_message_id.is_some() {
        record.provider_message_id = update.provider_message_id;
    }
    if update.end_attempt || record.status.is_terminal() || record.status == Status::Sent {
        record.lease_until = None;
    }
    if let Some(at) = update.next_attempt_at {
        record.next_attempt_at = Some(at);
    }
    if let Some(verify) = update.verify_before_send {
        record.verify_before_send = verify;
    }
    record.updated_at = event.at;
    push_event(record, event);
    Updated::Applied {
        status: record.status,
    }
}

/// Whether an attempt holds the message's lease at the time of `event`.
fn attempt_in_flight(record: &MessageRecord, event: Option<&Event>) -> bool {
    match (record.lease_until, event) {
        (Some(lease), Some(event)) => lease > event.at,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

fn push_event(record: &mut MessageRecord, event: Event) {
    record.events.push(event);
}

#[cfg(test)]
mod tests;
