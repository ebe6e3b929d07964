//! A simulator of Kaleyra's v1 SMS API, for development, tests and
//! benchmarks (`mdc simulate kaleyra`): a real HTTP server that checks the
//! `api-key`, answers with Kaleyra-shaped ids, calls each message's callback
//! URL after a delay with an outcome drawn from a configurable mix, serves
//! the status pull API, and can inject latency, 5xx, 429 and dropped
//! connections. It counts sends per `ref` so tests can prove nothing was sent
//! twice (`GET /sim/sends`); `PUT /sim/faults` changes the faults at run time.
//!
//! The magic numbers of the in-process simulators apply too:
//! `+14155550190` is refused (400), `+14155550191` is reported undelivered,
//! `+1415555018N` gets 503 for its first N sends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use mdc_core::Channel;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::Magic;
use mdc_response_listener::kaleyra::callback::CallbackReport;

/// Injected faults, each a percentage of send requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added before answering a send.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    pub error_percent: u8,
    pub throttle_percent: u8,
    /// The send is accepted, then the connection is cut before the answer.
    pub drop_percent: u8,
}

/// Relative weights of the reported outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutcomeMix {
    pub delivered: u32,
    pub failed: u32,
    pub undelivered: u32,
}

impl Default for OutcomeMix {
    fn default() -> Self {
        Self {
            delivered: 100,
            failed: 0,
            undelivered: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimulatorSettings {
    pub api_key: String,
    /// When the outcome is decided (and, with `callbacks`, reported).
    #[serde(with = "humantime_serde")]
    pub callback_delay: Duration,
    pub outcomes: OutcomeMix,
    pub faults: Faults,
    /// Whether outcomes are reported to the callback URL; without, only the
    /// status API tells them.
    #[serde(default = "yes")]
    pub callbacks: bool,
}

fn yes() -> bool {
    true
}

impl Default for SimulatorSettings {
    fn default() -> Self {
        Self {
            api_key: "sim-key".into(),
            callback_delay: Duration::from_millis(100),
            outcomes: OutcomeMix::default(),
            faults: Faults::default(),
            callbacks: true,
        }
    }
}

struct Sent {
    status: &'static str,
    reference: Option<String>,
    recipient: String,
}

struct State {
    settings: Mutex<SimulatorSettings>,
    /// Accepted sends per `ref`.
    sends: Mutex<HashMap<String, u32>>,
    /// Send calls per `ref`, refused ones included.
    calls: Mutex<HashMap<String, u32>>,
    messages: Mutex<HashMap<String, Sent>>,
    http: reqwest::Client,
}

/// Starts the simulator on `listen`; returns the server (to await or stop)
/// and the address it bound.
pub fn start(
    settings: SimulatorSettings,
    listen: SocketAddr,
) -> std::io::Result<(Server, SocketAddr)> {
    let state = web::Data::new(State {
        settings: Mutex::new(settings),
        sends: Mutex::new(HashMap::new()),
        calls: Mutex::new(HashMap::new()),
        messages: Mutex::new(HashMap::new()),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/v1/{sid}/messages", web::post().to(send))
            .route("/v1/{sid}/messages/status", web::get().to(status))
            .route("/sim/sends", web::get().to(sends))
            .route("/sim/faults", web::put().to(set_faults))
    })
    .workers(1)
    .disable_signals()
    .bind(listen)?;
    let bound = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("no address bound"))?;
    Ok((server.run(), bound))
}

fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": { "code": code, "message": message } }))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn authorised(req: &HttpRequest, state: &State) -> bool {
    let expected = lock(&state.settings).api_key.clone();
    req.headers().get("api-key").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

/// Form or JSON: Kaleyra takes both.
/// A send request the simulator cannot read, answered with a 400.
#[derive(Debug, thiserror::Error)]
enum BadRequest {
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("body must be an object")]
    NotAnObject,
}

fn params(req: &HttpRequest, body: &[u8]) -> Result<HashMap<String, String>, BadRequest> {
    let json = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if json {
        let value: Value = serde_json::from_slice(body)?;
        let object = value.as_object().ok_or(BadRequest::NotAnObject)?;
        Ok(object
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect())
    } else {
        Ok(url::form_urlencoded::parse(body).into_owned().collect())
    }
}

fn draw(percent: u8) -> bool {
    percent > 0 && rand::rng().random_range(0..100) < u32::from(percent)
}

async fn send(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    if !authorised(&req, &state) {
        return error(StatusCode::UNAUTHORIZED, "E401", "invalid api-key");
    }
    let params = match params(&req, &body) {
        Ok(params) => params,
        Err(e) => return error(StatusCode::BAD_REQUEST, "E400", &e.to_string()),
    };
    let (Some(to), Some(_)) = (params.get("to"), params.get("body")) else {
        return error(StatusCode::BAD_REQUEST, "E400", "to and body are required");
    };
    let settings = lock(&state.settings).clone();
    if !settings.faults.latency.is_zero() {
        tokio::time::sleep(settings.faults.latency).await;
    }
    if draw(settings.faults.throttle_percent) {
        return HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", "1"))
            .json(json!({ "error": { "code": "E429", "message": "rate limit exceeded" } }));
    }
    if draw(settings.faults.error_percent) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "E503", "simulated outage");
    }
    let reference = params.get("ref").cloned();
    let calls = {
        let mut calls = lock(&state.calls);
        let n = calls
            .entry(reference.clone().unwrap_or_default())
            .or_insert(0);
        *n += 1;
        *n
    };
    let magic = Magic::of(Channel::Sms, to);
    match magic {
        Magic::Reject => {
            return error(
                StatusCode::BAD_REQUEST,
                "E_INVALID_NUMBER",
                "invalid recipient",
            )
        }
        Magic::Transient(n) if calls <= n => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "E503", "simulated outage")
        }
        _ => {}
    }
    let message_id = format!("{}:1", uuid_like());
    let outcome = if magic == Magic::Bounce {
        "UNDELIVERED"
    } else {
        pick(&settings.outcomes)
    };
    if let Some(reference) = &reference {
        *lock(&state.sends).entry(reference.clone()).or_insert(0) += 1;
    }
    lock(&state.messages).insert(
        message_id.clone(),
        Sent {
            status: "SENT",
            reference: reference.clone(),
            recipient: to.clone(),
        },
    );
    if let Some(callback) = params.get("callback") {
        schedule_callback(
            state.clone(),
            callback,
            message_id.clone(),
            outcome,
            settings.callback_delay,
            settings.callbacks,
        );
    }
    let answer = json!({
        "id": message_id.split(':').next(),
        "method": "sms",
        "total_count": 1,
        "data": [{ "message_id": message_id, "recipient": to.trim_start_matches('+') }],
        "sender": params.get("sender"),
        "type": params.get("type"),
        "unicode": params.get("unicode").map_or(0, |u| u.parse::<u8>().unwrap_or(0)),
        "ref": reference,
    });
    if draw(settings.faults.drop_percent) {
        // Accepted, but the connection dies before the answer arrives.
        let broken =
            futures::stream::once(async { Err::<web::Bytes, _>(std::io::Error::other("dropped")) });
        return HttpResponse::Ok()
            .content_type("application/json")
            .streaming(broken);
    }
    HttpResponse::Accepted().json(answer)
}

fn uuid_like() -> String {
    let mut rng = rand::rng();
    format!(
        "{:08x}-{:04x}-{:04x}-{:012x}",
        rng.random::<u32>(),
        rng.random::<u16>(),
        rng.random::<u16>(),
        rng.random::<u64>() & 0xffff_ffff_ffff
    )
}

fn pick(mix: &OutcomeMix) -> &'static str {
    let total = mix.delivered + mix.failed + mix.undelivered;
    if total == 0 {
        return "DELIVERED";
    }
    let n = rand::rng().random_range(0..total);
    if n < mix.delivered {
        "DELIVERED"
    } else if n < mix.delivered + mix.failed {
        "FAILED"
    } else {
        "UNDELIVERED"
    }
}

fn schedule_callback(
    state: web::Data<State>,
    callback: &str,
    message_id: String,
    outcome: &'static str,
    delay: Duration,
    call: bool,
) {
    let callback: Value =
        serde_json::from_str(callback).unwrap_or_else(|_| json!({ "url": callback }));
    let Some(url) = callback["url"].as_str().map(str::to_owned) else {
        return;
    };
    let get = callback["method"]
        .as_str()
        .is_some_and(|m| m.eq_ignore_ascii_case("GET"));
    actix_web::rt::spawn(async move {
        tokio::time::sleep(delay).await;
        let report = {
            let mut messages = lock(&state.messages);
            let Some(sent) = messages.get_mut(&message_id) else {
                return;
            };
            sent.status = outcome;
            CallbackReport {
                message_id: message_id.clone(),
                status: outcome.to_owned(),
                reference: sent.reference.clone(),
                error: (outcome != "DELIVERED").then(|| "simulated delivery failure".to_owned()),
                recipient: Some(sent.recipient.clone()),
            }
        };
        if !call {
            return;
        }
        // Like the vendor: a few tries, then give up.
        for attempt in 0..5u32 {
            let request = if get {
                state.http.get(&url).query(&report)
            } else {
                state.http.post(&url).json(&report)
            };
            match request.send().await {
                Ok(response) if response.status().is_success() => return,
                _ => tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await,
            }
        }
    });
}

#[derive(Deserialize)]
struct StatusQuery {
    message_ids: String,
}

async fn status(
    req: HttpRequest,
    query: web::Query<StatusQuery>,
    state: web::Data<State>,
) -> HttpResponse {
    if !authorised(&req, &state) {
        return error(StatusCode::UNAUTHORIZED, "E401", "invalid api-key");
    }
    let messages = lock(&state.messages);
    let data: Vec<Value> = query
        .message_ids
        .split(',')
        .map(|id| match messages.get(id) {
            Some(sent) => json!({ "message_id": id, "status": title_case(sent.status), "ref": sent.reference }),
            None => json!({ "message_id": id, "status": "NotFound" }),
        })
        .collect();
    HttpResponse::Ok().json(json!({ "data": data }))
}

/// `UNDELIVERED` → `UnDelivered`, as the status API spells them.
fn title_case(status: &str) -> &'static str {
    match status {
        "DELIVERED" => "Delivered",
        "FAILED" => "Failed",
        "UNDELIVERED" => "UnDelivered",
        _ => "Sent",
    }
}

async fn sends(state: web::Data<State>) -> HttpResponse {
    let sends = lock(&state.sends).clone();
    let calls = lock(&state.calls).clone();
    HttpResponse::Ok().json(json!({ "accepted": sends, "calls": calls }))
}

async fn set_faults(faults: web::Json<Faults>, state: web::Data<State>) -> HttpResponse {
    lock(&state.settings).faults = faults.into_inner();
    HttpResponse::NoContent().finish()
}
