use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use mdc_core::ports::{RetryError, RetryItem, RetryScheduler};
use mdc_core::{Channel, MessageId, Priority, Timestamp};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::db::{Db, DbError};

/// message id → pending item (JSON).
/// The message retry timers.
const RETRIES: &str = "retries";
/// The webhook delivery timers ([`EmbeddedRetry::open_webhooks`]).
const WEBHOOK_RETRIES: &str = "webhook_retries";

fn timers(name: &'static str) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// Longest sleep of `take_due` before it returns an empty batch.
const IDLE_WAIT: Duration = Duration::from_millis(500);

#[derive(Serialize, Deserialize)]
struct Stored {
    channel: Channel,
    priority: Priority,
    due: Timestamp,
}

#[derive(Default)]
struct Pending {
    /// (due, id) of items not yet handed out.
    by_due: BTreeSet<(Timestamp, String)>,
    items: HashMap<String, RetryItem>,
}

impl Pending {
    fn insert(&mut self, item: RetryItem) {
        self.remove(item.message_id.as_str());
        self.by_due
            .insert((item.due, item.message_id.as_str().to_owned()));
        self.items.insert(item.message_id.as_str().to_owned(), item);
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.items.remove(id) {
            self.by_due.remove(&(old.due, id.to_owned()));
        }
    }
}

/// Durable timers on the embedded database, with the schedule mirrored in
/// memory so waiting costs nothing.
pub struct EmbeddedRetry {
    db: Db,
    table: &'static str,
    pending: Mutex<Pending>,
    changed: Notify,
}

impl From<DbError> for RetryError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Closed => RetryError::Unavailable(e.into()),
            other => RetryError::Other(other.into()),
        }
    }
}

impl EmbeddedRetry {
    pub fn open(db: Db) -> Result<Self, DbError> {
        Self::open_table(db, RETRIES)
    }

    /// The timers of webhook deliveries: a table of their own, keyed by
    /// delivery.
    pub fn open_webhooks(db: Db) -> Result<Self, DbError> {
        Self::open_table(db, WEBHOOK_RETRIES)
    }

    fn open_table(db: Db, table: &'static str) -> Result<Self, DbError> {
        let mut pending = Pending::default();
        db.write_now(|txn| {
            let table = txn.open_table(timers(table))?;
            for entry in table.iter()? {
                let (id, value) = entry?;
                let stored: Stored = serde_json::from_slice(value.value())?;
                let message_id: MessageId = id
                    .value()
                    .parse()
                    .map_err(|_| DbError::Storage(format!("bad id in retries: {}", id.value())))?;
                pending.insert(RetryItem {
                    message_id,
                    channel: stored.channel,
                    priority: stored.priority,
                    due: stored.due,
                });
            }
            Ok(())
        })?;
        Ok(Self {
            db,
            table,
            pending: Mutex::new(pending),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Pending>, RetryError> {
        self.pending
            .lock()
            .map_err(|_| RetryError::Other("retry state lock poisoned".into()))
    }

    /// Items scheduled and not yet completed.
    pub fn len(&self) -> Result<usize, RetryError> {
        Ok(self.lock()?.items.len())
    }

    pub fn is_empty(&self) -> Result<bool, RetryError> {
        Ok(self.len()? == 0)
    }
}

#[async_trait]
impl RetryScheduler for EmbeddedRetry {
    async fn schedule(&self, item: RetryItem) -> Result<(), RetryError> {
        let stored = serde_json::to_vec(&Stored {
            channel: item.channel,
            priority: item.priority,
            due: item.due,
        })
        .map_err(|e| RetryError::Other(e.into()))?;
        let id = item.message_id.as_str().to_owned();
        let table = self.table;
        self.db
            .write(true, move |txn| {
                txn.open_table(timers(table))?
                    .insert(id.as_str(), stored.as_slice())?;
                Ok(())
            })
            .await?;
        self.lock()?.insert(item);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn cancel(&self, message_id: &MessageId) -> Result<(), RetryError> {
        let id = message_id.as_str().to_owned();
        self.lock()?.remove(&id);
        let table = self.table;
        self.db
            .write(true, move |txn| {
                txn.open_table(timers(table))?.remove(id.as_str())?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    async fn take_due(&self, max: usize) -> Result<Vec<RetryItem>, RetryError> {
        let changed = self.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = mdc_core::now();
        let (due, wait) = {
            let mut pending = self.lock()?;
            let mut due = Vec::new();
            while due.len() < max {
                match pending.by_due.first() {
                    Some((at, _)) if *at <= now => {}
                    _ => break,
                }
                if let Some((_, id)) = pending.by_due.pop_first() {
                    if let Some(item) = pending.items.remove(&id) {
                        due.push(item);
                    }
                }
            }
            let wait = pending
                .by_due
                .first()
                .map(|(at, _)| (*at - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(IDLE_WAIT)
                .min(IDLE_WAIT);
            (due, wait)
        };
        if due.is_empty() {
            let _ = tokio::time::timeout(wait, changed).await;
        }
        Ok(due)
    }

    async fn complete(&self, item: &RetryItem) -> Result<(), RetryError> {
        let id = item.message_id.as_str().to_owned();
        let due = item.due;
        let table = self.table;
        self.db
            .write(false, move |txn| {
                let mut table = txn.open_table(timers(table))?;
                let current: Option<Stored> = match table.get(id.as_str())? {
                    Some(v) => Some(serde_json::from_slice(v.value())?),
                    None => None,
                };
                // Rescheduled since it was handed out: keep the newer schedule.
                if current.is_some_and(|c| c.due == due) {
                    table.remove(id.as_str())?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }
}
