//! The response handler on in-memory ports, on paused time.

use std::sync::Arc;
use std::time::Duration;

use mdc_core::memory::{MemoryQueue, MemoryStore};
use mdc_core::ports::{Claim, ConsumerSpec, Queue, Store, Topic, Transition};
use mdc_core::{DeliveryReport, Event, MessageId, MessageRecord, ReportOutcome, Status};
use mdc_handlers::ResponseHandler;
use tokio_util::sync::CancellationToken;

/// A message claimed and recorded as sent through sim-sms.
pub(crate) async fn sent(store: &MemoryStore, to: &str) -> MessageId {
    let id = claimed(store, to).await;
    now_sent(store, &id).await;
    id
}

pub(crate) fn report(id: &MessageId) -> Vec<u8> {
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
pub(crate) fn running(
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

pub(crate) async fn status(store: &MemoryStore, id: &MessageId) -> Status {
    store.get(id).await.expect("get").expect("stored").status
}

/// Waits until `id` is delivered, failing with `why` once `limit` has
/// passed since `started`.
pub(crate) async fn delivered_by(
    store: &MemoryStore,
    id: &MessageId,
    started: tokio::time::Instant,
    limit: Duration,
    why: &str,
) {
    while status(store, id).await != Status::Delivered {
        assert!(started.elapsed() < limit, "{why}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    delivered_by(
        &store,
        &behind,
        started,
        Duration::from_secs(10),
        "the report behind the poisoned one waited more than 10 s",
    )
    .await;
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
        delivered_by(
            &store,
            id,
            started,
            Duration::from_secs(30),
            "never applied",
        )
        .await;
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
    let early = claimed(&store, "+14155550151").await;
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
    shutdown.cancel();
    task.await.expect("join").expect("run");
}

/// A message claimed and not yet recorded as sent.
pub(crate) async fn claimed(store: &MemoryStore, to: &str) -> MessageId {
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
    id
}

/// Records `id` as sent through sim-sms, as its reports name it.
pub(crate) async fn now_sent(store: &MemoryStore, id: &MessageId) {
    store
        .update(
            id,
            Transition::Sent {
                attempt: 1,
                provider: "sim-sms".into(),
                provider_message_id: format!("v-{id}"),
                event: Event::new("test", "sent"),
            },
        )
        .await
        .expect("sent");
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
pub(crate) async fn with_outcomes() -> (
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
pub(crate) fn failure_report(
    id: &MessageId,
    reason: &str,
    suppress: bool,
) -> mdc_core::ports::Delivery {
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
