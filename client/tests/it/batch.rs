//! `Client::send_batch` over http against a scripted server: one request
//! for many messages, and only what MDC could not take sent again.

use mdc_client::{Email, Sms, SubmitError, SubmitRequest};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::http::{client, KEY};

fn accepted(id: &str) -> Value {
    json!({"status": 202, "accepted": {"id": id, "status": "queued", "warnings": []}})
}

/// The messages of each request the server received at `at`.
async fn batches(server: &MockServer, at: &str) -> Vec<Vec<Value>> {
    server
        .received_requests()
        .await
        .expect("recorded")
        .iter()
        .filter(|r| r.url.path() == at)
        .map(|r| {
            assert_eq!(r.headers["authorization"], format!("Bearer {KEY}").as_str());
            let body: Value = serde_json::from_slice(&r.body).expect("json");
            match at {
                "/v1/messages/batch" => body["messages"].as_array().expect("messages").clone(),
                _ => vec![body],
            }
        })
        .collect()
}

#[tokio::test]
async fn a_batch_is_one_request_and_only_what_mdc_could_not_take_goes_again() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages/batch"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": [
            accepted("msg_01JZ0000000000000000000001"),
            {"status": 503, "error": {"message": "temporarily unavailable"}},
            {"status": 422, "error": {"field": "to", "rule": "suppressed", "message": "this recipient is suppressed"}},
        ]})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages/batch"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": [
            accepted("msg_01JZ0000000000000000000002"),
        ]})))
        .mount(&server)
        .await;
    let client = client(&server).await;
    let messages: Vec<SubmitRequest> = vec![
        Sms::to("+14155550123").body("one").into(),
        Sms::to("12345").body("invalid here").into(),
        Email::to("ada@example.com")
            .from("shop@example.com")
            .subject("two")
            .body("b")
            .into(),
        Sms::to("+14155550124").body("three").into(),
    ];
    let results = client.send_batch(messages).await;
    assert_eq!(results.len(), 4);
    match &results[0] {
        Ok(sent) => assert_eq!(sent.id.as_str(), "msg_01JZ0000000000000000000001"),
        other => panic!("{other:?}"),
    }
    match &results[1] {
        Err(SubmitError::Invalid(e)) => assert_eq!(e.field, "to"),
        other => panic!("{other:?}"),
    }
    match &results[2] {
        Ok(sent) => assert_eq!(sent.id.as_str(), "msg_01JZ0000000000000000000002"),
        other => panic!("{other:?}"),
    }
    match &results[3] {
        Err(SubmitError::Invalid(e)) => {
            assert_eq!((e.field.as_str(), &*e.rule), ("to", "suppressed"))
        }
        other => panic!("{other:?}"),
    }
    let sent = batches(&server, "/v1/messages/batch").await;
    assert_eq!(sent.len(), 2, "{sent:#?}");
    // The locally invalid one never left; the others went together.
    assert_eq!(sent[0].len(), 3, "{sent:#?}");
    assert_eq!(sent[0][1]["channel"], "email");
    // Only the one MDC could not take went again, under its key.
    assert_eq!(sent[1], vec![sent[0][1].clone()]);
    assert!(sent[0].iter().all(|m| m["idempotency_key"].is_string()));
}

#[tokio::test]
async fn a_batch_over_mdcs_body_limit_goes_one_message_at_a_time() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages/batch"))
        .respond_with(
            ResponseTemplate::new(413)
                .set_body_json(json!({"error": {"message": "request body exceeds 1024 bytes"}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(202).set_body_json(
            json!({"id": "msg_01JZ0000000000000000000003", "status": "queued", "warnings": []}),
        ))
        .mount(&server)
        .await;
    let client = client(&server).await;
    let results = client
        .send_batch([
            Sms::to("+14155550123").body("one"),
            Sms::to("+14155550124").body("two"),
        ])
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let batch = batches(&server, "/v1/messages/batch").await;
    let singles = batches(&server, "/v1/messages").await;
    assert_eq!(batch.len(), 1);
    assert_eq!(singles.len(), 2);
    assert_eq!(singles[0][0], batch[0][0]);
    assert_eq!(singles[1][0], batch[0][1]);
}

#[tokio::test]
async fn more_than_mdc_takes_at_once_is_cut_into_batches() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages/batch"))
        .respond_with(move |request: &wiremock::Request| {
            let body: Value = serde_json::from_slice(&request.body).expect("json");
            let n = body["messages"].as_array().map_or(0, Vec::len);
            let results: Vec<Value> = (0..n)
                .map(|_| accepted("msg_01JZ0000000000000000000004"))
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({ "results": results }))
        })
        .mount(&server)
        .await;
    let client = client(&server).await;
    let results = client
        .send_batch((0..1_201).map(|i| Sms::to("+14155550123").body(format!("message {i}"))))
        .await;
    assert_eq!(results.len(), 1_201);
    assert!(results.iter().all(Result::is_ok));
    let sizes: Vec<usize> = batches(&server, "/v1/messages/batch")
        .await
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(sizes, [500, 500, 201]);
}
