//! The [`RetryScheduler`] contract.
//!
//! Cases take a factory rather than an instance: the restart case opens the
//! same state twice.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::ports::retry::{RetryItem, RetryScheduler};
use crate::{Channel, MessageId, Priority};

/// Opens the scheduler over one test's state; calling it again reopens it.
pub type Open =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn RetryScheduler>> + Send>> + Send + Sync>;

fn item_in(millis: i64) -> RetryItem {
    RetryItem {
        message_id: MessageId::generate(),
        channel: Channel::Sms,
        priority: Priority::Critical,
        due: crate::now() + chrono::Duration::milliseconds(millis),
    }
}

async fn take_within(scheduler: &Arc<dyn RetryScheduler>, within: Duration) -> Vec<RetryItem> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    while got.is_empty() && tokio::time::Instant::now() < deadline {
        let left = deadline - tokio::time::Instant::now();
        if let Ok(batch) = tokio::time::timeout(left, scheduler.take_due(100)).await {
            got = batch.expect("take_due");
        }
    }
    got
}

pub async fn items_are_handed_out_when_due_not_before(open: Open) {
    let scheduler = open().await;
    let item = item_in(700);
    scheduler.schedule(item.clone()).await.expect("schedule");
    // A probe well before the due time; a slow machine may reach the due
    // time within it, so what it gets is judged by the clock, not the probe.
    let mut got = take_within(&scheduler, Duration::from_millis(300)).await;
    assert!(
        got.is_empty() || crate::now() >= item.due,
        "handed out early: {got:?}"
    );
    if got.is_empty() {
        got = take_within(&scheduler, Duration::from_secs(10)).await;
    }
    assert_eq!(got, vec![item.clone()]);
    assert!(crate::now() >= item.due);
    scheduler.complete(&item).await.expect("complete");
}

pub async fn each_item_is_handed_out_once(open: Open) {
    let scheduler = open().await;
    let items: Vec<_> = (0..5).map(|_| item_in(0)).collect();
    for item in &items {
        scheduler.schedule(item.clone()).await.expect("schedule");
    }
    let mut got = Vec::new();
    while got.len() < 5 {
        let batch = take_within(&scheduler, Duration::from_secs(10)).await;
        assert!(!batch.is_empty(), "only {} of 5 items came", got.len());
        got.extend(batch);
    }
    assert_eq!(got.len(), 5);
    let again = take_within(&scheduler, Duration::from_millis(500)).await;
    assert!(again.is_empty(), "handed out twice: {again:?}");
}

pub async fn rescheduling_replaces_and_cancel_removes(open: Open) {
    let scheduler = open().await;
    let mut item = item_in(60_000);
    scheduler.schedule(item.clone()).await.expect("schedule");
    item.due = crate::now();
    scheduler.schedule(item.clone()).await.expect("reschedule");
    let cancelled = item_in(0);
    scheduler
        .schedule(cancelled.clone())
        .await
        .expect("schedule");
    scheduler
        .cancel(&cancelled.message_id)
        .await
        .expect("cancel");
    let got = take_within(&scheduler, Duration::from_secs(10)).await;
    assert_eq!(got, vec![item]);
    let again = take_within(&scheduler, Duration::from_millis(500)).await;
    assert!(again.is_empty(), "{again:?}");
}

pub async fn uncompleted_items_survive_a_restart(open: Open) {
    let done = item_in(0);
    let pending = item_in(0);
    let later = item_in(400);
    {
        let scheduler = open().await;
        for item in [&done, &pending, &later] {
            scheduler.schedule(item.clone()).await.expect("schedule");
        }
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend(take_within(&scheduler, Duration::from_secs(10)).await);
        }
        scheduler.complete(&done).await.expect("complete");
    }
    let scheduler = open().await;
    // Backends that hand out again after an in-flight lease may repeat an
    // item (at least once); what matters is which items come back.
    let mut got = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 2 && tokio::time::Instant::now() < deadline {
        for item in take_within(&scheduler, Duration::from_secs(2)).await {
            got.insert(item.message_id.clone(), item);
        }
    }
    let mut got: Vec<RetryItem> = got.into_values().collect();
    got.sort_by_key(|item| item.due);
    assert_eq!(
        got,
        vec![pending, later],
        "the uncompleted items, and not the completed one"
    );
}

/// Expands to one test per case of the retry contract. `$open` is an
/// expression yielding a fresh [`Open`] factory (one per test).
#[macro_export]
macro_rules! retry_contract {
    ($open:expr) => {
        $crate::__contract_cases!(
            retry,
            $open,
            [
                items_are_handed_out_when_due_not_before,
                each_item_is_handed_out_once,
                rescheduling_replaces_and_cancel_removes,
                uncompleted_items_survive_a_restart,
            ]
        );
    };
}
