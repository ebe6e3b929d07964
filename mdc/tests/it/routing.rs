//! Real vendors' paths end to end: Kaleyra through its simulator and the
//! callback intake; failover, circuit breaking, rate limits and 429s.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::harness::{
    email, free_port, kaleyra_provider, sent_event, sms, KaleyraSim, Server, KALEYRA_ENV,
    TEST_CONFIG,
};

const WITHIN: Duration = Duration::from_secs(30);

#[tokio::test]
async fn kaleyra_end_to_end_through_the_simulator_and_the_callback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = KaleyraSim::start(&["--callback-delay", "50ms"]).await;
    let port = free_port();
    let config = format!(
        "{TEST_CONFIG}{}\n[routes.sms]\nmembers = [{{ provider = \"kaleyra-test\" }}]\n",
        kaleyra_provider("kaleyra-test", &sim, port)
    );
    let server = Server::start_on(dir.path(), &config, port, KALEYRA_ENV).await;

    let id = server.submit(&sms("+919876543210")).await;
    let message = server.wait_terminal(&id, WITHIN).await;
    assert_eq!(message["status"], "delivered", "{message:#}");
    assert_eq!(message["provider"], "kaleyra-test");
    let vendor_id = message["provider_message_id"].as_str().expect("vendor id");
    assert!(vendor_id.ends_with(":1"), "Kaleyra-shaped id: {vendor_id}");
    let report = message["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["status"] == "delivered")
        .expect("a delivered event")
        .clone();
    assert_eq!(report["component"], "response-handler");
    assert_eq!(report["raw"]["status"], "DELIVERED");
    assert_eq!(sim.sends().await["accepted"][&id], 1);

    // A failed report moves the message to failed.
    let bounced = server.submit(&sms("+14155550191")).await;
    let message = server.wait_terminal(&bounced, WITHIN).await;
    assert_eq!(message["status"], "failed", "{message:#}");
}

#[tokio::test]
async fn the_callback_intake_checks_the_token_and_tolerates_odd_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = KaleyraSim::start(&[]).await;
    let port = free_port();
    let config = format!(
        "{TEST_CONFIG}{}",
        kaleyra_provider("kaleyra-test", &sim, port)
    );
    let server = Server::start_on(dir.path(), &config, port, KALEYRA_ENV).await;
    let url = format!("{}/v1/callbacks/kaleyra/kaleyra-test", server.base);
    let report = json!({"message_id": "abc:1", "status": "DELIVERED", "ref": "msg_01J0000000000000000000000Z"});

    for token in ["wrong", ""] {
        let response = server
            .http
            .post(format!("{url}?token={token}"))
            .json(&report)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status().as_u16(), 401);
        let body = response.text().await.expect("body");
        assert!(!body.contains("token"), "does not say why: {body}");
    }
    let other = server
        .http
        .post(format!(
            "{}/v1/callbacks/kaleyra/unknown?token=callback-secret",
            server.base
        ))
        .json(&report)
        .send()
        .await
        .expect("post");
    assert_eq!(
        other.status().as_u16(),
        401,
        "a token of another provider does not open this one"
    );

    // Unknown message, intermediate status, GET form: all acknowledged.
    let ok = server
        .http
        .post(format!("{url}?token=callback-secret"))
        .json(&report)
        .send()
        .await
        .expect("post");
    assert_eq!(ok.status().as_u16(), 200);
    let sent = server
        .http
        .post(format!("{url}?token=callback-secret"))
        .json(&json!({"message_id": "abc:1", "status": "SENT"}))
        .send()
        .await
        .expect("post");
    assert_eq!(sent.status().as_u16(), 200);
    let get = server
        .http
        .get(format!(
            "{url}?token=callback-secret&message_id=abc:2&status=FAILED"
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(get.status().as_u16(), 200);
    let form = server
        .http
        .post(format!("{url}?token=callback-secret"))
        .form(&[("id", "abc:3"), ("status", "UNDELIVERED")])
        .send()
        .await
        .expect("post");
    assert_eq!(form.status().as_u16(), 200);
    let malformed = server
        .http
        .post(format!("{url}?token=callback-secret"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("post");
    assert_eq!(malformed.status().as_u16(), 400);

    // Still serving, and the unknown report did no harm.
    let id = server.submit(&sms("+14155550123")).await;
    assert_eq!(
        server.wait_terminal(&id, WITHIN).await["status"],
        "delivered"
    );
}

#[tokio::test]
async fn fails_over_on_5xx_and_skips_a_provider_whose_breaker_is_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = KaleyraSim::start(&["--error-percent", "100"]).await;
    let healthy = KaleyraSim::start(&[]).await;
    let port = free_port();
    let config = format!(
        "{TEST_CONFIG}{}{}\n[routes.sms]\nmode = \"ordered\"\nmembers = [{{ provider = \"primary\" }}, {{ provider = \"secondary\" }}]\n[breaker]\nwindow = 4\nmin_requests = 2\nfailure_ratio = 0.5\nopen_for = \"1m\"\n",
        kaleyra_provider("primary", &broken, port),
        kaleyra_provider("secondary", &healthy, port)
    );
    let server = Server::start_on(dir.path(), &config, port, KALEYRA_ENV).await;

    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            server
                .submit(&sms(&format!("+1415555{:04}", 2000 + i)))
                .await,
        );
        // One at a time, so the breaker sees them in order.
        server.wait_terminal(ids.last().expect("id"), WITHIN).await;
    }
    let mut skipped_by_breaker = 0;
    for id in &ids {
        let message = server.message(id).await;
        assert_eq!(message["status"], "delivered", "{message:#}");
        assert_eq!(message["provider"], "secondary");
        let details = sent_event(&message).expect("a sent event")["details"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(details.contains("failing over"), "{details}");
        if details.contains("circuit breaker open") {
            skipped_by_breaker += 1;
        } else {
            assert!(details.contains("503"), "{details}");
        }
    }
    assert!(
        skipped_by_breaker >= 3,
        "the breaker opened after two failures: {skipped_by_breaker}"
    );
    let calls = broken.sends().await["calls"]
        .as_object()
        .map_or(0, |c| c.len());
    assert!(
        calls <= 3,
        "the open breaker kept traffic off the broken provider: {calls} calls"
    );
    let metrics = server.get_text("/metrics").await;
    assert!(
        metrics.contains("mdc_breaker_open{provider=\"primary\"} 1"),
        "{metrics}"
    );
    // Each vendor call counted once: the 503s that failed over as
    // transient at the primary, every send at the secondary.
    let sends = |provider: &str, outcome: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("mdc_sends_total{")
                    && l.contains(&format!("provider=\"{provider}\""))
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(
        sends("primary", "transient"),
        (ids.len() - skipped_by_breaker) as f64,
        "{metrics}"
    );
    assert_eq!(sends("secondary", "sent"), ids.len() as f64, "{metrics}");
    // No route uses a simulator: their surface is not mounted.
    let (status, _) = server.get("/v1/simulator/sends").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_rate_limit_holds_and_429_slows_down_then_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = KaleyraSim::start(&[]).await;
    let port = free_port();
    let config = format!(
        "{TEST_CONFIG}{}\n[routes.sms]\nmembers = [{{ provider = \"kaleyra-test\", rate_per_second = 10.0, burst = 1 }}]\n",
        kaleyra_provider("kaleyra-test", &sim, port)
    );
    let server = Server::start_on(dir.path(), &config, port, KALEYRA_ENV).await;

    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            server
                .submit(&sms(&format!("+1415555{:04}", 3000 + i)))
                .await,
        );
    }
    let mut sent_at: Vec<DateTime<Utc>> = Vec::new();
    for id in &ids {
        let message = server.wait_terminal(id, WITHIN).await;
        assert_eq!(message["status"], "delivered", "{message:#}");
        sent_at.push(
            sent_event(&message).expect("a sent event")["at"]
                .as_str()
                .expect("at")
                .parse()
                .expect("time"),
        );
    }
    sent_at.sort();
    // Over the middle 26 sends: one slow send at either end says nothing
    // about the rate.
    let span = (sent_at[27] - sent_at[2]).num_milliseconds() as f64 / 1000.0;
    let rate = 25.0 / span;
    assert!(
        rate <= 10.0 * 1.25,
        "{rate:.1} sends/s over {span:.2}s against a limit of 10/s"
    );
    assert!(
        rate >= 10.0 * 0.5,
        "{rate:.1} sends/s: the limit should not be much slower than configured"
    );

    // 429s: the send is retried later and gets through once the vendor recovers.
    sim.set_faults(json!({"throttle_percent": 100})).await;
    let id = server.submit(&sms("+14155553100")).await;
    let pending = server.wait_event(&id, "429", WITHIN).await;
    assert_eq!(pending["status"], "sending", "{pending:#}");
    sim.set_faults(json!({})).await;
    let message = server.wait_terminal(&id, WITHIN).await;
    assert_eq!(message["status"], "delivered", "{message:#}");
}

#[tokio::test]
async fn a_report_with_only_the_vendor_id_finds_its_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The simulator's own callback comes too late to matter.
    let sim = KaleyraSim::start(&["--callback-delay", "30s"]).await;
    let port = free_port();
    let config = format!(
        "{TEST_CONFIG}{}\n[routes.sms]\nmembers = [{{ provider = \"kaleyra-test\" }}]\n",
        kaleyra_provider("kaleyra-test", &sim, port)
    );
    let server = Server::start_on(dir.path(), &config, port, KALEYRA_ENV).await;
    let id = server.submit(&sms("+919876543210")).await;
    let vendor_id = server.wait_sent(&id, WITHIN).await;
    let url = format!(
        "{}/v1/callbacks/kaleyra/kaleyra-test?token=callback-secret",
        server.base
    );
    let report = json!({"message_id": vendor_id, "status": "DELIVERED"});
    let response = server
        .http
        .post(url)
        .json(&report)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 200);
    let message = server.wait_terminal(&id, WITHIN).await;
    assert_eq!(message["status"], "delivered", "{message:#}");
}

/// A Kaleyra callback that names (by `ref` and vendor id) a message sent
/// through another provider is acknowledged, counted, and changes nothing.
#[tokio::test]
async fn a_kaleyra_callback_naming_another_providers_message_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = KaleyraSim::start(&[]).await;
    let port = free_port();
    // The simulated email vendor reports only after a minute: the email
    // stays `sent` meanwhile.
    let config = format!(
        "[dispatcher]\nsend_timeout = \"2s\"\nlease = \"3s\"\n\n[simulator]\nreport_delay = \"60s\"\n{}",
        kaleyra_provider("kaleyra-test", &sim, port)
    );
    let server = Server::start_on(dir.path(), &config, port, KALEYRA_ENV).await;
    let id = server.submit(&email("alice@example.com")).await;
    let message = server.wait_status(&id, "sent", WITHIN).await;
    let vendor_id = message["provider_message_id"].as_str().expect("vendor id");

    let response = server
        .http
        .post(format!(
            "{}/v1/callbacks/kaleyra/kaleyra-test?token=callback-secret",
            server.base
        ))
        .json(&json!({"message_id": vendor_id, "status": "DELIVERED", "ref": id}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 200, "the vendor gets its 2xx");
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let (_, health) = server.get("/healthz").await;
        if health["mismatched_reports"] == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not counted: {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = server.message(&id).await;
    assert_eq!(message["status"], "sent", "{message:#}");
    assert_eq!(message["provider"], "sim-email");
    assert!(
        !message.to_string().contains("kaleyra-test"),
        "no trace of the foreign report: {message:#}"
    );
}

/// Kaleyra takes the message but the connection breaks before its answer:
/// the send is ambiguous, Kaleyra cannot be asked by MDC's id, and it
/// reports back, so MDC does not send again; its callback settles the
/// message.
#[tokio::test]
async fn an_ambiguous_kaleyra_send_is_not_repeated_and_its_callback_settles_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = KaleyraSim::start(&["--callback-delay", "300ms"]).await;
    let port = free_port();
    let config = format!(
        "{TEST_CONFIG}{}\n[routes.sms]\nmembers = [{{ provider = \"kaleyra-test\" }}]\n",
        kaleyra_provider("kaleyra-test", &sim, port)
    );
    let server = Server::start_on(dir.path(), &config, port, KALEYRA_ENV).await;
    sim.set_faults(json!({"drop_percent": 100})).await;
    let id = server.submit(&sms("+919876543211")).await;
    let message = server.wait_terminal(&id, WITHIN).await;
    assert_eq!(message["status"], "delivered", "{message:#}");
    assert_eq!(message["provider"], "kaleyra-test");
    assert!(
        message["events"]
            .to_string()
            .contains("after_ambiguous = wait_for_report"),
        "{message:#}"
    );
    let sends = sim.sends().await;
    assert_eq!(sends["accepted"][&id], 1, "{sends}");
    assert_eq!(sends["calls"][&id], 1, "{sends}");
}

/// Kaleyra never calls back: once the report is late, the reconciler asks
/// Kaleyra's status API and the message reaches its outcome.
#[tokio::test]
async fn without_a_callback_the_reconciler_pulls_the_status_from_kaleyra() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = KaleyraSim::start(&["--no-callbacks", "--callback-delay", "100ms"]).await;
    let port = free_port();
    let config = format!(
        "{TEST_CONFIG}\n[reconciler]\ninterval = \"1s\"\nreport_timeout = \"1s\"\n{}\n[routes.sms]\nmembers = [{{ provider = \"kaleyra-test\" }}]\n",
        kaleyra_provider("kaleyra-test", &sim, port)
    );
    let server = Server::start_on(dir.path(), &config, port, KALEYRA_ENV).await;
    let id = server.submit(&sms("+919876543212")).await;
    let message = server.wait_terminal(&id, WITHIN).await;
    assert_eq!(message["status"], "delivered", "{message:#}");
    let delivered = message["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["status"] == "delivered")
        .expect("a delivered event")
        .clone();
    assert_eq!(
        delivered["raw"]["pulled"]["status"], "Delivered",
        "{delivered:#}"
    );
    assert_eq!(sim.sends().await["accepted"][&id], 1);
}
