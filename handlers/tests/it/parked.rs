//! Parked reports sent back to be applied again
//! (`mdc_handlers::parked::redrive`).

use std::sync::Arc;
use std::time::Duration;

use mdc_core::memory::{MemoryQueue, MemoryStore};
use mdc_core::ports::{Queue, Topic};
use mdc_core::{MessageId, Status};

use crate::responses::{delivered_by, report, running, sent, status};

/// Parked reports go back onto the responses topic, at most `limit` at a
/// time and oldest first, and are applied; none is left behind or moved
/// twice, and an empty parked topic answers 0 once its patience is out.
#[tokio::test(start_paused = true)]
async fn parked_reports_go_back_to_be_applied_again() {
    let store = Arc::new(MemoryStore::default());
    let queue = Arc::new(MemoryQueue::default());
    let ids = [
        sent(&store, "+14155550165").await,
        sent(&store, "+14155550166").await,
        sent(&store, "+14155550167").await,
    ];
    for id in &ids {
        queue
            .produce(Topic::ParkedReports, &format!("v-{id}"), report(id))
            .await
            .expect("park");
    }
    let patience = Duration::from_secs(5);

    let moved = mdc_handlers::parked::redrive(queue.as_ref(), 2, patience)
        .await
        .expect("redrive");
    assert_eq!(moved, 2);
    assert_eq!(queue.pending(Topic::ParkedReports), 1);
    assert_eq!(queue.pending(Topic::Responses), 2);

    let (_handler, shutdown, task) = running(&store, &queue);
    let started = tokio::time::Instant::now();
    for id in &ids[..2] {
        delivered_by(&store, id, started, Duration::from_secs(5), "not applied").await;
    }
    assert_eq!(status(&store, &ids[2]).await, Status::Sent, "still parked");

    let moved = mdc_handlers::parked::redrive(queue.as_ref(), 10, patience)
        .await
        .expect("redrive");
    assert_eq!(moved, 1);
    delivered_by(
        &store,
        &ids[2],
        started,
        Duration::from_secs(10),
        "not applied",
    )
    .await;

    let asked = tokio::time::Instant::now();
    let moved = mdc_handlers::parked::redrive(queue.as_ref(), 10, patience)
        .await
        .expect("redrive");
    assert_eq!(moved, 0);
    assert!(asked.elapsed() >= patience, "gave up before its patience");
    assert_eq!(queue.pending(Topic::ParkedReports), 0);
    shutdown.cancel();
    task.await.expect("join").expect("run");
}

/// A redrive that meets a failing queue says so and leaves the reports
/// parked, to be moved by the next one.
#[tokio::test(start_paused = true)]
async fn a_redrive_on_a_failing_queue_leaves_the_reports_parked() {
    let store = Arc::new(MemoryStore::default());
    let queue = Arc::new(MemoryQueue::default());
    let id = sent(&store, "+14155550168").await;
    queue
        .produce(Topic::ParkedReports, "p", report(&id))
        .await
        .expect("park");
    queue.set_down(true);
    let unfinished = mdc_handlers::parked::redrive(queue.as_ref(), 10, Duration::from_secs(5))
        .await
        .expect_err("the queue is down");
    assert_eq!(unfinished.moved, 0);
    queue.set_down(false);
    assert_eq!(queue.pending(Topic::ParkedReports), 1, "still parked");
    assert_eq!(queue.pending(Topic::Responses), 0);
    let moved = mdc_handlers::parked::redrive(queue.as_ref(), 10, Duration::from_secs(5))
        .await
        .expect("redrive");
    assert_eq!(moved, 1);
}

/// On the embedded queue, which knows how many reports are parked, a
/// redrive moves exactly those and answers at once when none are, however
/// long its patience.
#[tokio::test]
async fn an_embedded_redrive_moves_what_is_parked_and_no_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = mdc_embedded::open_queue(dir.path(), mdc_embedded::QueueLayout::default())
        .expect("queue opens");
    let long = Duration::from_secs(3600);
    let at_once = Duration::from_secs(10);
    for n in 0..3 {
        let id = MessageId::generate();
        queue
            .produce(Topic::ParkedReports, &format!("p{n}"), report(&id))
            .await
            .expect("park");
    }
    let moved = tokio::time::timeout(
        at_once,
        mdc_handlers::parked::redrive(queue.as_ref(), 10, long),
    )
    .await
    .expect("answers without waiting out its patience")
    .expect("redrive");
    assert_eq!(moved, 3);
    assert_eq!(queue.lag(Topic::ParkedReports).await.expect("lag"), Some(0));
    assert_eq!(queue.lag(Topic::Responses).await.expect("lag"), Some(3));
    let moved = tokio::time::timeout(
        at_once,
        mdc_handlers::parked::redrive(queue.as_ref(), 10, long),
    )
    .await
    .expect("answers at once when nothing is parked")
    .expect("redrive");
    assert_eq!(moved, 0);
}
