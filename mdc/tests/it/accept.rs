//! Submitting through the client onto the embedded backends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use mdc::accept::Submitter;
use mdc_client::{ClientConfig, SubmitError, SubmitRequest};
use mdc_core::contract::queue::fetch_n;
use mdc_core::ports::{ConsumerSpec, Queue, QueueConsumer, QueueError, Store, Topic};
use mdc_core::{Channel, Message, Priority, Status};
use mdc_embedded::{Embedded, QueueLayout};

fn setup() -> (Submitter, Arc<dyn Store>, Arc<Scripted>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = Embedded::open(dir.path(), QueueLayout::default()).expect("open");
    let queue = Arc::new(Scripted::new(embedded.queue, Vec::new()));
    let store: Arc<dyn Store> = embedded.store;
    (
        Submitter::new(store.clone(), queue.clone(), ClientConfig::default()),
        store,
        queue,
    )
}

fn otp(key: Option<&str>) -> SubmitRequest {
    SubmitRequest {
        channel: Some("sms".into()),
        to: Some("+14155550123".into()),
        body: Some("Your code is 123456".into()),
        priority: Some("critical".into()),
        message_type: Some("otp".into()),
        idempotency_key: key.map(str::to_owned),
        ..Default::default()
    }
}

/// The record of `id`, which must be stored.
async fn stored(store: &dyn Store, id: &mdc_core::MessageId) -> mdc_core::MessageRecord {
    store.get(id).await.expect("get").expect("stored")
}

#[tokio::test]
async fn submitted_messages_are_queued_and_recorded() {
    let (submitter, store, queue) = setup();
    let submitted = submitter.submit(&otp(None)).await.expect("submit");
    assert_eq!(submitted.status, Status::Queued);
    let record = stored(&*store, &submitted.id).await;
    assert_eq!(record.status, Status::Queued);
    let topic = Topic::Messages(Channel::Sms, Priority::Critical);
    let consumer = queue
        .consumer(topic, ConsumerSpec { index: 0, count: 1 })
        .await
        .expect("consumer");
    let delivery = &fetch_n(&consumer, 1).await[0];
    let message: Message = serde_json::from_slice(&delivery.payload).expect("message");
    assert_eq!(message.id, submitted.id);
    assert_eq!(delivery.key, "+14155550123");
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_message() {
    let (submitter, _, _) = setup();
    let first = submitter
        .submit(&otp(Some("login-42")))
        .await
        .expect("submit");
    let second = submitter
        .submit(&otp(Some("login-42")))
        .await
        .expect("submit");
    assert_eq!(first.id, second.id);
    assert!(second.duplicate);
    let third = submitter.submit(&otp(None)).await.expect("submit");
    assert_ne!(third.id, first.id);
}

#[tokio::test]
async fn a_reused_idempotency_key_with_another_message_is_a_conflict() {
    let (submitter, store, _) = setup();
    let first = submitter
        .submit_as(&otp(Some("order-9")), Some("billing"))
        .await
        .expect("submit");
    let mut other = otp(Some("order-9"));
    other.body = Some("Your code is 654321".into());
    let err = submitter
        .submit_as(&other, Some("billing"))
        .await
        .expect_err("reused key");
    match err {
        SubmitError::Conflict(e) => {
            assert_eq!(e.field, "idempotency_key");
            assert_eq!(e.rule, "reused");
            assert!(e.message.contains(first.id.as_str()), "{}", e.message);
        }
        other => panic!("expected a conflict, got {other}"),
    }
    // The same request again is the first message; another service's key
    // is its own.
    let again = submitter
        .submit_as(&otp(Some("order-9")), Some("billing"))
        .await
        .expect("same request");
    assert_eq!(again.id, first.id);
    let shipping = submitter
        .submit_as(&other, Some("shipping"))
        .await
        .expect("another service");
    assert_ne!(shipping.id, first.id);
    let record = stored(&*store, &shipping.id).await;
    assert_eq!(record.message.service.as_deref(), Some("shipping"));
}

#[tokio::test]
async fn a_queue_outage_is_an_error_and_a_retry_with_the_key_completes_it() {
    let (submitter, store, queue) = setup();
    queue.down.store(true, Ordering::SeqCst);
    let err = submitter
        .submit(&otp(Some("k-1")))
        .await
        .expect_err("queue down");
    assert!(matches!(err, SubmitError::Unavailable(_)), "{err}");
    assert!(
        store.count_by_status().await.expect("count").is_empty(),
        "nothing of a message that could not be queued stays"
    );
    queue.down.store(false, Ordering::SeqCst);
    let retried = submitter.submit(&otp(Some("k-1"))).await.expect("submit");
    assert_eq!(retried.status, Status::Queued);
    let record = stored(&*store, &retried.id).await;
    assert_eq!(record.status, Status::Queued);
    let topic = Topic::Messages(Channel::Sms, Priority::Critical);
    let consumer = queue
        .consumer(topic, ConsumerSpec { index: 0, count: 1 })
        .await
        .expect("consumer");
    assert_eq!(fetch_n(&consumer, 1).await.len(), 1);
}

#[tokio::test]
async fn invalid_requests_store_nothing() {
    let (submitter, store, _) = setup();
    let mut request = otp(None);
    request.to = Some("+1 415 555".into());
    let err = submitter.submit(&request).await.expect_err("invalid");
    match err {
        SubmitError::Invalid(e) => assert_eq!(e.field, "to"),
        other => panic!("{other}"),
    }
    let all = store
        .list(&mdc_core::ports::ListFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(all.is_empty());
}

/// A message is stored and queued at the same time (one commit wait, not
/// two in a row), with a caller's key or without: with the store refusing
/// writes the caller gets an error and the queued copy is already there,
/// for the dispatcher to drop once it is not stored within its grace. A
/// repeated submission is answered with the first message; its own copy
/// is on the queue too, for the dispatcher to drop as its key has another
/// holder.
#[tokio::test]
async fn messages_are_stored_and_queued_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = Embedded::open(dir.path(), QueueLayout::default()).expect("open");
    let store = Arc::new(mdc_core::memory::MemoryStore::default());
    let submitter = Submitter::new(
        store.clone(),
        embedded.queue.clone(),
        ClientConfig::default(),
    );
    let topic = Topic::Messages(Channel::Sms, Priority::Critical);
    store.set_down(true);
    submitter
        .submit(&otp(Some("order-11")))
        .await
        .expect_err("store down");
    assert_eq!(embedded.queue.lag(topic).await.expect("lag"), Some(1));
    submitter.submit(&otp(None)).await.expect_err("store down");
    assert_eq!(embedded.queue.lag(topic).await.expect("lag"), Some(2));

    store.set_down(false);
    let submitted = submitter
        .submit(&otp(Some("order-11")))
        .await
        .expect("submit");
    assert_eq!(embedded.queue.lag(topic).await.expect("lag"), Some(3));
    let record = stored(&*store, &submitted.id).await;
    assert_eq!(record.status, Status::Queued);
    let again = submitter
        .submit(&otp(Some("order-11")))
        .await
        .expect("submit");
    assert!(again.duplicate);
    assert_eq!(again.id, submitted.id);
    // The new copy, and the first message again (still queued: an earlier
    // submission may have missed the queue).
    assert_eq!(embedded.queue.lag(topic).await.expect("lag"), Some(5));
    let consumer = embedded
        .queue
        .consumer(topic, ConsumerSpec { index: 0, count: 1 })
        .await
        .expect("consumer");
    let queued: Vec<Message> = fetch_n(&consumer, 5)
        .await
        .iter()
        .map(|d| Message::decode(&d.payload).expect("message"))
        .collect();
    let copy = &queued[3];
    assert_ne!(copy.id, submitted.id);
    assert_eq!(
        store.key_holder(copy).await.expect("holder"),
        Some(submitted.id.clone()),
        "the copy's key is the first message's"
    );
    assert!(store.get(&copy.id).await.expect("get").is_none());
    assert_eq!(queued[4].id, submitted.id);
}

/// What a [`Scripted`] queue does with one produce.
enum Step {
    /// Waits for the test's go-ahead (telling it the produce is waiting),
    /// then produces, or fails when `fail`.
    Gate {
        waiting: tokio::sync::oneshot::Sender<()>,
        go: tokio::sync::oneshot::Receiver<()>,
        fail: bool,
    },
    Fail,
}

/// The embedded queue, whose produces follow a script in the order they
/// come; past the script they go through, unless it is switched `down`, as
/// a broker outage would.
struct Scripted {
    inner: Arc<dyn Queue>,
    script: std::sync::Mutex<std::collections::VecDeque<Step>>,
    down: AtomicBool,
}

impl Scripted {
    fn new(inner: Arc<dyn Queue>, script: Vec<Step>) -> Self {
        Self {
            inner,
            script: std::sync::Mutex::new(script.into()),
            down: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl Queue for Scripted {
    async fn produce(&self, topic: Topic, key: &str, payload: Vec<u8>) -> Result<(), QueueError> {
        let step = self.script.lock().expect("script").pop_front();
        let fail = match step {
            None => self.down.load(Ordering::SeqCst),
            Some(Step::Fail) => true,
            Some(Step::Gate { waiting, go, fail }) => {
                let _ = waiting.send(());
                let _ = go.await;
                fail
            }
        };
        if fail {
            return Err(QueueError::Unavailable("broker down".into()));
        }
        self.inner.produce(topic, key, payload).await
    }

    async fn consumer(
        &self,
        topic: Topic,
        spec: ConsumerSpec,
    ) -> Result<Arc<dyn QueueConsumer>, QueueError> {
        self.inner.consumer(topic, spec).await
    }

    async fn group_consumer(
        &self,
        topic: Topic,
        group: &str,
        spec: ConsumerSpec,
    ) -> Result<Arc<dyn QueueConsumer>, QueueError> {
        self.inner.group_consumer(topic, group, spec).await
    }
}

/// A gate for [`Step::Gate`]: the step, a receiver told when its produce
/// waits, and the sender that lets it go on.
fn gate(
    fail: bool,
) -> (
    Step,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (waiting, waited) = tokio::sync::oneshot::channel();
    let (release, go) = tokio::sync::oneshot::channel();
    (Step::Gate { waiting, go, fail }, waited, release)
}

/// A submitter on the embedded store and a queue following `script`.
fn scripted(
    script: Vec<Step>,
) -> (
    tempfile::TempDir,
    Arc<Submitter>,
    Arc<dyn Store>,
    Arc<dyn Queue>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = Embedded::open(dir.path(), QueueLayout::default()).expect("open");
    let queue = Arc::new(Scripted::new(embedded.queue.clone(), script));
    let store: Arc<dyn Store> = embedded.store;
    let submitter = Submitter::new(store.clone(), queue, ClientConfig::default());
    (dir, Arc::new(submitter), store, embedded.queue)
}

/// Waits until a message holding `key` is stored (its submission's write
/// is under way when its produce is seen waiting).
async fn key_held(store: &dyn Store, key: &str) -> mdc_core::MessageId {
    let (mut probe, _) =
        mdc_client::enrich(&otp(Some(key)), &ClientConfig::default()).expect("valid");
    probe.idempotency_key = key.to_owned();
    for _ in 0..1000 {
        if let Some(holder) = store.key_holder(&probe).await.expect("holder") {
            return holder;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("no message holds {key}");
}

/// The ids of the messages on the critical SMS lane, in order.
async fn queued_ids(queue: &Arc<dyn Queue>) -> Vec<mdc_core::MessageId> {
    let topic = Topic::Messages(Channel::Sms, Priority::Critical);
    let waiting = queue.lag(topic).await.expect("lag").unwrap_or(0) as usize;
    let consumer = queue
        .consumer(topic, ConsumerSpec { index: 0, count: 1 })
        .await
        .expect("consumer");
    fetch_n(&consumer, waiting)
        .await
        .iter()
        .map(|d| Message::decode(&d.payload).expect("message").id)
        .collect()
}

/// Two submissions with one key at once: the first one's produce fails
/// after the second found its message and answered for it. The first
/// caller is told to retry, and the message the second one got a 202 for
/// stays, queued; it was removed before.
#[tokio::test]
async fn a_message_a_repeated_submission_answered_for_stays_when_its_first_submission_fails() {
    let (first_step, first_waiting, release_first) = gate(true);
    let (_dir, submitter, store, queue) = scripted(vec![first_step]);
    let first = tokio::spawn({
        let submitter = submitter.clone();
        async move { submitter.submit(&otp(Some("race-1"))).await }
    });
    first_waiting.await.expect("first produce");
    let held = key_held(&*store, "race-1").await;

    let second = submitter
        .submit(&otp(Some("race-1")))
        .await
        .expect("second submission");
    assert!(second.duplicate);
    assert_eq!(second.id, held);
    release_first.send(()).expect("release");
    let err = first
        .await
        .expect("task")
        .expect_err("first produce failed");
    assert!(matches!(err, SubmitError::Unavailable(_)), "{err}");

    let record = stored(&*store, &second.id).await;
    assert_eq!(record.status, Status::Queued);
    assert!(
        record
            .events
            .iter()
            .any(|e| e.details.contains("submitted again")),
        "{:?}",
        record.events
    );
    assert!(queued_ids(&queue).await.contains(&second.id));
}

/// The first submission's produce fails and removes its message while a
/// second submission with the key is queueing that message again: the
/// second one then stores its own, and answers with that.
#[tokio::test]
async fn a_repeated_submission_whose_earlier_message_was_removed_stores_its_own() {
    let (first_step, first_waiting, release_first) = gate(true);
    // The second submission's own copy, then the earlier message again.
    let (own_step, own_waiting, release_own) = gate(false);
    let (again_step, again_waiting, release_again) = gate(false);
    let (_dir, submitter, store, queue) = scripted(vec![first_step, own_step, again_step]);
    let first = tokio::spawn({
        let submitter = submitter.clone();
        async move { submitter.submit(&otp(Some("race-2"))).await }
    });
    first_waiting.await.expect("first produce");
    let removed = key_held(&*store, "race-2").await;
    let second = tokio::spawn({
        let submitter = submitter.clone();
        async move { submitter.submit(&otp(Some("race-2"))).await }
    });
    own_waiting.await.expect("own copy");
    release_own.send(()).expect("release");
    again_waiting.await.expect("earlier message again");
    release_first.send(()).expect("release");
    first
        .await
        .expect("task")
        .expect_err("first produce failed");
    assert!(store.get(&removed).await.expect("get").is_none());
    release_again.send(()).expect("release");

    let second = second.await.expect("task").expect("second submission");
    assert!(!second.duplicate, "the earlier message is gone");
    assert_ne!(second.id, removed);
    assert_eq!(stored(&*store, &second.id).await.status, Status::Queued);
    assert_eq!(key_held(&*store, "race-2").await, second.id);
    assert!(queued_ids(&queue).await.contains(&second.id));
}

/// A repeated submission that cannot queue the earlier message again is
/// told to retry and leaves the message alone: it is the first
/// submission's, whose own produce succeeds and whose 202 stands. It was
/// removed before.
#[tokio::test]
async fn a_repeated_submission_that_cannot_queue_leaves_the_first_submissions_message() {
    let (first_step, first_waiting, release_first) = gate(false);
    let (_dir, submitter, store, queue) = scripted(vec![first_step, Step::Fail, Step::Fail]);
    let first = tokio::spawn({
        let submitter = submitter.clone();
        async move { submitter.submit(&otp(Some("race-3"))).await }
    });
    first_waiting.await.expect("first produce");
    let held = key_held(&*store, "race-3").await;
    let err = submitter
        .submit(&otp(Some("race-3")))
        .await
        .expect_err("queue refused the second");
    assert!(matches!(err, SubmitError::Unavailable(_)), "{err}");
    release_first.send(()).expect("release");
    let first = first.await.expect("task").expect("first submission");
    assert_eq!(first.id, held);
    assert_eq!(stored(&*store, &first.id).await.status, Status::Queued);
    assert_eq!(queued_ids(&queue).await, vec![first.id]);
}

/// A repeated submission finds the message unsent, and it is picked up and
/// finished while the submission queues it again: the note that it was
/// queued again is not added to a finished message's trail, and the answer
/// is the message's status now. The note was added after the end before.
#[tokio::test]
async fn a_repeated_submissions_note_never_lands_on_a_message_finished_meanwhile() {
    let (own_step, own_waiting, release_own) = gate(false);
    let (again_step, again_waiting, release_again) = gate(false);
    let (_dir, first_submitter, store, queue) = scripted(Vec::new());
    let first = first_submitter
        .submit(&otp(Some("race-4")))
        .await
        .expect("first submission");
    // The same store behind a queue whose next two produces wait.
    let waiting = Arc::new(Scripted::new(queue, vec![own_step, again_step]));
    let submitter = Arc::new(Submitter::new(
        store.clone(),
        waiting,
        ClientConfig::default(),
    ));
    let second = tokio::spawn({
        let submitter = submitter.clone();
        async move { submitter.submit(&otp(Some("race-4"))).await }
    });
    own_waiting.await.expect("own copy");
    release_own.send(()).expect("release");
    again_waiting.await.expect("earlier message again");
    let cancelled = mdc_core::ports::Transition::to(
        Status::Cancelled,
        mdc_core::Event::new("support", "cancelled"),
    );
    store.update(&first.id, cancelled).await.expect("cancel");
    release_again.send(()).expect("release");

    let second = second.await.expect("task").expect("second submission");
    assert!(second.duplicate);
    assert_eq!(second.id, first.id);
    assert_eq!(second.status, Status::Cancelled);
    let record = stored(&*store, &first.id).await;
    assert_eq!(record.status, Status::Cancelled);
    assert_eq!(
        record.events.last().map(|e| e.details.as_str()),
        Some("cancelled"),
        "{:?}",
        record.events
    );
}
