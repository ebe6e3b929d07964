//! Reports that came before their message's `sent` write wait beside
//! the reports behind them; the response handler on in-memory ports, on
//! paused time.

use std::sync::Arc;
use std::time::Duration;

use mdc_core::memory::{MemoryQueue, MemoryStore};
use mdc_core::ports::{Queue, Topic};
use mdc_core::Status;
use mdc_handlers::ResponseHandler;

use crate::responses::{
    claimed, delivered_by, failure_report, now_sent, report, running, sent, status,
};

/// Waits until the handler has seen `n` reports overtake their `sent`.
async fn overtaken(handler: &ResponseHandler, n: u64) {
    let started = tokio::time::Instant::now();
    while handler.overtaken() < n {
        assert!(started.elapsed() < Duration::from_secs(1), "not fetched");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A report waiting for its message's `sent` write holds up no report
/// behind it: the next one is applied at once, not after the first one's
/// wait (up to 22 s) ends; the waiting one is applied once `sent` lands.
#[tokio::test(start_paused = true)]
async fn a_report_waiting_for_its_sent_holds_up_no_report_behind_it() {
    let store = Arc::new(MemoryStore::default());
    let queue = Arc::new(MemoryQueue::default());
    let (handler, shutdown, task) = running(&store, &queue);

    let early = claimed(&store, "+14155550161").await;
    queue
        .produce(Topic::Responses, "e", report(&early))
        .await
        .expect("produce");
    overtaken(&handler, 1).await;

    let later = sent(&store, "+14155550162").await;
    queue
        .produce(Topic::Responses, "l", report(&later))
        .await
        .expect("produce");
    let started = tokio::time::Instant::now();
    delivered_by(
        &store,
        &later,
        started,
        Duration::from_secs(1),
        "held up behind the waiting report",
    )
    .await;
    assert_eq!(status(&store, &early).await, Status::Sending);
    assert_eq!(handler.parked(), 0);

    now_sent(&store, &early).await;
    delivered_by(
        &store,
        &early,
        started,
        Duration::from_secs(30),
        "never applied",
    )
    .await;
    assert_eq!(handler.parked(), 0);
    assert_eq!(queue.pending(Topic::Responses), 0, "both acknowledged");
    shutdown.cancel();
    task.await.expect("join").expect("run");
}

/// A report of the same message (its key) that comes behind one waiting
/// for `sent` waits behind it: the first report decides, as it would
/// have in order.
#[tokio::test(start_paused = true)]
async fn a_report_behind_a_waiting_one_of_its_message_waits_its_turn() {
    let store = Arc::new(MemoryStore::default());
    let queue = Arc::new(MemoryQueue::default());
    let (handler, shutdown, task) = running(&store, &queue);

    let id = claimed(&store, "+14155550163").await;
    let failed = failure_report(&id, "unknown subscriber", false);
    queue
        .produce(Topic::Responses, "m", failed.payload)
        .await
        .expect("produce");
    overtaken(&handler, 1).await;
    let started = tokio::time::Instant::now();
    // The first is tried again at about 0.2, 0.6 and 1.4 s. The second
    // comes at 0.7 s and `sent` at 1 s: tried on its own, the second
    // would be applied first, at about 1.3 s.
    tokio::time::sleep(Duration::from_millis(700)).await;
    queue
        .produce(Topic::Responses, "m", report(&id))
        .await
        .expect("produce");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handler.overtaken(), 1, "held behind the first, untried");
    now_sent(&store, &id).await;
    while queue.pending(Topic::Responses) > 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "not applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        status(&store, &id).await,
        Status::Failed,
        "the first decides"
    );
    assert_eq!(handler.parked(), 0);
    shutdown.cancel();
    task.await.expect("join").expect("run");
}

/// A stop while reports wait (one for its `sent`, one behind it) ends
/// at once and leaves both unacknowledged, to be handed out again.
#[tokio::test(start_paused = true)]
async fn a_stop_leaves_waiting_reports_for_the_next_run() {
    let store = Arc::new(MemoryStore::default());
    let queue = Arc::new(MemoryQueue::default());
    let (handler, shutdown, task) = running(&store, &queue);

    let id = claimed(&store, "+14155550164").await;
    queue
        .produce(Topic::Responses, "w", report(&id))
        .await
        .expect("produce");
    overtaken(&handler, 1).await;
    queue
        .produce(Topic::Responses, "w", report(&id))
        .await
        .expect("produce");
    tokio::time::sleep(Duration::from_millis(50)).await;

    let stopping = tokio::time::Instant::now();
    shutdown.cancel();
    task.await.expect("join").expect("run");
    assert!(
        stopping.elapsed() < Duration::from_millis(100),
        "the stop waited for the reports"
    );
    assert_eq!(queue.pending(Topic::Responses), 2, "left for the next run");
    assert_eq!(status(&store, &id).await, Status::Sending);
    assert_eq!(handler.parked(), 0);
}
