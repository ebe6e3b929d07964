//! The dispatcher on in-memory ports and paused time, against a provider
//! whose faults each test scripts: what is proven not to happen is proven on
//! tokio's controlled clock, never by sleeping.

mod direct;
mod harness;
mod kaleyra;
mod takeover;

use std::collections::HashMap;
use std::time::Duration;

use harness::{Behaviour, Harness};
use mdc_core::ports::{Store, Transition};
use mdc_core::{MessageId, Priority, Status};
use mdc_dispatcher::DispatcherConfig;

fn config() -> DispatcherConfig {
    DispatcherConfig {
        send_timeout: Duration::from_secs(2),
        lease: Duration::from_secs(6),
        retry_schedule: vec![Duration::from_secs(1), Duration::from_secs(5)],
        ..DispatcherConfig::default()
    }
}

/// [`config`] with no retry: the first attempt is the last.
fn no_retries() -> DispatcherConfig {
    DispatcherConfig {
        retry_schedule: vec![],
        ..config()
    }
}

#[tokio::test(start_paused = true)]
async fn an_accepted_send_whose_outcome_cannot_be_stored_is_not_sent_again() {
    let h = Harness::start(config(), None).await;
    // The vendor takes the message; the next three writes of `sent` fail.
    h.store
        .fail_updates(3, |t| matches!(t, Transition::Sent { .. }));
    let id = h.submit("+14155550100", Priority::Normal).await;
    h.wait_for(&id, Status::Sent, Duration::from_secs(120))
        .await;
    assert_eq!(h.store.failed_updates(), 3, "the faults were hit");
    // Well past the lease, a redelivery or the reconciler would have resent.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(h.provider.sends("+14155550100"), 1, "sent exactly once");
    let record = h.record(&id).await;
    assert_eq!(record.status, Status::Sent);
    assert_eq!(record.attempts, 1);
    assert!(record.provider_message_id.is_some());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_absurd_retry_after_neither_panics_nor_stops_the_lane() {
    let h = Harness::start(config(), None).await;
    h.provider.script(
        "+14155550103",
        Behaviour::Throttle(Duration::from_secs(u64::MAX)),
    );
    let throttled = h.submit("+14155550103", Priority::Normal).await;
    let after = h.submit("+14155550104", Priority::Normal).await;
    // The wait is cut to a day, past the message's ten-minute deadline.
    h.wait_for(&throttled, Status::Expired, Duration::from_secs(10))
        .await;
    h.wait_for(&after, Status::Sent, Duration::from_secs(10))
        .await;
    let late = h.submit("+14155550105", Priority::Normal).await;
    h.wait_for(&late, Status::Sent, Duration::from_secs(10))
        .await;
    assert_eq!(h.dispatcher.restarts(), 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_lane_is_restarted_and_its_record_redelivered() {
    let h = Harness::start(config(), None).await;
    h.provider.script("+14155550106", Behaviour::PanicOnce);
    let id = h.submit("+14155550106", Priority::Normal).await;
    h.wait_for(&id, Status::Sent, Duration::from_secs(60)).await;
    assert_eq!(h.dispatcher.restarts(), 1, "the panic was seen and counted");
    let next = h.submit("+14155550107", Priority::Normal).await;
    h.wait_for(&next, Status::Sent, Duration::from_secs(10))
        .await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_retried_on_schedule_and_not_before() {
    let h = Harness::start(config(), None).await;
    h.provider
        .script("+14155550108", Behaviour::FailTransient(1));
    let id = h.submit("+14155550108", Priority::Normal).await;
    h.wait_until(Duration::from_secs(5), || {
        h.provider.calls("+14155550108") == 1
    })
    .await;
    let first = h.provider.call_times("+14155550108")[0];
    // The schedule says 1 s: just before it, nothing more happened.
    tokio::time::sleep_until(first + Duration::from_millis(900)).await;
    assert_eq!(h.provider.calls("+14155550108"), 1);
    h.wait_for(&id, Status::Sent, Duration::from_secs(10)).await;
    let times = h.provider.call_times("+14155550108");
    assert_eq!(times.len(), 2);
    assert!(times[1] - times[0] >= Duration::from_secs(1), "{times:?}");
    assert_eq!(h.record(&id).await.attempts, 2);
    let fired = h.retry.fired();
    assert_eq!(
        fired.iter().filter(|item| item.message_id == id).count(),
        1,
        "one timer, fired once: {fired:?}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_message_past_its_deadline_expires_without_a_send() {
    let h = Harness::start(config(), None).await;
    let id = h
        .submit_with("+14155550109", Priority::Normal, |m| {
            m.deadline = mdc_core::now() - chrono::Duration::seconds(1)
        })
        .await;
    h.wait_for(&id, Status::Expired, Duration::from_secs(5))
        .await;
    assert_eq!(h.provider.calls("+14155550109"), 0);
    h.stop().await;
}

/// A message whose deadline passes while it waits for a rate limit's
/// token, on its last attempt, expires: nothing was sent, and no vendor
/// failed it.
#[tokio::test(start_paused = true)]
async fn a_last_attempt_whose_deadline_passes_at_the_rate_limit_expires() {
    // One send every 20 s; the second message may wait 3 s.
    let h = Harness::start(no_retries(), Some((0.05, 1))).await;
    let first = h.submit("+14155550131", Priority::Normal).await;
    h.wait_for(&first, Status::Sent, Duration::from_secs(10))
        .await;
    let late = h
        .submit_with("+14155550132", Priority::Normal, |m| {
            m.deadline = mdc_core::now() + chrono::Duration::seconds(3)
        })
        .await;
    h.wait_for(&late, Status::Expired, Duration::from_secs(10))
        .await;
    assert_eq!(h.provider.calls("+14155550132"), 0);
    let record = h.record(&late).await;
    assert_eq!(record.attempts, 1);
    assert!(
        record.events.iter().any(|e| {
            e.details
                .contains("deadline passed before the message could be sent")
                && e.error
                    .as_deref()
                    .is_some_and(|e| e.contains("waiting for the rate limit"))
        }),
        "{:#?}",
        record.events
    );
    // What a webhook says of it: no vendor's error.
    let outcome = mdc_core::outcome::OutcomeEvent::of_message(&record, None).expect("an outcome");
    assert_eq!(
        outcome.reason.as_deref(),
        Some("the deadline passed while waiting for the rate limit")
    );
    h.stop().await;
}

/// Critical messages that each fetch empties are no backlog: bulk keeps
/// going beside them (in smaller batches) instead of falling to its floor
/// share.
#[tokio::test(start_paused = true)]
async fn a_critical_trickle_leaves_bulk_running() {
    let h = Harness::start(config(), None).await;
    h.provider
        .send_millis
        .store(100, std::sync::atomic::Ordering::SeqCst);
    h.submit_bulk(1500).await;
    // 20 critical messages a second for ten seconds.
    let started = tokio::time::Instant::now();
    let critical = h
        .submit_critical_every(Duration::from_millis(50), Duration::from_secs(10))
        .await;
    // At 32 a batch (an eighth of 256) and 100 ms a send, 1,500 take about
    // 4.7 s; held to a tenth of the critical sends, bulk would have sent a
    // few dozen.
    assert_eq!(h.provider.sends_with_prefix("+1415555"), 1500);
    // After the first batch, fetched before any critical message, bulk
    // sends start at most 32 at a time.
    let mut starts: HashMap<tokio::time::Instant, usize> = HashMap::new();
    for i in 0..1500 {
        for at in h.provider.call_times(&format!("+1415555{:04}", i)) {
            if at > started + Duration::from_millis(500) {
                *starts.entry(at).or_default() += 1;
            }
        }
    }
    let widest = starts.values().copied().max().unwrap_or(0);
    assert!((1..=32).contains(&widest), "{widest} bulk sends at once");
    // The last critical ones are still in the vendor's 100 ms.
    h.wait_until(Duration::from_millis(500), || {
        h.provider.sends_with_prefix("+1415556") == critical
    })
    .await;
    h.stop().await;
}

/// Critical messages arriving faster than their lane sends them: bulk is
/// paused, yet gets its floor share of the sends.
#[tokio::test(start_paused = true)]
async fn a_critical_backlog_pauses_bulk_down_to_its_share() {
    let mut config = config();
    config.min_share = [(Priority::Bulk, 10)].into();
    // 8 records a fetch at 100 ms a send: the critical lane sends about 80
    // a second, fewer than arrive.
    config.batch_size = 8;
    let h = Harness::start(config, None).await;
    h.provider
        .send_millis
        .store(100, std::sync::atomic::Ordering::SeqCst);
    h.submit_bulk(2000).await;
    // 200 critical messages a second for twenty seconds.
    let critical = h
        .submit_critical_every(Duration::from_millis(5), Duration::from_secs(20))
        .await;
    let bulk_sent = h.provider.sends_with_prefix("+1415555");
    let critical_sent = h.provider.sends_with_prefix("+1415556");
    let share = bulk_sent as f64 / (bulk_sent + critical_sent) as f64;
    // Unpaused, bulk would take half of the sends (80 a second beside 80).
    assert!(
        (0.09..0.2).contains(&share),
        "bulk got {bulk_sent} sends ({:.1} %) beside {critical_sent} critical",
        share * 100.0
    );
    assert!(
        critical_sent >= 1400,
        "critical sent at its lane's pace: {critical_sent} of {critical}"
    );
    h.stop().await;
}

/// At the vendor's rate limit, bulk sends waiting for tokens do not hold
/// the tokens ahead of critical messages that arrive meanwhile.
#[tokio::test(start_paused = true)]
async fn at_a_rate_limit_critical_messages_take_the_next_tokens() {
    // 10 sends a second.
    let h = Harness::start(config(), Some((10.0, 1))).await;
    for i in 0..100 {
        h.submit(&format!("+1415557{:04}", i), Priority::Bulk).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut submitted = Vec::new();
    for i in 0..10 {
        let to = format!("+1415558{:04}", i);
        submitted.push((to.clone(), tokio::time::Instant::now()));
        h.submit(&to, Priority::Critical).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    h.wait_until(Duration::from_secs(5), || {
        h.provider.sends_with_prefix("+1415558") == 10
    })
    .await;
    for (to, at) in submitted {
        let sent = h.provider.call_times(&to)[0];
        // One token is 100 ms away at most; behind the bulk sends already
        // waiting (up to 32) it would be seconds.
        assert!(
            sent - at <= Duration::from_millis(150),
            "{to} waited {:?}",
            sent - at
        );
    }
    assert!(
        h.provider.sends_with_prefix("+1415557") >= 50,
        "bulk went on beside them"
    );
    h.stop().await;
}

/// A critical lane consumer that panics in the middle of a full batch is
/// started again; what it counted towards pre-empting the lower lanes goes
/// with it, so bulk is not held back for ever afterwards.
#[tokio::test(start_paused = true)]
async fn a_lane_that_panicked_with_a_full_batch_does_not_hold_bulk_back() {
    let mut config = config();
    config.batch_size = 2;
    let h = Harness::start(config, None).await;
    h.provider.script("+14155550193", Behaviour::PanicOnce);
    let panicking = h.submit("+14155550193", Priority::Critical).await;
    h.submit("+14155550194", Priority::Critical).await;
    h.wait_for(&panicking, Status::Sent, Duration::from_secs(10))
        .await;
    assert_eq!(h.dispatcher.restarts(), 1, "the panic was seen and counted");
    for i in 0..20 {
        h.submit(&format!("+1415557{:04}", i), Priority::Bulk).await;
    }
    h.wait_until(Duration::from_secs(10), || {
        h.provider.sends_with_prefix("+1415557") == 20
    })
    .await;
    h.stop().await;
}

/// A crash between a message's record and its produce: nothing is on the
/// queue, and the reconciler puts it there, so it is sent, not left queued.
#[tokio::test(start_paused = true)]
async fn a_message_recorded_but_never_produced_is_sent_after_the_reconciler_pass() {
    use std::sync::Arc;

    use mdc_core::ports::{Queue, RetryScheduler};
    use mdc_handlers::{Reconciler, ReconcilerConfig};

    let h = Harness::start(config(), None).await;
    let id = h.create("+14155550111", Priority::Normal).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        h.record(&id).await.status,
        Status::Queued,
        "nothing sent it"
    );
    let reconciler = Reconciler::new(
        h.store.clone() as Arc<dyn Store>,
        h.retry.clone() as Arc<dyn RetryScheduler>,
        h.queue.clone() as Arc<dyn Queue>,
        ReconcilerConfig {
            queued_grace: Duration::from_secs(20),
            ..ReconcilerConfig::default()
        },
    );
    assert_eq!(reconciler.pass().await.expect("pass"), 1);
    h.wait_for(&id, Status::Sent, Duration::from_secs(10)).await;
    assert_eq!(h.provider.sends("+14155550111"), 1);
    h.stop().await;
}

/// Every status the dispatcher stores makes an outcome event, after the
/// write; a redelivered record of a message already sent publishes it
/// again with the same event id (a crash may have come between the two).
#[tokio::test(start_paused = true)]
async fn stored_outcomes_are_published_and_published_again_on_redelivery() {
    use mdc_core::outcome::OutcomeEvent;
    use mdc_core::ports::QueueConsumer;

    let h = Harness::start(config(), None).await;
    let outcomes = h.outcomes().await;
    let sent = h.submit("+14155550170", Priority::Normal).await;
    h.wait_for(&sent, Status::Sent, Duration::from_secs(5))
        .await;
    let expired = h
        .submit_with("+14155550171", Priority::Normal, |m| {
            m.deadline = mdc_core::now() - chrono::Duration::seconds(1)
        })
        .await;
    h.wait_for(&expired, Status::Expired, Duration::from_secs(5))
        .await;
    h.produce(&sent).await;
    let read = |outcomes: std::sync::Arc<dyn QueueConsumer>| async move {
        mdc_core::contract::queue::fetch_n(&outcomes, 3)
            .await
            .iter()
            .map(|d| serde_json::from_slice::<OutcomeEvent>(&d.payload).expect("outcome"))
            .collect::<Vec<_>>()
    };
    let events = read(outcomes).await;
    let seen: Vec<(MessageId, &str)> = events
        .iter()
        .map(|e| (e.message_id.clone().expect("id"), e.kind.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (sent.clone(), "message.sent"),
            (expired.clone(), "message.expired"),
            (sent.clone(), "message.sent"),
        ]
    );
    assert_eq!(events[0].event_id, events[2].event_id);
    assert_eq!(events[0].provider.as_deref(), Some("scripted"));
    assert_eq!(
        h.provider.sends("+14155550170"),
        1,
        "republished, not resent"
    );
    h.stop().await;
}

/// The `sent` outcome is made from the claimed message with the stored
/// move applied, without reading the message back, and is the outcome the
/// stored message makes.
#[tokio::test(start_paused = true)]
async fn a_sent_outcome_is_the_stored_one_without_reading_it_back() {
    use mdc_core::outcome::OutcomeEvent;

    let h = Harness::start(config(), None).await;
    let outcomes = h.outcomes().await;
    let id = h
        .submit_with("+14155550172", Priority::Normal, |m| {
            m.reference = Some("order-72".to_owned());
            m.service = Some("billing".to_owned());
            m.metadata = serde_json::json!({ "customer": 72 }).as_object().cloned();
        })
        .await;
    let published = mdc_core::contract::queue::fetch_n(&outcomes, 1).await;
    let published: OutcomeEvent =
        serde_json::from_slice(&published[0].payload).expect("an outcome");
    let stored = h.record(&id).await;
    assert_eq!(stored.status, Status::Sent);
    assert_eq!(
        Some(published),
        OutcomeEvent::of_message(&stored, None),
        "the outcome the stored message makes"
    );
    assert_eq!(h.store.recent_reads(), 0, "made without reading it back");
    h.stop().await;
}

/// The accept path stores and queues a message at the same time, so the
/// dispatcher can fetch it before its record is written: it looks again
/// and sends it once the record is there.
#[tokio::test(start_paused = true)]
async fn a_message_fetched_before_its_record_is_stored_is_sent_once_it_is() {
    let h = Harness::start(config(), None).await;
    let message = mdc_core::contract::sample_message("+14155550190");
    h.produce_direct(&message).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.provider.sends("+14155550190"), 0);
    assert!(h.store.get(&message.id).await.expect("get").is_none());
    let record = mdc_core::MessageRecord::accepted(message.clone(), "ingest", "accepted");
    h.store.create(&record).await.expect("create");
    h.wait_for(&message.id, Status::Sent, Duration::from_secs(5))
        .await;
    assert_eq!(h.provider.sends("+14155550190"), 1);
    h.stop().await;
}

/// A submission answered with an earlier message under the same key was
/// queued at the same time as its record was tried, and that record is
/// never stored: the copy is dropped at once (the key has another holder)
/// instead of holding its recipient's next message for the grace.
#[tokio::test(start_paused = true)]
async fn a_repeated_submission_s_copy_is_dropped_at_once() {
    let h = Harness::start(config(), None).await;
    let first = h
        .submit_with("+14155550192", Priority::Normal, |m| {
            m.idempotency_key = "order-12".into()
        })
        .await;
    h.wait_for(&first, Status::Sent, Duration::from_secs(1))
        .await;
    let mut copy = mdc_core::contract::sample_message("+14155550192");
    copy.idempotency_key = "order-12".into();
    h.produce_direct(&copy).await;
    let next = h.submit("+14155550192", Priority::Normal).await;
    h.wait_for(&next, Status::Sent, Duration::from_millis(500))
        .await;
    assert_eq!(
        h.provider.sends("+14155550192"),
        2,
        "the first and the next"
    );
    assert!(h.store.get(&copy.id).await.expect("get").is_none());
    h.stop().await;
}

/// A queued message whose record never comes (its write failed and the
/// caller was told so) is dropped after NOT_STORED_GRACE; the recipient's
/// later messages, held behind it to keep their order, go on.
#[tokio::test(start_paused = true)]
async fn a_message_never_stored_is_dropped_after_the_grace() {
    let h = Harness::start(config(), None).await;
    let orphan = mdc_core::contract::sample_message("+14155550191");
    h.produce_direct(&orphan).await;
    let next = h.submit("+14155550191", Priority::Normal).await;
    let grace = mdc_dispatcher::NOT_STORED_GRACE;
    tokio::time::sleep(grace - Duration::from_millis(100)).await;
    assert_eq!(
        h.provider.sends("+14155550191"),
        0,
        "held behind the orphan"
    );
    h.wait_for(&next, Status::Sent, Duration::from_secs(3))
        .await;
    assert_eq!(h.provider.sends("+14155550191"), 1);
    assert!(h.store.get(&orphan.id).await.expect("get").is_none());
    h.stop().await;
}

/// A message past its deadline fetched before its record is stored is
/// expired once the record is there, not left `queued`.
#[tokio::test(start_paused = true)]
async fn a_late_message_fetched_before_its_record_is_stored_expires_once_it_is() {
    let h = Harness::start(config(), None).await;
    let mut message = mdc_core::contract::sample_message("+14155550192");
    message.deadline = mdc_core::now() - chrono::Duration::seconds(1);
    h.produce_direct(&message).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.store.get(&message.id).await.expect("get").is_none());
    let record = mdc_core::MessageRecord::accepted(message.clone(), "ingest", "accepted");
    h.store.create(&record).await.expect("create");
    h.wait_for(&message.id, Status::Expired, Duration::from_secs(5))
        .await;
    assert_eq!(h.provider.sends("+14155550192"), 0);
    h.stop().await;
}
