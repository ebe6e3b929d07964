//! The device registry over HTTP, with SNS push (on the moto test server).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{free_port, push, Server, TEST_CONFIG};

fn moto() -> String {
    std::env::var("MDC_TEST_MOTO_URL")
        .expect("MDC_TEST_MOTO_URL: run the tests with ./scripts/test")
}

/// Creates an FCM platform application through SNS's query API.
async fn fcm_application() -> String {
    let name = format!("mdc-e2e-{}", free_port());
    let form = [
        ("Action", "CreatePlatformApplication"),
        ("Name", name.as_str()),
        ("Platform", "GCM"),
        ("Attributes.entry.1.key", "PlatformCredential"),
        ("Attributes.entry.1.value", "fcm-key"),
    ];
    let xml = reqwest::Client::new()
        .post(format!("{}/", moto()))
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sns/aws4_request",
        )
        .form(&form)
        .send()
        .await
        .expect("moto")
        .text()
        .await
        .expect("xml");
    let start = xml.find("<PlatformApplicationArn>").expect("arn in answer")
        + "<PlatformApplicationArn>".len();
    let end = xml[start..].find('<').expect("end") + start;
    xml[start..end].to_owned()
}

/// A server pushing through SNS (moto) with an FCM platform application.
async fn start_with_sns_push(dir: &std::path::Path, application: &str) -> Server {
    let config = format!(
        r#"{TEST_CONFIG}
[providers.sns-push]
kind = "sns_push"
region = "us-east-1"
endpoint_url = "{moto}"
access_key_id_env = "MDC_TEST_AWS_KEY"
secret_access_key_env = "MDC_TEST_AWS_SECRET"
platform_applications = {{ fcm = "{application}" }}

[routes.push]
members = [{{ provider = "sns-push" }}]
"#,
        moto = moto()
    );
    let env = [
        ("MDC_TEST_AWS_KEY", "testing"),
        ("MDC_TEST_AWS_SECRET", "testing"),
    ];
    Server::start_on(dir, &config, free_port(), &env).await
}

async fn wait_status(server: &Server, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let message = server.message(id).await;
        if message["status"] == status {
            return message;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never reached {status}: {message:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn registers_devices_and_pushes_to_a_user_through_sns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let application = fcm_application().await;
    let server = start_with_sns_push(dir.path(), &application).await;
    let url = format!("{}/v1/devices", server.base);

    let device = json!({"user_id": "alice", "platform": "fcm", "token": "fcm-token-e2e-0001"});
    let response = server
        .http
        .post(&url)
        .json(&device)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 201);
    let created: Value = response.json().await.expect("json");
    assert!(created["id"].as_str().expect("id").starts_with("dev_"));
    assert!(
        created["endpoint"]
            .as_str()
            .expect("endpoint")
            .starts_with("arn:aws:sns:"),
        "{created}"
    );
    let again: Value = server
        .http
        .post(&url)
        .json(&device)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(again["id"], created["id"], "idempotent per token");
    assert_eq!(again["endpoint"], created["endpoint"]);

    for (body, field) in [
        (
            json!({"user_id": "alice", "platform": "blackberry", "token": "fcm-token-e2e-0002"}),
            "platform",
        ),
        (json!({"user_id": "alice", "platform": "fcm"}), "token"),
        (
            json!({"platform": "fcm", "token": "fcm-token-e2e-0002"}),
            "user_id",
        ),
    ] {
        let response = server
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status().as_u16(), 422);
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["field"], field, "{error}");
    }

    let id = server.submit(&push("user:alice")).await;
    let message = wait_status(&server, &id, "sent").await;
    assert_eq!(message["provider"], "sns-push");
    let devices = message["events"].to_string();
    assert!(
        devices.contains("fcm-token-e2e-0001"),
        "the send names the device: {devices}"
    );

    let device_url = format!("{url}/{}", created["id"].as_str().expect("id"));
    assert_eq!(
        server
            .http
            .get(&device_url)
            .send()
            .await
            .expect("get")
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        server
            .http
            .delete(&device_url)
            .send()
            .await
            .expect("delete")
            .status()
            .as_u16(),
        204
    );
    assert_eq!(
        server
            .http
            .get(&device_url)
            .send()
            .await
            .expect("get")
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        server
            .http
            .delete(&device_url)
            .send()
            .await
            .expect("delete")
            .status()
            .as_u16(),
        404
    );

    // With no device left, a push to the user fails for good.
    let id = server.submit(&push("user:alice")).await;
    let message = server.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(message["status"], "failed", "{message:#}");
    assert!(
        message["events"].to_string().contains("no active device"),
        "{message:#}"
    );
}

/// A push to `user:<id>` reaches only the devices the sending service
/// registered: another service's registration for the same user gets none
/// of its content.
#[tokio::test]
async fn a_push_to_a_user_skips_devices_another_service_registered() {
    use crate::auth::{call, create_key, create_key_direct};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, admin) = create_key_direct(dir.path(), "ops", "admin");
    let application = fcm_application().await;
    let server = start_with_sns_push(dir.path(), &application).await;
    let billing = create_key(&server, &admin, "billing", &["send", "read:pii"]).await;
    let shipping = create_key(&server, &admin, "shipping", &["send", "read:pii"]).await;
    let theirs = json!({"user_id": "bob", "platform": "fcm", "token": "fcm-token-shipping-0001"});
    let (status, _, _) = call(
        &server,
        "POST",
        "/v1/devices",
        Some(&shipping),
        Some(&theirs),
    )
    .await;
    assert_eq!(status, 201);

    let read = |id: String| {
        let (server, key) = (&server, billing.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let (_, message, _) = call(
                    server,
                    "GET",
                    &format!("/v1/messages/{id}"),
                    Some(&key),
                    None,
                )
                .await;
                if ["sent", "failed", "delivered"]
                    .contains(&message["status"].as_str().unwrap_or(""))
                {
                    return message;
                }
                assert!(Instant::now() < deadline, "{message:#}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (status, sent, _) = call(
        &server,
        "POST",
        "/v1/messages",
        Some(&billing),
        Some(&push("user:bob")),
    )
    .await;
    assert_eq!(status, 202, "{sent}");
    let message = read(sent["id"].as_str().expect("id").to_owned()).await;
    assert_eq!(message["status"], "failed", "{message:#}");
    let trail = message["events"].to_string();
    assert!(trail.contains("no active device"), "{trail}");
    assert!(!trail.contains("fcm-token-shipping-0001"), "{trail}");

    let mine = json!({"user_id": "bob", "platform": "fcm", "token": "fcm-token-billing-0001"});
    let (status, _, _) = call(&server, "POST", "/v1/devices", Some(&billing), Some(&mine)).await;
    assert_eq!(status, 201);
    let (_, sent, _) = call(
        &server,
        "POST",
        "/v1/messages",
        Some(&billing),
        Some(&push("user:bob")),
    )
    .await;
    let message = read(sent["id"].as_str().expect("id").to_owned()).await;
    assert_eq!(message["status"], "sent", "{message:#}");
    let trail = message["events"].to_string();
    assert!(trail.contains("fcm-token-billing-0001"), "{trail}");
    assert!(!trail.contains("fcm-token-shipping-0001"), "{trail}");
}

/// A token is its registering service's: another service cannot take it
/// over, not even by registering it at the same moment; an admin updates
/// it for its service.
#[tokio::test]
async fn a_token_is_its_registering_services() {
    use crate::auth::{call, create_key, create_key_direct};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, admin) = create_key_direct(dir.path(), "ops", "admin");
    let server = Server::start_with(dir.path(), TEST_CONFIG).await;
    let billing = create_key(&server, &admin, "billing", &["send", "read:pii"]).await;
    let shipping = create_key(&server, &admin, "shipping", &["send", "read:pii"]).await;

    let device = json!({"user_id": "u7", "platform": "fcm", "token": "tok-isolation-000001"});
    let (status, registered, _) = call(
        &server,
        "POST",
        "/v1/devices",
        Some(&billing),
        Some(&device),
    )
    .await;
    assert_eq!(status, 201, "{registered}");
    let device_id = registered["id"].as_str().expect("id");
    let mut taken = device.clone();
    taken["user_id"] = json!("attacker");
    let (status, refused, _) = call(
        &server,
        "POST",
        "/v1/devices",
        Some(&shipping),
        Some(&taken),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["field"], "token");
    for method in ["GET", "DELETE"] {
        let (status, _, _) = call(
            &server,
            method,
            &format!("/v1/devices/{device_id}"),
            Some(&shipping),
            None,
        )
        .await;
        assert_eq!(status, 404, "{method} of another service's device");
    }
    let (_, still, _) = call(
        &server,
        "GET",
        &format!("/v1/devices/{device_id}"),
        Some(&billing),
        None,
    )
    .await;
    assert_eq!(still["user_id"], "u7", "the device was not taken over");
    // An admin updates it for billing, whose it stays.
    let mut moved = device.clone();
    moved["user_id"] = json!("u8");
    let (status, updated, _) =
        call(&server, "POST", "/v1/devices", Some(&admin), Some(&moved)).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["id"], device_id);
    assert_eq!(updated["user_id"], "u8");
    assert_eq!(updated["service"], "billing");
    // Two services registering a new token at once: one gets it, the other
    // a 409, and the device is the first one's.
    for round in 0..20 {
        let token = format!("tok-race-{round:012}");
        let mine = json!({"user_id": "u-billing", "platform": "fcm", "token": token});
        let theirs = json!({"user_id": "u-shipping", "platform": "fcm", "token": token});
        let (a, b) = tokio::join!(
            call(&server, "POST", "/v1/devices", Some(&billing), Some(&mine)),
            call(
                &server,
                "POST",
                "/v1/devices",
                Some(&shipping),
                Some(&theirs)
            ),
        );
        let (winner, stored) = match (a.0, b.0) {
            (201, 409) => ("billing", a.1),
            (409, 201) => ("shipping", b.1),
            other => panic!(
                "round {round}: one 201 and one 409, got {other:?}: {} {}",
                a.1, b.1
            ),
        };
        assert_eq!(stored["service"], winner, "round {round}");
        assert_eq!(stored["user_id"], format!("u-{winner}"), "round {round}");
        let (_, now, _) = call(
            &server,
            "GET",
            &format!("/v1/devices/{}", stored["id"].as_str().expect("id")),
            Some(&admin),
            None,
        )
        .await;
        assert_eq!(now["user_id"], format!("u-{winner}"), "round {round}");
    }
    // An admin registering a token while a service does is never refused:
    // it updates the service's device, or makes one the service is then
    // refused.
    for round in 0..20 {
        let token = format!("tok-admin-{round:011}");
        let service = json!({"user_id": "u-billing", "platform": "fcm", "token": token});
        let by_admin = json!({"user_id": "u-ops", "platform": "fcm", "token": token});
        let (a, b) = tokio::join!(
            call(
                &server,
                "POST",
                "/v1/devices",
                Some(&billing),
                Some(&service)
            ),
            call(
                &server,
                "POST",
                "/v1/devices",
                Some(&admin),
                Some(&by_admin)
            ),
        );
        assert!(
            matches!(b.0, 200 | 201),
            "round {round}: admin got {}: {}",
            b.0,
            b.1
        );
        match a.0 {
            201 => assert_eq!(b.1["service"], "billing", "round {round}"),
            409 => assert_eq!(
                (b.0, &b.1["service"]),
                (201, &json!("ops")),
                "round {round}"
            ),
            other => panic!("round {round}: billing got {other}: {}", a.1),
        }
    }
}
