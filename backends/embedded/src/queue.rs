use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use mdc_core::outcome::{OutcomeEvent, OutcomeInterest};
use mdc_core::ports::queue::OUTCOME_WEBHOOKS_GROUP;
pub use mdc_core::ports::QueueLayout;
use mdc_core::ports::{ConsumerSpec, Delivery, Queue, QueueConsumer, QueueError, Topic};
use redb::{ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction};
use tokio::sync::{oneshot, Notify};

use crate::db::{wait_with, Db, DbError, Taker, Waiting};

pub(crate) mod earlier_file;

/// How long an idle `fetch` waits before returning an empty batch.
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// The table of one stream: `queue.<topic>`, or `queue.outcomes.<group>`
/// for each consumer group of the outcomes topic. Table names are
/// `'static`: one leaked string per stream, made once per name.
fn table(name: &'static str) -> TableDefinition<'static, (u32, u64), &'static [u8]> {
    TableDefinition::new(name)
}

fn leak_name(name: String) -> &'static str {
    use std::sync::OnceLock;
    static NAMES: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    names
        .entry(name.clone())
        .or_insert_with(|| Box::leak(name.into_boxed_str()))
}

/// A record on disk: key length, key, payload.
fn encode(key: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key.len() + payload.len());
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(payload);
    out
}

fn decode(bytes: &[u8]) -> Result<(String, Vec<u8>), DbError> {
    let corrupt = || DbError::Storage("corrupt queue record".into());
    let len = u16::from_le_bytes(
        bytes
            .get(..2)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?,
    ) as usize;
    let key = bytes.get(2..2 + len).ok_or_else(corrupt)?;
    let key = String::from_utf8(key.to_vec()).map_err(|_| corrupt())?;
    Ok((key, bytes[2 + len..].to_vec()))
}

fn partition_of(key: &str, partitions: u32) -> u32 {
    // FNV-1a: stable across builds, so a key keeps its partition (and its
    // order) across restarts and upgrades.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % u64::from(partitions)) as u32
}

/// The queue's tables inside one commit, each opened once however many
/// writes of the commit touch it.
struct Streams<'t> {
    txn: &'t WriteTransaction,
    open: HashMap<&'static str, Table<'t, (u32, u64), &'static [u8]>>,
}

impl<'t> Streams<'t> {
    fn table(
        &mut self,
        name: &'static str,
    ) -> Result<&mut Table<'t, (u32, u64), &'static [u8]>, DbError> {
        match self.open.entry(name) {
            std::collections::hash_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            std::collections::hash_map::Entry::Vacant(entry) => {
                Ok(entry.insert(self.txn.open_table(table(name))?))
            }
        }
    }
}

/// One produce's or acknowledgement's change to the tables.
type Change = Box<dyn FnOnce(&mut Streams<'_>) -> Result<(), DbError> + Send>;

/// Writes of one kind (produces, fsynced; acknowledgements, not) gathered
/// into one job of the database's next commit: with every write its own
/// job, each opened and closed its table again, a sixth of the queue's
/// writing time at load (measured when it had a writer of its own).
struct Gathered {
    db: Db,
    durable: bool,
    waiting: Waiting<(Change, oneshot::Sender<Result<(), DbError>>)>,
}

impl Gathered {
    fn new(db: Db, durable: bool) -> Self {
        Self {
            db,
            durable,
            waiting: Arc::default(),
        }
    }

    async fn write(&self, change: Change) -> Result<(), DbError> {
        let (tx, rx) = oneshot::channel();
        // The first write to wait queues the job that takes all waiting
        // when it runs; later ones join it until then.
        if wait_with(&self.waiting, (change, tx)) {
            let taker = Taker::new(&self.waiting);
            let submitted = self.db.submit(
                self.durable,
                Box::new(move |txn| {
                    let mut streams = Streams {
                        txn,
                        open: HashMap::new(),
                    };
                    let applied: Vec<_> = taker
                        .take()
                        .into_iter()
                        .map(|(change, tx)| (change(&mut streams), tx))
                        .collect();
                    // Tables close before the commit.
                    drop(streams);
                    Box::new(move |commit: Result<(), DbError>| {
                        for (result, tx) in applied {
                            let _ = tx.send(commit.clone().and(result));
                        }
                    })
                }),
            );
            // Not submitted, the job is dropped and its writes fail.
            submitted?;
        }
        rx.await.map_err(|_| DbError::Closed)?
    }
}

struct TopicState {
    /// The stream's table.
    name: &'static str,
    /// Next offset per partition; advanced only inside the writer, so offsets
    /// are assigned in commit order.
    next: Vec<AtomicU64>,
    arrived: Notify,
}

/// A durable queue on the embedded database: one table per topic, keyed by
/// (partition, offset). Records stay until acknowledged. The outcomes topic
/// keeps one copy per consumer group of the layout, each acknowledged on
/// its own.
pub struct EmbeddedQueue {
    db: Db,
    produces: Gathered,
    acks: Arc<Gathered>,
    /// The streams a produce to each topic writes to (one, except outcomes).
    topics: HashMap<Topic, Vec<Arc<TopicState>>>,
    /// The outcomes stream of each group.
    groups: HashMap<String, Arc<TopicState>>,
    /// Which outcomes MDC's webhook delivery would act on, when that is
    /// the outcomes topic's only group: the others are not written.
    webhook_interest: Option<RwLock<Option<Arc<dyn OutcomeInterest>>>>,
}

impl From<DbError> for QueueError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Closed => QueueError::Closed,
            other => QueueError::Other(other.into()),
        }
    }
}

impl EmbeddedQueue {
    pub fn open(db: Db, layout: QueueLayout) -> Result<Self, DbError> {
        let mut streams: Vec<(Topic, Option<String>, &'static str)> = Vec::new();
        for topic in Topic::all() {
            if topic == Topic::Outcomes {
                for group in &layout.outcome_groups {
                    let name = leak_name(format!("queue.{}.{group}", topic.name()));
                    streams.push((topic, Some(group.clone()), name));
                }
            } else {
                streams.push((topic, None, leak_name(format!("queue.{}", topic.name()))));
            }
        }
        let webhooks_only = layout.outcome_groups == [OUTCOME_WEBHOOKS_GROUP];
        let opened = db.write_now(move |txn| {
            let mut opened = Vec::new();
            for (topic, group, name) in streams {
                let table = txn.open_table(table(name))?;
                let partitions = layout.partitions(topic);
                let mut next: Vec<u64> = vec![0; partitions as usize];
                for entry in table.iter()? {
                    let (key, _) = entry?;
                    let (partition, offset) = key.value();
                    if partition >= partitions {
                        return Err(DbError::Open(format!(
                            "topic {topic} holds records in partition {partition}, but only {partitions} partitions are configured; the partition count of a topic cannot shrink"
                        )));
                    }
                    let slot = &mut next[partition as usize];
                    *slot = (*slot).max(offset + 1);
                }
                let state = TopicState {
                    name,
                    next: next.into_iter().map(AtomicU64::new).collect(),
                    arrived: Notify::new(),
                };
                opened.push((topic, group, Arc::new(state)));
            }
            Ok(opened)
        })?;
        let mut topics: HashMap<Topic, Vec<Arc<TopicState>>> = HashMap::new();
        let mut groups = HashMap::new();
        for (topic, group, state) in opened {
            topics.entry(topic).or_default().push(state.clone());
            if let Some(group) = group {
                groups.insert(group, state);
            }
        }
        Ok(Self {
            produces: Gathered::new(db.clone(), true),
            // Not fsynced on their own: a lost acknowledgement only means a
            // redelivery, which the dispatcher's claim absorbs.
            acks: Arc::new(Gathered::new(db.clone(), false)),
            db,
            topics,
            groups,
            webhook_interest: webhooks_only.then(|| RwLock::new(None)),
        })
    }

    /// What the webhook delivery's interest says, when it is the only
    /// reader of outcomes and has told it; otherwise every event is wanted.
    fn webhook_wants(&self, ask: impl FnOnce(&dyn OutcomeInterest) -> bool) -> bool {
        let Some(interest) = &self.webhook_interest else {
            return true;
        };
        let interest = interest
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        interest.as_deref().is_none_or(ask)
    }

    /// Records waiting in `topic` (produced and not yet acknowledged).
    pub fn depth(&self, topic: Topic) -> Result<u64, QueueError> {
        let txn = self.db.read()?;
        let mut depth = 0;
        for state in self.topics.get(&topic).into_iter().flatten() {
            let table = txn.open_table(table(state.name)).map_err(DbError::from)?;
            depth += table.len().map_err(DbError::from)?;
        }
        Ok(depth)
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn lag(&self, topic: Topic) -> Result<Option<u64>, QueueError> {
        self.depth(topic).map(Some)
    }

    fn wants_outcome(&self, event: &OutcomeEvent) -> bool {
        self.webhook_wants(|interest| interest.wants(event))
    }

    fn wants_outcomes(&self) -> bool {
        self.webhook_wants(|interest| interest.wants_any())
    }

    fn set_webhook_interest(&self, interest: Arc<dyn OutcomeInterest>) {
        if let Some(slot) = &self.webhook_interest {
            *slot
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(interest);
        }
    }

    async fn produce(&self, topic: Topic, key: &str, payload: Vec<u8>) -> Result<(), QueueError> {
        let streams = self.topics.get(&topic).cloned().unwrap_or_default();
        if streams.is_empty() {
            // The outcomes topic with no group to keep records for.
            return Ok(());
        }
        let record = encode(key, &payload);
        let key = key.to_owned();
        let writers = streams.clone();
        self.produces
            .write(Box::new(move |streams| {
                for state in &writers {
                    let partition = partition_of(&key, state.next.len() as u32);
                    let offset = state.next[partition as usize].load(Ordering::Relaxed);
                    streams
                        .table(state.name)?
                        .insert((partition, offset), record.as_slice())?;
                    state.next[partition as usize].store(offset + 1, Ordering::Relaxed);
                }
                Ok(())
            }))
            .await?;
        for state in streams {
            state.arrived.notify_waiters();
        }
        Ok(())
    }

    async fn consumer(
        &self,
        topic: Topic,
        spec: ConsumerSpec,
    ) -> Result<Arc<dyn QueueConsumer>, QueueError> {
        let state = self
            .topics
            .get(&topic)
            .and_then(|streams| streams.first())
            .cloned()
            .ok_or_else(|| QueueError::Other(format!("no stream of {topic} is kept").into()))?;
        Ok(self.member(topic, state, spec))
    }

    async fn group_consumer(
        &self,
        topic: Topic,
        group: &str,
        spec: ConsumerSpec,
    ) -> Result<Arc<dyn QueueConsumer>, QueueError> {
        let state = self
            .groups
            .get(group)
            .filter(|_| topic == Topic::Outcomes)
            .cloned()
            .ok_or_else(|| {
                QueueError::Other(
                    format!("{topic} keeps no records for group {group:?}: list it in the queue layout's outcome groups").into(),
                )
            })?;
        Ok(self.member(topic, state, spec))
    }
}

impl EmbeddedQueue {
    fn member(
        &self,
        topic: Topic,
        state: Arc<TopicState>,
        spec: ConsumerSpec,
    ) -> Arc<dyn QueueConsumer> {
        let count = spec.count.max(1);
        let partitions: Vec<u32> = (0..state.next.len() as u32)
            .filter(|p| p % count == spec.index)
            .collect();
        Arc::new(EmbeddedConsumer {
            db: self.db.clone(),
            acks: self.acks.clone(),
            topic,
            state,
            cursors: Mutex::new(partitions.iter().map(|&p| (p, 0)).collect()),
            partitions,
            rotation: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            resumed: Notify::new(),
        })
    }
}

struct EmbeddedConsumer {
    db: Db,
    acks: Arc<Gathered>,
    topic: Topic,
    state: Arc<TopicState>,
    partitions: Vec<u32>,
    /// Next offset to hand out, per owned partition.
    cursors: Mutex<HashMap<u32, u64>>,
    /// Which partition goes first in the next fetch, for fairness.
    rotation: AtomicUsize,
    paused: AtomicBool,
    resumed: Notify,
}

impl EmbeddedConsumer {
    fn read(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let txn = self.db.read()?;
        let table = txn
            .open_table(table(self.state.name))
            .map_err(DbError::from)?;
        let mut cursors = self
            .cursors
            .lock()
            .map_err(|_| QueueError::Other("cursor lock poisoned".into()))?;
        let mut out = Vec::new();
        let start = self.rotation.fetch_add(1, Ordering::Relaxed);
        let n = self.partitions.len();
        // Share the batch between partitions, then top up from any with more.
        let share = max.div_ceil(n.max(1));
        for pass in 0..2 {
            for i in 0..n {
                if out.len() >= max {
                    break;
                }
                let partition = self.partitions[(start + i) % n];
                let cursor = cursors
                    .get_mut(&partition)
                    .ok_or_else(|| QueueError::Other("unknown partition".into()))?;
                let room = if pass == 0 {
                    share.min(max - out.len())
                } else {
                    max - out.len()
                };
                for entry in table
                    .range((partition, *cursor)..=(partition, u64::MAX))
                    .map_err(DbError::from)?
                    .take(room)
                {
                    let (key, value) = entry.map_err(DbError::from)?;
                    let (partition, offset) = key.value();
                    let (key, payload) = decode(value.value())?;
                    out.push(Delivery {
                        topic: self.topic,
                        partition,
                        offset,
                        key,
                        payload,
                    });
                    *cursor = offset + 1;
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl QueueConsumer for EmbeddedConsumer {
    async fn fetch(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        if self.paused.load(Ordering::Acquire) {
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if self.paused.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(IDLE_WAIT, resumed).await;
            }
            return Ok(Vec::new());
        }
        if self.partitions.is_empty() || max == 0 {
            tokio::time::sleep(IDLE_WAIT).await;
            return Ok(Vec::new());
        }
        let arrived = self.state.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let batch = self.read(max)?;
        if !batch.is_empty() {
            return Ok(batch);
        }
        if tokio::time::timeout(IDLE_WAIT, arrived).await.is_err() {
            return Ok(Vec::new());
        }
        self.read(max)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let key = (delivery.partition, delivery.offset);
        let name = self.state.name;
        self.acks
            .write(Box::new(move |streams| {
                streams.table(name)?.remove(key)?;
                Ok(())
            }))
            .await?;
        Ok(())
    }

    async fn pause(&self) -> Result<(), QueueError> {
        self.paused.store(true, Ordering::Release);
        Ok(())
    }

    async fn resume(&self) -> Result<(), QueueError> {
        self.paused.store(false, Ordering::Release);
        self.resumed.notify_waiters();
        Ok(())
    }

    /// Acknowledgements are committed without an fsync of their own (a
    /// lost one only redelivers a record); an fsynced commit keeps every
    /// commit before it, so a clean stop keeps them all even when the
    /// file is never closed (another thread still holding the queue when
    /// the process exits).
    async fn close(&self) -> Result<(), QueueError> {
        self.db.write(true, |_| Ok(())).await?;
        Ok(())
    }
}
