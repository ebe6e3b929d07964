//! The queue in memory: a log per topic, read by consumer groups.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{lock, IDLE_WAIT};
use crate::ports::{ConsumerSpec, Delivery, Queue, QueueConsumer, QueueError, Topic};

#[derive(Default)]
struct Log {
    records: BTreeMap<u64, (String, Vec<u8>)>,
    next: u64,
    /// The lowest offset not yet handed out to the current consumer.
    cursor: u64,
}

/// A queue in memory: one partition per topic, all of it read by consumer
/// 0 of a group. Records stay until acknowledged; a new consumer starts at
/// the oldest unacknowledged one (a restart's redelivery).
#[derive(Default)]
pub struct MemoryQueue {
    inner: Arc<QueueState>,
}

/// A topic's log, or the log one consumer group of the outcomes topic reads.
type Stream = (Topic, Option<String>);

#[derive(Default)]
struct QueueState {
    topics: Mutex<HashMap<Stream, Log>>,
    arrived: Notify,
    produced: AtomicU64,
    down: AtomicBool,
    /// No reader wants outcome events ([`Queue::wants_outcomes`]).
    outcomes_unwanted: AtomicBool,
}

impl QueueState {
    fn check(&self) -> Result<(), QueueError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(QueueError::Unavailable("injected: queue down".into()));
        }
        Ok(())
    }
}

impl MemoryQueue {
    /// Every call fails while down.
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    /// Whether it tells publishers that no reader wants outcome events
    /// (as the embedded queue does when no webhook endpoint exists).
    pub fn set_outcomes_unwanted(&self, unwanted: bool) {
        self.inner
            .outcomes_unwanted
            .store(unwanted, Ordering::SeqCst);
    }

    /// Records on `topic` not yet acknowledged.
    pub fn pending(&self, topic: Topic) -> usize {
        lock(&self.inner.topics)
            .get(&(topic, None))
            .map_or(0, |log| log.records.len())
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    fn wants_outcome(&self, _event: &crate::outcome::OutcomeEvent) -> bool {
        self.wants_outcomes()
    }

    fn wants_outcomes(&self) -> bool {
        !self.inner.outcomes_unwanted.load(Ordering::SeqCst)
    }

    async fn produce(&self, topic: Topic, key: &str, payload: Vec<u8>) -> Result<(), QueueError> {
        self.inner.check()?;
        {
            let mut topics = lock(&self.inner.topics);
            // Every group that has joined gets its own copy.
            let groups: Vec<Stream> = topics
                .keys()
                .filter(|(t, group)| *t == topic && group.is_some())
                .cloned()
                .collect();
            for stream in groups.into_iter().chain([(topic, None)]) {
                let log = topics.entry(stream).or_default();
                let offset = log.next;
                log.next += 1;
                log.records
                    .insert(offset, (key.to_owned(), payload.clone()));
            }
        }
        self.inner.produced.fetch_add(1, Ordering::SeqCst);
        self.inner.arrived.notify_waiters();
        Ok(())
    }

    async fn consumer(
        &self,
        topic: Topic,
        spec: ConsumerSpec,
    ) -> Result<Arc<dyn QueueConsumer>, QueueError> {
        self.member((topic, None), spec)
    }

    /// A group sees the records produced after it first joined.
    async fn group_consumer(
        &self,
        topic: Topic,
        group: &str,
        spec: ConsumerSpec,
    ) -> Result<Arc<dyn QueueConsumer>, QueueError> {
        self.member((topic, Some(group.to_owned())), spec)
    }
}

impl MemoryQueue {
    fn member(
        &self,
        stream: Stream,
        spec: ConsumerSpec,
    ) -> Result<Arc<dyn QueueConsumer>, QueueError> {
        self.inner.check()?;
        {
            let mut topics = lock(&self.inner.topics);
            let log = topics.entry(stream.clone()).or_default();
            log.cursor = log.records.keys().next().copied().unwrap_or(log.next);
        }
        Ok(Arc::new(MemoryConsumer {
            queue: self.inner.clone(),
            topic: stream.0,
            stream,
            reads: spec.index == 0,
            paused: AtomicBool::new(false),
            resumed: Notify::new(),
        }))
    }
}

/// A consumer of a [`MemoryQueue`].
struct MemoryConsumer {
    queue: Arc<QueueState>,
    topic: Topic,
    stream: Stream,
    reads: bool,
    paused: AtomicBool,
    resumed: Notify,
}

impl MemoryConsumer {
    fn queue(&self) -> &QueueState {
        &self.queue
    }

    fn read(&self, max: usize) -> Vec<Delivery> {
        let mut topics = lock(&self.queue().topics);
        let Some(log) = topics.get_mut(&self.stream) else {
            return Vec::new();
        };
        let batch: Vec<Delivery> = log
            .records
            .range(log.cursor..)
            .take(max)
            .map(|(&offset, (key, payload))| Delivery {
                topic: self.topic,
                partition: 0,
                offset,
                key: key.clone(),
                payload: payload.clone(),
            })
            .collect();
        if let Some(last) = batch.last() {
            log.cursor = last.offset + 1;
        }
        batch
    }
}

#[async_trait]
impl QueueConsumer for MemoryConsumer {
    async fn fetch(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        self.queue().check()?;
        if self.paused.load(Ordering::SeqCst) {
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if self.paused.load(Ordering::SeqCst) {
                let _ = tokio::time::timeout(IDLE_WAIT, resumed).await;
            }
            return Ok(Vec::new());
        }
        if !self.reads || max == 0 {
            tokio::time::sleep(IDLE_WAIT).await;
            return Ok(Vec::new());
        }
        let arrived = self.queue().arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let batch = self.read(max);
        if !batch.is_empty() {
            return Ok(batch);
        }
        if tokio::time::timeout(IDLE_WAIT, arrived).await.is_err() {
            return Ok(Vec::new());
        }
        Ok(self.read(max))
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.queue().check()?;
        if let Some(log) = lock(&self.queue().topics).get_mut(&self.stream) {
            log.records.remove(&delivery.offset);
        }
        Ok(())
    }

    async fn pause(&self) -> Result<(), QueueError> {
        self.paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn resume(&self) -> Result<(), QueueError> {
        self.paused.store(false, Ordering::SeqCst);
        self.resumed.notify_waiters();
        Ok(())
    }
}
