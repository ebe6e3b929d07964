//! A webhook receiver on loopback for the end-to-end tests: each path
//! answers as its [`Mode`] says, counts calls per `webhook-id`, and checks
//! every delivery with an independent Standard Webhooks implementation
//! (the `standardwebhooks` crate), not MDC's own signing code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::harness::{Server, TEST_CONFIG};

pub(crate) const WITHIN: Duration = Duration::from_secs(30);

/// How a receiver path answers.
#[derive(Clone, Copy)]
pub(crate) enum Mode {
    Ok,
    /// Fails each event this many times, then takes it.
    FailTimes(u32),
    Always(u16),
    /// Answers after this long.
    Hang(Duration),
}

#[derive(Clone)]
pub(crate) struct Received {
    pub(crate) id: String,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Vec<u8>,
    pub(crate) verified: bool,
    pub(crate) at: chrono::DateTime<chrono::Utc>,
}

pub(crate) struct Path {
    pub(crate) secret: Option<String>,
    pub(crate) mode: Mode,
    /// Calls per webhook-id.
    pub(crate) calls: HashMap<String, u32>,
    /// Deliveries answered 2xx.
    pub(crate) received: Vec<Received>,
}

#[derive(Clone, Default)]
pub(crate) struct Receiver {
    pub(crate) paths: Arc<Mutex<HashMap<String, Path>>>,
    pub(crate) port: u16,
}

impl Receiver {
    pub(crate) fn start() -> Receiver {
        let mut receiver = Receiver::default();
        let state = receiver.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .default_service(web::to(receive))
        })
        .workers(2)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("bind");
        receiver.port = server.addrs()[0].port();
        tokio::spawn(server.run());
        receiver
    }

    pub(crate) fn path(&self, name: &str, mode: Mode) -> String {
        self.paths.lock().expect("lock").insert(
            name.to_owned(),
            Path {
                secret: None,
                mode,
                calls: HashMap::new(),
                received: Vec::new(),
            },
        );
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    pub(crate) fn set_mode(&self, name: &str, mode: Mode) {
        if let Some(path) = self.paths.lock().expect("lock").get_mut(name) {
            path.mode = mode;
        }
    }

    pub(crate) fn set_secret(&self, name: &str, secret: &str) {
        if let Some(path) = self.paths.lock().expect("lock").get_mut(name) {
            path.secret = Some(secret.to_owned());
        }
    }

    pub(crate) fn received(&self, name: &str) -> Vec<Received> {
        self.paths.lock().expect("lock")[name].received.clone()
    }

    pub(crate) fn calls(&self, name: &str, id: &str) -> u32 {
        self.paths.lock().expect("lock")[name]
            .calls
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn total_calls(&self, name: &str) -> u32 {
        self.paths.lock().expect("lock")[name].calls.values().sum()
    }

    pub(crate) async fn wait(
        &self,
        name: &str,
        check: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + WITHIN;
        loop {
            let received = self.received(name);
            if check(&received) {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "{name} received {} deliveries: {:?}",
                received.len(),
                received.iter().map(kind).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub(crate) fn kind(received: &Received) -> String {
    let event: Value = serde_json::from_slice(&received.body).expect("json");
    format!(
        "{} {}",
        event["message_id"].as_str().unwrap_or("-"),
        event["type"].as_str().unwrap_or("?")
    )
}

pub(crate) fn verify(secret: &str, headers: &http::HeaderMap, body: &[u8]) -> bool {
    standardwebhooks::Webhook::new(secret)
        .expect("secret")
        .verify(body, headers)
        .is_ok()
}

pub(crate) async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Receiver>,
) -> HttpResponse {
    let name = req.path().trim_start_matches('/').to_owned();
    let mut headers = http::HeaderMap::new();
    for (key, value) in req.headers() {
        if let (Ok(key), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_str().as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.insert(key, value);
        }
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (mode, calls, secret) = {
        let mut paths = state.paths.lock().expect("lock");
        let Some(path) = paths.get_mut(&name) else {
            return HttpResponse::NotFound().finish();
        };
        let calls = path.calls.entry(id.clone()).or_insert(0);
        *calls += 1;
        (path.mode, *calls, path.secret.clone())
    };
    let answer = match mode {
        Mode::Ok => 200,
        Mode::FailTimes(n) if calls <= n => 500,
        Mode::FailTimes(_) => 200,
        Mode::Always(status) => status,
        Mode::Hang(wait) => {
            tokio::time::sleep(wait).await;
            200
        }
    };
    if answer == 200 {
        let verified = secret.is_some_and(|s| verify(&s, &headers, &body));
        let mut paths = state.paths.lock().expect("lock");
        if let Some(path) = paths.get_mut(&name) {
            path.received.push(Received {
                id,
                headers,
                body: body.to_vec(),
                verified,
                at: chrono::Utc::now(),
            });
        }
    }
    HttpResponse::build(actix_web::http::StatusCode::from_u16(answer).expect("status"))
        .body("thanks")
}

/// Creates an endpoint for a receiver path and hands its secret to it.
pub(crate) async fn subscribe(
    server: &Server,
    receiver: &Receiver,
    name: &str,
    mode: Mode,
    filters: Value,
) -> String {
    let url = receiver.path(name, mode);
    let mut body = json!({ "url": url, "description": name });
    if let (Some(body), Some(filters)) = (body.as_object_mut(), filters.as_object()) {
        body.extend(filters.clone());
    }
    let (status, created) = server.post_to("/v1/webhooks", body).await;
    assert_eq!(status, 201, "{created}");
    receiver.set_secret(name, created["secret"].as_str().expect("secret"));
    created["id"].as_str().expect("id").to_owned()
}

pub(crate) fn config(extra: &str) -> String {
    format!("{TEST_CONFIG}\n[webhooks]\nallow_private_urls = true\n{extra}\n[client.deadlines]\nmarketing = \"1s\"\n")
}
