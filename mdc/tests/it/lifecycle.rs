use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{email, push, sent_event, sms, Server, TEST_CONFIG};

const WITHIN: Duration = Duration::from_secs(20);

fn statuses(message: &Value) -> Vec<String> {
    message["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["status"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn sms_email_and_push_reach_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    for body in [
        sms("+1 415 555 0123"),
        email("alice@example.com"),
        push("user:alice"),
    ] {
        let id = server.submit(&body).await;
        let message = server.wait_terminal(&id, WITHIN).await;
        assert_eq!(message["status"], "delivered", "{message:#}");
        // The report may overtake the dispatcher's own `sent`, which is
        // then kept without a status.
        let seen = statuses(&message);
        assert!(
            seen == ["accepted", "queued", "sending", "sent", "delivered"]
                || seen == ["accepted", "queued", "sending", "delivered"]
                    && sent_event(&message).is_some(),
            "{seen:?}: {message:#}"
        );
        assert!(message["provider_message_id"]
            .as_str()
            .is_some_and(|p| p.starts_with("sim-")));
        let events = message["events"].as_array().expect("events");
        assert!(events
            .iter()
            .all(|e| e["component"].is_string() && e["at"].is_string()));
        let report = events.iter().find(|e| e["status"] == "delivered");
        assert!(
            report.expect("a delivered event")["raw"].is_object(),
            "the vendor's payload is kept"
        );
    }
    let sms_message = server
        .message(&server.submit(&sms("+14155550123")).await)
        .await;
    assert_eq!(sms_message["to"], "+14155550123");
    assert_eq!(sms_message["sender"], "MDCOTP");
}

#[tokio::test]
async fn magic_recipients_reach_their_outcomes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Reports slower than retries: the ambiguous message's retry runs before
    // its report arrives, so only asking the vendor first prevents a resend.
    let config = TEST_CONFIG.replace("report_delay = \"20ms\"", "report_delay = \"700ms\"");
    let server = Server::start_with(dir.path(), &config).await;

    let rejected = server.submit(&sms("+14155550190")).await;
    let bounced = server.submit(&email("bounce@sim.mdc.test")).await;
    let transient = server.submit(&push("sim-transient-2-device")).await;
    let ambiguous = server.submit(&sms("+14155550192")).await;
    let exhausted = server.submit(&email("transient-5@sim.mdc.test")).await;

    let message = server.wait_terminal(&rejected, WITHIN).await;
    assert_eq!(message["status"], "failed");
    assert_eq!(message["attempts"], 1);
    assert!(message["events"]
        .to_string()
        .contains("simulated rejection"));

    let message = server.wait_terminal(&bounced, WITHIN).await;
    assert_eq!(message["status"], "failed");
    assert_eq!(
        statuses(&message).last().map(String::as_str),
        Some("failed")
    );
    assert!(
        message["events"].to_string().contains("unknown subscriber"),
        "{message:#}"
    );

    let message = server.wait_terminal(&transient, WITHIN).await;
    assert_eq!(message["status"], "delivered", "{message:#}");
    assert_eq!(message["attempts"], 3);

    let message = server.wait_terminal(&ambiguous, WITHIN).await;
    assert_eq!(message["status"], "delivered", "{message:#}");

    // Three retries in the test schedule: four attempts, then it fails.
    let message = server.wait_terminal(&exhausted, WITHIN).await;
    assert_eq!(message["status"], "failed", "{message:#}");
    assert_eq!(message["attempts"], 4);
    assert!(message["events"]
        .to_string()
        .contains("giving up after 4 attempts"));

    // Give a late retry of the ambiguous message time to run, then check that
    // the vendor saw exactly one accepted send of it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let sends = server.vendor_sends().await;
    assert_eq!(sends[&ambiguous]["accepted"], 1, "{sends:#}");
    assert_eq!(sends[&transient]["accepted"], 1);
    assert_eq!(sends[&transient]["calls"], 3);
    assert_eq!(sends[&rejected]["accepted"], 0);
}

#[tokio::test]
async fn the_same_idempotency_key_never_sends_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let mut body = sms("+14155550123");
    body["idempotency_key"] = json!("password-reset-77");
    let first = server.submit(&body).await;
    let (status, again) = server.post(&body).await;
    assert_eq!(status, 202);
    assert_eq!(again["id"], first.as_str());
    assert_eq!(again["duplicate"], true);
    server.wait_terminal(&first, WITHIN).await;
    let (_, after) = server.post(&body).await;
    assert_eq!(after["id"], first.as_str());
    assert_eq!(after["status"], "delivered");
    let sends = server.vendor_sends().await;
    assert_eq!(sends.as_object().expect("map").len(), 1);
    assert_eq!(sends[&first]["accepted"], 1);
}

/// The ledger comes a page at a time, in id order; a page that is not
/// full is the last. A limit or cursor it cannot take is a 422 naming it.
#[tokio::test]
async fn the_simulators_ledger_is_read_a_page_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(server.submit(&sms(&format!("+1415555012{n}"))).await);
    }
    for id in &ids {
        server.wait_terminal(id, WITHIN).await;
    }
    ids.sort();
    let (status, first) = server.get("/v1/simulator/sends?limit=3").await;
    assert_eq!(status, 200);
    let keys: Vec<&String> = first["sends"].as_object().expect("map").keys().collect();
    assert_eq!(keys, ids[..3].iter().collect::<Vec<_>>());
    assert_eq!(first["next_cursor"], ids[2].as_str());
    let (_, second) = server
        .get(&format!("/v1/simulator/sends?limit=3&cursor={}", ids[2]))
        .await;
    let keys: Vec<&String> = second["sends"].as_object().expect("map").keys().collect();
    assert_eq!(keys, ids[3..].iter().collect::<Vec<_>>());
    assert_eq!(second["next_cursor"], Value::Null);
    // By default one page holds them all.
    let (_, all) = server.get("/v1/simulator/sends").await;
    assert_eq!(all["sends"].as_object().expect("map").len(), 5);
    assert_eq!(all["sends"][&ids[0]]["accepted"], 1);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=many", "limit"),
        ("cursor=msg_nonsense", "cursor"),
        ("after=x", "after"),
    ] {
        let (status, body) = server.get(&format!("/v1/simulator/sends?{query}")).await;
        assert_eq!(status, 422, "{query}: {body:#}");
        assert_eq!(body["error"]["field"], field, "{query}: {body:#}");
    }
}

#[tokio::test]
async fn a_retry_past_the_deadline_expires_instead_of_sending_late() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!("{TEST_CONFIG}\n[client.priority_deadline_caps]\nbulk = \"5s\"\n")
        .replace(
            "retry_schedule = [\"200ms\", \"400ms\", \"800ms\"]",
            "retry_schedule = [\"30s\"]",
        );
    let server = Server::start_with(dir.path(), &config).await;
    let mut body = sms("+14155550181");
    body["priority"] = json!("bulk");
    let id = server.submit(&body).await;
    let message = server.wait_terminal(&id, WITHIN).await;
    assert_eq!(message["status"], "expired", "{message:#}");
    assert_eq!(message["attempts"], 1);
    assert!(message["events"].to_string().contains("after the deadline"));
}

#[tokio::test]
async fn lists_filter_by_status_and_channel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let failed = server.submit(&sms("+14155550190")).await;
    let delivered = server.submit(&email("bob@example.com")).await;
    server.wait_terminal(&failed, WITHIN).await;
    server.wait_terminal(&delivered, WITHIN).await;
    let (status, body) = server.get("/v1/messages?status=failed&channel=sms").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["messages"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, [failed.as_str()]);
    let (_, body) = server.get("/v1/messages?limit=1").await;
    assert_eq!(body["messages"].as_array().expect("list").len(), 1);
    let (status, stats) = server.get("/v1/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["statuses"], json!({"failed": 1, "delivered": 1}));
    assert_eq!(stats["total"], 2);
}

#[tokio::test]
async fn a_restart_keeps_every_message_and_completes_pending_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Long retries: messages are still pending when the server stops.
    let slow = TEST_CONFIG.replace(
        "retry_schedule = [\"200ms\", \"400ms\", \"800ms\"]",
        "retry_schedule = [\"2s\"]",
    );
    let mut server = Server::start_with(dir.path(), &slow).await;
    let delivered = server.submit(&sms("+14155550123")).await;
    server.wait_terminal(&delivered, WITHIN).await;
    let mut pending = Vec::new();
    for i in 0..20 {
        pending.push(
            server
                .submit(&push(&format!("sim-transient-1-device-{i}")))
                .await,
        );
    }
    server.signal("TERM");
    assert!(
        server.wait_exit(Duration::from_secs(30)),
        "graceful exit; log:\n{}",
        server.log()
    );

    let server = Server::start_with(dir.path(), &slow).await;
    assert_eq!(server.message(&delivered).await["status"], "delivered");
    for id in &pending {
        let message = server.wait_terminal(id, WITHIN).await;
        assert_eq!(message["status"], "delivered", "{message:#}");
    }
    let sends = server.vendor_sends().await;
    for id in &pending {
        assert_eq!(sends[id]["accepted"], 1, "{id}: {}", sends[id]);
    }
}

#[tokio::test]
async fn the_cli_sends_and_shows_a_timeline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let mdc = env!("CARGO_BIN_EXE_mdc");
    let output = tokio::process::Command::new(mdc)
        .args([
            "send",
            "sms",
            "--to",
            "+14155550123",
            "--body",
            "hello from the CLI",
            "--server",
            &server.base,
        ])
        .output()
        .await
        .expect("run mdc send");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = String::from_utf8(output.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert!(id.starts_with("msg_"), "{id}");
    server.wait_terminal(&id, WITHIN).await;
    let output = tokio::process::Command::new(mdc)
        .args(["status", &id, "--server", &server.base])
        .output()
        .await
        .expect("run mdc status");
    let timeline = String::from_utf8(output.stdout).expect("utf8");
    assert!(timeline.contains("DELIVERED"), "{timeline}");
    for step in [
        "accepted",
        "queued on sms.normal",
        "attempt 1 started",
        "sent",
        "delivered (vendor report)",
    ] {
        assert!(timeline.contains(step), "{step} missing from:\n{timeline}");
    }
    let output = tokio::process::Command::new(mdc)
        .args([
            "send",
            "sms",
            "--to",
            "12345",
            "--body",
            "x",
            "--server",
            &server.base,
        ])
        .output()
        .await
        .expect("run mdc send");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("to:"));
}
