//! `kill -9` under load: every accepted message still reaches a terminal
//! status after a restart, and none is sent twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::harness::{push, sms, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_and_sends_nothing_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path()).await;
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let http = server.http.clone();
    let base = server.base.clone();

    // Eight submitters, each keeping one request in flight, until the kill.
    let mut submitters = Vec::new();
    for worker in 0..8 {
        let accepted = accepted.clone();
        let http = http.clone();
        let base = base.clone();
        submitters.push(tokio::spawn(async move {
            for i in 0.. {
                // A mix: plain deliveries, retries, ambiguous timeouts.
                let body = match i % 4 {
                    0 => push(&format!("sim-transient-1-w{worker}-{i}")),
                    1 => sms("+14155550192"),
                    _ => sms(&format!("+1415555{:04}", 1000 + (worker * 1000 + i) % 8000)),
                };
                let response = http
                    .post(format!("{base}/v1/messages"))
                    .json(&body)
                    .send()
                    .await;
                let Ok(response) = response else { break };
                if response.status().as_u16() != 202 {
                    break;
                }
                let Ok(answer) = response.json::<serde_json::Value>().await else {
                    break;
                };
                accepted
                    .lock()
                    .await
                    .push(answer["id"].as_str().expect("id").to_owned());
            }
        }));
    }
    // Let load build until a few hundred are accepted, some still in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while accepted.lock().await.len() < 400 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "load did not build up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.signal("KILL");
    assert!(
        !server.wait_exit(Duration::from_secs(10)),
        "SIGKILL is not a clean exit"
    );
    for submitter in submitters {
        submitter.await.expect("submitter");
    }
    let accepted: Vec<String> = accepted.lock().await.clone();
    let unique: HashSet<&String> = accepted.iter().collect();
    assert_eq!(unique.len(), accepted.len());

    let server = Server::start(dir.path()).await;
    let mut outcomes = std::collections::HashMap::new();
    for id in &accepted {
        let message = server.wait_terminal(id, Duration::from_secs(60)).await;
        *outcomes
            .entry(message["status"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(
        outcomes.get("delivered"),
        Some(&accepted.len()),
        "{outcomes:?}"
    );

    let sends = server.vendor_sends().await;
    let sends = sends.as_object().expect("map");
    for id in &accepted {
        assert_eq!(
            sends[id]["accepted"], 1,
            "{id} sent {} times",
            sends[id]["accepted"]
        );
    }
    // Nothing the vendor accepted was sent twice, accepted or not by MDC.
    assert!(sends
        .values()
        .all(|s| s["accepted"].as_u64().unwrap_or(0) <= 1));
}
