//! The response handler on in-memory ports, on paused time.

use std::sync::Arc;
use std::time::Duration;

use mdc_core::memory::{MemoryQueue, MemoryStore};
use mdc_core::ports::{Claim, ConsumerSpec, Queue, Store, Topic, Transition};
use mdc_core::{DeliveryReport, Event, MessageId, MessageRecord, ReportOutcome, Status};
use mdc_handlers::ResponseHandler;
use tokio_util::sync::CancellationToken;

async fn sent(store: &MemoryStore, to: &str) -> MessageId {
    let message = mdc_core::contract::sample_message(to);
    let id = message.id.clone();
    store
        .create(&MessageRecord::new(
            message,
            Status::Queued,
            Event::new("test", "queued"),
        ))
        .await
        .expect("create");
    let now = mdc_core::now();
    let lease = now + chrono::Duration::seconds(30);
    assert!(matches!(
        store.claim(&id, now, lease, "test").await.expect("claim"),
        Claim::Claimed { .. }
    ));
    let sent = Transition::Sent {
        attempt: 1,
        provider: "sim-sms".into(),
        provider_message_id: format!("v-{id}"),
        event: Event::new("test", "sent"),
    };
    store.update(&id, sent).await.expect("sent");
    id
}

fn report(id: &MessageId) -> Vec<u8> {
    let report = DeliveryReport {
        vendor_at: None,
        provider: "sim-sms".into(),
        provider_message_id: format!("v-{id}"),
        reference: Some(id.clone()),
        outcome: ReportOutcome::Delivered,
        at: mdc_core::now(),
        raw: serde_json::json!({}),
        note: None,
    };
    serde_json::to_vec(&report).expect("encode")
}

/// A response handler on `store` and `queue`, running until the token is
/// cancelled.
fn running(
    store: &Arc<MemoryStore>,
    queue: &Arc<MemoryQueue>,
) -> (
    Arc<ResponseHandler>,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let handler = Arc::new(ResponseHandler::new(
        queue.clone(),
        store.clone(),
        Arc::new(mdc_embedded::MemoryCache::default()),
    ));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(handler.clone().run(1, shutdown.clone()));
    (handler, shutdown, task)
}

async fn status(store: &MemoryStore, id: &MessageId) -> Status {
    store.get(id).await.expect("get").expect("stored").status
}

/// A report the store keeps refusing is parked after a few seconds; the
/// reports behind it on its partition are applied, and the parked one is
/// kept on the parked-reports topic.
#[tokio::test(start_paused = true)]
async fn a_report_that_cannot_be_applied_is_parked_and_the_partition_moves_on() {
    let store = Arc::new(MemoryStore::default());
    let queue = Arc::new(MemoryQueue::default());
    let poisoned = sent(&store, "+14155550140").await;
    let behind = sent(&store, "+14155550141").await;
    let target = poisoned.clone();
    store.fail_updates(usize::MAX, move |t| {
        matches!(t, Transition::Reported { .. }) && format!("{t:?}").contains(target.as_str())
    });
    let health = Arc::new(mdc_core::supervise::TaskHealth::default());
    let handler = Arc::new(
        ResponseHandler::new(
            queue.clone(),
            store.clone(),
            Arc::new(mdc_embedded::MemoryCache::default()),
        )
        .with_health(health.clone()),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(handler.clone().run(1, shutdown.clone()));

    let poisoned_report = report(&poisoned);
    queue
        .produce(Topic::Responses, "a", poisoned_report.clone())
        .await
        .expect("produce");
    // The handler has taken the poisoned report before the next arrives.
    tokio::time::sleep(Duration::from_millis(50)).await;
    queue
        .produce(Topic::Responses, "a", report(&behind))
        .await
        .expect("produce");
    queue
        .produce(Topic::Responses, "a", b"not json".to_vec())
        .await
        .expect("produce");

    let started = tokio::time::Instant::now();
    while status(&store, &behind).await != Status::Delivered {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the report behind the poisoned one waited more than 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while queue.pending(Topic::Responses) > 0 {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        handler.parked(),
        2,
        "the poisoned and the unreadable report"
    );
    assert_eq!(health.parked_reports(), 2, "shown on /healthz");
    assert_eq!(status(&store, &poisoned).await, Status::Sent);
    let parked = queue
        .consumer(Topic::ParkedReports, ConsumerSpec { index: 0, count: 1 })
        .await
        .expect("consumer")
        .fetch(10)
        .await
        .expect("fetch");
    assert_eq!(parked.len(), 2);
    assert_eq!(parked[0].payload, poisoned_report);
    assert_eq!(parked[1].payload, b"not json".to_vec());
    shutdown.cancel();
    task.await.expect("join").expect("run");
}

/// While the store answers nothing (a database failover), reports wait
/// for it however long it takes, and none is parked: parked, their
/// messages would stay `sent`. Once it is back they are applied.
#[tokio::test(start_paused = true)]
async fn reports_wait_out_a_store_outage_instead_of_being_parked() {
    let store = Arc::new(MemoryStore::default());
    let queue = Arc::new(MemoryQueue::default());
    let first = sent(&store, "+14155550142").await;
    let second = sent(&store, "+14155550143").await;
    let (handler, shutdown, task) = running(&store, &queue);

    store.set_down(true);
    for id in [&first, &second] {
        queue
            .produce(Topic::Responses, "a", report(id))
            .await
            .expect("produce");
    }
    // A minute down: twenty times the tries before a refused report is parked.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        handler.parked(),
        0,
        "nothing parked while the store is down"
    );
    assert_eq!(queue.pending(Topic::Responses), 2);
    store.set_down(false);
    let started = tokio::time::Instant::now();
    for id in [&first, &second] {
        while status(&store, id).await != Status::Delivered {
            assert!(started.elapsed() < Duration::from_secs(30), "never applied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(handler.parked(), 0);
    shutdown.cancel();
    task.await.expect("join").expect("run");
}

/// A report naming a message sent through another provider changes
/// nothing and is counted; one that overtook its message's `sent` write is
/// applied once that write lands.
#[tokio::test(start_paused = true)]
async fn reports_apply_only_to_their_providers_message_once_it_is_sent() {
    let store = Arc::new(MemoryStore::default());
    let queue = Arc::new(MemoryQueue::default());
    let (handler, shutdown, task) = running(&store, &queue);

    // Sent through sim-sms; a Kaleyra report names it.
    let other = sent(&store, "+14155550150").await;
    let mut foreign: DeliveryReport = serde_json::from_slice(&report(&other)).expect("report");
    foreign.provider = "kaleyra".into();
    queue
        .produce(
            Topic::Responses,
            "k",
            serde_json::to_vec(&foreign).expect("encode"),
        )
        .await
        .expect("produce");

    // Claimed, not yet recorded as sent, when its report arrives.
    let message = mdc_core::contract::sample_message("+14155550151");
    let early = message.id.clone();
    store
        .create(&MessageRecord::new(
            message,
            Status::Queued,
            Event::new("test", "queued"),
        ))
        .await
        .expect("create");
    let now = mdc_core::now();
    store
        .claim(&early, now, now + chrono::Duration::seconds(30), "test")
        .await
        .expect("claim");
    queue
        .produce(Topic::Responses, "e", report(&early))
        .await
        .expect("produce");

    let started = tokio::time::Instant::now();
    while handler.mismatched() < 1 {
        assert!(started.elapsed() < Duration::from_secs(5), "not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status(&store, &other).await, Status::Sent, "unchanged");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        status(&store, &early).await,
        Status::Sending,
        "waits for sent"
    );
    store
        .update(
            &early,
            Transition::Sent {
                attempt: 1,
                provider: "sim-sms".into(),
                provider_message_id: format!("v-{early}"),
                event: Event::new("test", "sent"),
            },
        )
        .await
        .expect("sent");
    while status(&store, &early).await != Status::Delivered {
        assert!(started.elapsed() < Duration::from_secs(30), "never applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handler.parked(), 0);
    shutdown.cancel();
    task.await.expect("join").expect("run");
}

/// A complaint moves no status: a delivered message stays delivered, the
/// trail gets the event with the vendor's time, and the recipient is
/// suppressed.
#[tokio::test(start_paused = true)]
async fn a_complaint_is_an_event_and_suppresses_the_recipient() {
    use mdc_core::memory::MemorySuppressions;
    use mdc_core::ports::SuppressionList;

    let store = Arc::new(MemoryStore::default());
    let queue = Arc::new(MemoryQueue::default());
    let suppressions = Arc::new(MemorySuppressions::default());
    let handler = Arc::new(
        ResponseHandler::new(
            queue.clone(),
            store.clone(),
            Arc::new(mdc_embedded::MemoryCache::default()),
        )
        .with_suppressions(suppressions.clone()),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(handler.clone().run(1, shutdown.clone()));
    let id = sent(&store, "+14155550160").await;
    queue
        .produce(Topic::Responses, "d", report(&id))
        .await
        .expect("produce");
    let mut complaint: DeliveryReport = serde_json::from_slice(&report(&id)).expect("report");
    complaint.outcome = ReportOutcome::Noted {
        details: "complaint (abuse)".into(),
        suppress: true,
    };
    complaint.vendor_at = Some(mdc_core::now() - chrono::Duration::minutes(5));
    queue
        .produce(
            Topic::Responses,
            "d",
            serde_json::to_vec(&complaint).expect("encode"),
        )
        .await
        .expect("produce");
    let started = tokio::time::Instant::now();
    while suppressions
        .get(mdc_core::Channel::Sms, "+14155550160")
        .await
        .expect("get")
        .is_none()
    {
        assert!(started.elapsed() < Duration::from_secs(5), "not suppressed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let record = store.get(&id).await.expect("get").expect("stored");
    assert_eq!(record.status, Status::Delivered, "stays delivered");
    let noted = record
        .events
        .iter()
        .find(|e| e.details.starts_with("complaint (abuse)"))
        .expect("the complaint is on the trail");
    assert_eq!(noted.status, None);
    assert!(noted.details.contains("at the vendor"), "{}", noted.details);
    let entry = suppressions
        .get(mdc_core::Channel::Sms, "+14155550160")
        .await
        .expect("get")
        .expect("entry");
    assert_eq!(entry.source, "report:sim-sms");
    assert_eq!(entry.message_id, Some(id));
    shutdown.cancel();
    task.await.expect("join").expect("run");
}

/// A response handler over memory ports, with a consumer of the outcomes
/// topic it publishes to.
async fn with_outcomes() -> (
    Arc<MemoryStore>,
    Arc<dyn mdc_core::ports::QueueConsumer>,
    ResponseHandler,
) {
    let store = Arc::new(MemoryStore::default());
    let queue = Arc::new(MemoryQueue::default());
    let outcomes = queue
        .group_consumer(Topic::Outcomes, "test", ConsumerSpec { index: 0, count: 1 })
        .await
        .expect("outcomes");
    let handler = ResponseHandler::new(
        queue.clone(),
        store.clone(),
        Arc::new(mdc_embedded::MemoryCache::default()),
    );
    (store, outcomes, handler)
}

/// A vendor's failure report for `id` on the responses topic.
fn failure_report(id: &MessageId, reason: &str, suppress: bool) -> mdc_core::ports::Delivery {
    let mut bounce: DeliveryReport = serde_json::from_slice(&report(id)).expect("report");
    bounce.outcome = ReportOutcome::Failed {
        reason: reason.into(),
        suppress,
    };
    mdc_core::ports::Delivery {
        topic: Topic::Responses,
        partition: 0,
        offset: 0,
        key: "k".into(),
        payload: serde_json::to_vec(&bounce).expect("encode"),
    }
}

/// Each applied report publishes the message's outcome, and so does the
/// same report applied again (the redelivery after a crash between the
/// store write and the publish): the same event id both times. A
/// suppression publishes `suppression.added`.
#[tokio::test(start_paused = true)]
async fn an_applied_report_publishes_its_outcome_again_when_redelivered() {
    use mdc_core::memory::MemorySuppressions;
    use mdc_core::outcome::OutcomeEvent;

    let (store, outcomes, handler) = with_outcomes().await;
    let handler = handler.with_suppressions(Arc::new(MemorySuppressions::default()));
    let id = sent(&store, "+14155550161").await;
    let delivery = failure_report(&id, "opted out", true);
    handler.apply(&delivery).await.expect("apply");
    handler.apply(&delivery).await.expect("apply again");
    let events: Vec<OutcomeEvent> = mdc_core::contract::queue::fetch_n(&outcomes, 4)
        .await
        .iter()
        .map(|d| serde_json::from_slice(&d.payload).expect("outcome"))
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "message.failed",
            "suppression.added",
            "message.failed",
            "suppression.added"
        ]
    );
    assert_eq!(events[0].event_id, events[2].event_id);
    assert_eq!(events[1].event_id, events[3].event_id);
    assert_eq!(events[0].reason.as_deref(), Some("opted out"));
    assert_eq!(events[1].recipient.as_deref(), Some("+14155550161"));
    assert_eq!(events[0].message_id.as_ref(), Some(&id));
}

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
                    payload: report(&id),
                };
                handler.apply(&delivery).await.expect("applied");
                assert_eq!(status(&store, &id).await, Status::Delivered);
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
        payload: report(&id),
    };
    handler.apply(&delivery).await.expect("applied");
    assert_eq!(status(&store, &id).await, Status::Delivered);
    assert_eq!(queue.pending(Topic::Outcomes), 1, "the delivered event");
}
