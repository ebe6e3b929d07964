use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use mdc_core::Channel;

use super::*;

/// A provider whose every send has the same outcome, counting calls.
struct Scripted {
    name: &'static str,
    outcome: Result<(), ProviderError>,
    calls: AtomicU32,
}

impl Scripted {
    fn new(name: &'static str, outcome: Result<(), ProviderError>) -> Arc<Self> {
        Arc::new(Self {
            name,
            outcome,
            calls: AtomicU32::new(0),
        })
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        self.name
    }

    fn channel(&self) -> Channel {
        Channel::Sms
    }

    async fn send(&self, _message: &Message) -> Result<Receipt, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.outcome.clone().map(|()| Receipt {
            provider_message_id: format!("{}-id", self.name),
            raw: serde_json::Value::Null,
        })
    }
}

/// A vendor that has every message it is asked about.
struct Holder;

#[async_trait]
impl Provider for Holder {
    fn name(&self) -> &str {
        "holder"
    }

    fn channel(&self) -> Channel {
        Channel::Sms
    }

    async fn send(&self, _message: &Message) -> Result<Receipt, ProviderError> {
        Err(ProviderError::transient("not used"))
    }

    async fn lookup(&self, _reference: &MessageId) -> Result<Lookup, ProviderError> {
        Ok(Lookup::Found(Receipt {
            provider_message_id: "held-1".into(),
            raw: serde_json::Value::Null,
        }))
    }
}

/// After a dispatcher died mid-send every member is asked: one that
/// cannot tell does not hide one that has the message; a named member
/// is asked alone. When none can tell, the provider last stored decides
/// with its policy, not the first member.
#[tokio::test]
async fn a_lookup_of_every_member_finds_the_one_that_has_the_message() {
    let unsure = Scripted::new("unsure", Ok(()));
    let router = Router::new(
        Mode::Weighted,
        vec![
            member(&unsure, 1, None),
            Member::new(Arc::new(Holder), 1, None, None),
        ],
        Duration::from_secs(1),
    );
    let id = message().id;
    let looked = router.lookup(Ask::Every { last: None }, &id).await;
    assert_eq!(looked.provider, "holder");
    assert!(
        matches!(looked.result, Ok(Lookup::Found(_))),
        "{:?}",
        looked.result
    );
    let looked = router.lookup(Ask::Only("unsure"), &id).await;
    assert_eq!(looked.provider, "unsure");
    assert!(matches!(looked.result, Ok(Lookup::CannotTell)));
    let looked = router.lookup(Ask::Only("gone"), &id).await;
    assert!(matches!(looked.result, Ok(Lookup::NotFound)));

    let waits = Scripted::new("waits", Ok(()));
    let router = in_order(&unsure, &waits);
    let looked = router
        .lookup(
            Ask::Every {
                last: Some("waits"),
            },
            &id,
        )
        .await;
    assert_eq!(looked.provider, "waits", "the provider last stored decides");
    assert!(matches!(looked.result, Ok(Lookup::CannotTell)));
    let looked = router.lookup(Ask::Every { last: None }, &id).await;
    assert_eq!(looked.provider, "unsure", "then config order");
}

fn transient() -> ProviderError {
    ProviderError::transient("HTTP 503")
}

fn member(provider: &Arc<Scripted>, weight: u32, breaker: Option<BreakerConfig>) -> Member {
    Member::new(provider.clone(), weight, breaker, None)
}

fn message() -> Message {
    mdc_core::contract::sample_message("+14155550123")
}

/// `first`, then `second`, neither with a breaker or a rate limit.
fn in_order(first: &Arc<Scripted>, second: &Arc<Scripted>) -> Router {
    Router::new(
        Mode::Ordered,
        vec![member(first, 1, None), member(second, 1, None)],
        Duration::from_secs(1),
    )
}

/// A message waiting for a rate limit's token is not sent after its
/// deadline: the wait ends there, with nothing sent.
#[tokio::test(start_paused = true)]
async fn no_message_waits_at_a_rate_limit_past_its_deadline() {
    let vendor = Scripted::new("limited", Ok(()));
    let router = Router::new(
        Mode::Ordered,
        vec![Member::new(vendor.clone(), 1, None, Some((1.0, 1)))],
        Duration::from_secs(1),
    );
    assert!(
        router.send(&message(), || true).await.result.is_ok(),
        "the burst"
    );
    let mut late = message();
    late.deadline = mdc_core::now() + chrono::Duration::milliseconds(300);
    let started = tokio::time::Instant::now();
    let attempt = router.send(&late, || true).await;
    assert!(
        matches!(attempt.result, Err(ProviderError::Transient { .. })),
        "{:?}",
        attempt.result
    );
    assert!(attempt.past_deadline());
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(vendor.calls(), 1, "the late message was not sent");
    // With time to wait for the next token, it is sent.
    let mut patient = message();
    patient.deadline = mdc_core::now() + chrono::Duration::seconds(5);
    assert!(router.send(&patient, || true).await.result.is_ok());
    assert_eq!(vendor.calls(), 2);
}

/// The hold is asked before every provider call, after a failover and
/// after a rate limit's wait too; a wait for a token ends when the hold
/// does, and leaves the token.
#[tokio::test(start_paused = true)]
async fn nothing_is_sent_once_the_attempt_no_longer_holds_the_message() {
    let down = Scripted::new("down", Err(transient()));
    let up = Scripted::new("up", Ok(()));
    let router = Router::new(
        Mode::Ordered,
        vec![
            member(&down, 1, None),
            Member::new(up.clone(), 1, None, Some((1.0, 1))),
        ],
        Duration::from_secs(1),
    );
    let asked = AtomicU32::new(0);
    // Held for the first member only.
    let attempt = router
        .send(&message(), || asked.fetch_add(1, Ordering::SeqCst) == 0)
        .await;
    assert_eq!((down.calls(), up.calls()), (1, 0));
    assert_eq!(attempt.provider, "up");
    assert!(
        attempt.lease_lost()
            && matches!(&attempt.result, Err(ProviderError::Transient { message, .. }) if message == LEASE_LOST),
        "{:?}",
        attempt.result
    );
    // The token was left for the next send; now `up` is at its limit and
    // the hold ends while the message waits for the next token.
    assert!(router.send(&message(), || true).await.result.is_ok());
    let start = tokio::time::Instant::now();
    let until = start + Duration::from_millis(500);
    let attempt = router
        .send(&message(), || tokio::time::Instant::now() < until)
        .await;
    assert!(attempt.lease_lost());
    assert_eq!(up.calls(), 1, "not sent after the wait");
    assert!(
        start.elapsed() < Duration::from_millis(700),
        "stopped waiting once the hold ended: {:?}",
        start.elapsed()
    );
    // For each priority's way of waiting: the token the lost attempt
    // waited for is the next send's, a second after the last.
    for critical in [false, true] {
        let start = tokio::time::Instant::now();
        let until = start + Duration::from_millis(300);
        let mut waiting = message();
        if critical {
            waiting.priority = Priority::Critical;
        }
        let attempt = router
            .send(&waiting, || tokio::time::Instant::now() < until)
            .await;
        assert!(attempt.lease_lost());
        assert!(router.send(&waiting, || true).await.result.is_ok());
        assert!(
            start.elapsed() < Duration::from_millis(1100),
            "the token was left: {:?}",
            start.elapsed()
        );
    }
    assert_eq!(up.calls(), 3);
}

/// A vendor's error is a vendor's error, whatever its words: only the
/// router's own stop is a lost lease.
#[tokio::test]
async fn a_vendor_error_worded_like_a_stop_is_not_one() {
    let odd = Scripted::new("odd", Err(ProviderError::transient(LEASE_LOST)));
    let router = Router::new(
        Mode::Ordered,
        vec![member(&odd, 1, None)],
        Duration::from_secs(1),
    );
    let attempt = router.send(&message(), || true).await;
    assert_eq!(odd.calls(), 1);
    assert!(!attempt.lease_lost());
}

#[tokio::test]
async fn ordered_fails_over_on_transient_but_not_on_ambiguous_or_permanent() {
    let down = Scripted::new("down", Err(transient()));
    let up = Scripted::new("up", Ok(()));
    let router = in_order(&down, &up);
    let attempt = router.send(&message(), || true).await;
    assert_eq!(attempt.provider, "up");
    assert!(attempt.result.is_ok());
    assert_eq!(
        attempt.skipped,
        vec![("down".to_owned(), "HTTP 503".to_owned())]
    );
    assert_eq!(attempt.failed_over, vec!["down".to_owned()]);

    // Every call failed: the last one is the last word, the others
    // failed over.
    let also_down = Scripted::new("also-down", Err(transient()));
    let router = in_order(&down, &also_down);
    let attempt = router.send(&message(), || true).await;
    assert_eq!(attempt.provider, "also-down");
    assert!(attempt.result.is_err());
    assert_eq!(attempt.failed_over, vec!["down".to_owned()]);

    // The hold lost after a failed call: that call failed over, the
    // next member is never called.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let router = in_order(&down, &up);
    let up_before = up.calls();
    let attempt = router
        .send(&message(), || {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0
        })
        .await;
    assert!(attempt.lease_lost());
    assert_eq!(attempt.provider, "up");
    assert_eq!(attempt.failed_over, vec!["down".to_owned()]);
    assert_eq!(up.calls(), up_before, "not called once the hold was lost");

    for outcome in [
        ProviderError::Ambiguous {
            message: "timeout".into(),
        },
        ProviderError::Permanent {
            code: "400".into(),
            message: "bad".into(),
        },
    ] {
        let first = Scripted::new("first", Err(outcome.clone()));
        let second = Scripted::new("second", Ok(()));
        let router = in_order(&first, &second);
        let attempt = router.send(&message(), || true).await;
        assert_eq!(attempt.provider, "first");
        assert_eq!(attempt.result.err(), Some(outcome));
        assert_eq!(
            second.calls(),
            0,
            "never sent twice after an uncertain or final answer"
        );
    }
}

#[tokio::test]
async fn an_open_breaker_is_skipped_and_all_open_says_when_to_come_back() {
    let breaker = BreakerConfig {
        window: 2,
        min_requests: 2,
        failure_ratio: 0.5,
        open_for: Duration::from_secs(60),
    };
    let down = Scripted::new("down", Err(transient()));
    let router = Router::new(
        Mode::Ordered,
        vec![member(&down, 1, Some(breaker))],
        Duration::from_secs(1),
    );
    for _ in 0..2 {
        router.send(&message(), || true).await;
    }
    assert_eq!(down.calls(), 2);
    let attempt = router.send(&message(), || true).await;
    assert_eq!(down.calls(), 2, "the open breaker keeps sends away");
    match attempt.result {
        Err(ProviderError::Transient {
            retry_after: Some(after),
            ..
        }) => assert!(after > Duration::from_secs(50)),
        other => panic!("expected a transient error with a retry-after, got {other:?}"),
    }
}

#[tokio::test]
async fn weighted_routes_share_traffic_by_weight() {
    let heavy = Scripted::new("heavy", Ok(()));
    let light = Scripted::new("light", Ok(()));
    let router = Router::new(
        Mode::Weighted,
        vec![member(&heavy, 3, None), member(&light, 1, None)],
        Duration::from_secs(1),
    );
    for _ in 0..2000 {
        router.send(&message(), || true).await;
    }
    let share = f64::from(heavy.calls()) / 2000.0;
    assert!(
        (0.70..=0.80).contains(&share),
        "heavy took {share:.3} of the traffic, expected about 0.75"
    );
    assert_eq!(heavy.calls() + light.calls(), 2000);
}

/// A call waits while the hold is too short for it (the lease is being
/// extended): it is made once the hold covers it, and not at all if the
/// hold runs out instead.
#[tokio::test(start_paused = true)]
async fn a_call_waits_while_the_hold_is_too_short_for_it() {
    let up = Scripted::new("up", Ok(()));
    let router = Router::new(
        Mode::Ordered,
        vec![member(&up, 1, None)],
        Duration::from_secs(1),
    );
    let start = tokio::time::Instant::now();
    let extended_at = start + Duration::from_millis(300);
    let attempt = router
        .send(&message(), || {
            if tokio::time::Instant::now() < extended_at {
                Hold::Wait
            } else {
                Hold::Ready
            }
        })
        .await;
    assert!(attempt.result.is_ok(), "{:?}", attempt.result);
    assert_eq!(up.calls(), 1);
    assert!(start.elapsed() >= Duration::from_millis(300));

    let start = tokio::time::Instant::now();
    let ends_at = start + Duration::from_millis(500);
    let attempt = router
        .send(&message(), || {
            if tokio::time::Instant::now() < ends_at {
                Hold::Wait
            } else {
                Hold::Lost
            }
        })
        .await;
    assert!(attempt.lease_lost(), "{:?}", attempt.result);
    assert_eq!(up.calls(), 1, "nothing sent on a hold that ran out");
}

/// A call waiting for its hold to cover it waits no longer than the
/// message's deadline: the attempt then ends with nothing sent, marked
/// past its deadline (the message expires).
#[tokio::test(start_paused = true)]
async fn a_call_waiting_for_its_hold_does_not_outlast_the_deadline() {
    let up = Scripted::new("up", Ok(()));
    let router = Router::new(
        Mode::Ordered,
        vec![member(&up, 1, None)],
        Duration::from_secs(1),
    );
    let mut late = message();
    late.deadline = mdc_core::now() + chrono::Duration::milliseconds(500);
    let start = tokio::time::Instant::now();
    let attempt = tokio::time::timeout(Duration::from_secs(5), router.send(&late, || Hold::Wait))
        .await
        .expect("the wait outlasted the deadline");
    assert!(
        matches!(&attempt.result, Err(ProviderError::Transient { message, .. }) if message.contains("deadline")),
        "{:?}",
        attempt.result
    );
    assert!(!attempt.lease_lost());
    assert!(attempt.past_deadline());
    assert_eq!(up.calls(), 0, "nothing sent past the deadline");
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert!(start.elapsed() < Duration::from_millis(700));
}
