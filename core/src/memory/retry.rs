//! The retry scheduler in memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{lock, IDLE_WAIT};
use crate::ports::{RetryError, RetryItem, RetryScheduler};
use crate::MessageId;

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
