//! A dispatcher and a retry handler on in-memory ports, sending SMS through
//! one scripted provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mdc_core::memory::{MemoryQueue, MemoryRetry, MemoryStore};
use mdc_core::ports::Claim;
use mdc_core::ports::{
    AfterAmbiguous, ConsumerSpec, Lookup, Provider, ProviderError, Queue, QueueConsumer, Receipt,
    RetryScheduler, Store, StoreError, Suppression, SuppressionList, Topic, Transition,
};
use mdc_core::{Channel, Event, Message, MessageId, MessageRecord, Priority, Status};
use mdc_dispatcher::routing::{Member, Mode, Router};
use mdc_dispatcher::{Dispatcher, DispatcherConfig};
use mdc_handlers::RetryHandler;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the provider does with a message to one recipient.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Takes it.
    Accept,
    /// Answers 429 with this Retry-After.
    Throttle(Duration),
    /// Fails transiently this many times, then takes it.
    FailTransient(u32),
    /// Panics on the first call, then takes it.
    PanicOnce,
    /// Takes it after this long on the first call (the router's send
    /// timeout may give up first), then at once.
    HangOnce(Duration),
}

#[derive(Default)]
pub struct Scripted {
    scripts: Mutex<HashMap<String, Behaviour>>,
    /// Calls per recipient, with their time.
    calls: Mutex<HashMap<String, Vec<Instant>>>,
    /// Accepted sends per recipient.
    accepted: Mutex<HashMap<String, u32>>,
    /// Vendor ids of accepted messages, by MDC id.
    receipts: Mutex<HashMap<MessageId, String>>,
    /// Whether lookups by MDC id are answered (like the simulators) or not
    /// (like Kaleyra, SES, SNS and SMTP).
    pub answers_lookups: std::sync::atomic::AtomicBool,
    /// After an ambiguous send it cannot tell about: wait for the report
    /// instead of resending.
    pub waits_for_report: std::sync::atomic::AtomicBool,
    /// How long every accepted send takes, in milliseconds.
    pub send_millis: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scripted {
    pub fn script(&self, to: &str, behaviour: Behaviour) {
        lock(&self.scripts).insert(to.to_owned(), behaviour);
    }

    pub fn calls(&self, to: &str) -> usize {
        lock(&self.calls).get(to).map_or(0, Vec::len)
    }

    pub fn call_times(&self, to: &str) -> Vec<Instant> {
        lock(&self.calls).get(to).cloned().unwrap_or_default()
    }

    pub fn sends(&self, to: &str) -> u32 {
        lock(&self.accepted).get(to).copied().unwrap_or(0)
    }

    pub fn sends_with_prefix(&self, prefix: &str) -> usize {
        lock(&self.accepted)
            .iter()
            .filter(|(to, _)| to.starts_with(prefix))
            .map(|(_, n)| *n as usize)
            .sum()
    }
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn channel(&self) -> Channel {
        Channel::Sms
    }

    async fn send(&self, message: &Message) -> Result<Receipt, ProviderError> {
        let calls = {
            let mut calls = lock(&self.calls);
            let times = calls.entry(message.to.clone()).or_default();
            times.push(Instant::now());
            times.len()
        };
        let behaviour = lock(&self.scripts)
            .get(&message.to)
            .cloned()
            .unwrap_or(Behaviour::Accept);
        match behaviour {
            Behaviour::Throttle(after) => {
                return Err(ProviderError::throttled("HTTP 429", Some(after)))
            }
            Behaviour::FailTransient(n) if calls as u32 <= n => {
                return Err(ProviderError::transient("HTTP 503"))
            }
            Behaviour::PanicOnce if calls == 1 => panic!("injected panic in a provider"),
            Behaviour::HangOnce(delay) if calls == 1 => tokio::time::sleep(delay).await,
            _ => {}
        }
        let millis = self.send_millis.load(std::sync::atomic::Ordering::SeqCst);
        if millis > 0 {
            tokio::time::sleep(Duration::from_millis(millis)).await;
        }
        let n = {
            let mut accepted = lock(&self.accepted);
            let n = accepted.entry(message.to.clone()).or_default();
            *n += 1;
            *n
        };
        let id = format!("{}:{n}", message.id);
        lock(&self.receipts).insert(message.id.clone(), id.clone());
        Ok(Receipt {
            provider_message_id: id,
            raw: serde_json::json!({}),
        })
    }

    async fn lookup(&self, reference: &MessageId) -> Result<Lookup, ProviderError> {
        if !self
            .answers_lookups
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(Lookup::CannotTell);
        }
        Ok(lock(&self.receipts)
            .get(reference)
            .map_or(Lookup::NotFound, |id| {
                Lookup::Found(Receipt {
                    provider_message_id: id.clone(),
                    raw: serde_json::json!({ "looked_up": true }),
                })
            }))
    }

    fn after_ambiguous(&self) -> AfterAmbiguous {
        if self
            .waits_for_report
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            AfterAmbiguous::WaitForReport
        } else {
            AfterAmbiguous::Resend
        }
    }
}

/// A suppression list in a map.
#[derive(Default)]
pub struct Suppressions(Mutex<HashMap<(Channel, String), Suppression>>);

#[async_trait]
impl SuppressionList for Suppressions {
    async fn add(&self, suppression: &Suppression) -> Result<bool, StoreError> {
        let key = (suppression.channel, suppression.recipient.clone());
        let mut map = lock(&self.0);
        if map.contains_key(&key) {
            return Ok(false);
        }
        map.insert(key, suppression.clone());
        Ok(true)
    }

    async fn get(
        &self,
        channel: Channel,
        recipient: &str,
    ) -> Result<Option<Suppression>, StoreError> {
        Ok(lock(&self.0).get(&(channel, recipient.to_owned())).cloned())
    }

    async fn remove(&self, channel: Channel, recipient: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.0)
            .remove(&(channel, recipient.to_owned()))
            .is_some())
    }

    async fn list(
        &self,
        _channel: Option<Channel>,
        _limit: usize,
    ) -> Result<Vec<Suppression>, StoreError> {
        Ok(lock(&self.0).values().cloned().collect())
    }
}

pub struct Harness {
    pub store: Arc<MemoryStore>,
    pub suppressions: Arc<Suppressions>,
    pub queue: Arc<MemoryQueue>,
    pub retry: Arc<MemoryRetry>,
    pub provider: Arc<Scripted>,
    pub dispatcher: Arc<Dispatcher>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Harness {
    /// `rate`: the provider's rate limit (per second, burst).
    pub async fn start(config: DispatcherConfig, rate: Option<(f64, u32)>) -> Self {
        let store = Arc::new(MemoryStore::default());
        let queue = Arc::new(MemoryQueue::default());
        let retry = Arc::new(MemoryRetry::default());
        let provider = Arc::new(Scripted::default());
        let suppressions = Arc::new(Suppressions::default());
        let router = Router::new(
            Mode::Ordered,
            vec![Member::new(provider.clone(), 1, None, rate)],
            config.send_timeout,
        );
        let dispatcher = Arc::new(
            Dispatcher::new(
                queue.clone(),
                store.clone(),
                retry.clone(),
                HashMap::from([(Channel::Sms, Arc::new(router))]),
                Arc::new(mdc_embedded::MemoryCache::default()),
                config,
            )
            .with_suppressions(suppressions.clone()),
        );
        let shutdown = CancellationToken::new();
        let retries = Arc::new(RetryHandler::new(
            retry.clone() as Arc<dyn RetryScheduler>,
            store.clone() as Arc<dyn Store>,
            queue.clone() as Arc<dyn Queue>,
        ));
        let tasks = vec![
            tokio::spawn({
                let dispatcher = dispatcher.clone();
                let shutdown = shutdown.clone();
                async move {
                    dispatcher.run(shutdown).await.expect("dispatcher");
                }
            }),
            tokio::spawn(retries.run(shutdown.clone())),
        ];
        Self {
            store,
            suppressions,
            queue,
            retry,
            provider,
            dispatcher,
            shutdown,
            tasks,
        }
    }

    /// Stores a queued message without producing it.
    pub async fn create(&self, to: &str, priority: Priority) -> MessageId {
        self.create_with(to, priority, |_| {}).await
    }

    /// [`Self::create`], with the message edited first.
    pub async fn create_with(
        &self,
        to: &str,
        priority: Priority,
        edit: impl FnOnce(&mut Message),
    ) -> MessageId {
        let mut message = mdc_core::contract::sample_message(to);
        message.priority = priority;
        edit(&mut message);
        let record = MessageRecord::new(
            message.clone(),
            Status::Queued,
            Event::new("test", "queued").status(Status::Queued),
        );
        self.store.create(&record).await.expect("create");
        message.id
    }

    pub async fn produce(&self, id: &MessageId) {
        let record = self.record(id).await;
        let message = record.message;
        self.queue
            .produce(
                Topic::Messages(Channel::Sms, message.priority),
                &message.to,
                message.encode(),
            )
            .await
            .expect("produce");
    }

    /// Produces a message as the client's direct transport does: no record.
    pub async fn produce_direct(&self, message: &Message) {
        self.queue
            .produce(
                Topic::Messages(Channel::Sms, message.priority),
                &message.to,
                message.encode(),
            )
            .await
            .expect("produce");
    }

    pub async fn submit(&self, to: &str, priority: Priority) -> MessageId {
        self.submit_with(to, priority, |_| {}).await
    }

    pub async fn submit_with(
        &self,
        to: &str,
        priority: Priority,
        edit: impl FnOnce(&mut Message),
    ) -> MessageId {
        let id = self.create_with(to, priority, edit).await;
        self.produce(&id).await;
        id
    }

    /// Submits `n` bulk messages, to +14155550000 onwards.
    pub async fn submit_bulk(&self, n: usize) {
        for i in 0..n {
            self.submit(&format!("+1415555{i:04}"), Priority::Bulk)
                .await;
        }
    }

    /// Submits a critical message (to +14155560000 onwards) every `every`
    /// for `lasting`; returns how many.
    pub async fn submit_critical_every(&self, every: Duration, lasting: Duration) -> usize {
        let started = Instant::now();
        let mut tick = tokio::time::interval(every);
        let mut critical = 0;
        while started.elapsed() < lasting {
            tick.tick().await;
            self.submit(
                &format!("+1415556{:04}", critical % 10_000),
                Priority::Critical,
            )
            .await;
            critical += 1;
        }
        critical
    }

    /// A consumer of the outcomes topic, in a group of its own.
    pub async fn outcomes(&self) -> Arc<dyn QueueConsumer> {
        self.queue
            .group_consumer(Topic::Outcomes, "test", ConsumerSpec { index: 0, count: 1 })
            .await
            .expect("outcomes")
    }

    pub async fn record(&self, id: &MessageId) -> MessageRecord {
        self.store.get(id).await.expect("get").expect("stored")
    }

    /// Waits (on tokio's clock) until `check` holds; fails after `within`.
    pub async fn wait_until(&self, within: Duration, check: impl Fn() -> bool) {
        let deadline = Instant::now() + within;
        while !check() {
            assert!(Instant::now() < deadline, "not reached within {within:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_for(&self, id: &MessageId, status: Status, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            // A directly produced message is stored only when dispatched.
            let record = self.store.get(id).await.expect("get");
            if record.as_ref().is_some_and(|r| r.status == status) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id} is not {status} after {within:?}: {record:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Claims a stored message for `who` for 6 s, as a dispatcher does.
    pub async fn claim_as(&self, id: &MessageId, who: &str) -> Claim {
        let now = mdc_core::now();
        self.store
            .claim(id, now, now + chrono::Duration::seconds(6), who)
            .await
            .expect("claim")
    }

    /// The vendor takes a message whose dispatcher then dies before
    /// recording anything; its lane record is delivered again.
    pub async fn sent_by_a_dead_dispatcher(&self, id: &MessageId) -> Receipt {
        let message = self.record(id).await.message;
        let receipt = self
            .provider
            .send(&message)
            .await
            .expect("the vendor took it");
        self.produce(id).await;
        receipt
    }

    /// Submits messages to `a` and `b` behind a rate limit with one token
    /// free: whichever takes it is sent; the other, returned with its
    /// recipient, waits for the next token.
    pub async fn one_waiting_for_a_token(
        &self,
        a: &'static str,
        b: &'static str,
    ) -> (MessageId, &'static str) {
        let first = self.submit(a, Priority::Normal).await;
        let second = self.submit(b, Priority::Normal).await;
        self.wait_until(Duration::from_secs(10), || {
            self.provider.sends(a) + self.provider.sends(b) == 1
        })
        .await;
        if self.provider.sends(a) == 0 {
            (first, a)
        } else {
            (second, b)
        }
    }

    /// The vendor's `delivered` report for a message it took under
    /// `provider_message_id`, applied to the store; the status after it.
    pub async fn report_delivered(&self, id: &MessageId, provider_message_id: &str) -> Status {
        let report = Transition::Reported {
            status: Status::Delivered,
            provider: "scripted".into(),
            provider_message_id: provider_message_id.into(),
            event: Event::new("test", "delivered"),
        };
        self.store.update(id, report).await.expect("report");
        self.record(id).await.status
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            task.await.expect("task");
        }
    }
}
