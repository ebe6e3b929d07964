//! The status API for support: filters, cursor paging, cancel.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{sms, Server, TEST_CONFIG};

/// Submits `n` SMS concurrently (64 at a time) and returns their ids.
async fn submit_many(server: &Server, n: usize, tag: &str) -> Vec<String> {
    use futures::StreamExt;
    futures::stream::iter(0..n)
        .map(|i| {
            let body = json!({
                "channel": "sms", "to": format!("+1415555{:04}", i % 10_000),
                "body": "Your parcel is on its way", "type": "transactional",
                "priority": "bulk", "reference": format!("{tag}-{i}"),
            });
            async move { server.submit(&body).await }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

/// Walks `/v1/messages` with `limit=100` while more messages arrive: every
/// message of the window is seen exactly once.
async fn walk_while_submitting(server: &Server) {
    let window: HashSet<String> = submit_many(server, 2_500, "window")
        .await
        .into_iter()
        .collect();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/messages?limit=100&sort=-created_at&cursor={c}"),
            None => "/v1/messages?limit=100&sort=-created_at".to_owned(),
        };
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for message in page["messages"].as_array().expect("messages") {
            seen.push(message["id"].as_str().expect("id").to_owned());
        }
        // Newer messages arrive meanwhile; the walk goes back in time.
        submit_many(server, 20, &format!("late-{pages}")).await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a message was listed twice");
    let missing = window.iter().filter(|id| !unique.contains(id)).count();
    assert_eq!(missing, 0, "messages of the window were skipped");
    assert!(pages >= 25, "{pages} pages");
}

/// Over HTTP on the embedded store; the MongoDB store walks the same way in
/// its own suite (`walk_while_creating`), without the HTTP path, as the
/// MongoDB test server slows down after ~10k writes.
#[tokio::test]
async fn paging_walks_every_message_once_while_more_arrive_on_the_embedded_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    walk_while_submitting(&server).await;
}

#[tokio::test]
async fn filters_normalise_the_recipient_and_bad_ones_name_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let id = server
        .submit(&json!({"channel": "sms", "to": "+14155550123", "body": "Hello", "reference": "order-77"}))
        .await;
    server.submit(&sms("+14155550124")).await;
    for to in [
        "%2B14155550123",
        "%2B1%20415%20555%200123",
        "%2B1-415-555-0123",
    ] {
        let (status, page) = server.get(&format!("/v1/messages?to={to}")).await;
        assert_eq!(status, 200, "{page}");
        let ids: Vec<&str> = page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        assert_eq!(ids, vec![id.as_str()], "to={to}");
    }
    let (_, page) = server
        .get("/v1/messages?reference=order-77&type=transactional&channel=sms&sort=created_at")
        .await;
    assert_eq!(page["messages"].as_array().expect("messages").len(), 1);
    assert!(page["next_cursor"].is_null());
    for (query, field) in [
        ("limit=501", "limit"),
        ("limit=0", "limit"),
        ("sort=newest", "sort"),
        ("priority=urgent", "priority"),
        ("cursor=garbage", "cursor"),
        ("colour=blue", "colour"),
    ] {
        let (status, answer) = server.get(&format!("/v1/messages?{query}")).await;
        assert_eq!(status, 422, "{query}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{query}");
    }
    // A cursor of one order is refused in another.
    let (_, page) = server.get("/v1/messages?limit=1").await;
    let cursor = page["next_cursor"].as_str().expect("a cursor");
    let (status, answer) = server
        .get(&format!(
            "/v1/messages?limit=1&sort=created_at&cursor={cursor}"
        ))
        .await;
    assert_eq!(status, 422, "{answer}");
}

#[tokio::test]
async fn cancel_stops_a_queued_message_and_refuses_one_a_vendor_has() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One bulk consumer on one partition, and a slow vendor: the second
    // message to the same recipient waits behind the first.
    let config = format!(
        "{}\n[lanes.bulk]\npartitions = 1\nconsumers = 1\n",
        TEST_CONFIG.replace("[simulator]\n", "[simulator]\nsend_latency = \"1500ms\"\n")
    );
    let server = Server::start_with(dir.path(), &config).await;
    let body = |text: &str| json!({"channel": "sms", "to": "+14155550140", "body": text, "priority": "bulk", "type": "marketing"});
    let first = server.submit(&body("first")).await;
    server
        .wait_status(&first, "sending", Duration::from_secs(10))
        .await;
    let second = server.submit(&body("second")).await;
    let cancel = |id: String| {
        let server = &server;
        async move {
            let response = server
                .http
                .post(format!("{}/v1/messages/{id}/cancel", server.base))
                .send()
                .await
                .expect("cancel");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, cancelled) = cancel(second.clone()).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let (status, refused) = cancel(first.clone()).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["rule"], "not_cancellable");
    let (status, _) = cancel("msg_01JUNKJUNKJUNKJUNKJUNKJUNK".into()).await;
    assert_eq!(status, 404);
    server
        .wait_status(&first, "delivered", Duration::from_secs(20))
        .await;
    // The cancelled one was never handed to the vendor, and stays cancelled.
    let sends = server.vendor_sends().await;
    assert!(sends.to_string().contains(&first), "{sends}");
    assert!(
        !sends.to_string().contains(&second),
        "a cancelled message was sent: {sends}"
    );
    assert_eq!(server.message(&second).await["status"], "cancelled");
}
