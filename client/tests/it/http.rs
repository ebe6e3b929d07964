//! The http transport against a scripted server: retries, errors, no
//! request for invalid input.

use std::time::{Duration, Instant};

use mdc_client::{Client, Config, Email, Sms, SubmitError};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub(crate) const KEY: &str = "mdc_sk_01JTESTKEY00000000000000_secret";

pub(crate) async fn client(server: &MockServer) -> Client {
    let mut config = Config::http(server.uri(), Some(KEY.to_owned()));
    config.attempts = 4;
    Client::new(config).await.expect("client")
}

fn accepted(id: &str) -> ResponseTemplate {
    ResponseTemplate::new(202).set_body_json(json!({
        "id": id, "status": "queued",
        "warnings": [{"field": "to", "message": "a fixed-line number may not receive SMS"}]
    }))
}

fn unavailable(retry_after: &str) -> ResponseTemplate {
    ResponseTemplate::new(503)
        .insert_header("Retry-After", retry_after)
        .set_body_json(json!({"error": {"message": "a backend is unavailable; retry"}}))
}

#[tokio::test]
async fn a_server_answering_503_twice_then_202_gets_one_message_under_one_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(unavailable("1"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(accepted("msg_01JZ0000000000000000000001"))
        .mount(&server)
        .await;
    let client = client(&server).await;
    let started = Instant::now();
    let sent = client
        .send(Sms::to("+14155550123").body("Your code is 123456"))
        .await
        .expect("sent");
    assert_eq!(sent.id.as_str(), "msg_01JZ0000000000000000000001");
    assert_eq!(sent.warnings[0].field, "to");
    // Retry-After: 1, twice.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let requests = server.received_requests().await.expect("recorded");
    assert_eq!(requests.len(), 3);
    let bodies: Vec<Value> = requests
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("json"))
        .collect();
    let key = bodies[0]["idempotency_key"].as_str().expect("a key");
    assert!(!key.is_empty());
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "the same message each time: {bodies:#?}"
    );
    for request in &requests {
        assert_eq!(
            request.headers["authorization"],
            format!("Bearer {KEY}").as_str()
        );
    }
}

#[tokio::test]
async fn invalid_input_fails_here_with_the_field_named_and_sends_nothing() {
    let server = MockServer::start().await;
    let client = client(&server).await;
    let cases: Vec<(mdc_client::SubmitRequest, &str)> = vec![
        (Sms::to("12345").body("hi").into(), "to"),
        (Sms::to("+14155550123").into(), "body"),
        (
            Email::to("not-an-address")
                .from("a@example.com")
                .subject("s")
                .body("b")
                .into(),
            "to",
        ),
        (
            Email::to("ada@example.com")
                .from("a@example.com")
                .body("b")
                .into(),
            "subject",
        ),
        (mdc_client::Push::to("t").body("b").into(), "to"),
    ];
    for (request, field) in cases {
        match client.send(request).await {
            Err(SubmitError::Invalid(e)) => assert_eq!(e.field, field, "{e}"),
            other => panic!("expected a local refusal naming {field}, got {other:?}"),
        }
    }
    assert!(server
        .received_requests()
        .await
        .expect("recorded")
        .is_empty());
}

#[tokio::test]
async fn refusals_are_not_retried_and_keep_mdcs_words() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"error": {"rule": "unauthenticated", "message": "unknown or revoked API key"}}),
        ))
        .mount(&server)
        .await;
    let client = client(&server).await;
    match client.send(Sms::to("+14155550123").body("hi")).await {
        Err(SubmitError::Refused {
            status: 401,
            message,
        }) => {
            assert_eq!(message, "unknown or revoked API key");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.received_requests().await.expect("recorded").len(), 1);

    // A rule only MDC can check (the suppression list) comes back as a
    // validation error naming the field.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422).set_body_json(
            json!({"error": {"field": "to", "rule": "suppressed", "message": "this recipient is suppressed"}}),
        ))
        .mount(&server)
        .await;
    let client = self::client(&server).await;
    match client.send(Sms::to("+14155550123").body("hi")).await {
        Err(SubmitError::Invalid(e)) => {
            assert_eq!((e.field.as_str(), &*e.rule), ("to", "suppressed"))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_mdc_is_unavailable_after_the_configured_tries() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut config = Config::http(format!("http://127.0.0.1:{port}"), None);
    config.attempts = 3;
    let client = Client::new(config).await.expect("client");
    match client.send(Sms::to("+14155550123").body("hi")).await {
        Err(SubmitError::Unavailable(e)) => assert!(e.to_string().contains("3 tries"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn settings_from_the_environment_name_the_variable_at_fault() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let config = Config::from_lookup(env(&[])).expect("defaults");
    assert_eq!(config.api_url.as_deref(), Some("http://127.0.0.1:8080"));
    for (vars, variable) in [
        (&[("MDC_TRANSPORT", "smoke")][..], "MDC_TRANSPORT"),
        (&[("MDC_URL", "localhost:8080")][..], "MDC_URL"),
        (&[("MDC_API_KEY", "hunter2")][..], "MDC_API_KEY"),
        (&[("MDC_TRANSPORT", "direct")][..], "MDC_KAFKA_BROKERS"),
        (
            &[
                ("MDC_TRANSPORT", "direct"),
                ("MDC_KAFKA_BROKERS", "127.0.0.1:9092"),
            ][..],
            "MDC_SERVICE",
        ),
        (&[("MDC_SERVICE", "billing team")][..], "MDC_SERVICE"),
    ] {
        let e = Config::from_lookup(env(vars)).expect_err("invalid");
        assert!(e.to_string().contains(variable), "{vars:?}: {e}");
    }
}
