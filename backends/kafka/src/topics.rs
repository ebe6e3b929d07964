//! Creating the topics, explicitly and idempotently, through the admin API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mdc_core::ports::{QueueError, QueueLayout, Topic};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::Client;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::util::Timeout;

use crate::{unavailable, KafkaConfig, Logging};

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`create_topics`] did with one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created {
        name: String,
        partitions: u32,
    },
    /// It was there already, with this many partitions (partitions are
    /// never added or removed by MDC: that would move recipients between
    /// partitions and break their order).
    Existed {
        name: String,
        partitions: u32,
        configured: u32,
    },
}

impl std::fmt::Display for TopicOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicOutcome::Created { name, partitions } => {
                write!(f, "{name}: created with {partitions} partitions")
            }
            TopicOutcome::Existed {
                name,
                partitions,
                configured,
            } if partitions == configured => {
                write!(f, "{name}: exists with {partitions} partitions")
            }
            TopicOutcome::Existed {
                name,
                partitions,
                configured,
            } => write!(
                f,
                "{name}: exists with {partitions} partitions ({configured} configured; left as it is)"
            ),
        }
    }
}

/// Creates every MDC topic that does not exist yet.
pub async fn create_topics(
    config: &KafkaConfig,
    layout: &QueueLayout,
) -> Result<Vec<TopicOutcome>, QueueError> {
    config.validate().map_err(|e| QueueError::Other(e.into()))?;
    let admin: Arc<AdminClient<Logging>> = Arc::new(
        config
            .client_config()
            .create_with_context(Logging)
            .map_err(|e| QueueError::Other(format!("Kafka admin config: {e}").into()))?,
    );
    let topics = Topic::all();
    let names: Vec<String> = topics.iter().map(|&t| config.topic_name(t)).collect();
    let min_insync = config.min_insync_replicas.map(|n| n.to_string());
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&names)
        .map(|(&topic, name)| {
            let partitions = layout.partitions(topic) as i32;
            let replication = TopicReplication::Fixed(i32::from(config.replication_factor));
            let mut new = NewTopic::new(name, partitions, replication);
            if let Some(min) = &min_insync {
                new = new.set("min.insync.replicas", min);
            }
            new
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Timeout::After(ADMIN_TIMEOUT)));
    let results = admin
        .create_topics(&new, &options)
        .await
        .map_err(unavailable)?;
    let existing = tokio::task::spawn_blocking(move || metadata(admin.inner(), ADMIN_TIMEOUT))
        .await
        .map_err(|e| QueueError::Other(e.into()))??;
    let mut outcomes = Vec::new();
    for (result, &topic) in results.into_iter().zip(&topics) {
        let configured = layout.partitions(topic);
        match result {
            Ok(name) => outcomes.push(TopicOutcome::Created {
                name,
                partitions: configured,
            }),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                let partitions = existing.get(&name).copied().unwrap_or(0);
                outcomes.push(TopicOutcome::Existed {
                    name,
                    partitions,
                    configured,
                });
            }
            Err((name, code)) => {
                return Err(QueueError::Other(
                    format!("creating Kafka topic {name}: {code}").into(),
                ))
            }
        }
    }
    Ok(outcomes)
}

/// Whether the cluster answers a metadata request within `timeout`.
pub(crate) async fn reachable(
    producer: &FutureProducer<Logging>,
    timeout: Duration,
) -> Result<(), QueueError> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || metadata(producer.client(), timeout))
        .await
        .map_err(|e| QueueError::Other(e.into()))?
        .map(|_| ())
}

/// Records of `topic` its consumer group has not committed: the high
/// watermark less the committed offset, summed over the partitions (a
/// partition with no commit counts from its low watermark).
pub(crate) fn group_lag(
    config: &KafkaConfig,
    topic: Topic,
    partitions: u32,
) -> Result<u64, QueueError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let timeout = Duration::from_secs(2);
    let consumer: BaseConsumer = config
        .client_config()
        .set("group.id", config.group_id(topic))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(unavailable)?;
    let name = config.topic_name(topic);
    let mut wanted = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        wanted.add_partition(&name, partition);
    }
    let committed = consumer
        .committed_offsets(wanted, Timeout::After(timeout))
        .map_err(unavailable)?;
    let mut lag = 0u64;
    for element in committed.elements() {
        let (low, high) = consumer
            .fetch_watermarks(&name, element.partition(), Timeout::After(timeout))
            .map_err(unavailable)?;
        let done = match element.offset() {
            Offset::Offset(at) => at,
            _ => low,
        };
        lag += (high - done).max(0) as u64;
    }
    Ok(lag)
}

/// MDC topics the cluster does not have.
pub(crate) async fn missing(
    config: &KafkaConfig,
    producer: &FutureProducer<Logging>,
) -> Result<Vec<String>, QueueError> {
    let producer = producer.clone();
    let timeout = config.produce_timeout;
    let existing = tokio::task::spawn_blocking(move || metadata(producer.client(), timeout))
        .await
        .map_err(|e| QueueError::Other(e.into()))??;
    Ok(Topic::all()
        .into_iter()
        .map(|t| config.topic_name(t))
        .filter(|name| !existing.contains_key(name))
        .collect())
}

fn metadata<C: rdkafka::ClientContext>(
    client: &Client<C>,
    timeout: Duration,
) -> Result<HashMap<String, u32>, QueueError> {
    let metadata = client
        .fetch_metadata(None, Timeout::After(timeout))
        .map_err(unavailable)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_owned(), t.partitions().len() as u32))
        .collect())
}
