use serde_json::json;

use crate::harness::{sms, Server};

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;

    let cases = [
        (json!({"to": "+14155550123", "body": "x"}), "channel"),
        (
            json!({"channel": "fax", "to": "+14155550123", "body": "x"}),
            "channel",
        ),
        (
            json!({"channel": "sms", "to": "+1 415 555", "body": "x"}),
            "to",
        ),
        (
            json!({"channel": "sms", "to": "4155550123", "body": "x"}),
            "to",
        ),
        (
            json!({"channel": "sms", "to": "+14155550123", "body": ""}),
            "body",
        ),
        (
            json!({"channel": "sms", "to": "+14155550123", "body": "x".repeat(2000)}),
            "body",
        ),
        (
            json!({"channel": "sms", "to": "+14155550123", "body": "x", "priority": "asap"}),
            "priority",
        ),
        (
            json!({"channel": "sms", "to": "+14155550123", "body": 5}),
            "body",
        ),
        (
            json!({"channel": "sms", "to": "+14155550123", "body": "x", "colour": "red"}),
            "colour",
        ),
        (
            json!({"channel": "email", "to": "not-an-address", "from": "a@example.com", "subject": "s", "body": "b"}),
            "to",
        ),
        (
            json!({"channel": "email", "to": "a@example.com", "from": "a@example.com", "subject": "s\nBcc: x", "body": "b"}),
            "subject",
        ),
        (json!({"channel": "push", "to": "user:", "body": "b"}), "to"),
        (
            json!({"channel": "push", "to": "user:alice", "body": "b", "data": {"blob": "x".repeat(5000)}}),
            "data",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = server.post(&body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
        assert!(answer["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }

    let (status, answer) = server.post_raw(b"{\"channel\": \"sms\",".to_vec()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .expect("message")
        .contains("malformed JSON"));

    let (status, _) = server.post_raw(b"[1, 2]".to_vec()).await;
    assert_eq!(status, 422);

    let huge = json!({"channel": "sms", "to": "+14155550123", "body": "x".repeat(300 * 1024)});
    let (status, answer) = server.post(&huge).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"]["message"].is_string());

    let (status, answer) = server
        .get("/v1/messages/msg_01J0000000000000000000000Z")
        .await;
    assert_eq!(status, 404, "{answer}");
    let (status, _) = server.get("/v1/messages/not-an-id").await;
    assert_eq!(status, 404);
    let (status, _) = server.get("/v1/nothing-here").await;
    assert_eq!(status, 404);
    let (status, answer) = server.get("/v1/messages?status=lost").await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (422, Some("status"))
    );
    let (status, answer) = server.get("/v1/messages?colour=red").await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (422, Some("colour"))
    );

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=100001", "limit"),
        ("limit=some", "limit"),
        ("colour=red", "colour"),
    ] {
        let path = format!("/v1/parked-reports/redrive?{query}");
        let (status, answer) = server.post_to(&path, json!({})).await;
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (422, Some(field)),
            "{path}: {answer}"
        );
    }

    // Still serving after all of that.
    let id = server.submit(&sms("+14155550123")).await;
    assert!(id.starts_with("msg_"));
}

#[tokio::test]
async fn warnings_come_back_with_success() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let (status, answer) = server
        .post(&json!({"channel": "sms", "to": "+44 20 7946 0018", "body": "a".repeat(200)}))
        .await;
    assert_eq!(status, 202, "{answer}");
    let warnings = answer["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 2, "{answer}");
    assert!(warnings
        .iter()
        .any(|w| w["field"] == "to" && w["message"].as_str().unwrap_or("").contains("fixed-line")));
    assert!(warnings.iter().any(
        |w| w["field"] == "body" && w["message"].as_str().unwrap_or("").contains("2 segments")
    ));
}

#[tokio::test]
async fn healthz_shows_worker_restarts_and_parked_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let (status, health) = server.get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["restarts"], 0);
    assert!(health["last_restart"].is_null());
    assert_eq!(health["parked_reports"], 0);
    assert_eq!(health["mismatched_reports"], 0);
    assert_eq!(health["intakes"]["kaleyra"]["refused"], 0);
}
