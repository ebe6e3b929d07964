//! API keys, scopes and per-service isolation, against the binary.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{email, free_port, Server, TEST_CONFIG};

/// Webhook URLs on loopback are allowed (nothing is delivered to them here).
fn config() -> String {
    format!("{TEST_CONFIG}\n[webhooks]\nallow_private_urls = true\n")
}

/// `mdc keys create --direct` on the data directory: (id, secret).
pub(crate) fn create_key_direct(dir: &Path, service: &str, scopes: &str) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mdc"))
        .args(["keys", "create", "--direct", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--service", service, "--scopes", scopes])
        .output()
        .expect("run mdc keys");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let mut lines = stdout.lines();
    let id = lines.next().expect("id").to_owned();
    let secret = lines.next().expect("secret").to_owned();
    assert!(id.starts_with("key_"), "{stdout}");
    assert!(secret.starts_with("mdc_sk_"), "{stdout}");
    (id, secret)
}

/// One request with an optional key: (status, body, WWW-Authenticate).
pub(crate) async fn call(
    server: &Server,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, Option<String>) {
    let url = format!("{}{path}", server.base);
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = server.http.request(method, &url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        server.remember_private(body.to_string().as_bytes());
        request = request.json(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        challenge,
    )
}

/// Creates a key through the API with `admin`.
pub(crate) async fn create_key(
    server: &Server,
    admin: &str,
    service: &str,
    scopes: &[&str],
) -> String {
    let (status, body, _) = call(
        server,
        "POST",
        "/v1/keys",
        Some(admin),
        Some(&json!({"service": service, "scopes": scopes})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(body.get("secret_hash").is_none(), "{body}");
    body["secret"].as_str().expect("secret").to_owned()
}

async fn submit_as(server: &Server, key: &str, body: &Value) -> (u16, Value) {
    let (status, body, _) = call(server, "POST", "/v1/messages", Some(key), Some(body)).await;
    (status, body)
}

#[tokio::test]
async fn every_endpoint_wants_a_key_with_its_scope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, admin) = create_key_direct(dir.path(), "ops", "admin");
    let server = Server::start_with(dir.path(), &config()).await;
    let send = create_key(&server, &admin, "billing", &["send"]).await;
    let read = create_key(&server, &admin, "billing", &["read"]).await;
    let (status, sent) = submit_as(&server, &send, &email("alice@example.com")).await;
    assert_eq!(status, 202, "{sent}");
    let id = sent["id"].as_str().expect("id").to_owned();
    let (status, hook, _) = call(
        &server,
        "POST",
        "/v1/webhooks",
        Some(&admin),
        Some(&json!({"url": "https://127.0.0.1:9/mdc"})),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let hook = hook["id"].as_str().expect("id").to_owned();

    // (method, path, body, the scope it wants)
    let device = json!({"user_id": "u1", "platform": "fcm", "token": "tok-every-endpoint-0001"});
    let suppression = json!({"channel": "sms", "to": "+14155550177"});
    let webhook = json!({"url": "https://127.0.0.1:9/other"});
    let key_body = json!({"service": "x", "scopes": ["read"]});
    let message = email("bob@example.com");
    let messages = json!({"messages": [email("bob@example.com")]});
    let endpoints: Vec<(&str, String, Option<&Value>, &str)> = vec![
        ("POST", "/v1/messages".into(), Some(&message), "send"),
        ("POST", "/v1/messages/batch".into(), Some(&messages), "send"),
        ("GET", "/v1/messages".into(), None, "read"),
        ("GET", format!("/v1/messages/{id}"), None, "read"),
        ("POST", format!("/v1/messages/{id}/cancel"), None, "send"),
        ("GET", "/v1/stats".into(), None, "admin"),
        ("POST", "/v1/devices".into(), Some(&device), "send"),
        ("GET", "/v1/devices/dev_unknown".into(), None, "read"),
        ("DELETE", "/v1/devices/dev_unknown".into(), None, "send"),
        ("GET", "/v1/suppressions".into(), None, "admin"),
        (
            "POST",
            "/v1/suppressions".into(),
            Some(&suppression),
            "admin",
        ),
        (
            "DELETE",
            "/v1/suppressions/sms/+14155550177".into(),
            None,
            "admin",
        ),
        ("GET", "/v1/simulator/sends".into(), None, "admin"),
        ("POST", "/v1/webhooks".into(), Some(&webhook), "send"),
        ("GET", "/v1/webhooks".into(), None, "read"),
        ("GET", format!("/v1/webhooks/{hook}"), None, "read"),
        (
            "PATCH",
            format!("/v1/webhooks/{hook}"),
            Some(&webhook),
            "send",
        ),
        (
            "POST",
            format!("/v1/webhooks/{hook}/rotate-secret"),
            None,
            "send",
        ),
        ("GET", format!("/v1/webhooks/{hook}/attempts"), None, "read"),
        (
            "POST",
            format!("/v1/webhooks/{hook}/recover?since=2026-01-01T00:00:00Z"),
            None,
            "send",
        ),
        ("DELETE", format!("/v1/webhooks/{hook}"), None, "send"),
        ("GET", "/v1/keys".into(), None, "admin"),
        ("POST", "/v1/keys".into(), Some(&key_body), "admin"),
        ("DELETE", "/v1/keys/key_unknown".into(), None, "admin"),
        (
            "POST",
            "/v1/parked-reports/redrive?limit=1".into(),
            None,
            "admin",
        ),
    ];
    for (method, path, body, scope) in &endpoints {
        let what = format!("{method} {path}");
        let (status, answer, challenge) = call(&server, method, path, None, *body).await;
        assert_eq!(status, 401, "{what} without a key: {answer}");
        assert_eq!(answer["error"]["rule"], "unauthenticated", "{what}");
        assert_eq!(challenge.as_deref(), Some("Bearer"), "{what}");
        let (status, answer, _) =
            call(&server, method, path, Some("mdc_sk_not-a-key"), *body).await;
        assert_eq!(status, 401, "{what} with a malformed key: {answer}");
        let lacking = match *scope {
            "send" => &read,
            _ => &send,
        };
        let (status, answer, _) = call(&server, method, path, Some(lacking), *body).await;
        assert_eq!(status, 403, "{what} without {scope}: {answer}");
        assert_eq!(answer["error"]["rule"], "scope", "{what}");
        let right = match *scope {
            "send" => &send,
            "read" => &read,
            _ => &admin,
        };
        let (status, answer, _) = call(&server, method, path, Some(right), *body).await;
        assert!(
            ![401, 403].contains(&status) && status < 500,
            "{what} with {scope}: {status} {answer}"
        );
    }
    // Liveness, readiness and vendor callbacks need no key.
    let (status, _, _) = call(&server, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    let log = server.log();
    assert!(
        !log.contains(&admin) && !log.contains(&send),
        "a key was logged"
    );
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, admin) = create_key_direct(dir.path(), "ops", "admin");
    let server = Server::start(dir.path()).await;
    let (status, created, _) = call(
        &server,
        "POST",
        "/v1/keys",
        Some(&admin),
        Some(&json!({"service": "billing", "scopes": ["send", "read"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (id, key) = (
        created["id"].as_str().expect("id"),
        created["secret"].as_str().expect("secret"),
    );
    let (status, _) = submit_as(&server, key, &email("carol@example.com")).await;
    assert_eq!(status, 202);
    let (status, _, _) = call(
        &server,
        "DELETE",
        &format!("/v1/keys/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, answer) = submit_as(&server, key, &email("carol@example.com")).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked"),
        "{answer}"
    );
    let (status, listed, _) = call(&server, "GET", "/v1/keys", Some(&admin), None).await;
    assert_eq!(status, 200);
    let listed = listed["keys"].as_array().expect("keys");
    assert!(listed
        .iter()
        .all(|k| k.get("secret").is_none() && k.get("secret_hash").is_none()));
    assert!(listed
        .iter()
        .any(|k| k["id"] == id && k["revoked_at"].is_string()));
}

#[tokio::test]
async fn services_are_isolated_from_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, admin) = create_key_direct(dir.path(), "ops", "admin");
    let server = Server::start_with(dir.path(), &config()).await;
    let billing = create_key(&server, &admin, "billing", &["send", "read:pii"]).await;
    let shipping = create_key(&server, &admin, "shipping", &["send", "read:pii"]).await;

    // The same idempotency key: one message per service.
    let mut order = email("dana@example.com");
    order["idempotency_key"] = json!("order-1001");
    let (status, first) = submit_as(&server, &billing, &order).await;
    assert_eq!(status, 202, "{first}");
    let (status, theirs) = submit_as(&server, &shipping, &order).await;
    assert_eq!(status, 202, "{theirs}");
    assert_ne!(first["id"], theirs["id"]);
    let (status, again) = submit_as(&server, &billing, &order).await;
    assert_eq!(status, 202);
    assert_eq!(
        again["id"], first["id"],
        "the same request is the first message"
    );
    let mut changed = order.clone();
    changed["subject"] = json!("Another receipt");
    let (status, conflict) = submit_as(&server, &billing, &changed).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["field"], "idempotency_key");
    assert_eq!(conflict["error"]["rule"], "reused");

    // Reading: only one's own; admin reads all.
    let billing_id = first["id"].as_str().expect("id");
    let (status, _, _) = call(
        &server,
        "GET",
        &format!("/v1/messages/{billing_id}"),
        Some(&shipping),
        None,
    )
    .await;
    assert_eq!(status, 404, "shipping reads billing's message");
    let (status, mine, _) = call(
        &server,
        "GET",
        &format!("/v1/messages/{billing_id}"),
        Some(&billing),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(mine["service"], "billing");
    let (status, _, _) = call(
        &server,
        "GET",
        &format!("/v1/messages/{billing_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, listed, _) = call(&server, "GET", "/v1/messages", Some(&shipping), None).await;
    let listed = listed["messages"].as_array().expect("messages");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], theirs["id"]);
    let (_, all, _) = call(&server, "GET", "/v1/messages", Some(&admin), None).await;
    assert_eq!(all["messages"].as_array().expect("messages").len(), 2);
    let (status, _, _) = call(
        &server,
        "GET",
        "/v1/messages?service=billing",
        Some(&shipping),
        None,
    )
    .await;
    assert_eq!(status, 403, "listing another service's messages");
    let (status, _, _) = call(
        &server,
        "POST",
        &format!("/v1/messages/{billing_id}/cancel"),
        Some(&shipping),
        None,
    )
    .await;
    assert_eq!(status, 404, "cancelling another service's message");

    // Webhooks: another service's are invisible.
    let (status, hook, _) = call(
        &server,
        "POST",
        "/v1/webhooks",
        Some(&billing),
        Some(&json!({"url": "https://127.0.0.1:9/billing"})),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    assert_eq!(hook["service"], "billing");
    let hook_id = hook["id"].as_str().expect("id");
    for (method, path) in [
        ("GET", format!("/v1/webhooks/{hook_id}")),
        ("PATCH", format!("/v1/webhooks/{hook_id}")),
        ("DELETE", format!("/v1/webhooks/{hook_id}")),
        ("POST", format!("/v1/webhooks/{hook_id}/rotate-secret")),
    ] {
        let body = json!({"description": "mine now"});
        let (status, _, _) = call(&server, method, &path, Some(&shipping), Some(&body)).await;
        assert_eq!(status, 404, "{method} {path} by another service");
    }
    let (_, hooks, _) = call(&server, "GET", "/v1/webhooks", Some(&shipping), None).await;
    assert!(hooks["webhooks"].as_array().expect("webhooks").is_empty());
}

#[tokio::test]
async fn reading_without_pii_masks_recipients_and_bodies_and_otps_are_never_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, admin) = create_key_direct(dir.path(), "ops", "admin");
    let server = Server::start(dir.path()).await;
    let send = create_key(&server, &admin, "billing", &["send"]).await;
    let read = create_key(&server, &admin, "billing", &["read"]).await;
    let pii = create_key(&server, &admin, "billing", &["read:pii"]).await;
    let (_, receipt) = submit_as(&server, &send, &email("erin@example.com")).await;
    let otp = json!({"channel": "sms", "to": "+14155550188", "body": "Your code is 918273", "type": "otp"});
    let (_, code) = submit_as(&server, &send, &otp).await;
    let get = |key: String, id: Value| {
        let server = &server;
        async move {
            let id = id.as_str().expect("id").to_owned();
            let (status, body, _) = call(
                server,
                "GET",
                &format!("/v1/messages/{id}"),
                Some(&key),
                None,
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let masked = get(read.clone(), receipt["id"].clone()).await;
    assert_eq!(masked["to"], "e****@example.com");
    let text = masked.to_string();
    assert!(
        !text.contains("erin@example.com") && !text.contains("Thanks"),
        "{text}"
    );
    let clear = get(pii.clone(), receipt["id"].clone()).await;
    assert_eq!(clear["to"], "erin@example.com");
    assert_eq!(clear["content"]["text"], "Thanks");
    for key in [read, pii, admin] {
        let shown = get(key, code["id"].clone()).await;
        assert!(
            !shown.to_string().contains("918273"),
            "an OTP body was shown: {shown}"
        );
    }
}

#[tokio::test]
async fn open_on_loopback_until_the_first_key_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let (status, _) = server.post(&email("frank@example.com")).await;
    assert_eq!(status, 202, "open while no key exists");
    let admin = {
        let (status, body, _) = call(
            &server,
            "POST",
            "/v1/keys",
            None,
            Some(&json!({"service": "ops", "scopes": ["admin"]})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        body["secret"].as_str().expect("secret").to_owned()
    };
    let (status, answer) = server.post(&email("frank@example.com")).await;
    assert_eq!(status, 401, "closed once a key exists: {answer}");
    let (status, _) = submit_as(&server, &admin, &email("frank@example.com")).await;
    assert_eq!(status, 202);
    assert_eq!(
        server.log().matches("No API key exists").count(),
        1,
        "warned once:\n{}",
        server.log()
    );
}

#[tokio::test]
async fn a_public_address_without_keys_is_refused_unless_auth_is_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("mdc.toml"), TEST_CONFIG).expect("config");
    let port = free_port();
    let output = Command::new(env!("CARGO_BIN_EXE_mdc"))
        .args(["serve", "--listen", &format!("0.0.0.0:{port}"), "--config"])
        .arg(dir.path().join("mdc.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .output()
        .expect("run mdc serve");
    assert!(
        !output.status.success(),
        "it started without keys on 0.0.0.0"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no API key exists") && stderr.contains("auth = \"none\""),
        "{stderr}"
    );

    let open = tempfile::tempdir().expect("tempdir");
    let config = format!("auth = \"none\"\n{TEST_CONFIG}");
    std::fs::write(open.path().join("mdc.toml"), config).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdc"))
        .args(["serve", "--listen", &format!("0.0.0.0:{port}"), "--config"])
        .arg(open.path().join("mdc.toml"))
        .arg("--data-dir")
        .arg(open.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let http = reqwest::Client::new();
    let up = loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            break r.status().is_success();
        }
        if Instant::now() > deadline || child.try_wait().expect("wait").is_some() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "auth = \"none\" did not start on 0.0.0.0");
}

#[tokio::test]
async fn a_service_over_its_rate_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, admin) = create_key_direct(dir.path(), "ops", "admin");
    let config = format!("{TEST_CONFIG}\n[services.billing]\nrate_per_second = 1\nburst = 2\n");
    let server = Server::start_with(dir.path(), &config).await;
    let billing = create_key(&server, &admin, "billing", &["send"]).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..3 {
        let response = server
            .http
            .post(format!("{}/v1/messages", server.base))
            .bearer_auth(&billing)
            .json(&email("gina@example.com"))
            .send()
            .await
            .expect("post");
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"]["rule"], "rate_limited");
        }
    }
    assert_eq!(statuses, vec![202, 202, 429]);
    assert!(
        retry_after.is_some_and(|s| (1..=2).contains(&s)),
        "{retry_after:?}"
    );
    // Another service has no limit configured.
    let other = create_key(&server, &admin, "shipping", &["send"]).await;
    for _ in 0..3 {
        let (status, _) = submit_as(&server, &other, &email("gina@example.com")).await;
        assert_eq!(status, 202);
    }
}
