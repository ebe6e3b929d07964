//! Reports that overtook their message's `sent` write, each waiting for
//! it on a task of its own with the later reports of its message behind
//! it, so the reports of other messages are not held up.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use mdc_core::ports::{Delivery, QueueConsumer};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::{ResponseHandler, Unapplied};

/// How many reports wait for their message's `sent` at once (each with
/// the reports of its key that came behind it) beside the batches that
/// follow them; past this, one waits in its batch, holding up the next
/// fetch.
pub(super) const MAX_CATCHING_UP: usize = 4096;

/// Per key, the reports that came behind one waiting for its message's
/// `sent` write.
pub(super) type Behind = Arc<Mutex<HashMap<String, VecDeque<Delivery>>>>;

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ResponseHandler {
    /// Applies a report that overtook its message's `sent` write once that
    /// is stored (or parks it), then the reports with its key that came
    /// behind it, in order; at most [`MAX_CATCHING_UP`] such tasks run,
    /// so the reports of other messages are not held up. Each is
    /// acknowledged when applied or parked, out of order: until then, the
    /// queue hands it out again after a restart.
    pub(super) async fn catch_up(
        self: Arc<Self>,
        consumer: Arc<dyn QueueConsumer>,
        mut delivery: Delivery,
        mut first: Result<(), Unapplied>,
        behind: Behind,
        shutdown: CancellationToken,
        room: OwnedSemaphorePermit,
    ) {
        loop {
            let key = delivery.key.clone();
            if !self.process(&consumer, delivery, first, &shutdown).await || shutdown.is_cancelled()
            {
                return;
            }
            let next = {
                let mut waiting = lock(&behind);
                let next = waiting.get_mut(&key).and_then(VecDeque::pop_front);
                if next.is_none() {
                    waiting.remove(&key);
                }
                next
            };
            match next {
                Some(after) => {
                    first = self.apply(&after).await;
                    delivery = after;
                }
                None => break,
            }
        }
        drop(room);
    }
}
