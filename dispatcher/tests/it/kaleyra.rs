//! The whole loop against the Kaleyra simulator, which (like Kaleyra) cannot
//! be asked whether it holds MDC's message: the store fails right after the
//! vendor accepted, and still the message is sent once and ends delivered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mdc_core::memory::{MemoryQueue, MemoryRetry, MemoryStore};
use mdc_core::ports::{Queue, ReportSink, Store, Topic, Transition};
use mdc_core::{Channel, Event, MessageRecord, Status};
use mdc_dispatcher::routing::{Member, Mode, Router};
use mdc_dispatcher::{Dispatcher, DispatcherConfig};
use mdc_handlers::ResponseHandler;
use mdc_providers::kaleyra::{KaleyraConfig, KaleyraProvider, KaleyraSecrets};
use mdc_response_listener::kaleyra::KaleyraIntake;
use mdc_response_listener::QueueReportSink;
use mdc_simulators::kaleyra::{self as simulator, SimulatorSettings};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sent_write_after_kaleyra_accepted_sends_once_and_ends_delivered() {
    let store = Arc::new(MemoryStore::default());
    let queue = Arc::new(MemoryQueue::default());
    let retry = Arc::new(MemoryRetry::default());
    let shutdown = CancellationToken::new();

    // The vendor, and MDC's callback endpoint it reports to.
    let settings = SimulatorSettings {
        api_key: "sim-key".into(),
        callback_delay: Duration::from_millis(50),
        ..SimulatorSettings::default()
    };
    let (vendor, vendor_addr) =
        simulator::start(settings, "127.0.0.1:0".parse().expect("addr")).expect("simulator");
    tokio::spawn(vendor);
    let sink: Arc<dyn ReportSink> = Arc::new(QueueReportSink::new(queue.clone()));
    let intake = Arc::new(KaleyraIntake::new(
        HashMap::from([("kaleyra".to_owned(), SecretString::from("cb-token"))]),
        sink,
    ));
    let listener = actix_web::HttpServer::new(move || {
        actix_web::App::new().configure(mdc_response_listener::kaleyra::routes(intake.clone()))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind");
    let listener_addr = listener.addrs()[0];
    tokio::spawn(listener.run());

    let kaleyra = KaleyraProvider::new(
        "kaleyra",
        &KaleyraConfig {
            base_url: format!("http://{vendor_addr}"),
            sid: "HXSIM01".into(),
            api_key_env: "unused".into(),
            callback_url: format!("http://{listener_addr}/v1/callbacks/kaleyra/kaleyra"),
            callback_token_env: "unused".into(),
            timeout: Duration::from_secs(2),
            after_ambiguous: None,
        },
        KaleyraSecrets {
            api_key: SecretString::from("sim-key"),
            callback_token: SecretString::from("cb-token"),
        },
    )
    .expect("provider");
    let config = DispatcherConfig {
        send_timeout: Duration::from_secs(2),
        lease: Duration::from_secs(3),
        ..DispatcherConfig::default()
    };
    let router = Router::new(
        Mode::Ordered,
        vec![Member::new(Arc::new(kaleyra), 1, None, None)],
        config.send_timeout,
    );
    let cache = Arc::new(mdc_embedded::MemoryCache::default());
    let dispatcher = Arc::new(Dispatcher::new(
        queue.clone(),
        store.clone(),
        retry.clone(),
        HashMap::from([(Channel::Sms, Arc::new(router))]),
        cache.clone(),
        config,
    ));
    let responses = Arc::new(ResponseHandler::new(queue.clone(), store.clone(), cache));
    let dispatching = tokio::spawn(dispatcher.run(shutdown.clone()));
    let handling = tokio::spawn(responses.run(1, shutdown.clone()));

    // The store takes the claim, then refuses the `sent` write for longer
    // than the lease.
    store.fail_updates(6, |t| matches!(t, Transition::Sent { .. }));
    let message = mdc_core::contract::sample_message("+919876543210");
    let id = message.id.clone();
    store
        .create(&MessageRecord::new(
            message.clone(),
            Status::Queued,
            Event::new("test", "queued"),
        ))
        .await
        .expect("create");
    queue
        .produce(
            Topic::Messages(Channel::Sms, message.priority),
            &message.to,
            message.encode(),
        )
        .await
        .expect("produce");

    let started = std::time::Instant::now();
    let record = loop {
        let record = store.get(&id).await.expect("get").expect("stored");
        if record.status == Status::Delivered && store.failed_updates() == 6 {
            break record;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not delivered: {} after {} failed writes; trail {:#?}",
            record.status,
            store.failed_updates(),
            record.events
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Past several leases, with the write failing throughout.
    assert!(started.elapsed() > Duration::from_secs(3));
    assert_eq!(record.attempts, 1, "one claim, one attempt");
    let ledger: serde_json::Value = reqwest::get(format!("http://{vendor_addr}/sim/sends"))
        .await
        .expect("ledger")
        .json()
        .await
        .expect("json");
    assert_eq!(
        ledger["accepted"][id.as_str()],
        1,
        "Kaleyra got the message once: {ledger}"
    );
    assert_eq!(ledger["calls"][id.as_str()], 1, "{ledger}");
    shutdown.cancel();
    dispatching.await.expect("join").expect("dispatcher");
    handling.await.expect("join").expect("handler");
}
