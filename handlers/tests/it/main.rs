//! The reconciler on the embedded backends; the response handler (the
//! outcomes it makes, the reports that wait for their `sent`, the redrive
//! of parked ones) on in-memory ports with paused time.

mod outcomes;
mod parked;
mod responses;
mod waiting;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mdc_core::ports::{ConsumerSpec, Queue, RetryScheduler, Store, Topic, Transition};
use mdc_core::{Event, MessageId, MessageRecord, Status};
use mdc_embedded::{Embedded, QueueLayout};
use mdc_handlers::{Reconciler, ReconcilerConfig};

/// Stores a message created `age` ago whose attempt failed and whose next
/// attempt is due at `next`, without a retry timer.
async fn failed_attempt(
    store: &Arc<dyn Store>,
    to: &str,
    age: chrono::Duration,
    next: mdc_core::Timestamp,
) -> MessageId {
    failed_attempt_created(store, to, mdc_core::now() - age, next).await
}

/// [`failed_attempt`] for a message created at `created`.
async fn failed_attempt_created(
    store: &Arc<dyn Store>,
    to: &str,
    created: mdc_core::Timestamp,
    next: mdc_core::Timestamp,
) -> MessageId {
    let now = mdc_core::now();
    let mut message = mdc_core::contract::sample_message(to);
    message.created_at = created;
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
    let update = Transition::AttemptFailed {
        attempt: 1,
        provider: "sim-sms".into(),
        next_attempt_at: next,
        verify_first: false,
        event: Event::new("test", "attempt 1 failed"),
    };
    store.update(&message.id, update).await.expect("update");
    message.id
}

fn open(dir: &std::path::Path) -> (Arc<dyn Store>, Arc<dyn RetryScheduler>, Arc<dyn Queue>) {
    let embedded = Embedded::open(dir, QueueLayout::default()).expect("open");
    (
        embedded.store.clone(),
        embedded.retry.clone(),
        embedded.queue.clone(),
    )
}

async fn take_all(retry: &Arc<dyn RetryScheduler>) -> HashSet<MessageId> {
    let mut got = HashSet::new();
    // Until a take comes back empty or finds nothing within half a second.
    while let Ok(batch) =
        tokio::time::timeout(Duration::from_millis(500), retry.take_due(100)).await
    {
        let batch = batch.expect("take");
        if batch.is_empty() {
            break;
        }
        got.extend(batch.into_iter().map(|item| item.message_id));
    }
    got
}

#[tokio::test]
async fn a_message_whose_retry_timer_was_lost_is_scheduled_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, retry, queue) = open(dir.path());
    let now = mdc_core::now();
    let ten_minutes = chrono::Duration::minutes(10);
    let stranded = failed_attempt(
        &store,
        "+14155550123",
        ten_minutes,
        now - chrono::Duration::minutes(5),
    )
    .await;
    failed_attempt(
        &store,
        "+14155550124",
        ten_minutes,
        now + chrono::Duration::minutes(5),
    )
    .await;

    let reconciler = Reconciler::new(
        store.clone(),
        retry.clone(),
        queue.clone(),
        ReconcilerConfig::default(),
    );
    assert_eq!(
        reconciler.pass().await.expect("pass"),
        1,
        "only the overdue one"
    );
    assert_eq!(take_all(&retry).await, HashSet::from([stranded]));
}

/// More messages in `sending` than one pass looks at in one go: the pass
/// pages through them all, and the newest ones (too young to be stranded)
/// do not hide the old ones.
#[tokio::test]
async fn a_pass_pages_through_every_sending_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, retry, queue) = open(dir.path());
    let now = mdc_core::now();
    let mut stranded = HashSet::new();
    for i in 0..7 {
        let age = chrono::Duration::minutes(10 + i);
        let id = failed_attempt(
            &store,
            &format!("+1415555{:04}", 200 + i),
            age,
            now - chrono::Duration::minutes(5),
        )
        .await;
        stranded.insert(id);
    }
    // In flight right now, waiting for their retry.
    for i in 0..5 {
        failed_attempt(
            &store,
            &format!("+1415555{:04}", 300 + i),
            chrono::Duration::seconds(i),
            now + chrono::Duration::seconds(10),
        )
        .await;
    }

    let config = ReconcilerConfig {
        batch: 2,
        ..ReconcilerConfig::default()
    };
    let reconciler = Reconciler::new(store.clone(), retry.clone(), queue.clone(), config);
    assert_eq!(reconciler.pass().await.expect("pass"), 7);
    assert_eq!(take_all(&retry).await, stranded);
}

/// Messages created in the same millisecond are not skipped between one
/// page of a pass and the next.
#[tokio::test]
async fn a_pass_skips_no_message_sharing_a_page_boundary_s_millisecond() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, retry, queue) = open(dir.path());
    let now = mdc_core::now();
    let created = now - chrono::Duration::minutes(10);
    let mut stranded = HashSet::new();
    for i in 0..5 {
        let to = format!("+1415555{:04}", 400 + i);
        let id =
            failed_attempt_created(&store, &to, created, now - chrono::Duration::minutes(5)).await;
        stranded.insert(id);
    }
    let config = ReconcilerConfig {
        batch: 2,
        ..ReconcilerConfig::default()
    };
    let reconciler = Reconciler::new(store.clone(), retry.clone(), queue.clone(), config);
    assert_eq!(reconciler.pass().await.expect("pass"), 5);
    assert_eq!(take_all(&retry).await, stranded);
}

/// A crash between a message's record and its produce leaves it `queued`
/// with nothing on the queue: the reconciler puts it on its lane once it has
/// been untouched for the grace, and not again right after.
#[tokio::test]
async fn a_queued_message_that_never_reached_its_lane_is_queued_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, retry, queue) = open(dir.path());
    let now = mdc_core::now();
    let mut lost = mdc_core::contract::sample_message("+14155550130");
    lost.created_at = now - chrono::Duration::minutes(20);
    let mut event = Event::new("ingest", "queued").status(Status::Queued);
    event.at = lost.created_at;
    store
        .create(&MessageRecord::new(lost.clone(), Status::Queued, event))
        .await
        .expect("create");
    // Queued a moment ago: its produce may still be on its way.
    let young = mdc_core::contract::sample_message("+14155550131");
    store
        .create(&MessageRecord::new(
            young,
            Status::Queued,
            Event::new("ingest", "queued").status(Status::Queued),
        ))
        .await
        .expect("create");

    let reconciler = Reconciler::new(
        store.clone(),
        retry.clone(),
        queue.clone(),
        ReconcilerConfig::default(),
    );
    assert_eq!(reconciler.pass().await.expect("pass"), 1);
    let lane = Topic::Messages(lost.channel(), lost.priority);
    let consumer = queue
        .consumer(lane, ConsumerSpec { index: 0, count: 1 })
        .await
        .expect("consumer");
    let batch = consumer.fetch(10).await.expect("fetch");
    assert_eq!(batch.len(), 1);
    let queued = mdc_core::Message::decode(&batch[0].payload).expect("decode");
    assert_eq!(queued.id, lost.id);
    let record = store.get(&lost.id).await.expect("get").expect("stored");
    assert!(record
        .events
        .iter()
        .any(|e| e.details.contains("put on its lane again")));
    assert_eq!(
        reconciler.pass().await.expect("pass"),
        0,
        "touched just now: not queued twice in a row"
    );
}

/// A provider in name only: whether its vendor reports is all that matters.
struct Vendor {
    name: &'static str,
    reports: bool,
}

#[async_trait::async_trait]
impl mdc_core::ports::Provider for Vendor {
    fn name(&self) -> &str {
        self.name
    }

    fn channel(&self) -> mdc_core::Channel {
        mdc_core::Channel::Email
    }

    async fn send(
        &self,
        _message: &mdc_core::Message,
    ) -> Result<mdc_core::ports::Receipt, mdc_core::ports::ProviderError> {
        Err(mdc_core::ports::ProviderError::transient("not used"))
    }

    fn reports(&self) -> bool {
        self.reports
    }
}

/// Stores a message sent through `provider` `age` ago (confirmed with a
/// vendor id, or unconfirmed).
async fn sent(
    store: &Arc<dyn Store>,
    to: &str,
    provider: &str,
    confirmed: bool,
    age: chrono::Duration,
) -> MessageId {
    let now = mdc_core::now();
    let mut message = mdc_core::contract::sample_message(to);
    message.created_at = now - age - chrono::Duration::seconds(1);
    store
        .create(&MessageRecord::new(
            message.clone(),
            Status::Queued,
            Event::new("test", "queued"),
        ))
        .await
        .expect("create");
    store
        .claim(
            &message.id,
            now,
            now + chrono::Duration::seconds(30),
            "test",
        )
        .await
        .expect("claim");
    let mut event = Event::new("test", "sent").status(Status::Sent);
    event.at = now - age;
    let transition = if confirmed {
        Transition::Sent {
            attempt: 1,
            provider: provider.into(),
            provider_message_id: format!("{provider}-{}", message.id),
            event,
        }
    } else {
        Transition::SentUnconfirmed {
            attempt: 1,
            provider: provider.into(),
            event,
        }
    };
    store.update(&message.id, transition).await.expect("sent");
    message.id
}

/// Puts reports on the responses topic, as the listener's sink does.
struct TopicSink(Arc<dyn Queue>);

#[async_trait::async_trait]
impl mdc_core::ports::ReportSink for TopicSink {
    async fn submit(
        &self,
        report: mdc_core::DeliveryReport,
    ) -> Result<(), mdc_core::ports::QueueError> {
        let payload = serde_json::to_vec(&report).expect("encode");
        self.0
            .produce(Topic::Responses, &report.provider_message_id, payload)
            .await
    }
}

/// No message stays `sent` for ever: through a vendor that never reports
/// (SMTP), acceptance is all there will be, so after the report timeout it
/// is taken as delivered (an unconfirmed send, failed); through one that
/// reports (SES), it waits up to the final timeout and is then failed. The
/// verdicts go through the responses topic, so their outcomes are published
/// like any other.
#[tokio::test]
async fn a_message_left_sent_ends_by_the_final_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, retry, queue) = open(dir.path());
    let minutes = chrono::Duration::minutes;
    let smtp_done = sent(&store, "+14155550140", "smtp", true, minutes(11)).await;
    let smtp_unsure = sent(&store, "+14155550141", "smtp", false, minutes(11)).await;
    let smtp_young = sent(&store, "+14155550142", "smtp", true, minutes(1)).await;
    let ses_waiting = sent(&store, "+14155550143", "ses", true, minutes(11)).await;
    let ses_silent = sent(
        &store,
        "+14155550144",
        "ses",
        true,
        chrono::Duration::hours(73),
    )
    .await;

    let providers: std::collections::HashMap<String, Arc<dyn mdc_core::ports::Provider>> =
        [("smtp", false), ("ses", true)]
            .into_iter()
            .map(|(name, reports)| {
                (
                    name.to_owned(),
                    Arc::new(Vendor { name, reports }) as Arc<dyn mdc_core::ports::Provider>,
                )
            })
            .collect();
    let reconciler = Reconciler::new(
        store.clone(),
        retry.clone(),
        queue.clone(),
        ReconcilerConfig::default(),
    )
    .with_pull(providers, Arc::new(TopicSink(queue.clone())));
    let outcomes = queue
        .group_consumer(
            Topic::Outcomes,
            mdc_core::ports::queue::OUTCOME_WEBHOOKS_GROUP,
            ConsumerSpec { index: 0, count: 1 },
        )
        .await
        .expect("outcomes");
    assert_eq!(reconciler.pass().await.expect("pass"), 3);

    // The response handler applies the verdicts.
    let handler = mdc_handlers::ResponseHandler::new(
        queue.clone(),
        store.clone(),
        Arc::new(mdc_embedded::MemoryCache::default()),
    );
    let responses = queue
        .consumer(Topic::Responses, ConsumerSpec { index: 0, count: 1 })
        .await
        .expect("responses");
    for delivery in mdc_core::contract::queue::fetch_n(&responses, 3).await {
        handler.apply(&delivery).await.expect("apply");
        responses.ack(&delivery).await.expect("ack");
    }
    let status = |id: &MessageId| {
        let store = store.clone();
        let id = id.clone();
        async move { store.get(&id).await.expect("get").expect("stored") }
    };
    let done = status(&smtp_done).await;
    assert_eq!(done.status, Status::Delivered);
    assert!(done.events.iter().any(|e| e
        .details
        .contains("taken as delivered: smtp accepted it and never reports delivery")));
    assert_eq!(status(&smtp_unsure).await.status, Status::Failed);
    assert_eq!(status(&smtp_young).await.status, Status::Sent);
    assert_eq!(status(&ses_waiting).await.status, Status::Sent);
    let failed = status(&ses_silent).await;
    assert_eq!(failed.status, Status::Failed);
    assert!(
        failed.events.iter().any(|e| e
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no delivery report from ses within 3days"))),
        "{:?}",
        failed.events
    );
    let published: Vec<mdc_core::outcome::OutcomeEvent> =
        mdc_core::contract::queue::fetch_n(&outcomes, 3)
            .await
            .iter()
            .map(|d| serde_json::from_slice(&d.payload).expect("outcome"))
            .collect();
    let mut kinds: Vec<(String, String)> = published
        .iter()
        .map(|e| {
            (
                e.message_id.clone().expect("id").to_string(),
                e.kind.clone(),
            )
        })
        .collect();
    kinds.sort();
    let mut expected = vec![
        (smtp_done.to_string(), "message.delivered".to_owned()),
        (smtp_unsure.to_string(), "message.failed".to_owned()),
        (ses_silent.to_string(), "message.failed".to_owned()),
    ];
    expected.sort();
    assert_eq!(kinds, expected);
    assert_eq!(reconciler.pass().await.expect("pass"), 0, "each ended once");
}
