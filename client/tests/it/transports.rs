//! SMS, email and push through each transport to a real `mdc serve` (its
//! simulated vendors), until each message is `delivered`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mdc_client::{
    Client, Config, Email, KafkaConfig, MessageType, Priority, Push, Sms, Status, SubmitError,
    SubmitRequest,
};

/// The `mdc` binary of this build (`cargo nextest run --workspace` and
/// `cargo build` put it beside the test programs), or `MDC_BIN`.
fn mdc_bin() -> PathBuf {
    if let Ok(path) = std::env::var("MDC_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("test path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("mdc");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with ./scripts/test (or cargo build -p mdc first)",
        bin.display()
    );
    bin
}

struct Mdc {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Mdc {
    async fn start(dir: &Path, backends: &str) -> Mdc {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let config = dir.join("mdc.toml");
        std::fs::write(
            &config,
            format!("[simulator]\nreport_delay = \"20ms\"\n\n{backends}"),
        )
        .expect("config");
        let log = dir.join("mdc.log");
        let child = Command::new(mdc_bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn mdc");
        let mdc = Mdc {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", mdc.base)).send().await {
                if r.status().is_success() {
                    return mdc;
                }
            }
            assert!(
                Instant::now() < deadline,
                "mdc did not start:\n{}",
                mdc.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mdc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn messages() -> Vec<SubmitRequest> {
    vec![
        Sms::to("+14155550123")
            .body("Your code is 123456")
            .priority(Priority::Critical)
            .kind(MessageType::Otp)
            .into(),
        Email::to("ada@example.com")
            .from("shop@example.com")
            .subject("Receipt")
            .body("Thanks")
            .html("<p>Thanks</p>")
            .reference("order-7")
            .into(),
        Push::to("client-test-device-0001")
            .title("Shipped")
            .body("Your order is on its way")
            .data("order", 7)
            .into(),
    ]
}

/// Sends each message and waits until MDC reports it delivered.
async fn send_all_until_delivered(client: &Client, mdc: &Mdc) -> Vec<mdc_client::MessageStatus> {
    let mut ids = Vec::new();
    for message in messages() {
        let sent = client.send(message).await.expect("sent");
        ids.push(sent.id);
    }
    wait_delivered(client, mdc, ids).await
}

/// Sends the messages, and one invalid here, in one batch; waits until
/// MDC reports the valid ones delivered.
async fn send_batch_until_delivered(client: &Client, mdc: &Mdc) -> Vec<mdc_client::MessageStatus> {
    let mut batch = messages();
    batch.insert(1, Sms::to("12345").body("invalid here").into());
    let mut results = client.send_batch(batch).await;
    assert_eq!(results.len(), 4);
    match results.remove(1) {
        Err(SubmitError::Invalid(e)) => assert_eq!(e.field, "to", "{e}"),
        other => panic!("expected a local refusal naming to, got {other:?}"),
    }
    let ids = results.into_iter().map(|r| r.expect("sent").id).collect();
    wait_delivered(client, mdc, ids).await
}

/// Waits until MDC reports each of `ids` delivered.
async fn wait_delivered(
    client: &Client,
    mdc: &Mdc,
    ids: Vec<mdc_client::MessageId>,
) -> Vec<mdc_client::MessageStatus> {
    let mut delivered = Vec::new();
    for id in ids {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = client.status(&id).await.expect("status");
            if let Some(status) = status.filter(|s| s.is_final()) {
                assert_eq!(
                    status.status,
                    Status::Delivered,
                    "{status:#?}\n{}",
                    mdc.log()
                );
                delivered.push(status);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} not delivered:\n{}",
                mdc.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    delivered
}

/// Nothing invalid leaves the client: each is refused with its field.
async fn invalid_fails_locally(client: &Client) {
    for (request, field) in [
        (SubmitRequest::from(Sms::to("12345").body("hi")), "to"),
        (
            Email::to("ada@example.com")
                .from("shop@example.com")
                .body("no subject")
                .into(),
            "subject",
        ),
        (Push::to("client-test-device-0001").into(), "body"),
    ] {
        match client.send(request).await {
            Err(SubmitError::Invalid(e)) => assert_eq!(e.field, field, "{e}"),
            other => panic!("expected a refusal naming {field}, got {other:?}"),
        }
    }
}

/// Every message MDC holds: exactly the delivered ones.
async fn stored_ids(mdc: &Mdc) -> Vec<String> {
    let page: serde_json::Value = reqwest::get(format!("{}/v1/messages?limit=100", mdc.base))
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let mut ids: Vec<String> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted_ids(statuses: &[mdc_client::MessageStatus]) -> Vec<String> {
    let mut ids: Vec<String> = statuses.iter().map(|s| s.id.to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn over_http_sms_email_and_push_reach_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mdc = Mdc::start(dir.path(), "").await;
    let client = Client::new(Config::http(&mdc.base, None))
        .await
        .expect("client");
    invalid_fails_locally(&client).await;
    let mut delivered = send_all_until_delivered(&client, &mdc).await;
    assert_eq!(delivered[1].reference.as_deref(), Some("order-7"));
    let batch = send_batch_until_delivered(&client, &mdc).await;
    assert_eq!(batch[1].reference.as_deref(), Some("order-7"));
    delivered.extend(batch);
    assert_eq!(stored_ids(&mdc).await, sorted_ids(&delivered));
}

#[tokio::test]
async fn directly_on_kafka_sms_email_and_push_reach_delivered_as_the_service() {
    let brokers = std::env::var("MDC_TEST_KAFKA_BROKERS")
        .expect("MDC_TEST_KAFKA_BROKERS is not set: run the tests with ./scripts/test");
    let prefix = format!("client{}", ulid::Ulid::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let mdc = Mdc::start(
        dir.path(),
        &format!(
            "[backends.queue]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\nprefix = \"{prefix}\"\nreplication_factor = 1\ncreate_topics = true\nproduce_timeout = \"15s\"\n"
        ),
    )
    .await;
    let mut kafka = KafkaConfig::new(&brokers, &prefix);
    kafka.produce_timeout = Duration::from_secs(15);
    let mut config = Config::direct(kafka, "billing");
    config.api_url = Some(mdc.base.clone());
    let client = Client::new(config).await.expect("client");
    invalid_fails_locally(&client).await;
    let mut delivered = send_all_until_delivered(&client, &mdc).await;
    delivered.extend(send_batch_until_delivered(&client, &mdc).await);
    for status in &delivered {
        assert_eq!(status.service.as_deref(), Some("billing"), "{status:#?}");
        assert!(
            status.events[0]
                .details
                .contains("produced directly by billing"),
            "{:#?}",
            status.events
        );
    }
    assert_eq!(stored_ids(&mdc).await, sorted_ids(&delivered));
}
