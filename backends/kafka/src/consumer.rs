//! One member of a topic's consumer group.
//!
//! librdkafka's consumer is polled on the blocking thread pool (`fetch`), so
//! rebalance callbacks run there, between batches. The dispatcher's
//! workers consume a batch completely (acknowledging every record) before
//! they fetch again; the response handler may still hold reports waiting
//! for their message's `sent` write. A partition's committed offset stops
//! at its oldest record not acknowledged, so after a revoke the partition's
//! next owner (this member again, or another) gets such a record and those
//! after it again; a late acknowledgement of the earlier copy is ignored or
//! counts for the new one, which is harmless either way (a report applied
//! twice moves nothing the second time).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use mdc_core::ports::{Delivery, QueueConsumer, QueueError, Topic};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;

use crate::{unavailable, KafkaConfig, Logging};

/// How long an idle `fetch` waits before returning an empty batch.
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// Offsets of one partition: handed out, not yet acknowledged.
#[derive(Default)]
struct PartitionOffsets {
    in_flight: BTreeSet<i64>,
    /// One past the last offset handed out.
    next: i64,
    /// The offset last stored for commit (the next one to consume).
    stored: i64,
}

#[derive(Default)]
struct Tracker {
    partitions: HashMap<i32, PartitionOffsets>,
}

struct Context {
    logging: Logging,
    topic: String,
    paused: AtomicBool,
    tracker: Mutex<Tracker>,
    /// Records polled by a fetch whose caller went away (a timeout, a
    /// shutdown select): handed out by the next fetch instead of lost.
    polled: Mutex<VecDeque<Delivery>>,
}

impl Context {
    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        // The tracker holds plain data: a panic elsewhere cannot leave it torn.
        self.tracker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn polled(&self) -> MutexGuard<'_, VecDeque<Delivery>> {
        self.polled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self, max: usize) -> Vec<Delivery> {
        let mut polled = self.polled();
        let n = max.min(polled.len());
        polled.drain(..n).collect()
    }
}

impl ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.logging.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.logging.error(error, reason);
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            // Records still in flight (see the module doc) are handed out
            // again by the new owner; the stored offsets are committed by
            // librdkafka before it lets go.
            let mut tracker = self.tracker();
            let mut revoked = Vec::new();
            for element in partitions.elements() {
                tracker.partitions.remove(&element.partition());
                revoked.push(element.partition() as u32);
            }
            // Polled and not handed out: the new owner gets them.
            self.polled().retain(|d| !revoked.contains(&d.partition));
            tracing::info!(topic = %self.topic, partitions = partitions.count(), "Partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            tracing::info!(topic = %self.topic, partitions = partitions.count(), "Partitions assigned");
            // A paused lane stays paused across rebalances.
            if self.paused.load(Ordering::Acquire) {
                if let Err(e) = consumer.pause(partitions) {
                    tracing::warn!(topic = %self.topic, error = %e, "Could not pause newly assigned partitions");
                }
            }
        }
    }
}

pub(crate) struct KafkaConsumer {
    topic: Topic,
    name: String,
    consumer: Arc<BaseConsumer<Context>>,
    closed: AtomicBool,
    /// One poll at a time, so records enter `polled` in partition order.
    polling: Arc<tokio::sync::Mutex<()>>,
}

impl KafkaConsumer {
    /// Joins `group` (the topic's own group when None).
    pub(crate) fn subscribe(
        config: &KafkaConfig,
        topic: Topic,
        group: Option<&str>,
    ) -> Result<Self, QueueError> {
        let group_id = match group {
            Some(group) => config.named_group_id(topic, group),
            None => config.group_id(topic),
        };
        let name = config.topic_name(topic);
        let context = Context {
            logging: Logging,
            topic: name.clone(),
            paused: AtomicBool::new(false),
            tracker: Mutex::new(Tracker::default()),
            polled: Mutex::new(VecDeque::new()),
        };
        let session_ms = config.session_timeout.as_millis().to_string();
        let consumer: BaseConsumer<Context> = config
            .client_config()
            .set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            // Offsets are stored by `ack`, never on delivery to the worker.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", &session_ms)
            .set("enable.partition.eof", "false")
            .create_with_context(context)
            .map_err(|e| QueueError::Other(format!("Kafka consumer config: {e}").into()))?;
        consumer.subscribe(&[&name]).map_err(unavailable)?;
        Ok(Self {
            topic,
            name,
            consumer: Arc::new(consumer),
            closed: AtomicBool::new(false),
            polling: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Flags first, so a rebalance in between applies the new state to the
    /// partitions it assigns (see `post_rebalance`).
    fn set_paused(&self, paused: bool) -> Result<(), QueueError> {
        self.consumer
            .context()
            .paused
            .store(paused, Ordering::Release);
        let assigned = self.consumer.assignment().unwrap_or_default();
        if paused {
            self.consumer.pause(&assigned)
        } else {
            self.consumer.resume(&assigned)
        }
        .map_err(unavailable)
    }
}

fn poll_batch(
    consumer: &BaseConsumer<Context>,
    topic: Topic,
    max: usize,
) -> Result<Vec<Delivery>, QueueError> {
    let mut out = Vec::new();
    let mut wait = IDLE_WAIT;
    while out.len() < max {
        let Some(result) = consumer.poll(wait) else {
            break;
        };
        wait = Duration::ZERO;
        match result {
            Ok(message) => {
                let partition = message.partition();
                let offset = message.offset();
                {
                    let mut tracker = consumer.context().tracker();
                    let entry =
                        tracker
                            .partitions
                            .entry(partition)
                            .or_insert_with(|| PartitionOffsets {
                                in_flight: BTreeSet::new(),
                                next: offset,
                                stored: offset,
                            });
                    entry.in_flight.insert(offset);
                    entry.next = entry.next.max(offset + 1);
                }
                out.push(Delivery {
                    topic,
                    partition: partition as u32,
                    offset: offset as u64,
                    key: message
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default(),
                    payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                });
            }
            Err(e) if out.is_empty() => return Err(unavailable(e)),
            Err(e) => {
                tracing::warn!(error = %e, "Kafka consumer error after a partial batch");
                break;
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl QueueConsumer for KafkaConsumer {
    async fn fetch(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(QueueError::Closed);
        }
        let max = max.max(1);
        let guard = self.polling.clone().lock_owned().await;
        let paused = self.consumer.context().paused.load(Ordering::Acquire);
        if !paused {
            let ready = self.consumer.context().take(max);
            if !ready.is_empty() {
                return Ok(ready);
            }
        }
        let consumer = self.consumer.clone();
        let topic = self.topic;
        // The poll finishes even if this future is dropped; what it got waits
        // in `polled` for the next fetch.
        tokio::task::spawn_blocking(move || {
            let _one_at_a_time = guard;
            let batch = poll_batch(&consumer, topic, max)?;
            consumer.context().polled().extend(batch);
            Ok::<_, QueueError>(())
        })
        .await
        .map_err(|e| QueueError::Other(e.into()))??;
        if self.consumer.context().paused.load(Ordering::Acquire) {
            // Polled only to keep the membership alive.
            return Ok(Vec::new());
        }
        Ok(self.consumer.context().take(max))
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let partition = delivery.partition as i32;
        let offset = delivery.offset as i64;
        let store = {
            let mut tracker = self.consumer.context().tracker();
            // Revoked since it was fetched: the new owner gets it again.
            let Some(entry) = tracker.partitions.get_mut(&partition) else {
                return Ok(());
            };
            entry.in_flight.remove(&offset);
            let commit_to = entry.in_flight.first().copied().unwrap_or(entry.next);
            if commit_to <= entry.stored {
                return Ok(());
            }
            entry.stored = commit_to;
            commit_to
        };
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.name, partition, Offset::Offset(store))
            .map_err(unavailable)?;
        match self.consumer.store_offsets(&list) {
            Ok(()) => Ok(()),
            // Lost the partition in between: fine, it is redelivered.
            Err(KafkaError::StoreOffset(_)) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn pause(&self) -> Result<(), QueueError> {
        self.set_paused(true)
    }

    async fn resume(&self) -> Result<(), QueueError> {
        self.set_paused(false)
    }

    async fn close(&self) -> Result<(), QueueError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
            if assigned > 0 {
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) => {}
                    // Nothing stored since the last commit.
                    Err(KafkaError::ConsumerCommit(rdkafka::error::RDKafkaErrorCode::NoOffset)) => {
                    }
                    Err(e) => tracing::warn!(error = %e, "Final offset commit failed; the uncommitted records are redelivered"),
                }
            }
            consumer.unsubscribe();
            // Serve the revocation so the group rebalances now rather than
            // after the session timeout.
            for _ in 0..20 {
                if consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
                    break;
                }
                let _ = consumer.poll(Duration::from_millis(100));
            }
        })
        .await
        .map_err(|e| QueueError::Other(e.into()))
    }
}
