//! The Kaleyra callback intake over HTTP (actix's test server), with the
//! responses topic on an in-memory queue that can be taken down; the SES
//! intake against moto's SNS and SQS (`ses_sqs`).

mod ses_sqs;
mod sns_http;
mod sns_sms_logs;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{test, App};
use mdc_core::memory::MemoryQueue;
use mdc_core::ports::{ConsumerSpec, Queue, ReportSink, Topic};
use mdc_core::{DeliveryReport, ReportOutcome};
use mdc_response_listener::kaleyra::{routes, KaleyraIntake};
use mdc_response_listener::{Intake, QueueReportSink};
use secrecy::SecretString;

fn intake(queue: &Arc<MemoryQueue>) -> Arc<KaleyraIntake> {
    let sink: Arc<dyn ReportSink> = Arc::new(QueueReportSink::new(queue.clone()));
    Arc::new(KaleyraIntake::new(
        HashMap::from([("kaleyra".to_owned(), SecretString::from("cb-token"))]),
        sink,
    ))
}

async fn queued(queue: &MemoryQueue) -> Vec<DeliveryReport> {
    let consumer = queue
        .consumer(Topic::Responses, ConsumerSpec { index: 0, count: 1 })
        .await
        .expect("consumer");
    let batch = consumer.fetch(10).await.expect("fetch");
    batch
        .iter()
        .map(|d| serde_json::from_slice(&d.payload).expect("report"))
        .collect()
}

#[actix_web::test]
async fn a_report_is_on_the_responses_topic_before_the_vendor_gets_200() {
    let queue = Arc::new(MemoryQueue::default());
    let app = test::init_service(App::new().configure(routes(intake(&queue)))).await;
    let request = test::TestRequest::post()
        .uri("/v1/callbacks/kaleyra/kaleyra?token=cb-token")
        .set_json(serde_json::json!({
            "id": "kal-1", "status": "DELIVERED", "ref": "msg_01JZ0000000000000000000000"
        }))
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), 200);
    let reports = queued(&queue).await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].provider, "kaleyra");
    assert_eq!(reports[0].provider_message_id, "kal-1");
    assert_eq!(reports[0].outcome, ReportOutcome::Delivered);
    assert_eq!(reports[0].raw["status"], "DELIVERED");
}

#[actix_web::test]
async fn a_report_that_cannot_be_queued_gets_503_so_the_vendor_retries() {
    let queue = Arc::new(MemoryQueue::default());
    let app = test::init_service(App::new().configure(routes(intake(&queue)))).await;
    queue.set_down(true);
    let request = test::TestRequest::get()
        .uri("/v1/callbacks/kaleyra/kaleyra?token=cb-token&id=kal-2&status=FAILED&error=blocked")
        .to_request();
    assert_eq!(test::call_service(&app, request).await.status(), 503);
    queue.set_down(false);
    assert!(queued(&queue).await.is_empty(), "nothing half queued");
}

#[actix_web::test]
async fn wrong_tokens_malformed_and_intermediate_reports_queue_nothing() {
    let queue = Arc::new(MemoryQueue::default());
    let kaleyra = intake(&queue);
    let app = test::init_service(App::new().configure(routes(kaleyra.clone()))).await;
    let cases = [
        // (uri, body, expected status)
        (
            "/v1/callbacks/kaleyra/kaleyra?token=wrong",
            r#"{"id":"k","status":"DELIVERED"}"#,
            401,
        ),
        (
            "/v1/callbacks/kaleyra/kaleyra",
            r#"{"id":"k","status":"DELIVERED"}"#,
            401,
        ),
        (
            "/v1/callbacks/kaleyra/other?token=cb-token",
            r#"{"id":"k","status":"DELIVERED"}"#,
            401,
        ),
        (
            "/v1/callbacks/kaleyra/kaleyra?token=cb-token",
            "{not json",
            400,
        ),
        (
            "/v1/callbacks/kaleyra/kaleyra?token=cb-token",
            r#"{"status":"DELIVERED"}"#,
            400,
        ),
        (
            "/v1/callbacks/kaleyra/kaleyra?token=cb-token",
            r#"{"id":"k","status":"SENT"}"#,
            200,
        ),
    ];
    for (uri, body, expected) in cases {
        let request = test::TestRequest::post()
            .uri(uri)
            .insert_header(("content-type", "application/json"))
            .set_payload(body)
            .to_request();
        let status = test::call_service(&app, request).await.status();
        assert_eq!(status, expected, "{uri} {body}");
    }
    assert!(queued(&queue).await.is_empty());
    assert_eq!(
        kaleyra.counts().snapshot(),
        serde_json::json!({"accepted": 0, "ignored": 1, "refused": 5}),
        "refused and ignored reports are counted"
    );
}
