//! The suppression list: fed by the vendor's permanent bounce, kept by
//! hand, and checked at submit.

use serde_json::json;

use crate::harness::{email, sms, Server};

const WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

#[tokio::test]
async fn a_permanent_bounce_suppresses_the_address_until_it_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let bounced = "bounce@sim.mdc.test";
    let id = server.submit(&email(bounced)).await;
    let message = server.wait_terminal(&id, WITHIN).await;
    assert_eq!(message["status"], "failed", "{message:#}");

    // The report's suppression is written right after its status.
    let deadline = std::time::Instant::now() + WITHIN;
    let entry = loop {
        let (status, body) = server
            .get(&format!("/v1/suppressions?channel=email&to={bounced}"))
            .await;
        if status == 200 {
            break body["suppressions"][0].clone();
        }
        assert_eq!(status, 404, "{body}");
        assert!(std::time::Instant::now() < deadline, "never suppressed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(entry["source"], "report:sim-email", "{entry}");
    assert_eq!(entry["message_id"], id.as_str());
    assert!(entry["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("bounce"));

    let (status, answer) = server.post(&email(bounced)).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "to");
    assert_eq!(answer["error"]["rule"], "suppressed");

    let (status, _) = server
        .delete(&format!("/v1/suppressions/email/{bounced}"))
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .delete(&format!("/v1/suppressions/email/{bounced}"))
        .await;
    assert_eq!(status, 404, "already removed");
    server.submit(&email(bounced)).await;
}

#[tokio::test]
async fn suppressions_added_by_hand_match_any_spelling_of_the_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let body = json!({"channel": "sms", "to": "+1 415 555 0177", "reason": "asked us to stop"});
    let (status, entry) = server.post_to("/v1/suppressions", body.clone()).await;
    assert_eq!(status, 201, "{entry}");
    assert_eq!(entry["recipient"], "+14155550177", "normalised");
    assert_eq!(entry["source"], "manual");
    let (status, _) = server.post_to("/v1/suppressions", body).await;
    assert_eq!(status, 200, "already there");

    let (status, answer) = server.post(&sms("+14155550177")).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["rule"], "suppressed");
    // Another channel is not affected.
    let (status, _) = server
        .get("/v1/suppressions?channel=email&to=someone@example.com")
        .await;
    assert_eq!(status, 404);
    let (status, list) = server.get("/v1/suppressions?channel=sms").await;
    assert_eq!(status, 200);
    assert_eq!(list["suppressions"].as_array().map(Vec::len), Some(1));

    for (body, field) in [
        (json!({"channel": "fax", "to": "+14155550177"}), "channel"),
        (json!({"channel": "sms"}), "to"),
        (json!({"channel": "sms", "to": "12"}), "to"),
    ] {
        let (status, answer) = server.post_to("/v1/suppressions", body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
}

#[tokio::test]
async fn an_undelivered_sms_is_not_suppressed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let id = server.submit(&sms("+14155550191")).await;
    let message = server.wait_terminal(&id, WITHIN).await;
    assert_eq!(message["status"], "failed");
    let (status, _) = server
        .get("/v1/suppressions?channel=sms&to=%2B14155550191")
        .await;
    assert_eq!(status, 404);
    server.submit(&sms("+14155550191")).await;
}
