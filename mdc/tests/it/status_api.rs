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

#[tokio::test]
async fn the_summary_counts_per_group_with_rates_and_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let from = chrono::Utc::now() - chrono::Duration::minutes(1);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            server
                .submit(&sms(&format!("+1415555{:04}", 3300 + i)))
                .await,
        );
    }
    // A magic number the simulated vendor refuses.
    ids.push(
        server
            .submit(&json!({"channel": "sms", "to": "+14155550190", "body": "refused please"}))
            .await,
    );
    for to in ["jack@example.com", "kim@example.com"] {
        ids.push(server.submit(&crate::harness::email(to)).await);
    }
    for id in &ids {
        server.wait_terminal(id, Duration::from_secs(30)).await;
    }
    let to = chrono::Utc::now() + chrono::Duration::minutes(1);
    let window = format!(
        "from={}&to={}",
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
    .replace('+', "%2B");
    let (status, report) = server
        .get(&format!(
            "/v1/reports/summary?{window}&group_by=channel,status&interval=1h"
        ))
        .await;
    assert_eq!(status, 200, "{report}");
    let groups = report["groups"].as_array().expect("groups");
    let count = |channel: &str, status: &str| {
        groups
            .iter()
            .filter(|g| g["channel"] == channel && g["status"] == status)
            .map(|g| g["count"].as_u64().unwrap_or_default())
            .sum::<u64>()
    };
    assert_eq!(count("sms", "delivered"), 3, "{report:#}");
    assert_eq!(count("sms", "failed"), 1, "{report:#}");
    assert_eq!(count("email", "delivered"), 2, "{report:#}");
    let total = &report["total"];
    assert_eq!(total["count"], 6);
    assert_eq!(total["delivered"], 5);
    let rate = total["delivery_rate"].as_f64().expect("rate");
    assert!((rate - 5.0 / 6.0).abs() < 1e-9, "{rate}");
    let p50 = total["time_to_delivered_ms"]["p50"].as_u64().expect("p50");
    let p95 = total["time_to_delivered_ms"]["p95"].as_u64().expect("p95");
    assert!(p50 <= p95 && p95 < 30_000, "{total}");
    for (query, field) in [
        ("to=2026-01-01T00:00:00Z", "from"),
        (&format!("{window}&group_by=colour"), "group_by"),
        (&format!("{window}&interval=5s"), "interval"),
        ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
    ] {
        let (status, answer) = server.get(&format!("/v1/reports/summary?{query}")).await;
        assert_eq!(status, 422, "{query}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{query}");
    }
}

#[tokio::test]
async fn the_csv_export_streams_every_matching_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let ids: HashSet<String> = submit_many(&server, 1_100, "export")
        .await
        .into_iter()
        .collect();
    server
        .submit(&crate::harness::email("lee@example.com"))
        .await;
    let response = server
        .http
        .get(format!(
            "{}/v1/messages/export.csv?channel=sms",
            server.base
        ))
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/csv")));
    let text = response.text().await.expect("body");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().expect("header").clone();
    assert_eq!(&headers[0], "id");
    let to = headers.iter().position(|h| h == "to").expect("to column");
    let mut seen = HashSet::new();
    let mut created = Vec::new();
    for row in reader.records() {
        let row = row.expect("a CSV row");
        assert_eq!(&row[4], "sms");
        assert!(row[to].starts_with("+1415555"), "{row:?}");
        let at = chrono::DateTime::parse_from_rfc3339(&row[1]).expect("created_at");
        created.push(at.timestamp_millis());
        assert!(seen.insert(row[0].to_owned()), "{} twice", &row[0]);
    }
    assert_eq!(seen.len(), ids.len());
    assert!(ids.iter().all(|id| seen.contains(id)));
    // Oldest first, to the millisecond (the order within one is the id's).
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "not oldest first");
    let (status, answer) = server.get("/v1/messages/export.csv?cursor=x").await;
    assert_eq!(status, 422, "{answer}");
}
