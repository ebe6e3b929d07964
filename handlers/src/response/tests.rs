use super::*;
use mdc_core::memory::{MemoryQueue, MemoryStore};

/// Every report in flight holds this future, copied whole when it is
/// made and moved; the rare steps (suppression, a report applied again,
/// outcome events) are boxed so it stays small (it was 4 KB).
#[test]
fn a_reports_future_stays_small() {
    let handler = ResponseHandler::new(
        Arc::new(MemoryQueue::default()),
        Arc::new(MemoryStore::default()),
        Arc::new(mdc_embedded::MemoryCache::default()),
    );
    let delivery = Delivery {
        topic: Topic::Responses,
        partition: 0,
        offset: 0,
        key: "k".to_owned(),
        payload: Vec::new(),
    };
    let size = size_of_val(&handler.apply(&delivery));
    // About a quarter over today's size (which varies a little with the
    // features a build unifies).
    assert!(size <= 2048, "apply's future is {size} bytes");
}
