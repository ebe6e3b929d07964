//! The accept path of `POST /v1/messages`: validate, enrich, record, queue.

use std::sync::Arc;

use mdc_client::validate::ValidationError;
use mdc_client::{enrich, ClientConfig, SubmitError, SubmitRequest, Submitted};
use mdc_core::ports::{Created, Queue, Store, SuppressionList, Topic, Transition, Updated};
use mdc_core::{mask, Event, Message, MessageId, MessageRecord, Status};

const COMPONENT: &str = "ingest";
/// Rounds of [`Submitter::submit_as`] before giving up on a key whose
/// holder keeps being removed.
const ACCEPT_ROUNDS: usize = 3;

/// Validates, enriches, records and queues messages.
#[derive(Clone)]
pub struct Submitter {
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    config: Arc<ClientConfig>,
    suppressions: Option<Arc<dyn SuppressionList>>,
}

impl Submitter {
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn Queue>, config: ClientConfig) -> Self {
        Self {
            store,
            queue,
            config: Arc::new(config),
            suppressions: None,
        }
    }

    /// Refuses recipients on `list` (422, rule `suppressed`).
    pub fn with_suppressions(mut self, list: Arc<dyn SuppressionList>) -> Self {
        self.suppressions = Some(list);
        self
    }

    /// Returns `Ok` only once the message is durable in its queue.
    ///
    /// The message is recorded as `queued` and produced, at the same time:
    /// the dispatcher looks for a record that is not stored yet for a while
    /// ([`mdc_dispatcher::NOT_STORED_GRACE`]) before it drops the queued
    /// copy, which is all that is left of a message whose record could not
    /// be written (the caller gets an error). When the idempotency key
    /// turns out to be an earlier message's, that message is answered (or
    /// the reuse refused) and the dispatcher drops the new copy at once, as
    /// its key has another holder. If producing fails the caller gets an
    /// error and the record is removed again (its idempotency key freed),
    /// so nothing half-written stays, unless a repeated submission has
    /// answered for it meanwhile: that one queued it again, and it stays.
    /// Producing a message twice is harmless: the dispatcher's claim lets
    /// only one copy through.
    pub async fn submit(&self, request: &SubmitRequest) -> Result<Submitted, SubmitError> {
        self.submit_as(request, None).await
    }

    /// As [`Submitter::submit`], for `service`: the message records it, and
    /// its idempotency key is that service's own. A key reused with a
    /// different message is refused ([`SubmitError::Conflict`]).
    pub async fn submit_as(
        &self,
        request: &SubmitRequest,
        service: Option<&str>,
    ) -> Result<Submitted, SubmitError> {
        let (mut message, warnings) = enrich(request, &self.config)?;
        message.service = service.map(str::to_owned);
        if let Some(list) = &self.suppressions {
            if let Some(entry) = list.get(message.channel(), &message.to).await? {
                return Err(ValidationError::new(
                    "to",
                    "suppressed",
                    format!(
                        "this recipient is suppressed on {} since {}: {}; remove it with DELETE /v1/suppressions/{}/<recipient> to send again",
                        entry.channel,
                        entry.at.to_rfc3339(),
                        mdc_core::mask::scrub(&entry.reason),
                        entry.channel
                    ),
                )
                .into());
            }
        }
        let record = MessageRecord::accepted(message.clone(), COMPONENT, "accepted");
        // Stored and queued at the same time (see above), from one JSON
        // encoding of the message.
        let json = message.encode();
        // Again only when the earlier message holding its key was removed
        // between being found and being answered for (its own submission
        // could not queue it); a new round makes this one the key's holder.
        for _ in 0..ACCEPT_ROUNDS {
            if let Some((id, status, duplicate)) = self.accept(&record, &json).await? {
                return Ok(Submitted {
                    id,
                    status,
                    warnings,
                    duplicate,
                });
            }
        }
        Err(SubmitError::Unavailable(
            "the message holding this idempotency key kept being removed; try again".into(),
        ))
    }

    /// One round of [`Submitter::submit_as`]: the id, status and whether it
    /// is an earlier message's, or `None` when the earlier message holding
    /// the key is gone.
    async fn accept(
        &self,
        record: &MessageRecord,
        json: &[u8],
    ) -> Result<Option<(MessageId, Status, bool)>, SubmitError> {
        let message = &record.message;
        let (created, queued) = tokio::join!(
            self.store.create_encoded(record, json),
            self.produce_encoded(message, json.to_vec())
        );
        let created = created?;
        if let Err(e) = queued {
            if created == Created::New {
                return Err(self.unqueued(record, e).await);
            }
        }
        let existing = match created {
            Created::New => {
                message.count_accepted();
                return Ok(Some((message.id.clone(), Status::Queued, false)));
            }
            Created::Existing(existing) => existing,
        };
        if !existing.message.same_request(message) {
            return Err(SubmitError::Conflict(ValidationError::new(
                "idempotency_key",
                "reused",
                format!(
                    "this idempotency key was used for another message ({}); use a new key for a different message",
                    existing.message.id
                ),
            )));
        }
        // Not yet picked up: an earlier submission may have failed to reach
        // the queue, so produce it (again) before answering.
        let unsent =
            matches!(existing.status, Status::Accepted | Status::Queued) && existing.attempts == 0;
        let mut status = existing.status;
        if unsent {
            match self.requeue(&existing.message, existing.status).await? {
                Some(now) => status = now,
                None => return Ok(None),
            }
        }
        tracing::debug!(message_id = %existing.message.id, "Duplicate submission answered with the existing message");
        Ok(Some((existing.message.id, status, true)))
    }

    /// Produces an earlier, unsent `message` again for a repeated
    /// submission that is about to answer for it, and notes that on its
    /// trail: its first submission, should it fail to queue it, then keeps
    /// it rather than removing it ([`Store::discard`]). Returns its status
    /// now (`read` is what the submission read), or `None` when it was
    /// removed before that. A message picked up
    /// meanwhile gets no note (its trail goes on from its attempt); the
    /// second copy on the queue finds it claimed and is dropped.
    ///
    /// A failure to produce is this submission's error; the message is left
    /// as it is, as it is the first submission's: that one's own produce may
    /// be succeeding, and if it fails it removes the message itself. A
    /// message left `queued` off the queue by an earlier failure is queued
    /// by a retry with the key, or by the reconciler.
    async fn requeue(
        &self,
        message: &Message,
        read: Status,
    ) -> Result<Option<Status>, SubmitError> {
        if let Err(e) = self.produce(message).await {
            let topic = Topic::Messages(message.channel(), message.priority);
            tracing::warn!(message_id = %message.id, to = %mask::recipient(&message.to), %topic, error = %e, "Could not queue a repeated submission's message again; caller told to retry");
            return Err(e.into());
        }
        let event = Event::new(
            COMPONENT,
            "submitted again with its idempotency key; queued again",
        );
        let noted = self
            .store
            .update(&message.id, Transition::NotedWhileUnsent { event })
            .await?;
        Ok(match noted {
            Updated::NotFound => None,
            Updated::Applied { status } | Updated::Ignored { current: status } => Some(status),
            // Not answers to a note: the message is there, as it was read.
            Updated::Mismatched | Updated::NotSentYet => Some(read),
        })
    }

    /// Produces `message` to its lane.
    async fn produce(&self, message: &Message) -> Result<(), mdc_core::ports::QueueError> {
        self.produce_encoded(message, message.encode()).await
    }

    /// Produces `message`, encoded as `json`, to its lane.
    async fn produce_encoded(
        &self,
        message: &Message,
        json: Vec<u8>,
    ) -> Result<(), mdc_core::ports::QueueError> {
        let topic = Topic::Messages(message.channel(), message.priority);
        self.queue.produce(topic, &message.to, json).await
    }

    /// After `message` was stored but could not be queued: removes it again
    /// (or notes the failure on it) and returns the caller's error.
    async fn unqueued(
        &self,
        record: &MessageRecord,
        e: mdc_core::ports::QueueError,
    ) -> SubmitError {
        let message = &record.message;
        let topic = Topic::Messages(message.channel(), message.priority);
        tracing::warn!(message_id = %message.id, to = %mask::recipient(&message.to), %topic, error = %e, "Could not queue message; caller told to retry");
        // The caller hears that it failed, so nothing of it stays: a retry
        // (with the same idempotency key or without) starts afresh. Should the
        // record have reached the queue after all, the dispatcher finds no
        // message and drops it. The exception: a repeated submission with the
        // key queued it again and answered 202 meanwhile; it is kept (and
        // sent), and a retry with the key gets that answer too.
        match self.store.discard(record).await {
            // Removed, or kept as above.
            Ok(_) => {}
            Err(discard) => {
                // Left `queued`: a retry with the same key queues it again.
                tracing::warn!(message_id = %message.id, error = %discard, "Could not remove the unqueued message");
                let event = Event::new(
                    COMPONENT,
                    format!("could not be queued on {topic}; the caller was told to retry"),
                )
                .error(e.to_string());
                if let Err(e) = self
                    .store
                    .update(&message.id, Transition::event(event))
                    .await
                {
                    tracing::warn!(message_id = %message.id, error = %e, "Could not record the failure to queue");
                }
            }
        }
        e.into()
    }
}
