//! Webhooks end to end: the real binary delivers outcomes to a receiver on
//! loopback ([`crate::receiver`]), which checks every delivery with an
//! independent Standard Webhooks implementation.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{email, free_port, push, sms, Server};
use crate::receiver::{config, kind, subscribe, verify, Mode, Receiver, WITHIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_reaches_each_subscribed_endpoint_once_signed_and_filtered() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &config("schedule = [\"200ms\"]\n")).await;
    subscribe(&server, &receiver, "all", Mode::Ok, json!({})).await;
    subscribe(
        &server,
        &receiver,
        "sms-failed",
        Mode::Ok,
        json!({"events": ["message.failed"], "channels": ["sms"]}),
    )
    .await;
    subscribe(
        &server,
        &receiver,
        "email-delivered",
        Mode::Ok,
        json!({"events": ["message.delivered"], "channels": ["email"]}),
    )
    .await;

    let mut delivered_sms = sms("+14155550100");
    delivered_sms["reference"] = json!("order-1");
    delivered_sms["metadata"] = json!({"tenant": "acme"});
    let delivered_sms = server.submit(&delivered_sms).await;
    let refused = server.submit(&sms("+14155550190")).await;
    let bounced = server.submit(&email("bounce@sim.mdc.test")).await;
    let delivered_email = server.submit(&email("alice@example.com")).await;
    let delivered_push = server.submit(&push("device-token-1")).await;
    // Marketing lives 1s here; its first try fails and the retry would
    // come after that.
    let mut expiring = sms("+14155550183");
    expiring["type"] = json!("marketing");
    expiring["priority"] = json!("bulk");
    let expiring = server.submit(&expiring).await;
    let expected: HashMap<&String, &str> = HashMap::from([
        (&delivered_sms, "delivered"),
        (&refused, "failed"),
        (&bounced, "failed"),
        (&delivered_email, "delivered"),
        (&delivered_push, "delivered"),
        (&expiring, "expired"),
    ]);
    for (id, status) in &expected {
        let message = server.wait_terminal(id, WITHIN).await;
        assert_eq!(message["status"], *status, "{message:#}");
    }

    // Every endpoint gets every matching event once: the final outcome of
    // each message, the `sent` of those that got that far, suppressions.
    let all = receiver
        .wait("all", |r| {
            expected.iter().all(|(id, status)| {
                r.iter()
                    .any(|d| kind(d) == format!("{id} message.{status}"))
            })
        })
        .await;
    let ids: HashSet<&str> = all.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "each event once");
    assert!(all.iter().all(|d| d.verified), "every delivery verifies");
    for id in [&delivered_sms, &bounced, &delivered_email, &delivered_push] {
        assert!(
            all.iter().any(|d| kind(d) == format!("{id} message.sent")),
            "{id} sent"
        );
    }
    let first: Value = all
        .iter()
        .map(|d| serde_json::from_slice::<Value>(&d.body).expect("json"))
        .find(|e| e["message_id"] == json!(delivered_sms) && e["type"] == "message.delivered")
        .expect("the delivered SMS");
    assert_eq!(first["reference"], "order-1");
    assert_eq!(first["metadata"]["tenant"], "acme");
    assert_eq!(first["schema"], "mdc.outcome.v1");
    assert_eq!(first["channel"], "sms");

    let sms_failed = receiver.wait("sms-failed", |r| !r.is_empty()).await;
    let kinds: HashSet<String> = sms_failed.iter().map(kind).collect();
    assert_eq!(kinds, HashSet::from([format!("{refused} message.failed")]));
    let email_delivered = receiver.received("email-delivered");
    let kinds: Vec<String> = email_delivered.iter().map(kind).collect();
    assert_eq!(kinds, [format!("{delivered_email} message.delivered")]);

    // The independent verifier refuses a tampered body or timestamp.
    let delivery = &all[0];
    let secret = receiver.paths.lock().expect("lock")["all"]
        .secret
        .clone()
        .expect("secret");
    assert!(verify(&secret, &delivery.headers, &delivery.body));
    let mut body = delivery.body.clone();
    body[1] ^= 1;
    assert!(!verify(&secret, &delivery.headers, &body), "tampered body");
    let mut headers = delivery.headers.clone();
    let timestamp: i64 = headers["webhook-timestamp"]
        .to_str()
        .expect("ts")
        .parse()
        .expect("ts");
    headers.insert(
        "webhook-timestamp",
        (timestamp + 1).to_string().parse().expect("header"),
    );
    assert!(
        !verify(&secret, &headers, &delivery.body),
        "tampered timestamp"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoints_are_retried_disabled_and_delay_no_one() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(
        dir.path(),
        &config("schedule = [\"300ms\", \"300ms\", \"300ms\", \"300ms\"]\ntimeout = \"2s\"\ndisable_after = \"700ms\"\n"),
    )
    .await;
    let sent_only = json!({"events": ["message.sent"]});
    let flaky = subscribe(
        &server,
        &receiver,
        "flaky",
        Mode::FailTimes(2),
        sent_only.clone(),
    )
    .await;
    let dead = subscribe(
        &server,
        &receiver,
        "dead",
        Mode::Always(500),
        sent_only.clone(),
    )
    .await;
    let gone = subscribe(
        &server,
        &receiver,
        "gone",
        Mode::Always(410),
        sent_only.clone(),
    )
    .await;
    let hanging = subscribe(
        &server,
        &receiver,
        "hanging",
        Mode::Hang(Duration::from_secs(5)),
        sent_only.clone(),
    )
    .await;
    subscribe(&server, &receiver, "healthy", Mode::Ok, sent_only.clone()).await;

    let first = server.submit(&sms("+14155550101")).await;
    // The healthy endpoint gets it, alongside the hanging one's first try.
    let got = receiver.wait("healthy", |r| r.len() == 1).await;
    let first_id = got[0].id.clone();

    // The flaky endpoint: two failures, then the same event, same id.
    let flaky_got = receiver.wait("flaky", |r| r.len() == 1).await;
    assert_eq!(flaky_got[0].id, first_id);
    assert!(flaky_got[0].verified);
    assert_eq!(receiver.calls("flaky", &first_id), 3);
    // The successful try is logged once its answer is in: the receiver can
    // see the call before the log has it.
    let deadline = Instant::now() + WITHIN;
    while attempt_count(&server, &flaky).await < 3 {
        assert!(Instant::now() < deadline, "the third try was never logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, attempts) = server.get(&format!("/v1/webhooks/{flaky}/attempts")).await;
    let statuses: Vec<Value> = attempts["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [json!(200), json!(500), json!(500)],
        "{attempts:#}"
    );

    // 410 disables at once; always failing disables after disable_after.
    let wait_disabled = |id: String| {
        let server = &server;
        async move {
            let deadline = Instant::now() + WITHIN;
            loop {
                let (_, endpoint) = server.get(&format!("/v1/webhooks/{id}")).await;
                if endpoint["enabled"] == false {
                    return endpoint;
                }
                assert!(Instant::now() < deadline, "{endpoint:#}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let endpoint = wait_disabled(gone.clone()).await;
    assert!(endpoint["disabled"]["reason"]
        .as_str()
        .expect("reason")
        .contains("410"));
    assert_eq!(receiver.total_calls("gone"), 1);
    let (_, attempts) = server.get(&format!("/v1/webhooks/{gone}/attempts")).await;
    assert!(
        attempts["attempts"][0]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("endpoint disabled: ")),
        "the attempt log says so: {attempts:#}"
    );
    let endpoint = wait_disabled(dead.clone()).await;
    assert!(
        endpoint["disabled"]["reason"]
            .as_str()
            .expect("reason")
            .contains("failed for"),
        "{endpoint:#}"
    );

    // The hanging endpoint is failing now: the next message reaches the
    // healthy one without waiting for it.
    let deadline = Instant::now() + WITHIN;
    loop {
        let (_, endpoint) = server.get(&format!("/v1/webhooks/{hanging}")).await;
        if !endpoint["failing_since"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "{endpoint:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = server.submit(&sms("+14155550102")).await;
    let got = receiver.wait("healthy", |r| r.len() == 2).await;
    let event: Value = serde_json::from_slice(&got[1].body).expect("json");
    assert_eq!(event["message_id"], json!(second));
    let at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(event["at"].clone()).expect("at");
    assert!(
        got[1].at - at < chrono::Duration::seconds(2),
        "delivered {} after the outcome",
        got[1].at - at
    );
    assert_eq!(
        receiver.total_calls("gone"),
        1,
        "a disabled endpoint gets nothing"
    );
    let _ = first;
}

#[tokio::test]
async fn webhook_urls_that_could_reach_inside_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    for url in [
        "http://hooks.example.com/x",
        "https://127.0.0.1/x",
        "https://10.0.0.8/x",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost:8443/x",
        "https://[::1]/x",
    ] {
        let (status, answer) = server.post_to("/v1/webhooks", json!({"url": url})).await;
        assert_eq!(status, 422, "{url}: {answer}");
        assert_eq!(answer["error"]["field"], "url", "{url}");
    }
    let (status, answer) = server
        .post_to(
            "/v1/webhooks",
            json!({"url": "https://8.8.8.8/x", "events": ["message.teleported"]}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(answer["error"]["field"], "events");
    let (status, answer) = server.post_to("/v1/webhooks", json!({"events": []})).await;
    assert_eq!(status, 422);
    assert_eq!(answer["error"]["field"], "url");
    let (_, list) = server.get("/v1/webhooks").await;
    assert_eq!(list["webhooks"], json!([]), "nothing was created");
}

/// `kill -9` while deliveries are pending: after a restart every outcome
/// reaches the endpoint at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_outcome_is_lost_to_a_crash() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = config("schedule = [\"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\"]\n");
    let mut server = Server::start_on(dir.path(), &config, port, &[]).await;
    // Fails each event twice first: deliveries sit on the timers.
    subscribe(
        &server,
        &receiver,
        "slow",
        Mode::FailTimes(2),
        json!({"events": ["message.delivered"]}),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..40 {
        ids.push(
            server
                .submit(&sms(&format!("+1415555{:04}", 300 + n)))
                .await,
        );
    }
    // Some are delivered to the endpoint, others wait for a retry.
    receiver.wait("slow", |r| !r.is_empty()).await;
    server.signal("KILL");
    assert!(!server.wait_exit(Duration::from_secs(10)));
    let server = Server::start_on(dir.path(), &config, port, &[]).await;
    for id in &ids {
        let message = server.wait_terminal(id, WITHIN).await;
        assert_eq!(message["status"], "delivered");
    }
    let got = receiver
        .wait("slow", |r| {
            let seen: HashSet<String> = r.iter().map(kind).collect();
            ids.iter()
                .all(|id| seen.contains(&format!("{id} message.delivered")))
        })
        .await;
    assert!(got.iter().all(|d| d.verified));
}

/// `mdc webhooks create|list|attempts` against a running server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_lists_and_shows_attempts() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &config("")).await;
    let url = receiver.path("cli", Mode::Ok);
    let mdc = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mdc"))
            .args(args)
            .args(["--server", &server.base])
            .output()
            .expect("mdc");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    };
    let created = mdc(&[
        "webhooks",
        "create",
        &url,
        "--event",
        "message.delivered",
        "--channel",
        "sms",
    ]);
    let mut lines = created.lines();
    let id = lines.next().expect("id").to_owned();
    assert!(id.starts_with("wh_"), "{created}");
    let secret = lines.next().expect("secret line");
    assert!(secret.starts_with("secret: whsec_"), "{created}");
    receiver.set_secret(
        "cli",
        secret
            .trim_start_matches("secret: ")
            .split(' ')
            .next()
            .expect("secret"),
    );
    let listed = mdc(&["webhooks", "list"]);
    assert!(
        listed.contains(&id) && listed.contains("enabled"),
        "{listed}"
    );

    server.submit(&sms("+14155550103")).await;
    let got = receiver.wait("cli", |r| r.len() == 1).await;
    assert!(got[0].verified);
    let attempts = mdc(&["webhooks", "attempts", &id]);
    assert!(
        attempts.contains(&got[0].id) && attempts.contains(" 200 "),
        "{attempts}"
    );

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mdc"))
        .args(["webhooks", "create", "ftp://x", "--server", &server.base])
        .output()
        .expect("mdc");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("url"),
        "names the field"
    );
}

/// A delivery given up after its last try is sent again by `recover`, with
/// the same `webhook-id`, once the endpoint works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_delivers_again_what_failed() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &config("schedule = [\"100ms\"]\n")).await;
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    let id = subscribe(
        &server,
        &receiver,
        "down",
        Mode::Always(500),
        json!({"events": ["message.sent"]}),
    )
    .await;
    server.submit(&sms("+14155550104")).await;
    // The first try and the one retry of the schedule, both failed.
    let deadline = Instant::now() + WITHIN;
    let event_id = loop {
        let (_, attempts) = server.get(&format!("/v1/webhooks/{id}/attempts")).await;
        let list = attempts["attempts"].as_array().cloned().unwrap_or_default();
        if list.len() >= 2 {
            break list[0]["event_id"].as_str().expect("event id").to_owned();
        }
        assert!(Instant::now() < deadline, "{attempts:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(receiver.calls("down", &event_id), 2);
    assert!(receiver.received("down").is_empty());

    receiver.set_mode("down", Mode::Ok);
    let (status, answer) = server
        .request(
            reqwest::Method::POST,
            &format!(
                "/v1/webhooks/{id}/recover?since={}",
                since.to_rfc3339().replace('+', "%2B")
            ),
            None,
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["recovering"], 1);
    let got = receiver.wait("down", |r| r.len() == 1).await;
    assert_eq!(got[0].id, event_id, "the same webhook-id");
    assert!(got[0].verified);
    let (status, answer) = server
        .request(
            reqwest::Method::POST,
            &format!("/v1/webhooks/{id}/recover?since=yesterday"),
            None,
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(answer["error"]["field"], "since");
}

/// The attempt log is pruned after `webhooks.attempt_retention`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_attempts_are_pruned() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &config("attempt_retention = \"1s\"\n")).await;
    let id = subscribe(
        &server,
        &receiver,
        "kept",
        Mode::Ok,
        json!({"events": ["message.sent"]}),
    )
    .await;
    server.submit(&sms("+14155550105")).await;
    receiver.wait("kept", |r| r.len() == 1).await;
    assert_eq!(attempt_count(&server, &id).await, 1);
    let deadline = Instant::now() + WITHIN;
    while attempt_count(&server, &id).await > 0 {
        assert!(Instant::now() < deadline, "the attempt was never pruned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn attempt_count(server: &Server, id: &str) -> usize {
    server.get(&format!("/v1/webhooks/{id}/attempts")).await.1["attempts"]
        .as_array()
        .map_or(0, Vec::len)
}
