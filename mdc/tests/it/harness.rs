use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Retries come quickly in tests; everything else is the default config.
pub const TEST_CONFIG: &str = r#"
[dispatcher]
retry_schedule = ["200ms", "400ms", "800ms"]
send_timeout = "2s"
lease = "3s"

[simulator]
report_delay = "20ms"
"#;

pub struct Server {
    pub child: Option<Child>,
    pub base: String,
    pub dir: PathBuf,
    pub http: reqwest::Client,
    /// Recipients and bodies this test submitted: none may reach the log.
    pub private: std::sync::Mutex<Vec<String>>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Waits until a test server started on `port` accepts connections.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Server {
    pub async fn start(dir: &Path) -> Server {
        Self::start_with(dir, TEST_CONFIG).await
    }

    pub async fn start_with(dir: &Path, config: &str) -> Server {
        Self::start_on(dir, config, free_port(), &[]).await
    }

    /// On a chosen port (for configs that name it) with extra environment.
    pub async fn start_on(dir: &Path, config: &str, port: u16, env: &[(&str, &str)]) -> Server {
        let config_path = dir.join("mdc.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("mdc.log"))
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_mdc"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(&config_path)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mdc");
        let server = Server {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            dir: dir.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            private: std::sync::Mutex::new(Vec::new()),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = server
                .http
                .get(format!("{}/healthz", server.base))
                .send()
                .await
            {
                if r.status().is_success() {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "mdc did not come up; log:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Notes the recipient and bodies of a submitted message, so the log
    /// can be checked for them when the server is dropped.
    pub fn remember_private(&self, body: &[u8]) {
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let mut private = self.private.lock().unwrap_or_else(|p| p.into_inner());
        for key in ["to", "body", "html", "subject"] {
            if let Some(text) = fields.get(key).and_then(Value::as_str) {
                // Short texts ("Thanks") could appear in a log by chance.
                if text.len() >= 8 {
                    private.push(text.to_owned());
                }
            }
        }
    }

    /// Panics if the log holds a recipient or body this test submitted, or
    /// a terminal's colour codes (it is written to a file).
    pub fn assert_log_has_no_private_data(&self) {
        let log = self.log();
        if let Some(line) = log.lines().find(|l| l.contains('\x1b')) {
            panic!("the log, written to a file, holds terminal codes: {line:?}");
        }
        let private = self.private.lock().unwrap_or_else(|p| p.into_inner());
        for text in private.iter() {
            if let Some(line) = log.lines().find(|l| l.contains(text.as_str())) {
                panic!("the log holds {text:?}: {line}");
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mdc.log")).unwrap_or_default()
    }

    pub async fn post(&self, body: &Value) -> (u16, Value) {
        self.post_raw(body.to_string().into_bytes()).await
    }

    pub async fn post_raw(&self, body: Vec<u8>) -> (u16, Value) {
        self.remember_private(&body);
        let response = self
            .http
            .post(format!("{}/v1/messages", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn submit(&self, body: &Value) -> String {
        let (status, answer) = self.post(body).await;
        assert_eq!(status, 202, "{answer}");
        answer["id"].as_str().expect("id").to_owned()
    }

    /// Any call to the server's API: the status and the JSON answer (null
    /// when there is none).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// A JSON body posted to `path` (any but `/v1/messages`: [`Server::post`]).
    pub async fn post_to(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::DELETE, path, None).await
    }

    pub async fn get_text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text")
    }

    pub async fn message(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/messages/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls until the message has `status`, and returns it.
    pub async fn wait_status(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let message = self.message(id).await;
            if message["status"] == status {
                return message;
            }
            assert!(
                Instant::now() < deadline,
                "{id} is not {status}: {message:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until the message reaches a terminal status, and returns it.
    pub async fn wait_terminal(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let message = self.message(id).await;
            let status = message["status"].as_str().unwrap_or_default();
            if ["delivered", "failed", "expired", "rejected", "cancelled"].contains(&status) {
                return message;
            }
            assert!(
                Instant::now() < deadline,
                "{id} stuck in {status}: {message:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until the message is `sent`, and returns the vendor's id for it.
    pub async fn wait_sent(&self, id: &str, within: Duration) -> String {
        let message = self.wait_status(id, "sent", within).await;
        message["provider_message_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no vendor id: {message:#}"))
            .to_owned()
    }

    /// Submits until the service is back: 503 meanwhile, then 202; returns the id.
    pub async fn submit_when_back(&self, body: &Value, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (status, answer) = self.post(body).await;
            if status == 202 {
                return answer["id"].as_str().expect("id").to_owned();
            }
            assert_eq!(status, 503, "{answer}");
            assert!(
                Instant::now() < deadline,
                "MDC did not recover: {answer}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls until the message's trail mentions `text`, and returns it.
    pub async fn wait_event(&self, id: &str, text: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let message = self.message(id).await;
            // Details and errors only: a timestamp's digits may hold `text`.
            let mentioned = message["events"].as_array().is_some_and(|events| {
                events.iter().any(|e| {
                    ["details", "error"]
                        .iter()
                        .any(|field| e[field].as_str().is_some_and(|t| t.contains(text)))
                })
            });
            if mentioned {
                return message;
            }
            assert!(
                Instant::now() < deadline,
                "no event of {id} mentions {text:?}: {message:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Accepted sends per message, as the simulated vendors recorded them:
    /// every page of the ledger, by message id.
    pub async fn vendor_sends(&self) -> Value {
        let mut all = serde_json::Map::new();
        let mut path = "/v1/simulator/sends?limit=2".to_owned();
        loop {
            let (status, page) = self.get(&path).await;
            assert_eq!(status, 200, "{page:#}");
            let sends = page["sends"].as_object().expect("sends by id");
            assert!(sends.len() <= 2, "{page:#}");
            for (id, entry) in sends {
                assert!(
                    all.insert(id.clone(), entry.clone()).is_none(),
                    "{id} twice"
                );
            }
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("/v1/simulator/sends?limit=2&cursor={cursor}"),
                None => return Value::Object(all),
            }
        }
    }

    pub fn signal(&mut self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns whether it exited cleanly.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mdc did not exit within {within:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Every end-to-end test checks its server's log for the
        // recipients and bodies it used, and for colour codes.
        if !std::thread::panicking() {
            self.assert_log_has_no_private_data();
        }
    }
}

pub fn sms(to: &str) -> Value {
    json!({"channel": "sms", "to": to, "body": "Your code is 123456", "priority": "critical", "type": "otp"})
}

pub fn email(to: &str) -> Value {
    json!({"channel": "email", "to": to, "from": "noreply@example.com", "subject": "Receipt", "body": "Thanks", "html": "<p>Thanks</p>"})
}

pub fn push(to: &str) -> Value {
    json!({"channel": "push", "to": to, "title": "Shipped", "body": "Your order is on its way", "data": {"order": 42}})
}

/// A `mdc simulate kaleyra` process.
pub struct KaleyraSim {
    child: Child,
    pub base: String,
}

impl KaleyraSim {
    pub async fn start(args: &[&str]) -> KaleyraSim {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_mdc"))
            .args([
                "simulate",
                "kaleyra",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--api-key",
                "test-key",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn simulator");
        let sim = KaleyraSim {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http
            .get(format!("{}/sim/sends", sim.base))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "Kaleyra simulator did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sim
    }

    /// `{"accepted": {ref: n}, "calls": {ref: n}}`
    pub async fn sends(&self) -> Value {
        reqwest::get(format!("{}/sim/sends", self.base))
            .await
            .expect("sends")
            .json()
            .await
            .expect("json")
    }

    pub async fn set_faults(&self, faults: Value) {
        let response = reqwest::Client::new()
            .put(format!("{}/sim/faults", self.base))
            .json(&faults)
            .send()
            .await
            .expect("faults");
        assert!(response.status().is_success());
    }
}

impl Drop for KaleyraSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `[providers.NAME]` table for a Kaleyra simulator, calling back to the
/// MDC server on `mdc_port`.
pub fn kaleyra_provider(name: &str, sim: &KaleyraSim, mdc_port: u16) -> String {
    format!(
        r#"
[providers.{name}]
kind = "kaleyra"
base_url = "{base}"
sid = "HXSIM01"
api_key_env = "MDC_TEST_KALEYRA_KEY"
callback_url = "http://127.0.0.1:{mdc_port}/v1/callbacks/kaleyra/{name}"
callback_token_env = "MDC_TEST_KALEYRA_TOKEN"
timeout = "2s"
"#,
        base = sim.base
    )
}

pub const KALEYRA_ENV: &[(&str, &str)] = &[
    ("MDC_TEST_KALEYRA_KEY", "test-key"),
    ("MDC_TEST_KALEYRA_TOKEN", "callback-secret"),
];

/// The dispatcher's `sent` event. A delivery report can overtake it (the
/// status then stays `delivered` and the event is kept without a status).
pub fn sent_event(message: &Value) -> Option<&Value> {
    message["events"].as_array()?.iter().find(|e| {
        let details = e["details"].as_str().unwrap_or_default();
        e["status"] == "sent"
            || (e["component"] == "dispatcher"
                && e["status"].is_null()
                && details.contains("(ignored: message is ")
                && (details.starts_with("sent") || details.starts_with("vendor already had it")))
    })
}

/// When the message was sent, from its `sent` event.
pub fn sent_at(message: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    event_time(sent_event(message)?)
}

/// When the send the vendor took began, for messages whose dispatcher may
/// have been killed: the `sent` event's time, or, for a send the vendor took
/// just before its dispatcher died and settled by the vendor's report alone
/// (no `sent` event is ever written then), the start of the last attempt
/// before the report.
pub fn sent_or_attempted_at(message: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Some(event) = sent_event(message) {
        return event_time(event);
    }
    let events = message["events"].as_array()?;
    let reported = events.iter().position(|e| e["status"] == "delivered")?;
    let attempt = events[..reported]
        .iter()
        .rev()
        .find(|e| e["status"] == "sending")?;
    event_time(attempt)
}

fn event_time(event: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    let at = chrono::DateTime::parse_from_rfc3339(event["at"].as_str()?).ok()?;
    Some(at.with_timezone(&chrono::Utc))
}
