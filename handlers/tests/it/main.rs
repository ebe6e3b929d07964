//! The reconciler on the embedded backends.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mdc_core::ports::{RetryScheduler, Store, Transition};
use mdc_core::{Event, MessageId, MessageRecord, Status};
use mdc_embedded::{Embedded, QueueLayout};
use mdc_handlers::{Reconciler, ReconcilerConfig};

/// Stores a message created `age` ago whose attempt failed and whose next
/// attempt is due at `next`, without a retry timer.
async fn failed_attempt(
    store: &Arc<dyn Store>,
    to: &str,
    age: chrono::Duration,
    next: mdc_core::Timestamp,
) -> MessageId {
    let now = mdc_core::now();
    let mut message = mdc_core::contract::sample_message(to);
    message.created_at = now - age;
    let record = MessageRecord::new(
        message.clone(),
        Status::Queued,
        Event::new("test", "queued"),
    );
    store.create(&record).await.expect("create");
    store
        .claim(
            &message.id,
            now,
            now + chrono::Duration::seconds(30),
            "test",
        )
        .await
        .expect("claim");
    // The attempt failed and a retry was due, but its timer never got written.
    let update = Transition::AttemptFailed {
        attempt: 1,
        provider: "sim-sms".into(),
        next_attempt_at: next,
        verify_first: false,
        event: Event::new("test", "attempt 1 failed"),
    };
    store.update(&message.id, update).await.expect("update");
    message.id
}

fn open(dir: &std::path::Path) -> (Arc<dyn Store>, Arc<dyn RetryScheduler>) {
    let embedded = Embedded::open(dir, QueueLayout::default()).expect("open");
    (embedded.store.clone(), embedded.retry.clone())
}

async fn take_all(retry: &Arc<dyn RetryScheduler>) -> HashSet<MessageId> {
    let mut got = HashSet::new();
    // Until a take comes back empty or finds nothing within half a second.
    while let Ok(batch) =
        tokio::time::timeout(Duration::from_millis(500), retry.take_due(100)).await
    {
        let batch = batch.expect("take");
        if batch.is_empty() {
            break;
        }
        got.extend(batch.into_iter().map(|item| item.message_id));
    }
    got
}

#[tokio::test]
async fn a_message_whose_retry_timer_was_lost_is_scheduled_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, retry) = open(dir.path());
    let now = mdc_core::now();
    let ten_minutes = chrono::Duration::minutes(10);
    let stranded = failed_attempt(
        &store,
        "+14155550123",
        ten_minutes,
        now - chrono::Duration::minutes(5),
    )
    .await;
    failed_attempt(
        &store,
        "+14155550124",
        ten_minutes,
        now + chrono::Duration::minutes(5),
    )
    .await;

    let reconciler = Reconciler::new(store.clone(), retry.clone(), ReconcilerConfig::default());
    assert_eq!(
        reconciler.pass().await.expect("pass"),
        1,
        "only the overdue one"
    );
    assert_eq!(take_all(&retry).await, HashSet::from([stranded]));
}

/// More messages in `sending` than one pass looks at in one go: the pass
/// pages through them all, and the newest ones (too young to be stranded)
/// do not hide the old ones.
#[tokio::test]
async fn a_pass_pages_through_every_sending_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, retry) = open(dir.path());
    let now = mdc_core::now();
    let mut stranded = HashSet::new();
    for i in 0..7 {
        let age = chrono::Duration::minutes(10 + i);
        let id = failed_attempt(
            &store,
            &format!("+1415555{:04}", 200 + i),
            age,
            now - chrono::Duration::minutes(5),
        )
        .await;
        stranded.insert(id);
    }
    // In flight right now, waiting for their retry.
    for i in 0..5 {
        failed_attempt(
            &store,
            &format!("+1415555{:04}", 300 + i),
            chrono::Duration::seconds(i),
            now + chrono::Duration::seconds(10),
        )
        .await;
    }

    let config = ReconcilerConfig {
        batch: 2,
        ..ReconcilerConfig::default()
    };
    let reconciler = Reconciler::new(store.clone(), retry.clone(), config);
    assert_eq!(reconciler.pass().await.expect("pass"), 7);
    assert_eq!(take_all(&retry).await, stranded);
}
