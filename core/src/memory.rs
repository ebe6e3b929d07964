//! In-memory ports for component tests (feature `testing`): a store, a
//! queue and a retry scheduler that keep everything in this process, follow
//! the same rules as the real backends ([`apply_claim`](crate::ports::store::apply_claim),
//! [`apply_update`](crate::ports::store::apply_update)),
//! and fail on command, so a test can say "accept, then fail the store
//! write". They use tokio's clock, so tests can run on paused time.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

mod queue;
mod registries;
mod retry;
mod store;

pub use queue::MemoryQueue;
pub use registries::{MemoryCheckpoints, MemoryKeys, MemorySuppressions};
pub use retry::MemoryRetry;
pub use store::MemoryStore;

/// How long an empty fetch (or a wait for a due retry) waits.
const IDLE_WAIT: Duration = Duration::from_millis(200);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
