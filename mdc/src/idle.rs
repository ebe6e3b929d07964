//! Memory handed back by threads with nothing to do. jemalloc keeps each
//! thread's recently freed blocks for that thread to reuse (its thread
//! cache); a thread that goes idle keeps them, and a minute after a run at
//! 200 requests in flight the server's threads held about 6 MB so
//! (docs/benchmarks.md). The binary says how a thread hands its cache back
//! ([`set_release`]); the runtime's workers do it when they park, the HTTP
//! workers once a second, the database writers after a second with nothing
//! to write; each at most once a second.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// The least time between two releases by one thread.
const EVERY: Duration = Duration::from_secs(1);

/// Sets how a thread hands its cache back (for the database writers too);
/// the first call wins. Without it, nothing is released.
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
    mdc_embedded::on_writer_idle(release);
}

/// Hands this thread's cache back, unless it did less than a second ago.
pub fn release_now_and_then() {
    thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });
    let Some(release) = RELEASE.get() else {
        return;
    };
    let due = LAST.with(|last| {
        let now = Instant::now();
        let due = last.get().is_none_or(|at| now.duration_since(at) >= EVERY);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        release();
    }
}

/// On an HTTP worker (its own single-threaded runtime, which has no park
/// hook): releases once a second for as long as the worker runs.
pub(crate) fn release_periodically() {
    if RELEASE.get().is_none() {
        return;
    }
    tokio::task::spawn_local(async {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            release_now_and_then();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local!(static RELEASED: Cell<usize> = const { Cell::new(0) });

    /// Counts per thread: other tests' database writers may run it too.
    fn count() {
        RELEASED.with(|n| n.set(n.get() + 1));
    }

    #[test]
    fn a_thread_releases_at_most_once_a_second() {
        set_release(count);
        for _ in 0..2 {
            // Each thread has its own second.
            std::thread::spawn(|| {
                release_now_and_then();
                release_now_and_then();
                release_now_and_then();
                assert_eq!(RELEASED.with(Cell::get), 1);
            })
            .join()
            .expect("thread");
        }
    }
}
