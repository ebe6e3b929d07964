//! Who may send a message: the lease an attempt keeps, what it does once
//! the lease is lost, takeovers after a dispatcher died, and ambiguous
//! sends, whose next attempt asks the vendor first.

use std::time::Duration;

use mdc_core::ports::{Claim, Store, Transition, Verify};
use mdc_core::{Priority, Status};

use super::harness::{Behaviour, Harness};
use super::{config, no_retries};

#[tokio::test(start_paused = true)]
async fn the_lease_covers_a_send_that_waits_for_a_rate_limit_token() {
    // One send every 20 s: the second message waits far longer than the lease.
    let h = Harness::start(config(), Some((0.05, 1))).await;
    // Whichever takes the one token goes first; the other waits for the next.
    let (second, to) = h
        .one_waiting_for_a_token("+14155550101", "+14155550102")
        .await;
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
    // The test's one thread runs every task: their metrics land here.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _recording = metrics::set_default_local_recorder(&recorder);
    // One send every 20 s: the second message waits far longer than the lease.
    let h = Harness::start(config(), Some((0.05, 1))).await;
    // Whichever takes the one token goes first; the other waits for the next.
    let (second, to) = h
        .one_waiting_for_a_token("+14155550103", "+14155550104")
        .await;
    // The store takes none of the first attempt's extensions (they come
    // every 1.17 s: three within the lease's 3.5 s over a send's 2 s and
    // the clocks' allowance, 0.5 s) before its lease (6 s) has run out.
    // The waiting attempt stops waiting for the token then, sends nothing
    // and says so on the trail; another attempt (here or on another
    // dispatcher) takes the message.
    h.store.fail_updates(5, |t| {
        matches!(t, Transition::LeaseExtended { attempt: 1, .. })
    });
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(h.store.failed_updates(), 5, "the faults were hit");
    assert_eq!(
        h.provider.sends(to),
        0,
        "sent by an attempt that lost its lease"
    );
    let record = h.store.get(&second).await.expect("get").expect("stored");
    assert!(
        record
            .events
            .iter()
            .any(|e| e.error.as_deref().is_some_and(|e| e.contains("not sent"))),
        "the first attempt's end is on the trail: {:#?}",
        record.events
    );
    // Counted as stopped, not as a vendor's transient error.
    let rendered = metrics.render();
    let sends = |outcome: &str| {
        rendered
            .lines()
            .filter(|l| {
                l.starts_with("mdc_sends_total{") && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(sends("stopped"), 1.0, "{rendered}");
    assert_eq!(sends("transient"), 0.0, "{rendered}");
    // The next attempt sends it once, with the rate limit's next token (at
    // 20 s), which the stopped attempt left.
    h.wait_for(&second, Status::Sent, Duration::from_secs(30))
        .await;
    assert_eq!(h.provider.sends(to), 1);
    assert_eq!(h.record(&second).await.attempts, 2);
    h.stop().await;
}

/// The first attempt's extensions fail, so its 6 s lease is never renewed,
/// and the rate limit's next token comes after `token_every` seconds, with
/// less of the lease left than a call needs: no send at either of `checks`
/// (ms after the first send: past the token, and just before the lease
/// ends); the attempt stops when the lease runs out, and the next one
/// sends the message once.
async fn no_call_on_a_lease_too_short_for_it(
    token_every: f64,
    (a, b): (&'static str, &'static str),
    checks: [u64; 2],
    what: &str,
) {
    let h = Harness::start(config(), Some((1.0 / token_every, 1))).await;
    let (second, to) = h.one_waiting_for_a_token(a, b).await;
    let start = tokio::time::Instant::now();
    h.store.fail_updates(5, |t| {
        matches!(t, Transition::LeaseExtended { attempt: 1, .. })
    });
    for at in checks {
        tokio::time::sleep_until(start + Duration::from_millis(at)).await;
        let events = h.record(&second).await.events;
        assert_eq!(
            h.provider.sends(to),
            0,
            "{at} ms: a send started {what}: {events:#?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(h.store.failed_updates(), 5, "the faults were hit");
    h.wait_for(&second, Status::Sent, Duration::from_secs(60))
        .await;
    assert_eq!(h.provider.sends(to), 1);
    assert_eq!(h.record(&second).await.attempts, 2);
    h.stop().await;
}

/// A token that comes while the lease, unextended, has less than a send's
/// time (`send_timeout`) left starts no call: the call could outlast the
/// lease and meet a second dispatcher's attempt.
#[tokio::test(start_paused = true)]
async fn a_send_is_not_started_with_less_than_its_timeout_left_on_the_lease() {
    // The token at 4.5 s would leave 1.5 s of the lease; a send may take 2 s.
    no_call_on_a_lease_too_short_for_it(
        4.5,
        ("+14155550107", "+14155550108"),
        [4700, 5900],
        "on a lease about to end",
    )
    .await;
}

/// Dispatchers' clocks differ a little, and a lease runs out by the clock
/// of the one that took it: a call starts only with a send's time and the
/// clocks' allowance (0.5 s) left, so a dispatcher whose clock runs ahead
/// by up to that never takes the message over while the call may run.
#[tokio::test(start_paused = true)]
async fn a_send_leaves_the_lease_room_for_clocks_that_differ() {
    // The token at 3.7 s would leave 2.3 s of the lease: more than the 2 s
    // a send may take, less than that and the allowance.
    no_call_on_a_lease_too_short_for_it(
        3.7,
        ("+14155550111", "+14155550112"),
        [3900, 5900],
        "within the clocks' allowance of the lease's end",
    )
    .await;
}

/// The same outage with nobody taking over, on the last attempt: the attempt
/// sent nothing, so the message is not failed but tried again.
#[tokio::test(start_paused = true)]
async fn a_last_attempt_that_lost_its_lease_is_tried_again_not_failed() {
    let h = Harness::start(no_retries(), Some((0.05, 1))).await;
    // Whichever takes the one token goes first; the other waits for the next.
    let (second, to) = h
        .one_waiting_for_a_token("+14155550105", "+14155550106")
        .await;
    // None of the first attempt's extensions is taken before its lease
    // (6 s) runs out; it stops waiting for the next token (at 20 s) then.
    h.store.fail_updates(5, |t| {
        matches!(t, Transition::LeaseExtended { attempt: 1, .. })
    });
    h.wait_for(&second, Status::Sent, Duration::from_secs(60))
        .await;
    assert_eq!(h.store.failed_updates(), 5, "the faults were hit");
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
    assert_eq!(
        h.report_delivered(&id, "vendor-114").await,
        Status::Delivered
    );
    h.stop().await;
}

/// The same hang on the last attempt (no retry left): a vendor that reports
/// back may have the message, so it is not failed but waits, sent and
/// unconfirmed, for the report; one that does not is failed as before.
#[tokio::test(start_paused = true)]
async fn an_ambiguous_last_attempt_waits_for_a_vendor_that_reports_back() {
    let h = Harness::start(no_retries(), None).await;
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
    assert_eq!(
        h.report_delivered(&id, "vendor-116").await,
        Status::Delivered
    );
    h.stop().await;
}

/// The same when retries are left but the next would come after the
/// deadline: not expired but sent, unconfirmed.
#[tokio::test(start_paused = true)]
async fn an_ambiguous_attempt_whose_retry_would_be_late_waits_for_the_report() {
    let h = Harness::start(config(), None).await;
    h.provider
        .waits_for_report
        .store(true, std::sync::atomic::Ordering::SeqCst);
    h.provider
        .script("+14155550117", Behaviour::HangOnce(Duration::from_secs(60)));
    // Cut at the 2 s send timeout; the retry (1 s later) would be late.
    let id = h
        .submit_with("+14155550117", Priority::Normal, |m| {
            m.deadline = mdc_core::now() + chrono::Duration::milliseconds(2_500);
        })
        .await;
    h.wait_for(&id, Status::Sent, Duration::from_secs(10)).await;
    let record = h.record(&id).await;
    assert_eq!((record.attempts, record.provider_message_id), (1, None));
    assert_eq!(
        h.report_delivered(&id, "vendor-117").await,
        Status::Delivered
    );
    h.stop().await;
}

/// An attempt ended unsure at one vendor; the next failed over to another,
/// which took the message, and its dispatcher died: the takeover asks every
/// provider, not only the one stored from the first attempt.
#[tokio::test(start_paused = true)]
async fn a_takeover_after_a_failover_asks_every_provider() {
    let h = Harness::start(config(), None).await;
    h.provider
        .answers_lookups
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let id = h.create("+14155550114", Priority::Normal).await;
    assert!(matches!(
        h.claim_as(&id, "first").await,
        Claim::Claimed { .. }
    ));
    let unsure = Transition::AttemptFailed {
        attempt: 1,
        provider: "elsewhere".into(),
        next_attempt_at: mdc_core::now(),
        verify_first: true,
        event: mdc_core::Event::new("test", "no answer from elsewhere"),
    };
    h.store.update(&id, unsure).await.expect("update");
    match h.claim_as(&id, "dead").await {
        Claim::Claimed { verify, .. } => assert_eq!(verify, Verify::Provider),
        other => panic!("{other:?}"),
    }
    h.sent_by_a_dead_dispatcher(&id).await;
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
    let h = Harness::start(config(), None).await;
    h.provider
        .answers_lookups
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let id = h.create("+14155550113", Priority::Normal).await;
    assert!(matches!(
        h.claim_as(&id, "dead").await,
        Claim::Claimed { .. }
    ));
    let receipt = h.sent_by_a_dead_dispatcher(&id).await;
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

/// A dispatcher died mid-send and the message comes round again after its
/// deadline: it is not expired blind. The vendor is asked; one that has it
/// makes it `sent`; when none has it, it expires, and nothing is sent late.
#[tokio::test(start_paused = true)]
async fn past_its_deadline_a_message_a_dead_attempt_may_have_sent_is_asked_about() {
    let h = Harness::start(config(), None).await;
    h.provider
        .answers_lookups
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let soon = |m: &mut mdc_core::Message| {
        m.deadline = mdc_core::now() + chrono::Duration::seconds(3);
    };
    let taken = h.create_with("+14155550118", Priority::Normal, soon).await;
    let not_taken = h.create_with("+14155550119", Priority::Normal, soon).await;
    for id in [&taken, &not_taken] {
        assert!(matches!(
            h.claim_as(id, "dead").await,
            Claim::Claimed { .. }
        ));
    }
    // The vendor took the first; the dead dispatcher's lease (6 s) outlives
    // the deadline (3 s).
    h.sent_by_a_dead_dispatcher(&taken).await;
    h.produce(&not_taken).await;
    h.wait_for(&taken, Status::Sent, Duration::from_secs(20))
        .await;
    h.wait_for(&not_taken, Status::Expired, Duration::from_secs(20))
        .await;
    assert_eq!(h.provider.sends("+14155550118"), 1, "not sent again");
    assert_eq!(h.provider.sends("+14155550119"), 0, "nothing sent late");
    let record = h.record(&not_taken).await;
    assert!(
        record
            .events
            .iter()
            .any(|e| e.details.contains("no vendor has it")),
        "{:#?}",
        record.events
    );
    h.stop().await;
}

/// A copy of a lane record that comes after the deadline while another
/// dispatcher's attempt is in flight is dropped at once: that attempt ends
/// the message, and the lane does not wait for its lease.
#[tokio::test(start_paused = true)]
async fn a_late_copy_of_a_message_in_flight_does_not_hold_its_lane() {
    let h = Harness::start(config(), None).await;
    let slow = h
        .create_with("+14155550120", Priority::Normal, |m| {
            m.deadline = mdc_core::now() + chrono::Duration::seconds(1);
        })
        .await;
    assert!(matches!(
        h.claim_as(&slow, "other").await,
        Claim::Claimed { .. }
    ));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    h.produce(&slow).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The recipient's next message, on the same partition and consumer,
    // goes out at once, not once the other attempt's 6 s lease is over.
    let next = h.submit("+14155550120", Priority::Normal).await;
    h.wait_for(&next, Status::Sent, Duration::from_secs(2))
        .await;
    assert_eq!(h.provider.sends("+14155550120"), 1, "the next message only");
    assert_eq!(h.record(&slow).await.status, Status::Sending);
    h.stop().await;
}
