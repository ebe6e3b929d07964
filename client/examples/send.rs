//! Sends an SMS, an email and a push through MDC and prints what became of
//! each. Against the README's `mdc serve` (simulated vendors):
//!
//! ```sh
//! cargo run -p mdc-client --example send
//! # with keys: MDC_API_KEY=mdc_sk_… cargo run -p mdc-client --example send
//! # directly on Kafka: MDC_TRANSPORT=direct MDC_KAFKA_BROKERS=127.0.0.1:9092 \
//! #   MDC_SERVICE=billing cargo run -p mdc-client --example send
//! ```

use std::time::Duration;

use mdc_client::{Client, Email, MessageType, Priority, Push, Sms, SubmitError, SubmitRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env().await?;
    let messages: Vec<SubmitRequest> = vec![
        Sms::to("+14155550123")
            .body("Your code is 123456")
            .priority(Priority::Critical)
            .kind(MessageType::Otp)
            .into(),
        Email::to("ada@example.com")
            .from("shop@example.com")
            .subject("Your receipt")
            .body("Thanks for your order.")
            .reference("order-42")
            .into(),
        Push::to("example-device-token-0001")
            .title("Shipped")
            .body("Your order is on its way")
            .data("order", 42)
            .into(),
        // Refused here, before anything is sent: the number is too short.
        Sms::to("12345").body("hi").into(),
    ];

    let mut sent = Vec::new();
    for message in messages {
        match client.send(message).await {
            Ok(accepted) => {
                for warning in &accepted.warnings {
                    println!("warning: {warning}");
                }
                println!("accepted {}", accepted.id);
                sent.push(accepted.id);
            }
            Err(SubmitError::Invalid(e)) => {
                println!("refused: {} ({}): {}", e.field, e.rule, e.message)
            }
            Err(e) => return Err(e.into()),
        }
    }

    for id in sent {
        for _ in 0..100 {
            match client.status(&id).await? {
                Some(status) if status.is_final() => {
                    println!(
                        "{id}: {} after {} attempt(s)",
                        status.status, status.attempts
                    );
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    Ok(())
}
