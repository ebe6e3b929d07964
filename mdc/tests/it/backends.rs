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

/// `mdc serve` with `config` in `dir`, which must stop at start-up (within
/// 30 s, or the test fails rather than waits): its stderr.
async fn start_up_error(dir: &std::path::Path, config: &str) -> String {
    std::fs::write(dir.join("mdc.toml"), config).expect("write");
    let serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_mdc"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.join("mdc.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), serve)
        .await
        .expect("mdc serve started instead of stopping")
        .expect("run");
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
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
    let stderr = start_up_error(dir.path(), &config).await;
    assert!(stderr.contains("backends.retry"), "{stderr}");
}

/// A private MongoDB-protocol server this test can stop and start.
struct Mongo {
    child: Option<std::process::Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl Mongo {
    /// A one-node replica set, as production runs (transactions).
    fn start(port: u16, dir: &std::path::Path) -> Mongo {
        Self::spawn(port, dir, &[])
    }

    /// A standalone server, which takes no transactions.
    fn standalone(port: u16, dir: &std::path::Path) -> Mongo {
        Self::spawn(port, dir, &["--standalone"])
    }

    fn spawn(port: u16, dir: &std::path::Path, args: &[&str]) -> Mongo {
        let child = std::process::Command::new(env("MDC_TEST_MONGODB_SERVER"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--storage-path")
            .arg(dir)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the MongoDB test server");
        crate::harness::wait_for_port(port, "MongoDB test server");
        Mongo {
            child: Some(child),
            port,
            dir: dir.to_owned(),
        }
    }

    /// A clean stop (SIGTERM), so the server keeps what it acknowledged.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Mongo {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A standalone MongoDB would fail every submission with a caller's key
/// (they need a transaction): start-up refuses it and says what to run.
#[tokio::test]
async fn a_standalone_mongodb_stops_start_up_with_an_error_saying_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::harness::free_port();
    let storage = dir.path().join("mongo");
    std::fs::create_dir_all(&storage).expect("mkdir");
    let _mongo = Mongo::standalone(port, &storage);
    let config = format!(
        "[backends.store]\nkind = \"mongodb\"\nurl = \"mongodb://127.0.0.1:{port}/?directConnection=true\"\nmajority_writes = false\n"
    );
    let stderr = start_up_error(dir.path(), &config).await;
    assert!(stderr.contains("backends.store"), "{stderr}");
    assert!(stderr.contains("standalone"), "{stderr}");
    assert!(stderr.contains("replica set"), "{stderr}");
}

#[tokio::test]
async fn a_database_outage_fails_submits_cleanly_and_service_recovers_by_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::harness::free_port();
    let storage = dir.path().join("mongo");
    std::fs::create_dir_all(&storage).expect("mkdir");
    let mut mongo = Mongo::start(port, &storage);
    let config = format!(
        "{TEST_CONFIG}\n[backends.store]\nkind = \"mongodb\"\nurl = \"mongodb://127.0.0.1:{port}/?directConnection=true\"\nmajority_writes = false\n"
    );
    let server = Server::start_with(dir.path(), &config).await;
    let before = server.submit(&sms("+14155550123")).await;
    server.wait_terminal(&before, Duration::from_secs(30)).await;

    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    mongo.stop();
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["failing"], serde_json::json!(["store"]), "{ready}");
    assert!(
        !ready.to_string().contains(&mongo.port.to_string()),
        "no backend internals: {ready}"
    );
    let (status, answer) = server.post(&sms("+14155550124")).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        !answer.to_string().contains(&mongo.port.to_string()),
        "no backend internals in a 503: {answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unavailable")),
        "{answer}"
    );
    let (_, stats) = server.get("/v1/stats").await;
    assert!(
        stats.get("error").is_some() || stats["total"].is_null(),
        "the store is down: {stats}"
    );

    let mongo = Mongo::start(mongo.port, &mongo.dir.clone());
    // The driver finds the server again by itself; until then, 503.
    let after = server
        .submit_when_back(&sms("+14155550125"), Duration::from_secs(30))
        .await;
    let message = server.wait_terminal(&after, Duration::from_secs(30)).await;
    assert_eq!(message["status"], "delivered", "{message:#}");
    assert_eq!(
        server.message(&before).await["status"],
        "delivered",
        "what was stored before the outage is still there"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, ready) = server.get("/readyz").await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready again: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, stats) = server.get("/v1/stats").await;
    assert_eq!(
        stats["total"], 2,
        "nothing half written by the failed submit: {stats}"
    );
    drop(mongo);
}

/// A private redis-server this test can stop and start.
fn redis_server(port: u16) -> std::process::Child {
    let child = std::process::Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--notify-keyspace-events", "Ex"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start redis-server");
    crate::harness::wait_for_port(port, "redis-server");
    child
}

#[tokio::test]
async fn a_redis_outage_delays_retries_and_they_resume_by_themselves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::harness::free_port();
    let mut redis = redis_server(port);
    let config = format!(
        "{TEST_CONFIG}\n[reconciler]\ninterval = \"300ms\"\ngrace = \"500ms\"\n\
         [backends.retry]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\n\
         [backends.cache]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\n"
    );
    let server = Server::start_with(dir.path(), &config).await;
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");

    let _ = redis.kill();
    let _ = redis.wait();
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(
        ready["failing"],
        serde_json::json!(["retry", "cache"]),
        "{ready}"
    );
    // Its first attempt fails transiently; the retry's timer cannot be set.
    let id = server.submit(&push("sim-transient-1-outage")).await;
    let failed_once = server
        .wait_event(
            &id,
            "the retry timer could not be set",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(failed_once["status"], "sending", "{failed_once:#}");
    assert!(
        failed_once["next_attempt_at"].is_string(),
        "{failed_once:#}"
    );
    // Nothing is resent while Redis is away: not after the retry's delay, nor
    // after the attempt's lease (3 s) would have run out.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let waiting = server.message(&id).await;
    assert_eq!(waiting["status"], "sending", "{waiting:#}");
    assert_eq!(waiting["attempts"], 1, "{waiting:#}");
    assert_eq!(server.vendor_sends().await[&id]["calls"], 1);

    let mut redis = redis_server(port);
    let message = server.wait_terminal(&id, Duration::from_secs(30)).await;
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 200, "ready again: {ready}");
    assert_eq!(message["status"], "delivered", "{message:#}");
    assert_eq!(message["attempts"], 2);
    let sends = server.vendor_sends().await;
    assert_eq!(sends[&id]["calls"], 2, "{sends:#}");
    assert_eq!(sends[&id]["accepted"], 1, "{sends:#}");
    let _ = redis.kill();
    let _ = redis.wait();
}

/// A route's rate limit is the deployment's: with another dispatcher
/// counted on Redis, this one sends half of it, and the whole once the
/// other leaves.
#[tokio::test]
async fn dispatchers_counted_on_redis_share_a_route_rate_limit() {
    use mdc_core::ports::Fleet;

    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("fleet{}", ulid::Ulid::new());
    let redis = env("MDC_TEST_REDIS_URL");
    let other = mdc_redis::RedisFleet::connect(&redis, &prefix)
        .await
        .expect("connect");
    other
        .beat("another-dispatcher", Duration::from_secs(60))
        .await
        .expect("beat");
    let config = format!(
        "{TEST_CONFIG}\n[backends.retry]\nkind = \"redis\"\nurl = \"{redis}\"\nprefix = \"{prefix}\"\n\n[routes.sms]\nmembers = [{{ provider = \"sim-sms\", rate_per_second = 100 }}]\n"
    );
    let server = Server::start_with(dir.path(), &config).await;
    assert_eq!(
        fleet_metrics_reach(&server, (2.0, 50.0)).await,
        (2.0, 50.0),
        "(dispatchers, sim-sms's rate)"
    );
    other.leave("another-dispatcher").await.expect("leave");
    assert_eq!(
        fleet_metrics_reach(&server, (1.0, 100.0)).await,
        (1.0, 100.0),
        "the whole rate back within three beats"
    );
}

/// `mdc_dispatchers_alive` and sim-sms's `mdc_provider_rate_per_second`
/// once they read `want`, or as they stand after about 15 s.
async fn fleet_metrics_reach(server: &Server, want: (f64, f64)) -> (f64, f64) {
    let mut seen = (0.0, 0.0);
    for _ in 0..150 {
        let metrics = crate::operations::scrape(server).await;
        seen = (
            crate::operations::sum(&metrics, "mdc_dispatchers_alive", &[]),
            crate::operations::sum(
                &metrics,
                "mdc_provider_rate_per_second",
                &[("provider", "sim-sms")],
            ),
        );
        if seen == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}
