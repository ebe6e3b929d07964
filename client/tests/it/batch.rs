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

/// Answers the batch requests `server` receives with `answers` in turn,
/// the last one every request after.
async fn answer_batches_in_turn(server: &MockServer, answers: Vec<ResponseTemplate>) {
    let last = answers.len().saturating_sub(1);
    for (i, answer) in answers.into_iter().enumerate() {
        let mock = Mock::given(method("POST"))
            .and(path("/v1/messages/batch"))
            .respond_with(answer);
        let mock = if i < last {
            mock.up_to_n_times(1)
        } else {
            mock
        };
        mock.mount(server).await;
    }
}

#[tokio::test]
async fn a_batch_is_one_request_and_only_what_mdc_could_not_take_goes_again() {
    let server = MockServer::start().await;
    // Not taken at all, then an answer that does not match the batch:
    // both times the same messages again.
    let results =
        |results: Value| ResponseTemplate::new(200).set_body_json(json!({ "results": results }));
    answer_batches_in_turn(
        &server,
        vec![
            ResponseTemplate::new(503)
                .insert_header("Retry-After", "0")
                .set_body_json(json!({"error": {"message": "temporarily unavailable"}})),
            results(json!([accepted("msg_01JZ0000000000000000000009")])),
            results(json!([
                accepted("msg_01JZ0000000000000000000001"),
                {"status": 503, "error": {"message": "temporarily unavailable"}},
                {"status": 422, "error": {"field": "to", "rule": "suppressed", "message": "this recipient is suppressed"}},
            ])),
            results(json!([accepted("msg_01JZ0000000000000000000002")])),
        ],
    )
    .await;
    let client = client(&server).await;
    let started = std::time::Instant::now();
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
    // Retry-After: 0 stands for the next pause only; then 200 and 400 ms.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
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
    assert_eq!(sent.len(), 4, "{sent:#?}");
    // The locally invalid one never left; the others went together.
    assert_eq!(sent[0].len(), 3, "{sent:#?}");
    assert_eq!(sent[0][1]["channel"], "email");
    assert_eq!(sent[1], sent[0]);
    assert_eq!(sent[2], sent[0]);
    // Only the one MDC could not take went again, under its key.
    assert_eq!(sent[3], vec![sent[0][1].clone()]);
    assert!(sent[0].iter().all(|m| m["idempotency_key"].is_string()));
}

/// Answers a batch with a 202 for each of its messages.
fn accept_all(request: &wiremock::Request) -> ResponseTemplate {
    let body: Value = serde_json::from_slice(&request.body).expect("json");
    let n = body["messages"].as_array().map_or(0, Vec::len);
    let results: Vec<Value> = (0..n)
        .map(|_| accepted("msg_01JZ0000000000000000000004"))
        .collect();
    ResponseTemplate::new(200).set_body_json(json!({ "results": results }))
}

/// A server that accepts every message of every batch.
async fn accepting_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages/batch"))
        .respond_with(accept_all)
        .mount(&server)
        .await;
    server
}

fn too_large() -> ResponseTemplate {
    ResponseTemplate::new(413)
        .set_body_json(json!({"error": {"message": "request body exceeds 1024 bytes"}}))
}

fn two_sms() -> [Sms; 2] {
    [
        Sms::to("+14155550123").body("one"),
        Sms::to("+14155550124").body("two"),
    ]
}

#[tokio::test]
async fn a_batch_over_mdcs_body_limit_is_cut_in_two() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages/batch"))
        .respond_with(|request: &wiremock::Request| {
            let body: Value = serde_json::from_slice(&request.body).expect("json");
            match body["messages"].as_array().map_or(0, Vec::len) {
                1 => accept_all(request),
                _ => too_large(),
            }
        })
        .mount(&server)
        .await;
    let client = client(&server).await;
    let results = client.send_batch(two_sms()).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let sent = batches(&server, "/v1/messages/batch").await;
    assert_eq!(sent.len(), 3, "{sent:#?}");
    assert_eq!(sent[1][0], sent[0][0]);
    assert_eq!(sent[2][0], sent[0][1]);
}

#[tokio::test]
async fn an_mdc_without_batches_or_a_message_too_large_for_one_gets_single_submits() {
    for (status, refusal) in [(413, too_large()), (404, ResponseTemplate::new(404))] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/messages/batch"))
            .respond_with(refusal)
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
        let results = client.send_batch(two_sms()).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let singles = batches(&server, "/v1/messages").await;
        assert_eq!(singles.len(), 2);
        // Each message went alone under the key it had in the batch (a
        // 413 first cuts the batch down to single messages).
        let mut batched: Vec<String> = batches(&server, "/v1/messages/batch")
            .await
            .into_iter()
            .flatten()
            .map(|m| m.to_string())
            .collect();
        batched.sort();
        batched.dedup();
        let mut alone: Vec<String> = singles.iter().map(|m| m[0].to_string()).collect();
        alone.sort();
        assert_eq!(batched, alone);
        // Without batches, the next call does not ask again; after a message
        // too large, it does.
        let without_batches = status == 404;
        let tried = batches(&server, "/v1/messages/batch").await.len();
        let results = client.send_batch(two_sms()).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            batches(&server, "/v1/messages/batch").await.len() == tried,
            without_batches
        );
        assert_eq!(batches(&server, "/v1/messages").await.len(), 4);
    }
}

#[tokio::test]
async fn a_refused_batch_is_each_messages_refusal_not_an_invalid_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages/batch"))
        .respond_with(ResponseTemplate::new(403).set_body_json(
            json!({"error": {"rule": "scope", "message": "this key lacks the send scope"}}),
        ))
        .mount(&server)
        .await;
    let client = client(&server).await;
    for result in client.send_batch(two_sms()).await {
        match result {
            Err(SubmitError::Refused {
                status: 403,
                message,
            }) => {
                assert_eq!(message, "this key lacks the send scope")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(server.received_requests().await.expect("recorded").len(), 1);
}

#[tokio::test]
async fn large_messages_are_cut_into_batches_under_the_body_limit() {
    let server = accepting_server().await;
    let client = client(&server).await;
    let body = "x".repeat(20 * 1024);
    let results = client
        .send_batch((0..30).map(|i| {
            Email::to(format!("user{i}@example.com"))
                .from("shop@example.com")
                .subject("Large")
                .body(body.clone())
        }))
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let requests = server.received_requests().await.expect("recorded");
    assert!(requests.len() >= 4, "{}", requests.len());
    for request in &requests {
        assert!(request.body.len() <= 192 * 1024, "{}", request.body.len());
    }
    let sent: usize = batches(&server, "/v1/messages/batch")
        .await
        .iter()
        .map(Vec::len)
        .sum();
    assert_eq!(sent, 30);
}

#[tokio::test]
async fn more_than_mdc_takes_at_once_is_cut_into_batches() {
    let server = accepting_server().await;
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

#[tokio::test]
async fn a_message_mdc_never_takes_is_unavailable_after_the_tries() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages/batch"))
        .respond_with(|request: &wiremock::Request| {
            let body: Value = serde_json::from_slice(&request.body).expect("json");
            let results: Vec<Value> = body["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| match m["body"].as_str() {
                    Some("one") => accepted("msg_01JZ0000000000000000000005"),
                    _ => json!({"status": 503, "error": {"message": "temporarily unavailable"}}),
                })
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({ "results": results }))
        })
        .mount(&server)
        .await;
    let client = client(&server).await;
    let results = client.send_batch(two_sms()).await;
    assert!(results[0].is_ok(), "{results:?}");
    match &results[1] {
        Err(SubmitError::Unavailable(e)) => {
            assert!(e.to_string().contains("4 tries"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let sizes: Vec<usize> = batches(&server, "/v1/messages/batch")
        .await
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(sizes, [2, 1, 1, 1]);
}

#[tokio::test]
async fn a_message_over_the_rate_waits_as_mdc_asks() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages/batch"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": [
            accepted("msg_01JZ0000000000000000000006"),
            {"status": 429, "retry_after": 1, "error": {"rule": "rate_limited", "message": "over its submit rate"}},
        ]})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages/batch"))
        .respond_with(accept_all)
        .mount(&server)
        .await;
    let client = client(&server).await;
    let started = std::time::Instant::now();
    let results = client.send_batch(two_sms()).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(batches(&server, "/v1/messages/batch").await.len(), 2);
}

#[tokio::test]
async fn a_key_twice_in_one_call_is_refused_here_whatever_the_batches() {
    let server = accepting_server().await;
    let client = client(&server).await;
    let [one, two] = two_sms();
    let results = client
        .send_batch([
            one.idempotency_key("order-1"),
            two.idempotency_key("order-1"),
        ])
        .await;
    assert!(results[0].is_ok(), "{results:?}");
    match &results[1] {
        Err(SubmitError::Invalid(e)) => {
            assert_eq!(
                (e.field.as_str(), &*e.rule),
                ("idempotency_key", "repeated_in_batch")
            )
        }
        other => panic!("{other:?}"),
    }
    let sent = batches(&server, "/v1/messages/batch").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].len(), 1);
}

/// A batch cut in two after MDC refused it as too large: its halves share
/// the tries the batch had left, not a fresh count each. Each half had all
/// of `attempts` again before.
#[tokio::test]
async fn the_halves_of_a_batch_too_large_share_the_tries_it_had_left() {
    let server = MockServer::start().await;
    let unavailable = || {
        ResponseTemplate::new(503)
            .insert_header("Retry-After", "0")
            .set_body_json(json!({"error": {"message": "temporarily unavailable"}}))
    };
    answer_batches_in_turn(&server, vec![unavailable(), too_large(), unavailable()]).await;
    let client = client(&server).await;
    let results = client.send_batch(two_sms()).await;
    for result in &results {
        match result {
            Err(SubmitError::Unavailable(e)) => {
                assert!(e.to_string().contains("after 4 tries"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
    let sent = batches(&server, "/v1/messages/batch").await;
    // Two tries of the whole batch, then the two left for each half.
    let sizes: Vec<usize> = sent.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![2, 2, 1, 1, 1, 1], "{sent:#?}");
}
