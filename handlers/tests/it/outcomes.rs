//! What the response handler makes of a report's outcome: the event it
//! publishes, what it reads back for it, and the metrics it counts.

use std::sync::Arc;

use mdc_core::memory::{MemoryQueue, MemoryStore};
use mdc_core::ports::{Store, Topic, Transition};
use mdc_core::{DeliveryReport, Event, MessageId, ReportOutcome, Status};
use mdc_handlers::ResponseHandler;

use super::responses::{failure_report, report, sent, status, with_outcomes};

/// An outcome published again after later events were added to the trail
/// (support notes) still carries the reason and time of the event that
/// moved the message: outcomes read only the last events, and the whole
/// trail when the move is not among them.
#[tokio::test(start_paused = true)]
async fn a_republished_outcome_finds_its_move_behind_later_events() {
    use mdc_core::outcome::OutcomeEvent;

    let (store, outcomes, handler) = with_outcomes().await;
    let id = sent(&store, "+14155550162").await;
    let delivery = failure_report(&id, "number unreachable", false);
    handler.apply(&delivery).await.expect("apply");
    for i in 0..3 {
        let note = Transition::event(Event::new("support", format!("called the customer ({i})")));
        store.update(&id, note).await.expect("note");
    }
    handler.apply(&delivery).await.expect("apply again");
    let events: Vec<OutcomeEvent> = mdc_core::contract::queue::fetch_n(&outcomes, 2)
        .await
        .iter()
        .map(|d| serde_json::from_slice(&d.payload).expect("outcome"))
        .collect();
    assert_eq!(events[0].kind, "message.failed");
    assert_eq!(events[1], events[0], "the same event both times");
    assert_eq!(events[1].reason.as_deref(), Some("number unreachable"));
}

/// The outcome of a report just applied is made from the message and its
/// state, with the report's own event: no trail is read, and it is the
/// outcome the stored message makes.
#[tokio::test(start_paused = true)]
async fn an_applied_report_s_outcome_reads_no_trail() {
    use mdc_core::outcome::OutcomeEvent;

    let (store, outcomes, handler) = with_outcomes().await;
    let failed = sent(&store, "+14155550163").await;
    let delivered = sent(&store, "+14155550164").await;
    let read_before = store.events_read();
    handler
        .apply(&failure_report(&failed, "number unreachable", false))
        .await
        .expect("apply");
    let mut delivery = failure_report(&delivered, "", false);
    delivery.payload = report(&delivered);
    handler.apply(&delivery).await.expect("apply");
    assert_eq!(store.events_read(), read_before, "no trail read");

    let published: Vec<OutcomeEvent> = mdc_core::contract::queue::fetch_n(&outcomes, 2)
        .await
        .iter()
        .map(|d| serde_json::from_slice(&d.payload).expect("outcome"))
        .collect();
    for (event, id) in published.iter().zip([&failed, &delivered]) {
        let stored = store.get(id).await.expect("get").expect("stored");
        assert_eq!(
            Some(event),
            OutcomeEvent::of_message(&stored, None).as_ref()
        );
    }
    assert_eq!(published[0].kind, "message.failed");
    assert_eq!(published[0].reason.as_deref(), Some("number unreachable"));
    assert_eq!(published[1].kind, "message.delivered");
}

/// A report that only adds an event (a complaint, a delay) moves no status
/// and publishes no outcome: nothing of the message is read back for it.
#[tokio::test(start_paused = true)]
async fn an_event_only_report_reads_nothing_back() {
    let (store, _outcomes, handler) = with_outcomes().await;
    let id = sent(&store, "+14155550165").await;
    let mut complaint: DeliveryReport = serde_json::from_slice(&report(&id)).expect("report");
    complaint.outcome = ReportOutcome::Noted {
        details: "complaint (abuse)".into(),
        suppress: false,
    };
    let delivery = mdc_core::ports::Delivery {
        topic: Topic::Responses,
        partition: 0,
        offset: 0,
        key: "k".into(),
        payload: serde_json::to_vec(&complaint).expect("encode"),
    };
    let reads_before = store.recent_reads();
    handler.apply(&delivery).await.expect("apply");
    assert_eq!(store.recent_reads(), reads_before, "nothing read back");
    let stored = store.get(&id).await.expect("get").expect("stored");
    assert_eq!(stored.status, Status::Sent);
    assert!(stored
        .events
        .last()
        .is_some_and(|e| e.details.starts_with("complaint (abuse)")));
}

/// A metric's labels, sorted.
type Labels = Vec<(String, String)>;
/// A metric series: its name, its labels and its counter's count or its
/// histogram's number of values.
type Series = (String, Labels, u64);

/// The series of a snapshot named `name`: each one's labels, sorted, and
/// its counter's count or its histogram's number of values.
fn series(snapshot: &[Series], name: &str) -> Vec<(Labels, u64)> {
    let mut found: Vec<_> = snapshot
        .iter()
        .filter(|(n, ..)| n == name)
        .map(|(_, labels, n)| (labels.clone(), *n))
        .collect();
    found.sort();
    found
}

/// What `snapshotter` holds (taken once: a snapshot drains histograms).
fn snapshot(snapshotter: &metrics_util::debugging::Snapshotter) -> Vec<Series> {
    use metrics_util::debugging::DebugValue;
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let mut labels: Labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let n = match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(values) => values.len() as u64,
                DebugValue::Gauge(_) => 0,
            };
            (key.key().name().to_owned(), labels, n)
        })
        .collect()
}

/// A response handler on `store` and `queue` applies a `delivered` report
/// for `id` (sent), which moves it.
async fn delivered_by_report(store: &Arc<MemoryStore>, queue: &Arc<MemoryQueue>, id: &MessageId) {
    let handler = ResponseHandler::new(
        queue.clone(),
        store.clone(),
        Arc::new(mdc_embedded::MemoryCache::default()),
    );
    let delivery = mdc_core::ports::Delivery {
        topic: Topic::Responses,
        partition: 0,
        offset: 0,
        key: id.to_string(),
        payload: report(id),
    };
    handler.apply(&delivery).await.expect("applied");
    assert_eq!(status(store, id).await, Status::Delivered);
}

/// A report that moves a message counts its outcome the same whether a
/// reader wants the outcome event (published, made of the record the
/// write left) or none does (not made; counted from the write's brief).
#[test]
fn an_outcome_is_counted_whether_or_not_its_event_is_wanted() {
    let by_channel = |status: &str| {
        vec![
            ("channel".to_owned(), "sms".to_owned()),
            ("status".to_owned(), status.to_owned()),
        ]
    };
    for unwanted in [false, true] {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let store = Arc::new(MemoryStore::default());
        let queue = Arc::new(MemoryQueue::default());
        queue.set_outcomes_unwanted(unwanted);
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let id = sent(&store, "+14155550150").await;
                delivered_by_report(&store, &queue, &id).await;
            })
        });
        let snapshot = snapshot(&snapshotter);
        assert_eq!(
            series(&snapshot, "mdc_outcomes_total"),
            [(by_channel("delivered"), 1)],
            "unwanted: {unwanted}"
        );
        assert_eq!(
            series(&snapshot, "mdc_time_to_delivered_seconds"),
            [(vec![("channel".to_owned(), "sms".to_owned())], 1)],
            "unwanted: {unwanted}"
        );
        let (written, unwritten) = if unwanted { (0, 1) } else { (1, 0) };
        assert_eq!(queue.pending(Topic::Outcomes), written);
        assert_eq!(
            series(&snapshot, "mdc_outcome_events_unwritten_total")
                .first()
                .map_or(0, |(_, n)| *n),
            unwritten
        );
    }
}

/// A reader that comes to want outcomes while a report's write is under
/// way (an endpoint created meanwhile) gets the event of that move, though
/// none was wanted when the report was taken.
#[tokio::test]
async fn an_outcome_wanted_once_the_write_is_under_way_is_published() {
    let store = Arc::new(MemoryStore::default());
    let queue = Arc::new(MemoryQueue::default());
    let id = sent(&store, "+14155550151").await;
    queue.set_outcomes_unwanted(true);
    // The write of the report is where the endpoint appears.
    let wanting = queue.clone();
    store.fail_updates(usize::MAX, move |t| {
        if matches!(t, Transition::Reported { .. }) {
            wanting.set_outcomes_unwanted(false);
        }
        false
    });
    delivered_by_report(&store, &queue, &id).await;
    assert_eq!(queue.pending(Topic::Outcomes), 1, "the delivered event");
}
