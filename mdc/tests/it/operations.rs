//! What operations watch: `/metrics`, `/readyz`, JSON logs.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{email, free_port, sms, Server, TEST_CONFIG};

/// The samples of `/metrics`, parsed by a Prometheus text parser:
/// (name, labels) → value.
pub(crate) async fn scrape(server: &Server) -> prometheus_parse::Scrape {
    let response = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.expect("text");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

/// The sum of a counter's (or gauge's) samples whose labels include `with`.
pub(crate) fn sum(scrape: &prometheus_parse::Scrape, name: &str, with: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| with.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// A histogram's observation count.
fn observed(scrape: &prometheus_parse::Scrape, name: &str, with: &[(&str, &str)]) -> u64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| with.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => buckets
                .iter()
                .map(|b| b.count as u64)
                .max()
                .unwrap_or_default(),
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_count_what_was_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            server
                .submit(&sms(&format!("+1415555{:04}", 3100 + i)))
                .await,
        );
    }
    for to in ["hana@example.com", "ivan@example.com"] {
        ids.push(server.submit(&email(to)).await);
    }
    let (status, _) = server
        .post(&json!({"channel": "sms", "to": "not a number", "body": "x"}))
        .await;
    assert_eq!(status, 422);
    for id in &ids {
        let message = server.wait_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(message["status"], "delivered", "{message:#}");
    }
    // A report's outcome is published, counted and its queue entry
    // acknowledged after the store shows `delivered`: wait for those.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = scrape(&server).await;
        let settled = observed(&metrics, "mdc_time_to_delivered_seconds", &[]) == 5
            && sum(&metrics, "mdc_lane_lag", &[]) == 0.0;
        if settled || std::time::Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let accepted = "mdc_messages_accepted_total";
    assert_eq!(
        sum(
            &metrics,
            accepted,
            &[("channel", "sms"), ("priority", "critical")]
        ),
        3.0
    );
    assert_eq!(
        sum(
            &metrics,
            accepted,
            &[("channel", "email"), ("priority", "normal")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            &metrics,
            "mdc_messages_rejected_total",
            &[
                ("channel", "sms"),
                ("priority", "normal"),
                ("rule", "phone_country_code")
            ]
        ),
        1.0,
        "{:?}",
        metrics
            .samples
            .iter()
            .filter(|s| s.metric == "mdc_messages_rejected_total")
            .collect::<Vec<_>>()
    );
    assert_eq!(
        sum(&metrics, "mdc_sends_total", &[("outcome", "sent")]),
        5.0
    );
    assert_eq!(
        sum(&metrics, "mdc_reports_total", &[("status", "delivered")]),
        5.0
    );
    assert_eq!(
        sum(&metrics, "mdc_outcomes_total", &[("status", "delivered")]),
        5.0
    );
    assert_eq!(
        sum(
            &metrics,
            "mdc_outcomes_total",
            &[("status", "delivered"), ("channel", "sms")]
        ),
        3.0
    );
    assert_eq!(sum(&metrics, "mdc_sends_in_flight", &[]), 0.0);
    assert!(
        metrics
            .samples
            .iter()
            .any(|s| s.metric == "mdc_lane_lag" && s.labels.get("topic") == Some("sms.critical")),
        "lane lag of sms.critical"
    );
    assert_eq!(
        sum(&metrics, "mdc_lane_lag", &[]),
        0.0,
        "every lane drained"
    );
    assert_eq!(observed(&metrics, "mdc_submit_seconds", &[]), 6);
    assert_eq!(observed(&metrics, "mdc_time_to_delivered_seconds", &[]), 5);
    assert_eq!(observed(&metrics, "mdc_send_seconds", &[]), 5);
}

#[tokio::test]
async fn ready_while_every_backend_answers_and_logs_can_be_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_on(
        dir.path(),
        TEST_CONFIG,
        free_port(),
        &[("MDC_LOG_FORMAT", "json")],
    )
    .await;
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["store"], "ok");
    assert_eq!(ready["checks"]["queue"], "ok");
    server.submit(&sms("+14155553200")).await;
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let entry: HashMap<String, Value> = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            entry.contains_key("level") && entry.contains_key("timestamp"),
            "{line}"
        );
    }
    assert!(log.contains("\"message\":\"MDC is serving\""), "{log}");
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_names_every_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let (status, document) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/v1/messages", "post"),
        ("/v1/messages/batch", "post"),
        ("/v1/messages", "get"),
        ("/v1/messages/{id}", "get"),
        ("/v1/messages/{id}/cancel", "post"),
        ("/v1/messages/export.csv", "get"),
        ("/v1/reports/summary", "get"),
        ("/v1/stats", "get"),
        ("/v1/devices", "post"),
        ("/v1/devices/{id}", "delete"),
        ("/v1/suppressions", "post"),
        ("/v1/suppressions/{channel}/{recipient}", "delete"),
        ("/v1/webhooks", "post"),
        ("/v1/webhooks/{id}", "patch"),
        ("/v1/webhooks/{id}/rotate-secret", "post"),
        ("/v1/webhooks/{id}/recover", "post"),
        ("/v1/keys", "post"),
        ("/v1/keys/{id}", "delete"),
        ("/v1/parked-reports/redrive", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/v1/callbacks/kaleyra/{provider}", "get"),
        ("/v1/callbacks/kaleyra/{provider}", "post"),
        ("/v1/callbacks/sns/{provider}", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not in the document"
        );
    }
    assert_eq!(
        document["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    // The vendor-facing probes need no key.
    assert_eq!(paths["/healthz"]["get"]["security"], json!([{}]));
}

/// `mdc compact` on the data directory: refused while the server has the
/// files open (naming the file and what to do), done once the server is
/// gone, killed even (its files are checked first, with progress logged),
/// and the messages are all there when it starts again.
#[tokio::test]
async fn compact_refuses_a_running_server_and_keeps_every_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let compact = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mdc"))
            .args(["compact", "--data-dir"])
            .arg(dir.path().join("data"))
            .output()
            .expect("run mdc compact")
    };
    let mut server = Server::start(dir.path()).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(
            server
                .submit(&sms(&format!("+1415555{:04}", 100 + n)))
                .await,
        );
    }
    for id in &ids {
        server
            .wait_status(id, "delivered", Duration::from_secs(30))
            .await;
    }

    let refused = compact();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("store.redb is open in another process"),
        "{stderr}"
    );
    assert!(stderr.contains("Stop it first"), "{stderr}");

    server.signal("KILL");
    server.wait_exit(Duration::from_secs(30));
    let done = compact();
    let stdout = String::from_utf8_lossy(&done.stdout);
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stdout}{stderr}");
    for file in ["store.redb", "simulator.redb"] {
        assert!(stdout.contains(&format!("{file}: compacting")), "{stdout}");
        assert!(stdout.contains(&format!("{file}: ")), "{stdout}");
        assert!(dir.path().join("data").join(file).is_file());
    }
    assert_eq!(stdout.matches(" given back)").count(), 2, "{stdout}");
    assert!(
        stderr.contains("Checking a database file that was not closed cleanly"),
        "{stderr}"
    );

    let server = Server::start(dir.path()).await;
    for id in &ids {
        assert_eq!(server.message(id).await["status"], "delivered", "{id}");
    }
}

/// A directory with no data files is named in a clear error, not created.
#[tokio::test]
async fn compact_of_a_directory_without_data_files_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mdc"))
        .args(["compact", "--data-dir"])
        .arg(dir.path().join("nothing-here"))
        .output()
        .expect("run mdc compact");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nothing-here"), "{stderr}");
    assert!(stderr.contains("no MDC data files"), "{stderr}");
    assert!(!dir.path().join("nothing-here").exists());
}

/// A data directory of a version that kept the queue in `queue.redb`:
/// the messages waiting there move into `store.redb` at start-up and are
/// delivered; the old file is gone.
#[tokio::test]
async fn messages_waiting_in_an_earlier_queue_file_are_delivered_after_an_upgrade() {
    use mdc_client::{ClientConfig, SubmitRequest};
    use mdc_embedded::{Db, EmbeddedQueue, QueueLayout, EARLIER_QUEUE_FILE};

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut ids = Vec::new();
    {
        // As an earlier version left them: recorded in store.redb, queued
        // in queue.redb, not yet taken by a dispatcher.
        let stores = mdc_embedded::open_stores(&data).expect("stores");
        let queue_file = Db::open(&data.join(EARLIER_QUEUE_FILE)).expect("queue file");
        let queue = EmbeddedQueue::open(queue_file, QueueLayout::default()).expect("queue");
        let submitter = mdc::accept::Submitter::new(
            stores.store.clone(),
            std::sync::Arc::new(queue),
            ClientConfig::default(),
        );
        for i in 0..3 {
            let submitted = submitter
                .submit(&SubmitRequest {
                    channel: Some("sms".into()),
                    to: Some(format!("+1415555017{i}")),
                    body: Some(format!("waiting {i}")),
                    ..Default::default()
                })
                .await
                .expect("submit");
            ids.push(submitted.id.as_str().to_owned());
        }
    }
    let server = Server::start(dir.path()).await;
    for id in &ids {
        server
            .wait_status(id, "delivered", Duration::from_secs(30))
            .await;
    }
    assert!(!data.join(EARLIER_QUEUE_FILE).exists());
    let log = std::fs::read_to_string(dir.path().join("mdc.log")).expect("log");
    assert!(
        log.contains("Moved the records waiting in the queue's earlier file"),
        "{log}"
    );
}
