//! In-memory ports for component tests (feature `testing`): a store, a
//! queue and a retry scheduler that keep everything in this process, follow
//! the same rules as the real backends ([`apply_claim`], [`apply_update`]),
//! and fail on command, so a test can say "accept, then fail the store
//! write". They use tokio's clock, so tests can run on paused time.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::ports::store::{apply_claim, apply_update};
use crate::ports::{
    Claim, ConsumerSpec, Created, Delivery, ListFilter, Queue, QueueConsumer, QueueError,
    RetryError, RetryItem, RetryScheduler, Store, StoreError, Topic, Transition, Updated,
};
use crate::{MessageId, MessageRecord, Status, Timestamp};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which store updates an injected fault hits.
type Matcher = Box<dyn Fn(&Transition) -> bool + Send + Sync>;

/// A store in memory. [`MemoryStore::fail_updates`] makes the next updates
/// that match fail as if the database were unreachable.
#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<MessageId, MessageRecord>>,
    keys: Mutex<HashMap<String, MessageId>>,
    faults: Mutex<Option<(usize, Matcher)>>,
    down: AtomicBool,
    failed_updates: AtomicUsize,
    recent_reads: AtomicUsize,
    events_read: AtomicUsize,
}

impl MemoryStore {
    /// The next `n` updates for which `matching` holds fail.
    pub fn fail_updates(
        &self,
        n: usize,
        matching: impl Fn(&Transition) -> bool + Send + Sync + 'static,
    ) {
        *lock(&self.faults) = Some((n, Box::new(matching)));
    }

    /// Every call fails while down.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// How many updates failed by injection.
    pub fn failed_updates(&self) -> usize {
        self.failed_updates.load(Ordering::SeqCst)
    }

    /// How many times a record was read with only its recent events
    /// ([`Store::get_recent`], as outcomes are made).
    pub fn recent_reads(&self) -> usize {
        self.recent_reads.load(Ordering::SeqCst)
    }

    /// How many trail events reads have handed out ([`Store::get`],
    /// [`Store::get_recent`]).
    pub fn events_read(&self) -> usize {
        self.events_read.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected: store down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create(&self, record: &MessageRecord) -> Result<Created, StoreError> {
        self.check()?;
        // Records before keys, as everywhere: two locks in different orders
        // could deadlock.
        let mut records = lock(&self.records);
        let mut keys = lock(&self.keys);
        if let Some(id) = keys.get(&record.message.idempotency_scope()) {
            if let Some(existing) = records.get(id) {
                return Ok(Created::Existing(Box::new(existing.clone())));
            }
        }
        keys.insert(
            record.message.idempotency_scope(),
            record.message.id.clone(),
        );
        records.insert(record.message.id.clone(), record.clone());
        Ok(Created::New)
    }

    async fn claim(
        &self,
        id: &MessageId,
        now: Timestamp,
        lease_until: Timestamp,
        component: &str,
    ) -> Result<Claim, StoreError> {
        self.check()?;
        Ok(match lock(&self.records).get_mut(id) {
            Some(record) => apply_claim(record, now, lease_until, component),
            None => Claim::NotFound,
        })
    }

    async fn update(&self, id: &MessageId, transition: Transition) -> Result<Updated, StoreError> {
        self.check()?;
        {
            let mut faults = lock(&self.faults);
            if let Some((left, matching)) = faults.as_mut() {
                if *left > 0 && matching(&transition) {
                    *left -= 1;
                    self.failed_updates.fetch_add(1, Ordering::SeqCst);
                    return Err(StoreError::Unavailable("injected: write failed".into()));
                }
            }
        }
        Ok(match lock(&self.records).get_mut(id) {
            Some(record) => {
                let updated = apply_update(record, transition);
                record.events = crate::trail::compact(std::mem::take(&mut record.events));
                updated
            }
            None => Updated::NotFound,
        })
    }

    async fn discard(&self, record: &MessageRecord) -> Result<bool, StoreError> {
        self.check()?;
        let message = &record.message;
        let mut records = lock(&self.records);
        let untouched = records.get(&message.id).is_some_and(|r| {
            matches!(r.status, Status::Accepted | Status::Queued)
                && r.attempts == 0
                && r.events.len() == record.events.len()
        });
        if untouched {
            records.remove(&message.id);
            lock(&self.keys).remove(&message.idempotency_scope());
        }
        Ok(untouched)
    }

    async fn key_holder(&self, message: &crate::Message) -> Result<Option<MessageId>, StoreError> {
        self.check()?;
        Ok(lock(&self.keys).get(&message.idempotency_scope()).cloned())
    }

    async fn get(&self, id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
        self.check()?;
        let record = lock(&self.records).get(id).cloned();
        if let Some(record) = &record {
            self.events_read
                .fetch_add(record.events.len(), Ordering::SeqCst);
        }
        Ok(record)
    }

    async fn get_recent(
        &self,
        id: &MessageId,
        events: usize,
    ) -> Result<Option<MessageRecord>, StoreError> {
        self.check()?;
        self.recent_reads.fetch_add(1, Ordering::SeqCst);
        let mut record = lock(&self.records).get(id).cloned();
        if let Some(record) = &mut record {
            let older = record.events.len().saturating_sub(events);
            record.events.drain(..older);
            self.events_read
                .fetch_add(record.events.len(), Ordering::SeqCst);
        }
        Ok(record)
    }

    async fn expire(
        &self,
        records_before: Option<crate::Timestamp>,
        bodies_before: Option<crate::Timestamp>,
        limit: usize,
    ) -> Result<crate::ports::Expired, StoreError> {
        self.check()?;
        let mut done = crate::ports::Expired::default();
        let mut records = lock(&self.records);
        let mut keys = lock(&self.keys);
        if let Some(before) = records_before {
            let old: Vec<MessageId> = records
                .values()
                .filter(|r| r.status.is_terminal() && r.message.created_at < before)
                .take(limit)
                .map(|r| r.message.id.clone())
                .collect();
            for id in old {
                if let Some(record) = records.remove(&id) {
                    keys.remove(&record.message.idempotency_scope());
                    done.removed += 1;
                }
            }
        }
        if let Some(before) = bodies_before {
            for record in records.values_mut() {
                if done.redacted >= limit {
                    break;
                }
                if record.status.is_terminal()
                    && record.message.created_at < before
                    && record.redact()
                {
                    done.redacted += 1;
                }
            }
        }
        Ok(done)
    }

    async fn find_by_provider_message_id(
        &self,
        provider: &str,
        provider_message_id: &str,
    ) -> Result<Option<MessageId>, StoreError> {
        self.check()?;
        Ok(lock(&self.records)
            .values()
            .find(|r| {
                r.provider.as_deref() == Some(provider)
                    && r.provider_message_id.as_deref() == Some(provider_message_id)
            })
            .map(|r| r.message.id.clone()))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<MessageRecord>, StoreError> {
        self.check()?;
        let mut out: Vec<MessageRecord> = lock(&self.records)
            .values()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect();
        out.sort_by_key(|r| filter.sort.key(r));
        if filter.sort.descending() {
            out.reverse();
        }
        out.truncate(filter.limit);
        for record in &mut out {
            record.events.clear();
        }
        Ok(out)
    }

    async fn count_by_status(&self) -> Result<HashMap<Status, u64>, StoreError> {
        self.check()?;
        let mut counts = HashMap::new();
        for record in lock(&self.records).values() {
            *counts.entry(record.status).or_insert(0) += 1;
        }
        Ok(counts)
    }
}

/// How long an empty fetch waits for a record.
const IDLE_WAIT: Duration = Duration::from_millis(200);

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

/// A retry scheduler in memory, on tokio's clock (paused time advances it).
#[derive(Default)]
pub struct MemoryRetry {
    pending: Mutex<HashMap<MessageId, RetryItem>>,
    /// Handed out and not completed.
    taken: Mutex<HashMap<MessageId, RetryItem>>,
    changed: Notify,
    down: AtomicBool,
    /// Every item handed out, in order (what fired).
    fired: Mutex<Vec<RetryItem>>,
}

impl MemoryRetry {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Every item handed out so far, in order.
    pub fn fired(&self) -> Vec<RetryItem> {
        lock(&self.fired).clone()
    }

    /// The message's pending item.
    pub fn pending(&self, id: &MessageId) -> Option<RetryItem> {
        lock(&self.pending).get(id).cloned()
    }

    fn check(&self) -> Result<(), RetryError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(RetryError::Unavailable(
                "injected: retry backend down".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl RetryScheduler for MemoryRetry {
    async fn schedule(&self, item: RetryItem) -> Result<(), RetryError> {
        self.check()?;
        lock(&self.pending).insert(item.message_id.clone(), item);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn cancel(&self, message_id: &MessageId) -> Result<(), RetryError> {
        self.check()?;
        lock(&self.pending).remove(message_id);
        Ok(())
    }

    async fn take_due(&self, max: usize) -> Result<Vec<RetryItem>, RetryError> {
        self.check()?;
        let changed = self.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = crate::now();
        let (due, next) = {
            let mut pending = lock(&self.pending);
            let mut due: Vec<RetryItem> = pending
                .values()
                .filter(|item| item.due <= now)
                .cloned()
                .collect();
            due.sort_by_key(|item| item.due);
            due.truncate(max);
            for item in &due {
                pending.remove(&item.message_id);
            }
            let next = pending.values().map(|item| item.due).min();
            (due, next)
        };
        if !due.is_empty() {
            let mut taken = lock(&self.taken);
            for item in &due {
                taken.insert(item.message_id.clone(), item.clone());
            }
            lock(&self.fired).extend(due.iter().cloned());
            return Ok(due);
        }
        let wait = next
            .and_then(|at| (at - now).to_std().ok())
            .unwrap_or(IDLE_WAIT)
            .min(IDLE_WAIT);
        let _ = tokio::time::timeout(wait, changed).await;
        Ok(Vec::new())
    }

    async fn complete(&self, item: &RetryItem) -> Result<(), RetryError> {
        self.check()?;
        lock(&self.taken).remove(&item.message_id);
        Ok(())
    }
}

/// A suppression list in memory.
#[derive(Default)]
pub struct MemorySuppressions {
    entries: Mutex<HashMap<(crate::Channel, String), crate::ports::Suppression>>,
}

#[async_trait]
impl crate::ports::SuppressionList for MemorySuppressions {
    async fn add(&self, suppression: &crate::ports::Suppression) -> Result<bool, StoreError> {
        let mut entries = lock(&self.entries);
        let key = (suppression.channel, suppression.recipient.clone());
        if entries.contains_key(&key) {
            return Ok(false);
        }
        entries.insert(key, suppression.clone());
        Ok(true)
    }

    async fn get(
        &self,
        channel: crate::Channel,
        recipient: &str,
    ) -> Result<Option<crate::ports::Suppression>, StoreError> {
        Ok(lock(&self.entries)
            .get(&(channel, recipient.to_owned()))
            .cloned())
    }

    async fn remove(&self, channel: crate::Channel, recipient: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.entries)
            .remove(&(channel, recipient.to_owned()))
            .is_some())
    }

    async fn list(
        &self,
        channel: Option<crate::Channel>,
        limit: usize,
    ) -> Result<Vec<crate::ports::Suppression>, StoreError> {
        let mut out: Vec<_> = lock(&self.entries)
            .values()
            .filter(|s| channel.is_none_or(|c| c == s.channel))
            .cloned()
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.at));
        out.truncate(limit);
        Ok(out)
    }
}

/// Checkpoints in memory.
#[derive(Default)]
pub struct MemoryCheckpoints {
    values: Mutex<HashMap<String, serde_json::Value>>,
}

#[async_trait]
impl crate::ports::Checkpoints for MemoryCheckpoints {
    async fn load(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(lock(&self.values).get(name).cloned())
    }

    async fn save(&self, name: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        lock(&self.values).insert(name.to_owned(), value.clone());
        Ok(())
    }
}

/// API keys in memory.
#[derive(Default)]
pub struct MemoryKeys {
    keys: Mutex<Vec<crate::ports::ApiKey>>,
}

#[async_trait]
impl crate::ports::ApiKeys for MemoryKeys {
    async fn create(&self, key: &crate::ports::ApiKey) -> Result<(), StoreError> {
        lock(&self.keys).push(key.clone());
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<crate::ports::ApiKey>, StoreError> {
        Ok(lock(&self.keys).iter().find(|k| k.id == id).cloned())
    }

    async fn list(&self) -> Result<Vec<crate::ports::ApiKey>, StoreError> {
        Ok(lock(&self.keys).clone())
    }

    async fn revoke(&self, id: &str, at: crate::Timestamp) -> Result<bool, StoreError> {
        let mut keys = lock(&self.keys);
        match keys.iter_mut().find(|k| k.id == id) {
            Some(key) if key.revoked_at.is_none() => {
                key.revoked_at = Some(at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests;
