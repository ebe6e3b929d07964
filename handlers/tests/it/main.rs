//! The reconciler on the embedded backends.

use std::sync::Arc;
use std::time::Duration;

use mdc_core::ports::{RetryScheduler, StatusUpdate, Store};
use mdc_core::{Event, MessageRecord, Status};
use mdc_embedded::{Embedded, QueueLayout};
use mdc_handlers::{Reconciler, ReconcilerConfig};

#[tokio::test]
async fn a_message_whose_retry_timer_was_lost_is_scheduled_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = Embedded::open(dir.path(), QueueLayout::default()).expect("open");
    let store: Arc<dyn Store> = embedded.store.clone();
    let retry: Arc<dyn RetryScheduler> = embedded.retry.clone();

    let stranded = mdc_core::contract::sample_message("+14155550123");
    let waiting = mdc_core::contract::sample_message("+14155550124");
    let now = mdc_core::now();
    for (message, next) in [
        (&stranded, now - chrono::Duration::minutes(5)),
        (&waiting, now + chrono::Duration::minutes(5)),
    ] {
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
        let mut update = StatusUpdate::to(Status::Sending, Event::new("test", "attempt 1 failed"));
        update.end_attempt = true;
        update.next_attempt_at = Some(next);
        store.update(&message.id, update).await.expect("update");
    }

    let reconciler = Reconciler::new(store.clone(), retry.clone(), ReconcilerConfig::default());
    assert_eq!(
        reconciler.pass().await.expect("pass"),
        1,
        "only the overdue one"
    );
    let due = tokio::time::timeout(Duration::from_secs(5), retry.take_due(10))
        .await
        .expect("in time")
        .expect("take");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].message_id, stranded.id);
}
