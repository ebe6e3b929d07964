//! `mdc serve` with the store on MongoDB and retry timing on Redis (the test
//! servers of scripts/test-services).

use std::time::Duration;

use crate::harness::{email, push, sms, Server, TEST_CONFIG};

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests with ./scripts/test"))
}

#[tokio::test]
async fn messages_complete_with_mongodb_store_and_redis_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("e2e{}", ulid::Ulid::new());
    let config = format!(
        "{TEST_CONFIG}\n[backends.store]\nkind = \"mongodb\"\nurl = \"{mongo}\"\ndatabase = \"mdc_e2e\"\nprefix = \"{prefix}_\"\nmajority_writes = false\n\n[backends.retry]\nkind = \"redis\"\nurl = \"{redis}\"\nprefix = \"{prefix}\"\n\n[backends.cache]\nkind = \"redis\"\nurl = \"{redis}\"\nprefix = \"{prefix}\"\n",
        mongo = env("MDC_TEST_MONGODB_URL"),
        redis = env("MDC_TEST_REDIS_URL"),
    );
    let server = Server::start_with(dir.path(), &config).await;
    let ids = [
        server.submit(&sms("+14155550123")).await,
        server.submit(&email("alice@example.com")).await,
        server.submit(&push("sim-transient-2-device")).await,
    ];
    for id in &ids {
        let message = server.wait_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(message["status"], "delivered", "{message:#}");
    }
    let retried = server.message(&ids[2]).await;
    assert_eq!(
        retried["attempts"], 3,
        "two retries through Redis: {retried:#}"
    );
    let (_, stats) = server.get("/v1/stats").await;
    assert_eq!(stats["statuses"]["delivered"], 3);
}

#[tokio::test]
async fn an_unreachable_backend_stops_start_up_with_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config =
        format!("[backends.retry]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\n");
    std::fs::write(dir.path().join("mdc.toml"), config).expect("write");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_mdc"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("mdc.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .await
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("backends.retry"), "{stderr}");
}
