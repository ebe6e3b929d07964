//! The rules of a stored message's moves: the [`Transition`]s a store
//! applies and how a read-modify-write backend applies them to a record.

use super::{Claim, Updated, Verify};
use crate::{Event, MessageRecord, Status, Timestamp};

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
    /// Only an event, and only while no attempt has picked the message up
    /// (`accepted` or `queued`, no attempt): a repeated submission's note
    /// that it queued the message again. [`Updated::Ignored`] otherwise,
    /// with nothing added.
    NotedWhileUnsent { event: Event },
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
    /// applies (none for a lease extension). A copy of the whole transition:
    /// to prepare the event's stored form before the write, lend it with
    /// [`Transition::prepare_event`].
    pub fn event_when_applied(&self) -> Option<Event> {
        self.clone().prepare_event(Event::clone)
    }

    /// What `prepare` makes of the event [`Transition::event_when_applied`]
    /// names, lent rather than cloned: its vendor payload can be large. The
    /// transition is left as it was.
    pub fn prepare_event<T>(&mut self, prepare: impl FnOnce(&Event) -> T) -> Option<T> {
        let status = self.moves_to();
        let event = self.carried_mut()?;
        let own = event.status;
        if status.is_some() {
            event.status = status;
        }
        let prepared = prepare(event);
        event.status = own;
        Some(prepared)
    }

    /// The status the message moves to when this applies; none for a
    /// transition that moves no status.
    fn moves_to(&self) -> Option<Status> {
        match self {
            Self::Sent { .. } | Self::SentUnconfirmed { .. } => Some(Status::Sent),
            Self::AttemptFailed { .. } => Some(Status::Sending),
            Self::Ended { status, .. }
            | Self::Reported { status, .. }
            | Self::Moved { status, .. } => Some(*status),
            Self::LeaseExtended { .. }
            | Self::VendorNoted { .. }
            | Self::Noted { .. }
            | Self::NotedWhileUnsent { .. } => None,
        }
    }

    /// The event the transition carries, as given.
    fn carried_mut(&mut self) -> Option<&mut Event> {
        match self {
            Self::Sent { event, .. }
            | Self::SentUnconfirmed { event, .. }
            | Self::AttemptFailed { event, .. }
            | Self::Ended { event, .. }
            | Self::Reported { event, .. }
            | Self::VendorNoted { event, .. }
            | Self::Moved { event, .. }
            | Self::Noted { event }
            | Self::NotedWhileUnsent { event } => Some(event),
            Self::LeaseExtended { .. } => None,
        }
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
    /// Applies only while no attempt has picked the message up.
    only_unsent: bool,
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
            only_unsent: false,
        }
    }
}

impl From<Transition> for Change {
    fn from(transition: Transition) -> Self {
        // The one place each transition's status is named.
        let status = transition.moves_to();
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
                ..Change::new(status, event)
            },
            Transition::SentUnconfirmed {
                attempt,
                provider,
                event,
            } => Change {
                expect_attempt: Some(attempt),
                provider: Some(provider),
                verify_before_send: Some(false),
                ..Change::new(status, event)
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
                ..Change::new(status, event)
            },
            Transition::Ended {
                attempt,
                provider,
                event,
                ..
            } => Change {
                expect_attempt: Some(attempt),
                provider,
                end_attempt: true,
                ..Change::new(status, event)
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
                only_unsent: false,
            },
            Transition::Reported {
                provider,
                provider_message_id,
                event,
                ..
            } => Change {
                reported_by: Some((provider.clone(), provider_message_id.clone())),
                provider: Some(provider),
                provider_message_id: Some(provider_message_id),
                ..Change::new(status, event)
            },
            Transition::VendorNoted {
                provider,
                provider_message_id,
                event,
            } => Change {
                reported_by: Some((provider.clone(), provider_message_id.clone())),
                provider: Some(provider),
                provider_message_id: Some(provider_message_id),
                ..Change::new(status, event)
            },
            Transition::Moved { event, .. } => Change::new(status, event),
            Transition::Noted { event } => Change::new(status, event),
            Transition::NotedWhileUnsent { event } => Change {
                only_unsent: true,
                ..Change::new(status, event)
            },
        }
    }
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
    let details = ["attempt ", itoa::Buffer::new().format(attempt), " started"].concat();
    let mut event = Event::new(component, details).status(Status::Sending);
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
    let unsent = matches!(record.status, Status::Accepted | Status::Queued) && record.attempts == 0;
    if update.only_unsent && !unsent {
        return Updated::Ignored {
            current: record.status,
        };
    }
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
