//! Outcome events: what client services learn about their messages, on the
//! outcomes topic ([`Topic::Outcomes`]) and through webhooks.
//!
//! One event per status a message reaches after acceptance (`sent`,
//! `delivered`, `failed`, `expired`, `rejected`, `cancelled`) and one per
//! recipient suppressed. The event id is derived from what happened (the
//! message and the status it reached; the suppressed recipient), so an
//! event produced twice (a crash between the store write and the produce)
//! carries the same id both times: consumers deduplicate by it.

use serde::{Deserialize, Serialize};

use crate::ports::{Brief, Queue, QueueError, Suppression, Topic};
use crate::{Channel, Event, MessageId, MessageRecord, Status, Timestamp};

/// The version of the event's JSON shape; fields are only ever added.
pub const SCHEMA: &str = "mdc.outcome.v1";

/// The statuses that make an outcome event.
pub fn is_outcome(status: Status) -> bool {
    matches!(
        status,
        Status::Sent
            | Status::Delivered
            | Status::Failed
            | Status::Expired
            | Status::Rejected
            | Status::Cancelled
    )
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeEvent {
    /// [`SCHEMA`].
    pub schema: String,
    /// Stable: the same for the same happening, however often produced.
    pub event_id: String,
    /// `message.<status>` or `suppression.added`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    /// The caller's `reference`, given at submit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The caller's `metadata`, given at submit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The service that submitted the message; its webhooks get the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Why it failed, expired or was suppressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Suppression events: the suppressed recipient, normalised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// When the vendor says it happened, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_at: Option<Timestamp>,
    /// When MDC recorded it.
    pub at: Timestamp,
}

impl OutcomeEvent {
    /// The event for the status `record` is in, or None when that status
    /// makes no outcome (still queued or sending).
    pub fn of_message(record: &MessageRecord, vendor_at: Option<Timestamp>) -> Option<Self> {
        if !is_outcome(record.status) {
            return None;
        }
        let moved = record
            .events
            .iter()
            .rev()
            .find(|e| e.status == Some(record.status));
        let reason = match record.status {
            Status::Sent | Status::Delivered => None,
            _ => moved.map(|e| e.error.clone().unwrap_or_else(|| e.details.clone())),
        };
        let id = record.message.id.as_str();
        Some(Self {
            schema: SCHEMA.to_owned(),
            event_id: format!(
                "evt_{}_{}",
                id.strip_prefix("msg_").unwrap_or(id),
                record.status
            ),
            kind: format!("message.{}", record.status),
            message_id: Some(record.message.id.clone()),
            reference: record.message.reference.clone(),
            metadata: record.message.metadata.clone(),
            service: record.message.service.clone(),
            status: Some(record.status),
            channel: record.message.channel(),
            provider: record.provider.clone(),
            reason,
            recipient: None,
            vendor_at,
            at: moved.map_or(record.updated_at, |e| e.at),
        })
    }

    /// The event for a recipient added to the suppression list.
    pub fn of_suppression(suppression: &Suppression) -> Self {
        let key = format!("{}:{}", suppression.channel, suppression.recipient);
        // FNV-1a: stable across builds and processes.
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Self {
            schema: SCHEMA.to_owned(),
            event_id: format!("evt_sup_{hash:016x}_{}", suppression.at.timestamp_millis()),
            kind: "suppression.added".to_owned(),
            message_id: suppression.message_id.clone(),
            reference: None,
            metadata: None,
            service: None,
            status: None,
            channel: suppression.channel,
            provider: suppression
                .source
                .strip_prefix("report:")
                .map(str::to_owned),
            reason: Some(suppression.reason.clone()),
            recipient: Some(suppression.recipient.clone()),
            vendor_at: None,
            at: suppression.at,
        }
    }

    /// Puts the event on the outcomes topic, keyed by its message (or
    /// recipient), so one message's events stay in order; not when the
    /// queue knows that no reader wants it ([`Queue::wants_outcome`]).
    pub async fn publish(&self, queue: &dyn Queue) -> Result<(), QueueError> {
        if !queue.wants_outcome(self) {
            metrics::counter!("mdc_outcome_events_unwritten_total").increment(1);
            return Ok(());
        }
        let key = match (&self.message_id, &self.recipient) {
            (Some(id), _) => id.as_str().to_owned(),
            (None, Some(recipient)) => recipient.clone(),
            (None, None) => self.event_id.clone(),
        };
        let payload = serde_json::to_vec(self).map_err(|e| QueueError::Other(e.into()))?;
        queue.produce(Topic::Outcomes, &key, payload).await
    }
}

/// Which outcome events a reader of the outcomes topic would act on (MDC's
/// webhook delivery: those some endpoint subscribed to).
pub trait OutcomeInterest: Send + Sync {
    /// False only when the reader is known to drop `event` unused.
    fn wants(&self, event: &OutcomeEvent) -> bool;

    /// False only when the reader is known to drop every event unused.
    fn wants_any(&self) -> bool {
        true
    }
}

/// Why an outcome could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Events read to find the one that moved a message to its status.
const RECENT_EVENTS: usize = 2;

/// Publishes the outcome of the status message `id` is in now, if that
/// status makes one; returns whether it did. Called after a store write
/// that moved the message, and again whenever the work that made the write
/// is redone (a redelivered record finding the message already moved): the
/// event id is the same, so nothing is lost and repeats are recognisable.
pub async fn publish_current(
    store: &dyn crate::ports::Store,
    queue: &dyn Queue,
    id: &MessageId,
    vendor_at: Option<Timestamp>,
) -> Result<bool, PublishError> {
    let Some(mut record) = store.get_recent(id, RECENT_EVENTS).await? else {
        return Ok(false);
    };
    // The event that moved the message to its status is nearly always one
    // of the last few; the whole trail is read only when it is not.
    if is_outcome(record.status)
        && !record
            .events
            .iter()
            .any(|e| e.status == Some(record.status))
    {
        let Some(whole) = store.get(id).await? else {
            return Ok(false);
        };
        record = whole;
    }
    Box::pin(publish_record(queue, &record, vendor_at)).await
}

/// Publishes the outcome of the move the caller has just stored with
/// `event` (its status set), made of `after`, the record as the write
/// handed it out, or else of the message and its state read now (not its
/// trail: the event that moved it is known). When that record shows a
/// later change, publishes the status the message is in now
/// ([`publish_current`]).
pub async fn publish_moved(
    store: &dyn crate::ports::Store,
    queue: &dyn Queue,
    id: &MessageId,
    event: &Event,
    vendor_at: Option<Timestamp>,
    after: Option<MessageRecord>,
) -> Result<bool, PublishError> {
    let after = match after {
        Some(record) => Some(record),
        None => store.get_recent(id, 0).await?,
    };
    let Some(mut record) = after else {
        return Ok(false);
    };
    // Backends keep times to the millisecond or finer.
    let unchanged = event.status == Some(record.status)
        && record.updated_at.timestamp_millis() == event.at.timestamp_millis();
    if !unchanged {
        return Box::pin(publish_current(store, queue, id, vendor_at)).await;
    }
    record.events.push(event.clone());
    publish_record(queue, &record, vendor_at).await
}

/// Publishes the outcome of `record`, if its status makes one: `record`
/// is the message as stored now, with at least the events up to the one
/// that moved it to its status. When no reader wants any outcome
/// ([`Queue::wants_outcomes`]) the event is not made; it is counted all
/// the same.
pub async fn publish_record(
    queue: &dyn Queue,
    record: &MessageRecord,
    vendor_at: Option<Timestamp>,
) -> Result<bool, PublishError> {
    if !is_outcome(record.status) {
        return Ok(false);
    }
    if queue.wants_outcomes() {
        if let Some(event) = OutcomeEvent::of_message(record, vendor_at) {
            // Boxed, with the event: callers' futures stay small (every
            // dispatch and report holds one), so moving them stays cheap.
            Box::pin(async move { event.publish(queue).await }).await?;
        }
    } else {
        metrics::counter!("mdc_outcome_events_unwritten_total").increment(1);
    }
    count(&Brief::of(record));
    Ok(true)
}

/// [`publish_moved`] when no reader wants any outcome
/// ([`Queue::wants_outcomes`]): counts the outcome of the move the caller
/// has just stored with an event of `status` at `at`, from `brief`, what
/// the write left ([`crate::ports::Store::update_and_brief`]). When that
/// shows a later change, or a reader wants outcomes by now, publishes the
/// status the message is in now ([`publish_current`]).
pub async fn count_moved(
    store: &dyn crate::ports::Store,
    queue: &dyn Queue,
    id: &MessageId,
    status: Status,
    at: Timestamp,
    vendor_at: Option<Timestamp>,
    brief: Option<Brief>,
) -> Result<bool, PublishError> {
    let Some(brief) = brief else {
        return Ok(false);
    };
    // As in publish_moved; and a reader that came to want outcomes while
    // the write was under way (an endpoint created meanwhile) gets this
    // move's event, made of the record as stored now.
    let unchanged =
        brief.status == status && brief.updated_at.timestamp_millis() == at.timestamp_millis();
    if !unchanged || queue.wants_outcomes() {
        return Box::pin(publish_current(store, queue, id, vendor_at)).await;
    }
    if !is_outcome(status) {
        return Ok(false);
    }
    metrics::counter!("mdc_outcome_events_unwritten_total").increment(1);
    count(&brief);
    Ok(true)
}

/// The metrics of an outcome: by channel and status, and a delivered
/// message's time from its creation.
fn count(brief: &Brief) {
    let channel = brief.channel.as_str();
    metrics::counter!("mdc_outcomes_total", "channel" => channel, "status" => brief.status.as_str())
        .increment(1);
    if brief.status == Status::Delivered {
        let took = (brief.updated_at - brief.created_at)
            .to_std()
            .unwrap_or_default();
        metrics::histogram!("mdc_time_to_delivered_seconds", "channel" => channel)
            .record(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Message};

    fn record(status: Status) -> MessageRecord {
        let message: Message = serde_json::from_value(serde_json::json!({
            "id": "msg_01KAAAAAAAAAAAAAAAAAAAAAAA", "priority": "normal", "type": "transactional",
            "to": "+14155550123", "content": {"channel": "sms", "body": "hi", "encoding": "gsm7", "segments": 1},
            "idempotency_key": "k", "created_at": "2026-12-01T10:00:00Z", "deadline": "2026-12-02T10:00:00Z",
            "reference": "order-7", "metadata": {"tenant": "acme"}
        }))
        .expect("message");
        let mut record =
            MessageRecord::new(message, Status::Queued, Event::new("ingest", "queued"));
        record.status = status;
        record.provider = Some("kaleyra".into());
        record.events.push(
            Event::new("response-handler", "failed")
                .status(status)
                .error("blocked"),
        );
        record
    }

    #[test]
    fn an_event_carries_the_callers_reference_and_a_stable_id() {
        let failed = OutcomeEvent::of_message(&record(Status::Failed), None).expect("outcome");
        assert_eq!(failed.event_id, "evt_01KAAAAAAAAAAAAAAAAAAAAAAA_failed");
        assert_eq!(failed.kind, "message.failed");
        assert_eq!(failed.reference.as_deref(), Some("order-7"));
        assert_eq!(failed.reason.as_deref(), Some("blocked"));
        assert_eq!(
            OutcomeEvent::of_message(&record(Status::Failed), None)
                .expect("outcome")
                .event_id,
            failed.event_id,
            "the same happening, the same id"
        );
        assert!(OutcomeEvent::of_message(&record(Status::Sending), None).is_none());
        let delivered =
            OutcomeEvent::of_message(&record(Status::Delivered), None).expect("outcome");
        assert_eq!(delivered.reason, None);
        let json = serde_json::to_value(&delivered).expect("json");
        assert_eq!(json["schema"], SCHEMA);
        assert_eq!(json["type"], "message.delivered");
        assert_eq!(json["metadata"]["tenant"], "acme");
    }
}
