use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::outcome::{OutcomeEvent, OutcomeInterest};
use crate::{Channel, Priority};

/// A named stream of records: one per channel × priority for messages, one for
/// normalised vendor responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Messages(Channel, Priority),
    Responses,
    /// Reports the response handler could not apply after every try: kept
    /// here for an operator instead of blocking the reports behind them.
    ParkedReports,
    /// Every outcome of every message ([`crate::outcome::OutcomeEvent`]),
    /// keyed by message id; read by any number of consumer groups
    /// ([`Queue::group_consumer`]).
    Outcomes,
}

impl Topic {
    /// Every topic MDC uses.
    pub fn all() -> Vec<Topic> {
        let mut all = Vec::new();
        for &channel in Channel::ALL {
            for &priority in Priority::ALL {
                all.push(Topic::Messages(channel, priority));
            }
        }
        all.push(Topic::Responses);
        all.push(Topic::ParkedReports);
        all.push(Topic::Outcomes);
        all
    }

    /// `sms.critical`, `responses`: prefixed by backends that share a namespace.
    pub fn name(&self) -> String {
        match self {
            Topic::Messages(channel, priority) => {
                [channel.as_str(), ".", priority.as_str()].concat()
            }
            Topic::Responses => "responses".to_owned(),
            Topic::ParkedReports => "responses.parked".to_owned(),
            Topic::Outcomes => "outcomes".to_owned(),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Partition counts: per priority for message topics, and for the responses
/// and outcomes topics; and the consumer groups of the outcomes topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLayout {
    pub partitions: HashMap<Priority, u32>,
    pub response_partitions: u32,
    pub outcome_partitions: u32,
    /// Consumer groups of the outcomes topic that a queue keeping records
    /// per group (the embedded one) keeps them for. A broker (Kafka) serves
    /// any group.
    pub outcome_groups: Vec<String>,
}

impl QueueLayout {
    pub fn partitions(&self, topic: Topic) -> u32 {
        match topic {
            Topic::Messages(_, priority) => self.partitions.get(&priority).copied().unwrap_or(1),
            Topic::Responses => self.response_partitions,
            Topic::ParkedReports => 1,
            Topic::Outcomes => self.outcome_partitions,
        }
        .max(1)
    }
}

impl Default for QueueLayout {
    fn default() -> Self {
        Self {
            partitions: Priority::ALL.iter().map(|&p| (p, 4)).collect(),
            response_partitions: 4,
            outcome_partitions: 4,
            outcome_groups: vec![OUTCOME_WEBHOOKS_GROUP.to_owned()],
        }
    }
}

/// The consumer group of MDC's own webhook delivery on the outcomes topic.
pub const OUTCOME_WEBHOOKS_GROUP: &str = "webhooks";

/// Which member of a topic's consumer group a consumer is. Backends with their
/// own group coordination (Kafka) may ignore `index`; the embedded queue gives
/// member `i` the partitions `p` with `p % count == i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerSpec {
    pub index: u32,
    pub count: u32,
}

/// One record handed to a consumer. It is redelivered (after a restart or a
/// rebalance) until acknowledged.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: Topic,
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(#[source] super::BoxError),
    #[error("queue is shutting down")]
    Closed,
    #[error("queue error: {0}")]
    Other(#[source] super::BoxError),
}

#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Appends a record. Returns only once the record is durable; records with
    /// the same key keep their order.
    async fn produce(&self, topic: Topic, key: &str, payload: Vec<u8>) -> Result<(), QueueError>;

    /// Joins `topic`'s consumer group as member `spec`.
    async fn consumer(
        &self,
        topic: Topic,
        spec: ConsumerSpec,
    ) -> Result<Arc<dyn QueueConsumer>, QueueError>;

    /// Joins the consumer group `group` of a topic several groups read
    /// ([`Topic::Outcomes`]): each group sees every record.
    async fn group_consumer(
        &self,
        topic: Topic,
        group: &str,
        spec: ConsumerSpec,
    ) -> Result<Arc<dyn QueueConsumer>, QueueError>;

    /// Whether the queue answers now (for readiness probes).
    async fn ready(&self) -> Result<(), QueueError> {
        Ok(())
    }

    /// Records of `topic` its consumer group has not finished yet (the lag
    /// of a lane), when the backend can tell.
    async fn lag(&self, _topic: Topic) -> Result<Option<u64>, QueueError> {
        Ok(None)
    }

    /// Whether an outcome event like `event` would reach a reader of
    /// [`Topic::Outcomes`]; when not, publishing it is skipped. Yes unless
    /// the queue knows all its readers: the embedded queue, whose only
    /// reader by default is MDC's webhook delivery, asks that reader's
    /// [`OutcomeInterest`] (Kafka's readers include services' own groups).
    fn wants_outcome(&self, _event: &OutcomeEvent) -> bool {
        true
    }

    /// Whether any outcome event at all would reach a reader of
    /// [`Topic::Outcomes`]: false only when [`Queue::wants_outcome`] would
    /// be false for every event, so a publisher need not make them (their
    /// metrics are still counted).
    fn wants_outcomes(&self) -> bool {
        true
    }

    /// Which outcome events MDC's webhook delivery (the group
    /// [`OUTCOME_WEBHOOKS_GROUP`]) would act on, for
    /// [`Queue::wants_outcome`]. Ignored by a queue whose outcomes others
    /// may read.
    fn set_webhook_interest(&self, _interest: Arc<dyn OutcomeInterest>) {}
}

#[async_trait]
pub trait QueueConsumer: Send + Sync {
    /// Waits for records and returns up to `max` of them, in order per
    /// partition. Never returns a record twice to the same consumer; returns an
    /// empty batch when nothing arrived for a while, so callers can check for
    /// shutdown.
    async fn fetch(&self, max: usize) -> Result<Vec<Delivery>, QueueError>;

    /// Marks a record as fully processed: its outcome is stored, so it is not
    /// delivered again.
    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError>;

    /// Stops handing out records until [`resume`](Self::resume): `fetch`
    /// returns empty batches meanwhile (and keeps the consumer's group
    /// membership alive). Used to let a higher-priority lane go first.
    async fn pause(&self) -> Result<(), QueueError>;

    async fn resume(&self) -> Result<(), QueueError>;

    /// Leaves the group after making acknowledgements durable. Records
    /// fetched and not acknowledged go to the next member.
    async fn close(&self) -> Result<(), QueueError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Topics (Kafka's, the embedded queue's tables) carry these names; a
    /// queue written by an earlier version must still be read.
    #[test]
    fn topics_are_named_by_channel_and_priority() {
        assert_eq!(
            Topic::Messages(Channel::Sms, Priority::Critical).name(),
            "sms.critical"
        );
        assert_eq!(
            Topic::Messages(Channel::Email, Priority::Bulk).to_string(),
            "email.bulk"
        );
        assert_eq!(Topic::Responses.name(), "responses");
    }
}
