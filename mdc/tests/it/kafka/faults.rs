//! Faults on the Kafka queue: a broker outage, a dispatcher killed or
//! stopped mid-batch, a send held past its lease.

use super::*;

/// A private tansu broker reached through a loopback proxy the test can cut
/// and restore: the broker becomes unreachable without losing its state
/// (tansu 0.6 cannot take back an idempotent producer after a restart).
struct Broker {
    child: Child,
    proxy: Proxy,
}

impl Broker {
    async fn start(dir: &std::path::Path) -> Broker {
        let port = free_port();
        let proxy = Proxy::start(free_port(), port).await;
        let listener = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{}", proxy.port);
        let child = Command::new(env("MDC_TEST_KAFKA_SERVER"))
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &advertised,
                "--storage-engine",
                // The sqlite path is taken as relative.
                "sqlite://tansu.db",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the Kafka test broker");
        crate::harness::wait_for_port(port, "Kafka test broker");
        Broker { child, proxy }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Forwards connections on `port` to `target` until cut.
struct Proxy {
    port: u16,
    target: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    async fn start(port: u16, target: u16) -> Proxy {
        let mut proxy = Proxy {
            port,
            target,
            task: None,
        };
        proxy.restore().await;
        proxy
    }

    /// Closes every connection and refuses new ones.
    fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the proxy");
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }
}

#[tokio::test]
async fn a_broker_outage_fails_submits_cleanly_and_service_recovers_by_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("kafka");
    std::fs::create_dir_all(&storage).expect("mkdir");
    let mut broker = Broker::start(&storage).await;
    // tansu 0.6 panics (and stops serving) when an idempotent producer
    // resends after an outage; production brokers do not.
    // A short produce timeout: the caller hears of the outage quickly.
    let backends = format!(
        "{}idempotent_producer = false\n",
        kafka_queue(&broker.address())
            .replace("produce_timeout = \"15s\"", "produce_timeout = \"3s\"")
    );
    let server = Server::start_with(dir.path(), &config("", "", &backends)).await;
    let before = server.submit(&sms("+14155550123")).await;
    server.wait_terminal(&before, Duration::from_secs(30)).await;

    broker.proxy.cut();
    let mut during = sms("+14155550124");
    during["idempotency_key"] = json!("order-77-otp");
    let started = Instant::now();
    let (status, answer) = server.post(&during).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the caller waited {:?}",
        started.elapsed()
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unavailable")),
        "{answer}"
    );

    broker.proxy.restore().await;
    // The same submission again, once the broker is back: sent exactly once.
    let retried = server
        .submit_when_back(&during, Duration::from_secs(60))
        .await;
    let after = server.submit(&sms("+14155550125")).await;
    for id in [&retried, &after, &before] {
        let message = server.wait_terminal(id, Duration::from_secs(60)).await;
        assert_eq!(message["status"], "delivered", "{message:#}");
    }
    let (_, stats) = server.get("/v1/stats").await;
    assert_eq!(
        stats["total"], 3,
        "nothing half written by the failed submit: {stats}"
    );
    let sends = server.vendor_sends().await;
    assert_eq!(sends[&retried]["accepted"], 1, "{sends:#}");
    drop(broker);
}

/// Roles as separate processes: ingest, listener and handlers in one, the
/// dispatcher in another, killed mid-batch and started again.
#[tokio::test]
async fn a_dispatcher_killed_mid_batch_sends_nothing_twice_and_keeps_each_recipients_order() {
    let front_dir = tempfile::tempdir().expect("tempdir");
    let dispatcher_dir = tempfile::tempdir().expect("tempdir");
    let backends = format!(
        "{}\n{}",
        kafka_queue(&env("MDC_TEST_KAFKA_BROKERS")),
        shared_store_and_retry()
    );
    // The leases outlast the restart, so the restarted dispatcher meets
    // messages still held by the dead one's attempts.
    let config = config(
        "batch_size = 8\nlease = \"15s\"",
        "send_latency = \"200ms\"",
        &backends,
    );
    let front = Server::start_on(
        front_dir.path(),
        &config,
        free_port(),
        &[("MDC_ROLES", "ingest,listener,handlers")],
    )
    .await;
    // Five recipients, twenty messages each, in order per recipient.
    let recipients: Vec<String> = (0..5).map(|i| format!("+1415777{i:04}")).collect();
    let sequences = join_all(recipients.iter().map(|to| {
        let front = &front;
        async move {
            let mut ids = Vec::new();
            for n in 0..20 {
                ids.push(front.submit(&sms_to(to, "normal", &format!("#{n}"))).await);
            }
            ids
        }
    }))
    .await;
    let all: Vec<String> = sequences.iter().flatten().cloned().collect();
    let dispatcher_port = free_port();
    let roles = [("MDC_ROLES", "dispatcher")];
    let start = || Server::start_on(dispatcher_dir.path(), &config, dispatcher_port, &roles);
    let mut dispatcher = start().await;
    let (status, _) = dispatcher.post(&sms("+14155550123")).await;
    assert_eq!(
        status, 404,
        "a dispatcher-only process takes no submissions"
    );

    // Kill the dispatcher while it is sending. The kill lands a moment after
    // a send was seen in flight; should too few sends be left in flight by
    // then, the dispatcher is started and killed again. (A send the vendor
    // took just before the kill is settled by the vendor's report instead of
    // a second attempt, so one is not enough.)
    let mut in_flight = 0;
    for round in 1..=4 {
        wait_until_sending(&front, 15 * round, 2).await;
        dispatcher.signal("KILL");
        dispatcher.wait_exit(Duration::from_secs(10));
        let (_, stats) = front.get("/v1/stats").await;
        in_flight = stats["statuses"]["sending"].as_u64().unwrap_or(0);
        // Restart once the group has dropped the dead members (session
        // timeout): the test broker may leave partitions with a member it
        // still counts.
        tokio::time::sleep(Duration::from_secs(8)).await;
        dispatcher = start().await;
        if in_flight >= 2 {
            break;
        }
    }
    assert!(in_flight >= 2, "no kill caught sends in flight");

    let delivered = wait_all_delivered(&front, &all, Duration::from_secs(120)).await;
    // Sends were in flight when it died: their second claim waited out the
    // first one's lease and asked the vendor before sending.
    let resumed = delivered
        .iter()
        .filter(|m| m["attempts"].as_u64() >= Some(2))
        .count() as u64;
    assert!(
        resumed > 0,
        "{in_flight} sends were in flight at the kill but none resumed"
    );
    let sent: HashMap<&str, chrono::DateTime<chrono::Utc>> = all
        .iter()
        .zip(&delivered)
        .map(|(id, m)| {
            let at = sent_or_attempted_at(m).unwrap_or_else(|| panic!("no send in {m:#}"));
            (id.as_str(), at)
        })
        .collect();
    for (to, ids) in recipients.iter().zip(&sequences) {
        let times: Vec<_> = ids.iter().map(|id| sent[id.as_str()]).collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "messages to {to} were sent out of order: {times:?}"
        );
    }

    // The simulated vendor's ledger lives with the dispatcher; read it
    // through an ingest-only process on the same data.
    dispatcher.signal("TERM");
    assert!(dispatcher.wait_exit(Duration::from_secs(30)), "clean stop");
    let reader = Server::start_on(
        dispatcher_dir.path(),
        &config,
        free_port(),
        &[("MDC_ROLES", "ingest")],
    )
    .await;
    let sends = reader.vendor_sends().await;
    for id in &all {
        assert_eq!(
            sends[id]["accepted"], 1,
            "{id} was sent {} times",
            sends[id]["accepted"]
        );
    }
}

/// SIGTERM mid-batch: the dispatcher finishes the sends in hand, commits and
/// leaves; the next start picks up exactly where it stopped.
#[tokio::test]
async fn a_graceful_stop_on_kafka_finishes_in_flight_sends_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backends = kafka_queue(&env("MDC_TEST_KAFKA_BROKERS"));
    let config = config("batch_size = 8", "send_latency = \"300ms\"", &backends);
    let port = free_port();
    let mut server = Server::start_on(dir.path(), &config, port, &[]).await;
    let ids = submit_many(&server, 120, "normal", 7_000_000).await;
    wait_until_sending(&server, 20, 1).await;
    server.signal("TERM");
    assert!(
        server.wait_exit(Duration::from_secs(30)),
        "clean exit; log:\n{}",
        server.log()
    );
    let server = Server::start_on(dir.path(), &config, port, &[]).await;
    let delivered = wait_all_delivered(&server, &ids, Duration::from_secs(120)).await;
    // Drained, not abandoned: no send was left in doubt for a second attempt.
    for message in &delivered {
        assert_eq!(message["attempts"], 1, "{message:#}");
    }
    let sends = server.vendor_sends().await;
    for id in &ids {
        assert_eq!(sends[id]["accepted"], 1, "{id}: {}", sends[id]);
    }
}

/// Sends held past the lease (waiting for a rate-limit token) by one of two
/// dispatcher processes, with the reconciler looking for lapsed leases every
/// second, on Kafka, MongoDB and Redis: the held attempts keep their leases,
/// so no other dispatcher sends them, and Kaleyra (which cannot be asked
/// whether it has MDC's message) gets each message once.
#[tokio::test]
async fn a_send_held_past_the_lease_is_not_sent_by_a_second_dispatcher() {
    let sim = KaleyraSim::start(&["--callback-delay", "50ms"]).await;
    let front_dir = tempfile::tempdir().expect("tempdir");
    let front_port = free_port();
    // A consumer that holds a batch for longer than max.poll.interval.ms
    // leaves its group: its partitions, with the held record, go to the
    // other dispatcher, which meets the message while it is still held.
    let backends = format!(
        "{}[backends.queue.options]\n\"max.poll.interval.ms\" = \"7000\"\n\n{}",
        kafka_queue(&env("MDC_TEST_KAFKA_BROKERS")),
        shared_store_and_retry()
    );
    // One send per ten seconds per dispatcher, a 3 s lease, and a reconciler
    // that reschedules any lease lapsed for a second.
    let config = format!(
        "{}\n[reconciler]\ninterval = \"1s\"\ngrace = \"1s\"\n{}\n[routes.sms]\nmembers = [{{ provider = \"kaleyra-test\", rate_per_second = 0.1, burst = 1 }}]\n",
        config("", "", &backends),
        kaleyra_provider("kaleyra-test", &sim, front_port)
    );
    let env_with = |roles: &'static str| {
        let mut env = KALEYRA_ENV.to_vec();
        env.push(("MDC_ROLES", roles));
        env
    };
    let front = Server::start_on(
        front_dir.path(),
        &config,
        front_port,
        &env_with("ingest,listener,handlers"),
    )
    .await;
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let mut dispatchers = Vec::new();
    for dir in &dirs {
        dispatchers.push(
            Server::start_on(dir.path(), &config, free_port(), &env_with("dispatcher")).await,
        );
    }

    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            front
                .submit(&sms_to(&format!("+91987654{i:04}"), "normal", "held"))
                .await,
        );
    }
    let delivered = wait_all_delivered(&front, &ids, Duration::from_secs(120)).await;
    let held = delivered
        .iter()
        .filter(|m| {
            let created = m["created_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            match (created, sent_at(m)) {
                (Some(created), Some(sent)) => {
                    sent.signed_duration_since(created) > chrono::Duration::seconds(4)
                }
                _ => false,
            }
        })
        .count();
    assert!(held >= 1, "no send was held past the lease: {delivered:#?}");
    let sends = sim.sends().await;
    for (id, message) in ids.iter().zip(&delivered) {
        assert_eq!(sends["accepted"][id], 1, "{id}: {sends}");
        assert_eq!(sends["calls"][id], 1, "{id}: {sends}");
        assert_eq!(message["attempts"], 1, "{message:#}");
    }
    drop(dispatchers);
}
