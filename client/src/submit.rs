use std::sync::Arc;

use mdc_core::ports::{Created, Queue, QueueError, StatusUpdate, Store, StoreError, Topic};
use mdc_core::{mask, Event, Message, MessageId, MessageRecord, Status};
use serde::Serialize;

use crate::validate::{ValidationError, Warning};
use crate::{enrich, ClientConfig, SubmitRequest};

const COMPONENT: &str = "ingest";

/// The answer to a successful submit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Submitted {
    pub id: MessageId,
    pub status: Status,
    pub warnings: Vec<Warning>,
    /// True when the idempotency key matched an earlier submission.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Nothing was queued; the caller may retry (with the same idempotency key).
    #[error("cannot accept messages right now: {0}")]
    Unavailable(String),
}

impl From<StoreError> for SubmitError {
    fn from(e: StoreError) -> Self {
        SubmitError::Unavailable(e.to_string())
    }
}

impl From<QueueError> for SubmitError {
    fn from(e: QueueError) -> Self {
        SubmitError::Unavailable(e.to_string())
    }
}

/// Validates, enriches, records and queues messages.
#[derive(Clone)]
pub struct Submitter {
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    config: Arc<ClientConfig>,
}

impl Submitter {
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn Queue>, config: ClientConfig) -> Self {
        Self {
            store,
            queue,
            config: Arc::new(config),
        }
    }

    /// Returns `Ok` only once the message is durable in its queue.
    ///
    /// The message is first recorded as `accepted` (claiming its idempotency
    /// key), then produced, then marked `queued`. If producing fails the caller
    /// gets an error and a retry with the same key produces the same message.
    pub async fn submit(&self, request: &SubmitRequest) -> Result<Submitted, SubmitError> {
        let (message, warnings) = enrich(request, &self.config)?;
        let record = MessageRecord::new(
            message.clone(),
            Status::Accepted,
            Event::new(COMPONENT, "accepted").status(Status::Accepted),
        );
        match self.store.create(&record).await? {
            Created::New => {
                self.enqueue(&message).await?;
                Ok(Submitted {
                    id: message.id,
                    status: Status::Queued,
                    warnings,
                    duplicate: false,
                })
            }
            Created::Existing(existing) => {
                let mut status = existing.status;
                if status == Status::Accepted {
                    // An earlier submission stopped before reaching the queue.
                    self.enqueue(&existing.message).await?;
                    status = Status::Queued;
                }
                tracing::debug!(message_id = %existing.message.id, "Duplicate submission answered with the existing message");
                Ok(Submitted {
                    id: existing.message.id.clone(),
                    status,
                    warnings,
                    duplicate: true,
                })
            }
        }
    }

    async fn enqueue(&self, message: &Message) -> Result<(), SubmitError> {
        let topic = Topic::Messages(message.channel(), message.priority);
        if let Err(e) = self
            .queue
            .produce(topic, &message.to, message.encode())
            .await
        {
            tracing::warn!(message_id = %message.id, topic = %topic, error = %e, "Could not queue message; caller told to retry");
            return Err(e.into());
        }
        let event = Event::new(COMPONENT, format!("queued on {topic}"));
        // The message is durable in the queue now; a failure to record that is
        // harmless because the dispatcher claims `accepted` messages too.
        if let Err(e) = self
            .store
            .update(&message.id, StatusUpdate::to(Status::Queued, event))
            .await
        {
            tracing::warn!(message_id = %message.id, to = %mask::recipient(&message.to), error = %e, "Queued message but could not record it");
        }
        Ok(())
    }
}
