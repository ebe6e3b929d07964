//! The dispatcher on in-memory ports and paused time, against a provider
//! whose faults each test scripts: what is proven not to happen is proven on
//! tokio's controlled clock, never by sleeping.

mod harness;
mod kaleyra;

use std::collections::HashMap;
use std::time::Duration;

use harness::{Behaviour, Harness};
use mdc_core::ports::{Claim, Store, Transition, Verify};
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
async fn the_lease_covers_a_send_that_waits_for_a_rate_limit_token() {
    // One send every 20 s: the second message waits far longer than the lease.
    let h = Harness::start(config(), Some((0.05, 1))).await;
    let a = h.submit("+14155550101", Priority::Normal).await;
    let b = h.submit("+14155550102", Priority::Normal).await;
    // Whichever takes the one token goes first; the other waits for the next.
    h.wait_until(Duration::from_secs(10), || {
        h.provider.sends_with_prefix("+141555501") == 1
    })
    .await;
    let (second, to) = if h.provider.sends("+14155550101") == 0 {
        (a, "+14155550101")
    } else {
        (b, "+14155550102")
    };
    // Three leases later the second is still waiting for its token; a second
    // dispatcher (or the reconciler's retry) must find it held.
    tokio::time::sleep(Duration::from_secs(18)).await;
    assert_eq!(h.provider.sends(to), 0, "still waiting");
    let now = mdc_core::now();
    match h
        .store
        .claim(&second, now, now + chrono::Duration::seconds(6), "other")
        .await
        .expect("claim")
    {
        Claim::Busy { .. } => {}
        other => panic!("a second dispatcher could take over a waiting send: {other:?}"),
    }
    h.wait_for(&second, Status::Sent, Duration::from_secs(30))
        .await;
    assert_eq!(h.provider.sends(to), 1);
    assert_eq!(h.record(&second).await.attempts, 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_send_whose_lease_ran_out_unextended_is_not_made() {
    // One send every 20 s: the second message waits far longer than the lease.
    let h = Harness::start(config(), Some((0.05, 1))).await;
    let a = h.submit("+14155550103", Priority::Normal).await;
    let b = h.submit("+14155550104", Priority::Normal).await;
    h.wait_until(Duration::from_secs(10), || {
        h.provider.sends_with_prefix("+141555501") == 1
    })
    .await;
    let (second, to) = if h.provider.sends("+14155550103") == 0 {
        (a, "+14155550103")
    } else {
        (b, "+14155550104")
    };
    // The store takes no extension for 8 s (a lease is 6 s): the waiting
    // attempt's lease runs out, and another dispatcher takes the message.
    h.store
        .fail_updates(4, |t| matches!(t, Transition::LeaseExtended { .. }));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let now = mdc_core::now();
    match h
        .store
        .claim(&second, now, now + chrono::Duration::seconds(600), "other")
        .await
        .expect("claim")
    {
        Claim::Claimed { verify, .. } => assert_eq!(verify, Verify::Any),
        other => panic!("the lease should have run out: {other:?}"),
    }
    // The rate limit's next token comes at 20 s: the first attempt, no
    // longer holding the message, must not send it.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(h.store.failed_updates(), 4, "the faults were hit");
    assert_eq!(
        h.provider.sends(to),
        0,
        "sent by an attempt that lost its lease"
    );
    let record = h.store.get(&second).await.expect("get").expect("stored");
    assert_eq!((record.status, record.attempts), (Status::Sending, 2));
    assert!(
        record
            .events
            .iter()
            .any(|e| e.error.as_deref().is_some_and(|e| e.contains("not sent"))),
        "the first attempt's end is on the trail: {:#?}",
        record.events
    );
    h.stop().await;
}

/// The same outage with nobody taking over, on the last attempt: the attempt
/// sent nothing, so the message is not failed but tried again.
#[tokio::test(start_paused = true)]
async fn a_last_attempt_that_lost_its_lease_is_tried_again_not_failed() {
    let no_retries = DispatcherConfig {
        retry_schedule: vec![],
        ..config()
    };
    let h = Harness::start(no_retries, Some((0.05, 1))).await;
    let a = h.submit("+14155550105", Priority::Normal).await;
    let b = h.submit("+14155550106", Priority::Normal).await;
    h.wait_until(Duration::from_secs(10), || {
        h.provider.sends_with_prefix("+141555501") == 1
    })
    .await;
    let (second, to) = if h.provider.sends("+14155550105") == 0 {
        (a, "+14155550105")
    } else {
        (b, "+14155550106")
    };
    // No extension is taken until after the next token (at 20 s).
    h.store
        .fail_updates(10, |t| matches!(t, Transition::LeaseExtended { .. }));
    h.wait_for(&second, Status::Sent, Duration::from_secs(60))
        .await;
    assert_eq!(h.store.failed_updates(), 10, "the faults were hit");
    assert_eq!(h.provider.sends(to), 1);
    let record = h.record(&second).await;
    assert_eq!(record.attempts, 2);
    assert!(
        record
            .events
            .iter()
            .any(|e| e.details.contains("stopped before the send")),
        "{:#?}",
        record.events
    );
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

#[tokio::test(start_paused = true)]
async fn a_lease_left_by_a_dead_dispatcher_is_taken_over_after_it_runs_out() {
    let h = Harness::start(config(), None).await;
    // Another dispatcher claimed the message and died.
    let id = h.create("+14155550110", Priority::Normal).await;
    let now = mdc_core::now();
    assert!(matches!(
        h.store
            .claim(&id, now, now + chrono::Duration::seconds(6), "dead")
            .await
            .expect("claim"),
        Claim::Claimed { .. }
    ));
    h.produce(&id).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.provider.calls("+14155550110"), 0, "the lease still holds");
    h.wait_for(&id, Status::Sent, Duration::from_secs(10)).await;
    let record = h.record(&id).await;
    assert_eq!(record.attempts, 2);
    assert!(
        record
            .events
            .iter()
            .any(|e| e.details.contains("verifying first")),
        "the takeover asks the vendor first"
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

/// A vendor that hangs past the send timeout (and the lease): the router
/// gives up at the send timeout, the attempt is ambiguous, and the next
/// attempt asks the vendor first.
#[tokio::test(start_paused = true)]
async fn a_hanging_send_is_cut_at_the_send_timeout_and_retried_as_ambiguous() {
    let h = Harness::start(config(), None).await;
    h.provider
        .script("+14155550112", Behaviour::HangOnce(Duration::from_secs(60)));
    let id = h.submit("+14155550112", Priority::Normal).await;
    h.wait_until(Duration::from_secs(1), || {
        h.provider.calls("+14155550112") == 1
    })
    .await;
    // Past the lease, the attempt is over (cut at 2 s) and its retry is due
    // at 1 s after that: the claim decides, not a second dispatcher.
    h.wait_for(&id, Status::Sent, Duration::from_secs(10)).await;
    let record = h.record(&id).await;
    assert_eq!(record.attempts, 2);
    let details: Vec<&str> = record.events.iter().map(|e| e.details.as_str()).collect();
    assert!(
        details.iter().any(|d| d.contains("verifying first")),
        "the second attempt asks the vendor first: {details:?}"
    );
    assert!(
        record.events.iter().any(|e| e
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("ambiguous"))),
        "{details:?}"
    );
    let times = h.provider.call_times("+14155550112");
    assert!(times[1] - times[0] >= Duration::from_secs(3), "{times:?}");
    assert!(
        details
            .iter()
            .any(|d| d.contains("sent again (after_ambiguous = resend)")),
        "the trail says why it was sent again: {details:?}"
    );
    h.stop().await;
}

/// The same hang with a vendor that reports back and cannot be asked: the
/// message is not sent again but waits, as sent and unconfirmed, for the
/// report, which settles it by MDC's id.
#[tokio::test(start_paused = true)]
async fn after_an_ambiguous_send_a_vendor_that_reports_back_is_not_sent_to_again() {
    let h = Harness::start(config(), None).await;
    h.provider
        .waits_for_report
        .store(true, std::sync::atomic::Ordering::SeqCst);
    h.provider
        .script("+14155550114", Behaviour::HangOnce(Duration::from_secs(60)));
    let id = h.submit("+14155550114", Priority::Normal).await;
    h.wait_for(&id, Status::Sent, Duration::from_secs(10)).await;
    // Long after any retry would have come.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(h.provider.calls("+14155550114"), 1, "not sent again");
    let record = h.record(&id).await;
    assert_eq!(record.status, Status::Sent);
    assert_eq!(record.attempts, 2, "the second attempt only decided");
    assert_eq!(record.provider.as_deref(), Some("scripted"));
    assert_eq!(record.provider_message_id, None, "unconfirmed");
    assert!(
        record
            .events
            .iter()
            .any(|e| e.details.contains("after_ambiguous = wait_for_report")),
        "{:#?}",
        record.events
    );
    let report = Transition::Reported {
        status: Status::Delivered,
        provider: "scripted".into(),
        provider_message_id: "vendor-114".into(),
        event: mdc_core::Event::new("test", "delivered"),
    };
    h.store.update(&id, report).await.expect("report");
    assert_eq!(h.record(&id).await.status, Status::Delivered);
    h.stop().await;
}

/// The same hang on the last attempt (no retry left): a vendor that reports
/// back may have the message, so it is not failed but waits, sent and
/// unconfirmed, for the report; one that does not is failed as before.
#[tokio::test(start_paused = true)]
async fn an_ambiguous_last_attempt_waits_for_a_vendor_that_reports_back() {
    let no_retries = DispatcherConfig {
        retry_schedule: vec![],
        ..config()
    };
    let h = Harness::start(no_retries, None).await;
    h.provider
        .script("+14155550115", Behaviour::HangOnce(Duration::from_secs(60)));
    let failed = h.submit("+14155550115", Priority::Normal).await;
    h.wait_for(&failed, Status::Failed, Duration::from_secs(10))
        .await;
    h.provider
        .waits_for_report
        .store(true, std::sync::atomic::Ordering::SeqCst);
    h.provider
        .script("+14155550116", Behaviour::HangOnce(Duration::from_secs(60)));
    let id = h.submit("+14155550116", Priority::Normal).await;
    h.wait_for(&id, Status::Sent, Duration::from_secs(10)).await;
    let record = h.record(&id).await;
    assert_eq!((record.attempts, record.provider_message_id), (1, None));
    assert_eq!(h.provider.calls("+14155550116"), 1);
    let report = Transition::Reported {
        status: Status::Delivered,
        provider: "scripted".into(),
        provider_message_id: "vendor-116".into(),
        event: mdc_core::Event::new("test", "delivered"),
    };
    h.store.update(&id, report).await.expect("report");
    assert_eq!(h.record(&id).await.status, Status::Delivered);
    h.stop().await;
}

/// An attempt ended unsure at one vendor; the next failed over to another,
/// which took the message, and its dispatcher died: the takeover asks every
/// provider, not only the one stored from the first attempt.
#[tokio::test(start_paused = true)]
async fn a_takeover_after_a_failover_asks_every_provider() {
    use mdc_core::ports::Provider;

    let h = Harness::start(config(), None).await;
    h.provider
        .answers_lookups
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let id = h.create("+14155550114", Priority::Normal).await;
    let now = mdc_core::now();
    let lease = now + chrono::Duration::seconds(6);
    assert!(matches!(
        h.store
            .claim(&id, now, lease, "first")
            .await
            .expect("claim"),
        Claim::Claimed { .. }
    ));
    let unsure = Transition::AttemptFailed {
        attempt: 1,
        provider: "elsewhere".into(),
        next_attempt_at: now,
        verify_first: true,
        event: mdc_core::Event::new("test", "no answer from elsewhere"),
    };
    h.store.update(&id, unsure).await.expect("update");
    match h.store.claim(&id, now, lease, "dead").await.expect("claim") {
        Claim::Claimed { verify, .. } => assert_eq!(verify, Verify::Provider),
        other => panic!("{other:?}"),
    }
    let message = h.record(&id).await.message;
    h.provider.send(&message).await.expect("the vendor took it");
    h.produce(&id).await;
    h.wait_for(&id, Status::Sent, Duration::from_secs(20)).await;
    assert_eq!(h.provider.sends("+14155550114"), 1, "not sent again");
    let record = h.record(&id).await;
    assert_eq!(record.provider.as_deref(), Some("scripted"));
    assert_eq!(record.attempts, 3);
    h.stop().await;
}

/// A dispatcher died after the vendor took the message and before anything
/// was recorded: the next attempt asks the vendor, which has it, and records
/// it as sent under that provider's name and id, so its report applies.
#[tokio::test(start_paused = true)]
async fn a_takeover_records_the_provider_that_already_had_the_message() {
    use mdc_core::ports::Provider;

    let h = Harness::start(config(), None).await;
    h.provider
        .answers_lookups
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let id = h.create("+14155550113", Priority::Normal).await;
    let now = mdc_core::now();
    assert!(matches!(
        h.store
            .claim(&id, now, now + chrono::Duration::seconds(6), "dead")
            .await
            .expect("claim"),
        Claim::Claimed { .. }
    ));
    let message = h.record(&id).await.message;
    let receipt = h.provider.send(&message).await.expect("the vendor took it");
    h.produce(&id).await;
    h.wait_for(&id, Status::Sent, Duration::from_secs(20)).await;
    let record = h.record(&id).await;
    assert_eq!(h.provider.sends("+14155550113"), 1, "not sent again");
    assert_eq!(record.provider.as_deref(), Some("scripted"));
    assert_eq!(
        record.provider_message_id.as_deref(),
        Some(receipt.provider_message_id.as_str())
    );
    let report = Transition::Reported {
        status: Status::Delivered,
        provider: "scripted".into(),
        provider_message_id: receipt.provider_message_id,
        event: mdc_core::Event::new("test", "delivered"),
    };
    assert!(matches!(
        h.store.update(&id, report).await.expect("report"),
        mdc_core::ports::Updated::Applied { .. }
    ));
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

/// As the client's direct transport produces it, for `service`.
fn direct(to: &str, key: &str) -> mdc_core::Message {
    let mut message = mdc_core::contract::sample_message(to);
    message.direct = true;
    message.service = Some("billing".to_owned());
    message.idempotency_key = key.to_owned();
    message
}

#[tokio::test(start_paused = true)]
async fn a_directly_produced_message_is_recorded_then_sent_once_and_copies_are_dropped() {
    let h = Harness::start(config(), None).await;
    let message = direct("+14155550180", "order-1");
    h.produce_direct(&message).await;
    // A redelivery of the same record, and the service sending the same
    // message again under its key (a new id, as each send makes one).
    h.produce_direct(&message).await;
    let mut again = message.clone();
    again.id = MessageId::generate();
    h.produce_direct(&again).await;
    h.wait_for(&message.id, Status::Sent, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(h.provider.sends("+14155550180"), 1, "sent exactly once");
    let record = h.record(&message.id).await;
    assert_eq!(record.message.service.as_deref(), Some("billing"));
    assert_eq!(record.events[0].status, Some(Status::Accepted));
    assert!(
        record.events[0]
            .details
            .contains("produced directly by billing"),
        "{:?}",
        record.events[0]
    );
    assert!(h.store.get(&again.id).await.expect("get").is_none());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_directly_produced_message_to_a_suppressed_recipient_fails_unsent() {
    use mdc_core::ports::{Suppression, SuppressionList};

    let h = Harness::start(config(), None).await;
    h.suppressions
        .add(&Suppression {
            channel: mdc_core::Channel::Sms,
            recipient: "+14155550181".to_owned(),
            reason: "hard bounce".to_owned(),
            source: "manual".to_owned(),
            message_id: None,
            at: mdc_core::now(),
        })
        .await
        .expect("add");
    let message = direct("+14155550181", "order-2");
    h.produce_direct(&message).await;
    h.wait_for(&message.id, Status::Failed, Duration::from_secs(10))
        .await;
    // A redelivery finds it failed and sends nothing either.
    h.produce_direct(&message).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(h.provider.calls("+14155550181"), 0);
    let record = h.record(&message.id).await;
    assert!(
        record
            .events
            .iter()
            .any(|e| e.details.contains("suppressed")),
        "{:#?}",
        record.events
    );
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

/// A queued message whose record never comes (its write failed and the
/// caller was told so) is dropped after NOT_STORED_GRACE; the recipient's
/// later messages, held behind it to keep their order, go on.
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
