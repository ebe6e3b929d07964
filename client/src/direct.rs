//! The direct transport: produce to MDC's priority topics on Kafka.

use mdc_core::ports::{Queue, QueueError, QueueLayout, Topic};
use mdc_core::Message;
use mdc_kafka::{KafkaConfig, KafkaQueue};

pub(crate) struct Direct {
    queue: KafkaQueue,
}

impl Direct {
    /// Connects and checks that MDC's topics exist (the client never
    /// creates them: that is MDC's `mdc topics create`).
    pub(crate) async fn connect(mut kafka: KafkaConfig) -> Result<Self, QueueError> {
        kafka.create_topics = false;
        Ok(Self {
            queue: KafkaQueue::connect(kafka, QueueLayout::default()).await?,
        })
    }

    /// Returns once the brokers acknowledged the record (`acks=all`,
    /// idempotent producer): from then on it is MDC's to deliver.
    pub(crate) async fn produce(&self, message: &Message) -> Result<(), QueueError> {
        let topic = Topic::Messages(message.channel(), message.priority);
        self.queue
            .produce(topic, &message.to, message.encode())
            .await
    }
}
