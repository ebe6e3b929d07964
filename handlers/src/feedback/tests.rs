use std::sync::Arc;
use std::time::Duration;

use mdc_core::memory::{MemoryQueue, MemoryRetry};
use tokio_util::sync::CancellationToken;

use super::{Feedback, FeedbackConfig};

/// A run dropped midway, as a panic drops it before `supervise` starts
/// another, stops the tasks it started: a restart leaves one of each.
#[tokio::test(start_paused = true)]
async fn a_run_dropped_midway_stops_the_tasks_it_started() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = mdc_embedded::open_file(dir.path()).expect("the data file opens");
    let webhooks =
        Arc::new(mdc_embedded::EmbeddedWebhooks::open(db).expect("the webhook store opens"));
    let feedback = Arc::new(Feedback::new(
        Arc::new(MemoryQueue::default()),
        webhooks,
        Arc::new(MemoryRetry::default()),
        FeedbackConfig::default(),
    ));
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(feedback.clone().run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The run, its retry loop and its pruner hold the handler; the endpoint
    // reader holds the endpoints' view.
    assert_eq!(Arc::strong_count(&feedback), 4);
    assert_eq!(Arc::strong_count(&feedback.endpoints), 2);

    run.abort();
    assert!(run.await.expect_err("aborted").is_cancelled());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(Arc::strong_count(&feedback), 1, "a task outlived its run");
    assert_eq!(
        Arc::strong_count(&feedback.endpoints),
        1,
        "the endpoint reader outlived its run"
    );
    assert!(
        !shutdown.is_cancelled(),
        "the process's stop was not touched"
    );
}
