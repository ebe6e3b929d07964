//! `mdc serve` on the Kafka queue (the tansu broker of scripts/test-services,
//! or a private one a test can stop), with MongoDB and Redis where roles run
//! as separate processes.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};

use crate::harness::{
    free_port, kaleyra_provider, sent_at, sent_or_attempted_at, sms, KaleyraSim, Server,
    KALEYRA_ENV,
};

mod faults;

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests with ./scripts/test"))
}

/// A `[backends.queue]` on `brokers` with topics of the test's own.
fn kafka_queue(brokers: &str) -> String {
    kafka_queue_prefixed(brokers, &format!("e2e{}", ulid::Ulid::new()))
}

/// A `[backends.queue]` on `brokers` with topics named after `prefix`.
fn kafka_queue_prefixed(brokers: &str, prefix: &str) -> String {
    format!(
        "[backends.queue]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\nprefix = \"{prefix}\"\nreplication_factor = 1\ncreate_topics = true\nproduce_timeout = \"15s\"\nsession_timeout = \"6s\"\n"
    )
}

/// MongoDB store and Redis retries and cache, under a prefix of the test's own.
fn shared_store_and_retry() -> String {
    let prefix = format!("e2e{}", ulid::Ulid::new());
    format!(
        "[backends.store]\nkind = \"mongodb\"\nurl = \"{mongo}\"\ndatabase = \"mdc_e2e\"\nprefix = \"{prefix}_\"\nmajority_writes = false\n\n[backends.retry]\nkind = \"redis\"\nurl = \"{redis}\"\nprefix = \"{prefix}\"\n\n[backends.cache]\nkind = \"redis\"\nurl = \"{redis}\"\nprefix = \"{prefix}\"\n",
        mongo = env("MDC_TEST_MONGODB_URL"),
        redis = env("MDC_TEST_REDIS_URL"),
    )
}

fn config(dispatcher: &str, simulator: &str, backends: &str) -> String {
    let lease = if dispatcher.contains("lease") {
        ""
    } else {
        "lease = \"3s\"\n"
    };
    format!(
        "[dispatcher]\nretry_schedule = [\"200ms\", \"400ms\", \"800ms\"]\nsend_timeout = \"2s\"\ndrain_timeout = \"4s\"\n{lease}{dispatcher}\n\n[simulator]\nreport_delay = \"20ms\"\n{simulator}\n\n{backends}"
    )
}

fn sms_to(to: &str, priority: &str, body: &str) -> Value {
    json!({"channel": "sms", "to": to, "body": body, "priority": priority, "type": "transactional"})
}

/// When the dispatcher recorded the message as sent.
async fn wait_all_delivered(server: &Server, ids: &[String], within: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    for id in ids {
        let message = server.wait_terminal(id, within).await;
        assert_eq!(message["status"], "delivered", "{message:#}");
        out.push(message);
    }
    out
}

#[tokio::test]
async fn messages_complete_on_kafka_mongodb_and_redis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backends = format!(
        "{}\n{}",
        kafka_queue(&env("MDC_TEST_KAFKA_BROKERS")),
        shared_store_and_retry()
    );
    let server = Server::start_with(dir.path(), &config("", "", &backends)).await;
    let ids = [
        server.submit(&sms("+14155550123")).await,
        server
            .submit(&crate::harness::email("alice@example.com"))
            .await,
        server
            .submit(&crate::harness::push("sim-transient-2-device"))
            .await,
    ];
    wait_all_delivered(&server, &ids, Duration::from_secs(60)).await;
    let retried = server.message(&ids[2]).await;
    assert_eq!(retried["attempts"], 3, "retried through Redis: {retried:#}");
}

#[tokio::test]
async fn critical_messages_overtake_a_bulk_backlog_on_kafka() {
    critical_messages_overtake_a_bulk_backlog(&kafka_queue(&env("MDC_TEST_KAFKA_BROKERS"))).await;
}

#[tokio::test]
async fn critical_messages_overtake_a_bulk_backlog_on_the_embedded_queue() {
    critical_messages_overtake_a_bulk_backlog("").await;
}

async fn critical_messages_overtake_a_bulk_backlog(backends: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small batches and a slow vendor: the bulk backlog takes seconds.
    // One consumer per lane, so no rebalance of a lane's group interferes.
    let lanes = "[lanes.critical]\npartitions = 4\nconsumers = 1\n[lanes.normal]\npartitions = 4\nconsumers = 1\n";
    let config = format!(
        "{lanes}{}",
        config("batch_size = 4", "send_latency = \"25ms\"", backends)
    );
    let server = Server::start_with(dir.path(), &config).await;
    // Every lane has joined its group and is consuming.
    let warm_up = server
        .submit(&sms_to("+14155550999", "critical", "warm-up"))
        .await;
    server
        .wait_terminal(&warm_up, Duration::from_secs(60))
        .await;

    let bulk_ids: Vec<String> = submit_many(&server, 800, "bulk", 5_000_000).await;
    // Wait until the bulk lane is busy sending.
    wait_until_sent(&server, 40).await;
    let critical_ids = submit_many(&server, 60, "critical", 6_000_000).await;
    let critical = wait_all_delivered(&server, &critical_ids, Duration::from_secs(60)).await;
    let critical_times: Vec<_> = critical
        .iter()
        .map(|m| sent_at(m).expect("sent event"))
        .collect();
    let first = *critical_times.iter().min().expect("first");
    let last = *critical_times.iter().max().expect("last");

    let bulk = wait_all_delivered(&server, &bulk_ids, Duration::from_secs(120)).await;
    let bulk_times: Vec<_> = bulk
        .iter()
        .map(|m| sent_at(m).expect("sent event"))
        .collect();
    let during = bulk_times
        .iter()
        .filter(|&&t| t >= first && t <= last)
        .count();
    let after = bulk_times.iter().filter(|&&t| t > last).count();
    // Once a critical message is being sent, the bulk lane stops fetching:
    // the batch it had in hand and one fetched at that moment go out, and a
    // few more if the critical lane briefly runs dry between fetches (without
    // the pause, about 30 go out in this window).
    assert!(
        during <= 16,
        "{during} bulk messages were sent while the {} critical ones went out ({first} to {last})",
        critical.len()
    );
    assert!(
        after >= 100,
        "the critical messages should have overtaken the backlog, but only {after} bulk messages were left"
    );
}

/// Waits until at least `n` messages are sent or delivered.
async fn wait_until_sent(server: &Server, n: u64) {
    wait_until_sending(server, n, 0).await;
}

/// Waits until at least `n` messages are sent and `in_flight` others are
/// being sent right now, so that a stop that follows catches sends in flight.
async fn wait_until_sending(server: &Server, n: u64, in_flight: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, stats) = server.get("/v1/stats").await;
        let done = stats["statuses"]["sent"].as_u64().unwrap_or(0)
            + stats["statuses"]["delivered"].as_u64().unwrap_or(0);
        let sending = stats["statuses"]["sending"].as_u64().unwrap_or(0);
        if done >= n && sending >= in_flight {
            return;
        }
        assert!(Instant::now() < deadline, "only {done} sent: {stats}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Submits `n` SMS of `priority`, 64 at a time, to distinct recipients.
async fn submit_many(server: &Server, n: usize, priority: &str, base: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let batch = join_all(chunk.iter().map(|i| {
            let to = format!("+1415{:07}", base + *i as u64);
            async move { server.submit(&sms_to(&to, priority, "hello")).await }
        }))
        .await;
        ids.extend(batch);
    }
    ids
}

#[tokio::test]
async fn topics_create_makes_the_topics_once_and_reports_what_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = kafka_queue(&env("MDC_TEST_KAFKA_BROKERS")).replace("create_topics = true\n", "");
    let path = dir.path().join("mdc.toml");
    // Members drain for less than their session lasts.
    std::fs::write(
        &path,
        format!("{queue}\n[dispatcher]\ndrain_timeout = \"4s\"\n"),
    )
    .expect("write");
    let run = || {
        let output = Command::new(env!("CARGO_BIN_EXE_mdc"))
            .args(["topics", "create", "--config"])
            .arg(&path)
            .output()
            .expect("run");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    };
    let first = run();
    assert_eq!(first.lines().count(), 12, "{first}");
    assert!(
        first.contains(".sms.critical: created with 4 partitions"),
        "{first}"
    );
    assert!(
        first.contains(".sms.bulk: created with 2 partitions"),
        "{first}"
    );
    assert!(
        first.contains(".responses.parked: created with 1 partitions"),
        "{first}"
    );
    let second = run();
    assert_eq!(second.lines().count(), 12, "{second}");
    assert!(
        second.lines().all(|l| l.contains(": exists with")),
        "{second}"
    );
    // With the topics there, a server starts without creating them.
    let server = Server::start_with(dir.path(), &config("", "", &queue)).await;
    let id = server.submit(&sms("+14155550123")).await;
    let message = server.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(message["status"], "delivered", "{message:#}");
}

#[tokio::test]
async fn running_some_roles_on_embedded_backends_is_refused_naming_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mdc.toml");
    let queue = kafka_queue(&env("MDC_TEST_KAFKA_BROKERS"));
    std::fs::write(
        &path,
        format!("{queue}\n[dispatcher]\ndrain_timeout = \"4s\"\n"),
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_mdc"))
        .args(["serve", "--roles", "dispatcher", "--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("backends.store") && stderr.contains("backends.retry"),
        "{stderr}"
    );
    assert!(!stderr.contains("backends.queue"), "{stderr}");
}

/// A vendor report parked on Kafka goes back to be applied by
/// `POST /v1/parked-reports/redrive`: the message it is about moves, and
/// the parked topic is left empty.
#[tokio::test]
async fn a_parked_report_on_kafka_is_redriven_and_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let brokers = env("MDC_TEST_KAFKA_BROKERS");
    let prefix = format!("e2e{}", ulid::Ulid::new());
    // The simulator's own report comes a minute later: the message waits
    // at `sent` for the parked one.
    let config = config("", "", &kafka_queue_prefixed(&brokers, &prefix))
        .replace("report_delay = \"20ms\"", "report_delay = \"1m\"");
    let server = Server::start_with(dir.path(), &config).await;
    let id = server.submit(&sms("+14155550123")).await;
    let vendor_id = server.wait_sent(&id, Duration::from_secs(60)).await;
    // A failure report, where the simulator would report delivered: only
    // the redriven report can end the message `failed`.
    let report = mdc_core::DeliveryReport {
        vendor_at: None,
        provider: "sim-sms".into(),
        provider_message_id: vendor_id,
        reference: Some(id.parse().expect("message id")),
        outcome: mdc_core::ReportOutcome::Failed {
            reason: "parked, then redriven".into(),
            suppress: false,
        },
        at: mdc_core::now(),
        raw: json!({}),
        note: None,
    };
    let mut kafka = mdc_kafka::KafkaConfig::new(&brokers, &prefix);
    kafka.replication_factor = 1;
    let queue = mdc_kafka::KafkaQueue::connect(kafka, mdc_core::ports::QueueLayout::default())
        .await
        .expect("connect");
    use mdc_core::ports::Queue;
    queue
        .produce(
            mdc_core::ports::Topic::ParkedReports,
            "parked",
            serde_json::to_vec(&report).expect("report"),
        )
        .await
        .expect("park");

    // Its consumer may wait for the broker's group join, up to the redrive's
    // patience (45 s): longer than the harness's requests may take.
    let redrive = server
        .http
        .post(format!(
            "{}/v1/parked-reports/redrive?limit=10",
            server.base
        ))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("redrive");
    let status = redrive.status().as_u16();
    let redriven: Value = redrive.json().await.expect("answer");
    assert_eq!(
        (status, &redriven["redriven"]),
        (200, &json!(1)),
        "{redriven}"
    );
    let message = server.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(message["status"], "failed", "{message:#}");
    assert!(
        message.to_string().contains("parked, then redriven"),
        "{message:#}"
    );
    let (status, again) = server
        .post_to("/v1/parked-reports/redrive", json!({}))
        .await;
    assert_eq!((status, &again["redriven"]), (200, &json!(0)), "{again}");
}
