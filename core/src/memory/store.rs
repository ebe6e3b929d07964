//! The store in memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::ports::store::{apply_claim, apply_update};
use crate::ports::{Claim, Created, ListFilter, Store, StoreError, Transition, Updated};
use crate::{MessageId, MessageRecord, Status, Timestamp};

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
