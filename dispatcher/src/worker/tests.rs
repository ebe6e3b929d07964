use super::*;
use mdc_core::memory::{MemoryQueue, MemoryRetry, MemoryStore};
use mdc_core::ports::Verify;

/// Every record in flight holds these futures, and a future is copied
/// whole (every byte of its largest state) when it is made and moved:
/// nested unboxed, a record's came to 5.5 KB and were copied at each
/// level. The deep and the rare steps are boxed; this keeps them so.
#[test]
fn a_records_dispatch_futures_stay_small() {
    let dispatcher = Dispatcher::new(
        Arc::new(MemoryQueue::default()),
        Arc::new(MemoryStore::default()),
        Arc::new(MemoryRetry::default()),
        HashMap::new(),
        Arc::new(mdc_embedded::MemoryCache::default()),
        DispatcherConfig::default(),
    );
    let message = mdc_core::contract::sample_message("+919876543210");
    let record = MessageRecord::new(message.clone(), Status::Queued, Event::new("t", "t"));
    let delivery = Delivery {
        topic: Topic::Messages(Channel::Sms, message.priority),
        partition: 0,
        offset: 0,
        key: message.to.clone(),
        payload: message.encode(),
    };
    let mut waited = false;
    let held = Held::new(mdc_core::now());
    let outcome = Transition::event(Event::new("t", "t"));
    let sizes = [
        (
            "handle_record",
            size_of_val(&dispatcher.handle_record(&delivery)),
        ),
        (
            "dispatch",
            size_of_val(&dispatcher.dispatch(&message, &mut waited)),
        ),
        (
            "attempt",
            size_of_val(&dispatcher.attempt(record.clone(), Verify::No, &held)),
        ),
        (
            "store_outcome",
            size_of_val(&dispatcher.store_outcome(&record, outcome)),
        ),
    ];
    // About a quarter over today's sizes (which vary a little with the
    // features a build unifies): a step that inlines a large one fails.
    let bounds = [1280, 640, 3328, 960];
    for ((name, size), bound) in sizes.into_iter().zip(bounds) {
        assert!(
            size <= bound,
            "{name}'s future is {size} bytes, over {bound}"
        );
    }
}
