//! Which outcome events are written, and that none is delivered twice
//! across a clean stop: end to end with the webhook receiver.

use serde_json::json;

use crate::harness::{sms, Server};
use crate::receiver::{config, kind, subscribe, Mode, Received, Receiver, WITHIN};
use std::time::Instant;

/// On the embedded queue, where webhook delivery is the outcomes' only
/// reader, events no endpoint wants are not written, also after a pause;
/// an endpoint created later gets every event from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_no_endpoint_wants_are_unwritten_until_one_does() {
    use crate::operations::{scrape, sum};
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &config("")).await;
    let unwritten =
        |scrape: prometheus_parse::Scrape| sum(&scrape, "mdc_outcome_events_unwritten_total", &[]);
    // Every event is written until webhook delivery has read the endpoints
    // (at its first event); from then on, with none, none is.
    let deadline = Instant::now() + WITHIN;
    loop {
        let id = server.submit(&sms("+14155550100")).await;
        server.wait_status(&id, "delivered", WITHIN).await;
        if unwritten(scrape(&server).await) > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every outcome event was written, with no endpoint to want it"
        );
    }

    // The endpoints are read every half second, not only at events: after
    // a pause longer than a read stays fresh, the next message's events
    // are left unwritten too (once the endpoints were read only at events,
    // so the first event after a pause was written).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let before = unwritten(scrape(&server).await);
    let id = server.submit(&sms("+14155550100")).await;
    server.wait_status(&id, "delivered", WITHIN).await;
    let deadline = Instant::now() + WITHIN;
    while unwritten(scrape(&server).await) < before + 2.0 {
        assert!(
            Instant::now() < deadline,
            "an event after a pause was written, with no endpoint to want it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    subscribe(&server, &receiver, "all", Mode::Ok, json!({})).await;
    let before = unwritten(scrape(&server).await);
    let id = server.submit(&sms("+14155550100")).await;
    receiver
        .wait("all", |r| {
            ["sent", "delivered"]
                .iter()
                .all(|s| r.iter().any(|d| kind(d) == format!("{id} message.{s}")))
        })
        .await;
    assert_eq!(
        unwritten(scrape(&server).await),
        before,
        "an endpoint that wants every event leaves none unwritten"
    );
}

/// A clean stop keeps every acknowledgement: after SIGTERM and a restart,
/// no event delivered before is delivered again. (The queue's
/// acknowledgements are made durable when its consumers close, and when
/// its database closes; a handler and a queue holding each other kept it
/// from closing, and an HTTP worker thread still holding the queue as the
/// process exited did, now and then, under load.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_delivers_nothing_again() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_with(dir.path(), &config("")).await;
    subscribe(&server, &receiver, "all", Mode::Ok, json!({})).await;
    let first = server.submit(&sms("+14155550100")).await;
    let delivered = |id: String| {
        move |r: &[Received]| {
            r.iter()
                .any(|d| kind(d) == format!("{id} message.delivered"))
        }
    };
    receiver.wait("all", delivered(first.clone())).await;
    server.signal("TERM");
    assert!(server.wait_exit(WITHIN), "a clean exit");

    // Records left unacknowledged are redelivered in the first fetch after
    // the start, before a new message can reach `delivered`.
    let server = Server::start_with(dir.path(), &config("")).await;
    let second = server.submit(&sms("+14155550100")).await;
    receiver.wait("all", delivered(second)).await;
    let before: Vec<Received> = receiver
        .received("all")
        .into_iter()
        .filter(|d| kind(d).starts_with(&first))
        .collect();
    assert_eq!(before.len(), 2, "sent and delivered once each");
    for delivery in &before {
        assert_eq!(
            receiver.calls("all", &delivery.id),
            1,
            "{} delivered again after a clean stop",
            kind(delivery)
        );
    }
}
