//! `POST /v1/messages/batch`: several messages in one request, each
//! accepted or refused on its own.

use std::time::Duration;

use serde_json::{json, Value};

use crate::auth::{call, create_key, create_key_direct};
use crate::harness::{email, sms, Server, TEST_CONFIG};

/// A batch of `messages`: (status, answer).
async fn batch(server: &Server, messages: Value) -> (u16, Value) {
    for message in messages.as_array().into_iter().flatten() {
        server.remember_private(message.to_string().as_bytes());
    }
    server
        .post_to("/v1/messages/batch", json!({ "messages": messages }))
        .await
}

/// The results of a 200 answer, one per message.
fn results(status: u16, answer: &Value) -> Vec<Value> {
    assert_eq!(status, 200, "{answer}");
    answer["results"].as_array().expect("results").clone()
}

#[tokio::test]
async fn each_message_of_a_batch_is_accepted_or_refused_on_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let mut keyed = sms("+14155550123");
    keyed["idempotency_key"] = json!("batch-key-1");
    let mut reused = email("erin@example.com");
    reused["idempotency_key"] = json!("batch-key-2");
    let (_, first) = server.post(&reused).await;
    let mut held = sms("+14155550127");
    held["idempotency_key"] = json!("batch-key-3");
    server.submit(&held).await;
    let mut conflict = sms("+14155550124");
    conflict["idempotency_key"] = json!("batch-key-3");
    let mut repeated = sms("+14155550126");
    repeated["idempotency_key"] = json!("batch-key-1");
    // A message that cannot be read still takes its key.
    let mut unreadable = sms("+14155550128");
    unreadable["idempotency_key"] = json!("batch-key-4");
    unreadable["priority"] = json!(5);
    let mut after_unreadable = sms("+14155550129");
    after_unreadable["idempotency_key"] = json!("batch-key-4");
    let (status, answer) = batch(
        &server,
        json!([
            keyed,
            {"channel": "sms", "to": "+1 415 555", "body": "x"},
            email("frank@example.com"),
            {"channel": "sms", "to": "+14155550125", "body": "x", "colour": "red"},
            conflict,
            "not a message",
            reused,
            repeated,
            unreadable,
            after_unreadable,
        ]),
    )
    .await;
    let results = results(status, &answer);
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().expect("status"))
        .collect();
    assert_eq!(
        statuses,
        [202, 422, 202, 422, 409, 422, 202, 422, 422, 422],
        "{answer}"
    );
    assert_eq!(results[8]["error"]["field"], "priority", "{answer}");
    assert_eq!(results[9]["error"]["rule"], "repeated_in_batch", "{answer}");
    assert_eq!(results[1]["error"]["field"], "to", "{answer}");
    assert_eq!(results[3]["error"]["field"], "colour", "{answer}");
    assert_eq!(results[4]["error"]["field"], "idempotency_key", "{answer}");
    assert_eq!(results[4]["error"]["rule"], "reused", "{answer}");
    assert_eq!(results[5]["error"]["rule"], "json_object", "{answer}");
    // A key twice in one batch: the first holds it, the second is refused.
    assert_eq!(results[7]["error"]["field"], "idempotency_key", "{answer}");
    assert_eq!(results[7]["error"]["rule"], "repeated_in_batch", "{answer}");
    // The same key and message as an earlier submit: that message again.
    assert_eq!(results[6]["accepted"]["id"], first["id"], "{answer}");
    assert_eq!(results[6]["accepted"]["duplicate"], true, "{answer}");
    for accepted in [&results[0], &results[2]] {
        assert!(accepted.get("error").is_none(), "{accepted}");
        assert_eq!(accepted["accepted"]["status"], "queued", "{accepted}");
        assert!(
            accepted["accepted"].get("duplicate").is_none(),
            "{accepted}"
        );
    }
    // Each accepted message is durable and goes its way like any other.
    let mut ids = Vec::new();
    for accepted in [&results[0], &results[2]] {
        let id = accepted["accepted"]["id"].as_str().expect("id").to_owned();
        let record = server
            .wait_status(&id, "delivered", Duration::from_secs(20))
            .await;
        ids.push((id, record));
    }
    assert_eq!(ids[0].1["to"], "+14155550123");
    assert_eq!(ids[1].1["to"], "frank@example.com");
    // The refused ones left nothing: the two accepted and the earlier two.
    let (status, page) = server.get("/v1/messages").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(4), "{page}");
    // The key submitted in the batch holds like a single submit's.
    let mut again = sms("+14155550123");
    again["idempotency_key"] = json!("batch-key-1");
    let (status, answer) = server.post(&again).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["id"].as_str(), Some(ids[0].0.as_str()), "{answer}");
    server.assert_log_has_no_private_data();
}

#[tokio::test]
async fn a_batch_that_cannot_be_read_is_refused_whole_and_keeps_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let many: Vec<Value> = (0..501).map(|_| sms("+14155550123")).collect();
    let cases = [
        (json!({}), "messages", "required"),
        (json!({"messages": []}), "messages", "empty"),
        (json!({"messages": {"to": "x"}}), "messages", "type"),
        (json!({"messages": many}), "messages", "too_many"),
        (
            json!({"messages": [sms("+14155550123")], "priority": "critical"}),
            "priority",
            "type",
        ),
        (json!([sms("+14155550123")]), "", "json_object"),
    ];
    for (body, field, rule) in cases {
        let (status, answer) = server.post_to("/v1/messages/batch", body).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["error"]["rule"], rule, "{answer}");
        if !field.is_empty() {
            assert_eq!(answer["error"]["field"], field, "{answer}");
        }
    }
    // Cut short, and JSON that only reading a message finds broken (a lone
    // surrogate, a number out of range): the whole request is a 400.
    for body in [
        r#"{"messages": [{"channel": "sms""#,
        r#"{"messages": [{"channel": "sms", "to": "+14155550123", "body": "\ud800"}]}"#,
        r#"{"messages": [{"channel": "sms", "to": "+14155550123", "body": "x", "data": {"n": 1e400}}]}"#,
    ] {
        let response = server
            .http
            .post(format!("{}/v1/messages/batch", server.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status().as_u16(), 400, "{body}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["error"]["rule"], "json", "{body}: {answer}");
    }
    let (status, page) = server.get("/v1/messages").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(0), "{page}");
    // Still serving.
    let (status, answer) = batch(&server, json!([sms("+14155550123")])).await;
    assert_eq!(results(status, &answer)[0]["status"], 202, "{answer}");
}

#[tokio::test]
async fn a_batch_takes_one_of_the_service_rate_for_each_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, admin) = create_key_direct(dir.path(), "ops", "admin");
    let config = format!("{TEST_CONFIG}\n[services.billing]\nrate_per_second = 1\nburst = 2\n");
    let server = Server::start_with(dir.path(), &config).await;
    let billing = create_key(&server, &admin, "billing", &["send"]).await;
    let messages: Vec<Value> = (0..3)
        .map(|i| email(&format!("hana{i}@example.com")))
        .collect();
    let batch = json!({ "messages": messages });
    // The rate is taken in order, before any message is written: the
    // burst's two pass, the third is refused on its own.
    let (status, answer, _) = call(
        &server,
        "POST",
        "/v1/messages/batch",
        Some(&billing),
        Some(&batch),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let statuses: Vec<&Value> = answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| &r["status"])
        .collect();
    assert_eq!(statuses, [202, 202, 429], "{answer}");
    assert_eq!(
        answer["results"][2]["error"]["rule"], "rate_limited",
        "{answer}"
    );
    assert!(
        answer["results"][2]["retry_after"]
            .as_u64()
            .is_some_and(|s| (1..=2).contains(&s)),
        "{answer}"
    );
    // With the rate spent (a token comes back each second), a batch none
    // of whose messages passes is a 429 as a whole, with Retry-After.
    let response = server
        .http
        .post(format!("{}/v1/messages/batch", server.base))
        .bearer_auth(&billing)
        .json(&json!({"messages": [email("ivan@example.com"), email("jane@example.com")]}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 429);
    assert!(response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|s| (1..=2).contains(&s)));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["rule"], "rate_limited", "{body}");
    let (status, page, _) = call(&server, "GET", "/v1/messages", Some(&admin), None).await;
    assert_eq!(status, 200, "{page}");
    let mut stored: Vec<&str> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["to"].as_str().expect("to"))
        .collect();
    stored.sort_unstable();
    assert_eq!(stored, ["hana0@example.com", "hana1@example.com"], "{page}");
}
