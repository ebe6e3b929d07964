//! SNS notifications over HTTPS: messages signed with a test key whose
//! certificate a loopback server hands out (trusted only through the
//! test-only setting), posted to the intake through actix's test service.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix_web::{test, App};
use mdc_core::memory::{MemoryQueue, MemorySuppressions};
use mdc_core::ports::{Device, DeviceRegistry, Platform, ReportSink, SuppressionList};
use mdc_core::{Channel, ReportOutcome};
use mdc_response_listener::sns::testing::{body, confirmation, notification, sign, FakeSns};
use mdc_response_listener::sns::verify::{SnsMessage, Verifier};
use mdc_response_listener::sns::SnsHttpIntake;
use mdc_response_listener::{Intake, QueueReportSink};
use serde_json::json;

use crate::queued;

const SES_TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:ses-events";
const PUSH_TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:push-events";
const ENDPOINT: &str = "arn:aws:sns:us-east-1:123456789012:endpoint/GCM/app/0001";

struct Setup {
    fake: FakeSns,
    queue: Arc<MemoryQueue>,
    devices: Arc<dyn DeviceRegistry>,
    suppressions: Arc<MemorySuppressions>,
    intake: Arc<SnsHttpIntake>,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let fake = FakeSns::start().expect("fake SNS");
    let queue = Arc::new(MemoryQueue::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let devices = mdc_embedded::open_stores(dir.path())
        .expect("stores")
        .devices;
    let suppressions = Arc::new(MemorySuppressions::default());
    let sink: Arc<dyn ReportSink> = Arc::new(QueueReportSink::new(queue.clone()));
    let intake = Arc::new(SnsHttpIntake::new(
        HashMap::from([
            ("ses".to_owned(), HashSet::from([SES_TOPIC.to_owned()])),
            ("push".to_owned(), HashSet::from([PUSH_TOPIC.to_owned()])),
        ]),
        Verifier::new().allowing_loopback(true),
        sink,
        devices.clone(),
        suppressions.clone(),
    ));
    Setup {
        fake,
        queue,
        devices,
        suppressions,
        intake,
        _dir: dir,
    }
}

fn ses_delivery(ses_id: &str) -> String {
    json!({
        "eventType": "Delivery",
        "mail": {"timestamp": "2026-11-30T10:00:00.000Z", "messageId": ses_id, "destination": ["a@example.com"]},
        "delivery": {"timestamp": "2026-11-30T10:00:01.000Z", "recipients": ["a@example.com"]}
    })
    .to_string()
}

fn endpoint_disabled() -> String {
    json!({
        "EventType": "DeliveryFailure", "EndpointArn": ENDPOINT, "FailureType": "EndpointDisabled",
        "FailureMessage": "Endpoint is disabled", "Service": "SNS", "Time": "2026-11-30T10:00:00.000Z"
    })
    .to_string()
}

/// Posts `message` to the provider's endpoint as SNS does; the status.
macro_rules! post {
    ($app:expr, $provider:expr, $message:expr) => {{
        let message: &SnsMessage = $message;
        let request = test::TestRequest::post()
            .uri(&format!("/v1/callbacks/sns/{}", $provider))
            .insert_header(("content-type", "text/plain; charset=UTF-8"))
            .insert_header(("x-amz-sns-message-type", message.kind.as_str()))
            .set_payload(body(message))
            .to_request();
        test::call_service($app, request).await.status().as_u16()
    }};
}

#[actix_web::test]
async fn signed_ses_events_of_both_signature_versions_reach_the_responses_topic() {
    let s = setup();
    let app = test::init_service(App::new().configure(|cfg| s.intake.clone().routes(cfg))).await;
    for version in [1, 2] {
        let mut message = notification(
            SES_TOPIC,
            &ses_delivery(&format!("ses-v{version}")),
            &s.fake.cert_url(),
        );
        if version == 1 {
            message.subject = Some("Amazon SES Email Event Notification".into());
        }
        sign(&mut message, version);
        assert_eq!(post!(&app, "ses", &message), 200, "v{version}");
    }
    let reports = queued(&s.queue).await;
    let ids: Vec<&str> = reports
        .iter()
        .map(|r| r.provider_message_id.as_str())
        .collect();
    assert_eq!(ids, ["ses-v1", "ses-v2"]);
    assert!(reports
        .iter()
        .all(|r| r.outcome == ReportOutcome::Delivered && r.provider == "ses"));
    assert_eq!(s.intake.counts().snapshot()["accepted"], 2);
    s.fake.stop().await;
}

#[actix_web::test]
async fn unsigned_tampered_foreign_and_unknown_messages_are_refused_and_change_nothing() {
    let s = setup();
    let mut device = Device::new("alice", Platform::Fcm, "token-1");
    device.endpoint = Some(ENDPOINT.into());
    s.devices.register(&device).await.expect("register");
    let app = test::init_service(App::new().configure(|cfg| s.intake.clone().routes(cfg))).await;
    let cert = s.fake.cert_url();

    let signed = |topic: &str, message: &str, cert: &str| {
        let mut m = notification(topic, message, cert);
        sign(&mut m, 2);
        m
    };
    let mut tampered = signed(PUSH_TOPIC, &endpoint_disabled(), &cert);
    tampered.message = tampered.message.replace("0001", "0002");
    let mut wrong_signature = signed(PUSH_TOPIC, &endpoint_disabled(), &cert);
    wrong_signature.signature = signed(PUSH_TOPIC, "another message", &cert).signature;
    let mut unsigned = notification(PUSH_TOPIC, &endpoint_disabled(), &cert);
    unsigned.signature_version = "2".into();
    let mut version_3 = signed(PUSH_TOPIC, &endpoint_disabled(), &cert);
    version_3.signature_version = "3".into();
    let mut unknown_type = signed(PUSH_TOPIC, &endpoint_disabled(), &cert);
    unknown_type.kind = "Teleport".into();
    let cases: Vec<(&str, &str, SnsMessage, u16)> = vec![
        ("tampered body", "push", tampered, 403),
        ("another message's signature", "push", wrong_signature, 403),
        ("unsigned", "push", unsigned, 403),
        ("unknown signature version", "push", version_3, 403),
        (
            "a topic of another provider",
            "push",
            signed(SES_TOPIC, &endpoint_disabled(), &cert),
            403,
        ),
        (
            "an unconfigured topic",
            "push",
            signed(
                "arn:aws:sns:us-east-1:999999999999:other",
                &endpoint_disabled(),
                &cert,
            ),
            403,
        ),
        (
            "a certificate on another host",
            "push",
            signed(
                PUSH_TOPIC,
                &endpoint_disabled(),
                "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
            ),
            403,
        ),
        ("an unknown type", "push", unknown_type, 400),
        (
            "an unknown provider",
            "nobody",
            signed(PUSH_TOPIC, &endpoint_disabled(), &cert),
            404,
        ),
    ];
    let refused = cases.len();
    for (case, provider, message, expected) in cases {
        assert_eq!(post!(&app, provider, &message), expected, "{case}");
    }
    for (payload, header) in [
        ("{not json", "Notification"),
        (r#"{"Type":"Notification"}"#, "Notification"),
    ] {
        let request = test::TestRequest::post()
            .uri("/v1/callbacks/sns/push")
            .insert_header(("x-amz-sns-message-type", header))
            .set_payload(payload)
            .to_request();
        assert_eq!(
            test::call_service(&app, request).await.status(),
            400,
            "{payload}"
        );
    }
    // A header that disagrees with the body.
    let message = signed(PUSH_TOPIC, &endpoint_disabled(), &cert);
    let request = test::TestRequest::post()
        .uri("/v1/callbacks/sns/push")
        .insert_header(("x-amz-sns-message-type", "SubscriptionConfirmation"))
        .set_payload(body(&message))
        .to_request();
    assert_eq!(test::call_service(&app, request).await.status(), 400);

    assert!(queued(&s.queue).await.is_empty());
    let stored = s
        .devices
        .get(&device.id)
        .await
        .expect("get")
        .expect("device");
    assert!(stored.active, "no forged event deactivated the device");
    assert!(s
        .suppressions
        .list(None, 10)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        s.intake.counts().snapshot(),
        json!({"accepted": 0, "ignored": 0, "refused": refused + 3})
    );
    s.fake.stop().await;
}

#[actix_web::test]
async fn a_subscription_confirmation_is_fetched_once_and_only_from_sns() {
    let s = setup();
    let app = test::init_service(App::new().configure(|cfg| s.intake.clone().routes(cfg))).await;
    let mut message = confirmation(SES_TOPIC, &s.fake.subscribe_url(), &s.fake.cert_url());
    sign(&mut message, 1);
    assert_eq!(post!(&app, "ses", &message), 200);
    assert_eq!(s.fake.confirmations(), 1);

    let mut elsewhere = confirmation(
        SES_TOPIC,
        "https://evil.example/confirm?Token=t",
        &s.fake.cert_url(),
    );
    sign(&mut elsewhere, 2);
    assert_eq!(post!(&app, "ses", &elsewhere), 403);
    let mut foreign = confirmation(
        "arn:aws:sns:us-east-1:999999999999:other",
        &s.fake.subscribe_url(),
        &s.fake.cert_url(),
    );
    sign(&mut foreign, 2);
    assert_eq!(post!(&app, "ses", &foreign), 403);
    let mut tampered = confirmation(SES_TOPIC, &s.fake.subscribe_url(), &s.fake.cert_url());
    sign(&mut tampered, 2);
    tampered.token = Some("another".into());
    assert_eq!(post!(&app, "ses", &tampered), 403);
    assert_eq!(
        s.fake.confirmations(),
        1,
        "only the authentic one was fetched"
    );
    s.fake.stop().await;
}

#[actix_web::test]
async fn a_disabled_push_endpoint_deactivates_its_device_and_suppresses_the_token() {
    let s = setup();
    let mut device = Device::new("alice", Platform::Fcm, "token-1");
    device.endpoint = Some(ENDPOINT.into());
    s.devices.register(&device).await.expect("register");
    let app = test::init_service(App::new().configure(|cfg| s.intake.clone().routes(cfg))).await;

    let mut message = notification(PUSH_TOPIC, &endpoint_disabled(), &s.fake.cert_url());
    sign(&mut message, 2);
    assert_eq!(post!(&app, "push", &message), 200);
    let stored = s
        .devices
        .get(&device.id)
        .await
        .expect("get")
        .expect("device");
    assert!(!stored.active);
    assert!(s.devices.for_user("alice").await.expect("list").is_empty());
    let suppressed = s
        .suppressions
        .get(Channel::Push, "token-1")
        .await
        .expect("get")
        .expect("suppressed");
    assert_eq!(
        suppressed.reason,
        "push endpoint disabled (EndpointDisabled)"
    );
    assert_eq!(suppressed.source, "report:push");

    // An endpoint MDC never registered, and an event that changes nothing.
    let unknown = endpoint_disabled().replace("0001", "0404");
    let created = json!({"EventType": "EndpointCreated", "EndpointArn": ENDPOINT}).to_string();
    for event in [unknown, created] {
        let mut message = notification(PUSH_TOPIC, &event, &s.fake.cert_url());
        sign(&mut message, 2);
        assert_eq!(post!(&app, "push", &message), 200, "{event}");
    }
    assert_eq!(
        s.intake.counts().snapshot(),
        json!({"accepted": 1, "ignored": 2, "refused": 0})
    );
    assert!(
        queued(&s.queue).await.is_empty(),
        "push events are no reports"
    );
    s.fake.stop().await;
}
